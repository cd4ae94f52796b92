#!/usr/bin/env python
"""A run for torchrun: float64 regression (or a GAN-style model), with faults and records.

``model=regression`` trains a float64 linear regression (ProxyModel, Adam) on 42 samples, so
that a partial global batch is split unevenly; ``model=gan`` trains a generator and a
discriminator with two optimizers and two backward passes per step. The validation set has an
odd size (33). At every checkpoint every process's weights are compared; rank 0 appends their
digests to ``$RECORDS/digests.jsonl`` and each process writes the samples it trained on to
``$RECORDS/seen-<rank>.json`` at the end. Faults from the environment (the resumed command is
the same): ``FAULT_AT=K`` and ``FAULT_RANK=r`` make process r raise (``FAULT_SIGNAL=0``) or
compute a NaN loss (``-1``) in step K, on the first attempt only (not after a torchrun
restart); ``MARK_AT=K`` makes every process write ``$RECORDS/pid-<rank>`` at step K and sleep
``MARK_SLEEP`` seconds per later step. ``SLOW_RECORD=S`` adds a sacred observer that takes S
seconds to record an interruption, then writes ``$RECORDS/recorded``; each process writes the
code it exits with to ``$RECORDS/exit-<rank>``.
"""

import hashlib
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from mlproject import DatasetFactory, Experiment, MLProject, Model, ProxyModel

ex = Experiment("distributed")


if os.environ.get("SLOW_RECORD"):
    from sacred.observers import RunObserver  # sacred as mlproject imported it

    class SlowRecord(RunObserver):
        """An observer as slow as a database far away, when it records an interruption."""

        def interrupted_event(self, interrupt_time, status):
            time.sleep(float(os.environ["SLOW_RECORD"]))
            (records() / "recorded").write_text(status)

    ex.observers.append(SlowRecord())


@ex.config
def config():
    model = "regression"  # noqa: F841
    batch_size = 4  # noqa: F841 - per process
    n_samples = 42  # noqa: F841
    lr = 0.05  # noqa: F841
    progress = False  # noqa: F841


def records() -> Path | None:
    return Path(os.environ["RECORDS"]) if os.environ.get("RECORDS") else None


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


class Points(Dataset):
    """Fixed float64 points; notes which samples this process reads."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 5, generator=g, dtype=torch.float64)
        self.y = self.x @ torch.randn(5, 1, generator=g, dtype=torch.float64) + 0.3
        self.seen = []

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.seen.append(int(i))
        return self.x[i], self.y[i]


class Gan(Model):
    metrics = ("loss", "d_loss")

    def __init__(self, lr):
        super().__init__(name="gan")
        self.g = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1)).double()
        self.d = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1)).double()
        self.opts = [
            torch.optim.Adam(self.d.parameters(), lr),
            torch.optim.Adam(self.g.parameters(), lr),
        ]

    def train_batch(self, batch):
        x, y = batch
        fake = self.g(x)
        real_score = self.d(torch.cat([x, y], 1))
        fake_score = self.d(torch.cat([x, fake.detach()], 1))
        d_loss = (
            nn.functional.softplus(-real_score).mean() + nn.functional.softplus(fake_score).mean()
        )
        self.backward(d_loss)
        self.step(self.opts[0])
        g_loss = nn.functional.softplus(-self.d(torch.cat([x, fake], 1))).mean()
        g_loss = g_loss + nn.functional.mse_loss(fake, y)
        self.backward(g_loss)
        self.step(self.opts[1])
        return {"loss": g_loss.detach(), "d_loss": d_loss.detach()}

    def test_batch(self, batch):
        x, y = batch
        return {"loss": nn.functional.mse_loss(self.g(x), y)}


class Faulty(ProxyModel):
    def train_batch(self, batch):
        step = self.global_step + 1
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        at = os.environ.get("FAULT_AT")
        if os.environ.get("MARK_AT") and step >= int(os.environ["MARK_AT"]):
            (records() / f"pid-{rank()}").write_text(str(os.getpid()))
            time.sleep(float(os.environ.get("MARK_SLEEP", "0.2")))
        if at and step == int(at) and rank() == int(os.environ["FAULT_RANK"]) and first_attempt:
            if os.environ.get("FAULT_SIGNAL") == "-1":
                x, y = batch
                return super().train_batch((x * float("nan"), y))
            raise RuntimeError(f"injected failure at step {step} on rank {rank()}")
        return super().train_batch(batch)


class Distributed(MLProject):
    @staticmethod
    def get_dataset_factory(config):
        return DatasetFactory(
            train_set=Points(config["n_samples"], 0),
            validation_set=Points(33, 1),
            test_set=Points(17, 2),
            loader_kwargs={"batch_size": config["batch_size"]},
        )

    @staticmethod
    def get_model(config):
        if config["model"] == "gan":
            return Gan(config["lr"])
        torch.manual_seed(7)
        net = nn.Linear(5, 1).double()
        opt = torch.optim.Adam(net.parameters(), lr=config["lr"])
        return Faulty(net, opt, loss=nn.MSELoss(), name="regression")

    def save(self):
        path = super().save()
        weights = torch.cat([p.detach().flatten() for p in self.model.parameters()])
        digest = hashlib.sha256(weights.numpy().tobytes()).hexdigest()
        digests = [None] * self.world.world_size
        if self.collective.active:
            dist.all_gather_object(digests, digest)
        else:
            digests = [digest]
        if self.world.writes and records() is not None:
            with open(records() / "digests.jsonl", "a") as f:
                f.write(json.dumps({"step": self.state.global_step, "digests": digests}) + "\n")
        return path

    def train(self):
        try:
            return super().train()
        finally:
            if records() is not None:
                seen = self.datasets.train_set().seen
                (records() / f"seen-{rank()}.json").write_text(json.dumps(seen))


@ex.main
def main(_run):
    return Distributed.from_run(_run).train()


if __name__ == "__main__":
    try:
        ex.run_commandline()
    except SystemExit as stop:
        if records() is not None:
            (records() / f"exit-{rank()}").write_text(str(stop.code))
        raise
