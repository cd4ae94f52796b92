"""RunDir: new folders never reuse a name; one writer per folder; a dead holder's lock is free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mlproject import rundir
from mlproject.errors import RunLockedError

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from resumable import Resumable, in_process_config  # noqa: E402


def test_create_never_reuses_a_folder(tmp_path):
    first = rundir.create(tmp_path, "run")
    (first.path / "keep.txt").write_text("x")
    second = rundir.create(tmp_path, "run")
    assert second.name == "run-2" and (first.path / "keep.txt").read_text() == "x"
    (tmp_path / "tb" / "run-3").mkdir(parents=True)  # taken on the TensorBoard side
    assert rundir.create(tmp_path, "run", tmp_path / "tb").name == "run-4"


def test_second_writer_on_a_run_folder_is_refused(tmp_path):
    Resumable(in_process_config(tmp_path)).train()
    (run_dir,) = tmp_path.iterdir()
    holder = rundir.RunDir(run_dir)
    holder.lock()
    try:
        with pytest.raises(RunLockedError, match=f"{run_dir}.* in use by this process \\(pid"):
            Resumable(in_process_config(tmp_path, n_epochs=2, resume="auto")).train()
        assert f"pid {os.getpid()}" in (run_dir / "lock").read_text()
    finally:
        holder.unlock()


def test_a_live_process_holding_the_lock_is_named(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD.format(run_dir=str(run_dir), fork=False)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"in use by another process \\(pid {holder.pid}"):
            rundir.RunDir(run_dir).lock()
    finally:
        holder.kill()
        holder.wait()


# Takes the lock, optionally forks a child that lingers (as DataLoader workers do), says so.
_HOLD = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    from mlproject.rundir import RunDir
    RunDir(Path({run_dir!r})).lock()
    if {fork} and os.fork() == 0:
        time.sleep(60)
        os._exit(0)
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_lock_of_a_killed_process_is_taken_over_even_while_its_children_live(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD.format(run_dir=str(run_dir), fork=True)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        holder.kill()  # SIGKILL the holder only; its forked child keeps the lock file open
        holder.wait()
        assert f"pid {holder.pid}" in (run_dir / "lock").read_text()
        with pytest.warns(UserWarning, match="locked by a process that is gone .*taking the lock"):
            run = rundir.RunDir(run_dir)
            run.lock()
        run.unlock()
        assert (run_dir / "lock").read_text() == ""  # a clean exit leaves no owner behind
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # the orphaned child
        time.sleep(0.1)


def test_run_info_round_trips_and_find_latest_matches_it(tmp_path):
    a, b = rundir.create(tmp_path, "a"), rundir.create(tmp_path, "b")
    assert a.info() == {}
    a.write_info({"model": "mlp", "prefix": ""})
    b.write_info({"model": "cnn", "prefix": ""})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{not json")
    assert a.info() == {"model": "mlp", "prefix": ""}
    assert rundir.find_latest(tmp_path, lambda info: info["model"] == "cnn") == b.path
    assert rundir.find_latest(tmp_path, lambda info: info["model"] == "gan") is None
