"""mlproject: a small, fast, trustworthy skeleton for PyTorch projects (sacred + TensorBoard)."""

from mlproject.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DiskFullError,
    MLProjectError,
    ModelError,
    NonFiniteLossError,
    RunLockedError,
    TrainingInterrupted,
)

# The rest is imported on first use (PEP 562): `import mlproject` costs no torch, sacred or
# torchvision, so `python -m mlproject runs` starts at once.
_LAZY = {
    "DEFAULTS": "mlproject.config",
    "Experiment": "mlproject.experiment",
    "LogLevel": "mlproject.model",
    "Model": "mlproject.model",
    "ProxyModel": "mlproject.model",
    "MLProject": "mlproject.project",
    "Sink": "mlproject.sinks",
    **dict.fromkeys(
        [
            "CIFAR10Factory",
            "CIFARDatasetLoader",
            "ClutteredMNISTDatasetLoader",
            "ClutteredMNISTFactory",
            "DatasetFactory",
            "DigitsDatasetLoader",
            "DigitsFactory",
            "FashionMNISTDatasetLoader",
            "FashionMNISTFactory",
            "InMemoryLoader",
            "MNISTDatasetLoader",
            "MNISTFactory",
            "SVHNFactory",
        ],
        "mlproject.data",
    ),  # fmt: skip
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlproject' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
    "DiskFullError",
    "Experiment",
    "FashionMNISTDatasetLoader",
    "FashionMNISTFactory",
    "InMemoryLoader",
    "LogLevel",
    "MLProject",
    "MLProjectError",
    "MNISTDatasetLoader",
    "MNISTFactory",
    "Model",
    "ModelError",
    "NonFiniteLossError",
    "ProxyModel",
    "RunLockedError",
    "SVHNFactory",
    "Sink",
    "TrainingInterrupted",
]
