"""Experiment: a sacred Experiment that already declares every framework config key.

This is the only module that imports sacred. ``Experiment("name")`` adds the framework's
defaults (so ``./main.py with n_global_iterations=100 tensorboard_dir=tb`` works for keys the
user never wrote), validates the whole config before the run starts (before any observer
writes), keeps progress bars out of the captured output, and exits with 143/130 when training
stopped on SIGTERM/SIGINT.
"""

from __future__ import annotations

import difflib
import os
import sys
import warnings
from typing import Any

from mlproject.config import DEFAULTS, validate_config
from mlproject.errors import ConfigError, TrainingInterrupted
from mlproject.progress import show_progress_on

# sacred 0.8.7 imports pkg_resources, which warns on every start; the warning is not ours to fix.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

import sacred  # noqa: E402
from sacred.utils import ConfigAddedError, apply_backspaces_and_linefeeds  # noqa: E402

# sacred draws and records the seed itself; declaring it would stop that.
SACRED_DEFAULTS = {k: v for k, v in DEFAULTS.items() if k != "seed"}


def _validate(config: dict[str, Any], command_name: str, logger: Any) -> dict[str, Any]:
    validate_config(config)
    return {}


class Experiment(sacred.Experiment):
    """A sacred Experiment whose config starts from mlproject's defaults.

    Example:
        >>> ex = Experiment("digits")
        >>> @ex.config
        ... def config():
        ...     model_dir = "runs"  # noqa: F841 - a sacred config scope
        ...     n_epochs = 20  # noqa: F841
        >>> @ex.automain
        ... def main(_run):
        ...     return DigitsProject.from_run(_run).train()
    """

    def __init__(self, name: str | None = None, **kwargs: Any):
        super().__init__(name, **kwargs)
        self.add_config(dict(SACRED_DEFAULTS))
        self.config_hook(_validate)
        self.captured_out_filter = apply_backspaces_and_linefeeds
        show_progress_on(_terminal())

    def _create_run(self, *args: Any, **kwargs: Any) -> Any:
        try:
            run = super()._create_run(*args, **kwargs)
        except ConfigAddedError as err:
            raise ConfigError(_unknown_keys_message(err)) from None
        if run.capture_mode is None:
            # sacred's default 'fd' capture tees through subprocesses and can lose the last
            # lines of output (seen here); 'sys' is reliable. --capture=fd still works.
            run.capture_mode = "sys"
        return run

    def run_commandline(self, argv: Any = None) -> Any:
        try:
            return super().run_commandline(argv)
        except TrainingInterrupted as interrupted:
            sys.exit(interrupted.exit_code)


def config_from_run(run: Any) -> dict[str, Any]:
    """The config of a sacred run, refusing keys set on the command line but declared nowhere."""
    added = getattr(getattr(run, "config_modifications", None), "added", ())
    if added:
        raise ConfigError(
            f"unknown config key(s) {sorted(added)}: they are set on the command line but "
            "declared nowhere. Check the spelling (`./main.py print_config` lists the keys)"
        )
    return dict(run.config)


def _terminal() -> Any:
    """A second handle on this process's stderr, made before sacred captures fds 1 and 2.

    Progress bars written to it reach the terminal but never the run's captured output.
    """
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8")
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. a notebook)
        return None


def _unknown_keys_message(err: ConfigAddedError) -> str:
    known = list(err.config or {}) if err.config is not None else list(SACRED_DEFAULTS)
    lines = []
    for key in err.conflicting_configs:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f": did you mean {close[0]!r}?" if close else ""
        lines.append(f"unknown config key {key!r}{hint}")
    return (
        "invalid config:\n  - "
        + "\n  - ".join(lines)
        + "\n(`./main.py print_config` lists every key)"
    )
