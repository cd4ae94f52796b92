#!/usr/bin/env python
"""A tiny mlproject experiment for the tests: unnamed, with an ingredient and a nested config.

./tiny_experiment.py with stop=fail      # main raises: the run FAILED
./tiny_experiment.py with stop=signal    # SIGTERM during step 2: the run INTERRUPTED, exit 143
"""

import sacred
import torch
from tiny_parts import StoppingModel, make_factory
from torch import nn

from mlproject import Experiment, MLProject

net = sacred.Ingredient("net")
ex = Experiment(ingredients=[net])  # unnamed: sacred names it after this file


@net.config
def net_config():
    hidden = 8  # noqa: F841 - sacred reads the scope's local variables


@ex.config
def config():
    optim = {"lr": 0.1, "momentum": 0.0}  # noqa: F841
    stop = None  # noqa: F841 - None, 'fail' or 'signal'
    model_dir = "models"  # noqa: F841
    n_epochs = 2  # noqa: F841
    progress = False  # noqa: F841


@ex.capture
def make_optimizer(params, optim, weight_decay=0.0):
    """A captured function: ``optim`` comes from the config, ``weight_decay`` may be set."""
    return torch.optim.SGD(params, weight_decay=weight_decay, **optim)


class TinyProject(MLProject):
    @staticmethod
    def get_dataset_factory(config):
        return make_factory()

    @staticmethod
    def get_model(config):
        hidden = config["net"]["hidden"]
        layers = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))
        signal_at = 2 if config["stop"] == "signal" else None
        return StoppingModel(
            layers, make_optimizer(layers.parameters()), loss=nn.CrossEntropyLoss(),
            name="tiny", signal_at=signal_at,
        )  # fmt: skip


@ex.automain
def main(_run, stop):
    if stop == "fail":
        raise RuntimeError("asked to fail")
    return TinyProject.from_run(_run).train()
