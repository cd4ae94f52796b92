"""Recorder: the run folder's lock, scalar buffering and the TensorBoard/sacred hand-off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlproject.errors import NonFiniteLossError, RunLockedError
from mlproject.recorder import Recorder, new_run_dir
from mlproject.tensorboard import read_scalars

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from resumable import Resumable, in_process_config  # noqa: E402


class FakeRun:
    """Records what a sacred Run would receive."""

    def __init__(self):
        self.scalars, self.artifacts = [], []

    def log_scalar(self, name, value, step):
        self.scalars.append((name, value, step))

    def add_artifact(self, filename, name):
        self.artifacts.append(name)


def test_second_writer_on_a_run_folder_is_refused(tmp_path):
    Resumable(in_process_config(tmp_path)).train()
    (run_dir,) = tmp_path.iterdir()
    holder = Recorder(None, progress=False)
    holder.open(run_dir, {})
    try:
        with pytest.raises(RunLockedError, match=f"{run_dir}.* in use by another process \\(pid"):
            Resumable(in_process_config(tmp_path, resume="auto")).train()
    finally:
        holder.close()


def test_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # a process that took the lock and was killed: the lock file still names it
    code = (
        "import os, sys; from pathlib import Path; from mlproject.recorder import Recorder; "
        f"r = Recorder(None, progress=False); r.open(Path({str(run_dir)!r}), {{}}); "
        "os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    assert "pid" in (run_dir / "lock").read_text()
    recorder = Recorder(None, progress=False)
    with pytest.warns(UserWarning, match="locked by a process that is gone .*taking the lock over"):
        recorder.open(run_dir, {})
    recorder.close()
    assert (run_dir / "lock").read_text() == ""  # a clean exit leaves no owner behind


def test_scalars_reach_tensorboard_and_sacred_only_when_flushed(tmp_path):
    run = FakeRun()
    recorder = Recorder(str(tmp_path / "tb"), run=run, progress=False)
    run_dir = new_run_dir(tmp_path / "models", "r", tmp_path / "tb")
    recorder.open(run_dir, {})
    recorder.log("train", {"loss": torch.tensor(0.5), "lr": 0.1}, step=1)
    recorder.log("train", {"loss": torch.tensor(0.25)}, step=2)
    assert run.scalars == [] and read_scalars(tmp_path / "tb" / "r") == {}
    recorder.flush()
    assert run.scalars == [("train/loss", 0.5, 1), ("train/lr", 0.1, 1), ("train/loss", 0.25, 2)]
    assert read_scalars(tmp_path / "tb" / "r") == {
        "train/loss": [(1, 0.5), (2, 0.25)],
        "train/lr": [(1, pytest.approx(0.1))],
    }
    recorder.close()


def test_flush_names_the_first_step_with_a_non_finite_loss(tmp_path):
    recorder = Recorder(None, progress=False)
    recorder.open(tmp_path, {})
    for step, loss in enumerate([1.0, 0.5, float("nan"), float("inf")], start=1):
        recorder.log("train", {"loss": torch.tensor(loss)}, step)
    with pytest.raises(NonFiniteLossError, match="not finite at global step 3"):
        recorder.flush()
    recorder.close()


def test_new_run_dir_never_reuses_a_folder(tmp_path):
    first = new_run_dir(tmp_path, "run", None)
    (first / "keep.txt").write_text("x")
    second = new_run_dir(tmp_path, "run", None)
    assert second.name == "run-2" and (first / "keep.txt").read_text() == "x"
    (tmp_path / "tb" / "run-3").mkdir(parents=True)  # taken on the TensorBoard side
    assert new_run_dir(tmp_path, "run", tmp_path / "tb").name == "run-4"
