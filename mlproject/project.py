"""MLProject: builds a model and its data from a config, then trains, evaluates and checkpoints it.

The loop reads top-down: ``train`` runs epochs until the configured length, ``train_epoch``
runs ``step`` per batch, ``end_epoch`` evaluates and saves, ``final_test`` tests the best
model. Every side effect goes through ``self.recorder``; every counter lives in ``self.state``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from mlproject import checkpoint
from mlproject.config import DEFAULTS, resolve_device, validate_config
from mlproject.data.factory import DatasetFactory, check_loader
from mlproject.errors import (
    CheckpointError,
    ModelError,
    NonFiniteLossError,
    TrainingInterrupted,
)
from mlproject.model import LogLevel, Model, benchmark_goal, is_scalar, scalars
from mlproject.recorder import Recorder, find_run_dir, new_run_dir
from mlproject.state import TrainState

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class MLProject:
    """A training run: subclass it and implement ``get_dataset_factory`` and ``get_model``.

    Build it from a config dict (``MyProject(config)``) or inside a sacred main function
    (``MyProject.from_run(_run)``); the config is validated before anything is written, and a
    ``resume`` key restores a checkpoint. ``train()`` returns a summary dict.

    Example:
        >>> class DigitsProject(MLProject):
        ...     @staticmethod
        ...     def get_dataset_factory(config):
        ...         return DigitsDatasetLoader(batch_size=64)
        ...     @staticmethod
        ...     def get_model(config):
        ...         net = nn.Sequential(nn.Linear(64, 10))
        ...         opt = torch.optim.Adam(net.parameters())
        ...         return ProxyModel(net, opt, loss=nn.CrossEntropyLoss(), name="linear")
        >>> summary = DigitsProject({"model_dir": "runs", "n_epochs": 2}).train()  # doctest: +SKIP
    """

    @staticmethod
    def get_dataset_factory(config: dict[str, Any]) -> DatasetFactory:
        """Return the project's DatasetFactory for ``config``."""
        raise NotImplementedError("implement get_dataset_factory(config) in your MLProject")

    @staticmethod
    def get_model(config: dict[str, Any]) -> Model:
        """Return a new ``mlproject.Model`` (with its optimizers) for ``config``."""
        raise NotImplementedError("implement get_model(config) in your MLProject")

    def __init__(self, config: Mapping[str, Any], run: Any = None):
        self.config = validate_config(config)
        self.run = run
        if self.config["seed"] is None:
            self.config["seed"] = random.SystemRandom().randrange(2**31)
        checkpoint.seed_everything(self.config["seed"])
        self.device = resolve_device(self.config["device"])
        self.datasets = self.get_dataset_factory(self.config)
        self.model = self.get_model(self.config)
        self._check_parts()
        self.model.to(self.device)
        self.model.nonfinite = self.config["nonfinite"]
        self.datasets.set_device(self.device)
        self.datasets.check()
        self.train_loader = self.datasets.train_loader()
        self.n_batches = check_loader(self.train_loader, "train")
        self.state = TrainState()
        self.recorder = Recorder(
            self.config["tensorboard_dir"],
            run,
            progress=self.config["progress"],
            stop_on_nonfinite=self.config["nonfinite"] == "error",
        )
        self.run_dir: Path | None = None
        self.last_metrics: dict[str, float] = {}
        self._stop_signal: int | None = None
        self._epoch_rng: dict[str, Any] | None = None
        self._resume_rng: dict[str, Any] | None = None
        self._events_at_open = 0
        self._load_resume()

    @classmethod
    def from_run(cls, run: Any) -> MLProject:
        """Build the project from a sacred run (``_run`` in a sacred main function)."""
        from mlproject.experiment import config_from_run  # sacred loads only for sacred runs

        return cls(config_from_run(run), run=run)

    @classmethod
    def load(cls, path: str | os.PathLike, **overrides: Any) -> MLProject:
        """Rebuild a project from a checkpoint file (its saved config, updated by ``overrides``).

        The project continues the checkpoint's run when trained further.
        """
        saved = checkpoint.load(Path(path))["config"]
        return cls({**saved, **overrides, "resume": str(path)})

    # --- the loop -------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Train until ``n_global_iterations`` steps or ``n_epochs`` epochs are done, then test."""
        with self._session():
            self.model.train()
            self.model.on_train_begin()
            if self._resume_rng is not None and self.state.batch_in_epoch == 0:
                checkpoint.set_rng_state(self._resume_rng, _generators(self.train_loader))
                self._resume_rng = None
            while not self.done():
                self.model.on_epoch_begin(self.state.epoch)
                self.train_epoch()
                if self._epoch_finished or self.state.batch_in_epoch >= self.n_batches:
                    self.end_epoch()
            self.end_training()
            self.model.on_train_end()
            return self.final_test()

    def train_epoch(self) -> None:
        """Train on the batches left in this epoch. Override freely: call ``begin_step()``
        before and ``end_step(outputs)`` after your own training of a batch, and stop when
        ``should_stop()`` says so."""
        for batch in self.epoch_batches():
            self.step(batch)
            if self.should_stop():
                break

    def step(self, batch: Any) -> dict[str, Any]:
        """Train the model on one batch, with all the bookkeeping around it."""
        self.begin_step()
        outputs = self.model.train_batch(self.model.to_device(batch))
        self.end_step(outputs)
        return outputs

    def begin_step(self) -> None:
        """Tell the model its global step and how much this step will log."""
        # plain attributes: skip nn.Module.__setattr__'s parameter bookkeeping on the hot path
        model, state = self.model, self.state
        object.__setattr__(model, "global_step", state.global_step)
        object.__setattr__(
            model, "log_level", self._log_level(state.global_step + 1, state.batch_in_epoch + 1)
        )

    def end_step(self, outputs: dict[str, Any]) -> None:
        """Count the step; log, show, save and stop as configured."""
        state = self.state
        state.global_step += 1
        state.batch_in_epoch += 1
        if not self._checked:  # the contract, checked once (metrics: on a step that logs)
            logs = self.model.log_level >= LogLevel.SCALARS
            scalars(outputs, "train_batch", self.model.metrics if logs else None)
            self._checked = logs
        if self.model.log_level >= LogLevel.SCALARS:
            self.recorder.log("train", self._train_scalars(outputs), state.global_step)
        self._bar.update(outputs)
        if self._save_every and state.global_step % self._save_every == 0:
            self.save()
        if self._stop_signal is not None:
            self._interrupt()
        self.recorder.maybe_flush()

    def should_stop(self) -> bool:
        """True when ``n_global_iterations`` steps are done (checked after every step)."""
        limit = self.config["n_global_iterations"]
        return limit is not None and self.state.global_step >= limit

    def done(self) -> bool:
        """True when training has reached its configured length."""
        if self.config["n_global_iterations"] is not None:
            return self.should_stop()
        return self.state.epoch >= self.config["n_epochs"]

    def end_epoch(self) -> None:
        """Close a completed epoch: evaluate, keep the best model, save."""
        self.state.epoch += 1
        self.state.batch_in_epoch = 0
        self.evaluate_and_select()
        self.model.on_epoch_end(self.state.epoch)
        self.model.train()
        if self.config["save_iterations"] == "epoch":
            self.save()

    def end_training(self) -> None:
        """Make sure the last step is saved and evaluated, also for runs shorter than an epoch."""
        if self.state.last_save_step != self.state.global_step:
            self.save()  # before evaluating, so the checkpoint equals a longer run's at this step
        if self.state.last_eval_step != self.state.global_step:
            self.evaluate_and_select()
            self.model.train()

    def epoch_batches(self) -> Iterator[Any]:
        """The epoch's remaining batches; on resume, replays the data order up to the checkpoint."""
        loader, start = self.train_loader, self.state.batch_in_epoch
        generators = _generators(loader)
        if start == 0:
            self._epoch_rng = checkpoint.rng_state(generators)
        else:  # resuming mid-epoch: same RNG as at the epoch's start gives the same order
            checkpoint.set_rng_state(self._epoch_rng, generators)
        batches = iter(loader)
        for _ in range(start):
            next(batches)
        if start and self._resume_rng is not None:
            checkpoint.set_rng_state(self._resume_rng, generators)
            self._resume_rng = None
        self._epoch_finished = False
        self._bar = self.recorder.progress(self.n_batches, start, f"epoch {self.state.epoch + 1}")
        try:
            yield from batches
            self._epoch_finished = True
        finally:
            self._bar.close()

    # --- evaluation -----------------------------------------------------------------------------
    def evaluate(self, loader: Iterable) -> dict[str, float]:
        """Average ``test_batch`` outputs over ``loader``, weighting each batch by its size."""
        was_training = self.model.training
        self.model.eval()
        totals: dict[str, Any] = {}
        count = 0
        try:
            with torch.no_grad():
                for batch in loader:
                    n = _batch_size(batch)
                    outputs = self.model.test_batch(self.model.to_device(batch))
                    for key, value in scalars(outputs, "test_batch").items():
                        value = value.detach().double() if torch.is_tensor(value) else value
                        totals[key] = totals.get(key, 0.0) + value * n
                    count += n
        finally:
            self.model.train(was_training)
        return {key: float(total) / max(count, 1) for key, total in totals.items()}

    def evaluate_and_select(self) -> dict[str, float]:
        """Evaluate on the validation set (else the test set), log it, keep the best model."""
        validation = self.datasets.validation_loader()
        loader = validation if validation is not None else self.datasets.test_loader()
        if loader is None:
            return {}
        group = "validation" if validation is not None else "test"
        metrics = self.evaluate(loader)
        self.recorder.log(group, metrics, self.state.global_step)
        self.state.last_eval_step = self.state.global_step
        self.last_metrics = {group: metrics}
        if validation is not None:
            self._update_best(metrics)
        return metrics

    def _update_best(self, metrics: dict[str, float]) -> None:
        name, goal = self.model.benchmark_metric, benchmark_goal(self.model)
        if name not in metrics:
            raise ModelError(
                f"benchmark_metric {name!r} is not among test_batch's outputs {sorted(metrics)}"
            )
        value, best = metrics[name], self.state.best_value
        if best is None or (value < best if goal == "min" else value > best):
            self.state.best_value, self.state.best_step = value, self.state.global_step
            self.recorder.save_checkpoint(self._payload(), checkpoint.BEST_NAME)

    def final_test(self) -> dict[str, Any]:
        """Test the best model (the last one without a validation set); return the summary."""
        state, test = self.state, self.datasets.test_loader()
        best_path = self.run_dir / checkpoint.BEST_NAME
        has_best = state.best_step is not None and best_path.exists()
        metrics = (
            self.last_metrics.get("test", {}) if state.last_eval_step == state.global_step else {}
        )
        if test is not None and (has_best or not metrics):
            last_weights = copy.deepcopy(self.model.state_dict()) if has_best else None
            if has_best:
                self.model.load_state_dict(checkpoint.load(best_path)["model"]["weights"])
            metrics = self.evaluate(test)
            self.recorder.log("test", metrics, state.global_step)
            if last_weights is not None:
                self.model.load_state_dict(last_weights)
        if has_best:
            self.recorder.add_artifact(best_path)
        return {
            "run_dir": str(self.run_dir),
            "global_step": state.global_step,
            "epochs": state.epoch,
            "best": {"step": state.best_step, self.model.benchmark_metric: state.best_value},
            "validation": self.last_metrics.get("validation", {}),
            "test": metrics,
        }

    # --- checkpoints ----------------------------------------------------------------------------
    def save(self) -> Path:
        """Write a periodic checkpoint of everything needed to continue exactly from here."""
        self.state.last_save_step = self.state.global_step
        params = [p.detach() for p in self.model.parameters()]
        if params and not bool(torch.stack([p.isfinite().all() for p in params]).all()):
            raise NonFiniteLossError(
                f"the weights hold NaN/inf at global step {self.state.global_step}; not saving "
                "them. An earlier step's loss was not finite"
            )
        name = checkpoint.CHECKPOINT_NAME.format(step=self.state.global_step)
        return self.recorder.save_checkpoint(
            self._payload(), name, keep=self.config["keep_checkpoints"]
        )

    def _payload(self) -> dict[str, Any]:
        self.state.skipped_steps = self.model.skipped_steps
        return {
            "format": checkpoint.FORMAT_VERSION,
            "model": self.model.training_state(),
            "state": self.state.as_dict(),
            "rng": checkpoint.rng_state(_generators(self.train_loader)),
            "epoch_rng": self._epoch_rng,
            "config": _plain(self.config),
            "run_name": self.run_dir.name,
        }

    def _load_resume(self) -> None:
        path = self._resume_path()
        if path is None:
            return
        payload = checkpoint.load(path)
        differences = checkpoint.structure_differences(
            payload["model"]["structure"], self.model.structure()
        )
        if differences:
            raise CheckpointError(
                f"cannot resume from {path}: the model does not fit it:\n  - "
                + "\n  - ".join(differences)
            )
        changed = sorted(
            key
            for key in set(payload["config"]) | set(self.config)
            if key not in DEFAULTS and payload["config"].get(key) != _plain(self.config.get(key))
        )
        if changed:
            warnings.warn(
                f"resuming from {path} with changed config keys: "
                + ", ".join(
                    f"{k}: {payload['config'].get(k)!r} -> {self.config.get(k)!r}" for k in changed
                ),
                stacklevel=3,
            )
        self.model.load_training_state(payload["model"])
        self.state = TrainState(**payload["state"])
        self.model.skipped_steps = self.state.skipped_steps
        self.config["seed"] = payload["config"]["seed"]
        self._resume_rng, self._epoch_rng = payload["rng"], payload["epoch_rng"]
        self._events_at_open = payload["n_events"]
        self.run_dir = path.parent
        log.info("resuming from %s at global step %d", path, self.state.global_step)

    def _resume_path(self) -> Path | None:
        resume = self.config["resume"]
        if resume is None:
            return None
        if resume == "auto":
            run_dir = find_run_dir(
                Path(self.config["model_dir"]), self.config["prefix"], self.model.name
            )
            if run_dir is None:
                log.info("resume=auto: no earlier run of %r; starting a new one", self.model.name)
                return None
            path = checkpoint.latest_valid(run_dir)
            if path is None:  # the earlier attempt died before its first checkpoint
                self.run_dir = run_dir
            return path
        path = Path(resume)
        if path.is_dir():
            found = checkpoint.latest_valid(path)
            if found is None:
                raise CheckpointError(f"resume={resume!r}: the folder holds no checkpoint")
            return found
        return path

    # --- session: recorder and signals ----------------------------------------------------------
    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        if self.run_dir is None:
            self.run_dir = new_run_dir(
                Path(self.config["model_dir"]), self._run_name(), self.recorder.tensorboard_dir
            )
        info = {
            "prefix": self.config["prefix"],
            "model": self.model.name,
            "config": _plain(self.config),
        }
        self.recorder.open(self.run_dir, info, self._events_at_open)
        self.model.writer = self.recorder.writer
        self._checked = False
        self._epoch_finished = False
        self._bar = self.recorder.progress(0, 0, "", enabled=False)  # for own train_epoch loops
        self._save_every = self.config["save_iterations"]
        self._save_every = self._save_every if isinstance(self._save_every, int) else None
        handlers = self._install_signal_handlers()
        deterministic = torch.are_deterministic_algorithms_enabled()
        if self.config["deterministic"]:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # CUDA needs it
            torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            self.recorder.close()
            self._events_at_open = self.recorder.n_events
            self.model.writer = self.recorder.writer

    def _install_signal_handlers(self) -> dict[int, Any]:
        self._stop_signal = None
        if threading.current_thread() is not threading.main_thread():
            return {}  # signals can only be handled on the main thread
        return {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only set a flag: the loop saves at the next step boundary. A second signal is ignored
        # so that it cannot interrupt the save.
        if self._stop_signal is None:
            self._stop_signal = signum

    def _interrupt(self) -> None:
        name = signal.Signals(self._stop_signal).name
        log.warning(
            "%s received: saving at global step %d and stopping", name, self.state.global_step
        )
        if self.state.last_save_step != self.state.global_step:
            self.save()
        raise TrainingInterrupted(self._stop_signal, self.state.global_step)

    # --- helpers --------------------------------------------------------------------------------
    def _check_parts(self) -> None:
        if not isinstance(self.model, Model):
            raise ModelError(
                f"get_model returned {type(self.model).__name__}, not an mlproject.Model; wrap a "
                "plain network as ProxyModel(net, opt, loss=..., name=...)"
            )
        if not isinstance(self.datasets, DatasetFactory):
            raise ModelError(
                f"get_dataset_factory returned {type(self.datasets).__name__}, not a "
                "DatasetFactory; use DatasetFactory(train_set=..., test_set=...)"
            )
        benchmark_goal(self.model)

    def _run_name(self) -> str:
        run_id = getattr(self.run, "_id", None)
        if run_id is None:
            run_id = time.strftime("%Y%m%d-%H%M%S")
        return "_".join(str(p) for p in (self.config["prefix"], run_id, self.model.name) if p)

    def _log_level(self, step: int, batch_number: int) -> LogLevel:
        every_all, every_scalars = (
            self.config["log_iteration_all"],
            self.config["log_iteration_scalars"],
        )
        if (every_all == "epoch" and batch_number == self.n_batches) or (
            isinstance(every_all, int) and step % every_all == 0
        ):
            return LogLevel.ALL
        if every_scalars is not None and step % every_scalars == 0:
            return LogLevel.SCALARS
        return LogLevel.NOTHING

    def _train_scalars(self, outputs: dict[str, Any]) -> dict[str, Any]:
        keys = self.model.metrics
        values = (
            {k: v for k, v in outputs.items() if is_scalar(v)}
            if keys is None
            else {k: outputs[k] for k in keys if k in outputs}
        )
        if self.config["nonfinite"] == "skip":
            values["skipped_steps"] = self.model.skipped_steps
        return values


def _generators(loader: Any) -> list[torch.Generator]:
    """The private torch generators a DataLoader draws from, if it was given any."""
    found = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and generator not in found:
            found.append(generator)
    return found


def _batch_size(batch: Any) -> int:
    """The leading dimension of the first tensor in ``batch`` (1 when it holds no tensor)."""
    if torch.is_tensor(batch):
        return batch.shape[0] if batch.dim() else 1
    items = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(items, Iterable) and not isinstance(items, str | bytes):
        for item in items:
            if torch.is_tensor(item) or isinstance(item, list | tuple | Mapping):
                return _batch_size(item)
    return 1


def _plain(value: Any) -> Any:
    """``value`` as plain data (dicts, lists, str, numbers, None) for checkpoints and JSON."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
