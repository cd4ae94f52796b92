"""Where a run starts: a new run, its own run continued (``resume``), or a fork (``init_from``).

*Continue* means the same run: ``resume=auto`` picks the newest run of ``model_dir`` with the
same prefix, model name and identity (the config without ``NOT_IDENTITY``: length, device,
paths, logging, ``resume`` itself); any other difference starts a new run, and ``Start.note``
says why in one line. ``resume=PATH`` continues that checkpoint's (or folder's) run exactly.
*Fork* means a new run whose weights (and, unless ``init_from_optimizer=False``, optimizer
moments) come from a checkpoint; the parent's folder is only read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mlproject import checkpoint, rundir
from mlproject.config import DEFAULTS, NOT_IDENTITY
from mlproject.errors import CheckpointError

NEW, CONTINUE, FORK = "new", "continue", "fork"


@dataclasses.dataclass
class Start:
    """Where training starts.

    Attributes:
        kind: NEW, CONTINUE or FORK.
        run_dir: the folder a CONTINUE run writes to; also a NEW run's when it takes over a
            folder whose first attempt died before any complete checkpoint.
        path: the checkpoint to load (CONTINUE, FORK).
        payload: its contents.
        newer: complete checkpoints of ``run_dir`` newer than ``path`` (a resume from an older
            one): moved aside once the folder is locked, so no later resume continues them.
        note: one line for the person running it (why a new run, what was moved aside).
    """

    kind: str = NEW
    run_dir: Path | None = None
    path: Path | None = None
    payload: checkpoint.Checkpoint | None = None
    newer: list[Path] = dataclasses.field(default_factory=list)
    note: str | None = None


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """What makes two configs the same experiment: everything but ``NOT_IDENTITY``."""
    return {key: value for key, value in config.items() if key not in NOT_IDENTITY}


def differences(saved: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """``key: saved -> now`` for each identity key that differs between two plain configs.

    A framework key missing on one side counts as its default (it may postdate that run).
    """
    a, b = identity(saved), identity(config)
    keys = sorted(set(a) | set(b))
    missing = "(unset)"
    a = {k: a.get(k, DEFAULTS.get(k, missing)) for k in keys}
    b = {k: b.get(k, DEFAULTS.get(k, missing)) for k in keys}
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in keys if a[k] != b[k]]


def plan(config: dict[str, Any], model_name: str) -> Start:
    """Decide where a run with ``config`` (plain data) and this model name starts."""
    if config["resume"] == "auto":
        start = _auto(config, model_name)
        if start.kind != NEW or start.run_dir is not None or config["init_from"] is None:
            return start
    elif config["resume"] is not None:
        return _continue(Path(config["resume"]))
    if config["init_from"] is not None:  # a fork (also resume=auto's first start of one)
        path, payload = load_in(Path(config["init_from"]))
        return Start(FORK, path=path, payload=payload)
    return Start()


def _auto(config: dict[str, Any], model_name: str) -> Start:
    model_dir, prefix = Path(config["model_dir"]), config["prefix"]
    same_model = [
        (info, path)
        for info, path in rundir.runs(model_dir)  # none when model_dir does not exist
        if info.get("prefix") == prefix and info.get("model") == model_name
    ]  # fmt: skip
    for info, path in reversed(same_model):
        if not differences(info.get("config", {}), config):
            start = _continue_folder(path, auto=True)
            if start.kind == NEW:
                start.note = f"resume=auto: {path} holds no complete checkpoint; starting it anew"
            return start
    if not same_model:
        return Start()
    info, path = same_model[-1]
    diff = "; ".join(differences(info.get("config", {}), config))
    return Start(note=f"resume=auto: not continuing {path} ({diff}); starting a new run")


def _continue(path: Path) -> Start:
    if path.is_dir():
        start = _continue_folder(path, auto=False)
        if start.kind == NEW:
            raise CheckpointError(
                f"resume={str(path)!r}: the folder holds no complete checkpoint. Use "
                "resume=auto to start it anew, or resume=None for a new run"
            )
        return start
    payload = checkpoint.load(path)
    newer = [p for step, p in checkpoint.periodic(path.parent)
             if step > payload["state"]["global_step"] and checkpoint.is_complete(p)]  # fmt: skip
    best = path.parent / checkpoint.BEST_NAME
    if best.exists() and (checkpoint.recorded_step(best) or 0) > payload["state"]["global_step"]:
        newer.append(best)  # the best model of the timeline being left
    return Start(CONTINUE, run_dir=path.parent, path=path, payload=payload, newer=newer)


def _continue_folder(run_dir: Path, auto: bool) -> Start:
    path = checkpoint.latest_valid(run_dir)
    if path is None:  # the first attempt died before its first complete checkpoint
        return Start(NEW, run_dir=run_dir if auto else None)
    # latest_valid has verified it
    return Start(CONTINUE, run_dir=run_dir, path=path, payload=checkpoint.read(path))


def checkpoint_in(path: Path) -> Path:
    """A checkpoint file, or a run folder's ``best.pt`` (else its newest complete checkpoint)."""
    if not path.is_dir():
        return path
    best = path / checkpoint.BEST_NAME
    if checkpoint.problem(best) is None:  # a missing file or record is a problem too
        return best
    found = checkpoint.latest_valid(path)
    if found is None:
        raise CheckpointError(f"{path} holds no complete checkpoint (neither best.pt nor any)")
    return found


def load_in(path: Path) -> tuple[Path, checkpoint.Checkpoint]:
    """``checkpoint_in(path)`` and its contents, verified once: a file given is checked on
    loading, one found in a run folder was checked when it was found."""
    found = checkpoint_in(path)
    return found, checkpoint.read(found) if path.is_dir() else checkpoint.load(found)
