"""The framework's config keys: their defaults in one literal, and their validation.

``validate_config`` checks every framework key at once and raises a single ``ConfigError``
that lists each problem (key, value received, what is allowed, the fix) before anything is
written to disk. Keys that are not the framework's belong to the user and pass through, unless
they look like a misspelled framework key.
"""

from __future__ import annotations

import difflib
import os
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlproject.errors import ConfigError

if TYPE_CHECKING:
    import torch

# Every framework default, one key per line. The README's config table is checked against this.
DEFAULTS: dict[str, Any] = {
    "n_epochs": 10,  # passes over the training set; ignored when n_global_iterations is set
    "n_global_iterations": None,  # total optimizer steps (wins over n_epochs); None or 0 = unset
    "model_dir": None,  # required: folder that holds one sub-folder (checkpoints) per run
    "device": None,  # None = where get_model put the model; or 'cpu', 'cuda[:N]', 'mps', 'auto'
    "tensorboard_dir": None,  # folder for TensorBoard runs; None = write no event files
    "log_iteration_scalars": 1,  # log train scalars every N global steps; None = never
    "log_iteration_all": "epoch",  # 'everything' log level every N steps or each 'epoch'; None
    "save_iterations": "epoch",  # save a checkpoint every N global steps, or each 'epoch'
    "prefix": "",  # first part of the run-folder name (TensorBoard and checkpoints)
    "resume": None,  # None = new run; 'auto' = continue this experiment's run; or a path
    "init_from": None,  # checkpoint file or run folder whose weights start a new run (a fork)
    "init_from_optimizer": True,  # a fork also takes the checkpoint's optimizer state (moments)
    "keep_checkpoints": 2,  # keep the newest N (>= 2) periodic checkpoints; None = keep all
    "nonfinite": "error",  # NaN/inf loss: 'error' stops the run; 'skip' skips and counts steps
    "precision": "32",  # '32'; 'bf16' (autocast); '16' (autocast + GradScaler)
    "accumulate_grad_batches": 1,  # training batches per optimizer step (loss normalised)
    "clip_grad_norm": None,  # max gradient norm per optimizer, after unscaling; None = no clip
    "compile": False,  # torch.compile the networks (True, or a backend name); plain checkpoints
    "validate_iterations": "epoch",  # evaluate every N optimizer steps, or at each 'epoch' end
    "early_stopping": None,  # stop after N evaluations without a better benchmark metric
    "requeue_signals": ["SIGUSR1", "SIGUSR2"],  # a cluster's "about to kill": save, then stop
    "requeue_command": None,  # shell command run once after that save, e.g. scontrol requeue
    "deterministic": False,  # torch.use_deterministic_algorithms(True) for the run
    "progress": True,  # show a tqdm progress bar per epoch (on stderr)
    "seed": None,  # RNG seed; sacred fills it in; None outside sacred = draw one and record it
    "data_dir": None,  # where datasets live; None = $DATA_DIR, else ~/.cache/mlproject/data
}

# Keys that do not change what is trained: resume=auto continues a run whose config differs
# from this one only in these (its length, where it runs and writes, how much it logs).
NOT_IDENTITY = frozenset(
    {
        "n_epochs",
        "n_global_iterations",
        "model_dir",
        "device",
        "tensorboard_dir",
        "data_dir",
        "log_iteration_scalars",
        "log_iteration_all",
        "save_iterations",
        "keep_checkpoints",
        "progress",
        "resume",
        "seed",  # sacred draws a new one each start; a continued run keeps its own
        "compile",  # the same computation, compiled or not
        "validate_iterations",
        "early_stopping",  # when to stop is the run's length
        "requeue_signals",
        "requeue_command",
    }
)

# A user key this close to a framework key (difflib ratio) is taken for a typo.
_TYPO_CUTOFF = 0.85


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: Any) -> bool:
    return _is_int(value) and value >= 1


def _check(key: str, value: Any) -> str | None:
    """Return what is wrong with one framework key's value, or None when it is fine."""
    if key == "n_epochs":
        if not _positive_int(value):
            return "must be a positive int (number of epochs). Use n_epochs=10"
    elif key == "n_global_iterations":
        if value is not None and not _positive_int(value):
            return "must be a positive int or None (use n_epochs). Use n_global_iterations=1000"
    elif key == "model_dir":
        if not isinstance(value, str | os.PathLike) or not str(value):
            return "is required: the folder that holds the runs' checkpoints. Use model_dir=runs"
        return folder_problem(value)
    elif key == "tensorboard_dir":
        if value is not None and (not isinstance(value, str | os.PathLike) or not str(value)):
            return "must be a folder path or None (no TensorBoard). Use tensorboard_dir=tb"
        return folder_problem(value) if value is not None else None
    elif key == "log_iteration_scalars":
        if value is not None and not _positive_int(value):
            return "must be a positive int (steps) or None. Use log_iteration_scalars=10"
    elif key in ("log_iteration_all", "save_iterations"):
        none_ok = key == "log_iteration_all"
        if not (_positive_int(value) or value == "epoch" or (none_ok and value is None)):
            allowed = "a positive int (steps), 'epoch'" + (" or None" if none_ok else "")
            return f"must be {allowed}. Use {key}=500 or {key}=epoch"
    elif key == "prefix":
        if not isinstance(value, str) or os.sep in value or value in (".", ".."):
            return "must be a string usable in a folder name (no '/'). Use prefix=baseline"
    elif key == "resume":
        if value is not None and not isinstance(value, str | os.PathLike):
            return "must be None, 'auto', or the path of a checkpoint file or run folder"
        if value not in (None, "auto") and not os.path.exists(value):
            return "names no existing checkpoint file or run folder. Use resume=auto or a path"
    elif key == "init_from":
        if value is not None and not isinstance(value, str | os.PathLike):
            return "must be None or the path of a checkpoint file or run folder"
        if value is not None and not os.path.exists(value):
            return "names no existing checkpoint file or run folder. Use init_from=runs/<run>"
    elif key == "keep_checkpoints":
        if value is not None and not (_is_int(value) and value >= 2):
            return (
                "must be an int >= 2 (the newest may be incomplete when a run dies) or None "
                "(keep all). Use keep_checkpoints=3"
            )
    elif key == "nonfinite":
        if value not in ("error", "skip"):
            return "must be 'error' (stop the run) or 'skip' (skip the step and count it)"
    elif key == "precision":
        if value not in ("32", "bf16", "16"):
            return "must be '32', 'bf16' or '16'. Use precision=bf16 (autocast, no scaler)"
    elif key == "accumulate_grad_batches":
        if not _positive_int(value):
            return "must be a positive int (batches per step). Use accumulate_grad_batches=4"
    elif key == "clip_grad_norm":
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if value is not None and not (number and value > 0 and value == value):
            return "must be a positive number or None (no clipping). Use clip_grad_norm=1.0"
    elif key == "validate_iterations":
        if not (_positive_int(value) or value == "epoch"):
            return "must be a positive int (steps) or 'epoch'. Use validate_iterations=500"
    elif key == "early_stopping":
        if value is not None and not _positive_int(value):
            return "must be a positive int (evaluations) or None. Use early_stopping=5"
    elif key == "compile":
        if not isinstance(value, bool | str) or value == "":
            return "must be True, False or a torch.compile backend name. Use compile=True"
    elif key == "requeue_signals":
        return signal_problem(value)
    elif key == "device":
        return device_problem(value)
    elif key == "requeue_command":
        if value is not None and (not isinstance(value, str) or not value.strip()):
            return "must be a shell command or None. Use requeue_command='scontrol requeue 42'"
    elif key in ("deterministic", "progress", "init_from_optimizer"):
        if not isinstance(value, bool):
            return f"must be True or False. Use {key}=True"
    elif key == "seed":
        if value is not None and not _is_int(value):
            return "must be an int or None. Use seed=1"
    elif key == "data_dir":
        if value is not None and not isinstance(value, str | os.PathLike):
            return "must be a folder path or None. Use data_dir=~/data"
    return None


def signal_problem(value: Any) -> str | None:
    """Say why ``value`` is not a list of signal names (or numbers), or return None."""
    from mlproject.signals import signal_numbers

    try:
        numbers = signal_numbers(value)
    except ValueError as err:
        return f"{err}; use names such as SIGUSR1, SIGUSR2 (or [] for none)"
    if {signal.SIGKILL, signal.SIGSTOP} & set(numbers):
        return "cannot include SIGKILL or SIGSTOP: they cannot be caught"
    return None


def folder_problem(value: str | os.PathLike) -> str | None:
    """Say why a run cannot write into folder ``value`` (made if missing), or return None."""
    path = os.path.abspath(os.path.expanduser(value))
    if os.path.exists(path) and not os.path.isdir(path):
        return "is a file, not a folder. Use a folder path (it is created if missing)"
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"cannot be created: {existing} is a file. Use another folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"is not writable here ({existing} refuses writes). Use a folder you can write to"
    return None


def device_problem(value: Any) -> str | None:
    """Say why ``value`` is not a usable device on this machine, or return None."""
    if value is None:
        return None
    import torch  # here, not at import: the sacred glue that imports this needs no torch

    if not isinstance(value, str | torch.device):
        return "must be a device name such as 'cpu', 'cuda', 'cuda:0', 'mps' or 'auto'"
    if value == "auto":
        return None
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        return "is not a device name; allowed: 'cpu', 'cuda', 'cuda:N', 'mps', 'auto'"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "asks for CUDA, but no CUDA GPU is available here. Use device=cpu"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"names GPU {device.index}, but only {count} GPU(s) exist (cuda:0..{count - 1})"
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            return "asks for MPS, which is not available here. Use device=cpu"
    elif device.type != "cpu":
        return f"device type '{device.type}' is not supported; allowed: 'cpu', 'cuda', 'mps'"
    return None


def resolve_device(value: str | torch.device) -> torch.device:
    """Turn a validated device name into a ``torch.device`` ('auto' picks cuda when present)."""
    import torch

    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(value)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``DEFAULTS`` updated with ``config``; raise one ``ConfigError`` naming every problem.

    Example:
        >>> cfg = validate_config({"model_dir": "runs", "n_epochs": 3})
        >>> cfg["device"], cfg["n_epochs"]  # no device: the model stays where get_model put it
        (None, 3)
    """
    merged = {**DEFAULTS, **config}
    if merged["n_global_iterations"] == 0 and _is_int(merged["n_global_iterations"]):
        merged["n_global_iterations"] = None  # the original design's "not set"
    if merged["precision"] in (16, 32) and _is_int(merged["precision"]):
        merged["precision"] = str(merged["precision"])  # precision=16 on sacred's command line
    problems = []
    for key in config:
        if key in DEFAULTS:
            continue
        close = difflib.get_close_matches(key, DEFAULTS, n=1, cutoff=_TYPO_CUTOFF)
        if close:
            problems.append(
                f"unknown key {key!r} (value {config[key]!r}): did you mean {close[0]!r}?"
            )
    for key in DEFAULTS:
        problem = _check(key, merged[key])
        if problem:
            problems.append(f"{key}={merged[key]!r} {problem}")
    if problems:
        raise config_error(problems)
    return merged


def config_error(problems: list[str], footer: str = "") -> ConfigError:
    """One ``ConfigError`` listing ``problems`` (kept as its ``problems`` attribute), a line
    each, then ``footer``."""
    error = ConfigError(
        f"invalid config ({len(problems)} problem{'s' * (len(problems) > 1)}):\n  - "
        + "\n  - ".join(problems)
        + footer
    )
    error.problems = list(problems)
    return error


def plain(value: Any) -> Any:
    """``value`` as plain data (dicts, lists, str, numbers, None) for checkpoints and JSON."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
