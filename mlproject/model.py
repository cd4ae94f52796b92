"""Model, the unit a project trains: an nn.Module that owns its optimizers; and ProxyModel."""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from mlproject.errors import ModelError
from mlproject.nonfinite import NonFinitePolicy
from mlproject.step import Stepper

_SCHEDULER_TYPES = (
    torch.optim.lr_scheduler.LRScheduler,
    torch.optim.lr_scheduler.ReduceLROnPlateau,
)


class LogLevel(enum.IntEnum):
    """How much the current training step logs; a model may skip costly outputs below ALL."""

    NOTHING = 0  # this step logs no scalar
    SCALARS = 1  # this step's scalars are logged
    ALL = 2  # scalars, and the model may write images/histograms to ``self.writer``


class Model(nn.Module):
    """A network together with its optimizers (and LR schedulers), trained one batch at a time.

    Subclasses implement ``train_batch`` (zero_grad, forward, backward, optimizer step) and
    ``test_batch``; both return a dict of scalars (Python numbers or 0-d tensors). Every
    attribute that is an optimizer or LR scheduler is saved and restored with the model.

    Attributes:
        name: names the run folder and the TensorBoard run.
        metrics: train outputs that are logged; None = every scalar ``train_batch`` returns.
        benchmark_metric: the ``test_batch`` output that compares two models.
        benchmark_goal: 'min' or 'max' for ``benchmark_metric``; must be set explicitly unless
            the metric is 'loss' (then 'min').
        log_level: set by the trainer before each ``train_batch`` (a ``LogLevel``).
        writer: a tensorboardX ``SummaryWriter`` writing into the run's own event file (any
            ``add_*``; the same class writing nothing when TensorBoard is off), e.g. for images
            on ``LogLevel.ALL`` steps.
        nonfinite: the run's NaN/inf policy (``mlproject.nonfinite.NonFinitePolicy``).
        stepper: how optimizer steps are taken (``mlproject.step.Stepper``): the run's
            precision, gradient accumulation and clipping, used by ``autocast``,
            ``backward`` and ``step``.
        global_step: the number of optimizer steps done before the current batch.

    Example:
        >>> class Regressor(Model):
        ...     def __init__(self):
        ...         super().__init__(name="regressor")
        ...         self.net = nn.Linear(3, 1)
        ...         self.opt = torch.optim.SGD(self.net.parameters(), lr=0.1)
        ...     def train_batch(self, batch):
        ...         x, y = batch
        ...         self.opt.zero_grad()
        ...         loss = nn.functional.mse_loss(self.net(x), y)
        ...         loss.backward()
        ...         self.opt.step()
        ...         return {"loss": loss.detach()}
        ...     def test_batch(self, batch):
        ...         x, y = batch
        ...         return {"loss": nn.functional.mse_loss(self.net(x), y)}
    """

    metrics: tuple[str, ...] | None = None
    benchmark_metric: str = "loss"
    benchmark_goal: str | None = None

    def __init__(self, name: str | None = None):
        super().__init__()
        self.name = name or type(self).__name__.lower()
        self.log_level = LogLevel.SCALARS
        self._writer: Any = None
        self.global_step = 0
        self.stepper = Stepper()
        self._device_cache: torch.device | None = None

    @property
    def nonfinite(self) -> NonFinitePolicy:
        return self.stepper.nonfinite

    @nonfinite.setter
    def nonfinite(self, policy: NonFinitePolicy) -> None:
        self.stepper.nonfinite = policy

    @property
    def writer(self) -> Any:
        """The run's SummaryWriter; outside a run, one that writes nothing."""
        if self._writer is None:
            from mlproject.tensorboard import null_writer  # tensorboardX, only when used

            self._writer = null_writer()
        return self._writer

    @writer.setter
    def writer(self, writer: Any) -> None:
        self._writer = writer

    # --- the contract -----------------------------------------------------------------------
    def train_batch(self, batch: Any) -> dict[str, Any]:
        """Train on one batch (zero_grad, forward, backward, step); return a dict of scalars."""
        raise NotImplementedError(f"{type(self).__name__} must implement train_batch(batch)")

    def test_batch(self, batch: Any) -> dict[str, Any]:
        """Evaluate one batch (no gradients needed; the trainer wraps it in no_grad)."""
        raise NotImplementedError(f"{type(self).__name__} must implement test_batch(batch)")

    # --- hooks: no-ops, override as needed ----------------------------------------------------
    def on_train_begin(self) -> None:
        """Runs once when ``MLProject.train`` starts (also when it resumes)."""

    def on_train_end(self) -> None:
        """Runs once after the last training step, before the final test."""

    def on_epoch_begin(self, epoch: int) -> None:
        """Runs before each epoch; ``epoch`` counts from 0 (the number of epochs completed)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Runs after each completed epoch and its evaluation; ``epoch`` counts from 1."""

    def on_validation_end(self, metrics: dict[str, float]) -> None:
        """Runs after each evaluation on the validation set, with its averaged metrics."""

    # --- optimizers, schedulers and their state ---------------------------------------------
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The model's optimizers by name: attributes, and items of list, tuple or dict
        attributes (``self.opts = [g, d]`` gives ``opts.0`` and ``opts.1``)."""
        return _find(self, torch.optim.Optimizer)

    def schedulers(self) -> dict[str, Any]:
        """The model's LR schedulers by name, found as ``optimizers`` finds optimizers."""
        return _find(self, _SCHEDULER_TYPES)

    def training_state(self) -> dict[str, Any]:
        """Weights, optimizer, scheduler and gradient-scaler state as plain data (loadable
        with weights_only)."""
        weights, optimizers, schedulers = self.state_dict(), self.optimizers(), self.schedulers()
        return {
            "weights": weights,
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
            "stepper": self.stepper.state_dict(),
            "structure": _structure(weights, optimizers, schedulers),
        }

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        """Restore what ``training_state`` returned."""
        self.load_state_dict(state["weights"])
        for key, opt in self.optimizers().items():
            opt.load_state_dict(state["optimizers"][key])
        for key, sched in self.schedulers().items():
            sched.load_state_dict(state["schedulers"][key])
        self.stepper.load_state_dict(state.get("stepper") or {})

    def load_optimizer_moments(self, optimizers: Mapping[str, Any]) -> None:
        """Take saved optimizer state (Adam's moments...) but keep today's hyperparameters.

        For a fork: each optimizer keeps the lr, betas, weight decay... that ``get_model`` gave
        it from the new config (and that its scheduler may have set); only the per-parameter
        state comes from ``optimizers`` (``training_state()["optimizers"]``).
        """
        for key, opt in self.optimizers().items():
            hyper = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
            opt.load_state_dict(optimizers[key])
            for group, fresh in zip(opt.param_groups, hyper):
                group.update(fresh)

    def structure(self) -> dict[str, Any]:
        """What must match for a checkpoint to fit: parameter shapes and optimizer classes."""
        return _structure(self.state_dict(), self.optimizers(), self.schedulers())

    # --- devices ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device of the model's first parameter or buffer (cpu when it has none)."""
        if self._device_cache is None:
            tensor = next(iter(self.parameters()), None)
            if tensor is None:
                tensor = next(iter(self.buffers()), None)
            self._device_cache = tensor.device if tensor is not None else torch.device("cpu")
        return self._device_cache

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> Model:
        self._device_cache = None  # .to()/.cuda()/.cpu() all pass through here
        return super()._apply(fn, *args, **kwargs)

    def to_device(self, batch: Any) -> Any:
        """Move the tensors in ``batch`` (nested tuples, lists, dicts) to the model's device."""
        device = self.device
        return _move(batch, device, device.type == "cuda")

    # --- helpers for train_batch ------------------------------------------------------------
    def autocast(self) -> Any:
        """A context for the forward pass: autocast under precision 'bf16' and '16'.

        Example:
            >>> with self.autocast():
            ...     loss = loss_fn(self.net(x), y)
            >>> self.backward(loss)
            >>> self.step(self.opt)
        """
        return self.stepper.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()`` done right: normalised for gradient accumulation, scaled under
        fp16, and checked by the NaN policy (a non-finite loss skips the step or stops)."""
        self.stepper.backward(loss, self.global_step + 1, self.name)

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """``optimizer.step()`` done right, then ``zero_grad``: only at the last batch of an
        accumulation window, after unscaling and clipping, skipped for a non-finite loss or an
        fp16 overflow. Returns True when the optimizer stepped (step a scheduler only then)."""
        return self.stepper.step(optimizer)

    def loss_is_finite(self, loss: torch.Tensor) -> bool:
        """True if ``loss`` is finite. Otherwise raise (nonfinite='error') or return False
        (nonfinite='skip'), so that ``train_batch`` can skip the optimizer step.

        Reading a GPU loss is a host sync, so on a GPU with nonfinite='error' this returns True
        without looking: the trainer then catches a NaN when the loss is read for logging, and
        before every checkpoint (which is never written with non-finite weights).
        """
        return self.nonfinite.check_loss(loss, self.global_step + 1, who=self.name)


def _find(model: nn.Module, kind: type | tuple[type, ...]) -> dict[str, Any]:
    """The objects of ``kind`` among ``model``'s attributes, also inside (nested) list, tuple
    and dict attributes: ``self.opts = {"g": [a, b]}`` gives ``opts.g.0`` and ``opts.g.1``."""
    found: dict[str, Any] = {}

    def walk(name: str, value: Any, depth: int) -> None:
        if isinstance(value, kind):
            found[name] = value
        elif depth < 4 and isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(f"{name}.{i}", item, depth + 1)
        elif depth < 4 and isinstance(value, dict):
            for key, item in value.items():
                walk(f"{name}.{key}", item, depth + 1)

    for name, value in vars(model).items():
        if name not in _MODULE_INTERNALS:  # nn.Module's own (_parameters, _modules, hooks...)
            walk(name, value, 0)
    return found


_MODULE_INTERNALS = frozenset(vars(nn.Module()))  # a user's self._opt is found all the same


def _move(batch: Any, device: torch.device, non_blocking: bool) -> Any:
    if isinstance(batch, torch.Tensor):
        if batch.device == device:  # the common CPU case: nothing to do, and cheaper than .to
            return batch
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, tuple | list):
        moved = [_move(b, device, non_blocking) for b in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    if isinstance(batch, Mapping):
        moved = {k: _move(v, device, non_blocking) for k, v in batch.items()}
        if isinstance(batch, defaultdict):
            return defaultdict(batch.default_factory, moved)
        try:
            return type(batch)(moved)
        except TypeError:  # a mapping type that cannot be built from a dict
            return moved
    return batch


class ProxyModel(Model):
    """Wraps a plain network, an optimizer and a loss for the common supervised case.

    Batches are ``(inputs, targets)``. Returns ``loss``, and ``accuracy`` for classification
    (a ``CrossEntropyLoss``/``NLLLoss`` loss; in training only on steps that log, and not at
    all with ``train_accuracy=False``). Checks the loss is finite before the optimizer step,
    so a NaN never reaches the weights (see ``Model.loss_is_finite`` for GPUs).

    ``scheduler`` steps once per epoch (``scheduler_interval='epoch'``, after the epoch's
    evaluation) or after every optimizer step (``'step'``, e.g. ``OneCycleLR``);
    ``ReduceLROnPlateau`` steps after each validation with the benchmark metric's value.

    Example:
        >>> net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        >>> opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        >>> model = ProxyModel(net, opt, loss=nn.CrossEntropyLoss(), name="mlp")
        >>> sorted(model.test_batch((torch.randn(8, 64), torch.randint(0, 10, (8,)))))
        ['accuracy', 'loss']
    """

    def __init__(
        self,
        net: nn.Module,
        opt: torch.optim.Optimizer,
        loss: Callable[[Any, Any], torch.Tensor],
        name: str | None = None,
        scheduler: Any = None,
        benchmark_metric: str = "loss",
        benchmark_goal: str | None = None,
        train_accuracy: bool = True,
        scheduler_interval: str = "epoch",
    ):
        super().__init__(name=name or type(net).__name__.lower())
        self.net = net
        self.opt = opt
        self.loss = loss
        if scheduler is not None:
            self.scheduler = scheduler
        self.benchmark_metric = benchmark_metric
        self.benchmark_goal = benchmark_goal
        self.scheduler_interval = scheduler_interval
        self.classification = isinstance(loss, nn.CrossEntropyLoss | nn.NLLLoss)
        self.train_accuracy = train_accuracy and self.classification
        _check_scheduler(self, scheduler, scheduler_interval)

    def forward(self, x: Any) -> Any:
        return self.net(x)

    def train_batch(self, batch: Any) -> dict[str, Any]:
        x, y = _pair(batch)
        with self.autocast():
            out = self.net(x)
            loss = self.loss(out, y)
        self.backward(loss)
        if self.step(self.opt) and self.scheduler_interval == "step" and hasattr(self, "scheduler"):
            self.scheduler.step()
        result = {"loss": loss.detach()}
        if self.train_accuracy and self.log_level >= LogLevel.SCALARS:
            result["accuracy"] = _accuracy(out, y)
        return result

    def test_batch(self, batch: Any) -> dict[str, Any]:
        x, y = _pair(batch)
        with self.autocast():
            out = self.net(x)
            loss = self.loss(out, y)
        result = {"loss": loss.float() if loss.dtype in _HALF else loss}  # never less precise
        if self.classification:
            result["accuracy"] = _accuracy(out, y)
        return result

    def on_epoch_end(self, epoch: int) -> None:
        scheduler = getattr(self, "scheduler", None)
        if self.scheduler_interval == "epoch" and not isinstance(scheduler, (type(None), _PLATEAU)):
            scheduler.step()

    def on_validation_end(self, metrics: dict[str, float]) -> None:
        scheduler = getattr(self, "scheduler", None)
        if isinstance(scheduler, _PLATEAU):
            scheduler.step(metrics[self.benchmark_metric])


def _structure(weights: Mapping[str, Any], optimizers: dict, schedulers: dict) -> dict[str, Any]:
    """``Model.structure`` of these weights, optimizers and schedulers."""
    return {
        "parameters": {k: list(v.shape) for k, v in weights.items()},
        "optimizers": {k: type(o).__name__ for k, o in optimizers.items()},
        "schedulers": {k: type(s).__name__ for k, s in schedulers.items()},
    }


_PLATEAU = torch.optim.lr_scheduler.ReduceLROnPlateau
_HALF = (torch.float16, torch.bfloat16)


def _check_scheduler(model: ProxyModel, scheduler: Any, interval: str) -> None:
    """Refuse a scheduler setting that cannot work, saying how to fix it."""
    if interval not in ("epoch", "step"):
        raise ModelError(
            f"scheduler_interval must be 'epoch' or 'step'; got {interval!r}. Use "
            "scheduler_interval='step' for schedules counted in optimizer steps (OneCycleLR)"
        )
    if scheduler is None:
        return
    if not isinstance(scheduler, _SCHEDULER_TYPES):
        raise ModelError(
            f"scheduler must be a torch.optim.lr_scheduler scheduler; got "
            f"{type(scheduler).__name__}"
        )
    if scheduler.optimizer is not model.opt:
        raise ModelError("scheduler was built for another optimizer than opt; build it on opt")
    if isinstance(scheduler, _PLATEAU):
        if interval == "step":
            raise ModelError(
                "ReduceLROnPlateau steps on the validation value of benchmark_metric, once per "
                "validation; use scheduler_interval='epoch' (the default)"
            )
        goal = benchmark_goal(model)
        if scheduler.mode != goal:
            raise ModelError(
                f"ReduceLROnPlateau(mode={scheduler.mode!r}) disagrees with benchmark_goal="
                f"{goal!r} for {model.benchmark_metric!r}; use ReduceLROnPlateau(opt, "
                f"mode={goal!r})"
            )


def _pair(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, list | tuple) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping):
        shown = f"a dict with keys {sorted(batch)}"
    elif isinstance(batch, list | tuple):
        shown = f"a {type(batch).__name__} of {len(batch)}"
    else:
        shown = _describe(batch)
    raise ModelError(
        f"ProxyModel needs (inputs, targets) batches; got {shown}. Return (x, y) from your "
        "dataset, or subclass mlproject.Model and read your batch in train_batch/test_batch"
    )


def _accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.detach().argmax(dim=1) == y).float().mean()


def benchmark_goal(model: Model) -> str:
    """The explicit direction ('min' or 'max') of the model's benchmark metric."""
    goal = model.benchmark_goal
    if goal is None and model.benchmark_metric == "loss":
        return "min"
    if goal not in ("min", "max"):
        raise ModelError(
            f"{type(model).__name__}.benchmark_goal is {goal!r} for benchmark_metric="
            f"{model.benchmark_metric!r}; set it to 'min' or 'max' (it is never guessed from "
            "the metric's name)"
        )
    return goal


def scalars(outputs: Any, where: str, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Check a ``train_batch``/``test_batch`` result: a dict of scalars, with ``keys`` in it.

    Raises ModelError naming the first entry that is not a Python number or 0-d tensor (a
    per-sample loss vector, a numpy array...), or a named key that is missing.
    """
    if not isinstance(outputs, Mapping):
        raise ModelError(f"{where} must return a dict of scalars, got {type(outputs).__name__}")
    for key, value in outputs.items():
        if not is_scalar(value):
            raise ModelError(f"{where} returned {key!r} as {_describe(value)}; {_SCALARS}")
    for key in keys or ():
        if key not in outputs:
            raise ModelError(f"{where} returned no {key!r}; it returned {sorted(outputs)}")
    return dict(outputs)


_SCALARS = (
    "every value must be a Python number or a 0-d tensor (e.g. loss.mean().detach()); keep "
    "other results out of the returned dict"
)


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {tuple(shape)}" if shape is not None else (
        type(value).__name__
    )  # fmt: skip


def is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dim() == 0
    return isinstance(value, int | float) and not isinstance(value, bool)
