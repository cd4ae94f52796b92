#!/usr/bin/env python
"""The default example: an MLP on scikit-learn's handwritten digits (real data, offline).

./main.py                                   # train with the defaults below
./main.py with n_epochs=5 device=cuda:0 tensorboard_dir=tb
./main.py print_config                      # every key, the framework's included
"""

import torch
from torch import nn

from mlproject import Experiment, MLProject, ProxyModel
from mlproject.data import DigitsDatasetLoader

ex = Experiment("digits")


@ex.config
def config():
    batch_size = 64  # noqa: F841 - sacred reads the scope's local variables
    hidden = 128  # noqa: F841
    lr = 2e-3  # noqa: F841
    n_epochs = 20  # noqa: F841
    model_dir = "runs"  # noqa: F841


class DigitsProject(MLProject):
    @staticmethod
    def get_dataset_factory(config):
        return DigitsDatasetLoader(batch_size=config["batch_size"])

    @staticmethod
    def get_model(config):
        net = nn.Sequential(
            nn.Linear(64, config["hidden"]), nn.ReLU(), nn.Linear(config["hidden"], 10)
        )
        opt = torch.optim.Adam(net.parameters(), lr=config["lr"])
        return ProxyModel(net, opt, loss=nn.CrossEntropyLoss(), name="digits_mlp")


@ex.automain
def main(_run):
    summary = DigitsProject.from_run(_run).train()
    print(f"test accuracy: {summary['test']['accuracy']:.4f}", flush=True)
    return summary
