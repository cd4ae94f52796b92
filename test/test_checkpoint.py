"""Checkpoints: atomic writes, completeness records, corruption detection, pruning, safe loading."""

from __future__ import annotations

import ast
import errno
import json
import re
import signal
import sys
from pathlib import Path

import pytest
import torch

import mlproject
from mlproject import checkpoint
from mlproject.errors import CheckpointError, DiskFullError, TrainingInterrupted

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from resumable import Resumable, in_process_config  # noqa: E402

config = in_process_config


def run_dir_of(model_dir: Path) -> Path:
    (run_dir,) = model_dir.iterdir()
    return run_dir


def test_save_writes_file_then_record_and_load_verifies(tmp_path):
    path = tmp_path / "checkpoint-000000001.pt"
    fields = {key: {} for key in checkpoint.Checkpoint.__annotations__ if key != "format"}
    payload = checkpoint.build(**{**fields, "state": {"global_step": 1}, "run_name": "r"})
    checkpoint.save(payload, path)
    record = json.loads(checkpoint.record_path(path).read_text())
    assert record["size"] == path.stat().st_size and record["step"] == 1
    assert checkpoint.load(path) == payload
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "empty", "flip"])
def test_corrupt_checkpoint_is_named_and_skipped_for_the_previous_one(tmp_path, damage):
    Resumable(config(tmp_path)).train()
    run_dir = run_dir_of(tmp_path)
    newest = run_dir / "checkpoint-000000005.pt"
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        newest.write_bytes(b"")
    else:
        newest.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    with pytest.warns(UserWarning, match="skipping corrupt checkpoint .*checkpoint-000000005.pt"):
        project = Resumable(config(tmp_path, resume="auto"))
    assert project.state.global_step == 4


def test_no_usable_checkpoint_stops_with_a_clear_message(tmp_path):
    Resumable(config(tmp_path, n_global_iterations=2)).train()
    for path in run_dir_of(tmp_path).glob("checkpoint-*.pt"):
        path.write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="all 2 complete"):
        Resumable(config(tmp_path, resume="auto"))


def test_failure_in_the_middle_of_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def dying_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the third checkpoint: write part of it, then die
            f.write(b"partial")
            raise OSError("disk vanished")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", dying_save)
    with pytest.raises(OSError, match="disk vanished"):
        Resumable(config(tmp_path, keep_checkpoints=2)).train()
    monkeypatch.undo()
    run_dir = run_dir_of(tmp_path)
    # a failed save prunes nothing and leaves no partial file
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("checkpoint")) == [
        "checkpoint-000000001.pt", "checkpoint-000000001.pt.sha256",
        "checkpoint-000000002.pt", "checkpoint-000000002.pt.sha256",
    ]  # fmt: skip
    project = Resumable(config(tmp_path, resume="auto"))
    assert project.state.global_step == 2


def test_keep_checkpoints_prunes_old_ones_but_never_best(tmp_path):
    Resumable(config(tmp_path, n_epochs=2, keep_checkpoints=2)).train()
    run_dir = run_dir_of(tmp_path)
    names = sorted(p.name for p in run_dir.glob("*.pt"))
    assert names == ["best.pt", "checkpoint-000000009.pt", "checkpoint-000000010.pt"]
    assert all(checkpoint.problem(run_dir / n) is None for n in names)


def test_second_signal_during_the_save_does_not_corrupt_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FAULT_AT", "3")
    monkeypatch.setenv("FAULT_SIGNAL", str(int(signal.SIGTERM)))
    real_save = checkpoint.save

    def save_with_second_signal(payload, path):
        signal.raise_signal(signal.SIGTERM)  # arrives while the checkpoint is being written
        real_save(payload, path)

    monkeypatch.setattr(checkpoint, "save", save_with_second_signal)
    with pytest.raises(TrainingInterrupted) as stopped:
        Resumable(config(tmp_path, save_iterations=100)).train()
    assert stopped.value.exit_code == 143 and stopped.value.step == 3
    newest = run_dir_of(tmp_path) / "checkpoint-000000003.pt"
    assert checkpoint.problem(newest) is None


def test_incompatible_model_is_refused_with_what_differs(tmp_path):
    Resumable(config(tmp_path)).train()
    with pytest.raises(
        CheckpointError, match=r"'net.0.weight': checkpoint \[8, 4\], model \[16, 4\]"
    ):
        Resumable(config(tmp_path, hidden=16, resume=str(run_dir_of(tmp_path))))


def test_other_optimizer_is_refused(tmp_path):
    Resumable(config(tmp_path)).train()

    class WithSGD(Resumable):
        @staticmethod
        def get_model(config):
            model = Resumable.get_model(config)
            model.opt = torch.optim.SGD(model.net.parameters(), lr=0.1)
            model.sched = torch.optim.lr_scheduler.StepLR(model.opt, step_size=3)
            return model

    with pytest.raises(CheckpointError, match="optimizers: checkpoint {'opt': 'Adam'}"):
        WithSGD(config(tmp_path, resume="auto"))


def test_longer_training_is_an_allowed_change(tmp_path):
    Resumable(config(tmp_path)).train()
    summary = Resumable(config(tmp_path, n_epochs=2, resume="auto")).train()
    assert summary["global_step"] == 10 and summary["epochs"] == 2


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_with_a_pickle_payload_is_refused_without_running_it(tmp_path):
    Resumable(config(tmp_path)).train()
    run_dir = run_dir_of(tmp_path)
    marker = tmp_path / "code-ran"
    evil = run_dir / "checkpoint-000000099.pt"
    payload = torch.load(run_dir / "checkpoint-000000005.pt", weights_only=True)
    payload["extra"] = Payload(str(marker))
    checkpoint.save(payload, evil)  # a valid record: only the content is hostile
    with pytest.raises(CheckpointError, match="refused"):
        Resumable(config(tmp_path, resume=str(evil)))
    assert not marker.exists()


def test_every_torch_load_in_the_package_uses_weights_only_true():
    package = Path(mlproject.__file__).parent
    calls = []
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load":
                if getattr(node.func.value, "id", None) == "torch":
                    calls.append((source.name, node))
    assert calls, "the package loads checkpoints somewhere"
    for name, node in calls:
        flags = {k.arg: k.value for k in node.keywords}
        assert isinstance(flags.get("weights_only"), ast.Constant), name
        assert flags["weights_only"].value is True, name


def _no_space(monkeypatch, after: int) -> None:
    """Make every torch.save after the first ``after`` fail as a full disk does (ENOSPC)."""
    real_save, calls = torch.save, []

    def full(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            f.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full)


def test_a_full_disk_stops_with_the_space_needed_and_keeps_every_earlier_checkpoint(
    tmp_path, small_disk, monkeypatch
):
    disk = small_disk(160)  # room for a few 36 kB checkpoints, then full
    if disk is None:
        disk = tmp_path / "disk"
        _no_space(monkeypatch, after=3)
    models = disk / "m"
    with pytest.raises(DiskFullError) as full:
        Resumable(config(models, n_epochs=50, keep_checkpoints=None)).train()
    run_dir = run_dir_of(models)
    assert re.search(
        rf"no space left to write checkpoint-\d+\.pt in {re.escape(str(run_dir))}: it needs "
        r"about [\d.]+ (kB|MB) and [\d.]+ (bytes|kB|MB) are free",
        str(full.value),
    )
    assert not list(run_dir.glob("*.tmp"))
    saved = [p for _, p in checkpoint.periodic(run_dir) if checkpoint.is_complete(p)]
    assert saved and all(checkpoint.problem(p) is None for p in saved)


@pytest.mark.slow
def test_a_full_disk_through_the_cli_fails_the_run_with_one_message(tmp_path, small_disk):
    import subprocess

    disk = small_disk(160)
    if disk is None:
        pytest.skip("needs a real small disk: mounting a tmpfs needs root")
    script = Path(__file__).parent / "scripts" / "resumable.py"
    done = subprocess.run(
        [sys.executable, str(script), "-F", str(tmp_path / "sacred"), "with",
         f"model_dir={disk / 'm'}", "n_epochs=50", "keep_checkpoints=None", "seed=1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    run_dir = run_dir_of(disk / "m")
    message = [line for line in done.stderr.splitlines() if "DiskFullError" in line]
    assert len(message) == 1 and message[0].startswith("DiskFullError: no space left to write "), (
        done.stderr[-3000:]
    )
    assert f"in {run_dir}: it needs about" in message[0] and "resume=auto" in message[0]
    assert "Traceback" not in done.stderr
    record = json.loads((tmp_path / "sacred" / "1" / "run.json").read_text())
    assert record["status"] == "FAILED"
    assert "DiskFullError" in "".join(record["fail_trace"])  # the traceback stays on record
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert not list(run_dir.glob("*.tmp"))
    saved = [p for _, p in checkpoint.periodic(run_dir) if checkpoint.is_complete(p)]
    assert saved and all(checkpoint.problem(p) is None for p in saved)


def test_a_checkpoint_that_cannot_be_pruned_is_a_warning_and_pruning_retries_it(
    tmp_path, monkeypatch
):
    real_unlink, refused = Path.unlink, []

    def unlink(self, missing_ok=False):
        if self.name == "checkpoint-000000001.pt" and not refused:
            refused.append(self)
            raise PermissionError(13, "Permission denied")
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.warns(UserWarning, match="could not delete old checkpoint .*checkpoint-000000001"):
        summary = Resumable(config(tmp_path, keep_checkpoints=2)).train()
    assert summary["global_step"] == 5  # training went on
    names = sorted(p.name for p in run_dir_of(tmp_path).glob("checkpoint-*.pt"))
    assert names == ["checkpoint-000000004.pt", "checkpoint-000000005.pt"]  # retried later
