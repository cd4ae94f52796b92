"""Runs table cost: ``python -m mlproject runs`` over a thousand generated run folders.

Writes ``--runs`` run folders into a temporary model_dir, shaped as training leaves them
(run.json with a 25-key config of which lr, seed and hidden vary; two periodic checkpoints and
best.pt with their records; an empty lock), most completed, some interrupted, failed, died
(recorded as running, lock free) or damaged (truncated run.json). Then times:

- in process: ``mlproject.__main__.main([...])`` with its output discarded, for each format
  and for a filtered, sorted table, and ``runs.read_runs`` alone (reading, no formatting);
- the whole command: ``python -m mlproject runs MODEL_DIR`` in a fresh interpreter, beside
  ``python -c "import mlproject"`` (what every command pays before reading a single run).

Medians of ``--reps`` runs after one untimed warm-up of each (the file cache is warm, as it
is when one looks at runs one just trained; a first look after a reboot reads from disk).

    python benchmarks/bench_runs.py            # 1000 runs, 5 repeats
    python benchmarks/bench_runs.py --quick    # 100 runs, 1 repeat
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mlproject import runs
from mlproject.__main__ import main as cli
from mlproject.checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    LOCK_NAME,
    RECORD_SUFFIX,
    RUN_INFO_NAME,
)

IN_PROCESS = {  # label: arguments after MODEL_DIR
    "table": [],
    "csv": ["--format", "csv"],
    "json": ["--format", "json"],
    "where+sort": ["--where", "status=completed", "--sort", "test_accuracy", "--reverse"],
}
STATUSES = ["completed"] * 16 + ["interrupted", "failed", "died", "damaged"]  # 80 % completed


def make_runs(model_dir: Path, n: int) -> None:
    """``n`` run folders as training leaves them (see the module docstring)."""
    for i in range(n):
        name = f"20260101-{i:06d}_mlp"
        folder = model_dir / name
        folder.mkdir(parents=True)
        status = STATUSES[i % len(STATUSES)]
        steps = 100 * (1 + i % 7)
        for step in (steps - 50, steps):
            write_with_record(folder / CHECKPOINT_NAME.format(step=step), step)
        write_with_record(folder / BEST_NAME, steps - 50)
        (folder / LOCK_NAME).write_text("" if status != "died" else "pid 999999 on elsewhere")
        config = {
            "n_epochs": 10, "n_global_iterations": None, "model_dir": str(model_dir),
            "device": "cpu", "tensorboard_dir": None, "log_iteration_scalars": 1,
            "log_iteration_all": "epoch", "save_iterations": 50, "prefix": "", "resume": None,
            "init_from": None, "init_from_optimizer": True, "keep_checkpoints": 2,
            "nonfinite": "error", "deterministic": False, "progress": False, "seed": i % 5,
            "data_dir": None, "n_samples": 4000, "batch_size": 64, "num_workers": 2,
            "drop_last": False, "hidden": [64, 128, 256][i % 3], "lr": [0.1, 0.03, 0.01][i % 4 % 3],
            "optim": {"name": "adam", "betas": [0.9, 0.999]},
        }  # fmt: skip
        info = {
            "name": name, "prefix": "", "model": "mlp", "config": config, "sequence": i + 1,
            "created": 1.77e9 + i, "parent": None,
            "status": "running" if status == "died" else status, "summary": None,
        }  # fmt: skip
        if status == "completed":
            info["summary"] = {
                "run_dir": str(folder), "global_step": steps, "epochs": 10,
                "benchmark_metric": "loss", "best": {"step": steps - 50, "loss": 1 / (i + 2)},
                "validation": {"loss": 1 / (i + 2), "accuracy": 0.9}, "test": {
                    "loss": 1 / (i + 3), "accuracy": 0.5 + (i % 50) / 100},
            }  # fmt: skip
        text = json.dumps(info, indent=2)
        (folder / RUN_INFO_NAME).write_text(text[: len(text) // 2] if status == "damaged" else text)


def write_with_record(path: Path, step: int) -> None:
    data = b"\0" * 256  # sizes matter, contents never read
    path.write_bytes(data)
    record = {"sha256": "0" * 64, "size": len(data), "step": step}
    path.with_name(path.name + RECORD_SUFFIX).write_text(json.dumps(record))


def time_in_process(args: list[str]) -> float:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(out):
        start = time.perf_counter()
        code = cli(args)
        seconds = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"python -m mlproject {' '.join(args)} exited {code}")
    return seconds


def time_command(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    return seconds


def time_call(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="run folders to generate")
    parser.add_argument("--reps", type=int, default=5, help="timed repeats of each")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 runs, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.reps = 100, 1
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "models"
        make_runs(model_dir, args.runs)
        rows = runs.read_runs(model_dir)
        statuses = sorted({run.values["status"] for run in rows})
        columns = runs.headers(runs.columns(rows))
        # The fresh interpreters import the same mlproject as this one.
        here = str(Path(runs.__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])),
        }
        commands = {
            "python -c 'import mlproject'": [sys.executable, "-c", "import mlproject"],
            "python -m mlproject runs": [sys.executable, "-m", "mlproject", "runs", str(model_dir)],
        }
        calls = {
            **{f"main() {label}": (lambda a=a: time_in_process(["runs", str(model_dir), *a]))
               for label, a in IN_PROCESS.items()},
            "read_runs only": lambda: time_call(lambda: runs.read_runs(model_dir)),
            **{label: (lambda c=c: time_command(c, env)) for label, c in commands.items()},
        }  # fmt: skip
        for call in calls.values():  # untimed warm-up: file cache, imports
            call()
        samples: dict[str, list[float]] = {label: [] for label in calls}
        for _ in range(args.reps):
            for label, call in calls.items():
                samples[label].append(call())
    median = {label: statistics.median(xs) for label, xs in samples.items()}
    command, imports = median["python -m mlproject runs"], median["python -c 'import mlproject'"]
    report = {
        "benchmark": "runs",
        "runs": args.runs,
        "reps": args.reps,
        "statuses": statuses,
        "columns": columns,
        "seconds_median": {label: round(s, 4) for label, s in median.items()},
        "samples_s": {label: [round(x, 4) for x in xs] for label, xs in samples.items()},
        "in_process_table_s": round(median["main() table"], 4),
        "command_s": round(command, 3),
        "import_s": round(imports, 3),
        "command_beyond_import_s": round(command - imports, 3),
        "loadavg": round(os.getloadavg()[0], 2),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print_table(report)
    print("JSON: " + json.dumps(report))
    return report


def print_table(report: dict) -> None:
    print(
        f"Runs table over {report['runs']} generated run folders: median of {report['reps']} "
        f"(load average {report['loadavg']})"
    )
    for label, seconds in report["seconds_median"].items():
        samples = " ".join(f"{x * 1000:.0f}" for x in report["samples_s"][label])
        print(f"  {label:32s} {seconds * 1000:8.1f} ms   ({samples})")
    print(
        f"  {'whole command beyond the import':32s} "
        f"{report['command_beyond_import_s'] * 1000:+8.1f} ms"
    )
    print(f"  statuses: {', '.join(report['statuses'])}")
    print(f"  columns: {', '.join(report['columns'])}")
    print(f"\ntotal {report['seconds']} s")


if __name__ == "__main__":
    main()
    sys.exit(0)
