"""Tests of mlproject.config: the defaults, one error naming every problem, devices, the README."""

import re
from pathlib import Path

import pytest
import torch

from mlproject.config import DEFAULTS, resolve_device, validate_config
from mlproject.errors import ConfigError, MLProjectError

README = Path(__file__).resolve().parents[1] / "README.md"
NO_CUDA = not torch.cuda.is_available()


def test_defaults_are_the_documented_ones():
    assert DEFAULTS["n_epochs"] == 10
    assert DEFAULTS["n_global_iterations"] is None
    assert DEFAULTS["model_dir"] is None
    assert DEFAULTS["device"] is None  # where get_model put the model
    assert DEFAULTS["tensorboard_dir"] is None
    assert DEFAULTS["log_iteration_scalars"] == 1
    assert DEFAULTS["log_iteration_all"] == "epoch"
    assert DEFAULTS["save_iterations"] == "epoch"
    assert DEFAULTS["prefix"] == ""


def test_valid_config_is_merged_over_the_defaults_and_keeps_user_keys():
    config = validate_config({"model_dir": "runs", "n_epochs": 3, "hidden": 128, "lr": 0.1})
    assert config == {**DEFAULTS, "model_dir": "runs", "n_epochs": 3, "hidden": 128, "lr": 0.1}


def test_validation_does_not_change_the_defaults():
    before = dict(DEFAULTS)
    validate_config({"model_dir": "runs", "n_epochs": 3})
    assert before == DEFAULTS


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, MLProjectError)
    with pytest.raises(ValueError):
        validate_config({"model_dir": "runs", "n_epochs": -1})


@pytest.mark.parametrize("value", ["SIGUSR1,USR2", ["SIGUSR1", "SIGUSR2"], [10, 12], []])
def test_requeue_signals_take_names_numbers_or_a_comma_separated_string(value):
    assert validate_config({"model_dir": "runs", "requeue_signals": value})


def test_precision_16_from_sacreds_command_line_is_the_string_16():
    assert validate_config({"model_dir": "runs", "precision": 16})["precision"] == "16"


def test_n_global_iterations_zero_means_not_set_as_in_the_original_design():
    assert (
        validate_config({"model_dir": "runs", "n_global_iterations": 0})["n_global_iterations"]
        is None
    )


@pytest.mark.parametrize("key", ["model_dir", "tensorboard_dir"])
def test_a_folder_key_naming_a_file_is_refused(tmp_path, key):
    (tmp_path / "taken").write_text("a file")
    config = {"model_dir": str(tmp_path / "m"), key: str(tmp_path / "taken" / "sub")}
    with pytest.raises(ConfigError, match=f"{key}=.* cannot be created: .*taken is a file"):
        validate_config(config)
    with pytest.raises(ConfigError, match=f"{key}=.* is a file, not a folder"):
        validate_config({**config, key: str(tmp_path / "taken")})


def test_model_dir_is_required():
    with pytest.raises(ConfigError, match="model_dir"):
        validate_config({})


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("n_epochs", "ten", "positive int"),
        ("n_epochs", 2.5, "positive int"),
        ("n_epochs", -1, "positive int"),
        ("n_epochs", 0, "positive int"),
        ("n_epochs", True, "positive int"),
        ("n_global_iterations", -1, "positive int"),
        ("n_global_iterations", "100", "positive int"),
        ("save_iterations", -3, "'epoch'"),
        ("save_iterations", None, "'epoch'"),
        ("log_iteration_all", "sometimes", "'epoch'"),
        ("log_iteration_scalars", 0, "positive int"),
        ("keep_checkpoints", 1, "int >= 2"),
        ("keep_checkpoints", 0, "int >= 2"),
        ("prefix", "a/b", "folder name"),
        ("nonfinite", "ignore", "'skip'"),
        ("progress", "yes", "True or False"),
        ("device", "gpu", "'cuda'"),
        ("requeue_signals", ["SIGFOO"], "names no signal 'SIGFOO'"),
        ("requeue_signals", ["SIGKILL"], "cannot be caught"),
        ("requeue_command", "", "shell command"),
        ("precision", "fp8", "'bf16'"),
        ("accumulate_grad_batches", 0, "positive int"),
        ("clip_grad_norm", -1.0, "positive number"),
        ("validate_iterations", "often", "'epoch'"),
        ("early_stopping", 0, "positive int"),
        ("device", 3, "'cpu'"),
    ],
)
def test_a_bad_value_is_named_with_the_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ConfigError) as info:
        validate_config({"model_dir": "runs", key: value})
    message = str(info.value)
    assert key in message
    assert repr(value) in message
    assert allowed in message


def test_every_problem_is_reported_in_one_error():
    config = {
        "model_dir": "runs",
        "n_epoch": 3,
        "n_epochs": "ten",
        "save_iterations": -3,
        "log_iteration_all": "sometimes",
        "device": "gpu",
    }
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    message = str(info.value)
    assert "5 problems" in message
    assert "did you mean 'n_epochs'" in message
    for key, value in config.items():
        if key != "model_dir":
            assert f"{key}={value!r}" in message or f"{key!r} (value {value!r})" in message


@pytest.mark.parametrize(
    "typo, meant",
    [
        ("n_epoch", "n_epochs"),
        ("tensorboard_dr", "tensorboard_dir"),
        ("save_iteration", "save_iterations"),
        ("n_global_iteration", "n_global_iterations"),
        ("log_iterations_all", "log_iteration_all"),
    ],
)
def test_a_typo_of_a_framework_key_suggests_the_key(typo, meant):
    with pytest.raises(ConfigError, match=f"did you mean '{meant}'"):
        validate_config({"model_dir": "runs", typo: 3})


@pytest.mark.parametrize("device", ["cpu", "auto", "cpu:0"])
def test_usable_devices_pass(device):
    assert validate_config({"model_dir": "runs", "device": device})["device"] == device


def test_auto_device_is_the_cpu_without_a_gpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:7"])
def test_cuda_without_a_gpu_is_a_config_error(device):
    with pytest.raises(ConfigError) as info:
        validate_config({"model_dir": "runs", "device": device})
    assert f"device={device!r}" in str(info.value)
    assert "device=cpu" in str(info.value)


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has 8 GPUs")
def test_a_gpu_index_that_does_not_exist_is_a_config_error():
    with pytest.raises(ConfigError, match="cuda:7"):
        validate_config({"model_dir": "runs", "device": "cuda:7"})


def test_resume_path_that_does_not_exist_is_a_config_error(tmp_path):
    missing = tmp_path / "nope" / "checkpoint-000000001.pt"
    with pytest.raises(ConfigError) as info:
        validate_config({"model_dir": "runs", "resume": str(missing)})
    assert "resume" in str(info.value)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("resume", [None, "auto"])
def test_resume_none_and_auto_pass(resume):
    assert validate_config({"model_dir": "runs", "resume": resume})["resume"] == resume


def readme_table() -> dict[str, str]:
    rows = re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", README.read_text(), flags=re.MULTILINE)
    return dict(rows)


def test_readme_config_table_lists_every_default():
    assert README.exists(), "README.md is missing"
    table = readme_table()
    assert sorted(table) == sorted(DEFAULTS)
    assert table == {key: repr(value) for key, value in DEFAULTS.items()}


@pytest.mark.parametrize("key", ["model_dir", "tensorboard_dir"])
def test_a_read_only_folder_is_refused_before_anything_is_made(tmp_path, key):
    import os
    import subprocess

    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = (
        os.geteuid() == 0
        and (
            subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=16k", "tmpfs", str(folder)])
        ).returncode
        == 0
    )
    if not mounted:
        folder.chmod(0o500)  # not root: the mode bits refuse the writes
    try:
        config = {"model_dir": str(tmp_path / "models"), key: str(folder / "runs")}
        with pytest.raises(ConfigError, match=f"{key}=.* is not writable here"):
            validate_config(config)
        assert not (folder / "runs").exists() and not (tmp_path / "models").exists()
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        folder.chmod(0o700)
