"""InMemoryLoader: batches of a uint8 image tensor held in memory, with batched augmentation.

The fast path of the ready-made factories: images are decoded once into one uint8 tensor and each
batch is an index into it, converted to float and normalised per batch (on the GPU when the
tensor lives there), instead of one PIL image and one transform call per sample.

Randomness and exact resume: everything random (the epoch's permutation, crop offsets and
flips) is drawn from torch's global CPU generator inside ``__iter__``, and producing a batch
draws nothing. So restoring the global RNG state, calling ``iter()`` again and skipping ``k``
batches (each skipped batch is one cheap indexing) gives the very batches of the interrupted
epoch, on any device. Under torchrun (``sharded``) the draws come from (seed, epoch) instead,
the same on every process, and each process serves its share of each global batch.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mlproject.data.factory import int_problems
from mlproject.errors import DataError


def normalize(images: Tensor, mean: Tensor | None = None, std: Tensor | None = None) -> Tensor:
    """uint8 ``N x C x H x W`` to float32 in [0, 1], then ``(x - mean) / std`` per channel.

    The same float32 operations, in the same order, as torchvision's ``ToTensor()`` followed by
    ``Normalize(mean, std)``, so both give identical tensors, on the CPU and on a GPU.

    Example:
        >>> x = torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)
        >>> normalize(x, torch.tensor([0.5]), torch.tensor([0.5]))[0, 0, 0, 0].item()
        1.0
    """
    x = images.div(_divisor(images.device))  # uint8 -> float32 in one pass
    if mean is not None and std is not None:
        x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    return x


def _divisor(device: torch.device) -> float | Tensor:
    """255, as ``ToTensor`` divides by it: a number on the CPU; on a GPU a tensor there,
    because CUDA turns division by a host number into multiplication by its reciprocal,
    which differs from the CPU's division in the last bit."""
    return 255 if device.type == "cpu" else _gpu_divisor(device)


@functools.cache
def _gpu_divisor(device: torch.device) -> Tensor:
    return torch.full((), 255.0, device=device)


def crop_flip(images: Tensor, offsets: Tensor, flips: Tensor, padding: int) -> Tensor:
    """Batched random crop (zero padding) and horizontal flip of uint8 ``N x C x H x W`` images.

    Sample ``i`` is padded by ``padding`` zeros on every side, cropped back to ``H x W`` at row
    ``offsets[i, 0]`` and column ``offsets[i, 1]`` (each in ``0..2 * padding``) and, if
    ``flips[i]``, mirrored left-right: torchvision's ``RandomCrop(H, padding)`` then
    ``RandomHorizontalFlip()`` with those parameters, for the whole batch in one gather.

    Example:
        >>> x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
        >>> crop_flip(x, torch.tensor([[1, 1]]), torch.tensor([True]), padding=1).equal(x.flip(3))
        True
    """
    n, c, h, w = images.shape
    if padding:
        images = F.pad(images, (padding, padding, padding, padding))
    width = w + 2 * padding
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # N x H
    cols = torch.arange(w, device=images.device).expand(n, w)
    cols = offsets[:, 1:] + torch.where(flips[:, None], w - 1 - cols, cols)  # N x W
    index = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return images.reshape(n, c, -1).gather(2, index).view(n, c, h, w)


class InMemoryLoader:
    """Serves ``(x, y)`` batches of in-memory uint8 images: x float32 ``N x C x H x W``, y int64.

    A re-iterable with ``len()`` (the number of batches), usable wherever a ``DataLoader`` is.
    ``to(device)`` moves the images once; batches are then made on that device.

    Args:
        images: uint8 tensor ``N x C x H x W`` (``N x H x W`` is taken as one channel).
        labels: integer tensor of ``N`` labels.
        batch_size: samples per batch; the last batch is smaller unless ``drop_last``.
        shuffle: a new permutation every epoch (every ``iter()``).
        drop_last: drop the last, incomplete batch.
        mean, std: per-channel normalisation after scaling to [0, 1]; None = only scale.
        crop_padding: random crop with this zero padding (0 = no crop), per sample and epoch.
        flip: random horizontal flip (probability 1/2), per sample and epoch.

    Example:
        >>> images = torch.randint(0, 256, (1000, 1, 28, 28), dtype=torch.uint8)
        >>> loader = InMemoryLoader(images, torch.randint(0, 10, (1000,)), 128, shuffle=True)
        >>> x, y = next(iter(loader))
        >>> len(loader), tuple(x.shape), x.dtype, y.dtype
        (8, (128, 1, 28, 28), torch.float32, torch.int64)
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        crop_padding: int = 0,
        flip: bool = False,
    ):
        if images.dim() == 3:
            images = images.unsqueeze(1)
        problems = int_problems(batch_size=(batch_size, 1), crop_padding=(crop_padding, 0))
        if images.dtype != torch.uint8 or images.dim() != 4:
            problems.append(
                f"images must be a uint8 tensor N x C x H x W; got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        if labels.dim() != 1 or len(labels) != len(images):
            problems.append(
                f"labels must be a 1-d tensor with one label per image ({len(images)}); "
                f"got shape {tuple(labels.shape)}"
            )
        if (mean is None) != (std is None):
            problems.append("give both mean and std, or neither")
        elif mean is not None and images.dim() == 4 and len(mean) not in (1, images.shape[1]):
            problems.append(
                f"mean/std need 1 or {images.shape[1]} values (one per channel); got {len(mean)}"
            )
        if problems:
            raise DataError("InMemoryLoader: " + "; ".join(problems))
        self.images = images
        self.labels = labels.to(torch.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.crop_padding = crop_padding
        self.flip = flip
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32)
        self.plan: Any = None  # mlproject.shard.GlobalBatches under torchrun (see sharded)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> InMemoryLoader:
        """Move images, labels and normalisation constants to ``device``; returns self."""
        self.images = self.images.to(device)
        self.labels = self.labels.to(device)
        if self.mean is not None:
            self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def sharded(self, world: Any, seed: int) -> InMemoryLoader:
        """This process's loader under torchrun: its share of global batches of
        ``world_size * batch_size`` images, drawn from (seed, epoch) (``mlproject.shard``)."""
        from mlproject.shard import GlobalBatches

        clone = copy.copy(self)
        clone.plan = GlobalBatches(
            len(self.images), self.batch_size, world, self.shuffle, self.drop_last, seed
        )
        return clone

    def part(self, start: int, stop: int) -> InMemoryLoader:
        """The loader of images ``start:stop`` only, unshuffled (a process's evaluation share)."""
        clone = copy.copy(self)
        clone.images, clone.labels = self.images[start:stop], self.labels[start:stop]
        clone.shuffle, clone.crop_padding, clone.flip, clone.plan = False, 0, False, None
        return clone

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order a sharded loader draws next (called by MLProject)."""
        if self.plan is not None:
            self.plan.set_epoch(epoch)

    def __len__(self) -> int:
        if self.plan is not None:
            return len(self.plan)
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # All of the epoch's randomness is drawn here, before the first batch, from the global
        # CPU generator (then moved): same draws on every device, nothing drawn per batch.
        n, padding = len(self.images), self.crop_padding
        generator = self.plan.generator() if self.plan is not None else None
        order = torch.randperm(n, generator=generator) if self.shuffle else None
        offsets = flips = None
        if padding or self.flip:  # the half not drawn is zeros: no crop, or no flip
            offsets = (
                torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
                if padding
                else torch.zeros(n, 2, dtype=torch.int64)
            )
            flips = (
                torch.randint(0, 2, (n,), generator=generator).bool()
                if self.flip
                else torch.zeros(n, dtype=torch.bool)
            )
        device = self.images.device
        order, offsets, flips = (t if t is None else t.to(device) for t in (order, offsets, flips))
        return self._batches(order, offsets, flips)

    def _spans(self) -> Iterator[tuple[int, int]]:
        """(start, stop) in the epoch's order of each batch this loader serves."""
        for k in range(len(self)):
            if self.plan is None:
                yield k * self.batch_size, min((k + 1) * self.batch_size, len(self.images))
            else:
                span = self.plan.positions(k) or self.plan.stand_in(k)
                yield span.start, span.stop

    def _batches(
        self, order: Tensor | None, offsets: Tensor | None, flips: Tensor | None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        for start, stop in self._spans():
            if order is None:
                images, labels = self.images[start:stop], self.labels[start:stop]
            else:
                # index_select, not images[index]: advanced indexing is ~10x slower on CPU.
                index = order[start:stop]
                images = self.images.index_select(0, index)
                labels = self.labels.index_select(0, index)
            if offsets is not None:
                # Draws are by position in the epoch, not by sample id: a sample gets a new
                # crop every epoch, and the draws do not depend on the batch size.
                images = crop_flip(
                    images, offsets[start:stop], flips[start:stop], self.crop_padding
                )
            yield normalize(images, self.mean, self.std), labels
