"""Logging cost per scalar: mlproject's TensorBoard sink against tensorboardX and the old writer.

Each writer logs ``--n`` float scalars, runs interleaved across the writers, medians reported:

  sink            ``TensorBoardSink.write`` of batches of B scalars, as the loop hands them over
                  at each periodic flush; ``+ flush`` adds ``flush()`` (fsync) after each batch,
                  as before a checkpoint. B = 1000 (a few seconds of logging) and B = 2 (a
                  checkpoint after every logged step: the fsync dominates).
  run_writer      ``TensorBoardSink.writer.add_scalar`` one call per scalar (a model's writer).
  tensorboardx    tensorboardX's ``SummaryWriter.add_scalar``, one call per scalar.
  before          the ``EventWriter`` of commit f3d9d41 (hand-written TFRecord framing), loaded
                  from ``git show`` into a temporary folder: ``add_scalar`` per scalar,
                  ``flush()`` every B; skipped with a note outside a git checkout. With the
                  native crc32c it now finds installed, and (``before_numpy``) with the numpy
                  CRC32C it used when crc32c was no dependency.

"hot" is the time of the calls alone; "total" adds what it takes until every event is durable
in the file (``flush()``; tensorboardX: ``close()``, which drains its writer thread). The loop
itself only appends to a list per scalar (no host sync): that in-loop cost is bench_loop.py's.

    python benchmarks/bench_logging.py            # 10000 scalars, 5 repetitions
    python benchmarks/bench_logging.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tensorboardX import SummaryWriter

from mlproject.sinks import COMPLETED, RunInfo, Scalar
from mlproject.tensorboard import TensorBoardSink

TAG = "train/loss"
BEFORE_COMMIT = "f3d9d41"
REPO = Path(__file__).resolve().parent.parent


def load_before(folder: Path, name: str = "tensorboard_before") -> tuple[object | None, str]:
    """The old mlproject.tensorboard module, or None and why not."""
    try:
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{BEFORE_COMMIT}:mlproject/tensorboard.py"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        return None, f"skipped: git show {BEFORE_COMMIT} failed ({error})"
    path = folder / f"{name}.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, f"EventWriter of commit {BEFORE_COMMIT}"


# A case: factory(folder, values) -> (call(i), flush_due(i) -> None, finish(), cleanup()).
Case = tuple[str, str, Callable[[Path, list[float]], tuple]]


def sink_case(batch: int, flush_each: bool) -> Callable:
    def factory(folder: Path, values: list[float]) -> tuple:
        sink = TensorBoardSink(folder)
        sink.open(RunInfo("run", folder, {"lr": 0.1}), None)
        scalars = [Scalar(TAG, v, i, 1.7e9 + i) for i, v in enumerate(values)]

        def call(i: int) -> None:  # i is the first scalar of a batch
            sink.write(scalars[i : i + batch])
            if flush_each:
                sink.flush()

        return call, batch, sink.flush, lambda: sink.close(COMPLETED)

    return factory


def run_writer_case(folder: Path, values: list[float]) -> tuple:
    sink = TensorBoardSink(folder)
    sink.open(RunInfo("run", folder, {"lr": 0.1}), None)
    writer = sink.writer

    def call(i: int) -> None:
        writer.add_scalar(TAG, values[i], i)

    return call, 1, sink.flush, lambda: sink.close(COMPLETED)


def tensorboardx_case(folder: Path, values: list[float]) -> tuple:
    writer = SummaryWriter(str(folder))

    def call(i: int) -> None:
        writer.add_scalar(TAG, values[i], i)

    return call, 1, writer.close, lambda: None


def before_case(module: object, batch: int) -> Callable:
    def factory(folder: Path, values: list[float]) -> tuple:
        writer = module.EventWriter(folder, flush_secs=float("inf"))

        def call(i: int) -> None:  # i is the first scalar of a batch
            for j in range(i, min(i + batch, len(values))):
                writer.add_scalar(TAG, values[j], j, 1.7e9 + j)
            writer.flush()

        return call, batch, writer.flush, writer.close

    return factory


def cases(before: object | None, before_numpy: object | None) -> list[Case]:
    """The writers, in the order they run and print; tensorboardX is the ratios' base."""
    out: list[Case] = [
        ("tensorboardx", "tensorboardX SummaryWriter.add_scalar", tensorboardx_case),
        ("sink_1000", "TensorBoardSink.write, 1000 per batch", sink_case(1000, False)),
        ("sink_flush_1000", "TensorBoardSink.write + flush, 1000 per batch", sink_case(1000, True)),
        ("sink_flush_2", "TensorBoardSink.write + flush, 2 per batch", sink_case(2, True)),
        ("run_writer", "TensorBoardSink.writer.add_scalar", run_writer_case),
    ]
    if before is not None:
        out += [
            ("before_flush_1000", "before: EventWriter + flush, 1000 per flush",
             before_case(before, 1000)),
            ("before_flush_2", "before: EventWriter + flush, 2 per flush", before_case(before, 2)),
            ("before_numpy_1000", "before, numpy CRC: + flush, 1000 per flush",
             before_case(before_numpy, 1000)),
        ]  # fmt: skip
    return out


def time_case(factory: Callable, values: list[float], folder: Path) -> tuple[float, float]:
    """Seconds for the calls alone, and for the calls plus making everything durable."""
    folder.mkdir(parents=True)
    call, stride, finish, cleanup = factory(folder, values)
    gc.collect()
    start = time.perf_counter()
    for i in range(0, len(values), stride):
        call(i)
    hot = time.perf_counter() - start
    finish()
    total = time.perf_counter() - start
    cleanup()
    return hot, total


def measure(group: list[Case], values: list[float], reps: int, new_folder) -> dict:
    for _, _, factory in group:  # warm-up: imports, first-call paths, per-tag templates
        time_case(factory, values[:200], new_folder())
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in group}
    for _ in range(reps):
        for name, _, factory in group:
            samples[name].append(time_case(factory, values, new_folder()))
    n, out, base = len(values), {}, None
    for name, label, _ in group:
        hot = statistics.median(h for h, _ in samples[name]) / n * 1e6
        total = statistics.median(t for _, t in samples[name]) / n * 1e6
        base = base or total
        out[name] = {
            "label": label,
            "hot_us": round(hot, 2),
            "total_us": round(total, 2),
            "total_vs_tensorboardx": round(total / base, 3),
            "samples_total_us": [round(t / n * 1e6, 2) for _, t in samples[name]],
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000, help="scalars per run")
    parser.add_argument("--reps", type=int, default=5, help="timed runs of each writer")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1000 scalars, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.reps = 1000, 1
    values = [((i * 7919) % 1000) / 1000 for i in range(args.n)]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_logging_") as tmp:
        before, before_note = load_before(Path(tmp))
        # As it ran when crc32c was no dependency: short records checksummed in numpy batches.
        before_numpy, _ = load_before(Path(tmp), "tensorboard_before_numpy")
        if before_numpy is not None:
            before_numpy._NATIVE_CRC = False
        counter = iter(range(10**9))

        def new_folder() -> Path:
            return Path(tmp) / f"w{next(counter)}"

        report = {
            "benchmark": "logging",
            "n": args.n,
            "reps": args.reps,
            "before": before_note,
            "per_scalar": measure(cases(before, before_numpy), values, args.reps, new_folder),
            "loadavg": round(os.getloadavg()[0], 2),
        }
    report["seconds"] = round(time.perf_counter() - started, 1)
    print_table(report)
    print("JSON: " + json.dumps(report))
    return report


def print_table(report: dict) -> None:
    print(
        f"Logging cost: {report['n']} float scalars per run, median of {report['reps']} "
        f"interleaved runs (load average {report['loadavg']}); before = {report['before']}"
    )
    print("hot = the calls alone; total = until every event is durable in the file")
    print(f"\n{'µs per scalar':52s} {'hot':>9s} {'total':>9s}  total/tensorboardX")
    for row in report["per_scalar"].values():
        print(
            f"  {row['label']:50s} {row['hot_us']:9.2f} {row['total_us']:9.2f}  "
            f"{row['total_vs_tensorboardx']:.3f}x"
        )
    print(f"\ntotal {report['seconds']} s")


if __name__ == "__main__":
    main()
    sys.exit(0)
