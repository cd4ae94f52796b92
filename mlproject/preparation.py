"""Preparation: what MLProject does before its first step, and before it writes anything.

``MLProject`` is a ``Preparation``: under torchrun it joins the process group and takes rank
0's config (``_join``), checks the parts ``get_model`` and ``get_dataset_factory`` returned
(``_check_parts``), places the model (``_place_model``), applies where training starts
(``_plan_start``, ``_begin``: a new run, a continued one, a fork; decided by
``mlproject.resume``) and runs one validation batch through the model's contract
(``_preflight``). Every refusal here happens before any folder or file exists.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import ReduceLROnPlateau

from mlproject import checkpoint, distributed, resume, rundir
from mlproject.config import DEFAULTS, plain, resolve_device
from mlproject.data.factory import DatasetFactory
from mlproject.distributed import Collective
from mlproject.errors import CheckpointError, ConfigError, ModelError
from mlproject.model import Model, ProxyModel, benchmark_goal, scalars
from mlproject.signals import protect_workers
from mlproject.sinks import COMPLETED
from mlproject.state import TrainState

log = logging.getLogger("mlproject.project")


class Preparation:
    """The checks and the start of a run; a part of ``MLProject`` (see the module docstring)."""

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
        refuse_misfit(path, payload, self.model, ("parameters", "optimizers", "schedulers"))
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
        refuse_misfit(path, payload, self.model, kinds, "init_from")
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
            checkpoint.set_rng_state(self._resume_rng, checkpoint.generators_of(self.train_loader))
            self._resume_rng = None

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
        wrapped = [
            n for n, m in self.model.named_modules() if isinstance(m, DistributedDataParallel)
        ]
        if wrapped:
            raise ModelError(
                f"{type(self.model).__name__}.{wrapped[0]} is already a DistributedDataParallel: "
                "under torchrun mlproject wraps the model's networks itself (and keeps their "
                "checkpoint keys); give it the plain network and call it as in one process"
            )
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        if trainable and not self.model.optimizers():
            raise ModelError(
                f"{type(self.model).__name__} has {trainable} trainable parameters but no "
                "optimizer among its attributes (or in a list, tuple or dict attribute), so "
                "nothing could be saved or resumed. Set e.g. self.opt = torch.optim.Adam(...)"
            )
        plateau = isinstance(getattr(self.model, "scheduler", None), ReduceLROnPlateau)
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

    def _selection_loader(self) -> tuple[str, Iterable | None]:
        """("validation", its loader), else ("test", the test loader or None): what the
        model is evaluated and selected on."""
        validation = self.datasets.validation_loader()
        if validation is not None:
            return "validation", validation
        return "test", self.datasets.test_loader()

    def _preflight(self) -> None:
        """Run one validation (else test) batch through ``test_batch`` and check its outputs,
        so a broken contract shows before any folder or file exists. RNG states are kept."""
        group, loader = self._selection_loader()
        if loader is None:
            return
        protect_workers(loader, self._stops.signals)
        generators = checkpoint.generators_of(self.train_loader)
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
        needed = [self.model.benchmark_metric] if group == "validation" else []
        scalars(outputs, "test_batch", needed)

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


def refuse_misfit(
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
