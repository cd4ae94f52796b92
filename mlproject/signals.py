"""Stop signals: SIGTERM, SIGINT and SIGHUP end a run gracefully, never mid-step.

Inside the training loop a stop signal only sets a flag: the loop saves at the next step
boundary and raises ``TrainingInterrupted`` (a KeyboardInterrupt, so sacred marks the run
INTERRUPTED; exit code 128 + the signal's number). Outside it, during start-up, there is no
step to finish, so ``TrainingInterrupted`` is raised at once. DataLoader workers ignore these
signals: a scheduler that signals the whole process group (``scancel``, Kubernetes) must not
kill them before the trainer has saved; the trainer shuts them down itself.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from mlproject.errors import TrainingInterrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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
        self.signals = tuple(signals)
        self.received: int | None = None

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Note the first stop signal in ``received``; later ones are ignored (a save is on)."""
        self.received = None
        with _handlers(self.signals, self._note):
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
def _handlers(signals: tuple[int, ...], handler: Callable[[int, Any], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signals can only be handled on the main thread
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
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
