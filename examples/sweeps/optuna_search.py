#!/usr/bin/env python
"""Optuna over sacred runs: one study in a database, shared by any number of workers.

./optuna_search.py run --storage sqlite:///optuna.db --study mlp --trials 20 --workers 2 \\
    with n_epochs=5 model_dir=runs               # here: create, then work with 1 more worker
# on a cluster: create the study once, then start the workers (e.g. a job array of them)
./optuna_search.py create --storage postgresql://user@db-host/optuna --study mlp with n_epochs=5
./optuna_search.py worker --storage postgresql://user@db-host/optuna --study mlp --trials 10

Each trial is a sacred run of ``experiment.ex`` whose result (the best validation loss) is
the trial's value; the trial records the run's sacred id, run folder and worker as user
attributes. ``create`` checks the config and stores the fixed updates (after ``with``) in the
study, so every worker trains the same way; running it again keeps the study and its trials.
A worker only loads the study: workers creating it at once would race (the loser crashes on
a duplicate study or a half-made schema), so it is created once, before them.
"""

import argparse
import os
import socket
import subprocess
import sys
from typing import Any

import experiment
import optuna
from sacred.observers import FileStorageObserver

from mlproject import ConfigError, NonFiniteLossError

DIRECTION = "minimize"  # a run's result is its best validation loss (ProxyModel's benchmark)


def storage(url: str) -> optuna.storages.RDBStorage:
    """The study's database. SQLite serialises writers: wait for the lock instead of failing."""
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """The search space, as config updates of ``experiment.ex``."""
    return {
        "lr": trial.suggest_float("lr", 1e-3, 1e-1, log=True),
        "hidden": trial.suggest_categorical("hidden", [16, 32, 64]),
    }


def create(url: str, name: str, fixed: dict[str, Any]) -> optuna.Study:
    """Create the study (or load it, trials and all), after checking the config it will run.

    The fixed updates are stored in the study, for the workers; a study made with other ones
    is refused (its trials would not compare).
    """
    experiment.check([{**fixed, "lr": 0.01, "hidden": 32}])  # ConfigError: nothing created
    study = optuna.create_study(
        storage=storage(url), study_name=name, direction=DIRECTION, load_if_exists=True
    )
    previous = study.user_attrs.get("config_updates")
    if previous is not None and previous != fixed:
        sys.exit(f"study {name!r} trains with {previous}, not {fixed}: name a new study")
    study.set_user_attr("config_updates", fixed)
    return study


def work(url: str, name: str, n_trials: int, sacred_dir: str | None) -> None:
    """Run ``n_trials`` trials of an existing study, each a sacred run."""
    try:
        study = optuna.load_study(storage=storage(url), study_name=name)
    except KeyError:
        sys.exit(f"no study {name!r} in {url}: create it first (optuna_search.py create ...)")
    ex, fixed = experiment.ex, study.user_attrs["config_updates"]
    if sacred_dir is not None:
        ex.observers.append(FileStorageObserver(sacred_dir))

    def objective(trial: optuna.Trial) -> float:
        updates = {**fixed, **suggest(trial), "prefix": f"trial{trial.number}"}
        run = ex.run(config_updates=updates)
        trial.set_user_attr("sacred_id", run._id)
        trial.set_user_attr("run_dir", run.info["summary"]["run_dir"])
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        return run.result

    # a diverging lr is a failed trial, not a failed worker; any other error stops the worker
    study.optimize(objective, n_trials=n_trials, catch=(NonFiniteLossError,))


def main(argv: list[str] | None = None) -> int:
    own, fixed = experiment.split_with(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["create", "worker", "run"])
    parser.add_argument("--storage", required=True, help="database URL (sqlite:///x.db, ...)")
    parser.add_argument("--study", required=True, help="the study's name")
    parser.add_argument("--trials", type=int, default=10, help="a worker's trials (run: in all)")
    parser.add_argument("--workers", type=int, default=2, help="run: processes, this one too")
    parser.add_argument("--sacred-dir", help="keep every run's sacred record in this folder")
    args = parser.parse_args(own)
    if args.command == "worker":
        if fixed:
            parser.error("a worker trains with the study's config: give `with ...` to create")
        work(args.storage, args.study, args.trials, args.sacred_dir)
        return 0
    try:
        study = create(args.storage, args.study, fixed)
    except ConfigError as err:
        sys.exit(f"ConfigError: {err}")
    if args.command == "create":
        return 0
    # this process is the first worker; the others are started once the study exists
    shares = [len(range(i, args.trials, args.workers)) for i in range(args.workers)]
    worker = [sys.executable, __file__, "worker", "--storage", args.storage, "--study", args.study]
    worker += ["--sacred-dir", args.sacred_dir] if args.sacred_dir else []
    others = [subprocess.Popen([*worker, "--trials", str(n)]) for n in shares[1:] if n]
    try:
        work(args.storage, args.study, shares[0], args.sacred_dir)
    finally:
        codes = [process.wait() for process in others]
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        print(f"no trial of {args.study!r} completed")
        return 1
    best = study.best_trial
    print(f"best of {len(study.trials)} trials: {best.value:.4g} with {best.params}")
    print(f"  run {best.user_attrs['run_dir']} (sacred run {best.user_attrs['sacred_id']})")
    return int(any(codes))


if __name__ == "__main__":
    sys.exit(main())
