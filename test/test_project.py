"""Tests of mlproject.project: the loop's length, evaluation, best model, logging and checkpoints.

Most tests train a ``Recording`` model, which notes what the loop told it at every step and
returns scripted validation values, on 16 training samples in batches of 4 (4 steps an epoch).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import struct
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mlproject import (
    ConfigError,
    DatasetFactory,
    LogLevel,
    MLProject,
    Model,
    ModelError,
    NonFiniteLossError,
    ProxyModel,
)
from mlproject.checkpoint import BEST_NAME

N, S, A = LogLevel.NOTHING, LogLevel.SCALARS, LogLevel.ALL
STEPS_PER_EPOCH = 4


class Recording(Model):
    """Logistic regression with Adam that records what the loop tells it.

    ``script`` maps the number of training steps done to the value ``test_batch`` returns as
    both ``loss`` and ``accuracy``; ``wsum`` (the weights' sum) shows which weights were tested.
    """

    def __init__(self, script=None, metric="loss", goal=None):
        super().__init__(name="rec")
        torch.manual_seed(0)
        self.net = nn.Linear(4, 3)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=0.05)
        self.script = script or {}
        self.benchmark_metric, self.benchmark_goal = metric, goal
        self.steps = []  # (global_step, training, log_level, loss) per train_batch
        self.evals = []  # (steps done, training, grad enabled) per test_batch
        self.epoch_weights = {}  # epoch (1-based) -> weights at its end
        self.hooks = []

    def train_batch(self, batch):
        x, y = batch
        self.opt.zero_grad()
        loss = nn.functional.cross_entropy(self.net(x), y)
        loss.backward()
        self.opt.step()
        self.steps.append((self.global_step, self.training, self.log_level, loss.item()))
        if self.log_level == LogLevel.ALL:
            self.writer.add_image("input", torch.rand(1, 4, 4), len(self.steps))
        return {"loss": loss.detach(), "lr": 0.05}

    def test_batch(self, batch):
        self.evals.append((len(self.steps), self.training, torch.is_grad_enabled()))
        value = self.script.get(len(self.steps), 10.0)
        return {"loss": value, "accuracy": value, "wsum": self.net.weight.sum()}

    def on_train_begin(self):
        self.hooks.append("train_begin")

    def on_epoch_begin(self, epoch):
        self.hooks.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch):
        self.hooks.append(("epoch_end", epoch))
        self.epoch_weights[epoch] = {k: v.clone() for k, v in self.state_dict().items()}

    def on_train_end(self):
        self.hooks.append("train_end")


class FakeRun:
    """What MLProject uses of a sacred run."""

    def __init__(self, run_id=None, config=None, added=()):
        self._id = run_id
        self.config = config or {}
        self.config_modifications = type("Mods", (), {"added": set(added)})()
        self.scalars = []
        self.artifacts = []
        self.info = {}

    def log_scalar(self, name, value, step):
        self.scalars.append((name, value, step))

    def add_artifact(self, filename, name=None):
        self.artifacts.append((filename, name))


@pytest.fixture
def data16(tiny_data):
    """A zero-arg factory of the tiny data with 16 training samples (4 steps an epoch)."""
    return lambda: tiny_data(n_train=16)


@pytest.fixture
def build(project_class, base_config, data16):
    """``build(model=zero-arg Model factory, data=zero-arg factory, run=None, **config)``."""

    def make(model=Recording, data=None, run=None, **config) -> MLProject:
        data = data or data16
        cls = project_class(model=lambda c: model(), data=lambda c: data())
        return cls({**base_config, **config}, run=run)

    return make


def tree(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


# --- run folders --------------------------------------------------------------------------------
def test_run_folder_is_named_from_prefix_run_id_and_model(build, tmp_path):
    project = build(run=FakeRun(run_id=7), prefix="exp", tensorboard_dir=str(tmp_path / "tb"))
    summary = project.train()
    assert project.run_dir == tmp_path / "models" / "exp_7_rec"
    assert summary["run_dir"] == str(project.run_dir)
    assert (tmp_path / "tb" / "exp_7_rec").is_dir()


def test_default_prefix_is_left_out_of_the_run_folder_name(build, tmp_path):
    project = build()
    project.train()
    assert project.config["prefix"] == ""
    assert re.fullmatch(r"\d{8}-\d{6}_rec", project.run_dir.name), project.run_dir.name
    assert "type" not in project.run_dir.name


def test_rerun_into_an_existing_folder_makes_a_new_one_and_overwrites_nothing(build, tmp_path):
    tb = tmp_path / "tb"
    first = build(run=FakeRun(run_id=1), tensorboard_dir=str(tb))
    first.train()
    before = tree(tmp_path)
    second = build(run=FakeRun(run_id=1), tensorboard_dir=str(tb))
    second.train()
    assert first.run_dir.name == "1_rec"
    assert second.run_dir.name == "1_rec-2"
    assert (tb / "1_rec-2").is_dir()
    after = tree(tmp_path)
    assert {k: after[k] for k in before} == before


def test_a_folder_that_exists_already_is_not_reused(build, tmp_path):
    taken = tmp_path / "models" / "1_rec"
    taken.mkdir(parents=True)
    (taken / "notes.txt").write_text("mine")
    project = build(run=FakeRun(run_id=1))
    project.train()
    assert project.run_dir.name == "1_rec-2"
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]


# --- length of training -------------------------------------------------------------------------
@pytest.mark.parametrize("n_steps", [1, 3, 4, 6, 9])
def test_n_global_iterations_gives_exactly_that_many_steps(build, n_steps):
    project = build(n_global_iterations=n_steps, n_epochs=1)
    summary = project.train()
    assert len(project.model.steps) == n_steps
    assert [s[0] for s in project.model.steps] == list(range(n_steps))
    assert summary["global_step"] == n_steps
    assert summary["epochs"] == n_steps // STEPS_PER_EPOCH
    for param in project.model.net.parameters():
        assert int(project.model.opt.state[param]["step"]) == n_steps


def test_n_epochs_gives_that_many_full_epochs(build):
    project = build(n_epochs=3)
    summary = project.train()
    assert len(project.model.steps) == 3 * STEPS_PER_EPOCH
    assert (summary["epochs"], summary["global_step"]) == (3, 12)


def test_a_run_shorter_than_an_epoch_is_saved_and_evaluated(build, tmp_path, tb_scalars):
    project = build(n_global_iterations=2, tensorboard_dir=str(tmp_path / "tb"))
    project.train()
    assert (project.run_dir / "checkpoint-000000002.pt").is_file()
    assert (project.run_dir / BEST_NAME).is_file()
    scalars = tb_scalars(tmp_path / "tb" / project.run_dir.name)
    assert [step for step, _ in scalars["validation/loss"]] == [2]
    assert [step for step, _ in scalars["test/loss"]] == [2]


def test_hooks_run_in_order_with_their_documented_counts(build):
    project = build(n_epochs=2)
    project.train()
    assert project.model.hooks == [
        "train_begin",
        ("epoch_begin", 0),
        ("epoch_end", 1),
        ("epoch_begin", 1),
        ("epoch_end", 2),
        "train_end",
    ]


# --- evaluation and the best model --------------------------------------------------------------
@pytest.mark.parametrize(
    "metric, goal, values, best_epoch",
    [
        ("loss", None, [2.0, 1.0, 3.0, 1.5], 2),
        ("loss", None, [2.0, 3.0, 0.5, 1.0], 3),
        ("accuracy", "max", [0.2, 0.9, 0.1, 0.5], 2),
        ("accuracy", "max", [0.5, 0.1, 0.2, 0.3], 1),
    ],
)
def test_best_model_is_chosen_in_the_metric_direction(build, metric, goal, values, best_epoch):
    script = {STEPS_PER_EPOCH * (i + 1): v for i, v in enumerate(values)}
    project = build(
        model=functools.partial(Recording, script=script, metric=metric, goal=goal), n_epochs=4
    )
    summary = project.train()
    model = project.model
    assert summary["best"] == {"step": STEPS_PER_EPOCH * best_epoch, metric: values[best_epoch - 1]}
    best = torch.load(project.run_dir / BEST_NAME, weights_only=True)
    for key, value in model.epoch_weights[best_epoch].items():
        assert torch.equal(best["model"]["weights"][key], value)
    # the final test ran on the best weights, and the last weights were put back afterwards
    best_wsum = float(model.epoch_weights[best_epoch]["net.weight"].sum())
    assert summary["test"]["wsum"] == pytest.approx(best_wsum, abs=1e-6)
    for key, value in model.epoch_weights[4].items():
        assert torch.equal(model.state_dict()[key], value)


def test_model_is_back_in_train_mode_after_every_evaluation(build):
    project = build(n_epochs=3)
    project.train()
    assert [training for _, training, _, _ in project.model.steps] == [True] * 12
    assert project.model.training


def test_evaluation_runs_in_eval_mode_under_no_grad(build):
    project = build(n_epochs=2)
    project.train()
    evals = project.model.evals
    assert {steps for steps, _, _ in evals} == {0, 4, 8}
    assert len([e for e in evals if e[0] == 0]) == 1  # the one batch checked before step 1
    assert all(not training and not grad for _, training, grad in evals)


class BatchValue(Recording):
    """Each evaluation batch's loss is its first input value; ``n`` is its size (a Python int)."""

    def test_batch(self, batch):
        x, _ = batch
        return {"loss": x[0, 0], "n": len(x)}


def test_evaluation_averages_weight_each_batch_by_its_size(build, data16):
    def data():
        first = torch.tensor([0.0, 0, 0, 0, 1, 1, 1, 1, 5, 5])  # batches of 4, 4 and 2
        val = TensorDataset(first.unsqueeze(1).repeat(1, 4), torch.zeros(10, dtype=torch.int64))
        train = data16().train_set()
        return DatasetFactory(train_set=train, validation_set=val, loader_kwargs={"batch_size": 4})

    summary = build(model=BatchValue, data=data).train()
    assert summary["validation"]["loss"] == pytest.approx((0 * 4 + 1 * 4 + 5 * 2) / 10)
    assert summary["validation"]["n"] == pytest.approx((4 * 4 + 4 * 4 + 2 * 2) / 10)


def test_without_validation_set_the_test_set_is_evaluated_each_epoch(
    build, tmp_path, tb_scalars, tiny_data
):
    project = build(
        data=lambda: tiny_data(n_train=16, n_val=0), n_epochs=2, tensorboard_dir=str(tmp_path)
    )
    summary = project.train()
    scalars = tb_scalars(tmp_path / project.run_dir.name)
    assert not any(tag.startswith("validation/") for tag in scalars)
    assert [step for step, _ in scalars["test/loss"]] == [4, 8]
    assert summary["best"]["step"] is None
    assert summary["test"]["loss"] == 10.0


def test_a_list_of_batches_is_a_loader_for_several_epochs(build):
    batches = [(torch.randn(4, 4), torch.randint(0, 3, (4,))) for _ in range(3)]
    summary = build(
        data=lambda: DatasetFactory(train_loader=batches, validation_loader=batches[:1]),
        n_epochs=2,
    ).train()
    assert summary["global_step"] == 6


# --- TensorBoard --------------------------------------------------------------------------------
ENV_VARS = ("TENSORBOARD_DIR", "TENSORBOARD_LOGDIR", "TB_DIR", "TB_LOGDIR", "LOGDIR", "LOG_DIR")


def set_env_dirs(monkeypatch, folder):
    for name in ENV_VARS:
        monkeypatch.setenv(name, str(folder))


def test_no_tensorboard_dir_writes_no_event_file_anywhere(build, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    set_env_dirs(monkeypatch, tmp_path / "env")
    build(n_epochs=2, tensorboard_dir=None).train()
    assert list(tmp_path.rglob("*tfevents*")) == []
    assert list(cwd.iterdir()) == []
    assert not (tmp_path / "env").exists()


def test_events_go_under_tensorboard_dir_not_an_environment_variable(build, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    set_env_dirs(monkeypatch, tmp_path / "env")
    project = build(n_epochs=2, tensorboard_dir=str(tmp_path / "tb"))
    project.train()
    event_files = list(tmp_path.rglob("*tfevents*"))
    assert event_files
    assert {p.parent for p in event_files} == {tmp_path / "tb" / project.run_dir.name}
    assert not (tmp_path / "env").exists()
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize(
    "every_scalars, every_all, train_steps",
    [
        (1, None, [1, 2, 3, 4, 5, 6, 7, 8]),
        (3, None, [3, 6]),
        (3, "epoch", [3, 4, 6, 8]),
        (None, None, []),
    ],
)
def test_tensorboard_holds_each_scalar_once_at_its_steps(
    build, tmp_path, tb_scalars, every_scalars, every_all, train_steps
):
    project = build(
        n_epochs=2,
        tensorboard_dir=str(tmp_path / "tb"),
        log_iteration_scalars=every_scalars,
        log_iteration_all=every_all,
    )
    project.train()
    logdir = tmp_path / "tb" / project.run_dir.name
    scalars = tb_scalars(logdir)
    assert [step for step, _ in scalars.get("train/loss", [])] == train_steps
    assert [step for step, _ in scalars.get("train/lr", [])] == train_steps
    losses = {i + 1: loss for i, (_, _, _, loss) in enumerate(project.model.steps)}
    for step, value in scalars.get("train/loss", []):
        assert value == f32(losses[step])
    for tag in ("validation/loss", "validation/accuracy", "validation/wsum"):
        assert [step for step, _ in scalars[tag]] == [4, 8]
    assert [step for step, _ in scalars["test/loss"]] == [8]
    assert [step for step, _ in scalars["test/accuracy"]] == [8]
    for tag, points in scalars.items():
        steps = [step for step, _ in points]
        assert len(steps) == len(set(steps)), f"{tag} written twice at a step"
        assert tag.split("/")[0] in ("train", "validation", "test")
    assert [p for p in logdir.rglob("*") if p.is_dir()] == []  # no folder per tag


def test_sacred_run_receives_the_same_scalars(build, tmp_path, tb_scalars):
    run = FakeRun(run_id=3)
    project = build(run=run, n_epochs=2, tensorboard_dir=str(tmp_path / "tb"))
    project.train()
    scalars = tb_scalars(tmp_path / "tb" / project.run_dir.name)
    in_tensorboard = sorted((tag, step) for tag, points in scalars.items() for step, _ in points)
    assert sorted((tag, step) for tag, _, step in run.scalars) == in_tensorboard
    assert all(isinstance(value, float) for _, value, _ in run.scalars)
    assert run.artifacts == [(str(project.run_dir / BEST_NAME), BEST_NAME)]


# --- log levels ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "every_all, every_scalars, levels",
    [
        ("epoch", None, [N, N, N, A, N, N, N, A]),
        ("epoch", 1, [S, S, S, A, S, S, S, A]),
        (3, 2, [N, S, A, S, N, A, N, S]),
        (None, 3, [N, N, S, N, N, S, N, N]),
        (None, None, [N] * 8),
    ],
)
def test_model_sees_the_log_level_of_each_step(build, every_all, every_scalars, levels):
    project = build(n_epochs=2, log_iteration_all=every_all, log_iteration_scalars=every_scalars)
    project.train()
    assert [level for _, _, level, _ in project.model.steps] == levels


def test_images_written_on_all_steps_are_in_the_event_file(build, tmp_path, tb_images):
    project = build(n_epochs=2, log_iteration_all=3, tensorboard_dir=str(tmp_path / "tb"))
    project.train()
    assert tb_images(tmp_path / "tb" / project.run_dir.name) == {"input": [3, 6]}


# --- checkpoints --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "save, keep, steps",
    [
        (3, None, [3, 6, 8]),  # every 3 global steps, and the last step
        (2, None, [2, 4, 6, 8]),
        ("epoch", None, [4, 8]),
        (2, 2, [6, 8]),
    ],
)
def test_checkpoints_are_saved_at_their_steps_with_a_record(build, save, keep, steps):
    project = build(n_epochs=2, save_iterations=save, keep_checkpoints=keep)
    project.train()
    names = {f"checkpoint-{step:09d}.pt" for step in steps} | {BEST_NAME}
    files = {p.name for p in project.run_dir.iterdir()}
    assert {n for n in files if n.endswith(".pt")} == names
    assert {n for n in files if n.endswith(".sha256")} == {n + ".sha256" for n in names}
    assert not [n for n in files if n.endswith(".tmp")]
    for name in names:
        record = json.loads((project.run_dir / (name + ".sha256")).read_text())
        data = (project.run_dir / name).read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["size"] == len(data)
    for step in steps:
        payload = torch.load(project.run_dir / f"checkpoint-{step:09d}.pt", weights_only=True)
        assert payload["state"]["global_step"] == step


def is_plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(is_plain(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)


def test_checkpoint_holds_weights_optimizer_counters_and_config_as_plain_data(build):
    project = build(n_epochs=2)
    project.train()
    payload = torch.load(project.run_dir / "checkpoint-000000008.pt", weights_only=True)
    model = project.model
    for key, value in model.state_dict().items():
        assert torch.equal(payload["model"]["weights"][key], value)
    saved_opt = payload["model"]["optimizers"]["opt"]
    for i, param in enumerate(model.net.parameters()):
        assert torch.equal(saved_opt["state"][i]["exp_avg"], model.opt.state[param]["exp_avg"])
    assert payload["state"]["global_step"] == 8
    assert payload["state"]["epoch"] == 2
    assert payload["config"] == {**project.config, "model_dir": str(project.config["model_dir"])}
    assert is_plain(payload["config"])


def test_load_forks_a_new_run_from_the_checkpoint_weights(build, tmp_path):
    project = build(n_epochs=2)
    project.train()
    path = project.run_dir / "checkpoint-000000008.pt"
    cls = type(project)
    fork = cls.load(path, n_epochs=1)
    assert type(fork) is cls
    assert (fork.config["n_epochs"], fork.config["init_from"]) == (1, str(path))
    assert fork.state.global_step == 0  # a new run: its own steps, from the parent's weights
    for key, value in project.model.state_dict().items():
        assert torch.equal(fork.model.state_dict()[key], value)
    summary = fork.train()
    assert (summary["global_step"], summary["epochs"]) == (4, 1)
    assert fork.run_dir != project.run_dir


# --- contract errors ----------------------------------------------------------------------------
def test_get_model_returning_a_plain_module_is_a_model_error(build, tmp_path):
    with pytest.raises(ModelError, match="ProxyModel"):
        build(model=lambda: nn.Linear(4, 3), tensorboard_dir=str(tmp_path / "tb"))
    assert not (tmp_path / "models").exists()
    assert not (tmp_path / "tb").exists()


class ReturnsTensor(Recording):
    def train_batch(self, batch):
        return super().train_batch(batch)["loss"]


class MissingMetric(Recording):
    metrics = ("loss", "acc")


@pytest.mark.parametrize(
    "model, match",
    [(ReturnsTensor, "train_batch must return a dict"), (MissingMetric, "no 'acc'")],
)
def test_train_batch_breaking_the_contract_fails_at_the_first_step(build, model, match):
    project = build(model=model, n_epochs=2)
    with pytest.raises(ModelError, match=match):
        project.train()
    assert len(project.model.steps) == 1


def test_metrics_may_be_left_out_on_steps_that_log_nothing(build, tiny_model):
    """ProxyModel skips accuracy on unlogged steps; naming it in ``metrics`` must still work."""

    def model():
        proxy = tiny_model()
        proxy.metrics = ("loss", "accuracy")
        return proxy

    run = FakeRun(run_id=1)
    project = build(model=model, run=run, log_iteration_scalars=2, log_iteration_all=None)
    summary = project.train()
    assert summary["global_step"] == 4
    logged = sorted(
        (tag, step)
        for tag, _, step in run.scalars
        if tag.startswith("train/") and tag not in ("train/lr", "train/epoch_time")
    )
    assert logged == [(f"train/{name}", step) for name in ("accuracy", "loss") for step in (2, 4)]


def test_benchmark_goal_missing_fails_at_construction(build, tmp_path):
    with pytest.raises(ModelError, match="benchmark_goal"):
        build(model=functools.partial(Recording, metric="accuracy"))
    assert not (tmp_path / "models").exists()


def test_benchmark_metric_missing_from_test_outputs_is_refused_before_any_file(build, tmp_path):
    with pytest.raises(ModelError, match="test_batch returned no 'f1'"):
        build(model=functools.partial(Recording, metric="f1", goal="max"))
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    "bad", [{"n_epochs": -1}, {"n_epoch": 2}, {"device": "gpu"}, {"save_iterations": 0}]
)
def test_invalid_config_creates_nothing(project_class, base_config, tmp_path, data16, bad):
    built = []

    def data(config):
        built.append("data")
        return data16()

    cls = project_class(data=data)
    config = {**base_config, "tensorboard_dir": str(tmp_path / "tb"), **bad}
    with pytest.raises(ConfigError, match=next(iter(bad))):
        cls(config)
    assert built == []
    assert not (tmp_path / "models").exists()
    assert not (tmp_path / "tb").exists()


def test_from_run_rejects_keys_declared_nowhere(project_class, base_config):
    run = FakeRun(run_id=1, config=base_config, added={"n_epoch"})
    with pytest.raises(ConfigError, match="n_epoch"):
        project_class().from_run(run)


def test_from_run_builds_from_the_run_config(project_class, base_config):
    project = project_class().from_run(FakeRun(run_id=1, config=base_config))
    assert project.run is not None
    assert project.config["n_epochs"] == base_config["n_epochs"]


# --- output, summary, overrides -----------------------------------------------------------------
def test_a_person_sees_where_the_run_is_a_line_per_evaluation_and_a_summary(
    build, capsys, tmp_path
):
    summary = build(n_epochs=2, tensorboard_dir=str(tmp_path / "tb"), run=FakeRun(run_id=7)).train()
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout stays the user's
    lines = captured.err.splitlines()
    run_dir = summary["run_dir"]
    assert lines[0] == f"run {run_dir} · TensorBoard {tmp_path / 'tb' / '7_rec'} · sacred run 7"
    assert re.fullmatch(
        r"epoch 1/2 · step 4 · train loss [\d.]+ · validation loss 10 accuracy 10 wsum \S+ "
        r"· [\d.]+ s",
        lines[1],
    ), lines[1]
    assert lines[2].startswith("epoch 2/2 · step 8 · train loss ")
    assert lines[3] == (
        f"done: 2 epochs, 8 steps · best validation loss 10 at step 4 ({run_dir}/best.pt) · "
        f"test loss 10 accuracy 10 wsum {summary['test']['wsum']:.4g}"
    )
    assert len(lines) == 4  # progress=False: no bars, only the lines that stay


def test_summary_has_test_accuracy_and_best_step(build, tiny_model):
    summary = build(model=tiny_model, n_epochs=2).train()
    assert set(summary) >= {"run_dir", "global_step", "epochs", "best", "validation", "test"}
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0
    assert summary["best"]["step"] in (4, 8)
    assert isinstance(summary["best"]["loss"], float)


def test_overridden_train_epoch_reuses_the_step_bookkeeping(project_class, base_config, data16):
    class OwnLoop(project_class(model=lambda c: Recording(), data=lambda c: data16())):
        def train_epoch(self):
            for batch in self.train_loader:
                self.begin_step()
                self.end_step(self.model.train_batch(batch))
                if self.should_stop():
                    break

    project = OwnLoop({**base_config, "n_global_iterations": 6, "save_iterations": 3})
    summary = project.train()
    assert len(project.model.steps) == 6
    assert summary["global_step"] == 6
    assert (project.run_dir / "checkpoint-000000003.pt").is_file()
    assert (project.run_dir / "checkpoint-000000006.pt").is_file()


def test_nan_loss_with_nonfinite_skip_finishes_the_run(build, tmp_path, tb_scalars):
    class NanAtStep2(Recording):
        def train_batch(self, batch):
            if len(self.steps) == 1:
                self.steps.append((self.global_step, self.training, self.log_level, None))
                loss = torch.tensor(float("nan"))
                assert not self.loss_is_finite(loss)
                return {"loss": loss}
            return super().train_batch(batch)

    project = build(
        model=NanAtStep2, n_epochs=2, nonfinite="skip", tensorboard_dir=str(tmp_path / "tb")
    )
    summary = project.train()
    assert summary["global_step"] == 8
    scalars = tb_scalars(tmp_path / "tb" / project.run_dir.name)
    assert scalars["train/skipped_steps"][-1] == (8, 1.0)


def test_nan_loss_with_nonfinite_error_stops_the_run(build):
    class NanAtStep2(Recording):
        def train_batch(self, batch):
            if len(self.steps) == 1:
                self.loss_is_finite(torch.tensor(float("nan")))
            return super().train_batch(batch)

    with pytest.raises(NonFiniteLossError):
        build(model=NanAtStep2, n_epochs=2).train()


# --- the model's contract, checked before the first step ---------------------------------------
def test_a_model_with_weights_but_no_optimizer_is_refused_at_build(build, tmp_path):
    class NoOptimizer(Recording):
        def __init__(self):
            super().__init__()
            del self.opt

    with pytest.raises(ModelError, match="has 15 trainable parameters but no optimizer"):
        build(model=NoOptimizer)
    assert not (tmp_path / "models").exists()


def test_a_network_the_user_wrapped_in_ddp_is_refused_at_build(build, tmp_path):
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1
    )
    try:

        class Wrapped(Recording):
            def __init__(self):
                super().__init__()
                self.net = nn.parallel.DistributedDataParallel(self.net)
                self.opt = torch.optim.Adam(self.net.parameters(), lr=0.05)

        with pytest.raises(ModelError, match=r"Wrapped\.net is already a DistributedDataParallel"):
            build(model=Wrapped)
    finally:
        dist.destroy_process_group()
    assert not (tmp_path / "models").exists()


def test_a_dataset_of_dicts_fed_to_proxy_model_is_refused_before_any_file(
    project_class, base_config, tmp_path, tiny_model
):
    class Dicts(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return {"image": torch.randn(4), "label": i % 3}

    data = DatasetFactory(
        train_set=Dicts(), validation_set=Dicts(), loader_kwargs={"batch_size": 4}
    )
    cls = project_class(model=lambda c: tiny_model(), data=lambda c: data)
    with pytest.raises(ModelError, match=r"needs \(inputs, targets\) batches; got a dict with "
                       r"keys \['image', 'label'\]"):  # fmt: skip
        cls({**base_config, "tensorboard_dir": str(tmp_path / "tb")})
    assert not (tmp_path / "models").exists() and not (tmp_path / "tb").exists()


def test_a_per_sample_loss_from_train_batch_is_an_error_naming_the_key(build):
    class Vector(Recording):
        def train_batch(self, batch):
            out = super().train_batch(batch)
            return {**out, "per_sample": torch.ones(4)}

    with pytest.raises(ModelError, match="train_batch returned 'per_sample' as Tensor of shape"):
        build(model=Vector).train()


def test_a_non_finite_validation_metric_is_never_best_and_is_said(build, capsys):
    project = build(model=functools.partial(Recording, script={4: float("nan")}), n_epochs=2)
    summary = project.train()
    assert summary["best"]["step"] == 8  # the NaN at step 4 was skipped, 10.0 at step 8 is best
    assert "validation loss is nan at step 4: not finite, so never a best model" in (
        capsys.readouterr().err
    )


def test_device_left_unset_keeps_the_model_where_get_model_put_it_and_records_it(build):
    project = build()
    assert project.config["device"] == "cpu"
    project.train()
    assert json.loads((project.run_dir / "run.json").read_text())["config"]["device"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_model_get_model_put_on_a_gpu_stays_there_unless_device_says_otherwise(build, capsys):
    class OnGpu(Recording):
        def __init__(self):
            super().__init__()
            self.cuda()

    assert build(model=OnGpu).device.type == "cuda"
    moved = build(model=OnGpu, device="cpu")
    assert moved.model.device.type == "cpu"
    assert "device='cpu': moving the model from cuda:0 to cpu" in capsys.readouterr().err


# --- ProxyModel's schedulers over a run --------------------------------------------------------
def proxy_with(scheduler_factory, interval="epoch", goal=None, metric="loss"):
    def make(config):
        net = nn.Linear(4, 3)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        return ProxyModel(
            net, opt, loss=nn.CrossEntropyLoss(), name="proxy", scheduler=scheduler_factory(opt),
            scheduler_interval=interval, benchmark_metric=metric, benchmark_goal=goal,
        )  # fmt: skip

    return make


def test_a_step_interval_scheduler_steps_after_every_optimizer_step(
    project_class, base_config, data16, tmp_path, tb_scalars
):
    sched = proxy_with(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (s + 1)),
                       interval="step")  # fmt: skip
    cls = project_class(model=sched, data=lambda c: data16())
    project = cls({**base_config, "n_epochs": 2, "tensorboard_dir": str(tmp_path / "tb")})
    project.train()
    lrs = tb_scalars(tmp_path / "tb" / project.run_dir.name)["train/lr"]
    # logged after each step: the lr the next step will use
    assert lrs == [(s, pytest.approx(0.1 / (s + 1))) for s in range(1, 9)]


def test_a_one_cycle_schedule_made_for_the_runs_steps_is_stepped_once_per_step(
    project_class, base_config, data16
):
    def one_cycle(opt):  # 2 epochs of 4 steps; stepping it a 9th time would raise
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=8)

    cls = project_class(model=proxy_with(one_cycle, interval="step"), data=lambda c: data16())
    project = cls({**base_config, "n_epochs": 2})
    project.train()
    scheduler = project.model.scheduler
    assert scheduler.last_epoch == 8
    reference = one_cycle(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))
    for _ in range(8):
        reference.optimizer.step()
        reference.step()
    assert project.model.opt.param_groups[0]["lr"] == reference.get_last_lr()[0]


class TwoOptimizers(Model):
    """A generator-style net with two param groups in one optimizer, a head with another."""

    def __init__(self):
        super().__init__(name="two")
        self.net, self.head = nn.Linear(4, 3), nn.Linear(3, 3)
        groups = [{"params": [self.net.weight]}, {"params": [self.net.bias], "lr": 0.01}]
        head = torch.optim.SGD(self.head.parameters(), lr=0.2)
        self.opts = [torch.optim.Adam(groups, lr=0.05), head]

    def train_batch(self, batch):
        x, y = batch
        for opt in self.opts:
            opt.zero_grad()
        loss = nn.functional.cross_entropy(self.head(self.net(x)), y)
        loss.backward()
        for opt in self.opts:
            opt.step()
        return {"loss": loss.detach()}

    def test_batch(self, batch):
        x, y = batch
        return {"loss": nn.functional.cross_entropy(self.head(self.net(x)), y)}


def test_the_lr_of_every_optimizer_and_param_group_has_its_own_series(build, tmp_path, tb_scalars):
    project = build(model=TwoOptimizers, n_epochs=1, tensorboard_dir=str(tmp_path / "tb"))
    project.train()
    scalars = tb_scalars(tmp_path / "tb" / project.run_dir.name)
    lrs = {tag: {v for _, v in points} for tag, points in scalars.items() if "/lr" in tag}
    assert lrs == {
        "train/lr/opts.0/0": {f32(0.05)},
        "train/lr/opts.0/1": {f32(0.01)},
        "train/lr/opts.1": {f32(0.2)},
    }
    assert [s for s, _ in scalars["train/lr/opts.1"]] == [s for s, _ in scalars["train/loss"]]


def test_reduce_on_plateau_steps_on_the_validation_benchmark_metric(
    project_class, base_config, data16
):
    plateau = proxy_with(
        lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5),
    )
    cls = project_class(model=plateau, data=lambda c: data16())
    project = cls({**base_config, "n_epochs": 3})
    seen = []
    original = project.model.on_validation_end
    project.model.on_validation_end = lambda m: (seen.append(m["loss"]), original(m))
    project.train()
    assert len(seen) == 3
    expected_lr = 0.1 * 0.5 ** sum(b >= a for a, b in zip(seen, seen[1:]))
    assert project.model.opt.param_groups[0]["lr"] == pytest.approx(expected_lr)


def test_reduce_on_plateau_without_a_validation_set_is_refused(
    project_class, base_config, tiny_data
):
    plateau = proxy_with(lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt))
    cls = project_class(model=plateau, data=lambda c: tiny_data(n_val=0))
    with pytest.raises(ModelError, match="ReduceLROnPlateau .* no validation set"):
        cls(base_config)


# --- evaluation schedule and early stopping ----------------------------------------------------
def test_validate_iterations_evaluates_every_n_steps_through_the_cli(tmp_path, start_script):
    job = start_script(
        "test/scripts/resumable.py", "with", f"model_dir={tmp_path / 'm'}",
        f"tensorboard_dir={tmp_path / 'tb'}", "n_global_iterations=12", "validate_iterations=4",
        "seed=1", cwd=tmp_path,
    )  # fmt: skip
    _, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    (tb_run,) = (tmp_path / "tb").iterdir()
    from conftest import accumulate

    acc = accumulate(tb_run)
    assert [e.step for e in acc.Scalars("validation/loss")] == [4, 8, 12]  # not at epoch ends
    assert [e.step for e in acc.Scalars("validation/best_loss")] == [4, 8, 12]
    (run_dir,) = (tmp_path / "m").iterdir()
    assert (run_dir / "best.pt").is_file()


def test_early_stopping_stops_after_n_evaluations_without_improvement(build, capsys):
    # validation values after steps 4, 8, 12, ...: the best at step 8, then no better
    script = {4: 5.0, 8: 3.0, 12: 4.0, 16: 3.5, 20: 9.0}
    project = build(model=functools.partial(Recording, script=script), n_epochs=10,
                    early_stopping=2)  # fmt: skip
    summary = project.train()
    assert (summary["global_step"], summary["stopped"]) == (16, "early_stopping")
    assert summary["best"] == {"step": 8, "loss": 3.0}
    wsum = project.model.epoch_weights[2]["net.weight"].sum().item()
    assert summary["test"]["wsum"] == pytest.approx(wsum)  # the best weights were tested
    assert "early stopping at step 16: validation loss has not improved for 2 evaluations" in (
        capsys.readouterr().err
    )


def test_early_stopping_keeps_its_patience_across_a_resume(build):
    script = {4: 5.0, 8: 3.0, 12: 4.0, 16: 3.5, 20: 9.0}
    model = functools.partial(Recording, script=script)
    first = build(model=model, n_epochs=3, early_stopping=2)  # 12 steps: one bad evaluation
    first.train()
    assert first.state.evaluations_without_best == 1
    resumed = build(model=model, n_epochs=10, early_stopping=2, resume=str(first.run_dir))
    summary = resumed.train()
    assert (summary["global_step"], summary["stopped"]) == (16, "early_stopping")


def test_early_stopping_through_the_cli_stops_at_an_evaluation_and_says_why(tmp_path, start_script):
    job = start_script(
        "test/scripts/resumable.py", "with", f"model_dir={tmp_path / 'm'}",
        f"tensorboard_dir={tmp_path / 'tb'}", "n_global_iterations=200", "validate_iterations=2",
        "early_stopping=1", "lr=0.0", "seed=1", cwd=tmp_path,
    )  # fmt: skip
    _, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    (tb_run,) = (tmp_path / "tb").iterdir()
    from conftest import accumulate

    acc = accumulate(tb_run)
    steps = [e.step for e in acc.Scalars("validation/loss")]
    values = [e.value for e in acc.Scalars("validation/loss")]
    assert steps == list(range(2, 2 * len(steps) + 1, 2)) and steps[-1] < 200
    assert values[-1] >= min(values[:-1])  # the last evaluation did not improve: it stopped
    assert f"early stopping at step {steps[-1]}: validation loss has not improved" in err
    (run_dir,) = (tmp_path / "m").iterdir()
    summary = json.loads((run_dir / "run.json").read_text())["summary"]
    assert (summary["global_step"], summary["stopped"]) == (steps[-1], "early_stopping")


def test_the_readmes_module_map_names_every_module():
    """The Development section's table: one row for each module of the package."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    table = text[text.index("Modules, one responsibility each") :]
    listed = set(re.findall(r"`(\w+\.py)`", table)) | set(re.findall(r"`(\w+)/`", table))
    package = {p.name for p in (root / "mlproject").glob("*.py")} - {"__init__.py"}
    package |= {p.name for p in (root / "mlproject").iterdir() if (p / "__init__.py").is_file()}
    assert package <= listed, f"not in the README's module map: {sorted(package - listed)}"
