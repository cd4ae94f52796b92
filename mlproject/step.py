"""Stepper: the optimizer step done right: precision, accumulation, clipping, the NaN policy.

A Model calls ``self.autocast()``, ``self.backward(loss)`` and ``self.step(optimizer)``
(ProxyModel does); they delegate here. One optimizer step may span ``accumulate`` training
batches (a *window*); the loop tells the Stepper where each batch is with ``begin_batch``.

- ``backward`` divides the loss by the window's length, so that k batches of b give the
  gradient of one batch of k*b; under ``precision='16'`` it scales the loss (GradScaler).
- ``step`` does nothing inside a window. At its last batch it unscales (fp16), measures the
  gradient norm and clips it (``clip``), skips the update when a loss of the window was not
  finite (the NaN policy) or the scaler found inf/NaN gradients, then steps and zeroes the
  gradients. It returns whether the optimizer really stepped, so a scheduler steps only then.
- ``end_window`` updates the scaler once per optimizer step, after every optimizer stepped.

On a GPU with nonfinite='error', reading the loss to check it would be a host sync per step.
There a GradScaler with a scale of 1 guards the optimizers that take its found-inf input on
the device (``fused=True`` Adam, AdamW, SGD): a non-finite step is skipped without a sync, and
the run stops at the next flush of the logged losses. Other optimizers apply that one update;
it is caught at the same flush, before any checkpoint is written.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from mlproject.nonfinite import NonFinitePolicy, all_finite

PRECISIONS = ("32", "bf16", "16")
_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}


class Stepper:
    """How a Model's optimizer steps are taken (see the module docstring).

    Args:
        precision: '32', 'bf16' (autocast, no scaler) or '16' (autocast and GradScaler).
        accumulate: training batches per optimizer step.
        clip: max gradient norm (per optimizer, all its parameters); None = no clipping.
        nonfinite: the run's NaN policy.
        device: where the model is (autocast and the scaler follow it).
        collective: under torchrun with several processes: every process backpropagates
            every batch (the gradient all-reduce needs them all), and a step is skipped on
            the averaged gradients, which all processes share.

    Example:
        >>> stepper = Stepper(precision="bf16", accumulate=2)
        >>> stepper.begin_batch(position=0, window=2)
        >>> with stepper.autocast():
        ...     loss = net(x).pow(2).mean()
        >>> stepper.backward(loss)
        >>> stepper.step(opt)  # the window has one more batch: no step yet
        False
    """

    def __init__(
        self,
        precision: str = "32",
        accumulate: int = 1,
        clip: float | None = None,
        nonfinite: NonFinitePolicy | None = None,
        device: torch.device | str = "cpu",
        collective: bool = False,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
        self.precision, self.accumulate, self.clip = precision, accumulate, clip
        self.nonfinite = nonfinite or NonFinitePolicy("error")
        self.device = torch.device(device)
        self.collective = collective
        self.scale = 1.0  # this batch's loss weight in a global batch (mlproject.shard)
        self.scaler = None
        if precision == "16":
            self.scaler = torch.amp.GradScaler(self.device.type)
        elif self.device.type == "cuda" and self.nonfinite.stops:  # the device-side guard
            self.scaler = torch.amp.GradScaler("cuda", init_scale=1.0, growth_interval=2**30)
        self._no_autocast = contextlib.nullcontext()
        self.position, self.window = 0, 1
        self.grad_norms: dict[int, torch.Tensor] = {}  # id(optimizer) -> pre-clip norm
        self._window_finite = True
        self._scaler_stepped = False
        self._closed = False  # a step() closed the window; the next backward opens one

    @property
    def closes(self) -> bool:
        """True on the last training batch of a window: the optimizer steps after it."""
        return self.position == self.window - 1

    def begin_batch(self, position: int, window: int, scale: float = 1.0) -> None:
        """The next batch is number ``position`` (0-based) of a window of ``window`` batches;
        its loss counts ``scale`` times (a share of a partial global batch, see shard)."""
        self.position, self.window, self.scale = position, window, scale
        if position == 0:
            self._open_window()

    def _open_window(self) -> None:
        self._window_finite, self._closed = True, False

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to bf16 or fp16 under those precisions; nothing under '32'."""
        dtype = _DTYPES.get(self.precision)
        if dtype is None:
            return self._no_autocast
        return torch.autocast(self.device.type, dtype=dtype)

    def backward(self, loss: torch.Tensor, step: int, who: str = "the model") -> None:
        """Backpropagate ``loss`` (normalised by the window, scaled under fp16).

        A non-finite loss raises (nonfinite='error', see NonFinitePolicy.check_loss) or
        marks the window, whose update is then skipped and counted ('skip').
        """
        if self._closed and self.window == 1:  # outside the loop (no begin_batch): a new window
            self._open_window()
        if not self.nonfinite.check_loss(loss, step, who, count=False):
            self._window_finite = False
            return
        if not self._window_finite:
            return  # this window's update is skipped anyway
        if self.window > 1 or self.scale != 1.0:
            loss = loss * (self.scale / self.window)
        if self.scaler is not None:
            loss = self.scaler.scale(loss)  # the guard's scale is 1: the same loss
        loss.backward()

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """At a window's last batch, step ``optimizer`` (see the module docstring) and zero its
        gradients; return True when it stepped, False inside a window or for a skipped update.
        """
        if not self.closes:
            return False
        if self._window_finite and self.collective and not self._gradients_finite(optimizer):
            self._window_finite = False  # skipped for every optimizer of this step
        if not self._window_finite:
            self.nonfinite.skipped += not self._closed  # one skipped step per window
            self._closed = True
            optimizer.zero_grad(set_to_none=True)
            return False
        self._closed = True
        fp16 = self.precision == "16"
        scaler = self.scaler
        if scaler is not None and not fp16 and not _takes_found_inf(optimizer):
            scaler = None  # the guard needs the fused kernels; this optimizer steps as it is
        if scaler is not None:
            scaler.unscale_(optimizer)
        if self.clip is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            self.grad_norms[id(optimizer)] = torch.nn.utils.clip_grad_norm_(params, self.clip)
        applied = True
        if scaler is not None:
            scaler.step(optimizer)
            self._scaler_stepped = True
            if fp16:
                # GradScaler has read found-inf already (a sync, unless the optimizer is fused):
                # an overflow skipped this update, which is no step for a scheduler.
                state = scaler._per_optimizer_states[id(optimizer)]
                applied = not sum(v.item() for v in state["found_inf_per_device"].values())
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return applied

    def _gradients_finite(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether the averaged gradients are finite (the same answer on every process); a
        host sync, so on a GPU only with nonfinite='skip' (with 'error' the guard skips)."""
        if self.device.type == "cuda" and self.nonfinite.stops:
            return True
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if all_finite(grads):
            return True
        if self.nonfinite.stops and self.nonfinite.pending is None:
            self.nonfinite.pending = "the averaged gradients are not finite"
        return False

    def end_window(self) -> None:
        """After a window's last batch (the loop calls it): update the scaler once."""
        if self._scaler_stepped:
            self.scaler.update()
            self._scaler_stepped = False

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def _takes_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """True for optimizers whose step skips itself on the scaler's found-inf, on the device."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))
