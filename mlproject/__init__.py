"""mlproject: a small, fast, trustworthy skeleton for PyTorch projects (sacred + TensorBoard)."""

from mlproject.config import DEFAULTS
from mlproject.data import DatasetFactory
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
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DatasetFactory",
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
