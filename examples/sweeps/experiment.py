#!/usr/bin/env python
"""The experiment every sweep recipe runs, in a module the recipes (and their jobs) import.

An MLP on a small synthetic classification task (made in memory from a fixed seed: offline,
and quick to start in each of many processes). It lives in an importable module rather than in
the launching script because a job that runs elsewhere (a submitit job, an Optuna worker)
imports it by name: submitit pickles ``ex`` by reference, and sacred reads the source of the
config scope below when the module is imported. It is also a program of its own:

./experiment.py with lr=0.01 hidden=32 n_global_iterations=100
./experiment.py print_config
"""

import itertools
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from mlproject import DatasetFactory, Experiment, MLProject, ProxyModel

ex = Experiment("sweeps")


@ex.config
def config():
    batch_size = 64  # noqa: F841 - sacred reads the scope's local variables
    hidden = 64  # noqa: F841 - units of the hidden layer
    lr = 2e-3  # noqa: F841 - Adam's learning rate
    step_sleep = 0.0  # noqa: F841 - seconds of pretend work per step: a heavier model, so a
    # demo (or a test) can preempt a job while it trains
    n_epochs = 5  # noqa: F841
    model_dir = "runs"  # noqa: F841
    progress = False  # noqa: F841 - many runs at once: no progress bars in the job logs


N_FEATURES, N_CLASSES = 16, 4


def teacher_data(n: int, seed: int) -> TensorDataset:
    """``n`` points labelled by a fixed random network: the same in every process."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(N_FEATURES, N_CLASSES, generator=torch.Generator().manual_seed(0))
    x = torch.randn(n, N_FEATURES, generator=g)
    y = (torch.tanh(x) @ teacher + 0.3 * torch.randn(n, N_CLASSES, generator=g)).argmax(1)
    return TensorDataset(x, y)


class SweepProject(MLProject):
    @staticmethod
    def get_dataset_factory(config):
        return DatasetFactory(
            train_set=teacher_data(1024, seed=1),
            validation_set=teacher_data(256, seed=2),
            test_set=teacher_data(256, seed=3),
            loader_kwargs={"batch_size": config["batch_size"]},  # train shuffles
        )

    @staticmethod
    def get_model(config):
        net = nn.Sequential(
            nn.Linear(N_FEATURES, config["hidden"]),
            nn.ReLU(),
            nn.Linear(config["hidden"], N_CLASSES),
        )
        opt = torch.optim.Adam(net.parameters(), lr=config["lr"])
        # the benchmark metric is the validation loss: the run's result, to minimise
        return ProxyModel(net, opt, loss=nn.CrossEntropyLoss(), name="mlp")

    def step(self, batch):
        outputs = super().step(batch)
        if self.config["step_sleep"]:
            time.sleep(self.config["step_sleep"])
        return outputs


@ex.command(unobserved=True)
def check_config():
    """Do nothing: ``ex.run("check_config", config_updates=...)`` only validates a config.

    The recipes check every config this way before launching any (a typo fails once, at
    once, not in every job).
    """


def check(configs: list[dict[str, Any]]) -> None:
    """Raise ``mlproject.ConfigError`` for the first config ``ex`` refuses; write nothing."""
    for updates in configs:
        ex.run("check_config", config_updates=updates, options={"--loglevel": "ERROR"})


def grid(**values: list[Any]) -> list[dict[str, Any]]:
    """Every combination of the values given per key, as config updates.

    Example:
        >>> grid(lr=[0.1, 0.01], hidden=[32])
        [{'lr': 0.1, 'hidden': 32}, {'lr': 0.01, 'hidden': 32}]
    """
    keys = [key for key, options in values.items() if options]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(values[k] for k in keys))]


def split_with(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """A recipe's own arguments, and the config updates after ``with`` (sacred's syntax).

    Example:
        >>> split_with(["--lr", "0.1", "with", "n_epochs=2", "model_dir=runs"])
        (['--lr', '0.1'], {'n_epochs': 2, 'model_dir': 'runs'})
    """
    from sacred.arg_parser import get_config_updates  # sacred is loaded: ex exists

    if "with" not in argv:
        return list(argv), {}
    at = argv.index("with")
    updates, named = get_config_updates(argv[at + 1 :])
    if named:
        raise SystemExit(f"named configs are not supported by the recipes: {named}")
    return list(argv[:at]), updates


@ex.automain
def main(_run):
    return SweepProject.from_run(_run).train()
