#!/usr/bin/env python
"""Train a CNN on ClutteredMNIST: one MNIST digit among 8x8 patches of others, 100x100.

    ./main.py                                   # built from $DATA_DIR/MNIST/raw/ (downloaded)
    ./main.py with clutter_seed=1 n_clutters=12 device=cuda
    ./main.py with export_dir=~/data/cluttered  # also write the canvases as PNG files

The canvases depend on clutter_seed only (not on the run's seed): every run, process and
DataLoader worker sees the same images.
"""

import torch
from torch import nn

from mlproject import Experiment, MLProject, ProxyModel
from mlproject.data import ClutteredMNISTFactory

ex = Experiment("cluttered_mnist")


@ex.config
def config():
    batch_size = 128  # noqa: F841 - sacred reads the scope's local variables
    lr = 1e-3  # noqa: F841
    n_epochs = 10  # noqa: F841
    model_dir = "runs"  # noqa: F841
    validation_size = 5000  # noqa: F841 - MNIST training digits held out for validation
    shape = [100, 100]  # noqa: F841 - canvas height and width
    n_clutters = 6  # noqa: F841 - clutter patches per canvas
    clutter_size = 8  # noqa: F841 - side of a clutter patch
    clutter_seed = 0  # noqa: F841 - the canvases' seed
    export_dir = None  # noqa: F841 - folder to export the canvases to as PNGs (None: no export)


class ClutteredMNISTProject(MLProject):
    @staticmethod
    def get_dataset_factory(config):
        factory = ClutteredMNISTFactory(
            config["batch_size"],
            data_dir=config["data_dir"],
            validation_size=config["validation_size"],
            shape=config["shape"],
            n_clutters=config["n_clutters"],
            clutter_size=config["clutter_size"],
            seed=config["clutter_seed"],
        )
        if config["export_dir"] is not None:
            factory.export(config["export_dir"])
        return factory

    @staticmethod
    def get_model(config):
        net = nn.Sequential(
            nn.Conv2d(1, 32, 5, stride=2, padding=2), nn.ReLU(),  # 50x50
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),  # 25x25
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),  # 13x13
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )  # fmt: skip
        opt = torch.optim.Adam(net.parameters(), lr=config["lr"])
        return ProxyModel(net, opt, loss=nn.CrossEntropyLoss(), name="cluttered_cnn")


@ex.automain
def main(_run):
    return ClutteredMNISTProject.from_run(_run).train()
