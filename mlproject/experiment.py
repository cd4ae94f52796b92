"""Experiment: the sacred glue, and the only module that imports sacred.

``mlproject.Experiment`` is a ``sacred.Experiment`` that declares the framework's defaults (so
``./main.py with n_global_iterations=100 tensorboard_dir=tb`` works for keys the user never
wrote), refuses every unknown or misspelled key with one ``ConfigError`` before anything is
written, stores a run's summary where every stock observer can keep it, keeps progress bars
out of the captured output, and exits with 128 + the signal's number (143 SIGTERM, 130 SIGINT,
129 SIGHUP) when a stop signal ended the run, during start-up as during training.
sacred itself is imported through a small compatibility layer for Python 3.14 and
setuptools>=81 (see ``_sacred_compat``).
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import functools
import importlib.metadata
import importlib.resources
import importlib.util
import os
import pkgutil
import re
import sys
import types
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from mlproject.config import DEFAULTS, config_error, validate_config
from mlproject.errors import ConfigError, MLProjectError, TrainingInterrupted
from mlproject.progress import show_progress_on
from mlproject.signals import StopSignals

_MISSING = object()


def _find_loader(fullname: str) -> Any:
    """``pkgutil.find_loader`` as Python 3.13 still had it: the module's loader, or None."""
    try:
        spec = importlib.util.find_spec(fullname)
    except (ImportError, AttributeError, TypeError, ValueError) as err:
        raise ImportError(f"error while finding loader for {fullname!r}: {err}") from err
    return None if spec is None else spec.loader


class _Distribution:
    """The parts of a ``pkg_resources.Distribution`` that sacred reads."""

    def __init__(self, name: str, version: str, top_level: list[str]):
        self.project_name = name
        self.key = re.sub(r"[^A-Za-z0-9.]+", "-", name).lower()
        self.version = version
        self._top_level = top_level

    def _get_metadata(self, name: str) -> list[str]:
        if name != "top_level.txt":
            raise KeyError(f"mlproject's pkg_resources stand-in has no {name!r}")
        return self._top_level


class _WorkingSet:
    """``pkg_resources.working_set``: the installed distributions, iterable and ``by_key``."""

    @functools.cached_property
    def by_key(self) -> dict[str, _Distribution]:
        # A module's distribution comes from top_level.txt or, where a wheel has none (torch,
        # numpy), from its file list: sacred finds torch's version then.
        modules: dict[str, list[str]] = {}
        for module, names in importlib.metadata.packages_distributions().items():
            for name in names:
                modules.setdefault(name, []).append(module)
        found: dict[str, _Distribution] = {}
        for dist in importlib.metadata.distributions():
            name = dist.metadata["Name"]
            if name:
                entry = _Distribution(name, dist.version, sorted(modules.get(name, ())))
                found.setdefault(entry.key, entry)  # the first on sys.path wins, as there
        return found

    def __iter__(self) -> Iterator[_Distribution]:
        return iter(list(self.by_key.values()))


def _pkg_resources_stand_in() -> types.ModuleType:
    """What sacred 0.8.7 uses of ``pkg_resources``, built on ``importlib``'s metadata and files."""
    module = types.ModuleType("pkg_resources", "mlproject's stand-in, used by sacred only")
    module.resource_filename = lambda package, name: str(importlib.resources.files(package) / name)
    module.working_set = _WorkingSet()
    return module


@contextlib.contextmanager
def _sacred_compat() -> Iterator[None]:
    """Let sacred 0.8.7 import on Python 3.10-3.14, with or without setuptools' pkg_resources.

    While sacred imports, ``sacred.optional`` calls ``pkgutil.find_loader`` (removed in Python
    3.14), and ``sacred.dependencies`` and ``sacred.observers.mongo`` import ``pkg_resources``
    (deprecated, slow to import, and gone from setuptools>=81). sacred gets a ``find_loader``
    where Python has none, and always a small ``pkg_resources`` stand-in, so that it records
    the same dependencies whichever setuptools is installed. Both last only for the import:
    afterwards ``pkgutil`` and ``sys.modules`` are as they were (sacred keeps its reference to
    the stand-in module), so no other library sees them.
    """
    added_find_loader = not hasattr(pkgutil, "find_loader")
    if added_find_loader:
        pkgutil.find_loader = _find_loader
    previous = sys.modules.get("pkg_resources", _MISSING)
    sys.modules["pkg_resources"] = _pkg_resources_stand_in()
    try:
        yield
    finally:
        if previous is _MISSING:
            del sys.modules["pkg_resources"]
        else:
            sys.modules["pkg_resources"] = previous
        if added_find_loader:
            del pkgutil.find_loader


with _sacred_compat():
    import sacred
    from sacred.config import ConfigDict
    from sacred.initialize import create_run
    from sacred.utils import (
        ConfigAddedError,
        apply_backspaces_and_linefeeds,
        get_by_dotted_path,
        iterate_flattened,
        join_paths,
    )

# sacred draws and records the seed itself; declaring it would stop that.
SACRED_DEFAULTS = {k: v for k, v in DEFAULTS.items() if k != "seed"}
# Runs whose keys Experiment._create_run has checked (config_from_run need not check again).
_CHECKED_RUNS: weakref.WeakSet = weakref.WeakSet()


def _validate(config: dict[str, Any], command_name: str, logger: Any) -> dict[str, Any]:
    """Config hook: every framework key checked before the run exists (no observer has written)."""
    validate_config(config)
    return {}


def summary_result(summary: Mapping[str, Any]) -> float | None:
    """The one number a training summary is judged by: the best value of its benchmark metric.

    That is the best validation value (the selection metric of the run), else the test value;
    None when the summary has neither.

    Example:
        >>> summary_result({"best": {"step": 30, "accuracy": 0.9}, "test": {"accuracy": 0.8}})
        0.9
    """
    best = summary.get("best")
    best = best if isinstance(best, Mapping) else {}
    name = summary.get("benchmark_metric")
    if name is None:
        names = [key for key in best if key != "step"]
        name = names[0] if len(names) == 1 else None
    test = summary.get("test")
    for metrics in (best, test if isinstance(test, Mapping) else {}):
        value = metrics.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _store_summary(_run: Any) -> None:
    """Post-run hook: the run's result becomes one number, the summary goes to ``info``.

    SqlObserver's result column holds a float (a dict fails there and left the row RUNNING),
    and a hyper-parameter search optimises a number; ``_run.info["summary"]`` keeps the whole
    summary for every observer (info.json, the Mongo document, the SQL info column).
    """
    result = _run.result
    if result is None or (isinstance(result, int | float) and not isinstance(result, bool)):
        return
    if isinstance(result, Mapping):
        _run.info["summary"] = dict(result)
        _run.result = summary_result(result)
        return
    try:
        _run.result = float(result)  # numpy scalars and 0-d tensors
    except (TypeError, ValueError):
        _run.info["result"] = result
        _run.result = None


class Experiment(sacred.Experiment):
    """A sacred Experiment whose config starts from mlproject's defaults.

    It takes sacred's arguments (an unnamed ``Experiment()`` is named after its main file) and
    records what plain sacred records: the user's main file, its sources and dependencies. A
    key that no config scope declares raises ``ConfigError`` before the run starts. The run's
    result is ``summary_result(summary)``; the summary is in ``_run.info["summary"]``.

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

    # No __init__: sacred.Experiment.__init__ reads its caller's frame for the main file, the
    # sources, the dependencies, the docstring and the default name, and that caller must be
    # the user's program. The framework's parts are added when the first run is created.
    _prepared = False
    _on_command_line = False

    def _prepare(self) -> None:
        """Add the framework's parts once, before the first run is built (see the class note)."""
        if self._prepared:
            return
        self._prepared = True
        self.configurations.insert(0, ConfigDict(dict(SACRED_DEFAULTS)))  # the user's win
        self.config_hooks.insert(0, _validate)
        self.post_run_hook(_store_summary)  # after the user's hooks: they see the summary
        if self.captured_out_filter is None:
            self.captured_out_filter = apply_backspaces_and_linefeeds
        show_progress_on(_terminal())

    def _create_run(
        self,
        command_name: str | None = None,
        config_updates: dict[str, Any] | None = None,
        named_configs: Any = (),
        info: dict[str, Any] | None = None,
        meta_info: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> Any:
        self._prepare()
        forced = bool((options or {}).get("--force"))
        try:
            run = super()._create_run(
                command_name, config_updates, named_configs, info, meta_info, options
            )
        except (ConfigAddedError, ConfigError) as err:
            # sacred stopped at the first unknown key, or the _validate hook at the framework's
            # problems; either way before any observer exists. One error names them all.
            framework = err if isinstance(err, ConfigError) else None
            if framework is not None and forced:
                raise
            command = command_name or self.default_command
            raise self._config_error(command, config_updates, named_configs, framework) from None
        # sacred only warns about a key added under a captured argument (optim.lrr where a
        # captured function takes optim); that is a typo too. -f/--force lets both through.
        unknown = [] if run.force else _unknown_keys(self, run)
        if unknown:
            self.current_run = None
            raise ConfigError(_config_message(run.config, unknown))
        _CHECKED_RUNS.add(run)
        if int(os.environ.get("RANK", "0")) > 0:
            run.observers = []  # under torchrun one process, rank 0, records the run
        if run.capture_mode is None:
            # sacred's default 'fd' capture tees through subprocesses and can lose the last
            # lines of output (seen here); 'sys' is reliable. --capture=fd still works.
            run.capture_mode = "sys"
        return run

    def _config_error(
        self,
        command: str,
        config_updates: dict[str, Any] | None,
        named_configs: Any,
        framework: ConfigError | None,
    ) -> ConfigError:
        """Build the config once more, without sacred's key check or the _validate hook and
        with no observer, to name every unknown key beside the framework's problems."""
        hooks = self.config_hooks
        self.config_hooks = [hook for hook in hooks if hook is not _validate]
        try:
            checked = create_run(self, command, config_updates, named_configs, force=True)
        except Exception:
            if framework is None:
                raise
            return framework  # e.g. sacred cannot seed from seed='x': the hook said why
        finally:
            self.config_hooks = hooks
        unknown = _unknown_keys(self, checked)
        if framework is None or not unknown:
            return framework or ConfigError(_config_message(checked.config, unknown))
        # A typo of a framework key is in both lists: keep validate_config's line for it.
        problems = list(framework.problems) or [str(framework)]
        unknown = [key for key in unknown if not any(repr(key) in p for p in problems)]
        return ConfigError(_config_message(checked.config, unknown, problems))

    def run(
        self,
        command_name: str | None = None,
        config_updates: dict[str, Any] | None = None,
        named_configs: Any = (),
        info: dict[str, Any] | None = None,
        meta_info: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> Any:
        """Run the main function (or a command) like sacred; a bad config raises ConfigError.

        A stop signal (SIGTERM, SIGINT, SIGHUP) during start-up, before training has a step
        to finish, ends the run at once as INTERRUPTED; the training loop defers it to the next
        step boundary.
        """
        try:
            with StopSignals().immediate():
                return super().run(
                    command_name, config_updates, named_configs, info, meta_info, options
                )
        except TrainingInterrupted as stop:
            stop.call_chain()  # now that sacred recorded the run INTERRUPTED (e.g. submitit)
            raise
        except MLProjectError as err:
            if self._on_command_line and not (options or {}).get("--debug"):
                # sacred would print a traceback for an error that says what is wrong and what
                # to do (a bad config, missing data, a full disk): one message on stderr and
                # exit status 1 instead. sacred's record keeps the traceback (fail_trace), and
                # --debug still shows it.
                sys.exit(f"{type(err).__name__}: {err}")
            raise

    def run_commandline(self, argv: Any = None) -> Any:
        """sacred's command line; exits 1 with one message on an error mlproject raises on
        purpose (a bad config, missing data, a full disk), 143/130 after SIGTERM/SIGINT."""
        self._on_command_line = True
        try:
            return super().run_commandline(argv)
        except TrainingInterrupted as interrupted:
            sys.exit(interrupted.exit_code)
        finally:
            self._on_command_line = False


def config_from_run(run: Any) -> dict[str, Any]:
    """The config of a sacred run (``_run``), for ``MLProject.from_run``.

    Framework keys are always valid. A run of ``mlproject.Experiment`` had its keys checked
    before it started, and ``-f``/``--force`` waives the check; for any other run (a plain
    ``sacred.Experiment``), keys set but declared nowhere raise ``ConfigError``, and the run's
    result becomes one number with the summary in ``info`` as with ``mlproject.Experiment``.

    Example:
        >>> @ex.automain
        ... def main(_run):
        ...     return MyProject(config_from_run(_run), run=_run).train()
    """
    config = dict(run.config)
    hooks = getattr(run, "post_run_hooks", None)
    if isinstance(hooks, list) and not any(
        getattr(hook, "__wrapped__", hook) is _store_summary for hook in hooks
    ):  # a plain sacred.Experiment's run: its result, too, must fit every observer
        hooks.append(functools.partial(_store_summary, run))
    if run in _CHECKED_RUNS or getattr(run, "force", False):
        return config
    signature = getattr(getattr(run, "main_function", None), "signature", None)
    arguments = set(getattr(signature, "arguments", ()))
    added = getattr(getattr(run, "config_modifications", None), "added", ())
    unknown = sorted(key for key in added if key not in DEFAULTS and key not in arguments)
    if unknown:
        raise ConfigError(_config_message(config, unknown))
    return config


def _unknown_keys(experiment: Experiment, run: Any) -> list[str]:
    """Keys the run sets that no config scope declares and no captured function takes."""
    captured = set()
    for ingredient, _ in list(experiment.traverse_ingredients()):
        path = "" if ingredient is experiment else ingredient.path
        for function in ingredient.captured_functions:
            for argument in function.signature.arguments:
                captured.add(join_paths(path, function.prefix, argument))
    added = run.config_modifications.added
    return sorted(key for key in added if key not in DEFAULTS and key not in captured)


def _config_message(config: Mapping[str, Any], unknown: list[str], also: list[str] = ()) -> str:
    """One message: a line per unknown key (its value, the closest declared key), then ``also``."""
    taken = tuple(f"{key}." for key in unknown)
    known = {key for key, _ in iterate_flattened(config)} | set(DEFAULTS)
    known = sorted(k for k in known if k not in unknown and not k.startswith(taken))
    lines = []
    for key in unknown:
        value = get_by_dotted_path(config, key)
        close = _closest(key, known)
        hint = "no declared key is close to it"
        if close:
            hint = f"did you mean {close!r}? Use {close}={value!r}"
        lines.append(f"unknown key {key!r} (value {value!r}): {hint}")
    footer = (
        "\nOnly keys that a config scope declares can be set (`./main.py print_config` lists "
        "them; -f/--force accepts new ones)"
        if unknown
        else ""
    )
    return str(config_error([*lines, *also], footer))


def _closest(key: str, known: list[str]) -> str | None:
    """The declared key ``key`` was most likely meant to be: by its path, else by its last part
    (``lrr`` -> ``optim.lr``)."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return close[0]
    by_name = {}
    for candidate in reversed(known):  # the first in sorted order wins a shared last part
        by_name[candidate.rpartition(".")[2]] = candidate
    close = difflib.get_close_matches(key.rpartition(".")[2], by_name, n=1, cutoff=0.6)
    return by_name[close[0]] if close else None


@functools.cache
def _terminal() -> Any:
    """A second handle on this process's stderr, made before sacred captures fds 1 and 2.

    Progress bars written to it reach the terminal but never the run's captured output.
    """
    try:
        stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8")
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. a notebook)
        return None
    atexit.register(stream.close)  # one per process, open until exit
    return stream
