"""MLProject: builds a model and its data from a config, then trains, evaluates and checkpoints it.

The loop reads top-down: ``train`` runs epochs until the configured length, ``train_epoch``
runs ``step`` per batch, ``end_epoch`` evaluates and saves, ``final_test`` tests the best
model. Every counter lives in ``self.state``; every side effect goes through the run folder
(``self.run_folder``), the scalar logger and its sinks (``self.logger``) or the display
(``self.display``), which write only where ``self.world.writes``. Where a run starts (new,
continued, forked) is decided in ``mlproject.resume``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import random
import signal
import subprocess
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from mlproject import checkpoint, distributed, resume, rundir
from mlproject.config import DEFAULTS, plain, resolve_device, validate_config
from mlproject.data.factory import DatasetFactory, check_loader
from mlproject.distributed import AGREE_EVERY, Collective, World
from mlproject.errors import CheckpointError, ConfigError, ModelError, TrainingInterrupted
from mlproject.logger import Logger
from mlproject.model import LogLevel, Model, ProxyModel, benchmark_goal, scalars
from mlproject.nonfinite import NonFinitePolicy
from mlproject.progress import Display, metrics_text, number
from mlproject.shard import shard_evaluation, shard_training
from mlproject.signals import STOP_SIGNALS, StopSignals, protect_workers, signal_numbers
from mlproject.sinks import COMPLETED, FAILED, INTERRUPTED, RunInfo, SacredSink, Sink
from mlproject.state import TrainState
from mlproject.step import Stepper

log = logging.getLogger(__name__)


class MLProject:
    """A training run: subclass it and implement ``get_dataset_factory`` and ``get_model``.

    Build it from a config dict (``MyProject(config)``) or inside a sacred main function
    (``MyProject.from_run(_run)``); the config and the model's contract are checked before
    anything is written, and ``resume`` / ``init_from`` say where training starts.
    ``train()`` returns a summary dict.

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

    @staticmethod
    def get_sinks(config: dict[str, Any]) -> list[Sink]:
        """Return extra sinks for the run's scalars (TensorBoard and sacred come anyway)."""
        return []

    def __init__(self, config: Mapping[str, Any], run: Any = None):
        self.config = validate_config(config)
        self.run = run
        self.world = World.from_env()
        self.collective = self._join()
        checkpoint.seed_everything(self.config["seed"])
        self.datasets = self.get_dataset_factory(self.config)
        self.model = self.get_model(self.config)
        self._check_parts()
        collective = self.collective.active
        self.nonfinite = NonFinitePolicy(self.config["nonfinite"], collective=collective)
        self.logger, self.display = self._outputs()
        self.device = self._place_model()
        self.model.stepper = Stepper(
            self.config["precision"], self.config["accumulate_grad_batches"],
            self.config["clip_grad_norm"], self.nonfinite, self.device, collective,
        )  # fmt: skip
        if self.config["compile"]:
            self._compile()
        self.datasets.set_device(self.device)
        self.datasets.check()
        self.train_loader = self.datasets.train_loader()
        if self.world.launched:  # one global order of the data, at any number of processes
            self.train_loader = shard_training(self.train_loader, self.world, self.config["seed"])
        self.n_batches = check_loader(self.train_loader, "train")
        self._requeue_signals = signal_numbers(self.config["requeue_signals"])
        self._stops = StopSignals(STOP_SIGNALS + self._requeue_signals)
        protect_workers(self.train_loader, self._stops.signals)
        self.state = TrainState(batches_per_epoch=self.n_batches)
        self.run_folder: rundir.RunDir | None = None
        self.last_metrics: dict[str, dict[str, float]] = {}
        self.summary: dict[str, Any] | None = None  # set when the run is complete
        self._epoch_rng: dict[str, Any] | None = None
        self._resume_rng: dict[str, Any] | None = None
        self._sink_states: dict[str, dict[str, Any]] = {}
        self._parent: dict[str, Any] | None = None
        self._eval_shards: dict[int, Iterable] = {}
        if self.world.rank:  # its own dropout and DataLoader workers' draws
            checkpoint.seed_everything(self.config["seed"] + self.world.rank)
        self.start = self._plan_start()
        self._begin(self.start)
        self._ddp = distributed.wrap(self.model, self.device) if collective else []
        self._preflight()

    @classmethod
    def from_run(cls, run: Any) -> MLProject:
        """Build the project from a sacred run (``_run`` in a sacred main function)."""
        from mlproject.experiment import config_from_run  # sacred, only when it is used

        return cls(config_from_run(run), run=run)

    @classmethod
    def load(cls, path: str | os.PathLike, **overrides: Any) -> MLProject:
        """A fork: a new run that starts from the weights (and optimizer state) at ``path``.

        ``path`` is a checkpoint file or a run folder (its best.pt, else its newest complete
        checkpoint); the config is the checkpoint's, updated by ``overrides``. The parent's
        files are only read.

        Example:
            >>> tuned = MyProject.load("runs/1_mlp", lr=1e-4, n_epochs=3).train()  # doctest: +SKIP
        """
        path = resume.checkpoint_in(Path(path))
        saved = checkpoint.load(path)["config"]
        return cls({**saved, **overrides, "init_from": str(path), "resume": None})

    @classmethod
    def load_model(cls, path: str | os.PathLike, **overrides: Any) -> Model:
        """The trained Model at ``path`` (a checkpoint, or a run folder: best.pt first), with
        its weights, on the config's device, in eval mode; no dataset is built.

        Example:
            >>> model = MyProject.load_model("runs/1_mlp", device="cpu")  # doctest: +SKIP
            >>> model.test_batch(batch)  # doctest: +SKIP
        """
        path = resume.checkpoint_in(Path(path))
        payload = checkpoint.load(path)
        config = validate_config({**payload["config"], **overrides, "resume": None})
        model = cls.get_model(config)
        _refuse_misfit(path, payload, model, ("parameters",), "load_model")
        model.load_state_dict(payload["model"]["weights"])
        device = config["device"]
        if device is not None:
            model.to(resolve_device(device))
        return model.eval()

    # --- the loop -------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Train until ``n_global_iterations`` steps or ``n_epochs`` epochs are done, then test."""
        if self.summary is not None and self.done():
            self.display.line(
                f"run {self.run_dir} is complete (step {self.state.global_step}): nothing to do"
            )
            return self.summary
        try:
            return self._train()
        except TrainingInterrupted as stop:
            if self.run is None:  # under sacred, the Experiment does it once the run is recorded
                stop.call_chain()
            raise
        finally:
            self.collective.close()

    def _train(self) -> dict[str, Any]:
        with self._session():
            self.model.train()
            self.model.on_train_begin()
            self._restore_step_rng()
            if self.state.batch_in_epoch >= self.n_batches:
                self.end_epoch()  # stopped after an epoch's last step, before its end
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
        with self._no_sync():
            outputs = self.model.train_batch(self.model.to_device(batch))
        self.end_step(outputs)
        return outputs

    def begin_step(self) -> None:
        """Tell the model its global step, how much this step will log, and where the batch
        is in its accumulation window (``accumulate_grad_batches`` batches per step)."""
        model, state, k = self.model, self.state, self._accumulate
        position = state.batch_in_epoch % k if k > 1 else 0
        if position == 0:  # a new window: one optimizer step, its last one maybe shorter
            self._window = min(k, self.n_batches - state.batch_in_epoch) if k > 1 else 1
            last_batch = state.batch_in_epoch + self._window
            # plain attributes: skip nn.Module.__setattr__'s bookkeeping on the hot path
            object.__setattr__(model, "global_step", state.global_step)
            level = self._log_level(state.global_step + 1, last_batch)
            object.__setattr__(model, "log_level", level)
        plan = self._plan
        scale = plan.scale(state.batch_in_epoch) if plan is not None else 1.0
        model.stepper.begin_batch(position, self._window, scale)

    def end_step(self, outputs: dict[str, Any]) -> None:
        """Count the batch; after a window's last one, count the optimizer step and log, show,
        validate, save and stop as configured."""
        state = self.state
        state.batch_in_epoch += 1
        if not self._checked:  # the contract, checked once (metrics: on a step that logs)
            logs = self.model.log_level >= LogLevel.SCALARS
            scalars(outputs, "train_batch", self.model.metrics if logs else None)
            self._checked = logs
        self._bar.update(outputs)
        if self._accumulate > 1:
            outputs = self._window_mean(outputs)
            if outputs is None:
                return  # inside a window: no optimizer step yet
        self.model.stepper.end_window()
        state.global_step += 1
        if self.model.log_level >= LogLevel.SCALARS:
            self.logger.log("train", self._train_scalars(outputs), state.global_step)
        if self._validate_every and state.global_step % self._validate_every == 0:
            self.evaluate_and_select()
            self.model.train()
        saves = bool(self._save_every) and state.global_step % self._save_every == 0
        stop = self._stops.received if not self.collective.active else self._agree(saves)
        if saves:
            if state.batch_in_epoch < self.n_batches:
                self.save()
            else:  # the epoch's last step: saved after its end, so the checkpoint holds both
                self._save_due = True
        if stop is not None:
            self._interrupt(stop)
        self.logger.maybe_flush()

    def should_stop(self) -> bool:
        """True when ``n_global_iterations`` steps are done or early stopping stopped the run
        (checked after every batch)."""
        limit = self.config["n_global_iterations"]
        return self.state.stopped_early or (limit is not None and self.state.global_step >= limit)

    def done(self) -> bool:
        """True when training has reached its configured length, or stopped early."""
        if self.config["n_global_iterations"] is not None or self.state.stopped_early:
            return self.should_stop()
        return self.state.epoch >= self.config["n_epochs"]

    def end_epoch(self) -> None:
        """Close a completed epoch: evaluate, keep the best model, save."""
        self.state.epoch += 1
        self.state.batch_in_epoch = 0
        epoch_time = time.monotonic() - self._epoch_started
        self.logger.log("train", {"epoch_time": epoch_time}, self.state.global_step)
        if not self._validate_every:
            self.evaluate_and_select()
        self.model.on_epoch_end(self.state.epoch)
        self.model.train()
        if self.config["save_iterations"] == "epoch" or self._save_due:
            self._save_due = False
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
        _set_epoch(loader, self.state.epoch)
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
        self._epoch_started = time.monotonic()
        self._bar = self.display.bar(self.n_batches, start, f"epoch {self.state.epoch + 1}")
        try:
            yield from batches
            self._epoch_finished = True
        finally:
            self._bar.close()

    # --- evaluation -----------------------------------------------------------------------------
    def evaluate(self, loader: Iterable) -> dict[str, float]:
        """Average ``test_batch`` outputs over ``loader``, weighting each batch by its size
        (under torchrun each process evaluates its part and the sums are added up)."""
        whole = loader
        loader = self._eval_shards.setdefault(id(whole), shard_evaluation(whole, self.world))
        protect_workers(loader, self._stops.signals)
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
        if loader is not whole:  # a part: add up every process's sums and counts
            parts = self.collective.gather(({k: float(v) for k, v in totals.items()}, count))
            totals = {k: sum(part.get(k, 0.0) for part, _ in parts) for k in parts[0][0]}
            count = sum(n for _, n in parts)
        return {key: float(total) / max(count, 1) for key, total in totals.items()}

    def evaluate_and_select(self) -> dict[str, float]:
        """Evaluate on the validation set (else the test set), log it, keep the best model."""
        validation = self.datasets.validation_loader()
        loader = validation if validation is not None else self.datasets.test_loader()
        if loader is None:
            return {}
        group = "validation" if validation is not None else "test"
        metrics = self.evaluate(loader)
        self.logger.log(group, metrics, self.state.global_step)
        self.state.last_eval_step = self.state.global_step
        self.last_metrics = {group: metrics}
        if validation is not None:
            self._update_best(metrics)
            self.model.on_validation_end(metrics)
        self._show_evaluation(group, metrics)
        return metrics

    def final_test(self) -> dict[str, Any]:
        """Test the best model (the last one without a validation set); return the summary."""
        state, test = self.state, self.datasets.test_loader()
        best_path = self._usable_best()
        metrics = (
            self.last_metrics.get("test", {}) if state.last_eval_step == state.global_step else {}
        )
        if test is not None and (best_path is not None or not metrics):
            last_weights = copy.deepcopy(self.model.state_dict()) if best_path else None
            if best_path is not None:
                self.model.load_state_dict(checkpoint.load(best_path)["model"]["weights"])
            metrics = self.evaluate(test)
            self.logger.log("test", metrics, state.global_step)
            if last_weights is not None:
                self.model.load_state_dict(last_weights)
        if best_path is not None:
            self.logger.artifact(best_path)
        self.summary = {
            "run_dir": str(self.run_dir),
            "global_step": state.global_step,
            "epochs": state.epoch,
            "benchmark_metric": self.model.benchmark_metric,
            "best": {"step": state.best_step, self.model.benchmark_metric: state.best_value},
            "validation": self.last_metrics.get("validation", {}),
            "test": metrics,
            "stopped": (
                "early_stopping"
                if state.stopped_early
                else "n_global_iterations"
                if self.config["n_global_iterations"] is not None
                else "n_epochs"
            ),
        }
        self._show_summary(self.summary, best_path)
        return self.summary

    def _update_best(self, metrics: dict[str, float]) -> None:
        name, goal = self.model.benchmark_metric, benchmark_goal(self.model)
        if name not in metrics:
            raise ModelError(
                f"benchmark_metric {name!r} is not among test_batch's outputs {sorted(metrics)}"
            )
        value, best = metrics[name], self.state.best_value
        if not math.isfinite(value):
            self.display.line(
                f"validation {name} is {value} at step {self.state.global_step}: not finite, "
                "so never a best model"
            )
        elif best is None or (value < best if goal == "min" else value > best):
            self.state.best_value, self.state.best_step = value, self.state.global_step
            self.state.evaluations_without_best = -1
            self._write_checkpoint(checkpoint.BEST_NAME)
        self.state.evaluations_without_best += 1
        patience = self.config["early_stopping"]
        if patience is not None and self.state.evaluations_without_best >= patience:
            self.state.stopped_early = True
            self.display.line(
                f"early stopping at step {self.state.global_step}: validation {name} has not "
                f"improved for {patience} evaluations (best {number(self.state.best_value)} at "
                f"step {self.state.best_step})"
            )
        if self.state.best_value is not None:
            best_values = {f"best_{name}": self.state.best_value}
            self.logger.log("validation", best_values, self.state.global_step)

    def _usable_best(self) -> Path | None:
        """best.pt when this run has one that is intact; a damaged one is said and skipped."""
        path = self.run_folder.path / checkpoint.BEST_NAME
        if self.state.best_step is None or not path.exists():
            return None
        why = checkpoint.problem(path)
        if why is not None:
            self.display.line(f"{path} is damaged ({why}): testing the last weights instead")
            return None
        return path

    # --- checkpoints ----------------------------------------------------------------------------
    def save(self) -> Path:
        """Write a periodic checkpoint of everything needed to continue exactly from here."""
        self.state.last_save_step = self.state.global_step
        self.nonfinite.check_weights(self.model, self.state.global_step)
        name = checkpoint.CHECKPOINT_NAME.format(step=self.state.global_step)
        return self._write_checkpoint(name, keep=self.config["keep_checkpoints"])

    def _write_checkpoint(self, name: str, keep: int | None = None) -> Path:
        """Flush the scalars (the checkpoint records the sinks' state), then save ``name``."""
        self.logger.flush()
        self.state.skipped_steps = self.nonfinite.skipped
        rng = checkpoint.rng_state(_generators(self.train_loader))
        ranks = None
        if self.collective.active:  # every process's RNG, so that each resumes its own
            ranks = self.collective.gather({"rng": rng, "epoch_rng": self._epoch_rng})
        payload = checkpoint.build(
            model=self.model.training_state(),
            state=self.state.as_dict(),
            rng=rng,
            epoch_rng=self._epoch_rng,
            config=plain(self.config),
            run_name=self.run_folder.name,
            sinks=self.logger.state(),
            ranks=ranks,
        )
        path = self.run_folder.path / name
        failure = None
        if self.world.writes:
            try:
                checkpoint.save(payload, path)
                if keep is not None and name != checkpoint.BEST_NAME:
                    checkpoint.prune(self.run_folder.path, keep)
            except Exception as err:
                failure = err
        if self.collective.broadcast(failure is not None) and failure is None:
            raise CheckpointError(f"rank 0 could not save {path}; see its error")
        if failure is not None:
            raise failure
        return path

    # --- where the run starts -------------------------------------------------------------------
    def _join(self) -> Collective:
        """Under torchrun: join the process group, take this process's GPU, and use rank 0's
        config and seed everywhere. A torchrun restart continues as resume=auto would."""
        world, config = self.world, self.config
        if world.restarted and config["resume"] is None:
            config["resume"] = "auto"
        if config["seed"] is None:
            config["seed"] = random.SystemRandom().randrange(2**31)
        local = distributed.local_device(world, config["device"])
        if world.world_size > 1 and local is None and str(config["device"]).startswith("cuda:"):
            raise ConfigError(
                f"device={config['device']!r} under torchrun would put every process on one GPU; "
                "each process takes its own (cuda:LOCAL_RANK) with device=cuda"
            )
        device = local or torch.device("cpu")
        collective = Collective(world, device)
        self.config = collective.broadcast(config)
        if local is not None:
            self.config["device"] = str(local)
        return collective

    def _plan_start(self) -> resume.Start:
        """Rank 0 decides where the run starts; the others read the same checkpoint."""
        start = resume.plan(plain(self.config), self.model.name) if self.world.writes else None
        if not self.collective.active:
            return start
        shared = self.collective.broadcast(
            dataclasses.replace(start, payload=None) if start is not None else None
        )
        if start is None:
            start = shared
            start.payload = checkpoint.load(start.path) if start.path is not None else None
        return start

    def _begin(self, start: resume.Start) -> None:
        if start.note:
            self.display.line(start.note)
        if start.run_dir is not None:
            self.run_folder = rundir.RunDir(start.run_dir)
        if start.kind == resume.CONTINUE:
            self._continue_from(start.path, start.payload)
        elif start.kind == resume.FORK:
            self._fork_from(start.path, start.payload)

    def _continue_from(self, path: Path, payload: checkpoint.Checkpoint) -> None:
        _refuse_misfit(path, payload, self.model, ("parameters", "optimizers", "schedulers"))
        saved = payload["state"]
        if saved["batch_in_epoch"] and saved.get("batches_per_epoch", self.n_batches) not in (
            0,
            self.n_batches,
        ):
            raise CheckpointError(
                f"cannot resume from {path}: it stopped after batch {saved['batch_in_epoch']} of "
                f"an epoch of {saved['batches_per_epoch']} batches, and the training loader now "
                f"has {self.n_batches} (batch_size or the data changed). Restore them, or resume "
                "from a checkpoint saved at an epoch's end"
            )
        self._warn_changed_keys(path, payload["config"])
        self.model.load_training_state(payload["model"])
        self.state = TrainState(**{**saved, "batches_per_epoch": self.n_batches})
        self.nonfinite.skipped = self.state.skipped_steps
        self.config["seed"] = payload["config"]["seed"]
        self._resume_rng, self._epoch_rng = payload["rng"], payload["epoch_rng"]
        ranks = payload["ranks"]
        if ranks is not None and self.world.rank < len(ranks):  # this process's own RNG
            self._resume_rng = ranks[self.world.rank]["rng"]
            self._epoch_rng = ranks[self.world.rank]["epoch_rng"]
        elif self.world.rank:  # more processes than saved it: a fresh RNG of its own
            self._resume_rng = self._epoch_rng = None
        self._sink_states = payload["sinks"]
        info = self.run_folder.info()
        summary = info.get("summary") or {}
        if (
            info.get("status") == COMPLETED.lower()
            and summary.get("global_step") == saved["global_step"]
        ):
            self.summary = summary
        log.info("resuming from %s at global step %d", path, self.state.global_step)

    def _fork_from(self, path: Path, payload: checkpoint.Checkpoint) -> None:
        moments = self.config["init_from_optimizer"]
        kinds = ("parameters", "optimizers") if moments else ("parameters",)
        _refuse_misfit(path, payload, self.model, kinds, "init_from")
        self.model.load_state_dict(payload["model"]["weights"])
        if moments:
            self.model.load_optimizer_moments(payload["model"]["optimizers"])
        step = payload["state"]["global_step"]
        self._parent = {"checkpoint": str(path.resolve()), "step": step}
        taken = "weights and optimizer state" if moments else "weights"
        self.display.line(f"fork of {path} (step {step}): {taken} from it, the rest new")

    def _warn_changed_keys(self, path: Path, saved: dict[str, Any]) -> None:
        now = plain(self.config)
        keys = (set(saved) | set(now)) - set(DEFAULTS)
        changed = sorted(key for key in keys if saved.get(key) != now.get(key))
        if changed:
            warnings.warn(
                f"resuming from {path} with changed config keys: "
                + ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed),
                stacklevel=4,
            )

    def _restore_step_rng(self) -> None:
        """A resumed run at an epoch boundary continues from the checkpoint's RNG state (mid
        epoch, ``epoch_batches`` does it after replaying the data order)."""
        at_boundary = self.state.batch_in_epoch in (0, self.n_batches)
        if self._resume_rng is not None and at_boundary:
            checkpoint.set_rng_state(self._resume_rng, _generators(self.train_loader))
            self._resume_rng = None

    # --- session: run folder, sinks and signals ------------------------------------------------
    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        self._open_run()
        self._checked = False
        self._save_due = False
        self._accumulate = self.config["accumulate_grad_batches"]
        self._window, self._window_sums = 1, {}
        validate = self.config["validate_iterations"]
        self._validate_every = validate if isinstance(validate, int) else None
        self._lr_names: list[tuple[str, dict[str, Any]]] | None = None
        self._epoch_finished = False
        self._epoch_started = self._last_line = time.monotonic()
        self._bar = self.display.bar(0, 0, "")  # closed at once; for own train_epoch loops
        self._bar.close()
        self._save_every = self.config["save_iterations"]
        self._save_every = self._save_every if isinstance(self._save_every, int) else None
        try:
            with self._stops.deferred(), _deterministic(self.config["deterministic"]):
                yield
        except KeyboardInterrupt:  # TrainingInterrupted, or Ctrl-C outside the loop
            self._close_run(INTERRUPTED, ending=True)
            raise
        except BaseException:
            self._close_run(FAILED, ending=True)
            raise
        else:
            self._close_run(COMPLETED)

    def _open_run(self) -> None:
        """Create or reuse the run folder, take its lock, open the sinks, say where it all is."""
        fresh = self.run_folder is None
        if fresh and self.world.writes:
            tb_dir = self.config["tensorboard_dir"]
            model_dir, name = Path(self.config["model_dir"]), self._run_name()
            self.run_folder = rundir.create(
                model_dir, name, Path(tb_dir) if tb_dir is not None else None
            )
        if self.world.writes:
            self.run_folder.lock()
            try:
                self._tidy_run_folder(fresh)
            except BaseException:
                self.run_folder.unlock()
                raise
        if self.collective.active:  # rank 0 named the folder (and tidied it): the others follow
            name = self.collective.broadcast(self.run_folder.name if self.world.writes else None)
            if not self.world.writes:
                self.run_folder = rundir.RunDir(Path(self.config["model_dir"]) / name)
        try:
            info = RunInfo(
                self.run_folder.name, self.run_folder.path, plain(self.config),
                self.state.global_step, self._parent,
            )  # fmt: skip
            self.logger.open(info, self._sink_states)
        except BaseException:
            self.run_folder.unlock()
            raise
        self.model.writer = self._summary_writer()
        self.display.line(self._start_line())

    def _tidy_run_folder(self, fresh: bool) -> None:
        """Under the lock: clear what interrupted saves left, leave an abandoned timeline, and
        record in run.json that the run is running."""
        folder, start = self.run_folder, self.start
        checkpoint.clean(folder.path)
        if start.newer:
            moved = checkpoint.move_aside(folder.path, start.newer)
            self.display.line(
                f"resuming {start.path.name} (step {self.state.global_step}) leaves a newer "
                f"timeline: moved {len(start.newer)} later checkpoint file(s) to {moved}"
            )
            if not (folder.path / checkpoint.BEST_NAME).exists():
                self.state.best_value = self.state.best_step = None  # chosen again from here
            start.newer = []
        if start.kind == resume.CONTINUE and checkpoint.latest_valid(folder.path) != start.path:
            raise CheckpointError(
                f"{folder.path} got a newer checkpoint from another process since this project "
                "was built; build it again to continue from there"
            )
        if fresh or not folder.info():
            folder.write_info(
                rundir.new_info(
                    folder.name, self.config["prefix"], self.model.name, plain(self.config),
                    folder.path.parent, self._parent,
                )
            )  # fmt: skip
        else:
            folder.update_info(status="running", summary=None)

    def _close_run(self, status: str, ending: bool = False) -> None:
        """Close the sinks and record how the run ended; ``ending``: an error is on its way
        out, and a failure to close is then a warning rather than a new error hiding it."""
        try:
            self.logger.close(status)
        except Exception as err:
            status = FAILED
            if not ending:
                raise
            warnings.warn(f"could not close the run's records: {err}", stacklevel=2)
        finally:
            try:
                if self.world.writes:
                    summary = self.summary if status == COMPLETED else None
                    self.run_folder.update_info(status=status.lower(), summary=summary)
            except OSError as err:  # e.g. a full disk: never hide why the run itself ended
                warnings.warn(f"could not record the run's end in run.json: {err}", stacklevel=2)
            finally:
                self._sink_states = self.logger.state()
                self.model.writer = None
                self.run_folder.unlock()

    def _summary_writer(self) -> Any:
        for sink in self.logger.sinks:
            if getattr(sink, "name", None) == "tensorboard":
                return sink.writer
        return None  # Model.writer then gives a writer that writes nothing

    def _agree(self, saves: bool) -> int | None:
        """Under torchrun, at steps every process knows in advance (every AGREE_EVERY steps,
        at saves, at an epoch's or the run's end): exchange stop signals and non-finite
        losses, so that every process stops at the same step. Returns the signal to stop on."""
        state = self.state
        due = saves or state.global_step % AGREE_EVERY == 0 or self.should_stop()
        if not (due or state.batch_in_epoch >= self.n_batches):
            return None
        self.logger.flush()  # reads the logged losses: the NaN check of every process
        seen = self.collective.gather((self._stops.received, self.nonfinite.pending))
        pending = [f"process {rank}: {p}" for rank, (_, p) in enumerate(seen) if p is not None]
        if pending:
            self.nonfinite.raise_for("; ".join(pending))
        self.nonfinite.pending = None
        signals = [signum for signum, _ in seen if signum is not None]
        return signals[0] if signals else None

    def _no_sync(self) -> contextlib.AbstractContextManager:
        """Inside an accumulation window, no gradient all-reduce until its last batch."""
        if not self._ddp or self.model.stepper.closes:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for name in self._ddp:
            stack.enter_context(getattr(self.model, name).no_sync())
        return stack

    @property
    def _plan(self) -> Any:
        """The training loader's GlobalBatches under torchrun, else None."""
        if not self.world.launched:
            return None
        plan = getattr(self.train_loader, "plan", None)
        return plan if plan is not None else getattr(self.train_loader, "batch_sampler", None)

    def _interrupt(self, signum: int) -> None:
        log.warning(
            "%s received: saving at global step %d and stopping",
            signal.Signals(signum).name,
            self.state.global_step,
        )
        if self.state.last_save_step != self.state.global_step:
            self.save()
        chain = None
        if signum in self._requeue_signals:  # the cluster will kill this job: ask for a requeue
            self._run_requeue_command()
            previous = self._stops.previous.get(signum)
            chain = previous if callable(previous) else None  # e.g. submitit's own requeue
        raise TrainingInterrupted(signum, self.state.global_step, chain)

    def _run_requeue_command(self) -> None:
        command = self.config["requeue_command"]
        if command is None or not self.world.writes:
            return
        done = subprocess.run(command, shell=True, check=False, timeout=120)
        self.display.line(f"requeue: ran {command!r} (exit status {done.returncode})")

    # --- what this process writes, and what a person sees ---------------------------------------
    def _outputs(self) -> tuple[Logger, Display]:
        """The one place that decides what this process writes: everything, or nothing at all."""
        writes = self.world.writes
        sinks: list[Sink] = []
        if writes and self.config["tensorboard_dir"] is not None:
            from mlproject.tensorboard import TensorBoardSink  # tensorboardX, only when used

            sinks.append(TensorBoardSink(self.config["tensorboard_dir"]))
        if writes and self.run is not None:
            sinks.append(SacredSink(self.run))
        if writes:
            sinks.extend(self.get_sinks(self.config))
        display = Display(writes, bars=self.config["progress"], under_sacred=self.run is not None)
        return Logger(sinks, self.nonfinite), display

    @property
    def run_dir(self) -> Path | None:
        """The run folder under ``model_dir`` (None until the run has one)."""
        return self.run_folder.path if self.run_folder is not None else None

    def _start_line(self) -> str:
        parts = [f"run {self.run_folder.path}"]
        if self.config["tensorboard_dir"] is not None:
            tb_run = Path(self.config["tensorboard_dir"]) / self.run_folder.name
            parts.append(f"TensorBoard {tb_run}")
        if getattr(self.run, "_id", None) is not None:
            parts.append(f"sacred run {self.run._id}")
        if self.state.global_step:
            parts.append(f"resumed at step {self.state.global_step}")
        return " · ".join(parts)

    def _show_evaluation(self, group: str, metrics: dict[str, float]) -> None:
        """One line that stays: epoch, step, mean train loss since the last line, metrics, time."""
        self.logger.flush()
        train_loss = self.logger.take_means().get("train/loss")
        limit, state = self.config["n_global_iterations"], self.state
        parts = [
            f"epoch {state.epoch}" + ("" if limit else f"/{self.config['n_epochs']}"),
            f"step {state.global_step}" + (f"/{limit}" if limit else ""),
        ]
        if train_loss is not None:
            parts.append(f"train loss {number(train_loss)}")
        parts.append(f"{group} {metrics_text(metrics)}")
        now = time.monotonic()
        parts.append(f"{now - self._last_line:.1f} s")
        self._last_line = now
        self.display.line(" · ".join(parts))

    def _show_summary(self, summary: dict[str, Any], best_path: Path | None) -> None:
        name, best = summary["benchmark_metric"], summary["best"]
        lines = [f"done: {summary['epochs']} epochs, {summary['global_step']} steps"]
        if best_path is not None:
            lines.append(
                f"best validation {name} {number(best[name])} at step {best['step']} ({best_path})"
            )
        if summary["test"]:
            lines.append(f"test {metrics_text(summary['test'])}")
        self.display.line(" · ".join(lines))

    # --- checks before anything is written ------------------------------------------------------
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
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        if trainable and not self.model.optimizers():
            raise ModelError(
                f"{type(self.model).__name__} has {trainable} trainable parameters but no "
                "optimizer among its attributes (or in a list, tuple or dict attribute), so "
                "nothing could be saved or resumed. Set e.g. self.opt = torch.optim.Adam(...)"
            )
        plateau = isinstance(getattr(self.model, "scheduler", None), _PLATEAU)
        if isinstance(self.model, ProxyModel) and plateau:
            if self.datasets.validation_loader() is None:
                raise ModelError(
                    "ReduceLROnPlateau steps on the validation value of the benchmark metric, "
                    "and this project has no validation set (stepping on test data would select "
                    "on it). Add a validation set, or use another scheduler"
                )

    def _place_model(self) -> torch.device:
        """``device`` None keeps the model where ``get_model`` put it; an explicit one moves it
        (said in one line when get_model had put it on an accelerator)."""
        current = self.model.device
        wanted = self.config["device"]
        device = current if wanted is None else resolve_device(wanted)
        if wanted is not None and current.type != "cpu" and current != device:
            self.display.line(f"device={wanted!r}: moving the model from {current} to {device}")
        self.model.to(device)
        self.config["device"] = str(device)
        return device

    def _preflight(self) -> None:
        """Run one validation (else test) batch through ``test_batch`` and check its outputs,
        so a broken contract shows before any folder or file exists. RNG states are kept."""
        validation = self.datasets.validation_loader()
        loader = validation if validation is not None else self.datasets.test_loader()
        if loader is None:
            return
        protect_workers(loader, self._stops.signals)
        generators = _generators(self.train_loader)
        rng = checkpoint.rng_state(generators)
        was_training = self.model.training
        self.model.eval()
        try:
            batch = next(iter(loader), None)
            if batch is None:
                return
            with torch.no_grad():
                outputs = self.model.test_batch(self.model.to_device(batch))
        finally:
            self.model.train(was_training)
            checkpoint.set_rng_state(rng, generators)
        needed = [self.model.benchmark_metric] if validation is not None else []
        scalars(outputs, "test_batch", needed)

    # --- helpers --------------------------------------------------------------------------------
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
        values = dict(scalars(outputs, "train_batch")) if keys is None else {
            k: outputs[k] for k in keys if k in outputs
        }  # fmt: skip
        for key, group in self._lr_groups():
            values[key] = group["lr"]
        if self.config["clip_grad_norm"] is not None:
            for key, norm in self._grad_norms():
                values[key] = norm
        if not self.nonfinite.stops:
            values["skipped_steps"] = self.nonfinite.skipped
        return values

    def _window_mean(self, outputs: dict[str, Any]) -> dict[str, Any] | None:
        """With accumulation: the mean of the window's outputs at its last batch, else None."""
        if self.model.log_level >= LogLevel.SCALARS:
            sums = self._window_sums
            for key, value in outputs.items():
                sums[key] = sums[key] + value if key in sums else value
        stepper = self.model.stepper
        if not stepper.closes:
            return None
        sums, self._window_sums = self._window_sums, {}
        return {key: value / stepper.window for key, value in sums.items()}

    def _grad_norms(self) -> list[tuple[str, Any]]:
        """``grad_norm`` (``grad_norm/<optimizer>`` with several) of the last clipped step."""
        optimizers, norms = self.model.optimizers(), self.model.stepper.grad_norms
        found = [(name, norms[id(opt)]) for name, opt in optimizers.items() if id(opt) in norms]
        if len(optimizers) == 1:
            return [("grad_norm", norm) for _, norm in found]
        return [(f"grad_norm/{name}", norm) for name, norm in found]

    def _compile(self) -> None:
        """torch.compile every network of the model in place: its state_dict keys stay plain
        (no ``_orig_mod.``), so checkpoints load into an uncompiled model and back."""
        backend = self.config["compile"]
        options = {} if backend is True else {"backend": backend}
        if backend is not True:
            import torch._dynamo  # the backends' list; torch.compile imports it anyway

            if backend not in torch._dynamo.list_backends(exclude_tags=()):
                raise ConfigError(
                    f"compile={backend!r} is not a torch.compile backend; allowed: True (the "
                    f"default, inductor) or one of {torch._dynamo.list_backends()}"
                )
        for module in self.model.children():
            if any(True for _ in module.parameters()):
                module.compile(**options)

    def _lr_groups(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, param group) of every optimizer param group: ``lr``, ``lr/<optimizer>/<i>``."""
        if self._lr_names is None:
            optimizers = self.model.optimizers()
            self._lr_names = [
                (
                    "/".join(
                        ["lr"]
                        + ([name] if len(optimizers) > 1 else [])
                        + ([str(i)] if len(opt.param_groups) > 1 else [])
                    ),
                    group,
                )
                for name, opt in optimizers.items()
                for i, group in enumerate(opt.param_groups)
            ]
        return self._lr_names


_PLATEAU = torch.optim.lr_scheduler.ReduceLROnPlateau


@contextlib.contextmanager
def _deterministic(on: bool) -> Iterator[None]:
    """torch's deterministic algorithms while training; afterwards the process's own mode
    (with its warn_only) and environment, as they were."""
    if not on:
        yield
        return
    mode = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # CUDA's cuBLAS needs it
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def _refuse_misfit(
    path: Path,
    payload: checkpoint.Checkpoint,
    model: Model,
    kinds: tuple[str, ...],
    what: str = "resume",
) -> None:
    """Raise CheckpointError listing what of ``kinds`` differs between checkpoint and model."""
    differences = checkpoint.structure_differences(
        payload["model"]["structure"], model.structure(), kinds
    )
    if differences:
        hint = "\n(init_from_optimizer=False takes the weights only)" if what == "init_from" else ""
        raise CheckpointError(
            f"cannot {what} from {path}: the model does not fit it:\n  - "
            + "\n  - ".join(differences)
            + hint
        )


def _set_epoch(loader: Any, epoch: int) -> None:
    """Tell a sharded loader (its GlobalBatches) which epoch's order to draw."""
    for owner in (loader, getattr(loader, "batch_sampler", None)):
        if hasattr(owner, "set_epoch"):
            owner.set_epoch(epoch)
            return


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
