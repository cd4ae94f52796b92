"""Layout: the name of every file a run folder holds, and writing one of them atomically.

Torch-free, so that reading run folders (``python -m mlproject runs``) starts fast.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from mlproject.errors import DiskFullError

# Every name a run folder holds, in one place.
CHECKPOINT_NAME = "checkpoint-{step:09d}.pt"  # periodic checkpoints, by global step
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d{9,})\.pt$")
BEST_NAME = "best.pt"  # the best model on the validation set; never pruned
RECORD_SUFFIX = ".sha256"  # completeness record, written after its checkpoint
RUN_INFO_NAME = "run.json"  # what run this folder holds (prefix, model name, first config)
LOCK_NAME = "lock"  # held by the one process writing to the folder
TMP_SUFFIX = ".tmp"  # a file being written; left only by a process killed while writing
ABANDONED_DIR = "abandoned"  # checkpoints of a timeline that a resume from an older one left


def record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def periodic(run_dir: Path) -> list[tuple[int, Path]]:
    """The folder's periodic checkpoint files as (step, path), oldest first."""
    found = []
    for entry in run_dir.iterdir() if run_dir.is_dir() else ():
        match = CHECKPOINT_RE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    return sorted(found)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Run ``write`` on a temporary file, fsync it, then rename it to ``path``.

    On failure the temporary file is removed; a full disk raises DiskFullError.
    """
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError | RuntimeError) and _disk_full(err, path.parent):
            raise DiskFullError(_disk_full_message(path, written)) from err
        raise
    fsync_dir(path.parent)


def _disk_full(err: BaseException, folder: Path) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch.save's zip writer reports a failed write as "enforce fail ... unexpected pos"
    return isinstance(err, RuntimeError) and shutil.disk_usage(folder).free < 1 << 20


def _disk_full_message(path: Path, written: int) -> str:
    sizes = [p.stat().st_size for _, p in periodic(path.parent)] or [written]
    need, free = max(max(sizes), written), shutil.disk_usage(path.parent).free
    return (
        f"no space left to write {path.name} in {path.parent}: it needs about {_size(need)} "
        f"and {_size(free)} are free. Free at least {_size(max(need - free, 0))} (or keep fewer "
        "checkpoints: keep_checkpoints=2), then run the same command with resume=auto: every "
        "earlier checkpoint is intact"
    )


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync'ed, then renamed into place."""
    replace_atomically(path, lambda f: f.write(data))
