"""Downloads of dataset files through torchvision's download and checksum code.

The only module of ``mlproject.data`` that imports torchvision, and only when a download or its
instructions are needed: loading files already on disk never pays torchvision's import time.
The URLs and MD5 sums are torchvision's (``torchvision.datasets.MNIST.resources`` and friends),
so they stay right when torchvision moves a mirror.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# The torchvision dataset class behind each folder name the loaders use.
_MNIST_LIKE = ("MNIST", "FashionMNIST")
CIFAR10_FOLDER = "cifar-10-batches-py"


def mnist_fetch(root: Path, folder: str) -> tuple[Callable[[], None], list[Path]]:
    """Return a function downloading the missing ``<root>/<folder>/raw/*-ubyte`` files, and
    the paths it may create (for clean-up after a failure).

    ``folder`` is ``"MNIST"`` or ``"FashionMNIST"``; each ``.gz`` is checked against
    torchvision's MD5 before it is unpacked, trying each of torchvision's mirrors in turn.

    Example:
        >>> fetch, creates = mnist_fetch(Path("~/data").expanduser(), "MNIST")
        >>> fetch()  # needs the network
    """
    if folder not in _MNIST_LIKE:
        raise ValueError(f"folder must be one of {_MNIST_LIKE}; got {folder!r}")
    raw = root / folder / "raw"

    def fetch() -> None:
        from torchvision import datasets
        from torchvision.datasets.utils import download_and_extract_archive

        source = getattr(datasets, folder)
        raw.mkdir(parents=True, exist_ok=True)
        for filename, md5 in source.resources:
            if (raw / filename.removesuffix(".gz")).is_file():
                continue
            errors = []
            for mirror in source.mirrors:
                try:
                    download_and_extract_archive(
                        f"{mirror}{filename}", download_root=str(raw), filename=filename, md5=md5
                    )
                    break
                except (OSError, RuntimeError) as err:  # URLError is an OSError
                    errors.append(f"{mirror}{filename}: {err}")
            else:
                raise RuntimeError("; ".join(errors))

    return fetch, [root / folder]


def mnist_instructions(root: Path, folder: str) -> str:
    """How to put the MNIST-format files of ``folder`` under ``root`` by hand."""
    from torchvision import datasets

    source = getattr(datasets, folder)
    names = ", ".join(name for name, _ in source.resources)
    return (
        f"Download {names} from {source.mirrors[0]} on a machine with internet access, "
        f"gunzip them and copy the four files into {root / folder / 'raw'}/ "
        "(this is torchvision's layout: a folder torchvision already filled works as is)."
    )


def cifar10_fetch(root: Path) -> tuple[Callable[[], None], list[Path]]:
    """Return a function downloading and unpacking ``cifar-10-python.tar.gz`` into ``root``
    (MD5-checked), and the paths it may create.

    Example:
        >>> fetch, creates = cifar10_fetch(Path("~/data").expanduser())
        >>> fetch()  # needs the network
    """

    def fetch() -> None:
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(
            CIFAR10.url, download_root=str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5
        )

    return fetch, [root / "cifar-10-python.tar.gz", root / CIFAR10_FOLDER]


def cifar10_instructions(root: Path) -> str:
    """How to put the CIFAR-10 files under ``root`` by hand."""
    from torchvision.datasets import CIFAR10

    return (
        f"Download {CIFAR10.url} (MD5 {CIFAR10.tgz_md5}) on a machine with internet access and "
        f"unpack it into the data directory: tar xzf {CIFAR10.filename} -C {root} "
        f"(this creates {root / CIFAR10_FOLDER}/, torchvision's layout)."
    )
