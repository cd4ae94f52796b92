"""Datasets and loaders: the DatasetFactory and the ready-made factories built on it."""

from mlproject.data.cluttered import (
    ClutteredMNIST,
    ClutteredMNISTDatasetLoader,
    ClutteredMNISTFactory,
)
from mlproject.data.datasets import (
    CIFAR10Factory,
    CIFARDatasetLoader,
    FashionMNISTDatasetLoader,
    FashionMNISTFactory,
    MNISTDatasetLoader,
    MNISTFactory,
    SVHNFactory,
)
from mlproject.data.digits import DigitsDatasetLoader, DigitsFactory
from mlproject.data.factory import DatasetFactory
from mlproject.data.files import resolve_data_dir
from mlproject.data.images import ImageDatasetFactory, ImageDatasetLoader
from mlproject.data.in_memory import InMemoryLoader

__all__ = [
    "CIFAR10Factory",
    "CIFARDatasetLoader",
    "ClutteredMNIST",
    "ClutteredMNISTDatasetLoader",
    "ClutteredMNISTFactory",
    "DatasetFactory",
    "DigitsDatasetLoader",
    "DigitsFactory",
    "FashionMNISTDatasetLoader",
    "FashionMNISTFactory",
    "ImageDatasetFactory",
    "ImageDatasetLoader",
    "InMemoryLoader",
    "MNISTDatasetLoader",
    "MNISTFactory",
    "SVHNFactory",
    "resolve_data_dir",
]
