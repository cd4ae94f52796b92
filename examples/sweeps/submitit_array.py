#!/usr/bin/env python
"""A SLURM job array through submitit: one job per config, each a sacred run with resume=auto.

./submitit_array.py --lr 0.001 0.01 0.1 --hidden 32 64 with n_epochs=20 model_dir=runs
./submitit_array.py --cluster local --lr 0.01 0.1 with n_global_iterations=50   # no SLURM

Every config is checked before any job is submitted. Each job runs ``ex.run`` of
``experiment.py`` with ``resume=auto``: a job that is requeued (preempted, timed out, or the
whole array submitted again with the same command) continues its own run, from the run
folder's last complete checkpoint, and a finished run is not trained again. The script waits
for the jobs and prints one line per config (``--no-wait``: submit and exit).

Layout: the Experiment lives in ``experiment.py``, a module the jobs import by name. submitit
pickles the job's callable; a module is pickled by reference, so the job imports
``experiment`` itself, which runs sacred's config scope from its source file. An Experiment
defined in this script would be ``__main__`` and pickled by value, source-less in the job.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import experiment
import submitit
from sacred.observers import FileStorageObserver

from mlproject import ConfigError

HERE = Path(__file__).resolve().parent


class TrainJob(submitit.helpers.Checkpointable):
    """One job: a sacred run of ``experiment.ex`` with ``resume=auto``.

    On preemption or timeout submitit calls ``checkpoint`` and requeues what it returns;
    ``Checkpointable``'s own returns this same call, which is all a requeued job needs: the
    model, optimizer and loop state are in the run folder's checkpoints, and ``resume=auto``
    finds them from the config.
    """

    def __init__(self, sacred_dir: str | None = None):
        self.sacred_dir = sacred_dir

    def __call__(self, updates: dict[str, Any]) -> dict[str, Any]:
        ex = experiment.ex  # `experiment`, a module, travels by name: the job imports it
        if self.sacred_dir is not None:
            ex.observers.append(FileStorageObserver(self.sacred_dir))
        run = ex.run(config_updates={**updates, "resume": "auto"})
        summary = run.info["summary"]
        return {"result": run.result, "sacred_id": run._id, "run_dir": summary["run_dir"]}


def main(argv: list[str] | None = None) -> int:
    own, fixed = experiment.split_with(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, nargs="+", default=[], help="learning rates")
    parser.add_argument("--hidden", type=int, nargs="+", default=[], help="hidden units")
    parser.add_argument("--cluster", help="submitit's executor: slurm (found by default), local")
    parser.add_argument("--folder", default="jobs/%j", help="submitit's logs and pickles")
    parser.add_argument("--sacred-dir", help="keep every run's sacred record in this folder")
    parser.add_argument("--timeout-min", type=int, default=60, help="each job's time limit")
    parser.add_argument("--partition", help="the SLURM partition")
    parser.add_argument("--no-wait", action="store_true", help="submit, print the job ids, exit")
    args = parser.parse_args(own)
    configs = [{**fixed, **updates} for updates in experiment.grid(lr=args.lr, hidden=args.hidden)]
    configs = configs or [fixed]
    try:
        experiment.check(configs)  # before a single job is queued
    except ConfigError as err:
        sys.exit(f"ConfigError: {err}")

    # The jobs import experiment.py: its folder goes on their PYTHONPATH. They inherit this
    # environment (the local executor copies it; sbatch exports it by default).
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.getenv("PYTHONPATH")]))
    executor = submitit.AutoExecutor(folder=args.folder, cluster=args.cluster)
    executor.update_parameters(name="sweeps", timeout_min=args.timeout_min)
    if args.partition:
        executor.update_parameters(slurm_partition=args.partition)
    jobs = executor.map_array(TrainJob(args.sacred_dir), configs)
    print(f"submitted {len(jobs)} jobs: {', '.join(job.job_id for job in jobs)}", flush=True)
    if args.no_wait:
        return 0
    failed = 0
    for updates, job in zip(configs, jobs):
        name = " ".join(f"{key}={updates[key]}" for key in updates if key not in fixed)
        try:
            done = job.result()
        except Exception as err:  # the job's traceback is in its log under --folder
            failed += 1
            print(f"{name or 'defaults'}: job {job.job_id} failed: {err}".splitlines()[0])
            continue
        print(f"{name or 'defaults'}: result {done['result']:.4g} · {done['run_dir']}")
    return int(failed > 0)


if __name__ == "__main__":
    sys.exit(main())
