"""Bad input on the command line is refused before anything is written (no folder, no events)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "resumable.py"


def run(tmp_path: Path, *updates: str) -> subprocess.CompletedProcess:
    args = [sys.executable, str(SCRIPT), "-F", str(tmp_path / "sacred"), "with"]
    args += [f"model_dir={tmp_path / 'models'}", f"tensorboard_dir={tmp_path / 'tb'}", *updates]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("updates", "expected"),
    [
        (["n_epoch=3"], ["unknown key 'n_epoch'", "did you mean 'n_epochs'?"]),
        (
            ["n_epochs=ten", "n_global_iterations=-1", "device=gpu", "save_iterations=-3"],
            [
                "invalid config (4 problems)",
                "n_epochs='ten' must be a positive int",
                "n_global_iterations=-1 must be a positive int",
                "device='gpu' is not a device name",
                "save_iterations=-3 must be a positive int (steps), 'epoch'",
            ],
        ),
        (["n_epochs=2.5", "device=cuda:7"], ["n_epochs=2.5", "device='cuda:7'"]),
        (["n_samples=0"], ["the train dataset is empty"]),
        (
            ["n_samples=5", "batch_size=8", "drop_last=True"],
            ["train loader yields no batches", "5 samples, batch_size=8, drop_last=True"],
        ),
    ],
    ids=["typo", "several", "float-and-gpu", "empty-data", "batch-over-data"],
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, updates, expected):
    result = run(tmp_path, *updates)
    assert result.returncode == 1
    for text in expected:
        assert text in result.stderr
    assert not (tmp_path / "models").exists()
    assert not (tmp_path / "tb").exists()
