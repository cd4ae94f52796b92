#!/usr/bin/env python
"""Train ResNet18 on CIFAR-10 with the README's transforms, or the fast in-memory path.

    ./main.py                                   # torchvision transforms, DataLoader workers
    ./main.py with fast_data=True device=cuda   # same augmentation, batched on the GPU
    ./main.py with data_dir=~/data n_epochs=30

The data lives in $DATA_DIR/cifar-10-batches-py/ (downloaded if missing).
"""

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip, ToTensor

from mlproject import Experiment, MLProject, ProxyModel
from mlproject.data import CIFAR10Factory

ex = Experiment("cifar10")


@ex.config
def config():
    batch_size = 128  # noqa: F841 - sacred reads the scope's local variables
    lr = 1e-3  # noqa: F841
    n_epochs = 30  # noqa: F841
    model_dir = "runs"  # noqa: F841
    validation_size = 5000  # noqa: F841 - training images held out for model selection
    num_workers = 2  # noqa: F841 - DataLoader workers of the torchvision path
    fast_data = False  # noqa: F841 - True: in-memory uint8 path, batched crop+flip augmentation


class CifarProject(MLProject):
    @staticmethod
    def get_dataset_factory(config):
        common = {
            "data_dir": config["data_dir"],
            "validation_size": config["validation_size"],
            "num_workers": config["num_workers"],
        }
        if config["fast_data"]:
            return CIFAR10Factory(config["batch_size"], **common)
        normalize = Normalize(CIFAR10Factory.MEAN, CIFAR10Factory.STD)
        return CIFAR10Factory(
            config["batch_size"],
            train_transform=Compose(
                [RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(), normalize]
            ),
            test_transform=Compose([ToTensor(), normalize]),
            **common,
        )

    @staticmethod
    def get_model(config):
        net = resnet18(num_classes=10)
        opt = torch.optim.Adam(net.parameters(), lr=config["lr"])
        return ProxyModel(net, opt, loss=nn.CrossEntropyLoss(), name="resnet18")


@ex.automain
def main(_run):
    return CifarProject.from_run(_run).train()
