"""Loop overhead: mlproject's training loop against a hand-written PyTorch loop (and Lightning).

The same network (same seed, so the same initial weights), the same in-memory batches in the
same order and the same SGD optimizer are trained by:

  (a) a hand-written loop that logs the loss with tensorboardX ``add_scalar`` every step,
  (b) the same loop without logging,
  (c) mlproject (``ProxyModel``, ``log_iteration_scalars=1``),
  (d) PyTorch Lightning (``self.log`` every step), when ``lightning`` is importable.

Runs are interleaved (a c b d a c b d ...) in one process so that the ratios hold on a noisy
machine; the table gives medians. Only the training loop is timed: from the first step to the
last scalar written, construction and start-up excluded. The script checks that mlproject
ends with exactly (a)'s loss and weights.

    python benchmarks/bench_loop.py            # 2000 steps, 5 repetitions (about 2 minutes)
    python benchmarks/bench_loop.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from tensorboardX import SummaryWriter
from torch import nn

from mlproject import DatasetFactory, MLProject, ProxyModel

BATCH_SIZE = 128
FEATURES = 784
CLASSES = 10
LR = 0.05
SEED = 1234
# Far beyond any run here: no periodic checkpoint is written inside the timed loop.
SAVE_ITERATIONS = 10**9
MODELS = ("tiny", "mlp")
VARIANTS = ("hand_log", "mlproject", "hand_nolog", "lightning")  # the interleaving order
LABELS = {
    "hand_log": "(a) hand-written + tensorboardX",
    "hand_nolog": "(b) hand-written, no logging",
    "mlproject": "(c) mlproject",
    "lightning": "(d) Lightning",
}


def build_net(kind: str, seed: int) -> nn.Module:
    """The benchmark network, initialised from ``seed`` alone."""
    torch.manual_seed(seed)
    if kind == "tiny":
        return nn.Linear(FEATURES, CLASSES)
    return nn.Sequential(nn.Linear(FEATURES, 256), nn.ReLU(), nn.Linear(256, CLASSES))


def make_batches(n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        x = torch.randn(BATCH_SIZE, FEATURES, generator=g)
        batches.append((x, torch.randint(0, CLASSES, (BATCH_SIZE,), generator=g)))
    return batches


class Result:
    """One timed run: seconds for the loop, the last loss, the final weights."""

    def __init__(self, seconds: float, loss: float, weights: list[torch.Tensor], extra: float = 0):
        self.seconds, self.loss, self.weights, self.extra = seconds, loss, weights, extra


def _weights(net: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


# --- (a) and (b): the hand-written loop ---------------------------------------------------------
def run_hand(kind: str, batches: list, steps: int, logdir: Path | None) -> Result:
    net = build_net(kind, SEED)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    writer = SummaryWriter(str(logdir)) if logdir is not None else None
    n = len(batches)
    start = time.perf_counter()
    for step in range(steps):
        x, y = batches[step % n]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        if writer is not None:
            writer.add_scalar("train/loss", loss.item(), step + 1)
    if writer is not None:
        writer.close()  # flush() alone leaves the writer thread's queue unwritten
    seconds = time.perf_counter() - start
    return Result(seconds, loss.item(), _weights(net))


# --- (c): mlproject -----------------------------------------------------------------------------
def run_mlproject(kind: str, batches: list, steps: int, root: Path) -> Result:
    class TimedModel(ProxyModel):
        def on_train_begin(self) -> None:
            self.started = time.perf_counter()

    class BenchProject(MLProject):
        @staticmethod
        def get_dataset_factory(config):
            return DatasetFactory(train_loader=batches)

        @staticmethod
        def get_model(config):
            net = build_net(kind, SEED)
            opt = torch.optim.SGD(net.parameters(), lr=LR)
            # train_accuracy=False: log the loss only, the same work as loops (a) and (d)
            return TimedModel(net, opt, loss=nn.CrossEntropyLoss(), name=kind, train_accuracy=False)

        def end_training(self) -> None:
            # The last scalars reach the event file here; the end-of-run checkpoint that
            # follows is not loop overhead and is reported apart.
            self.logger.flush()
            self.stopped = time.perf_counter()
            super().end_training()

    config = {
        "model_dir": str(root / "runs"),
        "tensorboard_dir": str(root / "tb"),
        "n_global_iterations": steps,
        "log_iteration_scalars": 1,
        "save_iterations": SAVE_ITERATIONS,
        "progress": False,
        "seed": SEED,
    }
    project = BenchProject(config)
    called = time.perf_counter()
    project.train()
    returned = time.perf_counter()
    model = project.model
    loop = project.stopped - model.started
    losses = _train_losses(root / "tb" / project.run_dir.name)
    if len(losses) != steps:
        raise RuntimeError(f"mlproject logged {len(losses)} train/loss values, not {steps}")
    return Result(loop, losses[-1][1], _weights(model.net), extra=(returned - called) - loop)


def _train_losses(logdir: Path) -> list[tuple[int, float]]:
    """(step, value) of train/loss, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars("train/loss")]


# --- (d): Lightning -----------------------------------------------------------------------------
def lightning_status() -> tuple[object | None, str]:
    try:
        import lightning
    except ImportError:
        return None, "skipped: lightning is not installed (pip install -e '.[bench]')"
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return lightning, f"lightning {lightning.__version__}"


def run_lightning(lightning, kind: str, batches: list, steps: int, root: Path) -> Result:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    class LitModel(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = build_net(kind, SEED)
            self.loss_fn = nn.CrossEntropyLoss()

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = self.loss_fn(self.net(x), y)
            self.log("train/loss", loss)
            self.last_loss = loss.detach()
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR)

    class Clock(pl.Callback):
        def on_train_start(self, trainer, module) -> None:
            self.started = time.perf_counter()

    class Loader:  # Lightning reads a bare list as a list of loaders: wrap it as one loader
        def __iter__(self):
            return iter(batches)

        def __len__(self) -> int:
            return len(batches)

    clock = Clock()
    module = LitModel()
    trainer = pl.Trainer(
        max_steps=steps, max_epochs=-1, accelerator="cpu", devices=1,
        logger=TensorBoardLogger(str(root), name="lightning"), log_every_n_steps=1,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, callbacks=[clock],
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dataloaders=Loader())
    seconds = time.perf_counter() - clock.started  # includes the logger's final flush
    return Result(seconds, module.last_loss.item(), _weights(module.net))


# --- driver -------------------------------------------------------------------------------------
def run_variant(variant: str, kind: str, batches: list, steps: int, root: Path, lightning):
    gc.collect()
    root.mkdir(parents=True)
    if variant == "hand_log":
        return run_hand(kind, batches, steps, root)
    if variant == "hand_nolog":
        return run_hand(kind, batches, steps, None)
    if variant == "mlproject":
        return run_mlproject(kind, batches, steps, root)
    return run_lightning(lightning, kind, batches, steps, root)


def _f32(x: float) -> float:
    return torch.tensor(x, dtype=torch.float32).item()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps per run")
    parser.add_argument("--reps", type=int, default=5, help="timed runs of each variant")
    parser.add_argument("--batches", type=int, default=100, help="distinct batches, cycled")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: tiny,mlp")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--lightning",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run (d) when lightning is installed (default: yes, except with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 100 steps, 1 repetition, no Lightning"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.reps, args.batches = 100, 1, 10
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {list(MODELS)}")

    if args.lightning is None:
        args.lightning = not args.quick
    if args.lightning:
        lightning, lightning_note = lightning_status()
    else:
        lightning, lightning_note = None, "skipped: --no-lightning or --quick (add --lightning)"
    variants = [v for v in VARIANTS if v != "lightning" or lightning is not None]
    batches = make_batches(args.batches, SEED + 1)
    tmp = tempfile.TemporaryDirectory(prefix="bench_loop_")
    counter = iter(range(10**9))

    def fresh() -> Path:
        return Path(tmp.name) / f"run{next(counter)}"

    report: dict = {
        "benchmark": "loop",
        "steps": args.steps,
        "reps": args.reps,
        "batch_size": BATCH_SIZE,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": lightning_note,
        "save_iterations": SAVE_ITERATIONS,
        "models": {},
    }
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with tmp:
        for kind in models:
            warm = min(args.steps, 20 if args.quick else 100)
            for variant in variants:  # warm-up: imports, first-call paths, allocator
                run_variant(variant, kind, batches, warm, fresh(), lightning)
            results: dict[str, list[Result]] = {v: [] for v in variants}
            for _ in range(args.reps):
                for variant in variants:
                    results[variant].append(
                        run_variant(variant, kind, batches, args.steps, fresh(), lightning)
                    )
            report["models"][kind] = summarise(results, args.steps)
    report["seconds"] = round(time.perf_counter() - started, 1)
    # Other processes on this machine disturb timings; a load above the core count says so.
    report["loadavg"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print_table(report)
    print("JSON: " + json.dumps(report))
    return report


def summarise(results: dict[str, list], steps: int) -> dict:
    us = {v: [r.seconds / steps * 1e6 for r in rs] for v, rs in results.items()}
    med = {v: statistics.median(xs) for v, xs in us.items()}
    a, c = results["hand_log"][0], results["mlproject"][0]
    out = {
        "us_per_step": {v: round(m, 1) for v, m in med.items()},
        "samples_us": {v: [round(x, 1) for x in xs] for v, xs in us.items()},
        "mlproject_vs_hand_log": round(med["mlproject"] / med["hand_log"], 3),
        "mlproject_vs_hand_nolog": round(med["mlproject"] / med["hand_nolog"], 3),
        "hand_log_vs_hand_nolog": round(med["hand_log"] / med["hand_nolog"], 3),
        "mlproject_fixed_ms": round(
            statistics.median(r.extra for r in results["mlproject"]) * 1e3, 1
        ),
        "loss_hand_log": a.loss,
        "loss_mlproject": c.loss,
        # The event file holds float32, so (a)'s loss is compared as float32: an exact match.
        "loss_match": all(_f32(a.loss) == r.loss for r in results["mlproject"]),
        "weights_match": all(
            all(torch.equal(p, q) for p, q in zip(a.weights, r.weights))
            for r in results["mlproject"]
        ),
    }
    if "lightning" in results:
        out["lightning_vs_hand_log"] = round(med["lightning"] / med["hand_log"], 3)
        out["loss_lightning"] = results["lightning"][0].loss
        out["lightning_loss_match"] = results["lightning"][0].loss == a.loss
    return out


def print_table(report: dict) -> None:
    print(
        f"Loop overhead: {report['steps']} steps/run, batch {report['batch_size']}, "
        f"{report['reps']} interleaved runs per variant, {report['threads']} torch threads, "
        f"torch {report['torch']}; {report['lightning']}"
    )
    print(
        f"mlproject: ProxyModel(train_accuracy=False), log_iteration_scalars=1 (logs the loss), "
        f"save_iterations={report['save_iterations']} (no checkpoint inside the timed loop; "
        "the end-of-run checkpoint, folder and lock are 'fixed ms', not timed per step)"
    )
    for kind, r in report["models"].items():
        print(f"\n[{kind}]  median µs/step (each run)")
        for variant, us in r["us_per_step"].items():
            samples = " ".join(f"{x:.0f}" for x in r["samples_us"][variant])
            print(f"  {LABELS[variant]:34s} {us:9.1f}   ({samples})")
        print(f"  c/a  mlproject / hand-written logging   {r['mlproject_vs_hand_log']:.3f}x")
        print(f"  c/b  mlproject / hand-written no log    {r['mlproject_vs_hand_nolog']:.3f}x")
        print(f"  a/b  tensorboardX logging cost          {r['hand_log_vs_hand_nolog']:.3f}x")
        if "lightning_vs_hand_log" in r:
            print(f"  d/a  Lightning / hand-written logging   {r['lightning_vs_hand_log']:.3f}x")
        print(f"  mlproject fixed cost per train() call   {r['mlproject_fixed_ms']:.1f} ms")
        verdict = "MATCH" if r["loss_match"] and r["weights_match"] else "MISMATCH"
        print(
            f"  final loss: hand {r['loss_hand_log']!r}, mlproject {r['loss_mlproject']!r}, "
            f"weights equal: {r['weights_match']} -> {verdict}"
        )
        if "loss_lightning" in r:
            equal = r["lightning_loss_match"]
            print(f"  Lightning final loss {r['loss_lightning']!r} (equal: {equal})")
    load = report["loadavg"]
    print(f"\ntotal {report['seconds']} s; load average {load[0]} before, {load[1]} after")


if __name__ == "__main__":
    main()
    sys.exit(0)
