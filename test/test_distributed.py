"""Distributed training through torchrun (CPU, gloo, 2 processes): equal to one process.

Each test starts ``python -m torch.distributed.run --standalone`` (a free port, no fixed one)
on ``test/scripts/distributed.py`` with a hard timeout. The float64 regression there has 42
training samples: with a per-process batch of 4, its 6th global batch holds 2 samples, all on
rank 0, so the uneven split of a partial global batch is exercised in every run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mlproject.distributed import World
from mlproject.shard import GlobalBatches

SCRIPT = Path(__file__).parent / "scripts" / "distributed.py"
COMMON = ["seed=3", "n_epochs=3", "save_iterations=2", "keep_checkpoints=None"]


def torchrun(tmp: Path, nproc: int, *updates: str, restarts: int = 0, wait: bool = True,
             **env: str) -> subprocess.CompletedProcess | subprocess.Popen:  # fmt: skip
    """The distributed script under torchrun in ``tmp`` (models, tb, sacred, records)."""
    (tmp / "records").mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", f"--max-restarts={restarts}", "--monitor-interval=0.5",
        str(SCRIPT), "-F", str(tmp / "sacred"), "with", f"model_dir={tmp / 'models'}",
        f"tensorboard_dir={tmp / 'tb'}", f"batch_size={8 // nproc}", *COMMON, *updates,
    ]  # fmt: skip
    env = {**os.environ, "RECORDS": str(tmp / "records"), **env}
    job = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env, start_new_session=True)  # fmt: skip
    if not wait:
        return job
    try:
        out, err = job.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)  # torchrun and every worker it started
        raise
    return subprocess.CompletedProcess(args, job.returncode, out, err)


def run_dir(tmp: Path) -> Path:
    (folder,) = (tmp / "models").iterdir()
    return folder


def final(tmp: Path) -> dict:
    path = sorted(run_dir(tmp).glob("checkpoint-*.pt"))[-1]
    return torch.load(path, weights_only=True)


def digests(tmp: Path) -> list[dict]:
    lines = (tmp / "records" / "digests.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=atol), (key, (a[key] - b[key]).abs())


def assert_same(a, b, path="checkpoint") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[int, Path]:
    """Uninterrupted runs with one process (batch 8) and two (batch 4 each)."""
    runs = {}
    for nproc in (1, 2):
        tmp = tmp_path_factory.mktemp(f"straight{nproc}")
        done = torchrun(tmp, nproc)
        assert done.returncode == 0, done.stderr[-4000:]
        runs[nproc] = tmp
    return runs


# --- the global order, at any number of processes ------------------------------------------
@pytest.mark.parametrize("shuffle", [True, False])
def test_w_processes_with_batch_b_see_the_global_batches_of_one_with_batch_w_times_b(shuffle):
    n = 43
    one = GlobalBatches(n, 12, World(0, 1, 0, True), shuffle, seed=5)
    for size in (2, 3, 4):
        plans = [GlobalBatches(n, 12 // size, World(r, size, r, True), shuffle, seed=5)
                 for r in range(size)]  # fmt: skip
        for epoch in (0, 1):
            for plan in [one, *plans]:
                plan.set_epoch(epoch)
            assert all(len(p) == len(one) for p in plans)
            shares = [list(p) for p in plans]
            for k, whole in enumerate(one):
                real = [i for r, p in enumerate(plans) if p.positions(k) for i in shares[r][k]]
                assert real == whole  # the same samples, in the same order
                assert sum(p.scale(k) for p in plans) == pytest.approx(size)  # mean of means


def test_a_process_with_no_sample_in_the_last_global_batch_gets_one_of_weight_zero():
    plan = GlobalBatches(10, 2, World(1, 2, 1, True), shuffle=False)
    assert list(plan) == [[2, 3], [6, 7], [8]] and plan.scale(2) == 0.0


# --- two processes, one run ----------------------------------------------------------------
@pytest.mark.slow
def test_two_processes_end_where_one_process_with_their_global_batch_ends(straight):
    one, two = final(straight[1]), final(straight[2])
    assert one["state"]["global_step"] == two["state"]["global_step"] == 18  # 6 steps an epoch
    assert_close(one["model"]["weights"], two["model"]["weights"], atol=1e-10)
    s1, s2 = (
        json.loads((run_dir(t) / "run.json").read_text())["summary"] for t in straight.values()
    )
    assert s1["best"]["step"] == s2["best"]["step"]
    for split in ("validation", "test"):  # 33 and 17 samples: odd, split unevenly
        assert s2[split]["loss"] == pytest.approx(s1[split]["loss"], rel=1e-12)


@pytest.mark.slow
def test_a_two_process_run_is_written_once(straight):
    tmp = straight[2]
    folder = run_dir(tmp)
    assert (folder / "lock").read_text() == ""
    (tb_run,) = (tmp / "tb").iterdir()
    assert tb_run.name == folder.name
    assert len([p for p in tb_run.iterdir() if "tfevents" in p.name]) == 1
    assert sorted(p.name for p in (tmp / "sacred").iterdir() if p.name != "_sources") == ["1"]
    record = json.loads((tmp / "sacred" / "1" / "run.json").read_text())
    assert record["status"] == "COMPLETED"
    ranks = final(tmp)["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["rng"]["torch"], ranks[1]["rng"]["torch"])


@pytest.mark.slow
def test_every_checkpoint_holds_the_same_weights_on_every_process(straight):
    seen = digests(straight[2])
    assert [d["step"] for d in seen] == list(range(2, 19, 2))
    assert all(len(set(d["digests"])) == 1 and len(d["digests"]) == 2 for d in seen)


@pytest.mark.slow
def test_each_epoch_covers_the_training_set_once(straight):
    records = straight[2] / "records"
    reads = [json.loads((records / f"seen-{r}.json").read_text()) for r in (0, 1)]
    # per epoch rank 0 reads 5 * 4 + 2 samples; rank 1 5 * 4 and one stand-in of weight 0
    per_epoch = [22, 21]
    assert [len(r) for r in reads] == [3 * n for n in per_epoch]
    for epoch in range(3):
        r0 = reads[0][epoch * 22 : (epoch + 1) * 22]
        r1 = reads[1][epoch * 21 : (epoch + 1) * 21]
        assert r1[-1] in r0  # the stand-in: a sample rank 0 trains on in that global batch
        assert sorted(r0 + r1[:-1]) == list(range(42))


# --- decisions made together ----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_a_signal_to_rank_1_only_stops_both_processes_at_the_same_step(tmp_path, sig):
    # rank 0's sacred observer takes 2 s to record the interruption; torchrun stops every
    # process once one exits non-zero, so rank 1 must wait for rank 0's record before it exits.
    # SIGUSR1 is a requeue signal: its requeue command runs once, on rank 0 only.
    calls = tmp_path / "calls.txt"
    job = torchrun(tmp_path, 2, "n_epochs=30", f"requeue_command='echo rank $RANK >> {calls}'",
                   wait=False, MARK_AT="3", MARK_SLEEP="0.1", SLOW_RECORD="2")  # fmt: skip
    records = tmp_path / "records"
    deadline = time.monotonic() + 120
    while not (records / "pid-1").exists() or not (records / "pid-1").read_text():
        assert job.poll() is None, job.communicate()[1][-4000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(int((records / "pid-1").read_text()), sig)
    _, err = job.communicate(timeout=180)
    code = str(128 + sig)
    assert job.returncode == 1, err[-4000:]  # torchrun's own code when its workers stopped
    assert f"exitcode  : {code}" in err  # the first one it saw to stop: 128 + the signal
    # each process stopped so itself (torchrun may have ended the last one to exit)
    assert [(records / f"exit-{rank}").read_text() for rank in (0, 1)] == [code, code]
    assert (records / "recorded").read_text() == "INTERRUPTED"  # rank 0's record was finished
    state = final(tmp_path)
    step = state["state"]["global_step"]
    assert step % 2 == 0  # an agreement step: a save (every 2 steps here) or every 10
    message = f"{signal.Signals(sig).name} received: saving at global step {step} and stopping"
    assert err.count(message) == 2
    assert len(state["ranks"]) == 2  # both processes took part in this last save
    assert digests(tmp_path)[-1]["step"] == step
    record = json.loads((tmp_path / "sacred" / "1" / "run.json").read_text())
    assert record["status"] == "INTERRUPTED"
    assert (calls.read_text() if calls.exists() else "") == (
        "rank 0\n" if sig == signal.SIGUSR1 else ""
    )


@pytest.mark.slow
def test_a_nan_on_rank_1_only_is_skipped_on_both_processes(tmp_path):
    done = torchrun(tmp_path, 2, "nonfinite=skip", "n_epochs=2",
                    FAULT_AT="4", FAULT_RANK="1", FAULT_SIGNAL="-1")  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    state = final(tmp_path)
    assert state["state"]["skipped_steps"] == 1
    assert all(torch.isfinite(w).all() for w in state["model"]["weights"].values())
    assert all(len(set(d["digests"])) == 1 for d in digests(tmp_path))


@pytest.mark.slow
def test_early_stopping_stops_every_process_where_one_process_stops(tmp_path):
    # lr=0.5 overshoots: validation stops improving after step 2, and patience 2 ends the run
    early = ["lr=0.5", "early_stopping=2", "validate_iterations=2", "n_epochs=30"]
    summaries = {}
    for nproc in (1, 2):
        done = torchrun(tmp_path / str(nproc), nproc, *early)
        assert done.returncode == 0, done.stderr[-4000:]
        summaries[nproc] = json.loads((run_dir(tmp_path / str(nproc)) / "run.json").read_text())
        summaries[nproc] = summaries[nproc]["summary"]
    one, two = summaries[1], summaries[2]
    assert one["stopped"] == two["stopped"] == "early_stopping"
    assert one["global_step"] == two["global_step"] < 30 * 6  # long before n_epochs
    assert one["best"]["step"] == two["best"]["step"]
    assert two["test"]["loss"] == pytest.approx(one["test"]["loss"], rel=1e-10)  # best weights
    assert all(len(set(d["digests"])) == 1 for d in digests(tmp_path / "2"))


# --- resume ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def crashed(tmp_path_factory) -> Path:
    """A 2-process run that failed on rank 0 in step 9 (its last checkpoint: step 8)."""
    tmp = tmp_path_factory.mktemp("crashed")
    done = torchrun(tmp, 2, "resume=auto", FAULT_AT="9", FAULT_RANK="0", FAULT_SIGNAL="0")
    assert done.returncode != 0 and "injected failure at step 9 on rank 0" in done.stderr
    assert final(tmp)["state"]["global_step"] == 8
    return tmp


@pytest.mark.slow
def test_a_two_process_resume_on_two_processes_is_bit_for_bit(crashed, straight, tmp_path):
    shutil.copytree(crashed, tmp_path, dirs_exist_ok=True)
    done = torchrun(tmp_path, 2, "resume=auto")
    assert done.returncode == 0, done.stderr[-4000:]
    a, b = final(straight[2]), final(tmp_path)
    for key in ("model", "state", "rng", "ranks"):
        assert_same(a[key], b[key], key)


@pytest.mark.slow
def test_a_two_process_run_resumed_by_one_process_ends_within_1e_10(crashed, straight, tmp_path):
    shutil.copytree(crashed, tmp_path, dirs_exist_ok=True)
    done = torchrun(tmp_path, 1, f"resume={run_dir(tmp_path)}")  # batch 8: the same global batch
    assert done.returncode == 0, done.stderr[-4000:]
    assert final(tmp_path)["state"]["global_step"] == 18
    assert_close(final(straight[2])["model"]["weights"], final(tmp_path)["model"]["weights"], 1e-10)


@pytest.mark.slow
def test_a_crash_under_max_restarts_ends_equal_to_an_uninterrupted_run(straight, tmp_path):
    done = torchrun(tmp_path, 2, restarts=1, FAULT_AT="9", FAULT_RANK="1", FAULT_SIGNAL="0")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "injected failure at step 9 on rank 1" in done.stderr  # it did crash once
    a, b = final(straight[2]), final(tmp_path)
    for key in ("model", "state", "ranks"):
        assert_same(a[key], b[key], key)


@pytest.mark.slow
def test_a_gan_style_model_stays_equal_across_processes(tmp_path):
    done = torchrun(tmp_path, 2, "model=gan", "n_epochs=2")
    assert done.returncode == 0, done.stderr[-4000:]
    seen = digests(tmp_path)
    assert len(seen) == 6 and all(len(set(d["digests"])) == 1 for d in seen)
    optimizers = final(tmp_path)["model"]["optimizers"]
    assert sorted(optimizers) == ["opts.0", "opts.1"] and all(
        o["state"] for o in optimizers.values()
    )


@pytest.mark.slow
def test_a_nan_on_rank_1_only_stops_both_processes_with_nonfinite_error(tmp_path):
    done = torchrun(tmp_path, 2, "n_epochs=2", FAULT_AT="4", FAULT_RANK="1", FAULT_SIGNAL="-1")
    assert done.returncode == 1
    named = "process 1: regression: loss is nan at global step 4"
    assert done.stderr.count(named) == 2  # both processes stop together, naming the NaN
    state = final(tmp_path)
    assert state["state"]["global_step"] < 10
    assert all(torch.isfinite(w).all() for w in state["model"]["weights"].values())
