"""Logger: buffers a run's scalars in the loop and flushes them to its sinks in batches.

``log`` only appends to a list: values may be 0-d tensors on any device, read nowhere in the
loop (no host sync per step). ``flush`` reads them all at once (one sync per device and
dtype), applies the NaN policy to the logged losses and hands the batch to every sink. It runs
every ``FLUSH_SECONDS``, before each checkpoint (so a checkpoint never refers to scalars that
are not on disk) and when the run ends.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import Any

import torch

from mlproject.errors import DiskFullError
from mlproject.nonfinite import NonFinitePolicy
from mlproject.sinks import RunInfo, Scalar, Sink

FLUSH_SECONDS = 10.0  # how often buffered scalars reach the sinks


class Logger:
    """The run's scalars, from the loop to the sinks.

    Example:
        >>> logger = Logger([SacredSink(_run)])
        >>> logger.open(RunInfo("run", Path("runs/run"), config), states={})
        >>> logger.log("train", {"loss": loss.detach()}, step=1)
        >>> logger.maybe_flush()   # every step: a clock comparison unless a flush is due
        >>> logger.close("COMPLETED")
    """

    def __init__(self, sinks: list[Sink], nonfinite: NonFinitePolicy | None = None):
        names = [sink.name for sink in sinks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"two sinks share the name {duplicates[0]!r}; give each sink class a unique "
                "`name` (it keys the sink's state in checkpoints)"
            )
        self.sinks = sinks
        self.nonfinite = nonfinite or NonFinitePolicy("skip")
        self._pending: list[tuple[str, int, Any, float]] = []
        self._next_flush = time.monotonic() + FLUSH_SECONDS
        self._sums: dict[str, list[float]] = {}  # tag -> [sum, count] since take_means

    def open(self, run: RunInfo, states: dict[str, dict[str, Any]]) -> None:
        """Open every sink; ``states`` is the checkpoint's ``state()`` per sink name, or {}."""
        for sink in self.sinks:
            sink.open(run, states.get(sink.name) if states else None)

    def log(self, group: str, values: dict[str, Any], step: int) -> None:
        """Buffer ``values`` (numbers or 0-d tensors) under the tags ``group/name`` at ``step``."""
        now = time.time()
        for key, value in values.items():
            self._pending.append((f"{group}/{key}", step, value, now))

    def maybe_flush(self) -> None:
        """Flush when ``FLUSH_SECONDS`` have passed; cheap enough to call every step."""
        if time.monotonic() >= self._next_flush:
            self.flush()

    def flush(self, check: bool = True, durable: bool = True) -> None:
        """Read the buffered values, hand them to every sink and make them durable.

        With ``check``, the NaN policy looks at the logged losses after the sinks got them (so
        the record shows the NaN) and may raise NonFiniteLossError. With ``durable=False`` the
        sinks get the values but are not flushed (no fsync): for flushes that only need the
        values read, such as the NaN check of torchrun's agreements; the timer of the durable
        flush every ``FLUSH_SECONDS`` is then left as it was.
        """
        if durable:
            self._next_flush = time.monotonic() + FLUSH_SECONDS
        pending, self._pending = self._pending, []
        values = _floats([value for _, _, value, _ in pending])
        batch = [Scalar(tag, value, step, t) for (tag, step, _, t), value in zip(pending, values)]
        for tag, value, _, _ in batch:
            total = self._sums.get(tag)
            if total is None:
                total = self._sums[tag] = [0.0, 0]
            total[0] += value
            total[1] += 1
        for sink in self.sinks:
            try:
                if batch:
                    sink.write(batch)
                if durable:
                    sink.flush()
            except OSError as err:
                if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise DiskFullError(
                    f"no space left for the {sink.name} sink's records: {err}. Free space, "
                    "then run the same command with resume=auto"
                ) from err
        if check:
            self.nonfinite.check_logged(batch)

    def take_means(self) -> dict[str, float]:
        """The mean of each tag's values flushed since the last call (flush first for all)."""
        means = {tag: total / count for tag, (total, count) in self._sums.items() if count}
        self._sums = {}
        return means

    def state(self) -> dict[str, dict[str, Any]]:
        """Each sink's state, keyed by sink name, for a checkpoint (call right after flush)."""
        return {sink.name: sink.state() for sink in self.sinks}

    def artifact(self, path: Path) -> None:
        """Hand a file worth keeping (the best checkpoint) to every sink."""
        for sink in self.sinks:
            sink.artifact(path)

    def close(self, status: str) -> None:
        """Flush what is buffered (without the NaN check) and close every sink.

        Every sink is closed even when the flush or another sink fails; the first error is
        raised afterwards.
        """
        errors = []
        try:
            self.flush(check=False)
        except Exception as err:
            errors.append(err)
        for sink in self.sinks:
            try:
                sink.close(status)
            except Exception as err:
                errors.append(err)
        if errors:
            raise errors[0]


def _floats(values: list[Any]) -> list[float]:
    """Numbers and 0-d tensors as floats, with one host sync per device and dtype."""
    out: list[Any] = list(values)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            groups.setdefault((v.device, v.dtype), []).append(i)
        else:
            out[i] = float(v)
    for indices in groups.values():
        stacked = torch.stack([values[i].detach() for i in indices])
        for i, f in zip(indices, stacked.tolist()):
            out[i] = float(f)
    return out
