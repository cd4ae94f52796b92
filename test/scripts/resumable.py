#!/usr/bin/env python
"""A small run with every source of randomness a resume must reproduce, and fault injection.

Shuffled DataLoader (optionally with workers), random per-sample noise, dropout, Adam and a
StepLR scheduler. Faults come from the environment, not the config, so that the resumed
command is the same command, as a cluster re-runs it:

- ``FAULT_AT=K``: during global step K the model signals its own process (``FAULT_SIGNAL``,
  default 15), raises (``FAULT_SIGNAL=0``) or writes a NaN loss (``FAULT_SIGNAL=-1``); with
  ``FAULT_WHERE=eval`` it does so in the evaluation after step K instead.
- ``MARK_AT=K`` and ``MARK_FILE=path``: at step K the model creates ``path``, and every later
  step sleeps ``MARK_SLEEP`` seconds (default 0.2), so that a test can signal the process
  (or its whole group) from outside while it trains.
- ``SLOW_START=path``: building the data creates ``path``, then sleeps 30 s (a signal during
  start-up).

With ``helpers=True`` the model trains through ``self.autocast()``, ``self.backward`` and
``self.step`` (precision, accumulation); otherwise by hand, as a model that ignores them.
"""

import contextlib
import os
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from mlproject import DatasetFactory, Experiment, MLProject, Model

ex = Experiment("resumable")


@ex.config
def config():
    n_samples = 40  # noqa: F841
    batch_size = 8  # noqa: F841
    num_workers = 0  # noqa: F841
    drop_last = False  # noqa: F841
    hidden = 16  # noqa: F841
    lr = 0.01  # noqa: F841
    helpers = False  # noqa: F841
    progress = False  # noqa: F841


def in_process_config(model_dir, **updates) -> dict:
    """The script's config as a dict, for tests that build ``Resumable`` in process.

    40 samples in batches of 8: 5 steps per epoch; a checkpoint after every step.
    """
    config = {
        "model_dir": str(model_dir), "n_epochs": 1, "seed": 3, "save_iterations": 1,
        "n_samples": 40, "batch_size": 8, "num_workers": 0, "drop_last": False, "hidden": 8,
        "lr": 0.01, "helpers": False, "progress": False,
    }  # fmt: skip
    return {**config, **updates}


def _env_int(name: str, default: int | None = None) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else default


class Noisy(Dataset):
    """Fixed points plus fresh noise on every access: the workers' RNG matters."""

    def __init__(self, n):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x.sum(1) > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] + 0.1 * torch.randn(4), self.y[i]


class Net(Model):
    def __init__(self, hidden, lr, helpers=False):
        super().__init__(name="net")
        self.helpers = helpers
        self.net = nn.Sequential(
            nn.Linear(4, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, 2)
        )
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=3, gamma=0.5)
        self.fault_at, self.fault_signal = _env_int("FAULT_AT"), _env_int("FAULT_SIGNAL", 15)
        self.fault_where = os.environ.get("FAULT_WHERE", "train")
        self.mark_at, self.mark_file = _env_int("MARK_AT"), os.environ.get("MARK_FILE")

    def fault(self):
        if self.fault_signal == 0:
            raise RuntimeError(f"injected failure at step {self.fault_at}")
        os.kill(os.getpid(), self.fault_signal)

    def train_batch(self, batch):
        x, y = batch
        step = self.global_step + 1
        if self.mark_at is not None and step >= self.mark_at:
            Path(self.mark_file).touch()
            time.sleep(float(os.environ.get("MARK_SLEEP", "0.2")))
        if not self.helpers:
            self.opt.zero_grad()
        with self.autocast() if self.helpers else contextlib.nullcontext():
            loss = nn.functional.cross_entropy(self.net(x), y)
        if step == self.fault_at and self.fault_where == "train":
            if self.fault_signal == -1:
                loss = loss * float("nan")
            else:
                self.fault()
        if self.helpers:
            self.backward(loss)
            self.step(self.opt)
            return {"loss": loss.detach()}
        if not self.loss_is_finite(loss):
            return {"loss": loss.detach()}
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    def test_batch(self, batch):
        if self.fault_where == "eval" and self.global_step + 1 == self.fault_at:
            self.fault()
        x, y = batch
        out = self.net(x)
        return {
            "loss": nn.functional.cross_entropy(out, y),
            "accuracy": (out.argmax(1) == y).float().mean(),
        }

    def on_epoch_end(self, epoch):
        self.sched.step()


class Resumable(MLProject):
    @staticmethod
    def get_dataset_factory(config):
        if os.environ.get("SLOW_START"):
            Path(os.environ["SLOW_START"]).touch()
            time.sleep(30)
        return DatasetFactory(
            train_set=Noisy(config["n_samples"]),
            validation_set=Noisy(16),
            test_set=Noisy(16),
            loader_kwargs={
                "batch_size": config["batch_size"],
                "num_workers": config["num_workers"],
                "drop_last": config["drop_last"],
            },
        )

    @staticmethod
    def get_model(config):
        return Net(config["hidden"], config["lr"], config.get("helpers", False))


@ex.automain
def main(_run):
    return Resumable.from_run(_run).train()
