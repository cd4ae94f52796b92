"""The error vocabulary of mlproject: every exception the library raises on purpose.

Each class also subclasses the builtin a user would already catch, so ``except ValueError``
keeps working around a bad config.
"""

from collections.abc import Callable
from typing import Any


class MLProjectError(Exception):
    """Base class of every error mlproject raises on purpose."""


class ConfigError(MLProjectError, ValueError):
    """The config has unknown keys, wrong types, values out of range or an unusable device."""

    problems: tuple[str, ...] | list[str] = ()  # one line each, when validate_config lists them


class DataError(MLProjectError, ValueError):
    """A dataset is missing, empty, truncated or malformed."""


class ModelError(MLProjectError, TypeError):
    """A Model broke its contract (e.g. ``train_batch`` did not return a dict of scalars)."""


class CheckpointError(MLProjectError, RuntimeError):
    """A checkpoint is missing, corrupt, unsafe, or does not fit the project."""


class NonFiniteLossError(MLProjectError, FloatingPointError):
    """A training step produced a NaN or infinite loss."""


class DiskFullError(MLProjectError, OSError):
    """A run could not write a file because the disk (or quota) is full."""


class RunLockedError(MLProjectError, RuntimeError):
    """Another live process is writing to the same run folder."""


class TrainingInterrupted(KeyboardInterrupt):  # noqa: N818 - reads as what happened
    """Training stopped on a stop or requeue signal after saving a checkpoint.

    A ``KeyboardInterrupt`` so that sacred marks the run INTERRUPTED; ``exit_code`` is the
    shell convention 128 + signal number (143 for SIGTERM, 130 for SIGINT). ``chain`` is the
    handler the signal had before (e.g. submitit's requeue): whoever records the run last
    calls it, once the run is saved and marked interrupted.
    """

    def __init__(self, signum: int, step: int, chain: Callable[..., Any] | None = None):
        super().__init__(f"training interrupted by signal {signum} at step {step}")
        self.signum = signum
        self.step = step
        self.exit_code = 128 + signum
        self.chain = chain

    def call_chain(self) -> None:
        """Run the signal's previous handler, if it had one (it may exit the process)."""
        chain, self.chain = self.chain, None
        if chain is not None:
            chain(self.signum, None)
