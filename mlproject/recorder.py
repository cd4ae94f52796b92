"""Recorder: every side effect of a run (folder, lock, checkpoints, TensorBoard, sacred, progress).

The training loop never touches a file, an event writer, the sacred run or the terminal
itself: it calls a Recorder. This is the one seam to switch off on all but one process when
training is distributed.

Scalars are buffered as they come (tensors included: no host sync per step) and written to
TensorBoard and to the sacred run in batches: every ``FLUSH_SECONDS``, before each checkpoint
and when the run ends, so a checkpoint never refers to scalars that are not on disk.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mlproject import checkpoint
from mlproject.errors import NonFiniteLossError, RunLockedError
from mlproject.model import NullWriter

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the lock file still names the holder
    fcntl = None

FLUSH_SECONDS = 10.0  # how often buffered scalars reach TensorBoard and sacred
PROGRESS_SECONDS = 0.5  # how often the progress bar reads the live loss (a host sync)
log = logging.getLogger(__name__)
_progress_stream: Any = None  # where bars go; None = sys.stderr at the time


def show_progress_on(stream: Any) -> None:
    """Send progress bars to ``stream`` (the experiment glue points it past sacred's capture)."""
    global _progress_stream
    _progress_stream = stream


def new_run_dir(model_dir: Path, name: str, tensorboard_dir: Path | None) -> Path:
    """Create and return ``model_dir/name`` (``name-2``, ``name-3``... if taken)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    for i in itertools.count(1):
        candidate = model_dir / (name if i == 1 else f"{name}-{i}")
        if tensorboard_dir is not None and (tensorboard_dir / candidate.name).exists():
            continue
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")


def find_run_dir(model_dir: Path, prefix: str, model_name: str) -> Path | None:
    """The most recently used run folder of ``model_dir`` made for this prefix and model."""
    found = []
    for info_path in model_dir.glob(f"*/{checkpoint.RUN_INFO_NAME}"):
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError):
            continue
        if info.get("prefix") == prefix and info.get("model") == model_name:
            run_dir = info_path.parent
            newest = max((p.stat().st_mtime for p in run_dir.iterdir()), default=0.0)
            found.append((newest, run_dir))
    return max(found)[1] if found else None


class Recorder:
    """Writes everything a run leaves behind. Open it with ``open``, end it with ``close``.

    Example:
        >>> rec = Recorder(tensorboard_dir=None, run=None, progress=False)
        >>> rec.open(Path(tmp) / "run")  # doctest: +SKIP
        >>> rec.log("train", {"loss": 0.5}, step=1)
        >>> rec.close()
    """

    def __init__(
        self,
        tensorboard_dir: str | None,
        run: Any = None,
        progress: bool = True,
        stop_on_nonfinite: bool = True,
    ):
        self.stop_on_nonfinite = stop_on_nonfinite
        self.tensorboard_dir = Path(tensorboard_dir) if tensorboard_dir is not None else None
        self.run = run
        self.show_progress = progress
        self.run_dir: Path | None = None
        self.writer: Any = NullWriter()
        self._events = None
        self._lock_fd: int | None = None
        self._pending: list[tuple[str, int, Any, float]] = []
        self._tags: dict[tuple[str, str], str] = {}
        self._next_flush = time.monotonic() + FLUSH_SECONDS
        self.n_events = 0

    # --- opening and closing ------------------------------------------------------------------
    def open(self, run_dir: Path, run_info: dict[str, Any], n_events: int = 0) -> None:
        """Take the run folder's lock, record what run it holds, open the TensorBoard run.

        ``n_events`` is how many events the run had logged at the checkpoint it resumes from:
        later ones (logged after that checkpoint by a process that died) are dropped, since
        they will be logged again.
        """
        self.run_dir = run_dir
        self._lock()
        info_path = run_dir / checkpoint.RUN_INFO_NAME
        if not info_path.exists():
            checkpoint.write_atomic(info_path, json.dumps(run_info, indent=2).encode())
        if self.tensorboard_dir is not None:
            from mlproject.tensorboard import EventWriter, truncate_run

            tb_dir = self.tensorboard_dir / run_dir.name
            tb_dir.mkdir(parents=True, exist_ok=True)
            dropped = truncate_run(tb_dir, n_events)
            if dropped:
                log.info("dropped %d TensorBoard events logged after the checkpoint", dropped)
            self._events = EventWriter(tb_dir, initial_count=n_events, flush_secs=FLUSH_SECONDS)
            self.writer = self._events
        self.n_events = n_events

    def close(self) -> None:
        """Write what is buffered, close TensorBoard, release the lock. Safe to call twice."""
        try:
            self.flush(check=False)
        finally:
            if self._events is not None:
                self._events.close()
                self._events = None
                self.writer = NullWriter()
            self._unlock()

    def _lock(self) -> None:
        path = self.run_dir / checkpoint.LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        previous = os.read(fd, 200).decode(errors="replace").strip()
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLockedError(
                    f"run folder {self.run_dir} is in use by another process ({previous}); "
                    "wait for it to end, or start a new run (resume=None)"
                ) from None
        if previous:
            warnings.warn(
                f"run folder {self.run_dir} was locked by a process that is gone ({previous}); "
                "taking the lock over",
                stacklevel=3,
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)  # an empty lock file means a clean exit
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- scalars ------------------------------------------------------------------------------
    def log(self, group: str, values: dict[str, Any], step: int) -> None:
        """Buffer ``values`` (numbers or 0-d tensors) under tags ``group/name`` at ``step``."""
        now = time.time()
        tags = self._tags
        for key, value in values.items():
            tag = tags.get((group, key))
            if tag is None:
                tag = tags[group, key] = f"{group}/{key}"
            self._pending.append((tag, step, value, now))

    def maybe_flush(self) -> None:
        """Flush when ``FLUSH_SECONDS`` have passed; cheap enough to call every step."""
        if time.monotonic() >= self._next_flush:
            self.flush()

    def flush(self, check: bool = True) -> None:
        """Write buffered scalars to TensorBoard and sacred, and sync the event file to disk.

        With ``check`` and ``stop_on_nonfinite``, a NaN/inf ``train/loss`` among them raises
        NonFiniteLossError (after writing them, so the record shows it).
        """
        self._next_flush = time.monotonic() + FLUSH_SECONDS
        pending, self._pending = self._pending, []
        values = _floats([v for _, _, v, _ in pending])
        bad_step = None
        for (tag, step, _, wall_time), value in zip(pending, values):
            if self._events is not None:
                self._events.add_scalar(tag, value, step, wall_time)
            if self.run is not None:
                self.run.log_scalar(tag, value, step)
            if bad_step is None and tag == "train/loss" and not _finite(value):
                bad_step = step
        if self._events is not None:
            self._events.flush()
            self.n_events = self._events.n_events
        if check and self.stop_on_nonfinite and bad_step is not None:
            raise NonFiniteLossError(
                f"the training loss is not finite at global step {bad_step}; stopping so that "
                "no checkpoint holds NaN/inf weights. Use nonfinite=skip to skip such steps"
            )

    # --- checkpoints and artifacts ------------------------------------------------------------
    def save_checkpoint(self, payload: dict[str, Any], name: str, keep: int | None = None) -> Path:
        """Flush, then write ``payload`` as ``run_dir/name`` atomically with its record."""
        self.flush()
        payload["n_events"] = self.n_events
        path = self.run_dir / name
        checkpoint.save(payload, path)
        if keep is not None and name != checkpoint.BEST_NAME:
            checkpoint.prune(self.run_dir, keep)
        return path

    def add_artifact(self, path: Path) -> None:
        """Attach a file to the sacred run (a no-op without one)."""
        if self.run is not None:
            self.run.add_artifact(str(path), name=path.name)

    # --- progress -----------------------------------------------------------------------------
    def progress(self, total: int, initial: int, desc: str, enabled: bool = True) -> Progress:
        """A progress bar for one epoch (on stderr; disabled by progress=False).

        Inside a sacred run it goes to the stream the experiment set aside, past the capture.
        """
        stream = (_progress_stream if self.run is not None else None) or sys.stderr
        return Progress(total, initial, desc, enabled=enabled and self.show_progress, file=stream)


class Progress:
    """A tqdm bar whose loss display is refreshed at most every ``PROGRESS_SECONDS``."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool, file: Any):
        self.bar = None
        if enabled:
            self.bar = tqdm(
                total=total, initial=initial, desc=desc, mininterval=0.5,
                file=file,
                dynamic_ncols=True, leave=False,
            )  # fmt: skip
        self._next = 0.0

    def update(self, outputs: dict[str, Any]) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        now = time.monotonic()
        if now >= self._next and "loss" in outputs:
            self._next = now + PROGRESS_SECONDS
            self.bar.set_postfix(loss=f"{float(outputs['loss']):.4g}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _floats(values: list[Any]) -> list[float]:
    """Convert numbers and 0-d tensors to floats with one host sync per device and dtype."""
    out: list[Any] = list(values)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            groups.setdefault((v.device, v.dtype), []).append(i)
        else:
            out[i] = float(v)
    for indices in groups.values():
        for i, f in zip(indices, torch.stack([values[i] for i in indices]).tolist()):
            out[i] = float(f)
    return out


def _finite(value: float) -> bool:
    return value - value == 0.0  # False for NaN and +-inf
