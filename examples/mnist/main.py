#!/usr/bin/env python
"""Train an MLP on MNIST (fast in-memory data path; files in $DATA_DIR/MNIST/raw/).

./main.py                                   # download MNIST if missing, train 5 epochs
./main.py with data_dir=~/data device=cuda  # batches are made on the GPU
./main.py print_config                      # every key, the framework's included
"""

import torch
from torch import nn

from mlproject import Experiment, MLProject, ProxyModel
from mlproject.data import MNISTFactory

ex = Experiment("mnist")


@ex.config
def config():
    batch_size = 128  # noqa: F841 - sacred reads the scope's local variables
    lr = 1e-3  # noqa: F841
    n_epochs = 5  # noqa: F841
    model_dir = "runs"  # noqa: F841
    validation_size = 5000  # noqa: F841 - training images held out for model selection


class MNISTProject(MLProject):
    @staticmethod
    def get_dataset_factory(config):
        return MNISTFactory(
            config["batch_size"],
            data_dir=config["data_dir"],
            validation_size=config["validation_size"],
        )

    @staticmethod
    def get_model(config):
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        opt = torch.optim.Adam(net.parameters(), lr=config["lr"])
        return ProxyModel(net, opt, loss=nn.CrossEntropyLoss(), name="mnist_mlp")


@ex.automain
def main(_run):
    return MNISTProject.from_run(_run).train()
