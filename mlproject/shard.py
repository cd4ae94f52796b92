"""Shards: the training data of any number of processes in one global order, and evaluation
that counts each sample once.

Under torchrun, a training loader's ``batch_size`` is per process. The epoch's order is drawn
from (seed, epoch), the same on every process, and cut into global batches of
``world_size * batch_size``; each process takes its slice of each. So W processes with batch
b see exactly the global batches one process with batch W*b sees, and each epoch covers the
training set once: the last, partial global batch is split as far as it goes, each process's
loss weighted by its share (``GlobalBatches.scale``) so that the averaged gradient is that
batch's mean; a process left without a sample gets one with weight 0, since every process
must take part in the backward pass. Evaluation gives each process a contiguous part of the
set, no sample twice, and the processes add up their sums and counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
)

from mlproject.distributed import World
from mlproject.errors import DataError


class GlobalBatches(Sampler[list[int]]):
    """This process's share of each global batch, for a dataset of ``n`` samples.

    Example:
        >>> plan = GlobalBatches(10, 2, World(rank=1, world_size=2), shuffle=False)
        >>> list(plan), [plan.scale(k) for k in range(len(plan))]
        ([[2, 3], [6, 7], [8]], [1.0, 1.0, 0.0])
    """

    def __init__(
        self, n: int, batch_size: int, world: World, shuffle: bool = True,
        drop_last: bool = False, seed: int = 0,
    ):  # fmt: skip
        self.n, self.batch_size, self.world = n, batch_size, world
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.epoch = 0
        self.global_size = world.world_size * batch_size

    def set_epoch(self, epoch: int) -> None:
        """Draw the next ``iter()``'s order for ``epoch`` (0-based), the same on every process."""
        self.epoch = epoch

    def generator(self) -> torch.Generator:
        """The epoch's generator: the order (and in-memory augmentation) come from it."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def order(self, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=generator or self.generator())

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.global_size)
        return full + (1 if rest and not self.drop_last else 0)

    def positions(self, k: int) -> range:
        """The positions (in the epoch's order) of this process's samples in global batch k;
        empty when the last global batch does not reach this process."""
        start = k * self.global_size + self.world.rank * self.batch_size
        stop = min(start + self.batch_size, (k + 1) * self.global_size, self.n)
        return range(start, max(start, stop))

    def scale(self, k: int) -> float:
        """The weight of this process's mean loss in global batch k, so that the average over
        processes is the global batch's mean: its samples * world size / the batch's samples."""
        size = min(self.global_size, self.n - k * self.global_size)
        return len(self.positions(k)) * self.world.world_size / size

    def stand_in(self, k: int) -> range:
        """A position to serve (with weight 0) when this process has none in global batch k."""
        return range(k * self.global_size, k * self.global_size + 1)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order().tolist()
        for k in range(len(self)):
            positions = self.positions(k) or self.stand_in(k)
            yield [order[p] for p in positions]


def shard_training(loader: Any, world: World, seed: int) -> Any:
    """The training loader of this process: a DataLoader rebuilt on ``GlobalBatches``, or an
    InMemoryLoader taking its share (its ``sharded``); anything else is refused."""
    if hasattr(loader, "sharded"):  # an InMemoryLoader
        return loader.sharded(world, seed)
    reason = _unshardable(loader)
    if reason:
        raise DataError(
            f"under torchrun mlproject shards the training loader itself, and this one "
            f"{reason}. Give a DataLoader over a map-style dataset with shuffle=True/False and "
            "batch_size (its batch_size is per process), or an InMemoryLoader"
        )
    plan = GlobalBatches(
        len(loader.dataset), loader.batch_size, world,
        shuffle=isinstance(loader.sampler, RandomSampler), drop_last=loader.drop_last, seed=seed,
    )  # fmt: skip
    return DataLoader(loader.dataset, batch_sampler=plan, **_options(loader))


def _unshardable(loader: Any) -> str | None:
    if not isinstance(loader, DataLoader):
        return f"is a {type(loader).__name__}, not a DataLoader"
    if isinstance(loader.dataset, IterableDataset):
        return "reads an IterableDataset (it has no indices to shard)"
    if type(loader.batch_sampler) is not BatchSampler or loader.batch_size is None:
        return "has a batch_sampler of its own"
    if type(loader.sampler) not in (RandomSampler, SequentialSampler):
        return f"has a {type(loader.sampler).__name__}"
    return None


def shard_evaluation(loader: Iterable, world: World) -> Iterable:
    """This process's contiguous part of an evaluation set (maybe empty), or the loader itself
    when it cannot be split (every process then evaluates all of it)."""
    if world.world_size == 1:
        return loader
    if hasattr(loader, "part"):  # an InMemoryLoader
        return loader.part(*_part(len(loader.images), world))
    if _unshardable(loader) is None and type(loader.sampler) is SequentialSampler:
        part = Subset(loader.dataset, range(*_part(len(loader.dataset), world)))
        options = {**_options(loader), "batch_size": loader.batch_size, "drop_last": False}
        return DataLoader(part, shuffle=False, **options)
    return loader


def _part(n: int, world: World) -> tuple[int, int]:
    share, extra = divmod(n, world.world_size)
    start = world.rank * share + min(world.rank, extra)
    return start, start + share + (world.rank < extra)


def _options(loader: DataLoader) -> dict[str, Any]:
    """A DataLoader's options other than its dataset, sampler and batching."""
    options = {
        "num_workers": loader.num_workers, "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory, "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn, "generator": loader.generator,
        "multiprocessing_context": loader.multiprocessing_context,
        "persistent_workers": loader.persistent_workers,
    }  # fmt: skip
    if loader.num_workers:
        options["prefetch_factor"] = loader.prefetch_factor
    return options
