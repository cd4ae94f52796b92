"""Tests of mlproject.experiment, the sacred glue, through the digits example run as a program.

The module starts every command at once (the runs are independent) and each test reads one.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from mlproject.config import DEFAULTS

SCRIPT = "examples/digits/main.py"
STEPS = 30  # the digits train set is 20 batches of 64: the run ends in its second epoch

COMMANDS = {
    "observed": [
        "-F", "obs", "with", f"n_global_iterations={STEPS}", "model_dir=models",
        "tensorboard_dir=tb", "log_iteration_scalars=2", "save_iterations=10", "prefix=cli",
        "progress=True",
    ],
    "typo": ["-F", "obs_typo", "with", "n_epoch=3", "model_dir=models_typo"],
    "not_a_number": ["-F", "obs_nan", "with", "n_epochs=ten", "model_dir=models_nan"],
    "print_config": ["print_config", "with", "prefix=shown"],
}  # fmt: skip


@pytest.fixture(scope="module")
def runs(start_script, tmp_path_factory):
    """``{name: (CompletedProcess, cwd)}`` for every command in COMMANDS, run side by side."""
    cwd = tmp_path_factory.mktemp("experiment")
    started = {name: start_script(SCRIPT, *args, cwd=cwd) for name, args in COMMANDS.items()}
    done = {}
    for name, process in started.items():
        try:
            out, err = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done, cwd


@pytest.fixture(scope="module")
def observed(runs):
    """The completed run with a FileStorageObserver: its process and run-record folder."""
    done, cwd = runs
    result = done["observed"]
    assert result.returncode == 0, result.stderr[-3000:]
    return result, cwd, cwd / "obs" / "1"


def test_run_record_is_completed_with_the_summary_as_result(observed):
    _, _, record = observed
    run = json.loads((record / "run.json").read_text())
    assert run["status"] == "COMPLETED"
    assert 0.0 <= run["result"]["test"]["accuracy"] <= 1.0
    assert run["result"]["global_step"] == STEPS
    assert run["result"]["best"]["step"] == STEPS


def test_framework_keys_are_set_on_the_command_line(observed):
    result, cwd, record = observed
    config = json.loads((record / "config.json").read_text())
    assert config["n_global_iterations"] == STEPS
    assert config["save_iterations"] == 10
    assert config["prefix"] == "cli"
    run_dir = cwd / "models" / "cli_1_digits_mlp"  # prefix, sacred run id, model name
    saved = sorted(p.name for p in run_dir.glob("checkpoint-*.pt"))
    assert saved == [
        "checkpoint-000000010.pt",
        "checkpoint-000000020.pt",
        "checkpoint-000000030.pt",
    ]
    assert (cwd / "tb" / "cli_1_digits_mlp").is_dir()
    assert "test accuracy:" in result.stdout


def test_metrics_record_has_the_logged_scalars_with_steps(observed, tb_scalars):
    _, cwd, record = observed
    metrics = json.loads((record / "metrics.json").read_text())
    assert metrics["train/loss"]["steps"] == list(range(2, STEPS + 1, 2))
    assert len(metrics["train/loss"]["values"]) == STEPS // 2
    assert metrics["validation/accuracy"]["steps"] == [20, STEPS]
    assert metrics["test/accuracy"]["steps"] == [STEPS]
    tensorboard = tb_scalars(cwd / "tb" / "cli_1_digits_mlp")
    assert set(tensorboard) == set(metrics)
    for tag, points in tensorboard.items():
        assert [step for step, _ in points] == metrics[tag]["steps"]
        for (_, value), recorded in zip(points, metrics[tag]["values"]):
            assert value == pytest.approx(recorded, rel=1e-6)


def test_best_checkpoint_is_an_artifact(observed):
    _, cwd, record = observed
    run = json.loads((record / "run.json").read_text())
    assert run["artifacts"] == ["best.pt"]
    best = cwd / "models" / "cli_1_digits_mlp" / "best.pt"
    assert (record / "best.pt").read_bytes() == best.read_bytes()


def test_progress_bar_is_kept_out_of_the_captured_output(observed):
    result, _, record = observed
    assert "it/s" in result.stderr  # the bar was shown on the terminal
    cout = (record / "cout.txt").read_text()
    assert "test accuracy:" in cout
    assert "\r" not in cout
    assert "it/s" not in cout


@pytest.mark.parametrize(
    "name, expected",
    [
        ("typo", ["did you mean 'n_epochs'", "n_epoch"]),
        ("not_a_number", ["n_epochs='ten'", "positive int"]),
    ],
)
def test_invalid_command_line_config_fails_before_anything_is_written(runs, name, expected):
    done, cwd = runs
    result = done[name]
    assert result.returncode != 0
    for text in expected:
        assert text in result.stderr
    assert "ConfigError" in result.stderr
    model_dir, observer = COMMANDS[name][-1].split("=")[1], COMMANDS[name][1]
    assert not (cwd / model_dir).exists()
    assert not (cwd / observer).exists()


def test_print_config_lists_the_framework_keys(runs):
    result = runs[0]["print_config"]
    assert result.returncode == 0, result.stderr[-3000:]
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)  # drop colours
    listed = dict(re.findall(r"^\s+(\w+) = (.*?)(?:\s+#.*)?$", text, flags=re.MULTILINE))
    assert set(DEFAULTS) <= set(listed)
    assert listed["prefix"] == "'shown'"
    assert listed["save_iterations"] == "'epoch'"
    assert listed["n_epochs"] == "20"  # the example's own default wins over the framework's
