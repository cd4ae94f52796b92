"""ImageDatasetFactory: the template every ready-made image factory is declared on.

A ready-made factory declares its dataset: constants (``NAME``, ``SOURCE``, ``MEAN``, ``STD``,
``SHAPE``, ``CLASSES``), where torchvision keeps its files and fetches them from (``files``,
``urls``), and ``source`` / ``arrays`` where torchvision's signature or arrays differ from
MNIST's. The
template does the rest, once for all:

- fetch and decode with the ``torchvision.datasets`` class ``SOURCE`` (imported on first use:
  ``import mlproject`` does not pay for torchvision); when it fails, a ``DataError`` names
  each missing or damaged file and how to put it there, and a failed download leaves nothing;
- check the decoded arrays (image shape, one label per image, labels in range);
- hold the validation split out of the training split (``validation_size``, ``split_seed``);
- serve each split by the **fast path** when its transform is None (an ``InMemoryLoader`` over
  the uint8 tensor, normalised with ``MEAN`` / ``STD``, on the model's device after
  ``set_device``) or else the **per-sample path** (one PIL image at a time through the
  torchvision transform, batched by a ``DataLoader`` with ``num_workers``).

A transform of None therefore means ``Compose([ToTensor(), Normalize(MEAN, STD)])`` (plus the
dataset's fast-path augmentation of the training split), and both paths give equal tensors.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mlproject.data.factory import DatasetFactory, int_problems
from mlproject.data.files import MISSING, files_message, removed_on_failure, resolve_data_dir
from mlproject.data.in_memory import InMemoryLoader
from mlproject.errors import DataError

# A torchvision transform: takes a PIL image.
Transform = Callable[[Any], Any]


class TensorImages(Dataset):
    """Decoded images as a per-sample ``Dataset``: ``(transform(PIL image), label)`` per index,
    what torchvision's datasets do in ``__getitem__``, on the arrays they decoded. With
    ``transform=None`` an item is the uint8 ``C x H x W`` image itself.

    Example:
        >>> from torchvision.transforms import ToTensor
        >>> images = TensorImages(torch.zeros(10, 1, 28, 28, dtype=torch.uint8), torch.arange(10))
        >>> x, y = TensorImages(images.images, images.labels, ToTensor())[3]
        >>> tuple(x.shape), y
        ((1, 28, 28), 3)
    """

    def __init__(self, images: Tensor, labels: Tensor, transform: Transform | None = None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.images[index], int(self.labels[index])
        return (image if self.transform is None else self.transform(to_pil(image))), label

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All images (uint8 ``N x C x H x W``) and labels (int64), for the fast path."""
        return self.images, self.labels


def to_pil(image: Tensor) -> Any:
    """One uint8 ``C x H x W`` image as the PIL image torchvision's datasets would give."""
    from PIL import Image  # only the per-sample path and exports need PIL

    if image.shape[0] == 1:
        return Image.fromarray(image[0].numpy(), mode="L")
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


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
    if not 0 <= validation_size < n:
        raise DataError(
            f"validation_size={validation_size} must leave training data and be >= 0: the "
            f"training split has {n} samples. Use validation_size={min(5000, n // 10)} or 0"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    return order[validation_size:].sort().values, order[:validation_size].sort().values


class ImageDatasetFactory(DatasetFactory):
    """The template of the ready-made image factories (see the module docstring).

    A subclass declares the class constants below and ``files`` / ``urls``; it
    overrides ``source`` and ``arrays`` when its torchvision class is not called like MNIST's
    or holds its arrays elsewhere, and ``load`` to take its images from anywhere else.

    Args:
        batch_size: samples per batch, every split.
        train_transform: PIL transform of the training split; None = fast path.
        test_transform: the same for the validation and test splits.
        data_dir: the data directory (``mlproject.data.files``): the argument, else
            ``$DATA_DIR``, else ``~/.cache/mlproject/data``.
        validation_size: training images held out for validation (0 = no validation split).
        split_seed: seed of the hold-out, the same split in every process.
        num_workers: ``DataLoader`` workers of the per-sample path (the fast path needs none).
        download: fetch missing files with torchvision (needs the network, except for archives
            already in place, which are MD5-checked and unpacked).
        drop_last: drop the last incomplete training batch.
        augment: the fast path's training augmentation ``CROP_PADDING`` / ``FLIP``, if the
            dataset has one; False turns it off.

    Example (``SVHNFactory`` in ``mlproject/data/datasets.py`` is a whole declaration):
        >>> factory = SVHNFactory(128, data_dir="~/data", validation_size=5000)
        >>> len(factory.train_loader()), factory.classes[:3]
        (534, ['0', '1', '2'])
    """

    NAME = ""  # the dataset in messages
    SOURCE = ""  # the torchvision.datasets class that fetches and decodes the files
    MEAN: tuple[float, ...] = ()  # per-channel normalisation of the fast path, on [0, 1]
    STD: tuple[float, ...] = ()
    SHAPE: tuple[int, ...] = ()  # channels, height, width of the images
    CLASSES: tuple[str, ...] = ()  # the class names; labels are 0..len(CLASSES) - 1
    CROP_PADDING = 0  # fast-path augmentation: random crop with this zero padding (0 = none)
    FLIP = False  # fast-path augmentation: random horizontal flip

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
        problems = int_problems(
            batch_size=(batch_size, 1),
            validation_size=(validation_size, 0),
            split_seed=(split_seed, None),
            num_workers=(num_workers, 0),
        )
        if problems:  # before any file is touched
            raise DataError(
                "bad loader arguments: " + "; ".join(problems) + ". Example: batch_size=128, "
                "validation_size=5000, num_workers=0, split_seed=0"
            )
        from torchvision.transforms import Compose, Normalize, ToTensor

        self.data_dir = resolve_data_dir(data_dir)
        self.classes = list(self.CLASSES)
        self.validation_size, self.split_seed = validation_size, split_seed
        self.mean, self.std = tuple(self.MEAN), tuple(self.STD)
        self.splits = self.split(*self.load(download))
        given: dict[str, Any] = {}  # DatasetFactory's train_set=, train_loader=, ...
        for name, split in self.splits.items():
            train = name == "train"
            transform = train_transform if train else test_transform
            if transform is None:
                images, labels = split.tensors()
                given[f"{name}_loader"] = InMemoryLoader(
                    images,
                    labels,
                    batch_size,
                    shuffle=train,
                    drop_last=drop_last and train,
                    mean=self.mean,
                    std=self.std,
                    crop_padding=self.CROP_PADDING if augment and train else 0,
                    flip=self.FLIP and augment and train,
                )
                # its items as a dataset: the same tensors, through torchvision's transforms
                normalize = Compose([ToTensor(), Normalize(self.mean, self.std)])
                given[f"{name}_set"] = TensorImages(images, labels, normalize)
            else:
                given[f"{name}_set"] = copy.copy(split)  # shares the split's arrays
                given[f"{name}_set"].transform = transform
        super().__init__(
            **given,
            loader_kwargs={
                "batch_size": batch_size,
                "num_workers": num_workers,
                "drop_last": drop_last,
            },
        )

    def set_device(self, device: torch.device) -> None:
        """Move the fast path's images to ``device`` when it is a GPU; called once by MLProject.

        Batches are then indexed, augmented and normalised there: no host-to-device copy per
        step. On the CPU nothing moves; per-sample splits are moved batch by batch by the model.
        """
        if torch.device(device).type != "cpu":
            for loader in self._loaders.values():
                if isinstance(loader, InMemoryLoader):
                    loader.to(device)

    # --- the declaration: what a ready-made factory says about its files ----------------------
    def files(self) -> dict[str, dict[str, str | None]]:
        """``{"train": {file: md5}, "test": {...}}``: each split's files, relative to the data
        directory, with the MD5 torchvision checks them against on every load (None: none)."""
        raise NotImplementedError(f"{type(self).__name__} must declare its files()")

    def urls(self) -> dict[str, tuple[str, str | None]]:
        """``{url: (folder, md5)}``: what torchvision downloads, into which folder of the data
        directory ("" for itself), with its MD5. A download lands at ``<folder>/<the URL's last
        part>``: the error tells how to put it there by hand, a failed download removes it."""
        raise NotImplementedError(f"{type(self).__name__} must declare its urls()")

    def source(self, split: str, download: bool) -> Any:
        """The torchvision dataset of ``split`` ("train" or "test"); MNIST's and CIFAR-10's
        signature."""
        return self.source_class()(self.data_dir, train=split == "train", download=download)

    def arrays(self, source: Any) -> tuple[Any, Any]:
        """(images, labels) of a torchvision dataset: uint8 ``N x C x H x W`` (or ``N x H x W``)
        and integer labels, tensors, arrays or lists."""
        return source.data, source.targets

    def damage(self, path: Path) -> str | None:
        """What is wrong with ``path``, a file without an MD5 that torchvision failed on."""
        return None

    # --- the template ------------------------------------------------------------------------
    def source_class(self) -> type:
        """The torchvision dataset class ``SOURCE``, imported on first use: the import takes
        about as long as torch's (``benchmarks/bench_startup.py``), so only loading a
        ready-made dataset pays it."""
        import torchvision.datasets

        return getattr(torchvision.datasets, self.SOURCE)

    def load(self, download: bool) -> tuple[TensorImages, TensorImages]:
        """The checked (train, test) images of the files, fetched first when missing."""
        files = self.files()
        try:
            sources = {split: self.source(split, download=False) for split in files}
        except Exception as error:  # whatever torchvision raises on missing or broken files
            sources = self._recover(files, download, error)
        return self._checked("train", files, sources), self._checked("test", files, sources)

    def split(self, train: TensorImages, test: TensorImages) -> dict[str, Any]:
        """The splits served, ``{"train", "validation", "test"}``: the validation split held
        out of ``train`` by ``hold_out`` (none when ``validation_size`` is 0), the test split
        as it is. A split is a ``Dataset`` with a ``transform`` and ``tensors()``, as
        ``TensorImages``; ClutteredMNIST builds its canvases here."""
        held_out = hold_out(len(train), self.validation_size, self.split_seed)
        splits = {
            name: TensorImages(train.images[index], train.labels[index])
            for name, index in zip(("train", "validation"), held_out)
            if len(index)
        }
        return {**splits, "test": test}

    def _recover(self, files: dict, download: bool, error: Exception) -> dict[str, Any]:
        """After torchvision failed on the files: fetch them (leaving nothing if that fails)
        or raise the ``DataError`` naming each missing or damaged file."""
        if isinstance(error, ImportError):
            package = error.name or str(error)
            raise DataError(
                f"{self.NAME} needs {package} to read its files: pip install {package}"
            ) from error
        every = {name: md5 for split in files.values() for name, md5 in split.items()}
        urls = self.urls().items()
        how = "\n".join(
            ["Download them on a machine with internet access:"]
            + [f"  {url} (MD5 {md5}) into {self.data_dir / folder}/" for url, (folder, md5) in urls]
            + ["download=True checks and unpacks archives put there without the network."]
        )
        problems = self._problems(every)
        if not problems:
            raise error  # torchvision failed on files that look whole: not ours to explain
        if not download:
            why = "download=False: pass download=True to fetch them, with network"
            message = files_message(self.NAME, self.data_dir, every, problems, why, how)
            raise DataError(message) from error
        creates = {self.data_dir / Path(name).parts[0] for name in every}
        creates.update(self.data_dir / folder / url.rsplit("/", 1)[-1] for url, (folder, _) in urls)
        try:
            with removed_on_failure(creates):
                return {split: self.source(split, download=True) for split in files}
        except Exception as failure:
            reason = " ".join(str(failure).split()) or repr(failure)  # torchvision's, on one line
            why = f"download=True could not fetch them: {reason}"
            problems = self._problems(every)
            message = files_message(self.NAME, self.data_dir, every, problems, why, how)
            raise DataError(message) from failure

    def _problems(self, files: dict[str, str | None]) -> dict[str, str]:
        """``{file: MISSING or what is wrong}`` for each of ``{file: md5}`` that is not whole."""
        from torchvision.datasets.utils import check_integrity

        problems = {}
        for name, md5 in files.items():
            path = self.data_dir / name
            if not path.is_file():
                problems[name] = MISSING
            elif md5 is not None and not check_integrity(path, md5):
                problems[name] = f"its MD5 is not torchvision's {md5}"
            elif (damage := self.damage(path)) is not None:
                problems[name] = damage
        return problems

    def _checked(self, split: str, files: dict, sources: dict[str, Any]) -> TensorImages:
        """The arrays of ``sources[split]`` as ``TensorImages``, after checking they are what
        the class declares (a ``DataError`` naming the split's files if not)."""
        images, labels = self.arrays(sources[split])
        if not torch.is_tensor(images):
            images = torch.from_numpy(np.ascontiguousarray(images))
        images = images.unsqueeze(1) if images.dim() == 3 else images
        labels = torch.as_tensor(labels).long()
        shape, declared = ("x".join(map(str, shape)) for shape in (images.shape[1:], self.SHAPE))
        problem = None
        if images.dtype != torch.uint8 or shape != declared:
            problem = f"hold {images.dtype} images of {shape}; {self.NAME} images are uint8 "
            problem += declared
        elif len(images) == 0:
            problem = "hold no images"
        elif labels.shape != (len(images),):
            problem = f"hold {labels.numel()} labels for the {len(images)} images"
        elif labels.min() < 0 or labels.max() >= len(self.CLASSES):
            problem = (
                f"hold labels {int(labels.min())}..{int(labels.max())}; {self.NAME} labels are "
                f"0..{len(self.CLASSES) - 1}"
            )
        if problem is not None:
            raise DataError(
                f"{self.NAME}'s {split} files ({', '.join(files[split])}) in {self.data_dir} "
                f"{problem}. They are damaged or not {self.NAME}'s: delete them to have them "
                "downloaded again (download=True), or replace them with the originals"
            )
        return TensorImages(images, labels)


# The name of the first release.
ImageDatasetLoader = ImageDatasetFactory
