"""Sinks: where a run's scalars go. The interface every sink implements, and the sacred sink.

The training loop buffers its scalars (tensors included, without a host sync) and hands them
to every sink in batches, as plain floats: at each flush (every few seconds), before each
checkpoint and when the run ends. A sink is written to only on the one process that writes
(see ``mlproject.distributed.World``), so a sink never has to think about other processes.

Each method of ``Sink`` is a documented no-op: a sink overrides the ones it needs. A CSV file,
for example:

    class CsvSink(Sink):
        def __init__(self, path):
            self.path = Path(path)

        def open(self, run, state):
            rows = state["rows"] if state else 0  # rows written at the checkpoint resumed
            lines = self.path.read_text().splitlines(True)[:rows] if state else []
            self.path.write_text("".join(lines))  # drop rows logged after that checkpoint
            self.file, self.rows = open(self.path, "a"), rows

        def write(self, scalars):
            for s in scalars:
                self.file.write(f"{s.tag},{s.step},{s.value}\\n")
            self.rows += len(scalars)

        def flush(self):
            self.file.flush()

        def state(self):
            return {"rows": self.rows}

        def close(self, status):
            self.file.close()
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

# How a run ended, as the sinks and the sacred run are told (sacred's own words).
COMPLETED = "COMPLETED"
INTERRUPTED = "INTERRUPTED"
FAILED = "FAILED"


class Scalar(NamedTuple):
    """One logged value: ``tag`` is ``group/name`` (``train/loss``); ``step`` the global step."""

    tag: str
    value: float
    step: int
    wall_time: float  # seconds since the epoch, when the value was logged


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What a sink is told about the run when it opens.

    Attributes:
        name: the run's name: its folder under ``model_dir`` and its TensorBoard run.
        dir: the run folder (checkpoints, run.json).
        config: the resolved config as plain data (dicts, lists, str, numbers, None).
        step: the global step training starts from (0 for a new run, else the checkpoint's).
        parent: for a fork, the checkpoint it started from and its step; else None.
    """

    name: str
    dir: Path
    config: dict[str, Any]
    step: int = 0
    parent: dict[str, Any] | None = None


class Sink:
    """Receives a run's scalars. Subclass it and override what you need; each method is a no-op.

    Calls come in this order, from the one thread that trains: ``open`` once when training
    starts or resumes, then ``write`` with each batch of scalars and ``flush`` before every
    checkpoint (``state`` right after it, stored in the checkpoint), ``artifact`` for the files
    worth keeping, and ``close`` once at the end, also when the run fails or is interrupted.

    Example:
        >>> class Printer(Sink):
        ...     def write(self, scalars):
        ...         for s in scalars:
        ...             logging.info("%s@%d = %g", s.tag, s.step, s.value)
        >>> MyProject(config, sinks=[Printer()]).train()  # doctest: +SKIP
    """

    #: the key under which ``state()`` is stored in checkpoints; unique among a run's sinks
    name: str = "sink"

    def open(self, run: RunInfo, state: dict[str, Any] | None) -> None:
        """Training starts (``state`` None) or resumes from a checkpoint that stored ``state``.

        On resume, drop anything written after that checkpoint: those steps are logged again.
        """

    def write(self, scalars: list[Scalar]) -> None:
        """A batch of scalars in the order they were logged; values are Python floats."""

    def flush(self) -> None:
        """Make everything written so far durable: a checkpoint is about to refer to it."""

    def state(self) -> dict[str, Any]:
        """Plain data a checkpoint stores to resume this sink exactly (asked right after flush)."""
        return {}

    def artifact(self, path: Path) -> None:
        """A file the run made that is worth keeping with its record (the best checkpoint)."""

    def close(self, status: str) -> None:
        """The run ended: ``status`` is ``COMPLETED``, ``INTERRUPTED`` or ``FAILED``."""


class SacredSink(Sink):
    """Sends every scalar to a sacred run (``run.log_scalar``: metrics.json, Mongo, ...)."""

    name = "sacred"

    def __init__(self, run: Any):
        self.run = run

    def open(self, run: RunInfo, state: dict[str, Any] | None) -> None:
        # where the run's files are, in sacred's record (run.json "info" with a FileStorage)
        self.run.info["mlproject"] = {
            "run_dir": str(run.dir), "device": run.config.get("device"),
            "resumed_at_step": run.step, "parent": run.parent,
        }  # fmt: skip

    def write(self, scalars: list[Scalar]) -> None:
        log_scalar = self.run.log_scalar
        for tag, value, step, _ in scalars:
            log_scalar(tag, value, step)

    def artifact(self, path: Path) -> None:
        self.run.add_artifact(str(path), name=path.name)
