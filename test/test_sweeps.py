"""The sweep recipes of examples/sweeps run for real, with tiny configs.

``submitit_array.py`` runs a job array on submitit's local executor: one job is preempted
(SIGUSR2, submitit's signal) mid-run and requeued by submitit, then the same array is
submitted again. ``optuna_search.py`` runs two worker processes on one study, in SQLite and
in a PostgreSQL server started here. ``loop.py``'s ``ex.run`` loop runs in this process,
which is checked for everything one run could leave behind for the next.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from mlproject.experiment import summary_result

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "examples/sweeps"
ARRAY = "examples/sweeps/submitit_array.py"
OPTUNA = "examples/sweeps/optuna_search.py"


def sacred_runs(folder: Path) -> dict[str, dict[str, Any]]:
    """``{id: run.json + config, info, metrics, cout}`` of every run a FileStorageObserver kept
    in ``folder``, in the order of their ids (sacred's run ids there are strings: "1", "2")."""
    runs = {}
    for path in folder.iterdir():
        if path.name.isdigit():
            record = json.loads((path / "run.json").read_text())
            record["config"] = json.loads((path / "config.json").read_text())
            info = path / "info.json"
            record["info"] = json.loads(info.read_text()) if info.exists() else {}
            record["metrics"] = json.loads((path / "metrics.json").read_text())
            record["cout"] = (path / "cout.txt").read_text()
            runs[path.name] = record
    return dict(sorted(runs.items(), key=lambda item: int(item[0])))


def run_dir_of(record: dict[str, Any]) -> str:
    """The mlproject run folder a sacred run trained in (also for one that did not complete)."""
    info = record["info"]
    return (info.get("summary") or info["mlproject"])["run_dir"]


def run_info(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text())


def test_the_recipes_are_executable_programs():
    for name in ("experiment.py", "loop.py", "submitit_array.py", "optuna_search.py"):
        path = SWEEPS / name
        assert os.access(path, os.X_OK), name
        assert path.read_text().startswith("#!/usr/bin/env python"), name


@pytest.fixture(scope="module")
def sweeps():
    """``experiment`` and ``loop``, imported as the recipes import them: from their folder,
    which stays on ``sys.path`` for this module's tests (``import submitit_array`` works)."""
    sys.path.insert(0, str(SWEEPS))
    try:
        import experiment
        import loop

        yield SimpleNamespace(experiment=experiment, loop=loop, ex=experiment.ex)
    finally:
        sys.path.remove(str(SWEEPS))


# --- submitit: a job array on the local executor -------------------------------------------------
LRS = ("0.003", "0.03")
# 40 steps of 50 ms of pretend work, a checkpoint every 5: a job can be preempted mid-run
ARRAY_ARGS = [
    *("--cluster", "local", "--lr", *LRS, "--sacred-dir", "sacred", "with"),
    *("n_global_iterations=40", "save_iterations=5", "step_sleep=0.05", "model_dir=runs"),
]


def checkpoint_files(runs: Path) -> dict[str, tuple[int, int]]:
    """``{run/file: (mtime, size)}`` of every checkpoint under ``runs``."""
    return {
        f"{p.parent.name}/{p.name}": (p.stat().st_mtime_ns, p.stat().st_size)
        for p in runs.glob("*/*.pt")
    }


def _preempt_mid_run(runs: Path, process) -> Path:
    """Once some job has a complete checkpoint at step 5, send SIGUSR2 to the process that
    holds its run folder's lock (the job's own: mlproject writes its pid there)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        saved = sorted(runs.glob("*/checkpoint-000000005.pt.sha256"))
        if saved:
            victim = saved[0].parent
            holder = (victim / "lock").read_text()
            pid = re.fullmatch(r"pid (\d+) on .*", holder)
            assert pid, f"{victim} is not being trained any more (lock: {holder!r})"
            os.kill(int(pid.group(1)), signal.SIGUSR2)
            return victim
        if process.poll() is not None:
            break
        time.sleep(0.02)
    out, err = process.communicate(timeout=60)
    pytest.fail(f"no job reached its first checkpoint:\n{out}\n{err[-3000:]}")


@pytest.fixture(scope="module")
def array(start_script, tmp_path_factory, sweeps):
    """The array submitted by the program, one job preempted and requeued; then the same array
    submitted again (by the script's ``main`` in this process, which saves starting python)."""
    pytest.importorskip("submitit", reason="pip install -e '.[sweeps]'")
    import submitit_array

    cwd = tmp_path_factory.mktemp("array")
    first = start_script(ARRAY, *ARRAY_ARGS, cwd=cwd)
    try:
        victim = _preempt_mid_run(cwd / "runs", first)
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()  # only if a step above failed: it has ended otherwise
    sacred_first = sacred_runs(cwd / "sacred") if (cwd / "sacred").exists() else {}
    files = checkpoint_files(cwd / "runs")
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.redirect_stdout(io.StringIO()) as printed,
    ):
        patch.chdir(cwd)
        patch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # main() adds to it
        code_again = submitit_array.main(ARRAY_ARGS)
    attempts = [r for r in sacred_first.values() if run_dir_of(r) == f"runs/{victim.name}"]
    return SimpleNamespace(
        cwd=cwd, victim=victim, first=(first.returncode, out, err), sacred_first=sacred_first,
        attempts=attempts, files_first=files, again=(code_again, printed.getvalue()),
    )  # fmt: skip


def _results(out: str) -> dict[str, float]:
    """``{lr: result}`` from the lines the array script prints per config."""
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^lr=(\S+): result (\S+) · ", out, flags=re.MULTILINE)
    }


@pytest.mark.slow
def test_each_array_job_is_a_completed_sacred_run_of_its_config(array):
    code, out, err = array.first
    assert code == 0, err[-3000:]
    assert set(_results(out)) == set(LRS), out
    folders = sorted((array.cwd / "runs").iterdir())
    assert len(folders) == len(LRS)  # one run folder per config
    by_folder: dict[str, list[dict]] = {}
    for record in array.sacred_first.values():
        by_folder.setdefault(run_dir_of(record), []).append(record)
    for folder in folders:
        info = run_info(folder)
        assert info["status"] == "completed"
        assert info["summary"]["global_step"] == 40
        last = by_folder[f"runs/{folder.name}"][-1]  # its last attempt
        assert last["status"] == "COMPLETED"
        assert last["config"]["resume"] == "auto"
        assert last["config"]["lr"] == info["config"]["lr"]
        assert last["result"] == summary_result(info["summary"])
        lr = next(lr for lr in LRS if float(lr) == info["config"]["lr"])
        assert _results(out)[lr] == pytest.approx(last["result"], rel=1e-3)  # printed: 4 digits


@pytest.mark.slow
def test_a_preempted_job_is_requeued_by_submitit_and_continues_its_own_run(array):
    code, out, err = array.first
    assert code == 0, err[-3000:]
    logs = "".join(p.read_text() for p in array.cwd.glob("jobs/*/*_log.out"))
    assert "Requeued job" in logs  # submitit's requeue, not a new submission
    assert len(array.attempts) == 2, [(r["status"], run_dir_of(r)) for r in array.attempts]
    preempted, requeued = array.attempts
    assert preempted["status"] != "COMPLETED"
    assert requeued["status"] == "COMPLETED"
    assert preempted["config"] == requeued["config"] | {"seed": preempted["config"]["seed"]}
    # the requeued job continued the run from the step saved at the signal, in the same folder
    resumed = requeued["info"]["mlproject"]["resumed_at_step"]
    assert 5 <= resumed < 40
    assert f"resumed at step {resumed}" in requeued["cout"]
    assert len(list((array.cwd / "runs").iterdir())) == len(LRS)  # no second folder
    assert run_info(array.victim)["summary"]["global_step"] == 40
    steps = requeued["metrics"]["train/loss"]["steps"]
    assert steps == list(range(resumed + 1, 41))  # it logged only the steps it trained


@pytest.mark.slow
def test_a_preempted_attempt_is_recorded_as_interrupted_and_saved_at_the_signal(array):
    assert array.attempts[0]["status"] == "INTERRUPTED"


@pytest.mark.slow
def test_submitting_the_same_array_again_trains_nothing_and_makes_no_folder(array):
    code, out = array.again
    assert code == 0, out
    assert _results(out) == _results(array.first[1])
    assert len(list((array.cwd / "runs").iterdir())) == len(LRS)
    assert checkpoint_files(array.cwd / "runs") == array.files_first  # none written again
    new = [r for i, r in sacred_runs(array.cwd / "sacred").items() if i not in array.sacred_first]
    assert len(new) == len(LRS)
    for record in new:
        assert record["status"] == "COMPLETED"
        info = run_info(array.cwd / run_dir_of(record))
        assert record["result"] == summary_result(info["summary"])
        assert "is complete (step 40): nothing to do" in record["cout"]


def test_the_array_script_checks_every_config_before_submitting(sweeps, tmp_path, monkeypatch):
    pytest.importorskip("submitit", reason="pip install -e '.[sweeps]'")
    import submitit_array

    monkeypatch.chdir(tmp_path)
    argv = ["--cluster", "local", "--lr", "0.1", "--hidden", "8", "16", "with", "n_epoch=2"]
    with pytest.raises(SystemExit) as refused:
        submitit_array.main(argv)
    assert str(refused.value).startswith("ConfigError: invalid config")
    assert "did you mean 'n_epochs'?" in str(refused.value)
    assert not any(tmp_path.iterdir())  # no job folder, no run folder


# --- Optuna: two workers on one study in a database ----------------------------------------------
N_TRIALS = 4


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def study(request, start_script, tmp_path_factory):
    """``optuna_search.py run``: the study created, then 2 workers run N_TRIALS in all."""
    optuna = pytest.importorskip("optuna", reason="pip install -e '.[sweeps]'")
    cwd = tmp_path_factory.mktemp(f"optuna_{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{cwd / 'optuna.db'}"
    else:
        import sqlalchemy as sa

        server = request.getfixturevalue("postgres")
        engine = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sa.text("CREATE DATABASE sweeps"))
        engine.dispose()
        url = f"{server}/sweeps"
    process = start_script(
        OPTUNA, "run", "--storage", url, "--study", "tiny", "--trials", str(N_TRIALS),
        "--workers", "2", "--sacred-dir", "sacred", "with", "n_global_iterations=5",
        "model_dir=runs", cwd=cwd,
    )  # fmt: skip
    out, err = process.communicate(timeout=300)
    return SimpleNamespace(
        url=url, cwd=cwd, code=process.returncode, out=out, err=err,
        study=optuna.load_study(study_name="tiny", storage=url),
    )  # fmt: skip


@pytest.mark.slow
def test_two_optuna_workers_share_one_study_and_each_trial_is_a_sacred_run(study):
    import optuna

    assert study.code == 0, study.err[-3000:]
    assert optuna.get_all_study_names(storage=study.url) == ["tiny"]
    assert study.err.count("A new study created") == 1  # by the launcher, before the workers
    trials = study.study.trials
    assert sorted(t.number for t in trials) == list(range(N_TRIALS))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials
    records = sacred_runs(study.cwd / "sacred")
    assert len(records) == N_TRIALS
    for trial in trials:
        record = records[trial.user_attrs["sacred_id"]]
        assert record["status"] == "COMPLETED"
        assert trial.value == record["result"]  # the objective is the sacred run's result
        assert {k: record["config"][k] for k in trial.params} == trial.params
        assert run_dir_of(record) == trial.user_attrs["run_dir"]
        info = run_info(study.cwd / trial.user_attrs["run_dir"])
        assert info["status"] == "completed"
        assert info["prefix"] == f"trial{trial.number}"
        assert summary_result(info["summary"]) == trial.value
    best = min(trials, key=lambda t: t.value)
    assert f"best of {N_TRIALS} trials: {best.value:.4g} with {best.params}" in study.out


@pytest.mark.slow
def test_creating_the_study_again_keeps_its_trials_and_refuses_another_config(study, sweeps):
    import optuna_search

    fixed = {"n_global_iterations": 5, "model_dir": "runs"}
    again = optuna_search.create(study.url, "tiny", fixed)
    assert len(again.trials) == N_TRIALS
    with pytest.raises(SystemExit, match="trains with .* name a new study"):
        optuna_search.create(study.url, "tiny", {**fixed, "n_global_iterations": 6})
    assert len(again.trials) == N_TRIALS


def test_an_optuna_worker_never_creates_the_study(sweeps, tmp_path):
    optuna = pytest.importorskip("optuna", reason="pip install -e '.[sweeps]'")
    import optuna_search

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with pytest.raises(SystemExit, match="no study 'nope' in .*: create it first"):
        optuna_search.main(["worker", "--storage", url, "--study", "nope", "--trials", "1"])
    assert optuna.get_all_study_names(storage=url) == []


# --- loop.py: many ex.run calls in one process ---------------------------------------------------
def process_state(ex) -> dict[str, Any]:
    """What one run could leave behind in this process for the next, as comparable values."""
    gc.collect()  # files that earlier tests left unreachable close now, not during a run
    root = logging.getLogger()
    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
    return {
        "signal handlers": {s: signal.getsignal(s) for s in stops},
        "warnings filters": list(warnings.filters),
        "root logger": (list(root.handlers), root.level),
        "sacred's logger": (list(ex.logger.handlers), ex.logger.level) if ex.logger else None,
        "stdout, stderr": (sys.stdout, sys.stderr),
        "deterministic": (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ),
        "torch threads": torch.get_num_threads(),
        "grad enabled": torch.is_grad_enabled(),
        "default dtype": torch.get_default_dtype(),
        # CUBLAS_WORKSPACE_CONFIG: see test_a_deterministic_run_leaves_the_environment_as_it_was
        "environment": {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"},
        "cwd": os.getcwd(),
        "threads": sorted(thread.name for thread in threading.enumerate()),
        "open files": sorted(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0,
        "observers": list(ex.observers),
    }


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "best.pt", weights_only=True)["model"]["weights"]


def test_runs_of_an_ex_run_loop_leak_nothing_into_each_other(sweeps, tmp_path, tb_scalars):
    """A, then B (another config, a drawn seed, deterministic algorithms, another logging
    interval), then A again: A's second run equals its first bit for bit, each run's records
    hold only its own config and steps, and the process is as before after every run."""
    from sacred.observers import FileStorageObserver

    ex = sweeps.ex
    common = {"model_dir": str(tmp_path / "runs"), "tensorboard_dir": str(tmp_path / "tb")}
    a = {**common, "lr": 0.01, "hidden": 16, "seed": 1, "n_global_iterations": 6, "prefix": "a"}
    b = {**common, "lr": 0.05, "hidden": 32, "n_global_iterations": 4, "prefix": "b"}
    b |= {"deterministic": True, "log_iteration_scalars": 2, "save_iterations": 2}
    observer = FileStorageObserver(str(tmp_path / "sacred"))
    ex.observers.append(observer)
    try:
        # a first run loads what a process loads once (lazy imports, the progress stream)
        [warmup] = sweeps.loop.sweep([{**common, "n_global_iterations": 1, "prefix": "warmup"}])
        before = process_state(ex)
        runs = []
        for config in (a, b, {**a, "prefix": "again"}):
            [run] = sweeps.loop.sweep([config])
            assert process_state(ex) == before, f"run {config['prefix']} changed the process"
            runs.append(run)
    finally:
        ex.observers.remove(observer)
    first, other, again = runs
    assert all(run.status == "COMPLETED" for run in (warmup, *runs))

    # each run's config is its own: nothing of B (or of the updates before) in A's second run
    assert again.config == first.config | {"prefix": "again"}
    assert (first.config["deterministic"], other.config["deterministic"]) == (False, True)
    assert "seed" not in b and isinstance(other.config["seed"], int)  # drawn by sacred
    records = sacred_runs(tmp_path / "sacred")
    assert len(records) == 4
    dirs = {run: Path(run.info["summary"]["run_dir"]) for run in runs}
    for run, record in zip(runs, list(records.values())[1:]):
        info = run_info(dirs[run])
        for key in ("lr", "hidden", "seed", "deterministic", "prefix", "n_global_iterations"):
            assert info["config"][key] == record["config"][key] == run.config[key], key
        assert info["status"] == "completed"
        assert (dirs[run] / "lock").read_text() == ""  # released
        every, n_steps = run.config["log_iteration_scalars"], run.config["n_global_iterations"]
        steps = list(range(every, n_steps + 1, every))  # A: 1..6, B: 2, 4
        assert record["metrics"]["train/loss"]["steps"] == steps
        assert [s for s, _ in tb_scalars(tmp_path / "tb" / dirs[run].name)["train/loss"]] == steps
        assert record["cout"].startswith(f"run {dirs[run]}")
        others = [d for r, d in dirs.items() if r is not run]
        assert not any(str(d) in record["cout"] for d in others)
    assert len(list((tmp_path / "runs").iterdir())) == 4  # warm-up, A, B, A again

    # A again is A: same seed, same result, weights and curves, whatever ran in between
    assert again.result == first.result != other.result
    for name, tensor in _weights(dirs[first]).items():
        assert torch.equal(tensor, _weights(dirs[again])[name]), name
    curves = [tb_scalars(tmp_path / "tb" / dirs[run].name) for run in (first, again)]
    assert curves[0] == curves[1]
    metrics = [records[run._id]["metrics"] for run in (first, again)]
    assert [m["train/loss"]["values"] for m in metrics] == [metrics[0]["train/loss"]["values"]] * 2


def test_the_loop_goes_on_after_a_refused_config_and_skips_finished_runs(
    sweeps, tmp_path, monkeypatch, capsys
):
    from mlproject import ConfigError

    monkeypatch.chdir(tmp_path)
    outcomes = sweeps.loop.sweep(
        [{"lr": 0.01}, {"lrr": 0.1}, {"lr": 0.02}], {"n_global_iterations": 2, "model_dir": "a"}
    )
    assert [type(o).__name__ for o in outcomes] == ["Run", "ConfigError", "Run"]
    assert isinstance(outcomes[1], ConfigError) and "did you mean 'lr'?" in str(outcomes[1])
    assert len(list(Path("a").iterdir())) == 2  # nothing written for the refused one

    argv = ["--lr", "0.01", "0.02", "--sacred-dir", "sacred", "with", "n_global_iterations=3"]
    argv += ["model_dir=runs"]
    assert sweeps.loop.main(argv) == 0
    first = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in first] == ["lr=0.01", "lr=0.02"]
    assert sweeps.loop.main(argv) == 0  # the same command again: resume=auto, nothing to train
    assert capsys.readouterr().out.splitlines() == first
    assert len(list(Path("runs").iterdir())) == 2
    records = sacred_runs(Path("sacred"))
    assert [r["status"] for r in records.values()] == ["COMPLETED"] * 4
    assert [r["result"] for r in records.values()][:2] == [r["result"] for r in records.values()][
        2:
    ]

    assert sweeps.loop.main(["--lr", "0.01", "with", "n_global_iteration=3"]) == 1
    assert "lr=0.01: refused: ConfigError" in capsys.readouterr().out
    assert len(sacred_runs(Path("sacred"))) == 4  # refused before any observer saw it
    assert sweeps.ex.observers == []  # main() took its observer away again


def test_a_run_keeps_the_processs_warn_only_deterministic_mode(sweeps, tmp_path):
    mode = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        sweeps.loop.sweep([{"n_global_iterations": 1, "model_dir": str(tmp_path)}])
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)


def test_a_deterministic_run_leaves_the_environment_as_it_was(sweeps, tmp_path, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    config = {"n_global_iterations": 1, "model_dir": str(tmp_path), "deterministic": True}
    [run] = sweeps.loop.sweep([config])
    assert run.status == "COMPLETED"
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
