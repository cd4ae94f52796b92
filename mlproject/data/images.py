"""ImageDatasetLoader: the DatasetFactory shared by the image datasets, fast path or per-sample.

A dataset module (MNIST, CIFAR-10, ClutteredMNIST) only decodes its files into uint8 tensors;
this module holds out the validation split and serves each split one of two ways:

- **fast path** (the split's transform is None): an ``InMemoryLoader`` over the uint8 tensor,
  batches normalised with the dataset's mean and std, on the model's device;
- **per-sample path** (a torchvision transform is given): a ``Dataset`` yielding one PIL image
  at a time through the transform, batched by a ``DataLoader`` with ``num_workers``.

A transform of None therefore means ``Compose([ToTensor(), Normalize(mean, std)])`` (plus the
dataset's default augmentation for the training split), and both paths give equal tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from mlproject.data.factory import DatasetFactory
from mlproject.data.in_memory import InMemoryLoader, normalize
from mlproject.errors import DataError

Transform = Callable[[Image.Image], Any]


class ImageSplit(Protocol):
    """One split of an image dataset, servable by either path."""

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All images as uint8 ``N x C x H x W`` and labels as int64 ``N``."""
        ...

    def dataset(self, transform: Transform) -> Dataset:
        """A per-sample ``Dataset`` of ``(transform(pil_image), int label)``."""
        ...

    def __len__(self) -> int: ...


class TensorImages(Dataset):
    """Decoded images as a per-sample ``Dataset``: ``(transform(PIL image), label)`` per index.

    What torchvision's MNIST and CIFAR10 datasets do in ``__getitem__``, on images already
    decoded and checked. With ``transform=None`` an item is the normalised float tensor the
    fast path would give for it.

    Example:
        >>> from torchvision.transforms import ToTensor
        >>> images = TensorImages(torch.zeros(10, 1, 28, 28, dtype=torch.uint8), torch.arange(10))
        >>> x, y = images.dataset(ToTensor())[3]
        >>> tuple(x.shape), y
        ((1, 28, 28), 3)
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        transform: Transform | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        self.images = images if images.dim() == 4 else images.unsqueeze(1)
        self.labels = labels.to(torch.int64)
        self.transform = transform
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        label = int(self.labels[index])
        if self.transform is None:
            return normalize(self.images[index : index + 1], self.mean, self.std)[0], label
        return self.transform(to_pil(self.images[index])), label

    # --- ImageSplit -----------------------------------------------------------------------
    def tensors(self) -> tuple[Tensor, Tensor]:
        return self.images, self.labels

    def dataset(self, transform: Transform) -> Dataset:
        return TensorImages(self.images, self.labels, transform)

    def subset(self, index: Tensor) -> TensorImages:
        """The images at ``index`` (a copy), e.g. the training or validation part of a split."""
        return TensorImages(self.images[index], self.labels[index], self.transform)


def to_pil(image: Tensor) -> Image.Image:
    """One uint8 ``C x H x W`` image as the PIL image torchvision's datasets would give."""
    if image.shape[0] == 1:
        return Image.fromarray(image[0].numpy(), mode="L")
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


def check_arguments(**arguments: Any) -> None:
    """Raise one ``DataError`` naming every bad loader argument, before any file is touched.

    Knows ``batch_size`` (int >= 1), ``validation_size``, ``num_workers`` (int >= 0) and
    ``split_seed`` (int); other names are ignored.

    Example:
        >>> check_arguments(batch_size=0, num_workers=-1)
        Traceback (most recent call last):
        mlproject.errors.DataError: bad loader arguments: batch_size=0 must be an int >= 1 ...
    """
    minimum = {"batch_size": 1, "validation_size": 0, "num_workers": 0, "split_seed": None}
    problems = []
    for name, value in arguments.items():
        if name not in minimum:
            continue
        low = minimum[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or (low is not None and value < low)
        ):
            allowed = "an int" if low is None else f"an int >= {low}"
            problems.append(f"{name}={value!r} must be {allowed}")
    if problems:
        raise DataError(
            "bad loader arguments: " + "; ".join(problems) + ". Example: batch_size=128, "
            "validation_size=5000, num_workers=0, split_seed=0"
        )


def hold_out(n: int, validation_size: int, split_seed: int) -> tuple[Tensor, Tensor]:
    """Split ``range(n)`` into (train, validation) indices, both sorted.

    The validation indices are the first ``validation_size`` of a permutation drawn from
    ``torch.Generator().manual_seed(split_seed)``: the same in every process and on every
    machine, and independent of the global RNG.

    Example:
        >>> train, val = hold_out(10, 3, split_seed=0)
        >>> len(train), len(val), sorted(set(train.tolist()) | set(val.tolist())) == list(range(10))
        (7, 3, True)
    """
    check_arguments(validation_size=validation_size, split_seed=split_seed)
    if validation_size >= n:
        raise DataError(
            f"validation_size={validation_size} must leave training data: the "
            f"training split has {n} samples. Use validation_size={min(5000, n // 10)} or 0"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    return order[validation_size:].sort().values, order[:validation_size].sort().values


def split_off(
    train: TensorImages, test: TensorImages, validation_size: int, split_seed: int
) -> dict[str, TensorImages | None]:
    """``{"train", "validation", "test"}`` splits: the validation split held out of ``train``
    by ``hold_out`` (None when ``validation_size`` is 0); the test split is never touched."""
    train_index, validation_index = hold_out(len(train), validation_size, split_seed)
    return {
        "train": train.subset(train_index),
        "validation": train.subset(validation_index) if validation_size else None,
        "test": test,
    }


class ImageDatasetLoader(DatasetFactory):
    """The train / validation / test splits of an image dataset, each served by the fast path
    or, when given a torchvision transform, the per-sample path.

    Args:
        splits: ``{"train": ..., "validation": ... or None, "test": ...}``.
        batch_size: samples per batch, every split.
        train_transform: PIL transform of the training split; None = fast path.
        test_transform: PIL transform of the validation and test splits; None = fast path.
        mean, std: per-channel normalisation of the fast path (after scaling to [0, 1]).
        augment: the fast path's training augmentation: random crop with zero padding 4 and
            horizontal flip, per sample and epoch.
        num_workers: ``DataLoader`` workers of the per-sample path (the fast path needs none).
        drop_last: drop the last incomplete training batch.

    Example:
        >>> images = TensorImages(torch.zeros(100, 1, 28, 28, dtype=torch.uint8), torch.zeros(100))
        >>> factory = ImageDatasetLoader({"train": images, "validation": None, "test": images},
        ...                              batch_size=32, mean=(0.5,), std=(0.5,))
        >>> len(factory.train_loader()), factory.validation_loader()
        (4, None)
    """

    # The padding of the fast path's random crop, as in the README's RandomCrop(32, padding=4).
    CROP_PADDING = 4

    def __init__(
        self,
        splits: dict[str, ImageSplit | None],
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        train_transform: Transform | None = None,
        test_transform: Transform | None = None,
        augment: bool = False,
        num_workers: int = 0,
        drop_last: bool = False,
    ):
        check_arguments(batch_size=batch_size, num_workers=num_workers)
        self.mean, self.std = tuple(mean), tuple(std)
        sets: dict[str, Dataset | None] = {}
        loaders: dict[str, InMemoryLoader | None] = {}
        for name, split in splits.items():
            transform = train_transform if name == "train" else test_transform
            sets[name] = loaders[name] = None
            if split is None:
                continue
            if transform is None:
                images, labels = split.tensors()
                train = name == "train"
                loaders[name] = InMemoryLoader(
                    images,
                    labels,
                    batch_size,
                    shuffle=train,
                    drop_last=drop_last and train,
                    mean=mean,
                    std=std,
                    crop_padding=self.CROP_PADDING if augment and train else 0,
                    flip=augment and train,
                )
                sets[name] = TensorImages(images, labels, None, mean, std)
            else:
                sets[name] = split.dataset(transform)
        super().__init__(
            train_set=sets["train"],
            train_loader=loaders["train"],
            validation_set=sets["validation"],
            validation_loader=loaders["validation"],
            test_set=sets["test"],
            test_loader=loaders["test"],
            loader_kwargs={
                "batch_size": batch_size,
                "num_workers": num_workers,
                "drop_last": drop_last,
            },
        )
        self._in_memory = [loader for loader in loaders.values() if loader is not None]

    def set_device(self, device: torch.device) -> None:
        """Move the fast path's images to ``device`` when it is a GPU; called once by MLProject.

        Batches are then indexed, augmented and normalised there: no host-to-device copy per
        step. On the CPU nothing moves; per-sample splits are moved batch by batch by the model.
        """
        if torch.device(device).type != "cpu":
            for loader in self._in_memory:
                loader.to(device)
