"""Session: what a run writes and how it ends: its folder and lock, sinks and display, signals.

``MLProject`` is a ``Session``: ``_session`` opens the run (creates or reuses the run folder,
takes its lock, opens the sinks, says where everything is), installs the stop signals and
deterministic mode for the loop, and closes the run with how it ended (COMPLETED,
INTERRUPTED, FAILED) in run.json and in every sink. ``_outputs`` is the one place that decides
what this process writes: everything on the writing process (``World.writes``), else nothing.
Under torchrun, ``_agree`` is where the processes agree to stop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mlproject import checkpoint, resume, rundir
from mlproject.config import plain
from mlproject.distributed import AGREE_EVERY
from mlproject.errors import CheckpointError, TrainingInterrupted
from mlproject.logger import Logger
from mlproject.progress import Display
from mlproject.sinks import COMPLETED, FAILED, INTERRUPTED, RunInfo, SacredSink, Sink

log = logging.getLogger("mlproject.project")


class Session:
    """The run's side effects and its end; a part of ``MLProject`` (see the module docstring)."""

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        self._open_run()
        self._checked = False
        self._save_due = False
        self._accumulate = self.config["accumulate_grad_batches"]
        self._window, self._window_sums, self._window_all = 1, {}, False
        validate = self.config["validate_iterations"]
        self._validate_every = validate if isinstance(validate, int) else None
        self._lr_names: list[tuple[str, dict[str, Any]]] | None = None
        self._norm_names: list[tuple[str, int]] | None = None
        self._epoch_finished = False
        self._epoch_started = self._last_line = time.monotonic()
        self._bar = self.display.bar(0, 0, "")  # closed at once; for own train_epoch loops
        self._bar.close()
        save = self.config["save_iterations"]
        self._save_every = save if isinstance(save, int) else None
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
        # reads the logged losses, the NaN check of every process; no fsync every AGREE_EVERY
        self.logger.flush(durable=False)
        seen = self.collective.gather((self._stops.received, self.nonfinite.pending))
        pending = [f"process {rank}: {p}" for rank, (_, p) in enumerate(seen) if p is not None]
        if pending:
            self._ended_together = True  # every process raises here, at this step
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
        self._ended_together = True  # under torchrun, every process stops here (see _agree)
        raise TrainingInterrupted(signum, self.state.global_step, chain)

    def _run_requeue_command(self) -> None:
        command = self.config["requeue_command"]
        if command is None or not self.world.writes:
            return
        done = subprocess.run(command, shell=True, check=False, timeout=120)
        self.display.line(f"requeue: ran {command!r} (exit status {done.returncode})")

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

    def _run_name(self) -> str:
        run_id = getattr(self.run, "_id", None)
        if run_id is None:
            run_id = time.strftime("%Y%m%d-%H%M%S")
        return "_".join(str(p) for p in (self.config["prefix"], run_id, self.model.name) if p)


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
