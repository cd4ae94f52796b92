"""Exact resume: a run stopped at any step and started again equals the run that never stopped.

The CLI tests drive ``test/scripts/resumable.py`` (shuffled DataLoader, random per-sample
noise, dropout, Adam, StepLR) in subprocesses and stop it with real signals; the in-process
test stops a short run after every step k in turn.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

SCRIPT = Path(__file__).parent / "scripts" / "resumable.py"
COMMON = ["n_epochs=4", "seed=1", "save_iterations=3"]  # 5 batches per epoch: 20 steps


def run_script(
    tmp: Path, *updates: str, observer: Path | None = None, fault: tuple[int, int] | None = None
) -> subprocess.CompletedProcess:
    """Run the resumable script; ``fault=(step, signal)`` injects a fault (see its docstring)."""
    env = dict(os.environ)
    if fault is not None:
        env["FAULT_AT"], env["FAULT_SIGNAL"] = str(fault[0]), str(int(fault[1]))
    args = [sys.executable, str(SCRIPT), "-l", "WARNING"]
    if observer is not None:
        args += ["-F", str(observer)]
    args += [
        "with",
        f"model_dir={tmp / 'models'}",
        f"tensorboard_dir={tmp / 'tb'}",
        *COMMON,
        *updates,
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)


def last_checkpoint(tmp: Path) -> dict:
    (run_dir,) = (tmp / "models").iterdir()
    path = sorted(run_dir.glob("checkpoint-*.pt"))[-1]
    return torch.load(path, weights_only=True)


def scalar_events(tmp: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's TensorBoard folder, read with TensorBoard's own reader."""
    (tb_run,) = (tmp / "tb").iterdir()
    acc = EventAccumulator(str(tb_run), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def raw_scalar_events(tmp: Path) -> list[tuple[str, int]]:
    """(tag, step) of every scalar written in every event file, purges not applied."""
    (tb_run,) = (tmp / "tb").iterdir()
    found = []
    for path in sorted(tb_run.glob("*tfevents*")):
        for event in EventFileLoader(str(path)).Load():
            found += [
                (v.tag, event.step) for v in event.summary.value if v.HasField("simple_value")
            ]
    return found


def assert_same(a, b, path="checkpoint"):
    """Bit-for-bit equality of two nested checkpoint structures."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path} keys differ: {set(a) ^ set(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{path} lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_resumed_equals_straight(straight: Path, resumed: Path) -> None:
    a, b = last_checkpoint(straight), last_checkpoint(resumed)
    assert a["state"]["global_step"] == 20
    for key in ("model", "state", "rng", "epoch_rng", "sinks"):
        assert_same(a[key], b[key], key)
    events_a, events_b = scalar_events(straight), scalar_events(resumed)
    times_a, times_b = events_a.pop("train/epoch_time"), events_b.pop("train/epoch_time")
    assert [step for step, _ in times_a] == [step for step, _ in times_b] == [5, 10, 15, 20]
    assert events_a == events_b  # same values at the same steps, bit for bit (float32)
    assert len(events_a["train/loss"]) == 20
    raw = raw_scalar_events(resumed)
    assert len(raw) == len(set(raw)), "a (tag, step) was written twice"


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[int, Path]:
    """The uninterrupted reference runs, without and with DataLoader workers."""
    runs = {}
    for workers in (0, 2):
        tmp = tmp_path_factory.mktemp(f"straight{workers}")
        result = run_script(tmp, f"num_workers={workers}")
        assert result.returncode == 0, result.stderr
        runs[workers] = tmp
    return runs


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "step", "workers", "code"),
    [
        (signal.SIGTERM, 7, 0, 143),  # mid-epoch, between two saves
        (signal.SIGINT, 13, 2, 130),  # mid-epoch, DataLoader workers
        (signal.SIGKILL, 11, 2, -signal.SIGKILL),  # killed outright after the save at step 9
        (0, 8, 0, 1),  # an exception after the save at step 6 (events flushed beyond it)
    ],
    ids=["sigterm", "sigint-workers", "sigkill-workers", "exception"],
)
def test_stopped_run_resumes_bit_for_bit(tmp_path, straight, sig, step, workers, code):
    observer = tmp_path / "sacred"
    command = ("resume=auto", f"num_workers={workers}")
    stopped = run_script(tmp_path, *command, observer=observer, fault=(step, sig))
    assert stopped.returncode == code, stopped.stderr
    status = json.loads((observer / "1" / "run.json").read_text())["status"]
    expected = {signal.SIGTERM: "INTERRUPTED", signal.SIGINT: "INTERRUPTED", 0: "FAILED"}
    assert status == expected.get(sig, "RUNNING")  # SIGKILL leaves no chance to say anything
    if sig in (signal.SIGTERM, signal.SIGINT):  # saved at the step boundary after the signal
        assert last_checkpoint(tmp_path)["state"]["global_step"] == step
    resumed = run_script(tmp_path, *command, observer=observer)  # the same command again
    assert resumed.returncode == 0, resumed.stderr
    assert len(list((tmp_path / "models").iterdir())) == 1, "resume must reuse the run folder"
    assert json.loads((observer / "2" / "run.json").read_text())["status"] == "COMPLETED"
    assert_resumed_equals_straight(straight[workers], tmp_path)


def test_resume_auto_starts_fresh_when_there_is_nothing(tmp_path):
    result = run_script(tmp_path, "resume=auto", "n_epochs=1")
    assert result.returncode == 0, result.stderr
    assert last_checkpoint(tmp_path)["state"]["global_step"] == 5


# --- in process: stop after every step k of a short run ----------------------------------------
sys.path.insert(0, str(SCRIPT.parent))
from resumable import Resumable, in_process_config  # noqa: E402


def tiny_config(model_dir: Path, **updates) -> dict:
    return in_process_config(model_dir, **{"n_epochs": 2, **updates})


def final_state(model_dir: Path) -> dict:
    (run_dir,) = model_dir.iterdir()
    return torch.load(sorted(run_dir.glob("checkpoint-*.pt"))[-1], weights_only=True)


@pytest.mark.slow
def test_resume_after_every_step_equals_straight_run(tmp_path, monkeypatch):
    Resumable(tiny_config(tmp_path / "straight")).train()
    reference = final_state(tmp_path / "straight")
    assert reference["state"]["global_step"] == 10
    for k in range(1, 10):
        model_dir = tmp_path / f"stop{k}"
        monkeypatch.setenv("FAULT_AT", str(k + 1))
        monkeypatch.setenv("FAULT_SIGNAL", "0")
        with pytest.raises(RuntimeError, match=f"injected failure at step {k + 1}"):
            Resumable(tiny_config(model_dir, resume="auto")).train()
        assert final_state(model_dir)["state"]["global_step"] == k
        monkeypatch.delenv("FAULT_AT")
        Resumable(tiny_config(model_dir, resume="auto")).train()
        resumed = final_state(model_dir)
        for key in ("model", "state", "rng"):
            assert_same(reference[key], resumed[key], f"stop at {k}: {key}")


def test_resume_path_accepts_a_file_or_a_run_folder(tmp_path):
    Resumable(tiny_config(tmp_path / "m", n_epochs=1, keep_checkpoints=None)).train()
    (run_dir,) = (tmp_path / "m").iterdir()
    first = run_dir / "checkpoint-000000002.pt"
    project = Resumable(tiny_config(tmp_path / "m", resume=str(first)))
    assert project.state.global_step == 2 and project.run_dir == run_dir
    project = Resumable(tiny_config(tmp_path / "m", resume=str(run_dir)))
    assert project.state.global_step == 5


def test_seed_is_stored_and_reused_on_resume(tmp_path):
    Resumable(tiny_config(tmp_path / "m", n_epochs=1, seed=11)).train()
    project = Resumable(tiny_config(tmp_path / "m", seed=99, resume="auto"))
    assert project.config["seed"] == 11


def test_same_seed_same_run_other_seed_other_run(tmp_path):
    series = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        Resumable(
            tiny_config(tmp_path / name, seed=seed, tensorboard_dir=str(tmp_path / f"tb{name}"))
        ).train()
        (tb_run,) = (tmp_path / f"tb{name}").iterdir()
        acc = EventAccumulator(str(tb_run), size_guidance={"scalars": 0})
        acc.Reload()
        series.append(
            (
                final_state(tmp_path / name)["model"]["weights"],
                [e.value for e in acc.Scalars("train/loss")],
            )
        )
    (wa, la), (wb, lb), (wc, lc) = series
    assert_same(wa, wb)
    assert la == lb
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert la != lc


def test_deterministic_option_turns_on_deterministic_algorithms(tmp_path):
    seen = []

    class Probe(Resumable):
        @staticmethod
        def get_model(config):
            model = Resumable.get_model(config)
            original = model.train_batch

            def train_batch(batch):
                seen.append(torch.are_deterministic_algorithms_enabled())
                return original(batch)

            model.train_batch = train_batch
            return model

    before = torch.are_deterministic_algorithms_enabled()
    Probe(tiny_config(tmp_path / "m", n_epochs=1, deterministic=True)).train()
    assert seen and all(seen)
    assert torch.are_deterministic_algorithms_enabled() == before  # restored afterwards
    os.environ.get("CUBLAS_WORKSPACE_CONFIG")  # set for CUDA; harmless on CPU


# --- continue means the same run; fork means a new one ------------------------------------------
def tree_hashes(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the sha256 of its bytes."""
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_resume_auto_continues_only_the_same_experiment(tmp_path, capsys):
    models = tmp_path / "m"
    Resumable(tiny_config(models, n_epochs=1, lr=0.02, resume="auto")).train()
    (first,) = models.iterdir()
    Resumable(tiny_config(models, n_epochs=1, lr=1e-4, resume="auto")).train()
    err = capsys.readouterr().err
    assert f"resume=auto: not continuing {first} (lr: 0.02 -> 0.0001); starting a new run" in err
    second = next(p for p in models.iterdir() if p != first)
    # a longer run, another device or log interval is the same experiment: it continues
    longer = Resumable(tiny_config(models, n_epochs=2, lr=1e-4, resume="auto", seed=9))
    assert (longer.run_dir, longer.state.global_step) == (second, 5)
    assert longer.model.opt.param_groups[0]["initial_lr"] == 1e-4
    assert longer.train()["global_step"] == 10
    assert len(list(models.iterdir())) == 2


def test_resume_auto_picks_the_newest_run_by_its_record_not_file_times(tmp_path):
    models = tmp_path / "m"
    Resumable(tiny_config(models, n_epochs=1)).train()
    (older,) = models.iterdir()
    Resumable(tiny_config(models, n_epochs=1)).train()
    (newer,) = [p for p in models.iterdir() if p != older]
    future = time.time() + 3600  # the older run copied with other timestamps (or a clock step)
    for path in [older, *older.rglob("*")]:
        os.utime(path, (future, future))
    assert json.loads((newer / "run.json").read_text())["sequence"] == 2
    assert Resumable(tiny_config(models, n_epochs=2, resume="auto")).run_dir == newer


def test_a_fork_never_touches_its_parent_and_uses_the_new_hyperparameters(tmp_path):
    models, tb = tmp_path / "m", tmp_path / "tb"
    Resumable(tiny_config(models, n_epochs=2, tensorboard_dir=str(tb))).train()
    (parent,) = models.iterdir()
    before = (tree_hashes(parent), tree_hashes(tb / parent.name))
    saved = torch.load(parent / "best.pt", weights_only=True)
    fork = Resumable.load(parent, lr=1e-4, n_epochs=1, tensorboard_dir=str(tb))
    assert fork.state.global_step == 0
    state = fork.model.opt.state_dict()
    assert state["param_groups"][0]["lr"] == 1e-4  # this config's lr ...
    first = state["state"][0]["exp_avg"]
    assert torch.equal(first, saved["model"]["optimizers"]["opt"]["state"][0]["exp_avg"])  # moments
    fork.train()
    assert (tree_hashes(parent), tree_hashes(tb / parent.name)) == before
    assert fork.run_dir != parent and (tb / fork.run_dir.name).is_dir()
    record = json.loads((fork.run_dir / "run.json").read_text())
    assert record["parent"] == {"checkpoint": str((parent / "best.pt").resolve()), "step": 10}
    acc = EventAccumulator(str(tb / fork.run_dir.name), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/lr")] == [pytest.approx(1e-4)] * 5
    fresh = Resumable.load(parent / "best.pt", init_from_optimizer=False, lr=1e-4)
    assert fresh.model.opt.state_dict()["state"] == {}


def test_init_from_on_the_command_line_forks_and_sacred_records_the_parent(tmp_path):
    first = run_script(tmp_path, "n_epochs=1")
    assert first.returncode == 0, first.stderr
    (parent,) = (tmp_path / "models").iterdir()
    before = tree_hashes(parent)
    observer = tmp_path / "sacred"
    fork = run_script(tmp_path, f"init_from={parent}", "lr=0.001", "n_epochs=1", observer=observer)
    assert fork.returncode == 0, fork.stderr
    assert tree_hashes(parent) == before
    assert len(list((tmp_path / "models").iterdir())) == 2
    info = json.loads((observer / "1" / "info.json").read_text())
    assert info["mlproject"]["parent"]["step"] == 5
    assert info["mlproject"]["run_dir"] != str(parent)


def test_load_model_needs_no_dataset_and_takes_the_best_weights(tmp_path):
    Resumable(tiny_config(tmp_path / "m", n_epochs=2)).train()
    (run_dir,) = (tmp_path / "m").iterdir()

    class NoData(Resumable):
        @staticmethod
        def get_dataset_factory(config):
            raise AssertionError("load_model must not build datasets")

    model = NoData.load_model(run_dir)
    best = torch.load(run_dir / "best.pt", weights_only=True)["model"]["weights"]
    assert_same(best, model.state_dict())
    assert not model.training and model.device == torch.device("cpu")
    newest = NoData.load_model(run_dir / "checkpoint-000000010.pt")
    assert newest.state_dict().keys() == best.keys()


def test_optimizers_in_a_list_are_saved_and_resumed_bit_for_bit(tmp_path, monkeypatch):
    class TwoOptimizers(Resumable):
        @staticmethod
        def get_model(config):
            model = Resumable.get_model(config)
            first, second = model.net[0], model.net[3]
            model.opts = [
                torch.optim.Adam(first.parameters(), lr=0.01),
                torch.optim.Adam(second.parameters(), lr=0.02),
            ]
            del model.opt, model.sched
            model.on_epoch_end = lambda epoch: None

            def train_batch(batch):
                x, y = batch
                for opt in model.opts:
                    opt.zero_grad()
                    loss = nn.functional.cross_entropy(model.net(x), y)
                    loss.backward()
                    opt.step()
                if model.global_step + 1 == model.fault_at:
                    raise RuntimeError("stop")
                return {"loss": loss.detach()}

            model.train_batch = train_batch
            return model

    from torch import nn

    TwoOptimizers(tiny_config(tmp_path / "straight")).train()
    monkeypatch.setenv("FAULT_AT", "7")
    with pytest.raises(RuntimeError, match="stop"):
        TwoOptimizers(tiny_config(tmp_path / "stopped", resume="auto")).train()
    monkeypatch.delenv("FAULT_AT")
    TwoOptimizers(tiny_config(tmp_path / "stopped", resume="auto")).train()
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "stopped")
    assert sorted(a["model"]["optimizers"]) == ["opts.0", "opts.1"]
    assert a["model"]["optimizers"]["opts.1"]["state"]  # the second Adam's moments are saved
    for key in ("model", "state", "rng"):
        assert_same(a[key], b[key], key)


# --- what a cluster does to a job ---------------------------------------------------------------
def test_a_checkpoint_without_its_record_is_incomplete_and_starts_the_run_afresh(tmp_path, recwarn):
    models = tmp_path / "m"
    with pytest.raises(RuntimeError):  # dies in step 2, after the first checkpoint
        os.environ["FAULT_AT"], os.environ["FAULT_SIGNAL"] = "2", "0"
        try:
            Resumable(tiny_config(models, resume="auto")).train()
        finally:
            del os.environ["FAULT_AT"], os.environ["FAULT_SIGNAL"]
    (run_dir,) = models.iterdir()
    first = run_dir / "checkpoint-000000001.pt"
    first.with_name(first.name + ".sha256").unlink()  # killed between its rename and its record
    (run_dir / "checkpoint-000000002.pt.tmp").write_bytes(b"half")  # killed mid-write
    project = Resumable(tiny_config(models, resume="auto"))
    assert project.start.kind == "new"  # nothing complete left: the run starts afresh
    before_step_1 = []
    project.model.on_train_begin = lambda: before_step_1.append(
        (first.exists(), list(run_dir.glob("*.tmp")))
    )
    summary = project.train()
    assert before_step_1 == [(False, [])]  # both cleaned up, under the lock, before step 1
    assert summary["global_step"] == 10 and summary["run_dir"] == str(run_dir)
    assert not [w for w in recwarn.list if "checkpoint" in str(w.message)]  # nothing to warn
    assert all(checkpoint_ok(path) for path in run_dir.glob("checkpoint-*.pt"))


def checkpoint_ok(path: Path) -> bool:
    from mlproject import checkpoint

    return checkpoint.problem(path) is None


@pytest.mark.parametrize("where", ["after-last-save", "completed"])
def test_a_run_stopped_after_its_last_step_resumes_to_the_straight_end(tmp_path, where):
    from mlproject import checkpoint

    config = dict(n_epochs=1, n_global_iterations=10, resume="auto")  # 2 epochs, ends on one
    straight = Resumable(tiny_config(tmp_path / "straight", **config))
    expected = straight.train()
    models = tmp_path / "m"
    if where == "after-last-save":  # killed in the evaluation after step 10's checkpoint
        os.environ.update(FAULT_AT="10", FAULT_SIGNAL="0", FAULT_WHERE="eval")
        try:
            with pytest.raises(RuntimeError, match="injected failure at step 10"):
                Resumable(tiny_config(models, **config)).train()
        finally:
            for key in ("FAULT_AT", "FAULT_SIGNAL", "FAULT_WHERE"):
                del os.environ[key]
    else:
        Resumable(tiny_config(models, **config)).train()
    (run_dir,) = models.iterdir()
    before = tree_hashes(run_dir)
    again = Resumable(tiny_config(models, **config))
    summary = again.train()
    for key in ("global_step", "epochs", "best", "validation", "test"):
        assert summary[key] == expected[key], key
    assert again.model.sched.state_dict() == straight.model.sched.state_dict()
    if where == "completed":  # the same command again changes nothing
        assert tree_hashes(run_dir) == before
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    assert checkpoint.latest_valid(run_dir).name == "checkpoint-000000010.pt"


def test_a_completed_run_started_again_reports_its_stored_summary_as_its_result(tmp_path):
    observer = tmp_path / "sacred"
    assert run_script(tmp_path, "resume=auto", observer=observer).returncode == 0
    (run_dir,) = (tmp_path / "models").iterdir()
    before = (tree_hashes(run_dir), tree_hashes(tmp_path / "tb"))
    again = run_script(tmp_path, "resume=auto", observer=observer)
    assert again.returncode == 0, again.stderr
    assert f"run {run_dir} is complete (step 20): nothing to do" in again.stderr
    assert (tree_hashes(run_dir), tree_hashes(tmp_path / "tb")) == before
    first, second = (json.loads((observer / n / "run.json").read_text()) for n in ("1", "2"))
    assert second["status"] == "COMPLETED" and second["result"] == first["result"]
    info = json.loads((observer / "2" / "info.json").read_text())
    assert info["summary"] == json.loads((run_dir / "run.json").read_text())["summary"]


def test_a_resume_from_an_older_checkpoint_leaves_the_newer_timeline_aside(tmp_path, capsys):
    models = tmp_path / "m"
    Resumable(tiny_config(models, n_epochs=1, keep_checkpoints=None)).train()  # steps 1..5
    (run_dir,) = models.iterdir()
    os.environ.update(FAULT_AT="4", FAULT_SIGNAL="0")
    try:
        with pytest.raises(RuntimeError):  # the branch from step 2 dies in its step 4
            older = str(run_dir / "checkpoint-000000002.pt")
            Resumable(tiny_config(models, n_epochs=1, resume=older)).train()
    finally:
        del os.environ["FAULT_AT"], os.environ["FAULT_SIGNAL"]
    assert "leaves a newer timeline: moved 4 later checkpoint file(s)" in capsys.readouterr().err
    (aside,) = (run_dir / "abandoned").iterdir()
    assert sorted(p.name for p in aside.glob("*.pt")) == [
        "best.pt", "checkpoint-000000003.pt", "checkpoint-000000004.pt", "checkpoint-000000005.pt"
    ]  # fmt: skip
    resumed = Resumable(tiny_config(models, n_epochs=1, resume="auto"))
    assert resumed.state.global_step == 3  # the branch's newest, not the abandoned step 5
    resumed.train()
    reference = Resumable(tiny_config(tmp_path / "straight", n_epochs=1))
    reference.train()
    assert_same(final_state(tmp_path / "straight")["model"], final_state(models)["model"])


def test_a_changed_number_of_batches_is_refused_mid_epoch(tmp_path):
    from mlproject.errors import CheckpointError

    models = tmp_path / "m"
    Resumable(tiny_config(models, n_global_iterations=2)).train()
    (run_dir,) = models.iterdir()
    with pytest.raises(CheckpointError, match="after batch 2 of an epoch of 5 batches, and the "
                       "training loader now has 10 .batch_size or the data changed"):  # fmt: skip
        Resumable(tiny_config(models, batch_size=4, resume=str(run_dir)))


def test_a_changed_number_of_batches_is_accepted_at_an_epochs_end(tmp_path):
    models = tmp_path / "m"
    Resumable(tiny_config(models, n_epochs=1)).train()  # 5 batches of 8, stopped at its end
    (run_dir,) = models.iterdir()
    with pytest.warns(UserWarning, match="changed config keys: batch_size: 8 -> 4"):
        project = Resumable(tiny_config(models, batch_size=4, resume=str(run_dir)))
    summary = project.train()
    assert summary["global_step"] == 5 + 10  # the second epoch in 10 batches of 4
    assert final_state(models)["state"]["batches_per_epoch"] == 10


def test_a_damaged_best_checkpoint_is_said_and_the_last_weights_are_tested(tmp_path, capsys):
    models = tmp_path / "m"
    Resumable(tiny_config(models, n_epochs=2)).train()
    (run_dir,) = models.iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    info["status"] = "running"  # what a kill during the final test leaves
    (run_dir / "run.json").write_text(json.dumps(info))
    best = run_dir / "best.pt"
    best.write_bytes(best.read_bytes()[:-10])
    project = Resumable(tiny_config(models, n_epochs=2, resume="auto"))
    summary = project.train()
    assert f"{best} is damaged" in capsys.readouterr().err
    assert summary["global_step"] == 10 and summary["test"]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
