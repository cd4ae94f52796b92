"""Stop signals: SIGTERM, SIGINT and SIGHUP (and the requeue signals) end a run gracefully.

Inside the training loop a stop signal only sets a flag: the loop saves at the next step
boundary and raises ``TrainingInterrupted`` (a KeyboardInterrupt, so sacred marks the run
INTERRUPTED; exit code 128 + the signal's number). Outside it, during start-up, there is no
step to finish, so ``TrainingInterrupted`` is raised at once. DataLoader workers ignore these
signals: a scheduler that signals the whole process group (``scancel``, Kubernetes) must not
kill them before the trainer has saved; the trainer shuts them down itself.

A cluster's requeue signals (``requeue_signals``: SLURM's ``--signal=USR1@90``, submitit's
SIGUSR2) are stop signals during training; a handler they had before (submitit's requeue) is
kept and called once the run is saved and recorded. During start-up they keep that handler.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from mlproject.errors import TrainingInterrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def signal_numbers(value: Any) -> tuple[int, ...]:
    """Signals given by name or number (a list, or a comma-separated string) as numbers.

    Example:
        >>> signal_numbers("SIGUSR1,USR2") == (signal.SIGUSR1, signal.SIGUSR2)
        True
    """
    names = [n for n in value.split(",") if n.strip()] if isinstance(value, str) else value
    if not isinstance(names, list | tuple):
        raise ValueError(f"not a list of signals: {value!r}")
    numbers = []
    for name in names:
        if isinstance(name, int) and not isinstance(name, bool) and name in set(signal.Signals):
            numbers.append(signal.Signals(name))
            continue
        key = name.strip().upper() if isinstance(name, str) else None
        key = key if key is None or key.startswith("SIG") else f"SIG{key}"
        if key not in signal.Signals.__members__:
            raise ValueError(f"names no signal {name!r}")
        numbers.append(signal.Signals[key])
    return tuple(numbers)


class StopSignals:
    """Catches stop signals while ``deferred()`` or ``immediate()`` is active (main thread only).

    Example:
        >>> stops = StopSignals()
        >>> with stops.deferred():
        ...     for batch in loader:
        ...         train(batch)
        ...         if stops.received is not None:
        ...             break  # save, then raise TrainingInterrupted(stops.received, step)
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS):
        self.signals = tuple(dict.fromkeys(signals))
        self.received: int | None = None
        self.previous: dict[int, Any] = {}  # the handlers deferred() replaced

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Note the first stop signal in ``received``; later ones are ignored (a save is on)."""
        self.received = None
        with _handlers(self.signals, self._note) as self.previous:
            yield

    @contextlib.contextmanager
    def immediate(self, step: int = 0) -> Iterator[None]:
        """Raise TrainingInterrupted at the first stop signal (start-up: nothing to save)."""

        def stop(signum: int, frame: Any) -> None:
            raise TrainingInterrupted(signum, step)

        with _handlers(self.signals, stop):
            yield

    def _note(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum


@contextlib.contextmanager
def _handlers(
    signals: tuple[int, ...], handler: Callable[[int, Any], None]
) -> Iterator[dict[int, Any]]:
    if threading.current_thread() is not threading.main_thread():
        yield {}  # signals can only be handled on the main thread
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield previous
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


class IgnoreStopSignals:
    """A DataLoader ``worker_init_fn`` that ignores stop signals, then runs the user's own.

    Picklable, so it also works with the 'spawn' and 'forkserver' start methods.
    """

    def __init__(self, user_fn: Callable[[int], Any] | None, signals: tuple[int, ...]):
        self.user_fn, self.signals = user_fn, signals

    def __call__(self, worker_id: int) -> None:
        for signum in self.signals:
            signal.signal(signum, signal.SIG_IGN)
        if self.user_fn is not None:
            self.user_fn(worker_id)


def protect_workers(loader: Any, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
    """Make the worker processes of a DataLoader (if it has any) ignore stop signals."""
    if getattr(loader, "num_workers", 0) and hasattr(loader, "worker_init_fn"):
        if not isinstance(loader.worker_init_fn, IgnoreStopSignals):
            loader.worker_init_fn = IgnoreStopSignals(loader.worker_init_fn, signals)
