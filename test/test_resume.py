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
