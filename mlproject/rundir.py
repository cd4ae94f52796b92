"""RunDir: a run's folder under ``model_dir``: its name, its lock and its run.json.

run.json says what the run is and how it stands: ``name``, ``prefix``, ``model``, the
``config`` it was started with, its ``sequence`` number among the runs of ``model_dir`` and
``created`` time (which order the runs, whatever the files' timestamps say), its ``parent``
(a fork's checkpoint and step), ``status`` (running, completed, interrupted, failed; a
"running" run whose lock is free died without a word) and, once completed, its ``summary``.

The lock is a POSIX record lock (``fcntl.lockf``) on ``<run>/lock``, whose text names the
holder. Unlike ``flock``, a record lock belongs to the process, not to the open file, so
DataLoader workers forked from the trainer never hold it: when the trainer dies, its lock
dies with it, even while orphaned workers linger.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlproject import layout
from mlproject.errors import RunLockedError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the lock file still names the holder
    fcntl = None

# Record locks never conflict within one process, so this process's own locks are kept here.
_HELD_HERE: set[str] = set()


def create(model_dir: Path, name: str, tensorboard_dir: Path | None = None) -> RunDir:
    """Create ``model_dir/name`` (``name-2``, ``name-3``... when taken, also in TensorBoard)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    for i in itertools.count(1):
        candidate = model_dir / (name if i == 1 else f"{name}-{i}")
        if tensorboard_dir is not None and (tensorboard_dir / candidate.name).exists():
            continue
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return RunDir(candidate)
    raise AssertionError("unreachable")


def runs(model_dir: Path) -> list[tuple[dict[str, Any], Path]]:
    """(run.json, folder) of every run of ``model_dir``, oldest first by what run.json records."""
    found = []
    for info_path in model_dir.glob(f"*/{layout.RUN_INFO_NAME}"):
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict):
            found.append((info, info_path.parent))

    def order(item: tuple[dict[str, Any], Path]) -> tuple[float, float, str]:
        info, path = item
        return (_number(info.get("sequence")), _number(info.get("created")), path.name)

    return sorted(found, key=order)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def find_latest(model_dir: Path, match: Callable[[dict[str, Any]], bool]) -> Path | None:
    """The newest run folder of ``model_dir`` whose run.json satisfies ``match``."""
    found = [path for info, path in runs(model_dir) if match(info)]
    return found[-1] if found else None


def new_info(name: str, prefix: str, model: str, config: dict[str, Any], model_dir: Path,
             parent: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The run.json of a new run: the next sequence number of ``model_dir``, now as created."""
    sequence = 1 + max((int(_number(i.get("sequence"))) for i, _ in runs(model_dir)), default=0)
    return {
        "name": name, "prefix": prefix, "model": model, "config": config,
        "sequence": sequence, "created": time.time(), "parent": parent, "status": "running",
    }  # fmt: skip


class RunDir:
    """One run folder. ``lock()`` before writing to it, ``unlock()`` when done.

    Example:
        >>> run = create(Path("runs"), "baseline_mlp")
        >>> run.lock()
        >>> run.write_info({"model": "mlp"})
        >>> run.unlock()
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fd: int | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def info(self) -> dict[str, Any]:
        """What run.json says (empty when there is none yet)."""
        try:
            return json.loads((self.path / layout.RUN_INFO_NAME).read_text())
        except FileNotFoundError:
            return {}

    def write_info(self, info: dict[str, Any]) -> None:
        """Write run.json atomically."""
        data = json.dumps(info, indent=2).encode()
        layout.write_atomic(self.path / layout.RUN_INFO_NAME, data)

    def update_info(self, **fields: Any) -> None:
        """Change some fields of run.json (only the lock holder may)."""
        self.write_info({**self.info(), **fields})

    def lock(self) -> None:
        """Take the folder's lock, or raise RunLockedError naming the live process holding it."""
        path = self.path / layout.LOCK_NAME
        key = os.path.realpath(path)
        if key in _HELD_HERE:  # opening the file again and closing it would drop our lock
            raise RunLockedError(
                f"run folder {self.path} is in use by this process (pid {os.getpid()}); finish "
                "or close that training first, or start a new run (resume=None)"
            )
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        previous = os.read(fd, 200).decode(errors="replace").strip()
        if fcntl is not None:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunLockedError(
                    f"run folder {self.path} is in use by another process ({previous}); "
                    "wait for it to end, or start a new run (resume=None)"
                ) from None
        if previous:
            warnings.warn(
                f"run folder {self.path} was locked by a process that is gone ({previous}); "
                "taking the lock over",
                stacklevel=3,
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        os.fsync(fd)
        self._lock_fd = fd
        _HELD_HERE.add(key)

    def unlock(self) -> None:
        """Release the lock, leaving the lock file empty (a clean exit). Safe to call twice."""
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)  # closing the file releases the record lock
            self._lock_fd = None
            _HELD_HERE.discard(os.path.realpath(self.path / layout.LOCK_NAME))
