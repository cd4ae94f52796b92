"""CIFAR-10: the python pickle batches, checked and decoded, and their loader."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlproject.data import download as _download
from mlproject.data.images import (
    ImageDatasetLoader,
    TensorImages,
    Transform,
    check_arguments,
    split_off,
)
from mlproject.data.paths import file_error, require_files, resolve_data_dir

FOLDER = _download.CIFAR10_FOLDER  # "cifar-10-batches-py", inside the data directory
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
IMAGE_SHAPE = (3, 32, 32)
N_CLASSES = 10

# What a CIFAR batch pickle may reference: numpy arrays and nothing else (no code runs).
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it references {module}.{name}, not a numpy array")
        return super().find_class(module, name)


def read_pickle(path: Path) -> Any:
    """Unpickle a CIFAR file (Python 2 pickles included), allowing only numpy arrays inside.

    Raises ``DataError`` naming the file when it is missing, truncated or not such a pickle.
    """
    try:
        with open(path, "rb") as stream:
            return _ArrayUnpickler(stream, encoding="latin1").load()
    except OSError as err:
        raise file_error("CIFAR-10", path, f"cannot be read ({err.strerror})") from err
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as err:
        raise file_error(
            "CIFAR-10", path, f"is not a complete CIFAR-10 python pickle (truncated?): {err}"
        ) from err


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read and check one CIFAR-10 batch: uint8 images ``N x 3 x 32 x 32``, int64 labels.

    Example:
        >>> images, labels = read_batch(Path("cifar-10-batches-py/test_batch"))
        >>> tuple(images.shape), labels.dtype
        ((10000, 3, 32, 32), torch.int64)
    """
    entry = read_pickle(path)
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise file_error(
            "CIFAR-10", path, f"holds {keys}; a CIFAR-10 batch is a dict with 'data' and 'labels'"
        )
    data = entry["data"]
    size = int(np.prod(IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (size,):
        shape, dtype = getattr(data, "shape", "?"), getattr(data, "dtype", type(data).__name__)
        raise file_error(
            "CIFAR-10",
            path,
            f"has data of shape {shape} and type {dtype}; a CIFAR-10 batch holds uint8 data of "
            f"shape (N, {size}), N images of 3x32x32",
        )
    labels = np.asarray(entry["labels"])
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise file_error(
            "CIFAR-10",
            path,
            f"holds labels of shape {labels.shape} and type {labels.dtype} for {len(data)} "
            "images; expected one int label per image",
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise file_error(
            "CIFAR-10",
            path,
            f"holds labels in {labels.min()}..{labels.max()}; CIFAR-10 labels are 0..9",
        )
    images = torch.from_numpy(data.reshape(-1, *IMAGE_SHAPE).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def read_classes(path: Path) -> list[str]:
    """The ten class names of ``batches.meta``."""
    meta = read_pickle(path)
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != N_CLASSES:
        raise file_error(
            "CIFAR-10", path, f"holds {names!r}, not the {N_CLASSES} names under 'label_names'"
        )
    return [str(name) for name in names]


def load_cifar10(root: Path, download: bool = True) -> tuple[TensorImages, TensorImages, list[str]]:
    """The (train, test) splits and class names of ``<root>/cifar-10-batches-py``.

    Example:
        >>> train, test, classes = load_cifar10(resolve_data_dir(None), download=False)
        >>> len(train), len(test), classes[0]
        (50000, 10000, 'airplane')
    """
    files = [f"{FOLDER}/{name}" for name in (*TRAIN_FILES, *TEST_FILES, META_FILE)]
    fetch, creates = _download.cifar10_fetch(root) if download else (None, ())
    paths = require_files(
        "CIFAR-10",
        root,
        files,
        how=lambda: _download.cifar10_instructions(root),
        fetch=fetch,
        fetch_creates=creates,
    )
    batches = [read_batch(path) for path in paths[: len(TRAIN_FILES) + len(TEST_FILES)]]
    classes = read_classes(paths[-1])
    train = TensorImages(*(torch.cat(parts) for parts in zip(*batches[: len(TRAIN_FILES)])))
    test = TensorImages(*batches[-1])
    return train, test, classes


class CIFARDatasetLoader(ImageDatasetLoader):
    """CIFAR-10: 50,000 training (less the validation hold-out) and 10,000 test colour images,
    32x32, ten classes (``classes`` holds their names).

    Files: ``<data_dir>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``,
    torchvision's layout, downloaded (MD5-checked) when missing and ``download`` is True;
    existing files are checked for structure (shapes, counts, labels), not checksummed.
    ``data_dir``: the argument, else ``$DATA_DIR``, else ``~/.cache/mlproject/data``.

    Batches are ``(x, y)``: x float32 ``N x 3 x 32 x 32`` normalised with ``MEAN`` / ``STD``
    (the training set's per-channel statistics), y int64. Without transforms the splits use
    the fast in-memory path, whose training split is augmented as the README's
    ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` (``augment=False`` turns that
    off); a torchvision transform switches its split(s) to the per-sample path.

    Args:
        batch_size: samples per batch.
        train_transform: PIL transform of the training split; None = fast path.
        test_transform: the same for the validation and test splits.
        data_dir: folder holding ``cifar-10-batches-py/``.
        validation_size: training images held out for validation (0 = none).
        split_seed: seed of the hold-out, the same split in every process.
        num_workers: workers of the per-sample path.
        download: download missing files (needs the network).
        drop_last: drop the last incomplete training batch.
        augment: random crop (padding 4) and flip of the fast path's training batches.

    Example:
        >>> from torchvision.transforms import Compose, Normalize, ToTensor
        >>> norm = Normalize(CIFARDatasetLoader.MEAN, CIFARDatasetLoader.STD)
        >>> factory = CIFARDatasetLoader(64, test_transform=Compose([ToTensor(), norm]))
        >>> tuple(next(iter(factory.test_loader()))[0].shape)
        (64, 3, 32, 32)
    """

    MEAN = (0.4914, 0.4822, 0.4465)
    STD = (0.2470, 0.2435, 0.2616)

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
        augment: bool = True,
    ):
        check_arguments(
            batch_size=batch_size,
            validation_size=validation_size,
            split_seed=split_seed,
            num_workers=num_workers,
        )
        self.data_dir = resolve_data_dir(data_dir)
        train, test, self.classes = load_cifar10(self.data_dir, download)
        super().__init__(
            split_off(train, test, validation_size, split_seed),
            batch_size,
            mean=self.MEAN,
            std=self.STD,
            train_transform=train_transform,
            test_transform=test_transform,
            augment=augment,
            num_workers=num_workers,
            drop_last=drop_last,
        )
