"""Non-finite losses: stop with the step named (default), or skip and count (nonfinite=skip)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mlproject import checkpoint
from mlproject.errors import NonFiniteLossError

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from resumable import Resumable, in_process_config  # noqa: E402


@pytest.fixture(autouse=True)
def nan_at_step_4(monkeypatch):
    monkeypatch.setenv("FAULT_AT", "4")
    monkeypatch.setenv("FAULT_SIGNAL", "-1")


def config(tmp_path: Path, **updates) -> dict:
    """Two epochs of 5 steps; a NaN loss is injected at step 4 (the fixture above)."""
    base = {"tensorboard_dir": str(tmp_path / "tb"), "n_epochs": 2}
    return in_process_config(tmp_path / "m", **{**base, **updates})


def test_nan_loss_stops_the_run_naming_the_step_with_only_finite_checkpoints(tmp_path):
    with pytest.raises(NonFiniteLossError, match="at global step 4"):
        Resumable(config(tmp_path)).train()
    (run_dir,) = (tmp_path / "m").iterdir()
    saved = sorted(p.name for p in run_dir.glob("checkpoint-*.pt"))
    assert saved[-1] == "checkpoint-000000003.pt"
    for name in saved:
        weights = checkpoint.load(run_dir / name)["model"]["weights"]
        assert all(torch.isfinite(w).all() for w in weights.values())


def test_skip_policy_skips_the_update_and_counts_it(tmp_path, tb_scalars):
    summary = Resumable(config(tmp_path, nonfinite="skip")).train()
    assert summary["global_step"] == 10
    (tb_run,) = (tmp_path / "tb").iterdir()
    skipped = dict(tb_scalars(tb_run)["train/skipped_steps"])
    assert skipped[3] == 0 and skipped[4] == 1 and skipped[10] == 1
    (run_dir,) = (tmp_path / "m").iterdir()
    final = checkpoint.load(sorted(run_dir.glob("checkpoint-*.pt"))[-1])
    assert final["state"]["skipped_steps"] == 1
    assert all(torch.isfinite(w).all() for w in final["model"]["weights"].values())


def test_custom_model_nan_is_caught_before_a_checkpoint(tmp_path):
    class Careless(Resumable):
        @staticmethod
        def get_model(config):
            model = Resumable.get_model(config)
            model.loss_is_finite = lambda loss: True  # a model that never checks
            return model

    with pytest.raises(NonFiniteLossError, match="global step 4"):
        Careless(config(tmp_path, save_iterations=2)).train()
    (run_dir,) = (tmp_path / "m").iterdir()
    assert sorted(p.name for p in run_dir.glob("checkpoint-*.pt"))[-1] == "checkpoint-000000002.pt"
