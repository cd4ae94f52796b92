"""Datasets and loaders: the DatasetFactory and the ready-made factories built on it."""

from mlproject.data.cifar import CIFARDatasetLoader
from mlproject.data.cluttered import ClutteredMNIST, ClutteredMNISTDatasetLoader
from mlproject.data.digits import DigitsDatasetLoader
from mlproject.data.factory import DatasetFactory
from mlproject.data.images import ImageDatasetLoader
from mlproject.data.in_memory import InMemoryLoader
from mlproject.data.mnist import FashionMNISTDatasetLoader, MNISTDatasetLoader
from mlproject.data.paths import resolve_data_dir

__all__ = [
    "CIFARDatasetLoader",
    "ClutteredMNIST",
    "ClutteredMNISTDatasetLoader",
    "DatasetFactory",
    "DigitsDatasetLoader",
    "FashionMNISTDatasetLoader",
    "ImageDatasetLoader",
    "InMemoryLoader",
    "MNISTDatasetLoader",
    "resolve_data_dir",
]
