"""Logging cost: tensorboardX's SummaryWriter against mlproject's Recorder and EventWriter.

Two measures, each with runs interleaved across the writers and medians reported:

  per scalar      one float scalar per call, ``--n`` calls;
  per logged step what one logged training step costs: a loss and an accuracy that are 0-d
                  tensors (as ``ProxyModel.train_batch`` returns them) plus the per-step call
                  each writer needs (``maybe_flush``), ``--n`` steps.

"hot" is the time spent in the calls alone (what the training thread pays per step); "total"
adds what it takes until every event is in the file (tensorboardX: ``close()``, which drains its
writer thread's queue; mlproject: ``flush()``, which also fsyncs). Construction is not timed.

    python benchmarks/bench_logging.py            # 10000 scalars/steps, 5 repetitions
    python benchmarks/bench_logging.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tensorboardX import SummaryWriter

from mlproject.recorder import Recorder

try:
    from mlproject.tensorboard import EventWriter
except ImportError as error:  # the module is younger than this benchmark
    EventWriter = None
    EVENT_WRITER_NOTE = f"skipped: mlproject.tensorboard.EventWriter is not importable ({error})"
else:
    EVENT_WRITER_NOTE = "mlproject.tensorboard.EventWriter"

TAG = "train/loss"


class Case:
    """A writer under test: ``setup(folder)`` builds it untimed, ``call(i)`` logs item ``i``,
    ``finish()`` writes everything out, ``cleanup()`` closes it untimed."""

    def __init__(self, name: str, label: str, factory: Callable[[Path, list], tuple]):
        self.name, self.label, self.factory = name, label, factory


def tbx_scalar(folder: Path, data: list) -> tuple:
    writer = SummaryWriter(str(folder))
    floats = data[0]

    def call(i: int) -> None:
        writer.add_scalar(TAG, floats[i], i)

    return call, writer.close, lambda: None


def event_writer_scalar(folder: Path, data: list) -> tuple:
    writer = EventWriter(folder)
    floats = data[0]

    def call(i: int) -> None:
        writer.add_scalar(TAG, floats[i], i)

    return call, writer.flush, writer.close


def _recorder(folder: Path) -> Recorder:
    recorder = Recorder(str(folder / "tb"), run=None, progress=False)
    run_dir = folder / "run"
    run_dir.mkdir()
    recorder.open(run_dir, {"prefix": "", "model": "bench"})
    return recorder


def recorder_scalar(kind: str) -> Callable[[Path, list], tuple]:
    def factory(folder: Path, data: list) -> tuple:
        recorder = _recorder(folder)
        values = data[0] if kind == "float" else data[1]

        def call(i: int) -> None:
            recorder.log("train", {"loss": values[i]}, i)

        return call, recorder.flush, recorder.close

    return factory


def tbx_step(folder: Path, data: list) -> tuple:
    writer = SummaryWriter(str(folder))
    losses, accuracies = data[1], data[2]

    def call(i: int) -> None:
        writer.add_scalar("train/loss", losses[i].item(), i)
        writer.add_scalar("train/accuracy", accuracies[i].item(), i)

    return call, writer.close, lambda: None


def event_writer_step(folder: Path, data: list) -> tuple:
    writer = EventWriter(folder)
    losses, accuracies = data[1], data[2]

    def call(i: int) -> None:
        writer.add_scalar("train/loss", losses[i].item(), i)
        writer.add_scalar("train/accuracy", accuracies[i].item(), i)
        writer.maybe_flush()

    return call, writer.flush, writer.close


def recorder_step(folder: Path, data: list) -> tuple:
    recorder = _recorder(folder)
    losses, accuracies = data[1], data[2]

    def call(i: int) -> None:
        recorder.log("train", {"loss": losses[i], "accuracy": accuracies[i]}, i)
        recorder.maybe_flush()

    return call, recorder.flush, recorder.close


def cases() -> tuple[list[Case], list[Case]]:
    """The writers of each measure, tensorboardX first (the ratios' base)."""
    per_scalar = [
        Case("tensorboardx", "tensorboardX add_scalar(float)", tbx_scalar),
        Case("event_writer", "EventWriter.add_scalar(float)", event_writer_scalar),
        Case("recorder_float", "Recorder.log({loss: float})", recorder_scalar("float")),
        Case("recorder_tensor", "Recorder.log({loss: 0-d tensor})", recorder_scalar("tensor")),
    ]
    per_step = [
        Case("tensorboardx", "tensorboardX add_scalar(.item()) x2", tbx_step),
        Case("event_writer", "EventWriter.add_scalar(.item()) x2 + maybe_flush", event_writer_step),
        Case("recorder", "Recorder.log({loss, accuracy: tensors}) + maybe_flush", recorder_step),
    ]
    if EventWriter is None:
        per_scalar = [c for c in per_scalar if c.name != "event_writer"]
        per_step = [c for c in per_step if c.name != "event_writer"]
    return per_scalar, per_step


def time_case(case: Case, n: int, data: list, folder: Path) -> tuple[float, float]:
    """Seconds for the n calls alone, and for the calls plus writing everything out."""
    folder.mkdir(parents=True)
    call, finish, cleanup = case.factory(folder, data)
    gc.collect()
    start = time.perf_counter()
    for i in range(n):
        call(i)
    hot = time.perf_counter() - start
    finish()
    total = time.perf_counter() - start
    cleanup()
    return hot, total


def measure(group: list[Case], n: int, reps: int, data: list, new_folder) -> dict:
    for case in group:  # warm-up: first-call paths, imports, header caches
        time_case(case, min(n, 200), data, new_folder())
    samples: dict[str, list[tuple[float, float]]] = {c.name: [] for c in group}
    for _ in range(reps):
        for case in group:
            samples[case.name].append(time_case(case, n, data, new_folder()))
    out = {}
    base = None
    for case in group:
        hot = statistics.median(h for h, _ in samples[case.name]) / n * 1e6
        total = statistics.median(t for _, t in samples[case.name]) / n * 1e6
        base = base or (hot, total)
        out[case.name] = {
            "label": case.label,
            "hot_us": round(hot, 2),
            "total_us": round(total, 2),
            "total_vs_tensorboardx": round(total / base[1], 3),
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000, help="scalars (or steps) per run")
    parser.add_argument("--reps", type=int, default=5, help="timed runs of each writer")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1000 calls, 1 repetition")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.reps = 1000, 1
    g = torch.Generator().manual_seed(0)
    losses = list(torch.rand(args.n, generator=g).unbind())  # 0-d tensors, as a loss is
    accuracies = list(torch.rand(args.n, generator=g).unbind())
    data = [[x.item() for x in losses], losses, accuracies]
    per_scalar, per_step = cases()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_logging_") as tmp:
        counter = iter(range(10**9))

        def new_folder() -> Path:
            return Path(tmp) / f"w{next(counter)}"

        report = {
            "benchmark": "logging",
            "n": args.n,
            "reps": args.reps,
            "event_writer": EVENT_WRITER_NOTE,
            "per_scalar": measure(per_scalar, args.n, args.reps, data, new_folder),
            "per_step": measure(per_step, args.n, args.reps, data, new_folder),
            "loadavg": round(os.getloadavg()[0], 2),
        }
    report["seconds"] = round(time.perf_counter() - started, 1)
    print_table(report)
    print("JSON: " + json.dumps(report))
    return report


def print_table(report: dict) -> None:
    print(
        f"Logging cost: {report['n']} calls per run, median of {report['reps']} interleaved runs "
        f"(load average {report['loadavg']}); {report['event_writer']}"
    )
    print("hot = the calls alone; total = until every event is in the file (flush/close)")
    for title, key, unit in (
        ("per scalar", "per_scalar", "µs/scalar"),
        ("per logged step (loss + accuracy)", "per_step", "µs/step"),
    ):
        print(f"\n{title:56s} {'hot':>9s} {'total':>9s}  total/tensorboardX   ({unit})")
        for row in report[key].values():
            print(
                f"  {row['label']:54s} {row['hot_us']:9.2f} {row['total_us']:9.2f}  "
                f"{row['total_vs_tensorboardx']:.3f}x"
            )
    print(f"\ntotal {report['seconds']} s")


if __name__ == "__main__":
    main()
    sys.exit(0)
