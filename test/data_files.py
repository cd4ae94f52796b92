"""Writers of small dataset files in the real on-disk formats, for tests and the benchmark.

``write_mnist`` writes torchvision's ``<root>/<folder>/raw/*-ubyte`` idx files and
``write_cifar10`` the ``<root>/cifar-10-batches-py/`` python pickles, filled with seeded random
pixels, so the loaders' real decoding code runs without the network. Each returns the arrays
it wrote, for comparison.
"""

from __future__ import annotations

import pickle
from pathlib import Path

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
    root: Path, folder: str = "MNIST", n_train: int = 120, n_test: int = 40, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write an MNIST-format dataset of random 28x28 images under ``root/folder/raw``."""
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
        written[split] = (images, labels)
    return written


def write_cifar10(
    root: Path, n_per_batch: int = 20, n_test: int = 30, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write a CIFAR-10-format dataset (5 training batches, a test batch, the meta file).

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
    train = (
        np.concatenate([d for d, _ in train_parts]),
        np.array([v for _, labels in train_parts for v in labels]),
    )
    return {"train": train, "test": (data, np.array(labels))}
