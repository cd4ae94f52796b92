"""The ready-made factories over torchvision's datasets: MNIST, FashionMNIST, CIFAR-10, SVHN.

Each is declared on ``ImageDatasetFactory`` by its constants and by where torchvision keeps its
files; torchvision downloads them (MD5-checked), decodes them and, for CIFAR-10 and SVHN,
checks every file's MD5 on each load. The layouts are torchvision's, so a folder torchvision
filled works as is. What torchvision lacks is here: ``idx_damage`` says what is wrong with an
MNIST file torchvision's decoder fails on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mlproject.data.images import ImageDatasetFactory

# The first bytes of an idx file of unsigned bytes: 0x0000 0800 + number of dimensions.
_IDX_UBYTE = 0x0800


class MNISTFactory(ImageDatasetFactory):
    """MNIST handwritten digits: 60,000 training (less the validation hold-out) and 10,000 test
    images, 28x28 grey, labels 0..9.

    Files: ``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, or their four
    ``.gz`` archives there (MD5-checked and unpacked without the network). Batches are ``(x, y)``:
    x float32 ``N x 1 x 28 x 28`` normalised with ``MEAN`` / ``STD`` (the training set's
    statistics), y int64. Arguments: see ``ImageDatasetFactory``.

    Example:
        >>> factory = MNISTFactory(128, data_dir="~/data")
        >>> x, y = next(iter(factory.train_loader()))
        >>> tuple(x.shape), len(factory.validation_loader().images)
        ((128, 1, 28, 28), 5000)
    """

    NAME = SOURCE = "MNIST"
    MEAN = (0.1307,)
    STD = (0.3081,)
    SHAPE = (1, 28, 28)
    CLASSES = tuple("0123456789")

    def files(self) -> dict[str, dict[str, str | None]]:
        return {
            split: {
                f"{self.SOURCE}/raw/{prefix}-{kind}-ubyte": None
                for kind in ("images-idx3", "labels-idx1")
            }
            for split, prefix in (("train", "train"), ("test", "t10k"))
        }

    def urls(self) -> dict[str, tuple[str, str | None]]:
        source = self.source_class()  # gunzipped copies in raw/ work as well
        return {
            f"{source.mirrors[0]}{name}": (f"{self.SOURCE}/raw", md5)
            for name, md5 in source.resources
        }

    def damage(self, path: Path) -> str | None:
        return idx_damage(path, ndim=3 if "-images-" in path.name else 1)


# The names of the first release (the original README uses them).
MNISTDatasetLoader = MNISTFactory


class FashionMNISTFactory(MNISTFactory):
    """Zalando's Fashion-MNIST: MNIST's format and sizes, ten classes of clothing.

    Files: ``<data_dir>/FashionMNIST/raw/`` with MNIST's file names.

    Example:
        >>> factory = FashionMNISTFactory(256, validation_size=0)
        >>> factory.validation_loader() is None, factory.classes[0]
        (True, 'T-shirt/top')
    """

    NAME = SOURCE = "FashionMNIST"
    MEAN = (0.2860,)
    STD = (0.3530,)
    CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat")
    CLASSES += ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


FashionMNISTDatasetLoader = FashionMNISTFactory


class CIFAR10Factory(ImageDatasetFactory):
    """CIFAR-10: 50,000 training (less the validation hold-out) and 10,000 test colour images,
    32x32, ten classes (``classes`` holds their names).

    Files: ``<data_dir>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``, each
    MD5-checked by torchvision on every load, or ``<data_dir>/cifar-10-python.tar.gz`` (checked
    and unpacked without the network). Batches are ``(x, y)``: x float32 ``N x 3 x 32 x 32``
    normalised with ``MEAN`` / ``STD``, y int64. The fast path augments the training split as
    the README's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` (``augment=False``
    turns that off).

    Example:
        >>> from torchvision.transforms import Compose, Normalize, ToTensor
        >>> norm = Normalize(CIFAR10Factory.MEAN, CIFAR10Factory.STD)
        >>> factory = CIFAR10Factory(64, test_transform=Compose([ToTensor(), norm]))
        >>> tuple(next(iter(factory.test_loader()))[0].shape)
        (64, 3, 32, 32)
    """

    NAME = "CIFAR-10"
    SOURCE = "CIFAR10"
    MEAN = (0.4914, 0.4822, 0.4465)
    STD = (0.2470, 0.2435, 0.2616)
    SHAPE = (3, 32, 32)
    CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
    CLASSES += ("dog", "frog", "horse", "ship", "truck")
    CROP_PADDING, FLIP = 4, True

    def files(self) -> dict[str, dict[str, str | None]]:
        source = self.source_class()
        meta = [(source.meta["filename"], source.meta["md5"])]  # both splits read it
        return {
            split: {f"{source.base_folder}/{name}": md5 for name, md5 in [*names, *meta]}
            for split, names in (("train", source.train_list), ("test", source.test_list))
        }

    def arrays(self, source: Any) -> tuple[Any, Any]:
        return source.data.transpose(0, 3, 1, 2), source.targets  # torchvision's is N x H x W x C

    def urls(self) -> dict[str, tuple[str, str | None]]:
        source = self.source_class()  # an unpacked cifar-10-batches-py/ works as well
        return {source.url: ("", source.tgz_md5)}


CIFARDatasetLoader = CIFAR10Factory


class SVHNFactory(ImageDatasetFactory):
    """SVHN: 73,257 training and 26,032 test digits cropped from Street View house numbers,
    32x32 colour, labels 0..9 (torchvision reads the files' label 10 as 0).

    Files: ``<data_dir>/{train,test}_32x32.mat``, MD5-checked by torchvision on every load;
    reading them needs scipy. Arguments: see ``ImageDatasetFactory``.
    """

    NAME = SOURCE = "SVHN"
    MEAN = (0.4377, 0.4438, 0.4728)
    STD = (0.1980, 0.2010, 0.1970)
    SHAPE = (3, 32, 32)
    CLASSES = tuple("0123456789")

    def files(self) -> dict[str, dict[str, str | None]]:
        splits = self.source_class().split_list
        return {split: {splits[split][1]: splits[split][2]} for split in ("train", "test")}

    def source(self, split: str, download: bool) -> Any:
        return self.source_class()(self.data_dir, split=split, download=download)

    def arrays(self, source: Any) -> tuple[Any, Any]:
        return source.data, source.labels  # already N x 3 x 32 x 32

    def urls(self) -> dict[str, tuple[str, str | None]]:
        splits = self.source_class().split_list  # its "extra" split is not served
        return {splits[split][0]: ("", splits[split][2]) for split in ("train", "test")}


def idx_damage(path: Path, ndim: int) -> str | None:
    """What is wrong with an idx file of ``ndim``-d unsigned bytes, or None if its header and
    size agree (torchvision's decoder only asserts on a bad header).

    Example:
        >>> idx_damage(Path("MNIST/raw/t10k-labels-idx1-ubyte"), ndim=1) is None
        True
    """
    with open(path, "rb") as stream:
        header = stream.read(4 * (1 + ndim))
    if len(header) < 4 * (1 + ndim):
        return f"is {len(header)} bytes long, shorter than an idx header ({4 * (1 + ndim)})"
    magic = int.from_bytes(header[:4], "big")
    if magic != _IDX_UBYTE + ndim:
        hint = " (it looks gzipped: gunzip it)" if header[:2] == b"\x1f\x8b" else ""
        return (
            f"starts with magic number {magic:#010x}{hint}; an idx file of {ndim}-d unsigned "
            f"bytes starts with {_IDX_UBYTE + ndim:#010x}"
        )
    shape = tuple(int.from_bytes(header[4 * i : 4 * i + 4], "big") for i in range(1, ndim + 1))
    expected, size = len(header) + math.prod(shape), path.stat().st_size
    if size != expected:
        state = "truncated" if size < expected else "longer than announced"
        return (
            f"is {state}: its header announces shape {shape}, {expected} bytes in all, but the "
            f"file has {size} bytes"
        )
    return None
