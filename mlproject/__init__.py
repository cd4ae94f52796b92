"""mlproject: a small, fast, trustworthy skeleton for PyTorch projects (sacred + TensorBoard)."""

from mlproject.config import DEFAULTS
from mlproject.data import (
    CIFARDatasetLoader,
    ClutteredMNISTDatasetLoader,
    DatasetFactory,
    DigitsDatasetLoader,
    FashionMNISTDatasetLoader,
    InMemoryLoader,
    MNISTDatasetLoader,
)
from mlproject.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    MLProjectError,
    ModelError,
    NonFiniteLossError,
    RunLockedError,
    TrainingInterrupted,
)
from mlproject.experiment import Experiment
from mlproject.model import LogLevel, Model, ProxyModel
from mlproject.project import MLProject

__all__ = [
    "DEFAULTS",
    "CIFARDatasetLoader",
    "CheckpointError",
    "ClutteredMNISTDatasetLoader",
    "ConfigError",
    "DataError",
    "DatasetFactory",
    "DigitsDatasetLoader",
    "FashionMNISTDatasetLoader",
    "InMemoryLoader",
    "MNISTDatasetLoader",
    "Experiment",
    "LogLevel",
    "MLProject",
    "MLProjectError",
    "Model",
    "ModelError",
    "NonFiniteLossError",
    "ProxyModel",
    "RunLockedError",
    "TrainingInterrupted",
]
