"""Distributed cost: a step of 2 processes against 1 under torchrun, the same global batch.

The same MLP (784-256-10, SGD) is trained by mlproject under ``torchrun`` with one process
(batch B) and with two (batch B/2 each: the same global batches, see ``mlproject.shard``),
on the CPU with gloo, or on GPUs with nccl where there are two. Each process times its own
loop from its first to its last step; the table gives medians over interleaved repetitions
and the time per global step. On one machine's CPU two processes share its cores, so the
figure to read is the ratio: what gradient synchronisation costs per step.

    python benchmarks/bench_distributed.py            # 300 steps, 3 repetitions
    python benchmarks/bench_distributed.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FEATURES, CLASSES, HIDDEN = 784, 10, 256


def worker(args: argparse.Namespace) -> None:
    """One torchrun process: train, then report this process's loop time."""
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from mlproject import DatasetFactory, MLProject, ProxyModel

    world = int(os.environ["WORLD_SIZE"])
    g = torch.Generator().manual_seed(0)
    n = args.global_batch * 50
    data = TensorDataset(torch.randn(n, FEATURES, generator=g), torch.randint(0, CLASSES, (n,)))

    class Timed(ProxyModel):
        def on_train_begin(self) -> None:
            self.started = time.perf_counter()

        def on_train_end(self) -> None:
            self.seconds = time.perf_counter() - self.started

    class Bench(MLProject):
        @staticmethod
        def get_dataset_factory(config):
            per_process = args.global_batch // world
            return DatasetFactory(train_set=data, loader_kwargs={"batch_size": per_process})

        @staticmethod
        def get_model(config):
            torch.manual_seed(1)
            net = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))
            opt = torch.optim.SGD(net.parameters(), lr=0.05)
            return Timed(net, opt, loss=nn.CrossEntropyLoss(), name="bench", train_accuracy=False)

    project = Bench({
        "model_dir": args.model_dir, "n_global_iterations": args.steps, "progress": False,
        "save_iterations": 10**9, "validate_iterations": 10**9, "seed": 0,
    })  # fmt: skip
    project.train()
    record = {"rank": project.world.rank, "seconds": project.model.seconds}
    Path(args.report).with_suffix(f".{project.world.rank}.json").write_text(json.dumps(record))


def launch(nproc: int, args: argparse.Namespace, tmp: Path) -> float:
    """Seconds per global step of one torchrun run (the slowest process)."""
    report = tmp / f"report-{nproc}-{time.monotonic_ns()}"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", __file__, "--worker", "--steps", str(args.steps),
        "--global-batch", str(args.global_batch), "--model-dir", str(tmp / "runs"),
        "--report", str(report),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun failed:\n{done.stderr[-3000:]}")
    seconds = [json.loads(report.with_suffix(f".{r}.json").read_text())["seconds"]
               for r in range(nproc)]  # fmt: skip
    return max(seconds) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.steps, args.reps, args.global_batch = 20, 1, 32
    per_step: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.reps):
            for nproc in (1, 2):
                per_step[nproc].append(launch(nproc, args, Path(tmp)))
    one, two = statistics.median(per_step[1]), statistics.median(per_step[2])
    print(f"torchrun on {os.cpu_count()} CPU cores, MLP {FEATURES}-{HIDDEN}-{CLASSES}, global "
          f"batch {args.global_batch}, {args.steps} steps, median of {args.reps}")  # fmt: skip
    print(f"  1 process , batch {args.global_batch:4}: {one * 1e6:9.0f} µs per global step")
    print(f"  2 processes, batch {args.global_batch // 2:4}: {two * 1e6:9.0f} µs per global step")
    print(f"  ratio 2/1: {two / one:.2f}")
    report = {"benchmark": "distributed", "us_per_step": {"1": one * 1e6, "2": two * 1e6},
              "ratio": two / one, "steps": args.steps, "global_batch": args.global_batch,
              "load": os.getloadavg()[0]}  # fmt: skip
    print("JSON: " + json.dumps(report))


if __name__ == "__main__":
    main()
