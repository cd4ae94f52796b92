"""Tests of mlproject.model: devices, ProxyModel's outputs, optimizer state, goals, NaN losses."""

import io
import re
from collections import OrderedDict, namedtuple

import numpy as np
import pytest
import torch
from torch import nn

from mlproject import LogLevel, Model, ModelError, NonFiniteLossError, ProxyModel
from mlproject.model import benchmark_goal, scalars
from mlproject.nonfinite import NonFinitePolicy

Pair = namedtuple("Pair", ["x", "y"])


class Regressor(Model):
    """A linear model with Adam and a step scheduler, as a user would write one."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Linear(3, 1)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=0.1)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=2, gamma=0.5)
        self.not_an_optimizer = [1, 2]

    def train_batch(self, batch):
        x, y = batch
        self.opt.zero_grad()
        loss = nn.functional.mse_loss(self.net(x), y)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return {"loss": loss.detach()}

    def test_batch(self, batch):
        x, y = batch
        return {"loss": nn.functional.mse_loss(self.net(x), y)}


def regression_batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)


def test_default_name_is_the_class_name_lowercased():
    assert Regressor().name == "regressor"


def test_to_returns_the_model_and_device_follows_it():
    model = Regressor()
    assert model.device == torch.device("cpu")
    assert model.to(torch.float64) is model
    assert model.to("meta") is model
    assert model.device == torch.device("meta")


def test_to_device_moves_every_tensor_of_a_nested_batch_and_keeps_its_shape():
    model = Regressor().to("meta")
    batch = {
        "pair": Pair(torch.ones(2), [torch.zeros(3), (torch.ones(1), "label")]),
        "ordered": OrderedDict(a=torch.ones(2)),
        "n": 5,
    }
    moved = model.to_device(batch)
    assert type(moved) is dict and set(moved) == {"pair", "ordered", "n"}
    assert type(moved["pair"]) is Pair
    assert moved["pair"].x.device.type == "meta"
    assert type(moved["pair"].y) is list
    assert moved["pair"].y[0].device.type == "meta"
    assert type(moved["pair"].y[1]) is tuple
    assert moved["pair"].y[1][0].device.type == "meta"
    assert moved["pair"].y[1][1] == "label"
    assert type(moved["ordered"]) is OrderedDict
    assert moved["ordered"]["a"].device.type == "meta"
    assert moved["n"] == 5


def logits_model(loss):
    """A ProxyModel whose network passes its 3 inputs through unchanged (identity weights)."""
    net = nn.Linear(3, 3)
    with torch.no_grad():
        net.weight.copy_(torch.eye(3))
        net.bias.zero_()
    return ProxyModel(net, torch.optim.SGD(net.parameters(), lr=0.0), loss=loss, name="logits")


LOGITS = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0]])
LABELS = torch.tensor([0, 1, 2, 1])  # the last one is wrong: accuracy 3/4


def test_proxy_model_reports_loss_and_accuracy_for_cross_entropy():
    model = logits_model(nn.CrossEntropyLoss())
    out = model.test_batch((LOGITS, LABELS))
    assert set(out) == {"loss", "accuracy"}
    assert float(out["accuracy"]) == 0.75
    expected = nn.functional.cross_entropy(LOGITS, LABELS)
    assert float(out["loss"].detach()) == pytest.approx(float(expected))
    train_out = model.train_batch((LOGITS, LABELS))
    assert float(train_out["accuracy"]) == 0.75
    assert not train_out["loss"].requires_grad


def test_proxy_model_reports_accuracy_for_nll_loss():
    model = logits_model(nn.NLLLoss())
    assert float(model.test_batch((LOGITS.log_softmax(1), LABELS))["accuracy"]) == 0.75


def test_proxy_model_reports_only_the_loss_for_regression():
    net = nn.Linear(3, 1)
    model = ProxyModel(net, torch.optim.SGD(net.parameters(), lr=0.1), loss=nn.MSELoss())
    assert set(model.test_batch(regression_batch())) == {"loss"}
    assert set(model.train_batch(regression_batch())) == {"loss"}


def test_proxy_model_train_batch_takes_an_optimizer_step():
    net = nn.Linear(3, 1)
    model = ProxyModel(net, torch.optim.SGD(net.parameters(), lr=0.1), loss=nn.MSELoss())
    before = net.weight.detach().clone()
    model.train_batch(regression_batch())
    assert not torch.equal(before, net.weight)


def test_optimizers_and_schedulers_are_found_by_attribute():
    model = Regressor()
    model.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(model.opt)
    model.opt2 = torch.optim.SGD(model.net.parameters(), lr=0.1)
    assert model.optimizers() == {"opt": model.opt, "opt2": model.opt2}
    assert model.schedulers() == {"sched": model.sched, "plateau": model.plateau}


def test_training_state_roundtrip_restores_weights_optimizer_and_scheduler():
    trained = Regressor(seed=0)
    for i in range(3):
        trained.train_batch(regression_batch(i))
    buffer = io.BytesIO()
    torch.save(trained.training_state(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    restored = Regressor(seed=1)
    restored.load_training_state(state)
    for a, b in zip(trained.parameters(), restored.parameters()):
        assert torch.equal(a, b)
    for p, q in zip(trained.net.parameters(), restored.net.parameters()):
        assert torch.equal(trained.opt.state[p]["exp_avg"], restored.opt.state[q]["exp_avg"])
        assert torch.equal(trained.opt.state[p]["exp_avg_sq"], restored.opt.state[q]["exp_avg_sq"])
    assert restored.sched.last_epoch == trained.sched.last_epoch == 3
    assert restored.opt.param_groups[0]["lr"] == trained.opt.param_groups[0]["lr"] == 0.05
    # both continue identically
    trained.train_batch(regression_batch(9))
    restored.train_batch(regression_batch(9))
    for a, b in zip(trained.parameters(), restored.parameters()):
        assert torch.equal(a, b)


class AccuracyModel(Regressor):
    benchmark_metric = "accuracy"


def test_benchmark_goal_of_the_loss_defaults_to_min():
    assert benchmark_goal(Regressor()) == "min"


def test_benchmark_goal_of_another_metric_is_never_guessed():
    with pytest.raises(ModelError, match="'min' or 'max'"):
        benchmark_goal(AccuracyModel())


@pytest.mark.parametrize("goal", ["min", "max"])
def test_explicit_benchmark_goal_is_used(goal):
    model = AccuracyModel()
    model.benchmark_goal = goal
    assert benchmark_goal(model) == goal


def test_misspelled_benchmark_goal_is_an_error():
    model = Regressor()
    model.benchmark_goal = "maximize"
    with pytest.raises(ModelError, match="maximize"):
        benchmark_goal(model)


def test_proxy_model_takes_its_benchmark_metric_and_goal():
    net = nn.Linear(3, 3)
    model = ProxyModel(
        net,
        torch.optim.SGD(net.parameters(), lr=0.1),
        loss=nn.CrossEntropyLoss(),
        benchmark_metric="accuracy",
        benchmark_goal="max",
    )
    assert (model.benchmark_metric, benchmark_goal(model)) == ("accuracy", "max")


def nan_model():
    net = nn.Linear(3, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    return ProxyModel(net, opt, loss=lambda out, y: (out - y).pow(2).mean() * float("nan"))


def test_nan_loss_raises_before_the_optimizer_step():
    model = nan_model()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match="nonfinite=skip"):
        model.train_batch(regression_batch())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.opt.state == {}


def test_nan_loss_is_skipped_and_counted_with_nonfinite_skip():
    model = nan_model()
    model.nonfinite = NonFinitePolicy("skip")
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        out = model.train_batch(regression_batch())
        assert torch.isnan(out["loss"])
    assert model.nonfinite.skipped == 2
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_log_levels_are_ordered():
    assert LogLevel.NOTHING < LogLevel.SCALARS < LogLevel.ALL


def test_writer_outside_a_run_accepts_writer_calls_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    writer = nan_model().writer
    writer.add_image("x", torch.zeros(1, 2, 2), 1)
    writer.add_histogram("h", torch.zeros(3), 1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "outputs, expected",
    [
        ({"loss": torch.tensor(1.0), "n": 3, "f": 0.5}, {"loss", "n", "f"}),
        ({"loss": 1.0}, {"loss"}),
    ],
)
def test_scalars_keeps_numbers_and_zero_dim_tensors(outputs, expected):
    assert set(scalars(outputs, "train_batch")) == expected


@pytest.mark.parametrize(
    "value, shown",
    [
        (torch.ones(3), "Tensor of shape (3,)"),
        (np.zeros(2), "ndarray of shape (2,)"),
        (True, "bool"),
        ("x", "str"),
    ],
)
def test_a_value_that_is_not_a_scalar_is_named_never_dropped(value, shown):
    with pytest.raises(ModelError, match=f"train_batch returned 'extra' as {re.escape(shown)};"):
        scalars({"loss": 1.0, "extra": value}, "train_batch")


@pytest.mark.parametrize(
    "outputs, keys, match",
    [
        (torch.tensor(1.0), None, "must return a dict"),
        ([1.0], None, "must return a dict"),
        ({"loss": 1.0}, ["accuracy"], "no 'accuracy'"),
        ({"loss": torch.ones(2)}, ["loss"], "0-d tensor"),
    ],
)
def test_scalars_rejects_what_breaks_the_contract(outputs, keys, match):
    with pytest.raises(ModelError, match=match):
        scalars(outputs, "train_batch", keys)


def _plateau_proxy(**kwargs):
    net = nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    mode = kwargs.pop("mode", "min")
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode)
    return ProxyModel(net, opt, loss=nn.CrossEntropyLoss(), scheduler=sched, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scheduler_interval": "batch"}, "scheduler_interval must be 'epoch' or 'step'"),
        ({"scheduler_interval": "step"}, "use scheduler_interval='epoch'"),
        (
            {"mode": "min", "benchmark_metric": "accuracy", "benchmark_goal": "max"},
            r"ReduceLROnPlateau\(opt, mode='max'\)",
        ),
    ],
)
def test_scheduler_settings_that_cannot_work_are_refused_with_the_fix(kwargs, match):
    with pytest.raises(ModelError, match=match):
        _plateau_proxy(**kwargs)


def test_a_scheduler_of_another_optimizer_is_refused():
    net = nn.Linear(3, 2)
    other = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(other, 1)
    with pytest.raises(ModelError, match="another optimizer"):
        ProxyModel(net, torch.optim.SGD(net.parameters(), lr=0.1), loss=nn.MSELoss(),
                   scheduler=sched)  # fmt: skip


def test_optimizers_and_schedulers_are_found_in_lists_tuples_and_dicts():
    class Gan(Model):
        def __init__(self):
            super().__init__()
            self.g, self.d = nn.Linear(2, 2), nn.Linear(2, 1)
            self.opts = [
                torch.optim.Adam(self.g.parameters()),
                torch.optim.Adam(self.d.parameters()),
            ]
            self.scheds = {"g": torch.optim.lr_scheduler.StepLR(self.opts[0], 1)}
            self.more = {"pairs": [(torch.optim.SGD(self.g.parameters(), lr=0.1),)]}
            self._private = torch.optim.SGD(self.d.parameters(), lr=0.1)  # saved all the same

    model = Gan()
    names = ["_private", "more.pairs.0.0", "opts.0", "opts.1"]
    assert sorted(model.optimizers()) == names
    assert sorted(model.schedulers()) == ["scheds.g"]
    assert sorted(model.training_state()["optimizers"]) == names
