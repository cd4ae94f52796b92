#!/usr/bin/env python
"""The 2018 way: a plain sacred.Experiment whose config declares only the user's own keys.

./plain_sacred.py -f with n_global_iterations=3 tensorboard_dir=tb model_dir=runs
(-f: sacred refuses keys that no config declares; the framework's are valid all the same.)
"""

import sacred
import torch
from tiny_parts import make_factory
from torch import nn

from mlproject import MLProject, ProxyModel

ex = sacred.Experiment("plain")


@ex.config
def config():
    hidden = 8  # noqa: F841 - sacred reads the scope's local variables
    lr = 0.1  # noqa: F841


class PlainProject(MLProject):
    @staticmethod
    def get_dataset_factory(config):
        return make_factory()

    @staticmethod
    def get_model(config):
        hidden = config["hidden"]
        layers = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))
        opt = torch.optim.SGD(layers.parameters(), lr=config["lr"])
        return ProxyModel(layers, opt, loss=nn.CrossEntropyLoss(), name="plain")


@ex.automain
def main(_run):
    return PlainProject.from_run(_run).train()
