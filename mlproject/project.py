"""MLProject: builds a model and its data from a config, then trains, evaluates and checkpoints it.

The loop reads top-down: ``train`` runs epochs until the configured length, ``train_epoch``
runs ``step`` per batch, ``end_epoch`` evaluates and saves, ``final_test`` tests the best
model. Every counter lives in ``self.state``; every side effect goes through the run folder
(``self.run_folder``), the scalar logger and its sinks (``self.logger``) or the display
(``self.display``), which write only where ``self.world.writes``. What happens before the
first step (checks, placement, where the run starts) is in ``mlproject.preparation``; opening
and closing the run (folder, lock, sinks, signals) in ``mlproject.session``.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from mlproject import checkpoint, distributed, resume, rundir
from mlproject.config import plain, resolve_device, validate_config
from mlproject.data.factory import DatasetFactory, check_loader
from mlproject.distributed import World
from mlproject.errors import CheckpointError, ModelError, TrainingInterrupted
from mlproject.model import LogLevel, Model, benchmark_goal, scalars
from mlproject.nonfinite import NonFinitePolicy
from mlproject.preparation import Preparation, refuse_misfit
from mlproject.progress import metrics_text, number
from mlproject.session import Session
from mlproject.shard import shard_evaluation, shard_training
from mlproject.signals import STOP_SIGNALS, StopSignals, protect_workers, signal_numbers
from mlproject.sinks import Sink
from mlproject.state import TrainState
from mlproject.step import Stepper


class MLProject(Preparation, Session):
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
        self._ended_together = False  # every process stopped at one agreed step (see close)
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
        path, payload = resume.load_in(Path(path))
        saved = payload["config"]
        return cls({**saved, **overrides, "init_from": str(path), "resume": None})

    @classmethod
    def load_model(cls, path: str | os.PathLike, **overrides: Any) -> Model:
        """The trained Model at ``path`` (a checkpoint, or a run folder: best.pt first), with
        its weights, on the config's device, in eval mode; no dataset is built.

        Example:
            >>> model = MyProject.load_model("runs/1_mlp", device="cpu")  # doctest: +SKIP
            >>> model.test_batch(batch)  # doctest: +SKIP
        """
        path, payload = resume.load_in(Path(path))
        config = validate_config({**payload["config"], **overrides, "resume": None})
        model = cls.get_model(config)
        refuse_misfit(path, payload, model, ("parameters",), "load_model")
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
            self.collective.close(together=self._ended_together)

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
            self._window_all = self._window > 1 and level is LogLevel.ALL
            if self._window_all:  # every batch's outputs are averaged: SCALARS on all of them,
                level = LogLevel.SCALARS  # and ALL (images...) once, on the window's last one
            object.__setattr__(model, "log_level", level)
        elif self._window_all and position == self._window - 1:
            object.__setattr__(model, "log_level", LogLevel.ALL)
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
        generators = checkpoint.generators_of(loader)
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
        loader = self._eval_shards.get(id(whole))
        if loader is None:  # built once per loader
            loader = self._eval_shards[id(whole)] = shard_evaluation(whole, self.world)
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
        group, loader = self._selection_loader()
        if loader is None:
            return {}
        metrics = self.evaluate(loader)
        self.logger.log(group, metrics, self.state.global_step)
        self.state.last_eval_step = self.state.global_step
        self.last_metrics = {group: metrics}
        if group == "validation":
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
                # _usable_best has verified it
                self.model.load_state_dict(checkpoint.read(best_path)["model"]["weights"])
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
        rng = checkpoint.rng_state(checkpoint.generators_of(self.train_loader))
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
                if keep is not None:  # only periodic saves pass it
                    checkpoint.prune(self.run_folder.path, keep)
            except Exception as err:
                failure = err
        if self.collective.broadcast(failure is not None) and failure is None:
            raise CheckpointError(f"rank 0 could not save {path}; see its error")
        if failure is not None:
            raise failure
        return path

    # --- helpers --------------------------------------------------------------------------------
    @property
    def _plan(self) -> Any:
        """The training loader's GlobalBatches under torchrun, else None."""
        if not self.world.launched:
            return None
        plan = getattr(self.train_loader, "plan", None)
        return plan if plan is not None else getattr(self.train_loader, "batch_sampler", None)

    @property
    def run_dir(self) -> Path | None:
        """The run folder under ``model_dir`` (None until the run has one)."""
        return self.run_folder.path if self.run_folder is not None else None

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
        values = scalars(outputs, "train_batch") if keys is None else {
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
        if self._norm_names is None:  # the optimizers are found once, as for _lr_groups
            optimizers = self.model.optimizers()
            self._norm_names = [
                ("grad_norm" if len(optimizers) == 1 else f"grad_norm/{name}", id(opt))
                for name, opt in optimizers.items()
            ]
        norms = self.model.stepper.grad_norms
        return [(tag, norms[key]) for tag, key in self._norm_names if key in norms]

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


def _set_epoch(loader: Any, epoch: int) -> None:
    """Tell a sharded loader (its GlobalBatches) which epoch's order to draw."""
    for owner in (loader, getattr(loader, "batch_sampler", None)):
        if hasattr(owner, "set_epoch"):
            owner.set_epoch(epoch)
            return


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
