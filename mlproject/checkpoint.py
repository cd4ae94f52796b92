"""Checkpoint files: what they hold, atomic writing with a record, verification, RNG state.

A checkpoint ``checkpoint-000000120.pt`` is written to a temporary file, flushed to disk and
renamed into place; its record ``checkpoint-000000120.pt.sha256`` is written the same way
last. A checkpoint without its record is *incomplete* (what a kill during a save leaves: it is
skipped and removed), one whose record does not match is *corrupt* (warned about). Loading
always uses ``torch.load(weights_only=True)``, so a checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import time
import warnings
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from mlproject.errors import CheckpointError
from mlproject.layout import (  # noqa: F401 - the names are part of this module's interface
    ABANDONED_DIR,
    BEST_NAME,
    CHECKPOINT_NAME,
    CHECKPOINT_RE,
    LOCK_NAME,
    RECORD_SUFFIX,
    RUN_INFO_NAME,
    TMP_SUFFIX,
    fsync_dir,
    periodic,
    record_path,
    replace_atomically,
    write_atomic,
)

FORMAT_VERSION = 2  # 2: sink states under "sinks" (1 had TensorBoard's count as "n_events")
log = logging.getLogger(__name__)


class Checkpoint(TypedDict):
    """What a checkpoint holds: plain data and tensors only, so ``weights_only=True`` reads it."""

    format: int  # FORMAT_VERSION
    model: dict[str, Any]  # Model.training_state(): weights, optimizers, schedulers, structure
    state: dict[str, Any]  # TrainState.as_dict(): the loop's counters
    rng: dict[str, Any]  # every RNG state at this step (rng_state)
    epoch_rng: dict[str, Any] | None  # RNG state at the start of this epoch: replays its order
    config: dict[str, Any]  # the resolved config, as plain data
    run_name: str  # the run folder's name
    sinks: dict[str, dict[str, Any]]  # each sink's state() by sink name
    ranks: list[dict[str, Any]] | None  # under torchrun: every process's "rng" and "epoch_rng"


def build(**fields: Any) -> Checkpoint:
    """A Checkpoint from its fields (all of them, by name), stamped with FORMAT_VERSION."""
    missing = set(Checkpoint.__annotations__) - {"format"} - set(fields)
    unknown = set(fields) - set(Checkpoint.__annotations__)
    if missing or unknown:
        raise TypeError(f"checkpoint.build: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return Checkpoint(format=FORMAT_VERSION, **fields)


def parse(payload: Any, path: Path) -> Checkpoint:
    """Check that ``payload`` (read from ``path``) is a Checkpoint; upgrade format 1."""
    if isinstance(payload, dict) and payload.get("format") == 1:
        payload = {**payload, "format": FORMAT_VERSION}
        payload["sinks"] = {"tensorboard": {"n_events": payload.pop("n_events", 0)}}
    if isinstance(payload, dict) and "ranks" not in payload:
        payload = {**payload, "ranks": None}  # saved by one process
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not an mlproject checkpoint (format {FORMAT_VERSION})")
    missing = sorted(set(Checkpoint.__annotations__) - set(payload))
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; it cannot be resumed")
    return payload  # type: ignore[return-value]


def save(payload: Checkpoint, path: Path) -> None:
    """Save ``payload`` at ``path`` atomically, then its checksum record (the completeness mark)."""
    replace_atomically(path, lambda f: torch.save(payload, f))
    digest, size = _digest(path)
    record = {"sha256": digest, "size": size, "step": payload.get("state", {}).get("global_step")}
    write_atomic(record_path(path), json.dumps(record).encode())


def _digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def problem(path: Path) -> str | None:
    """Say why the checkpoint at ``path`` is not complete and intact, or return None."""
    if not path.is_file():
        return "the file is missing"
    try:
        record = json.loads(record_path(path).read_text())
    except FileNotFoundError:
        return "its completeness record is missing (the save did not finish)"
    except (OSError, ValueError):
        return "its completeness record is unreadable"
    size = path.stat().st_size
    if size != record.get("size"):
        return f"its size is {size} bytes, the record says {record.get('size')} (truncated?)"
    if _digest(path)[0] != record.get("sha256"):
        return "its checksum does not match the record (corrupted)"
    return None


def load(path: Path | str) -> Checkpoint:
    """Load a verified checkpoint with ``weights_only=True``; raise CheckpointError otherwise."""
    path = Path(path)
    why = problem(path)
    if why:
        raise CheckpointError(f"checkpoint {path} is unusable: {why}")
    return read(path)


def read(path: Path) -> Checkpoint:
    """Read a checkpoint file safely (no checksum check): plain data and tensors only."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} was refused: it holds Python objects that loading would have to "
            f"execute, which mlproject never does (weights_only=True). Detail: {err}"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"checkpoint {path} cannot be read: {err}") from None
    return parse(payload, path)


def is_complete(path: Path) -> bool:
    """True when the checkpoint's save finished (its record exists); it may still be corrupt."""
    return record_path(path).is_file() and path.is_file()


def latest_valid(run_dir: Path) -> Path | None:
    """The newest complete, intact periodic checkpoint in ``run_dir``, or None.

    Incomplete ones (no record: a kill during the save) are skipped silently; corrupt ones
    (a record that does not match) are skipped with a warning naming them. Raises
    CheckpointError only when every complete checkpoint is corrupt.
    """
    complete = [path for _, path in periodic(run_dir) if is_complete(path)]
    for path in reversed(complete):
        why = problem(path)
        if why is None:
            return path
        warnings.warn(f"skipping corrupt checkpoint {path}: {why}", stacklevel=2)
    if complete:
        raise CheckpointError(
            f"no usable checkpoint in {run_dir}: all {len(complete)} complete checkpoints are "
            "corrupt (see the warnings). Start a new run (resume=None), or give resume= a "
            "checkpoint you restored from a backup"
        )
    return None


def clean(run_dir: Path) -> list[Path]:
    """Remove what interrupted saves left: temporary files, checkpoints without their record
    and records without their checkpoint. Call only while holding the folder's lock."""
    removed = []
    for entry in run_dir.iterdir():
        name = entry.name
        stale = name.endswith(TMP_SUFFIX) or (
            (CHECKPOINT_RE.match(name) or name == BEST_NAME) and not record_path(entry).exists()
        )
        if name.endswith(RECORD_SUFFIX):
            stale = not entry.with_name(name[: -len(RECORD_SUFFIX)]).exists()
        if stale and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def move_aside(run_dir: Path, paths: list[Path]) -> Path:
    """Move checkpoints (with their records) into ``run_dir/abandoned/<time>/``; return it."""
    target = run_dir / ABANDONED_DIR / time.strftime("%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for path in paths:
        for part in (record_path(path), path):  # the record first: never a half-valid pair
            if part.exists():
                os.replace(part, target / part.name)
    fsync_dir(run_dir)
    return target


def recorded_step(path: Path) -> int | None:
    """The global step a checkpoint's record names (best.pt: the step of the best model)."""
    try:
        return json.loads(record_path(path).read_text()).get("step")
    except (OSError, ValueError):
        return None


def prune(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete periodic checkpoints (never best.pt).

    A file that cannot be deleted is a warning naming it; the next prune tries it again.
    """
    complete = [p for _, p in periodic(run_dir) if is_complete(p)]
    for path in complete[: max(0, len(complete) - keep)]:
        try:
            path.unlink(missing_ok=True)  # the file first: a lone record is cleaned up later
            record_path(path).unlink(missing_ok=True)
        except OSError as err:
            warnings.warn(
                f"could not delete old checkpoint {path} ({err.strerror or err}); training "
                "goes on, and the next save tries again",
                stacklevel=2,
            )


def structure_differences(
    saved: dict[str, Any],
    current: dict[str, Any],
    kinds: tuple[str, ...] = ("parameters", "optimizers", "schedulers"),
) -> list[str]:
    """What differs between two ``Model.structure()`` results, one line per difference."""
    diffs = []
    saved_params, params = saved.get("parameters", {}), current.get("parameters", {})
    if "parameters" not in kinds:
        saved_params = params = {}
    for key in sorted(set(saved_params) | set(params)):
        if key not in params:
            diffs.append(f"parameter {key!r} is in the checkpoint but not in the model")
        elif key not in saved_params:
            diffs.append(f"parameter {key!r} is in the model but not in the checkpoint")
        elif saved_params[key] != params[key]:
            diffs.append(f"parameter {key!r}: checkpoint {saved_params[key]}, model {params[key]}")
    for kind in ("optimizers", "schedulers"):
        if kind in kinds and saved.get(kind, {}) != current.get(kind, {}):
            diffs.append(f"{kind}: checkpoint {saved.get(kind)}, model {current.get(kind)}")
    return diffs


# --- random number generators -----------------------------------------------------------------
def generators_of(loader: Any) -> list[torch.Generator]:
    """The private torch generators a DataLoader draws from, if it was given any."""
    found = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and generator not in found:
            found.append(generator)
    return found


def rng_state(generators: list[torch.Generator] = ()) -> dict[str, Any]:
    """Every RNG state a run depends on, as plain data (python, numpy, torch, CUDA, extras)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "generators": [g.get_state() for g in generators],
    }


def set_rng_state(state: dict[str, Any], generators: list[torch.Generator] = ()) -> None:
    """Restore what ``rng_state`` returned."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for generator, saved in zip(generators, state["generators"]):
        generator.set_state(saved)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's (all devices') global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
