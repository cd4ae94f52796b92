"""mlproject: a small, fast, trustworthy skeleton for PyTorch projects (sacred + TensorBoard)."""

from mlproject.config import DEFAULTS
from mlproject.data import (
    CIFAR10Factory,
    CIFARDatasetLoader,
    ClutteredMNISTDatasetLoader,
    ClutteredMNISTFactory,
    DatasetFactory,
    DigitsDatasetLoader,
    DigitsFactory,
    FashionMNISTDatasetLoader,
    FashionMNISTFactory,
    InMemoryLoader,
    MNISTDatasetLoader,
    MNISTFactory,
    SVHNFactory,
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
from mlproject.model import LogLevel, Model, ProxyModel
from mlproject.project import MLProject


def __getattr__(name: str):
    # mlproject.Experiment loads sacred on first use: `import mlproject` needs no sacred.
    if name == "Experiment":
        from mlproject.experiment import Experiment

        return Experiment
    raise AttributeError(f"module 'mlproject' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"Experiment"})


__all__ = [
    "DEFAULTS",
    "CIFAR10Factory",
    "CIFARDatasetLoader",
    "CheckpointError",
    "ClutteredMNISTDatasetLoader",
    "ClutteredMNISTFactory",
    "ConfigError",
    "DataError",
    "DatasetFactory",
    "DigitsDatasetLoader",
    "DigitsFactory",
    "FashionMNISTDatasetLoader",
    "FashionMNISTFactory",
    "InMemoryLoader",
    "MNISTDatasetLoader",
    "MNISTFactory",
    "Experiment",
    "LogLevel",
    "MLProject",
    "MLProjectError",
    "Model",
    "ModelError",
    "NonFiniteLossError",
    "ProxyModel",
    "RunLockedError",
    "SVHNFactory",
    "TrainingInterrupted",
]
