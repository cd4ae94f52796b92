"""The training step done right: accumulation, precision, clipping, compile, schedules."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mlproject import DatasetFactory, MLProject, ProxyModel, TrainingInterrupted
from mlproject.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from resumable import Resumable, in_process_config  # noqa: E402
from test_resume import assert_same, final_state  # noqa: E402

CUDA = torch.cuda.is_available()


def regression_project(batch_size: int, dtype=torch.float64, optimizer="sgd", **model_kwargs):
    """Linear regression in float64 over 32 fixed samples, shuffled each epoch."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 5, generator=g, dtype=dtype)
    y = x @ torch.randn(5, 1, generator=g, dtype=dtype) + 0.1

    class Regression(MLProject):
        @staticmethod
        def get_dataset_factory(config):
            data = TensorDataset(x, y)
            return DatasetFactory(train_set=data, loader_kwargs={"batch_size": batch_size})

        @staticmethod
        def get_model(config):
            torch.manual_seed(1)
            net = nn.Linear(5, 1).to(dtype)
            opt = (
                torch.optim.SGD(net.parameters(), lr=0.05)
                if optimizer == "sgd"
                else torch.optim.Adam(net.parameters(), lr=0.01)
            )
            return ProxyModel(net, opt, loss=nn.MSELoss(), name="regression", **model_kwargs)

    return Regression


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_k_batches_of_b_equal_one_batch_of_k_times_b(tmp_path, optimizer):
    base = {"model_dir": str(tmp_path), "progress": False, "seed": 0, "n_epochs": 3}
    big = regression_project(8, optimizer=optimizer)({**base, "prefix": "big"})
    big.train()
    small = regression_project(2, optimizer=optimizer)(
        {**base, "prefix": "small", "accumulate_grad_batches": 4}
    )
    small.train()
    assert small.state.global_step == big.state.global_step == 12  # optimizer steps
    for a, b in zip(big.model.parameters(), small.model.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-10), (a - b).abs().max()


def test_the_last_partial_window_of_an_epoch_steps_on_the_mean_of_its_batches(tmp_path):
    # 32 samples in batches of 4 = 8 batches; windows of 3: 3 + 3 + 2 batches, 3 steps an epoch
    base = {"model_dir": str(tmp_path), "progress": False, "seed": 0, "n_epochs": 1}
    project = regression_project(4)({**base, "accumulate_grad_batches": 3})
    batches, train_batch = [], project.model.train_batch
    project.model.train_batch = lambda batch: (batches.append(batch), train_batch(batch))[1]
    assert project.train()["global_step"] == 3
    reference = regression_project(4)({**base, "prefix": "ref"}).model
    for window in (batches[0:3], batches[3:6], batches[6:8]):  # each as one batch
        x = torch.cat([b[0] for b in window])
        y = torch.cat([b[1] for b in window])
        nn.functional.mse_loss(reference.net(x), y).backward()
        reference.opt.step()
        reference.opt.zero_grad()
    for a, b in zip(project.model.parameters(), reference.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-10), (a - b).abs().max()


@pytest.mark.parametrize("helpers", [True, False], ids=["helpers", "by-hand"])
def test_a_kill_in_the_middle_of_a_window_resumes_bit_for_bit(tmp_path, monkeypatch, helpers):
    # with the helpers the gradients of a window's first batch are accumulated, and lost with
    # the kill; a model stepping by hand steps every batch, the loop still counts windows
    config = functools.partial(
        in_process_config, n_epochs=2, accumulate_grad_batches=2, helpers=helpers
    )
    Resumable(config(tmp_path / "straight")).train()
    monkeypatch.setenv("FAULT_AT", "4")  # the first batch of optimizer step 4
    monkeypatch.setenv("FAULT_SIGNAL", "0")
    with pytest.raises(RuntimeError, match="injected failure"):
        Resumable(config(tmp_path / "stopped", resume="auto")).train()
    stopped = final_state(tmp_path / "stopped")["state"]
    assert (stopped["global_step"], stopped["batch_in_epoch"]) == (3, 0)  # steps 1, 2, 3 saved
    monkeypatch.delenv("FAULT_AT")
    Resumable(config(tmp_path / "stopped", resume="auto")).train()
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "stopped")
    assert a["state"]["global_step"] == 6  # 5 batches an epoch: windows of 2, 2, 1
    for key in ("model", "state", "rng"):
        assert_same(a[key], b[key], key)


def test_a_signal_in_the_middle_of_a_window_stops_at_its_end(tmp_path, monkeypatch):
    monkeypatch.setenv("FAULT_AT", "2")  # SIGTERM during the first batch of step 2
    monkeypatch.setenv("FAULT_SIGNAL", "15")
    config = in_process_config(tmp_path, accumulate_grad_batches=2, save_iterations=100)
    with pytest.raises(TrainingInterrupted) as stopped:
        Resumable(config).train()
    assert stopped.value.step == 2
    state = final_state(tmp_path)["state"]
    assert (state["global_step"], state["batch_in_epoch"]) == (2, 4)  # both batches of step 2


@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_reduced_precision_on_the_cpu_trains_and_resumes_exactly(tmp_path, monkeypatch, precision):
    config = functools.partial(in_process_config, n_epochs=2, precision=precision, helpers=True)
    Resumable(config(tmp_path / "straight")).train()
    Resumable({**config(tmp_path / "fp32"), "precision": "32"}).train()
    weights = final_state(tmp_path / "straight")["model"]["weights"]
    fp32 = final_state(tmp_path / "fp32")["model"]["weights"]
    assert any(not torch.equal(weights[k], fp32[k]) for k in weights)  # autocast took effect
    monkeypatch.setenv("FAULT_AT", "7")
    monkeypatch.setenv("FAULT_SIGNAL", "0")
    with pytest.raises(RuntimeError):
        Resumable(config(tmp_path / "stopped", resume="auto")).train()
    monkeypatch.delenv("FAULT_AT")
    Resumable(config(tmp_path / "stopped", resume="auto")).train()
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "stopped")
    for key in ("model", "state", "rng"):
        assert_same(a[key], b[key], key)
    scaler = a["model"]["stepper"]["scaler"]
    assert (scaler is None) == (precision == "bf16")
    if precision == "16":  # the scaler's state is saved (and restored: equal above)
        assert scaler["scale"] > 0 and set(scaler) >= {"_growth_tracker", "growth_interval"}


def _amp_project(device: str, make_model=None):
    """Classification of 24 fixed samples in batches of 6, unshuffled; by default a ProxyModel
    (an MLP, SGD) seeded like the hand-written loops the tests compare it with."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 6, generator=g), torch.randint(0, 3, (24,), generator=g)

    class Amp(MLProject):
        @staticmethod
        def get_dataset_factory(config):
            data = TensorDataset(x, y)
            return DatasetFactory(train_set=data, loader_kwargs={"batch_size": 6, "shuffle": False})

        @staticmethod
        def get_model(config):
            torch.manual_seed(2)
            if make_model is not None:
                return make_model()
            net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).to(device)
            opt = torch.optim.SGD(net.parameters(), lr=0.5)
            return ProxyModel(net, opt, loss=nn.CrossEntropyLoss(), train_accuracy=False)

    return Amp, x, y


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not CUDA, reason="needs a CUDA GPU"))])  # fmt: skip
def test_clipping_unscales_first_as_a_hand_written_amp_loop(tmp_path, device, tb_scalars):
    cls, x, y = _amp_project(device)
    config = {
        "model_dir": str(tmp_path), "progress": False, "seed": 0, "n_epochs": 2,
        "precision": "16", "clip_grad_norm": 0.05, "device": device,
        "tensorboard_dir": str(tmp_path / "tb"),
    }  # fmt: skip
    project = cls(config)
    project.train()
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    scaler, norms = torch.amp.GradScaler(device), []
    for _ in range(2):
        for i in range(0, 24, 6):
            xb, yb = x[i : i + 6].to(device), y[i : i + 6].to(device)
            with torch.autocast(device, dtype=torch.float16):
                loss = nn.functional.cross_entropy(net(xb), yb)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            norms.append(float(nn.utils.clip_grad_norm_(net.parameters(), 0.05)))
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
    for a, b in zip(project.model.net.parameters(), net.parameters()):
        assert torch.equal(a, b)
    logged = tb_scalars(tmp_path / "tb" / project.run_dir.name)["train/grad_norm"]
    assert [step for step, _ in logged] == list(range(1, 9))
    assert [v for _, v in logged] == pytest.approx(norms, rel=1e-6)  # the norm before clipping


def test_an_fp16_overflow_skips_the_update_and_is_no_step_for_the_scheduler(tmp_path):
    calls = []

    def loss(out, target):  # finite, but 65536 times it (the scaler's first scale) is not
        calls.append(None)
        return nn.functional.cross_entropy(out, target) * (1e37 if len(calls) == 1 else 1.0)

    def make_model():
        net = nn.Linear(6, 3)
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (s + 1))
        return ProxyModel(net, opt, loss=loss, train_accuracy=False, scheduler=sched,
                          scheduler_interval="step")  # fmt: skip

    overflow, _, _ = _amp_project("cpu", make_model)
    project = overflow({"model_dir": str(tmp_path), "progress": False, "seed": 0,
                        "n_epochs": 1, "precision": "16"})  # fmt: skip
    torch.manual_seed(2)
    initial = nn.Linear(6, 3).weight.detach().clone()
    steps = []  # the global steps whose update was applied
    state = project.state
    project.model.opt.register_step_post_hook(lambda *_: steps.append(state.global_step + 1))
    summary = project.train()  # nonfinite='error': an overflow is no NaN loss
    assert summary["global_step"] == 4  # the skipped step counts, as a skipped NaN step does
    assert steps == [2, 3, 4]  # GradScaler left step 1's update out
    assert project.model.schedulers()["scheduler"].last_epoch == 3  # after steps 2, 3, 4 only
    assert project.model.opt.param_groups[0]["lr"] == pytest.approx(0.5 / 4)
    assert project.nonfinite.skipped == 0  # not counted as a non-finite step either
    assert project.model.stepper.scaler.get_scale() == 65536.0 / 2  # halved once, then kept
    assert not torch.equal(project.model.net.weight, initial)


def test_the_readmes_gan_trains_as_written_with_precision_accumulation_and_clipping(
    tmp_path, tb_images, tb_scalars
):
    import re

    import mlproject

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (block,) = re.findall(r"```python\n(class GAN\(mlproject\.Model\):.*?)```", readme, re.S)
    torch.manual_seed(0)
    parts = {  # what the README leaves to the reader: small nets on 3x4x4 images
        "Generator": lambda: nn.Sequential(nn.Linear(8, 48), nn.Unflatten(1, (3, 4, 4))),
        "Discriminator": lambda: nn.Sequential(nn.Flatten(), nn.Linear(48, 1)),
        "noise": lambda n: torch.randn(n, 8),
        "d_loss_fn": lambda real, fake: (
            nn.functional.softplus(-real).mean() + nn.functional.softplus(fake).mean()
        ),
        "g_loss_fn": lambda fake: nn.functional.softplus(-fake).mean(),
    }
    namespace = {"mlproject": mlproject, "torch": torch, **parts}
    exec(block, namespace)  # noqa: S102 - the README's own code

    class Gan(namespace["GAN"]):
        def test_batch(self, batch):
            return {"fid": self.d(self.g(noise(len(batch[0])))).mean().abs()}

    noise = parts["noise"]
    images = TensorDataset(torch.rand(16, 3, 4, 4), torch.zeros(16))

    class Project(MLProject):
        get_model = staticmethod(lambda config: Gan())
        get_dataset_factory = staticmethod(lambda config: DatasetFactory(
            train_set=images, validation_set=images, loader_kwargs={"batch_size": 4}))  # fmt: skip

    config = {
        "model_dir": str(tmp_path / "m"), "tensorboard_dir": str(tmp_path / "tb"), "seed": 0,
        "progress": False, "n_epochs": 2, "precision": "bf16", "accumulate_grad_batches": 2,
        "clip_grad_norm": 1.0, "log_iteration_all": 2,
    }  # fmt: skip
    project = Project(config)
    summary = project.train()
    assert summary["global_step"] == 4  # 2 epochs of 4 batches, 2 batches per step
    assert set(summary["best"]) == {"step", "fid"}
    logdir = tmp_path / "tb" / project.run_dir.name
    assert tb_images(logdir)["samples"] == [2, 4]  # once per step that logs everything
    scalars = tb_scalars(logdir)
    assert [step for step, _ in scalars["train/d_loss"]] == [1, 2, 3, 4]
    optimizers = project.model.optimizers()
    assert all(opt.state for opt in optimizers.values())  # both Adam optimizers stepped


def test_a_compiled_models_checkpoint_loads_into_an_uncompiled_one_and_back(tmp_path):
    compiled = Resumable(in_process_config(tmp_path, compile="aot_eager"))
    compiled.train()
    weights = final_state(tmp_path)["model"]["weights"]
    assert all("_orig_mod" not in key for key in weights)
    plain = Resumable.load_model(compiled.run_dir / "checkpoint-000000005.pt")
    assert_same(weights, plain.state_dict())
    (run_dir,) = tmp_path.iterdir()
    again = Resumable(in_process_config(tmp_path, n_epochs=2, resume=str(run_dir)))
    assert again.train()["global_step"] == 10  # an uncompiled run continues it
    back = Resumable(in_process_config(tmp_path, n_epochs=3, compile="aot_eager", resume="auto"))
    assert back.train()["global_step"] == 15  # and a compiled one again


def test_an_unknown_compile_backend_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="compile='fast' is not a torch.compile backend"):
        Resumable(in_process_config(tmp_path, compile="fast"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_fifty_steps_on_cuda_make_no_host_sync_except_on_steps_that_log(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64 * 50, 32, generator=g), torch.randint(0, 10, (64 * 50,), generator=g)

    class OnCuda(MLProject):
        @staticmethod
        def get_dataset_factory(config):
            from mlproject import InMemoryLoader

            loader = InMemoryLoader(
                (x * 50).clamp(0, 255).to(torch.uint8).view(-1, 1, 4, 8), y, 64, shuffle=True
            )
            return DatasetFactory(train_loader=loader)

        @staticmethod
        def get_model(config):
            net = nn.Sequential(nn.Flatten(), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
            opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
            return ProxyModel(net, opt, loss=nn.CrossEntropyLoss(), train_accuracy=False)

    project = OnCuda(
        {"model_dir": str(tmp_path), "device": "cuda", "n_global_iterations": 50,
         "progress": False, "log_iteration_scalars": 1, "save_iterations": 1000}
    )  # fmt: skip
    project.logger.maybe_flush = lambda: None  # flushes (every 10 s) read the logged values
    steps = iter(range(50))
    original = project.train_epoch

    def train_epoch():
        torch.cuda.set_sync_debug_mode("error")
        try:
            for batch in project.epoch_batches():
                next(steps)
                project.step(batch)
                if project.should_stop():
                    break
        finally:
            torch.cuda.set_sync_debug_mode(0)

    project.train_epoch = train_epoch
    project.train()
    assert next(steps, None) is None and original is not None
