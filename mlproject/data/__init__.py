"""Datasets and loaders: the DatasetFactory and the ready-made factories built on it."""

from mlproject.data.digits import DigitsDatasetLoader
from mlproject.data.factory import DatasetFactory

__all__ = ["DatasetFactory", "DigitsDatasetLoader"]
