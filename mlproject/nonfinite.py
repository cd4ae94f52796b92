"""The NaN/inf policy, in one place: checks of the loss, of the logged losses and of the weights.

``nonfinite='error'`` (the default) stops the run at a non-finite loss; ``'skip'`` skips that
update and counts it. Three checks apply the policy, from the cheapest to the last resort:

1. ``check_loss`` before an optimizer step (ProxyModel, ``Model.loss_is_finite``): no update
   is applied. On a GPU with 'error' it does not look (reading the loss is a host sync).
2. ``check_logged`` at every flush of the logged scalars: a non-finite train loss (any train
   scalar whose name contains "loss") stops an 'error' run, naming its step. This catches
   models that never call check 1, and GPU runs.
3. ``check_weights`` before every checkpoint: non-finite weights are never saved.

Under torchrun (``collective=True``) no process may stop or skip on its own: the others would
wait for it in the next gradient all-reduce. Checks 1 and 2 then only note a non-finite loss
in ``pending``; the processes exchange it at their next agreement and stop together, and a
step is skipped on the averaged gradients, which every process has alike (``Stepper.step``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from mlproject.errors import NonFiniteLossError

MODES = ("error", "skip")
_FIX = "Use nonfinite=skip to skip such steps"


def is_loss(name: str) -> bool:
    """True for the train scalars that check 2 watches: ``loss``, ``d_loss``, ``loss_kl``..."""
    return "loss" in name.lower()


class NonFinitePolicy:
    """Applies ``nonfinite`` ('error' or 'skip') and counts the skipped steps.

    Example:
        >>> policy = NonFinitePolicy("skip")
        >>> policy.check_loss(torch.tensor(float("nan")), step=3)
        False
        >>> policy.skipped
        1
    """

    def __init__(self, mode: str = "error", skipped: int = 0, collective: bool = False):
        if mode not in MODES:
            raise ValueError(f"nonfinite must be one of {MODES}; got {mode!r}")
        self.mode = mode
        self.skipped = skipped
        self.collective = collective
        self.pending: str | None = None  # collective: a non-finite loss not yet acted on

    @property
    def stops(self) -> bool:
        return self.mode == "error"

    def check_loss(
        self, loss: torch.Tensor, step: int, who: str = "the model", count: bool = True
    ) -> bool:
        """True when ``loss`` is finite and the update may be applied (``step`` is 1-based).

        A non-finite loss raises NonFiniteLossError ('error') or returns False ('skip'; and is
        counted as a skipped step with ``count``). On a GPU with 'error' this returns True
        without a host sync.
        """
        if loss.is_cuda and self.stops:
            return True
        value = loss.item() if loss.numel() == 1 else loss.detach().sum().item()
        if math.isfinite(value):
            return True
        if self.collective:  # noted; decided on the averaged gradients, by every process
            self.pending = self.pending or f"{who}: loss is {value} at global step {step}"
            return True
        if self.stops:
            raise NonFiniteLossError(
                f"{who}: loss is {value} at global step {step}; no update was applied. {_FIX}"
            )
        self.skipped += count
        return False

    def check_logged(self, scalars: Iterable[tuple[str, float, int, float]]) -> None:
        """Raise (with 'error') at the first non-finite train loss among logged scalars."""
        if not self.stops:
            return
        for tag, value, step, _ in scalars:
            if not math.isfinite(value) and tag.startswith("train/") and is_loss(tag[6:]):
                if self.collective:
                    self.pending = self.pending or f"{tag} is {value} at global step {step}"
                    return
                raise NonFiniteLossError(
                    f"{tag} is {value} at global step {step}; stopping so that no checkpoint "
                    f"holds NaN/inf weights. {_FIX}"
                )

    def raise_for(self, message: str) -> None:
        """Stop (with 'error') for a non-finite loss that ``message`` describes."""
        if self.stops:
            raise NonFiniteLossError(f"{message}; stopping every process. {_FIX}")

    def check_weights(self, module: torch.nn.Module, step: int) -> None:
        """Raise NonFiniteLossError when a parameter of ``module`` holds NaN/inf."""
        if not all_finite([p.detach() for p in module.parameters()]):
            raise NonFiniteLossError(
                f"the weights hold NaN/inf at global step {step}; not saving them. An earlier "
                f"step's loss was not finite. {_FIX}"
            )


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """True when no element of ``tensors`` is NaN/inf (also for none): one host sync."""
    return not tensors or bool(torch.stack([t.isfinite().all() for t in tensors]).all())
