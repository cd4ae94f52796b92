"""Stop signals from outside, as a cluster sends them: to the whole process group, with
DataLoader workers, and during start-up. Each ends the sacred run INTERRUPTED, exit 128 + N."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "scripts" / "resumable.py"


def start(tmp: Path, *updates: str, **env: str) -> subprocess.Popen:
    """The resumable script in a new process group (as a batch job is), observed by sacred."""
    args = [sys.executable, str(SCRIPT), "-l", "WARNING", "-F", str(tmp / "sacred"), "with"]
    args += [f"model_dir={tmp / 'models'}", "n_epochs=4", "seed=1", "save_iterations=3"]
    return subprocess.Popen(
        [*args, *updates],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        start_new_session=True,
    )


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode} early:\n{process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


def sacred_status(tmp: Path) -> str:
    (run,) = (tmp / "sacred").glob("[0-9]*")
    return json.loads((run / "run.json").read_text())["status"]


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers_saves_and_stops(tmp_path):
    marker = tmp_path / "at-step-7"
    job = start(tmp_path, "num_workers=2", MARK_AT="7", MARK_FILE=str(marker))
    wait_for(marker, job)
    os.killpg(job.pid, signal.SIGTERM)  # the trainer and its DataLoader workers at once
    _, err = job.communicate(timeout=120)
    assert job.returncode == 143, err
    assert "DataLoader worker" not in err
    assert sacred_status(tmp_path) == "INTERRUPTED"
    (run_dir,) = (tmp_path / "models").iterdir()
    newest = sorted(run_dir.glob("checkpoint-*.pt"))[-1]
    step = torch.load(newest, weights_only=True)["state"]["global_step"]
    assert step >= 7 and step % 3 != 0  # saved at the step boundary after the signal
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert (run_dir / "lock").read_text() == ""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)]
)
def test_a_stop_signal_during_start_up_ends_the_run_interrupted(tmp_path, sig, code):
    marker = tmp_path / "building-data"
    job = start(tmp_path, SLOW_START=str(marker))
    wait_for(marker, job)
    job.send_signal(sig)
    _, err = job.communicate(timeout=60)
    assert job.returncode == code, err
    assert sacred_status(tmp_path) == "INTERRUPTED"
    assert not (tmp_path / "models").exists()  # nothing was written for the run itself


@pytest.mark.slow
def test_a_requeue_signal_saves_runs_the_requeue_command_once_and_the_job_continues(tmp_path):
    calls = tmp_path / "calls.txt"
    command = f"requeue_command='echo requeue $SLURM_JOB_ID >> {calls}'"
    marker = tmp_path / "at-step-4"
    env = {"SLURM_JOB_ID": "42"}
    tb = f"tensorboard_dir={tmp_path / 'tb'}"
    job = start(tmp_path, "resume=auto", tb, command, MARK_AT="4", MARK_FILE=str(marker), **env)
    wait_for(marker, job)
    job.send_signal(signal.SIGUSR1)  # SLURM's --signal=USR1@90
    _, err = job.communicate(timeout=120)
    assert job.returncode == 128 + signal.SIGUSR1, err
    assert sacred_status(tmp_path) == "INTERRUPTED"
    assert calls.read_text() == "requeue 42\n"  # once, after the save
    (run_dir,) = (tmp_path / "models").iterdir()
    step = torch.load(sorted(run_dir.glob("checkpoint-*.pt"))[-1], weights_only=True)
    assert step["state"]["global_step"] >= 4
    again = start(tmp_path, "resume=auto", tb, command, **env)  # the requeued job
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert len(list((tmp_path / "models").iterdir())) == 1
    assert [p.name for p in (tmp_path / "tb").iterdir()] == [run_dir.name]  # the same TB run
    assert calls.read_text() == "requeue 42\n"


@pytest.mark.slow
def test_a_requeue_right_after_sigkill_takes_the_lock_its_orphaned_workers_inherited(tmp_path):
    marker = tmp_path / "at-step-5"
    job = start(tmp_path, "num_workers=2", MARK_AT="5", MARK_FILE=str(marker))
    wait_for(marker, job)
    try:
        job.kill()  # the trainer only, as the OOM killer does: its two workers live on a while
        job.communicate(timeout=60)
        workers = subprocess.run(["pgrep", "-g", str(job.pid)], capture_output=True, text=True)
        assert len(workers.stdout.split()) == 2  # still alive, holding the inherited lock fd
        again = start(tmp_path, "num_workers=2", "resume=auto")  # the requeue, seconds later
        _, err = again.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
    assert again.returncode == 0, err
    assert "in use" not in err
    (run_dir,) = (tmp_path / "models").iterdir()  # the same run, continued
    state = torch.load(sorted(run_dir.glob("checkpoint-*.pt"))[-1], weights_only=True)["state"]
    assert state["global_step"] == 20  # 4 epochs of 5 steps
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
