"""Writers of small dataset files in the real on-disk formats, for tests and the benchmark.

``write_mnist`` writes torchvision's ``<root>/<folder>/raw/*-ubyte`` idx files (or their
``.gz`` archives), ``write_cifar10`` the ``<root>/cifar-10-batches-py/`` python pickles (and
their ``.tar.gz``) and ``write_svhn`` the ``<root>/{train,test}_32x32.mat`` MATLAB files, filled
with seeded random pixels, so torchvision's real decoding code runs without the network. Each
returns the arrays it wrote, for comparison.

torchvision checks archives (and CIFAR-10's and SVHN's files on every load) against the MD5
sums of the originals, which generated files cannot match: ``accept_files`` sets torchvision's
sums to those of the files written, as if they were the originals. Pass ``monkeypatch.setattr``
in a test, so that the sums are restored afterwards.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MNIST_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file: magic 0x0800 + ndim, big-endian sizes, the bytes."""
    header = (0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(
    root: Path,
    folder: str = "MNIST",
    n_train: int = 120,
    n_test: int = 40,
    seed: int = 0,
    gz: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write an MNIST-format dataset of random 28x28 images under ``root/folder/raw``: the four
    idx files, or with ``gz`` only their ``.gz`` archives (as torchvision downloads them)."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        image_name, label_name = MNIST_NAMES[split]
        write_idx(raw / image_name, images)
        write_idx(raw / label_name, labels)
        if gz:
            for name in (image_name, label_name):
                (raw / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes()))
                (raw / name).unlink()
        written[split] = (images, labels)
    return written


def write_cifar10(
    root: Path, n_per_batch: int = 20, n_test: int = 30, seed: int = 0, tar: bool = False
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write a CIFAR-10-format dataset (5 training batches, a test batch, the meta file); with
    ``tar`` also ``<root>/cifar-10-python.tar.gz`` holding them, as torchvision downloads it.

    Each batch is a dict like the originals: ``data`` uint8 ``(N, 3072)`` (channel-major
    32x32 planes), ``labels`` a list of ints, ``batch_label`` and ``filenames``.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    train_parts = []
    for name in names:
        n = n_test if name == "test_batch" else n_per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        entry = {
            "batch_label": f"{name} of 6",
            "labels": labels,
            "data": data,
            "filenames": [f"image_{i}.png" for i in range(n)],
        }
        with open(folder / name, "wb") as stream:
            pickle.dump(entry, stream, protocol=2)
        if name != "test_batch":
            train_parts.append((data, labels))
    meta = {"num_cases_per_batch": n_per_batch, "label_names": CIFAR_CLASSES, "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as stream:
        pickle.dump(meta, stream, protocol=2)
    if tar:
        with tarfile.open(Path(root) / "cifar-10-python.tar.gz", "w:gz") as archive:
            archive.add(folder, arcname=folder.name)
    train = (
        np.concatenate([d for d, _ in train_parts]),
        np.array([v for _, labels in train_parts for v in labels]),
    )
    return {"train": train, "test": (data, np.array(labels))}


def write_svhn(
    root: Path, n_train: int = 60, n_test: int = 30, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write SVHN's ``train_32x32.mat`` and ``test_32x32.mat`` (MATLAB 5 files, as scipy reads
    them): ``X`` uint8 ``32 x 32 x 3 x N``, ``y`` uint8 ``N x 1`` in 1..10, 10 standing for the
    digit 0. Returns the images as ``N x 3 x 32 x 32`` and the labels as 0..9, as read back."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    Path(root).mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        digits = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(digits)
        matlab_labels = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        savemat(
            Path(root) / f"{split}_32x32.mat",
            {"X": images.transpose(2, 3, 1, 0), "y": matlab_labels},
        )
        written[split] = (images, digits.astype(np.int64))
    return written


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def accept_files(root: Path, setattr: Callable[[Any, str, Any], None] = setattr) -> None:
    """Make torchvision take the dataset files under ``root`` for the originals: set the MD5
    sums its MNIST, FashionMNIST, CIFAR10 and SVHN classes check to those of the files there
    (archives included). Files written later, or changed later, fail torchvision's check."""
    from torchvision import datasets

    root = Path(root)

    def sum_of(path: Path, known: str) -> str:
        return md5(path) if path.is_file() else known

    for source in (datasets.MNIST, datasets.FashionMNIST):
        raw = root / source.__name__ / "raw"
        setattr(source, "resources", [(f, sum_of(raw / f, k)) for f, k in source.resources])
    cifar = datasets.CIFAR10
    folder = root / cifar.base_folder
    for files in ("train_list", "test_list"):
        setattr(cifar, files, [[f, sum_of(folder / f, k)] for f, k in getattr(cifar, files)])
    meta_sum = sum_of(folder / cifar.meta["filename"], cifar.meta["md5"])
    setattr(cifar, "meta", {**cifar.meta, "md5": meta_sum})
    setattr(cifar, "tgz_md5", sum_of(root / cifar.filename, cifar.tgz_md5))
    svhn = {s: [url, f, sum_of(root / f, k)] for s, (url, f, k) in datasets.SVHN.split_list.items()}
    setattr(datasets.SVHN, "split_list", svhn)
