"""Smoke tests of benchmarks/: each script runs with --quick and prints its JSON line.

They check that the scripts run and report what they promise, never how fast anything is.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_quick(script: str, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("JSON: ")]
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0].removeprefix("JSON: "))


def test_bench_loop_reports_every_variant_and_matches_the_hand_written_loss():
    report = run_quick("bench_loop.py")
    assert report["benchmark"] == "loop"
    assert set(report["models"]) == {"tiny", "mlp"}
    for result in report["models"].values():
        assert set(result["us_per_step"]) == {"hand_log", "hand_nolog", "mlproject"}
        assert all(us > 0 for us in result["us_per_step"].values())
        for key in ("mlproject_vs_hand_log", "mlproject_vs_hand_nolog", "mlproject_fixed_ms"):
            assert result[key] > 0
        # Same seed, data order and optimizer: mlproject must end exactly where (a) ends.
        assert result["loss_match"] is True
        assert result["weights_match"] is True
    assert report["lightning"].startswith("skipped")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("lightning") is None, reason="lightning not installed")
def test_bench_loop_runs_lightning_when_installed():
    report = run_quick("bench_loop.py", "--models", "tiny", "--lightning")
    result = report["models"]["tiny"]
    assert result["us_per_step"]["lightning"] > 0
    assert result["lightning_loss_match"] is True


def test_bench_logging_reports_each_writer_per_scalar():
    report = run_quick("bench_logging.py")
    assert report["benchmark"] == "logging"
    rows = report["per_scalar"]
    assert {"tensorboardx", "sink_1000", "sink_flush_1000", "sink_flush_2", "run_writer"} <= set(
        rows
    )
    if report["before"].startswith("EventWriter of commit"):  # else not a git checkout
        assert {"before_flush_1000", "before_flush_2", "before_numpy_1000"} <= set(rows)
    for row in rows.values():
        assert row["total_us"] >= row["hot_us"] > 0
        assert row["total_vs_tensorboardx"] > 0


def test_bench_startup_reports_both_imports_and_their_difference():
    report = run_quick("bench_startup.py")
    assert report["benchmark"] == "startup"
    assert report["baseline_s"] > 0 and report["mlproject_s"] > 0
    assert report["difference_s"] == pytest.approx(
        report["mlproject_s"] - report["baseline_s"], abs=0.002
    )
    assert "mlproject" in report["extra_modules"]


def test_bench_step_reports_both_loops_and_their_ratio():
    report = run_quick("bench_step.py")
    assert report["benchmark"] == "step"
    assert set(report["seconds"]) == {"hand", "mlproject"}
    assert report["ratio"] > 0 and all(0 <= a <= 1 for a in report["accuracy"].values())


def test_bench_runs_times_the_table_in_process_and_as_a_command():
    report = run_quick("bench_runs.py")
    assert report["benchmark"] == "runs" and report["runs"] == 100
    # The generated folders give every status and the columns a real sweep gives.
    assert report["statuses"] == ["completed", "damaged", "died", "failed", "interrupted"]
    assert report["columns"] == [
        "run", "status", "steps", "hidden", "lr", "seed", "best_loss", "best_step",
        "test_accuracy", "test_loss", "problem",
    ]  # fmt: skip
    labels = {"main() table", "main() csv", "main() json", "main() where+sort", "read_runs only"}
    assert labels | {"python -c 'import mlproject'", "python -m mlproject runs"} == set(
        report["seconds_median"]
    )
    assert all(s > 0 for s in report["seconds_median"].values())
    assert report["command_beyond_import_s"] == pytest.approx(
        report["command_s"] - report["import_s"], abs=0.002
    )


@pytest.mark.slow
def test_bench_distributed_times_one_and_two_processes_under_torchrun():
    report = run_quick("bench_distributed.py")
    assert report["benchmark"] == "distributed"
    assert set(report["us_per_step"]) == {"1", "2"} and report["ratio"] > 0
