"""MNIST and FashionMNIST: torchvision's idx files, checked and decoded, and their loaders."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from mlproject.data import download as _download
from mlproject.data.images import (
    ImageDatasetLoader,
    TensorImages,
    Transform,
    check_arguments,
    split_off,
)
from mlproject.data.paths import file_error, require_files, resolve_data_dir

# torchvision's file names, under <data_dir>/<MNIST or FashionMNIST>/raw/.
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_SIZE = (28, 28)
N_CLASSES = 10
# The idx magic number: 0x0000 0800 + number of dimensions (0x08 = unsigned byte data).
_UBYTE_MAGIC = 0x0800


def read_idx(path: Path, ndim: int, dataset: str) -> Tensor:
    """Decode an idx file of unsigned bytes with ``ndim`` dimensions into a uint8 tensor.

    Raises ``DataError`` naming the file when it is missing, has another magic number (not an
    idx file of bytes, or a gzipped one), or is shorter or longer than its header announces.

    Example:
        >>> images = read_idx(Path("MNIST/raw/t10k-images-idx3-ubyte"), 3, "MNIST")
        >>> images.shape
        torch.Size([10000, 28, 28])
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise file_error(dataset, path, f"cannot be read ({err.strerror})") from err
    header = 4 * (1 + ndim)
    magic = int.from_bytes(data[:4], "big")
    if len(data) >= 4 and magic != _UBYTE_MAGIC + ndim:
        hint = " (it looks gzipped: gunzip it)" if data[:2] == b"\x1f\x8b" else ""
        raise file_error(
            dataset,
            path,
            f"starts with magic number {magic:#010x}{hint}; an idx file of {ndim}-d unsigned "
            f"bytes starts with {_UBYTE_MAGIC + ndim:#010x}",
        )
    if len(data) < header:
        raise file_error(
            dataset, path, f"is {len(data)} bytes long, shorter than an idx header ({header})"
        )
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(torch.tensor(shape).prod())
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than announced"
        raise file_error(
            dataset,
            path,
            f"is {state}: its header announces shape {tuple(shape)}, {expected} bytes in all, "
            f"but the file has {len(data)} bytes",
        )
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header).view(shape)


def read_mnist_split(raw: Path, split: str, dataset: str) -> TensorImages:
    """Read and check one split ("train" or "test") of an MNIST-format ``raw`` folder."""
    image_path, label_path = (raw / name for name in SPLIT_FILES[split])
    images = read_idx(image_path, 3, dataset)
    labels = read_idx(label_path, 1, dataset)
    if tuple(images.shape[1:]) != IMAGE_SIZE:
        raise file_error(
            dataset,
            image_path,
            f"holds {images.shape[1]}x{images.shape[2]} images; {dataset} images are 28x28",
        )
    if len(images) == 0:
        raise file_error(dataset, image_path, "holds no images")
    if len(labels) != len(images):
        raise file_error(
            dataset,
            label_path,
            f"holds {len(labels)} labels for the {len(images)} images of {image_path.name}",
        )
    if int(labels.max()) >= N_CLASSES:
        raise file_error(
            dataset,
            label_path,
            f"holds label {int(labels.max())}; {dataset} labels are 0..{N_CLASSES - 1}",
        )
    return TensorImages(images.unsqueeze(1), labels.long())


def load_mnist(
    root: Path, folder: str = "MNIST", download: bool = True
) -> tuple[TensorImages, TensorImages]:
    """The (train, test) splits of ``<root>/<folder>/raw``, downloaded first if missing.

    ``folder`` is ``"MNIST"`` or ``"FashionMNIST"`` (torchvision's layout and file names).

    Example:
        >>> train, test = load_mnist(resolve_data_dir(None), "MNIST", download=False)
        >>> len(train), len(test)
        (60000, 10000)
    """
    files = [f"{folder}/raw/{name}" for split in SPLIT_FILES.values() for name in split]
    fetch, creates = _download.mnist_fetch(root, folder) if download else (None, ())
    require_files(
        folder,
        root,
        files,
        how=lambda: _download.mnist_instructions(root, folder),
        fetch=fetch,
        fetch_creates=creates,
    )
    raw = root / folder / "raw"
    return read_mnist_split(raw, "train", folder), read_mnist_split(raw, "test", folder)


class MNISTDatasetLoader(ImageDatasetLoader):
    """MNIST handwritten digits: 60,000 training (less the validation hold-out) and 10,000 test
    images, 28x28 grey, labels 0..9.

    Files: ``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, torchvision's
    layout, downloaded (MD5-checked) when missing and ``download`` is True. ``data_dir``: the
    argument, else ``$DATA_DIR``, else ``~/.cache/mlproject/data``.

    Batches are ``(x, y)``: x float32 ``N x 1 x 28 x 28`` normalised with ``MEAN`` / ``STD``
    (the training set's statistics), y int64. Without transforms the splits use the fast
    in-memory path; a torchvision transform on PIL images switches its split(s) to the
    per-sample path (``DataLoader`` with ``num_workers``).

    Args:
        batch_size: samples per batch.
        train_transform: PIL transform of the training split; None = fast path, equivalent
            to ``Compose([ToTensor(), Normalize(MEAN, STD)])``.
        test_transform: the same for the validation and test splits.
        data_dir: folder holding ``MNIST/`` (see above).
        validation_size: training images held out for validation (0 = no validation split).
        split_seed: seed of the hold-out, the same split in every process.
        num_workers: workers of the per-sample path.
        download: download missing files (needs the network).
        drop_last: drop the last incomplete training batch.

    Example:
        >>> factory = MNISTDatasetLoader(128, data_dir="~/data")
        >>> x, y = next(iter(factory.train_loader()))
        >>> tuple(x.shape), len(factory.validation_loader().images)
        ((128, 1, 28, 28), 5000)
    """

    FOLDER = "MNIST"
    MEAN = (0.1307,)
    STD = (0.3081,)

    def __init__(
        self,
        batch_size: int = 128,
        train_transform: Transform | None = None,
        test_transform: Transform | None = None,
        data_dir: str | os.PathLike | None = None,
        validation_size: int = 5000,
        split_seed: int = 0,
        num_workers: int = 0,
        download: bool = True,
        drop_last: bool = False,
    ):
        check_arguments(
            batch_size=batch_size,
            validation_size=validation_size,
            split_seed=split_seed,
            num_workers=num_workers,
        )
        self.data_dir = resolve_data_dir(data_dir)
        train, test = load_mnist(self.data_dir, self.FOLDER, download)
        super().__init__(
            split_off(train, test, validation_size, split_seed),
            batch_size,
            mean=self.MEAN,
            std=self.STD,
            train_transform=train_transform,
            test_transform=test_transform,
            num_workers=num_workers,
            drop_last=drop_last,
        )


class FashionMNISTDatasetLoader(MNISTDatasetLoader):
    """Zalando's Fashion-MNIST: MNIST's format and sizes, ten classes of clothing.

    Files: ``<data_dir>/FashionMNIST/raw/`` with MNIST's file names (torchvision's layout).
    Normalised with ``MEAN = (0.2860,)``, ``STD = (0.3530,)``. Arguments as
    ``MNISTDatasetLoader``.

    Example:
        >>> factory = FashionMNISTDatasetLoader(256, validation_size=0)
        >>> factory.validation_loader() is None
        True
    """

    FOLDER = "FashionMNIST"
    MEAN = (0.2860,)
    STD = (0.3530,)
