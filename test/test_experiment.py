"""Tests of mlproject.experiment, the sacred glue, through the files sacred writes.

Programs run as a user runs them (the digits example, a tiny experiment with an ingredient and
a nested config, a plain sacred.Experiment): the module starts every command at once (the runs
are independent) and each test reads one. Python sweeps run the tiny experiment in process.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from sacred.observers import FileStorageObserver

import mlproject
from mlproject.config import DEFAULTS
from mlproject.experiment import config_from_run, summary_result

REPO = Path(__file__).resolve().parents[1]
DIGITS = "examples/digits/main.py"
TINY = "test/scripts/tiny_experiment.py"
PLAIN = "test/scripts/plain_sacred.py"
STEPS = 30  # the digits train set is 20 batches of 64: the run ends in its second epoch

COMMANDS = {
    "observed": (DIGITS, [
        "-F", "obs", "with", f"n_global_iterations={STEPS}", "model_dir=models",
        "tensorboard_dir=tb", "log_iteration_scalars=2", "save_iterations=10", "prefix=cli",
        "progress=True",
    ]),
    "help": (DIGITS, ["--help"]),
    "print_config": (DIGITS, ["print_config", "with", "prefix=shown"]),
    "typo": (DIGITS, ["-F", "obs_typo", "with", "n_epoch=3", "model_dir=models_typo"]),
    "not_a_number": (DIGITS, ["-F", "obs_nan", "with", "n_epochs=ten", "model_dir=models_nan"]),
    "user_typos": (DIGITS, ["-F", "obs_user", "with", "hiden=3", "lrr=0.1", "model_dir=m_user"]),
    "config_file": (DIGITS, ["-F", "obs_file", "with", "typo.json", "model_dir=m_file"]),
    "nested_typo": (TINY, ["-F", "obs_nested", "with", "optim.lrr=0.5", "model_dir=m_nested"]),
    "ingredient_typo": (TINY, ["-F", "obs_net", "with", "net.hiden=32", "model_dir=m_net"]),
    "tiny": (TINY, ["-F", "obs_tiny", "with", "model_dir=m_tiny"]),
    "plain_2018": (PLAIN, [
        "-F", "obs_plain", "-s", "sqlite:///plain.db", "-f", "with", "n_global_iterations=3",
        "tensorboard_dir=tb_plain", "model_dir=m_plain", "progress=False",
    ]),
}  # fmt: skip


@pytest.fixture(scope="module")
def runs(start_script, tmp_path_factory):
    """``({name: CompletedProcess}, cwd)`` for every command in COMMANDS, run side by side."""
    cwd = tmp_path_factory.mktemp("experiment")
    (cwd / "typo.json").write_text(json.dumps({"hiden": 3}))
    started = {
        name: start_script(script, *args, cwd=cwd) for name, (script, args) in COMMANDS.items()
    }
    done = {}
    for name, process in started.items():
        try:
            out, err = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done, cwd


def completed(runs, name: str, observer: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """The process of a run that must have succeeded, its cwd and its sacred record folder."""
    done, cwd = runs
    result = done[name]
    assert result.returncode == 0, result.stderr[-3000:]
    return result, cwd, cwd / observer / "1"


@pytest.fixture(scope="module")
def observed(runs):
    """The completed digits run with a FileStorageObserver: process, cwd, run-record folder."""
    return completed(runs, "observed", "obs")


def record(folder: Path) -> tuple[dict, dict]:
    """run.json and info.json of a sacred FileStorageObserver run folder."""
    info = folder / "info.json"
    return json.loads((folder / "run.json").read_text()), json.loads(info.read_text())


# --- what the run record holds ------------------------------------------------------------------
def test_run_result_is_the_best_validation_value_and_info_has_the_summary(observed):
    _, _, folder = observed
    run, info = record(folder)
    assert run["status"] == "COMPLETED"
    summary = info["summary"]
    assert summary["global_step"] == STEPS
    assert summary["best"]["step"] == STEPS
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0
    assert isinstance(run["result"], float)
    assert run["result"] == summary["best"]["loss"]  # ProxyModel's benchmark metric
    assert run["result"] == summary["validation"]["loss"]  # the best is the last evaluation


def test_run_record_names_the_users_program_its_sources_and_dependencies(observed):
    _, _, folder = observed
    experiment = record(folder)[0]["experiment"]
    main = REPO / DIGITS
    assert experiment["name"] == "digits"
    assert experiment["mainfile"] == "main.py"
    assert experiment["base_dir"] == str(main.parent)
    [(name, saved)] = experiment["sources"]
    assert name == "main.py"
    assert (folder.parent / saved).read_bytes() == main.read_bytes()
    dependencies = experiment["dependencies"]
    assert f"torch=={importlib.metadata.version('torch')}" in dependencies
    assert f"numpy=={importlib.metadata.version('numpy')}" in dependencies


def test_unnamed_experiment_is_named_after_its_main_file_and_saves_its_local_modules(runs):
    _, _, folder = completed(runs, "tiny", "obs_tiny")
    run, info = record(folder)
    experiment = run["experiment"]
    assert run["status"] == "COMPLETED"
    assert experiment["name"] == "tiny_experiment"
    assert experiment["mainfile"] == "tiny_experiment.py"
    sources = dict(experiment["sources"])
    assert set(sources) == {"tiny_experiment.py", "tiny_parts.py"}
    for name, saved in sources.items():
        assert (folder.parent / saved).read_bytes() == (REPO / "test/scripts" / name).read_bytes()
    assert run["result"] == info["summary"]["best"]["loss"]


def test_help_shows_the_users_docstring(runs):
    result = runs[0]["help"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "The default example: an MLP on scikit-learn's handwritten digits" in result.stdout
    assert "main.py print_config" in result.stdout
    assert "sacred glue" not in result.stdout  # mlproject.experiment's own docstring


def test_framework_keys_are_set_on_the_command_line(observed):
    result, cwd, folder = observed
    config = json.loads((folder / "config.json").read_text())
    assert config["n_global_iterations"] == STEPS
    assert config["save_iterations"] == 10
    assert config["prefix"] == "cli"
    run_dir = cwd / "models" / "cli_1_digits_mlp"  # prefix, sacred run id, model name
    saved = sorted(p.name for p in run_dir.glob("checkpoint-*.pt"))
    assert saved == ["checkpoint-000000020.pt", "checkpoint-000000030.pt"]  # keep_checkpoints=2
    assert (cwd / "tb" / "cli_1_digits_mlp").is_dir()
    assert "test accuracy:" in result.stdout


def test_metrics_record_has_the_logged_scalars_with_steps(observed, tb_scalars):
    _, cwd, folder = observed
    metrics = json.loads((folder / "metrics.json").read_text())
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
    _, cwd, folder = observed
    run = json.loads((folder / "run.json").read_text())
    assert run["artifacts"] == ["best.pt"]
    best = cwd / "models" / "cli_1_digits_mlp" / "best.pt"
    assert (folder / "best.pt").read_bytes() == best.read_bytes()


def test_progress_bar_is_kept_out_of_the_captured_output(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    terminal, child_side = pty.openpty()  # the bar is drawn on terminals only
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # its width
    args = [sys.executable, str(REPO / DIGITS), "-F", "obs", "with", "n_epochs=2",
            "model_dir=models", "progress=True"]  # fmt: skip
    job = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=child_side)
    os.close(child_side)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        shown += chunk
    assert job.wait(timeout=120) == 0
    os.close(terminal)
    assert b"it/s" in shown  # the bar was shown on the terminal
    cout = (tmp_path / "obs" / "1" / "cout.txt").read_text()
    assert "test accuracy:" in cout and "epoch 2/2 · step" in cout  # the lines that stay
    assert "\r" not in cout
    assert "it/s" not in cout


def test_print_config_lists_the_framework_keys(runs):
    result = runs[0]["print_config"]
    assert result.returncode == 0, result.stderr[-3000:]
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)  # drop colours
    listed = dict(re.findall(r"^\s+(\w+) = (.*?)(?:\s+#.*)?$", text, flags=re.MULTILINE))
    assert set(DEFAULTS) <= set(listed)
    assert listed["prefix"] == "'shown'"
    assert listed["save_iterations"] == "'epoch'"
    assert listed["n_epochs"] == "20"  # the example's own default wins over the framework's


def test_plain_sacred_experiment_accepts_framework_keys_it_never_declared(runs):
    _, cwd, _ = completed(runs, "plain_2018", "obs_plain")
    # the SqlObserver goes first and numbers the run 0; its result column holds a float
    run, info = record(cwd / "obs_plain" / "0")
    assert run["status"] == "COMPLETED"
    assert info["summary"]["global_step"] == 3
    assert run["result"] == info["summary"]["best"]["loss"]  # one number, as with ours
    sa = pytest.importorskip("sqlalchemy")
    engine = sa.create_engine(f"sqlite:///{cwd / 'plain.db'}")
    with engine.connect() as connection:
        [row] = connection.execute(sa.text("SELECT status, result FROM run")).all()
    engine.dispose()
    assert tuple(row) == ("COMPLETED", pytest.approx(run["result"], rel=1e-12))
    run_dir = cwd / "m_plain" / "0_plain"
    assert sorted(p.name for p in run_dir.glob("checkpoint-*.pt")) == ["checkpoint-000000003.pt"]
    assert (cwd / "tb_plain" / "0_plain").is_dir()


# --- config mistakes on the command line --------------------------------------------------------
@pytest.mark.parametrize(
    "name, expected",
    [
        ("typo", ["did you mean 'n_epochs'", "n_epoch"]),
        ("not_a_number", ["n_epochs='ten'", "positive int"]),
        (
            "user_typos",
            [
                "unknown key 'hiden' (value 3): did you mean 'hidden'? Use hidden=3",
                "unknown key 'lrr' (value 0.1): did you mean 'lr'? Use lr=0.1",
            ],
        ),
        ("config_file", ["unknown key 'hiden' (value 3): did you mean 'hidden'?"]),
        ("nested_typo", ["unknown key 'optim.lrr' (value 0.5): did you mean 'optim.lr'?"]),
        ("ingredient_typo", ["'net.hiden' (value 32): did you mean 'net.hidden'?"]),
    ],
)
def test_invalid_config_exits_1_with_one_message_before_anything_is_written(runs, name, expected):
    done, cwd = runs
    result = done[name]
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.count("ConfigError: invalid config") == 1, result.stderr[-3000:]
    for text in expected:
        assert text in result.stderr
    assert "Traceback" not in result.stderr
    assert "AttributeError" not in result.stderr
    args = COMMANDS[name][1]
    model_dir, observer = args[-1].split("=")[1], args[1]
    assert not (cwd / model_dir).exists()
    assert not (cwd / observer).exists()


# --- in process: sweeps and the result ----------------------------------------------------------
@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A fresh import of the tiny experiment's module (its ``ex`` unused so far), run in tmp."""
    scripts = REPO / "test" / "scripts"
    monkeypatch.syspath_prepend(str(scripts))
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("tiny_experiment", scripts / "tiny_experiment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_python_sweep_catches_each_unknown_key_as_a_config_error(tiny, tmp_path):
    (tmp_path / "typo.json").write_text(json.dumps({"optim": {"momentun": 0.9}}))
    tiny.ex.observers.append(FileStorageObserver(str(tmp_path / "obs")))
    sweep = [
        ({"lrr": 0.1}, [], "'lrr' (value 0.1): did you mean 'optim.lr'?"),
        ({"optim.lrr": 0.1}, [], "'optim.lrr' (value 0.1): did you mean 'optim.lr'?"),
        ({"net": {"hiden": 32}}, [], "'net.hiden' (value 32): did you mean 'net.hidden'?"),
        ({}, ["typo.json"], "'optim.momentun' (value 0.9): did you mean 'optim.momentum'?"),
        ({"optim.lr": 0.2}, [], None),
    ]
    errors, results = [], []
    for updates, named, message in sweep:
        try:
            run = tiny.ex.run(
                config_updates={"model_dir": str(tmp_path / "models"), **updates},
                named_configs=named,
            )
        except mlproject.ConfigError as err:
            errors.append(str(err))
            assert message is not None and message in str(err)
            assert isinstance(err, ValueError)
            assert not (tmp_path / "obs").exists()
            assert not (tmp_path / "models").exists()
            continue
        results.append(run)
    assert len(errors) == 4
    [run] = results
    assert run.status == "COMPLETED"
    assert run.config["optim"]["lr"] == 0.2
    assert json.loads((tmp_path / "obs" / "1" / "run.json").read_text())["status"] == "COMPLETED"


def test_all_unknown_keys_are_named_at_once(tiny, tmp_path):
    with pytest.raises(mlproject.ConfigError) as caught:
        tiny.ex.run(config_updates={"lrr": 0.1, "net.hiden": 3, "zzzzzz": 1})
    message = str(caught.value)
    assert message.startswith("invalid config (3 problems):")
    assert "'zzzzzz' (value 1): no declared key is close to it" in message
    assert "'net.hiden'" in message and "'lrr'" in message


def test_unknown_keys_and_framework_problems_are_reported_together(tiny, tmp_path):
    with pytest.raises(mlproject.ConfigError) as caught:
        tiny.ex.run(config_updates={"lrr": 0.1, "n_epochs": 0, "n_epoch": 3})
    message = str(caught.value)
    assert message.startswith("invalid config (3 problems):")
    assert "'lrr' (value 0.1): did you mean 'optim.lr'?" in message
    assert "n_epochs=0 must be a positive int" in message
    assert message.count("'n_epoch'") == 1  # the framework's check names it; not twice


def test_a_captured_functions_argument_may_be_set_and_force_accepts_new_keys(tiny, tmp_path):
    run = tiny.ex.run(config_updates={"weight_decay": 0.001, "model_dir": str(tmp_path / "a")})
    assert run.status == "COMPLETED"
    assert run.config["weight_decay"] == 0.001
    forced = tiny.ex.run(
        config_updates={"brand_new": 1, "model_dir": str(tmp_path / "b")}, options={"--force": True}
    )
    assert forced.status == "COMPLETED"
    assert forced.config["brand_new"] == 1


def test_framework_typos_are_refused_even_with_force(tiny, tmp_path):
    with pytest.raises(mlproject.ConfigError, match="did you mean 'n_epochs'"):
        tiny.ex.run(config_updates={"n_epoch": 3}, options={"--force": True})


def test_result_is_the_best_validation_value_and_info_keeps_the_summary(tiny, tmp_path):
    run = tiny.ex.run(config_updates={"model_dir": str(tmp_path / "models")})
    summary = run.info["summary"]
    assert set(summary) >= {"run_dir", "global_step", "epochs", "best", "validation", "test"}
    assert summary["global_step"] == 6
    assert run.result == summary["best"]["loss"]


@pytest.mark.parametrize(
    "summary, expected",
    [
        ({"best": {"step": 3, "loss": 0.5}, "test": {"loss": 0.7}}, 0.5),
        ({"benchmark_metric": "acc", "best": {"step": 3, "acc": 0.9}, "test": {"acc": 0.8}}, 0.9),
        ({"benchmark_metric": "acc", "best": {"step": None, "acc": None}, "test": {"acc": 1}}, 1.0),
        ({"best": {"step": 1, "a": 1.0, "b": 2.0}, "test": {}}, None),  # which metric: unknown
        ({"global_step": 3}, None),
    ],
)
def test_summary_result_prefers_the_best_validation_value(summary, expected):
    assert summary_result(summary) == expected


def test_a_result_that_is_not_a_number_goes_to_info(tiny, tmp_path):
    @tiny.ex.command
    def words():
        return "not a number"

    @tiny.ex.command
    def number():
        return 3

    run = tiny.ex.run("words")
    assert (run.result, run.info["result"]) == (None, "not a number")
    assert tiny.ex.run("number").result == 3


# --- config_from_run on runs mlproject.Experiment did not make ----------------------------------
def fake_run(added=(), force=False, config=None):
    config = config or {"model_dir": "runs", "optim": {"lr": 0.1, "lrr": 0.2}}
    return SimpleNamespace(
        config=config, force=force, config_modifications=SimpleNamespace(added=set(added))
    )


def test_config_from_run_accepts_framework_keys_and_refuses_keys_declared_nowhere():
    assert config_from_run(fake_run(added={"n_global_iterations", "tensorboard_dir"}))
    with pytest.raises(mlproject.ConfigError, match="'optim.lrr' .*did you mean 'optim.lr'"):
        config_from_run(fake_run(added={"optim.lrr"}))
    assert config_from_run(fake_run(added={"optim.lrr"}, force=True))["optim"]["lrr"] == 0.2


# --- importing: no sacred for `import mlproject`; sacred on Python 3.14 and setuptools>=81 ------
def python(code: str, *args: str, cwd: Path) -> dict:
    """Run ``code`` as a program with this interpreter; return the JSON it prints last."""
    script = cwd / "program.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_import_mlproject_needs_no_sacred_and_changes_no_global_state(tmp_path):
    code = """if True:
        import json, sys, warnings
        sys.modules["sacred"] = None  # importing sacred now fails
        import numpy, torch, tqdm.auto  # mlproject's dependencies: their own filters first
        filters = list(warnings.filters)
        import mlproject
        mlproject.MLProject, mlproject.ConfigError
        try:
            mlproject.Experiment
        except ImportError as err:
            error = str(err)
        print(json.dumps({"filters": warnings.filters == filters, "error": error}))
    """
    assert python(code, cwd=tmp_path) == {
        "filters": True,
        "error": "import of sacred halted; None in sys.modules",
    }


# A program that removes what Python 3.14 (pkgutil.find_loader) and setuptools>=81
# (pkg_resources) no longer have, then runs an Experiment and reports what sacred recorded.
WITHOUT = '''"""Run an mlproject.Experiment without some of what sacred 0.8.7 imports."""
import json, pkgutil, sys, warnings
removed = sys.argv[1:]
if "find_loader" in removed:
    del pkgutil.find_loader
if "pkg_resources" in removed:
    sys.modules["pkg_resources"] = None  # `import pkg_resources` raises ModuleNotFoundError
import torch
import mlproject
warnings.simplefilter("error")  # a deprecation warning while sacred imports fails the program
filters = list(warnings.filters)
Experiment = mlproject.Experiment
unchanged = warnings.filters == filters
warnings.resetwarnings()
import sacred.optional
ex = Experiment()
ex.add_config(model_dir="runs")
@ex.main
def main():
    return 0.5
run = ex.run(options={"--capture": "no"})
print(json.dumps({
    "result": run.result,
    "dependencies": ex.get_experiment_info()["dependencies"],
    "has_sqlalchemy": sacred.optional.has_sqlalchemy,
    "find_loader": hasattr(pkgutil, "find_loader"),
    "pkg_resources": repr(sys.modules.get("pkg_resources", "absent")),
    "filters": unchanged,
}))
'''


@pytest.mark.parametrize(
    "removed, pkg_resources",
    [([], "'absent'"), (["find_loader"], "'absent'"), (["pkg_resources"], "None")]
    + [(["find_loader", "pkg_resources"], "None")],
)
def test_sacred_imports_through_mlproject_without_find_loader_or_pkg_resources(
    tmp_path, removed, pkg_resources
):
    report = python(WITHOUT, *removed, cwd=tmp_path)
    assert report["result"] == 0.5
    assert f"torch=={importlib.metadata.version('torch')}" in report["dependencies"]
    assert report["has_sqlalchemy"] is True  # sacred.optional asked find_loader
    # Only for sacred's import: afterwards pkgutil, sys.modules and the filters are as before.
    assert report["find_loader"] is ("find_loader" not in removed)
    assert report["pkg_resources"] == pkg_resources
    assert report["filters"] is True
