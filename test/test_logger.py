"""Logger: scalars reach every sink only when flushed, as floats, with the NaN policy applied."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mlproject.errors import NonFiniteLossError
from mlproject.logger import Logger
from mlproject.nonfinite import NonFinitePolicy
from mlproject.sinks import COMPLETED, RunInfo, SacredSink, Scalar, Sink


class ListSink(Sink):
    """Keeps every call it receives."""

    name = "list"

    def __init__(self):
        self.calls, self.scalars = [], []

    def open(self, run, state):
        self.calls.append(("open", run.name, state))

    def write(self, scalars):
        assert all(type(s.value) is float for s in scalars)
        self.scalars.extend(scalars)

    def flush(self):
        self.calls.append(("flush", len(self.scalars)))

    def state(self):
        return {"n": len(self.scalars)}

    def close(self, status):
        self.calls.append(("close", status))


class FakeRun:
    def __init__(self):
        self.scalars, self.info = [], {}

    def log_scalar(self, name, value, step):
        self.scalars.append((name, value, step))


RUN = RunInfo("r", Path("unused"), {})


def test_scalars_reach_every_sink_only_when_flushed():
    sink, run = ListSink(), FakeRun()
    logger = Logger([sink, SacredSink(run)])
    logger.open(RUN, {"list": {"n": 7}})
    logger.log("train", {"loss": torch.tensor(0.5), "lr": 0.1}, step=1)
    logger.log("train", {"loss": torch.tensor(0.25, dtype=torch.float64)}, step=2)
    assert sink.scalars == [] and run.scalars == []
    logger.flush()
    assert [(s.tag, s.value, s.step) for s in sink.scalars] == [
        ("train/loss", 0.5, 1), ("train/lr", 0.1, 1), ("train/loss", 0.25, 2),
    ]  # fmt: skip
    assert run.scalars == [("train/loss", 0.5, 1), ("train/lr", 0.1, 1), ("train/loss", 0.25, 2)]
    assert logger.state() == {"list": {"n": 3}, "sacred": {}}
    logger.close(COMPLETED)
    assert sink.calls == [("open", "r", {"n": 7}), ("flush", 3), ("flush", 3), ("close", COMPLETED)]


def test_flush_names_the_first_step_with_a_non_finite_loss_after_the_sinks_got_it():
    sink = ListSink()
    logger = Logger([sink], NonFinitePolicy("error"))
    logger.open(RUN, {})
    for step, loss in enumerate([1.0, 0.5, float("nan"), float("inf")], start=1):
        logger.log("train", {"d_loss": torch.tensor(loss), "ratio": float("inf")}, step)
    with pytest.raises(NonFiniteLossError, match="train/d_loss is nan at global step 3"):
        logger.flush()
    assert len(sink.scalars) == 8  # the record shows the NaN


def test_skip_policy_lets_non_finite_losses_through():
    logger = Logger([ListSink()], NonFinitePolicy("skip"))
    logger.open(RUN, {})
    logger.log("train", {"loss": float("nan")}, 1)
    logger.flush()


def test_take_means_averages_what_was_flushed_since_the_last_call():
    logger = Logger([])
    for step, loss in enumerate([1.0, 2.0, 6.0], start=1):
        logger.log("train", {"loss": torch.tensor(loss)}, step)
    logger.flush()
    assert logger.take_means() == {"train/loss": 3.0}
    assert logger.take_means() == {}


def test_sinks_need_distinct_names():
    with pytest.raises(ValueError, match="two sinks share the name 'list'"):
        Logger([ListSink(), ListSink()])


def test_a_failing_sink_close_still_closes_the_others():
    class Broken(ListSink):
        name = "broken"

        def close(self, status):
            raise OSError("disk gone")

    other = ListSink()
    logger = Logger([Broken(), other])
    with pytest.raises(OSError, match="disk gone"):
        logger.close("FAILED")
    assert other.calls[-1] == ("close", "FAILED")


def test_scalar_is_a_plain_tuple():
    assert tuple(Scalar("a/b", 1.0, 2, 3.0)) == ("a/b", 1.0, 2, 3.0)


def test_a_full_disk_under_tensorboard_fails_the_run_like_any_other_write(
    tmp_path, small_disk, monkeypatch
):
    import contextlib
    import errno
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "scripts"))
    from resumable import Resumable, in_process_config

    from mlproject import tensorboard
    from mlproject.errors import DiskFullError

    disk = small_disk(12)
    real = disk is not None
    if not real:  # not root: the sink's writes fail as on a full disk
        disk = tmp_path / "tb"

        def full(self, scalars):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(tensorboard.TensorBoardSink, "write", full)
    config = in_process_config(
        tmp_path / "m", n_epochs=20, batch_size=1, tensorboard_dir=str(disk), save_iterations=40
    )
    with contextlib.ExitStack() as stack:
        if real:  # closing the event file (its session-end record) fails too, and says so
            stack.enter_context(pytest.warns(UserWarning, match="could not close the run's"))
        with pytest.raises(DiskFullError, match="no space left for the tensorboard sink's"):
            Resumable(config).train()
    (run_dir,) = (tmp_path / "m").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def documented_csv_sink() -> type:
    """The CsvSink of mlproject.sinks' docstring, executed as written."""
    import textwrap
    from pathlib import Path

    import mlproject.sinks

    doc = mlproject.sinks.__doc__
    code = textwrap.dedent(doc[doc.index("    class CsvSink") :])
    scope = {"Sink": Sink, "Path": Path}
    exec(code, scope)
    return scope["CsvSink"]


def test_the_documented_csv_sink_keeps_each_step_once_across_a_resume(tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "scripts"))
    from resumable import Resumable, in_process_config

    csv_path = tmp_path / "scalars.csv"
    sink_class = documented_csv_sink()

    class WithCsv(Resumable):
        @staticmethod
        def get_sinks(config):
            return [sink_class(csv_path)]

    config = in_process_config(tmp_path / "m", n_epochs=2, save_iterations=3, resume="auto")
    monkeypatch.setenv("FAULT_AT", "8")
    monkeypatch.setenv("FAULT_SIGNAL", "0")
    with pytest.raises(RuntimeError):
        WithCsv(config).train()  # dies in step 8, after rows up to its flush were written
    monkeypatch.delenv("FAULT_AT")
    WithCsv(config).train()
    rows = [line.split(",") for line in csv_path.read_text().splitlines()]
    keys = [(tag, int(step)) for tag, step, _ in rows]
    assert len(keys) == len(set(keys))  # rows after the checkpoint were dropped, then logged again
    assert [step for tag, step in keys if tag == "train/loss"] == list(range(1, 11))
