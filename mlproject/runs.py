"""Runs table: what the run folders of a model_dir say, as rows to filter, sort and print.

Reads only what runs leave on disk: each folder's run.json, the names of its checkpoints, the
sizes their records promise, and whether its lock is held. It never loads a checkpoint, so a
thousand runs read in a fraction of a second, and a damaged folder becomes a row that says
what is wrong with it rather than an error.

A row is one dict of values by key: the columns ``run``, ``status``, ``steps``,
``best_<metric>``, ``best_step``, ``test_<metric>`` and ``problem``, and each config value
under ``config.<dotted key>`` (nested dicts are flattened: ``{"optim": {"lr": 0.1}}`` gives
``config.optim.lr``). The table shows the config keys whose values differ between the rows
shown, headed by their dotted key alone (``optim.lr``), unless that name is also a column.

``status`` is what run.json records (completed, interrupted, failed, running), ``died`` for a
run recorded as running whose lock no process holds (killed without a word), ``unknown`` for
a run.json older than the field, and ``damaged`` for a folder whose run.json is missing or
unusable. ``problem`` says what is wrong with a damaged folder, or with a checkpoint of an
otherwise readable run (best.pt or the newest checkpoint shorter than its record says).
"""

from __future__ import annotations

import csv
import ctypes
import dataclasses
import difflib
import fnmatch
import io
import json
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlproject import rundir
from mlproject.layout import BEST_NAME, CHECKPOINT_RE, LOCK_NAME, RECORD_SUFFIX, RUN_INFO_NAME
from mlproject.progress import number

try:
    import fcntl
except ImportError:  # Windows: no record locks, so a "running" run cannot be told from a dead one
    fcntl = None

COLUMNS = ("run", "status", "steps")  # every row's first columns (steps missing when unknown)
CONFIG = "config."  # prefix of config keys among a row's keys
DIED = "died"  # status of a run recorded as running whose lock no process holds
DAMAGED = "damaged"  # status of a folder whose run.json is unusable (the reason: "problem")
UNKNOWN = "unknown"  # status of a run whose run.json predates the status field
FORMATS = ("table", "csv", "json")
MAX_CELL = 40  # widest a config value gets in the table (csv and json keep every character)


class _Missing:
    """The value of a key a row does not have (printed as "-"; null in json)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclasses.dataclass
class Run:
    """One run folder as a row: ``values`` by key (see the module docstring).

    Example:
        >>> run = read_run(Path("runs/20260101-120000_mlp"))  # doctest: +SKIP
        >>> run.values["status"], run.values["steps"], run.values.get("config.lr")  # doctest: +SKIP
        ('completed', 1200, 0.01)
    """

    path: Path
    values: dict[str, Any]
    order: tuple[Any, ...]  # creation order: run.json's sequence, then created, then name
    has_config: bool  # False when run.json could not be read: no config to compare


# --- reading ------------------------------------------------------------------------------------
def read_runs(model_dir: Path | str) -> list[Run]:
    """Every run folder of ``model_dir`` as a Run, in the order the runs were created.

    A sub-folder holding none of the names a run leaves (run.json, lock, checkpoints) is not a
    run and is left out (a TensorBoard folder kept beside the runs, say); hidden ones too.

    Raises:
        FileNotFoundError, NotADirectoryError: ``model_dir`` is not a folder.

    Example:
        >>> [run.values["run"] for run in read_runs("runs")]  # doctest: +SKIP
        ['baseline_mlp', 'baseline_mlp-2']
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        kind = NotADirectoryError if model_dir.exists() else FileNotFoundError
        raise kind(
            f"model_dir {str(model_dir)!r} is not a folder"
            + (" (it is a file)" if model_dir.exists() else " (it does not exist)")
            + ": give the model_dir your runs were trained with, the folder that holds one "
            "sub-folder per run"
        )
    found = []
    with os.scandir(model_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            run = read_run(Path(entry.path))
            if run is not None:
                found.append(run)
    return sorted(found, key=lambda run: run.order)


def read_run(path: Path) -> Run | None:
    """The run folder at ``path`` as a Run (never raises for what is inside); None if not a run."""
    try:
        names = set(os.listdir(path))
    except OSError as err:
        return _damaged(path, f"folder unreadable ({err.strerror or err})", None)
    checkpoints = {int(m[1]): name for name in names if (m := CHECKPOINT_RE.match(name))}
    complete = sorted(step for step, name in checkpoints.items() if name + RECORD_SUFFIX in names)
    newest = complete[-1] if complete else None  # where a resume would start
    if RUN_INFO_NAME not in names:
        if LOCK_NAME not in names and BEST_NAME not in names and not checkpoints:
            return None
        if _lock_held(os.path.join(path, LOCK_NAME)):  # between the lock and run.json
            return _row(path, {}, "running", newest)
        return _damaged(path, f"no {RUN_INFO_NAME}", newest)
    info, why = _read_info(os.path.join(path, RUN_INFO_NAME))
    if why:
        return _damaged(path, why, newest)
    run = _from_info(path, info, newest)
    if run.values["status"] != "running":  # a live run may be between a file and its record
        # best.pt is never pruned, so a lone record means it is lost; a periodic checkpoint's
        # lone record is what a prune killed between its two deletions leaves (harmless).
        files = [BEST_NAME] if BEST_NAME + RECORD_SUFFIX in names else []
        why = _file_problem(path, files + ([checkpoints[newest]] if complete else []))
        if why:
            run.values["problem"] = why
    return run


def _read_info(path: str) -> tuple[dict[str, Any], str | None]:
    """run.json's content, or why it is unusable."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as err:
        return {}, f"{RUN_INFO_NAME} unreadable ({err.strerror or err})"
    if not text.strip():
        return {}, f"{RUN_INFO_NAME} is empty"
    try:
        info = json.loads(text)
    except UnicodeDecodeError:
        return {}, f"{RUN_INFO_NAME} is not text"
    except json.JSONDecodeError as err:
        return {}, f"{RUN_INFO_NAME} is not valid JSON (line {err.lineno} column {err.colno})"
    if not isinstance(info, dict):
        return {}, f"{RUN_INFO_NAME} holds a {type(info).__name__}, not an object"
    for key in ("config", "summary"):
        if info.get(key) is not None and not isinstance(info[key], dict):
            return {}, f"{RUN_INFO_NAME}: {key} is a {type(info[key]).__name__}, not an object"
    return info, None


def _from_info(path: Path, info: dict[str, Any], newest: int | None) -> Run:
    status = info.get("status")
    status = status if isinstance(status, str) and status else UNKNOWN
    if status == "running" and _lock_held(os.path.join(path, LOCK_NAME)) is False:
        status = DIED
    elif status == UNKNOWN and _lock_held(os.path.join(path, LOCK_NAME)):
        status = "running"
    summary = info.get("summary") or {}
    steps = summary.get("global_step")
    values: dict[str, Any] = {}
    best = summary.get("best")
    if isinstance(best, dict):
        metric = summary.get("benchmark_metric")
        if isinstance(metric, str) and _is_number(best.get(metric)):
            values[f"best_{metric}"] = best[metric]
            if _is_number(best.get("step")):
                values["best_step"] = best["step"]
    test = summary.get("test")
    for metric, value in test.items() if isinstance(test, dict) else ():
        values[f"test_{metric}"] = value
    values.update((CONFIG + key, value) for key, value in flatten(info.get("config") or {}).items())
    run = _row(path, values, status, steps if _is_number(steps) else newest)
    sequence, created = info.get("sequence"), info.get("created")
    run.order = (
        not _is_number(sequence),
        sequence if _is_number(sequence) else 0,
        created if _is_number(created) else 0,
        path.name,
    )
    return run


def _row(path: Path, values: dict[str, Any], status: str, steps: int | None) -> Run:
    fixed = {"run": path.name, "status": status, **({} if steps is None else {"steps": steps})}
    return Run(path, {**fixed, **values}, (True, 0, 0, path.name), has_config=True)


def _damaged(path: Path, why: str, steps: int | None) -> Run:
    run = _row(path, {"problem": why}, DAMAGED, steps)
    run.has_config = False
    return run


def _file_problem(path: Path, files: list[str]) -> str | None:
    """Why one of ``files`` (checkpoints with a record) is not what its record says, or None.

    Only sizes are compared (a checksum would read every byte of every checkpoint): this
    finds a truncated or missing file, not a flipped bit; a resume still verifies the checksum.
    """
    for name in files:
        file = os.path.join(path, name)  # plain strings: pathlib costs more than the reading
        try:
            with open(file + RECORD_SUFFIX, "rb") as f:
                record = json.loads(f.read())
            promised = record.get("size") if isinstance(record, dict) else None
        except (OSError, ValueError):
            return f"{name}{RECORD_SUFFIX} unreadable"
        try:
            size = os.stat(file).st_size
        except FileNotFoundError:
            return f"{name} missing (its record is there)"
        except OSError as err:
            return f"{name} unreadable ({err.strerror or err})"
        if _is_number(promised) and size != promised:
            return f"{name} is {size} bytes, its record says {promised} (truncated?)"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: ``{"a": {"b": 1}, "c": 2}`` -> ``{"a.b": 1, "c": 2}``.

    Example:
        >>> flatten({"optim": {"lr": 0.1, "betas": [0.9, 0.99]}, "seed": 3})
        {'optim.lr': 0.1, 'optim.betas': [0.9, 0.99], 'seed': 3}
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --- is a run still alive? ----------------------------------------------------------------------
class _LinuxFlock(ctypes.Structure):
    _fields_ = [
        ("l_type", ctypes.c_short), ("l_whence", ctypes.c_short),
        ("l_start", ctypes.c_int64), ("l_len", ctypes.c_int64), ("l_pid", ctypes.c_int32),
    ]  # fmt: skip


class _DarwinFlock(ctypes.Structure):
    _fields_ = [
        ("l_start", ctypes.c_int64), ("l_len", ctypes.c_int64), ("l_pid", ctypes.c_int32),
        ("l_type", ctypes.c_short), ("l_whence", ctypes.c_short),
    ]  # fmt: skip


_FLOCK = {"linux": _LinuxFlock, "darwin": _DarwinFlock}.get(sys.platform)


def _lock_held(path: str) -> bool | None:
    """Whether some process holds the record lock on ``path``; None where this cannot be told.

    Asks with F_GETLK, which tests for a lock without taking one: taking even a shared lock
    for a moment would make a run starting at that moment fail with RunLockedError.
    """
    if os.path.realpath(path) in rundir._HELD_HERE:
        # This process's own lock: F_GETLK never reports it, and closing another descriptor
        # of the file would release it.
        return True
    if fcntl is None or _FLOCK is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        query = _FLOCK(l_type=fcntl.F_WRLCK, l_whence=os.SEEK_SET, l_start=0, l_len=0, l_pid=0)
        answer = _FLOCK.from_buffer_copy(fcntl.fcntl(fd, fcntl.F_GETLK, bytes(query)))
    except OSError:  # e.g. a file system without locks
        return None
    finally:
        os.close(fd)
    return answer.l_type != fcntl.F_UNLCK


# --- choosing rows --------------------------------------------------------------------------------
def resolve_key(runs: list[Run], key: str, option: str = "--sort") -> str:
    """The row key that ``key`` names: a column, else a config key (``lr`` or ``config.lr``).

    Raises:
        ValueError: no row has that key; the message lists the closest keys.

    Example:
        >>> resolve_key(runs, "lr")  # doctest: +SKIP
        'config.lr'
    """
    known = {k for run in runs for k in run.values} | set(COLUMNS)
    for candidate in (key, CONFIG + key):
        if candidate in known:
            return candidate
    names = sorted({_display(k, known) for k in known})
    leaf = key.removeprefix(CONFIG)
    close = [n for n in names if n.endswith("." + leaf)]  # "lr" for "optim.lr"
    close += difflib.get_close_matches(leaf, [n for n in names if n not in close], n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise ValueError(
        f"{option}: unknown key {key!r}: it is neither a column nor a config key of any of "
        f"the {len(runs)} runs.{hint} The keys are: {', '.join(names)}"
    )


def matches(value: Any, wanted: str) -> bool:
    """Whether a stored ``value`` matches ``wanted``, the text after ``=`` in ``--where``.

    ``wanted`` matches a string equal to it, or a number, true, false or null equal to it read
    as JSON (``0.01`` matches 0.01 and "0.01"; ``1`` matches 1 and 1.0, never true). A
    ``wanted`` holding ``*``, ``?`` or ``[`` is also a shell-style pattern on the value's text
    (``run=*lr0.1*``). A key a row lacks matches nothing.

    Example:
        >>> matches(0.01, "0.01"), matches("0.01", "0.01"), matches(True, "1")
        (True, True, False)
    """
    if value is MISSING:
        return False
    if _equal(value, wanted):
        return True
    return any(c in wanted for c in "*?[") and fnmatch.fnmatchcase(value_text(value), wanted)


def _equal(value: Any, wanted: str) -> bool:
    if isinstance(value, str):
        return value == wanted
    try:
        parsed = json.loads(wanted)
    except ValueError:
        return False
    if isinstance(value, bool) or isinstance(parsed, bool) or value is None or parsed is None:
        return value is parsed  # true is not 1, null is not 0
    return value == parsed  # numbers by value (1 == 1.0), lists and dicts as JSON data


def select(runs: list[Run], where: Iterable[str]) -> list[Run]:
    """The runs matching every ``key=value`` of ``where`` (see ``matches``).

    Raises:
        ValueError: a condition without ``=``, or with a key no run has.

    Example:
        >>> select(read_runs("runs"), ["status=completed", "lr=0.01"])  # doctest: +SKIP
    """
    kept = runs
    for condition in where:
        key, sep, wanted = condition.partition("=")
        if not sep or not key:
            raise ValueError(
                f"--where takes key=value; got {condition!r}. Use e.g. --where lr=0.01 or "
                "--where status=completed"
            )
        if runs:  # keys are those of all the runs, also once an earlier condition kept none
            key = resolve_key(runs, key, f"--where {condition}")
            kept = [run for run in kept if matches(run.values.get(key, MISSING), wanted)]
    return kept


def sort_runs(runs: list[Run], key: str | None, reverse: bool = False) -> list[Run]:
    """``runs`` ordered by ``key`` (a column or config key; None: creation order).

    Numbers come before text, and rows lacking the key (or holding null) come last, also when
    ``reverse``; ties keep creation order.

    Example:
        >>> sort_runs(read_runs("runs"), "test_accuracy", reverse=True)  # doctest: +SKIP
    """
    runs = sorted(runs, key=lambda run: run.order)
    if key is None or not runs:
        return runs[::-1] if reverse else runs
    key = resolve_key(runs, key)
    present = [run for run in runs if run.values.get(key, MISSING) not in (MISSING, None)]
    absent = [run for run in runs if run.values.get(key, MISSING) in (MISSING, None)]
    return sorted(present, key=lambda run: _sort_key(run.values[key]), reverse=reverse) + absent


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if _is_number(value):
        return (0, value if not math.isnan(value) else math.inf)
    return (1, value_text(value))


# --- columns and text -----------------------------------------------------------------------------
def differing_keys(runs: list[Run]) -> list[str]:
    """The config keys (``config.<dotted key>``) whose values are not the same in every run.

    A key some runs lack differs; runs whose run.json could not be read are not compared.

    Example:
        >>> differing_keys(read_runs("runs"))  # doctest: +SKIP
        ['config.lr', 'config.seed']
    """
    compared = [run for run in runs if run.has_config]
    seen: dict[str, set[Any]] = {}
    count: dict[str, int] = {}
    for run in compared:
        for key, value in run.values.items():
            if key.startswith(CONFIG):
                seen.setdefault(key, set()).add(_identity(value))
                count[key] = count.get(key, 0) + 1
    return sorted(k for k, ids in seen.items() if len(ids) > 1 or count[k] < len(compared))


def _identity(value: Any) -> Any:
    """A hashable stand-in equal for equal JSON values: 1, 1.0 and true are three values."""
    if isinstance(value, str | int | float | bool) or value is None:
        return (type(value), value)
    return json.dumps(value, sort_keys=True, default=str)


def columns(runs: list[Run]) -> list[str]:
    """The keys the table shows, in order: run, status, steps, the differing config keys,
    best_<metric>, best_step, test_<metric>, and problem when a run has one.

    Example:
        >>> columns(read_runs("runs"))  # doctest: +SKIP
        ['run', 'status', 'steps', 'config.lr', 'best_loss', 'best_step', 'test_loss']
    """
    present = {key for run in runs for key in run.values}
    best = sorted(k for k in present if k.startswith("best_") and k != "best_step")
    test = sorted(k for k in present if k.startswith("test_"))
    step = ["best_step"] if "best_step" in present else []
    problem = ["problem"] if "problem" in present else []
    return [*COLUMNS, *differing_keys(runs), *best, *step, *test, *problem]


def headers(keys: list[str]) -> list[str]:
    """Each key as the table heads it: a config key without ``config.`` unless that is taken.

    Example:
        >>> headers(["run", "steps", "config.lr", "config.steps"])
        ['run', 'steps', 'lr', 'config.steps']
    """
    return [_display(key, set(keys)) for key in keys]


def _display(key: str, keys: set[str]) -> str:
    short = key.removeprefix(CONFIG)
    return short if short == key or short not in keys else key


def value_text(value: Any) -> str:
    """A value as ``--where`` patterns and csv see it: text as is, anything else as JSON.

    Example:
        >>> value_text("adam"), value_text(0.01), value_text(True), value_text(None)
        ('adam', '0.01', 'true', 'null')
    """
    if value is MISSING:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _cell(key: str, value: Any) -> str:
    if value is MISSING:
        return "-"
    if not key.startswith(CONFIG):
        return number(value)  # a metric: 4 significant digits, as training prints it
    text = value_text(value)  # exact, as --where takes it; long paths and lists shortened
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def format_table(runs: list[Run]) -> str:
    """An aligned text table: a header line, then one line per run; numbers right-aligned.

    Example:
        >>> print(format_table(read_runs("runs")))  # doctest: +SKIP
        run            status     steps  lr    best_loss  best_step  test_accuracy  test_loss
        baseline_mlp   completed   1200  0.01     0.2134       1100         0.9512     0.2210
    """
    keys = columns(runs)
    grid = [headers(keys)] + [[_cell(k, run.values.get(k, MISSING)) for k in keys] for run in runs]
    widths = [max(len(row[i]) for row in grid) for i in range(len(keys))]
    present = [[run.values[k] for run in runs if k in run.values] for k in keys]
    numeric = [all(_is_number(value) for value in values) for values in present]
    lines = []
    for row in grid:
        cells = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(row, widths, numeric)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def format_csv(runs: list[Run]) -> str:
    """CSV with a header row: every value in full (JSON for non-text), empty when missing.

    Example:
        >>> print(format_csv(read_runs("runs")), end="")  # doctest: +SKIP
        run,status,steps,lr,best_loss,best_step,test_accuracy,test_loss
        baseline_mlp,completed,1200,0.01,0.21343,1100,0.95121,0.22101
    """
    keys = columns(runs)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers(keys))
    for run in runs:
        writer.writerow([value_text(run.values.get(k, MISSING)) for k in keys])
    return out.getvalue()


def format_json(runs: list[Run]) -> str:
    """A JSON list with one object per run, keyed by the table's headers; missing is null.

    Example:
        >>> json.loads(format_json(read_runs("runs")))[0]["status"]  # doctest: +SKIP
        'completed'
    """
    keys = columns(runs)
    names = headers(keys)
    rows = [
        {name: _json_value(run.values.get(key, MISSING)) for name, key in zip(names, keys)}
        for run in runs
    ]
    return json.dumps(rows, indent=2, default=str) + "\n"


def _json_value(value: Any) -> Any:
    if value is MISSING:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN and inf are not JSON
    return value


def render(runs: list[Run], fmt: str) -> str:
    """``runs`` as text in ``fmt``, one of FORMATS (what the command line prints).

    Example:
        >>> rows = select(read_runs("runs"), ["status=completed"])  # doctest: +SKIP
        >>> print(render(rows, "csv"), end="")  # doctest: +SKIP
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    return {"table": format_table, "csv": format_csv, "json": format_json}[fmt](runs)
