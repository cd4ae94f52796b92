"""TrainState: the loop's counters, in one object that checkpoints save and restore."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class TrainState:
    """Where training stands. Every counter starts at 0 and counts work already done.

    Attributes:
        epoch: epochs completed (the epoch in progress has index ``epoch``, 0-based).
        global_step: optimizer steps done since the run began, over all epochs (with
            ``accumulate_grad_batches=k``, one per k training batches).
        batch_in_epoch: training batches done in the epoch in progress (0 at an epoch
            boundary; at a checkpoint, always at the end of an accumulation window).
        best_value: the best benchmark metric on the validation set so far (None before any).
        best_step: the global step at which ``best_value`` was reached.
        last_eval_step: the global step of the last evaluation (-1 before any).
        last_save_step: the global step of the last periodic checkpoint (-1 before any).
        skipped_steps: steps whose loss was NaN/inf and were skipped (nonfinite='skip').
        batches_per_epoch: the training loader's length when this state was saved (0: unknown).
        evaluations_without_best: validations since the benchmark metric last improved.
        stopped_early: True once ``early_stopping`` stopped the run.
    """

    epoch: int = 0
    global_step: int = 0
    batch_in_epoch: int = 0
    best_value: float | None = None
    best_step: int | None = None
    last_eval_step: int = -1
    last_save_step: int = -1
    skipped_steps: int = 0
    batches_per_epoch: int = 0
    evaluations_without_best: int = 0
    stopped_early: bool = False

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
