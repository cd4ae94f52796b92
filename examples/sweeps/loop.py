#!/usr/bin/env python
"""Many experiments in one process: a plain loop of ``ex.run(config_updates=...)``.

./loop.py --lr 0.001 0.01 0.1 --hidden 32 64 with n_epochs=3 model_dir=runs
./loop.py --lr 0.01 0.1 --sacred-dir sacred_runs with n_global_iterations=50 tensorboard_dir=tb

Each config of the grid is a sacred run of its own: its own config, seed, record, run folder
and TensorBoard run; nothing of one run reaches the next (the test suite checks it). Runs use
``resume=auto``, so the same command again continues an unfinished run and skips a finished
one. A run refused by mlproject (a bad config, a NaN loss, ...) is reported and the loop goes
on; the exit status is 1 if any was. Ctrl-C stops the loop after the current run has saved.
"""

import argparse
import sys
from typing import Any

from experiment import ex, grid, split_with
from sacred.observers import FileStorageObserver

from mlproject import MLProjectError


def sweep(configs: list[dict[str, Any]], fixed: dict[str, Any] | None = None) -> list[Any]:
    """Run ``ex`` once per config (``fixed`` updates every one): a sacred Run, or the
    ``MLProjectError`` that refused it, per config."""
    outcomes = []
    for updates in configs:
        try:
            outcomes.append(ex.run(config_updates={"resume": "auto", **(fixed or {}), **updates}))
        except MLProjectError as err:
            outcomes.append(err)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    own, fixed = split_with(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, nargs="+", default=[], help="learning rates")
    parser.add_argument("--hidden", type=int, nargs="+", default=[], help="hidden units")
    parser.add_argument("--sacred-dir", help="keep every run's sacred record in this folder")
    args = parser.parse_args(own)
    configs = grid(lr=args.lr, hidden=args.hidden) or [{}]
    observer = FileStorageObserver(args.sacred_dir) if args.sacred_dir else None
    if observer is not None:
        ex.observers.append(observer)
    try:
        outcomes = sweep(configs, fixed)
    finally:
        if observer is not None:
            ex.observers.remove(observer)  # main() may be called again in this process
    for updates, outcome in zip(configs, outcomes):
        name = " ".join(f"{key}={value}" for key, value in updates.items()) or "defaults"
        if isinstance(outcome, MLProjectError):
            print(f"{name}: refused: {type(outcome).__name__}: {outcome}")
        else:
            summary = outcome.info["summary"]
            print(f"{name}: result {outcome.result:.4g} · {summary['run_dir']}")
    return int(any(isinstance(outcome, MLProjectError) for outcome in outcomes))


if __name__ == "__main__":
    sys.exit(main())
