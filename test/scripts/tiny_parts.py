"""Parts of tiny_experiment.py in a module of their own: sacred records it among the sources."""

import os
import signal

import torch
from torch.utils.data import TensorDataset

from mlproject import DatasetFactory, ProxyModel


def make_factory() -> DatasetFactory:
    """12 train, 6 validation and 6 test points: 4 features, 3 classes, batches of 4."""
    g = torch.Generator().manual_seed(0)

    def split(n):
        return TensorDataset(torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g))

    return DatasetFactory(
        train_set=split(12), validation_set=split(6), test_set=split(6),
        loader_kwargs={"batch_size": 4},
    )  # fmt: skip


class StoppingModel(ProxyModel):
    """A ProxyModel that sends its own process SIGTERM during global step ``signal_at``."""

    def __init__(self, *args, signal_at=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.signal_at = signal_at

    def train_batch(self, batch):
        if self.global_step + 1 == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().train_batch(batch)
