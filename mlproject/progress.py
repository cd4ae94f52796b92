"""Display: what a person sees while a run trains (a bar per epoch, a line per evaluation).

One line when the run starts (its folder, TensorBoard run and sacred id), one line that stays
after each evaluation, and a short summary at the end, also with ``progress=False`` (which
turns off only the bars). Lines go to ``sys.stderr`` at the time, so sacred's captured output
keeps them; bars go to a copy of the terminal taken before sacred's capture, so the record
holds no bar frames.
"""

from __future__ import annotations

import sys
import time
from typing import Any

PROGRESS_SECONDS = 0.5  # how often a bar reads the live loss (a host sync)
_terminal: Any = None  # where bars go; None = sys.stderr at the time


def show_progress_on(stream: Any) -> None:
    """Send progress bars to ``stream`` (the experiment glue points it past sacred's capture)."""
    global _terminal
    _terminal = stream


def number(value: Any) -> str:
    """A metric as a person reads it: 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def metrics_text(metrics: dict[str, Any]) -> str:
    return " ".join(f"{key} {number(value)}" for key, value in metrics.items())


class Display:
    """The run's lines and bars; shows nothing when ``enabled`` is False (a silent process).

    Example:
        >>> display = Display(enabled=True, bars=False)
        >>> display.line("epoch 1/3 · train loss 0.51")   # doctest: +SKIP
    """

    def __init__(self, enabled: bool = True, bars: bool = True, under_sacred: bool = False):
        self.enabled = enabled
        self.bars = enabled and bars
        self.under_sacred = under_sacred
        self._bar: Progress | None = None

    def line(self, text: str) -> None:
        """Write one line that stays, without breaking a bar that is showing."""
        if not self.enabled:
            return
        bar = self._bar.bar if self._bar is not None else None
        if bar is not None:
            bar.clear()
        from tqdm.auto import tqdm  # on first use: reading runs needs no progress bars

        tqdm.write(text, file=sys.stderr)
        if bar is not None:
            bar.refresh()

    def bar(self, total: int, initial: int, desc: str) -> Progress:
        """A bar for one epoch (none with ``progress=False`` or on a silent process)."""
        stream = (_terminal if self.under_sacred else None) or sys.stderr
        self._bar = Progress(total, initial, desc, enabled=self.bars, file=stream)
        return self._bar


class Progress:
    """A tqdm bar whose loss display is refreshed at most every ``PROGRESS_SECONDS``."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool, file: Any):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, initial=initial, desc=desc, mininterval=0.5, file=file,
                dynamic_ncols=True, leave=False, disable=None,  # none in a log file
            )  # fmt: skip
        self._next = 0.0

    def update(self, outputs: dict[str, Any]) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        now = time.monotonic()
        if now >= self._next and "loss" in outputs:
            self._next = now + PROGRESS_SECONDS
            self.bar.set_postfix(loss=f"{float(outputs['loss']):.4g}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
