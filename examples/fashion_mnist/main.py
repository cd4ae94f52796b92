#!/usr/bin/env python
"""Train a small CNN on Fashion-MNIST (fast in-memory data path; $DATA_DIR/FashionMNIST/raw/).

./main.py                                   # download Fashion-MNIST if missing, train
./main.py with data_dir=~/data device=cuda n_epochs=20
"""

import torch
from torch import nn

from mlproject import Experiment, MLProject, ProxyModel
from mlproject.data import FashionMNISTFactory

ex = Experiment("fashion_mnist")


@ex.config
def config():
    batch_size = 128  # noqa: F841 - sacred reads the scope's local variables
    lr = 1e-3  # noqa: F841
    n_epochs = 10  # noqa: F841
    model_dir = "runs"  # noqa: F841
    validation_size = 5000  # noqa: F841 - training images held out for model selection
    channels = 32  # noqa: F841 - filters of the first convolution (the second has twice)


class FashionMNISTProject(MLProject):
    @staticmethod
    def get_dataset_factory(config):
        return FashionMNISTFactory(
            config["batch_size"],
            data_dir=config["data_dir"],
            validation_size=config["validation_size"],
        )

    @staticmethod
    def get_model(config):
        c = config["channels"]
        net = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
            nn.Flatten(), nn.Linear(2 * c * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
        )  # fmt: skip
        opt = torch.optim.Adam(net.parameters(), lr=config["lr"])
        return ProxyModel(net, opt, loss=nn.CrossEntropyLoss(), name="fashion_cnn")


@ex.automain
def main(_run):
    return FashionMNISTProject.from_run(_run).train()
