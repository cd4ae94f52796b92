"""Tests of mlproject.tensorboard: what TensorBoard's own readers find in the files we write."""

import math
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import (
    STORE_EVERYTHING_SIZE_GUIDANCE,
    EventAccumulator,
)
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import (
    api_pb2,
    backend_context,
    get_experiment,
    list_session_groups,
)
from tensorboard.plugins.hparams import metadata as hparams_metadata

from mlproject import tensorboard
from mlproject.sinks import COMPLETED, FAILED, INTERRUPTED, RunInfo, Scalar
from mlproject.tensorboard import RunWriter, TensorBoardSink, flatten_config, null_writer

SESSION_START = hparams_metadata.SESSION_START_INFO_TAG
SESSION_END = hparams_metadata.SESSION_END_INFO_TAG


def f32(x: float) -> float:
    """What a float becomes once stored as TensorBoard's 32-bit simple_value."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def open_sink(tb_dir, name="run", config=None, state=None) -> TensorBoardSink:
    sink = TensorBoardSink(tb_dir)
    sink.open(RunInfo(name, Path(tb_dir) / "model" / name, config or {}), state)
    return sink


def accumulate(run_dir) -> EventAccumulator:
    """TensorBoard's own reader over one run folder, keeping every event."""
    accumulator = EventAccumulator(str(run_dir), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE)
    accumulator.Reload()
    return accumulator


def tb_scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in accumulate(run_dir).Scalars(tag)]


def event_files(run_dir) -> list[Path]:
    return sorted(p for p in Path(run_dir).iterdir() if "tfevents" in p.name)


def raw_events(run_dir) -> list:
    """Every event record of a run folder as written (no compat layer), files in name order."""
    return [e for p in event_files(run_dir) for e in LegacyEventFileLoader(str(p)).Load()]


def tag_steps(run_dir) -> list[tuple[str, int]]:
    return [(v.tag, e.step) for e in raw_events(run_dir) for v in e.summary.value]


def session_end_status(run_dir) -> int:
    (content,) = [
        v.metadata.plugin_data.content
        for e in raw_events(run_dir)
        for v in e.summary.value
        if v.tag == SESSION_END
    ]
    return hparams_metadata.parse_session_end_info_plugin_data(content).status


# --- write(): scalars as TensorBoard reads them ---

STEPS = [0, 1, 127, 128, 16383, 16384, 2**21, 2**40]
VALUES = [0.0, -1.5, 1 / 3, 1e-30, 3.4e38, -2.5e-7, 123456.789, -0.0]


def test_scalars_read_back_exactly_by_tensorboard(tmp_path):
    long_tag = "x/" + "long" * 50
    wall_times = [1.7e9 + 0.25 * i for i in range(len(STEPS))]
    sink = open_sink(tmp_path)
    for tag in ["train/loss", long_tag]:
        sink.write([Scalar(tag, v, s, w) for v, s, w in zip(VALUES, STEPS, wall_times)])
    sink.write([Scalar("many", i / 7, i, 1.0) for i in range(1000)])  # one batch, as at a flush
    sink.close(COMPLETED)

    expected = [(s, f32(v)) for s, v in zip(STEPS, VALUES)]
    run = tmp_path / "run"
    assert tb_scalars(run, "train/loss") == expected
    assert tb_scalars(run, long_tag) == expected
    assert [e.wall_time for e in accumulate(run).Scalars("train/loss")] == wall_times
    assert tb_scalars(run, "many") == [(i, f32(i / 7)) for i in range(1000)]
    first = raw_events(run)[0]
    assert first.file_version == "brain.Event:2" and not first.HasField("summary")


def test_tags_are_cleaned_as_summary_writer_cleans_them(tmp_path):
    sink = open_sink(tmp_path)
    sink.write([Scalar("/loss (val)", 2.0, 3, 1.0)])
    sink.writer.add_scalar("/loss (val)", 4.0, global_step=5)
    sink.close(COMPLETED)
    assert tb_scalars(tmp_path / "run", "loss__val_") == [(3, 2.0), (5, 4.0)]


def test_non_finite_and_out_of_float32_range_values(tmp_path):
    sink = open_sink(tmp_path)
    values = [math.nan, math.inf, -math.inf, 1e39, -1e39]
    sink.write([Scalar("odd", v, s, 1.0) for s, v in enumerate(values)])
    sink.close(COMPLETED)
    read = [v for _, v in tb_scalars(tmp_path / "run", "odd")]
    assert math.isnan(read[0])
    assert read[1:] == [math.inf, -math.inf, math.inf, -math.inf]


def test_write_reaches_the_file_at_once_and_flush_keeps_it(tmp_path):
    """A live TensorBoard sees each batch as it is written, without waiting for a flush."""
    sink = open_sink(tmp_path)
    sink.write([Scalar("loss", 1.0, 0, 1.0), Scalar("loss", 0.5, 1, 1.0)])
    assert tb_scalars(tmp_path / "run", "loss") == [(0, 1.0), (1, 0.5)]
    sink.flush()
    assert sink.state() == {"n_events": 3}  # the hparams session start and two scalars
    sink.close(COMPLETED)


def test_a_sink_closed_twice_writes_one_session_end_and_refuses_later_events(tmp_path):
    sink = open_sink(tmp_path)
    with pytest.raises(ValueError, match="status must be one of"):
        sink.close("DONE")
    sink.close(COMPLETED)
    sink.close(FAILED)
    with pytest.raises(ValueError, match="after close"):
        sink.write([Scalar("loss", 1.0, 0, 1.0)])
    with pytest.raises(ValueError, match="closed"):
        sink.writer.add_scalar("loss", 1.0, 0)
    assert session_end_status(tmp_path / "run") == api_pb2.STATUS_SUCCESS


def test_writer_exists_once_the_sink_is_open(tmp_path):
    with pytest.raises(RuntimeError, match="open"):
        TensorBoardSink(tmp_path).writer.add_scalar("loss", 1.0, 0)


# --- writer: the whole SummaryWriter API, synchronously into the run's file ---


def use_every_method(writer) -> None:
    """One call of each SummaryWriter method a model may use while training."""
    writer.add_scalar("w/scalar", 0.5, global_step=3)
    writer.add_scalar("w/tensor", torch.tensor(0.25), 4, walltime=1.7e9)
    writer.add_scalars("w/pair", {"train": 1.0, "val": 2.0}, 5)
    writer.add_image("w/image", torch.rand(3, 8, 5), 6)
    writer.add_image("w/hwc", np.zeros((6, 7, 3), dtype=np.uint8), 6, dataformats="HWC")
    writer.add_images("w/images", torch.rand(4, 3, 8, 8), global_step=7)
    writer.add_histogram("w/histogram", torch.randn(1000), 8)
    writer.add_text("w/text", "hello *world*", 9)
    writer.add_pr_curve("w/pr", torch.randint(0, 2, (50,)), torch.rand(50), 10)
    writer.add_custom_scalars({"loss": {"both": ["Multiline", ["w/pair/train", "w/pair/val"]]}})
    writer.add_embedding(torch.randn(10, 4), metadata=list(range(10)), global_step=12)
    with warnings.catch_warnings():  # tensorboardX traces with torch.jit, which torch deprecates
        warnings.simplefilter("ignore", FutureWarning)
        writer.add_graph(torch.nn.Linear(3, 2), torch.zeros(1, 3))
    with pytest.warns(UserWarning, match=r"Put \['lr'\] in the config"):
        writer.add_hparams({"lr": 0.1}, {"hp/metric": 0.75}, global_step=13)


def test_writer_offers_the_summary_writer_api_into_the_run_file(tmp_path):
    threads = threading.active_count()
    sink = open_sink(tmp_path)
    use_every_method(sink.writer)
    assert threading.active_count() == threads  # no writer thread
    sink.writer.close()  # a model's close() only flushes: the run goes on
    sink.write([Scalar("train/loss", 1.0, 15, 1.0)])
    n_events = sink.state()["n_events"]
    sink.close(COMPLETED)

    run = tmp_path / "run"
    assert event_files(run) == list(run.glob("*tfevents*"))  # no sub-folder, one run
    assert [p.name for p in run.iterdir() if p.is_dir()] == ["00012"]  # the projector's files
    tags = accumulate(run).Tags()
    assert sorted(tags["scalars"]) == [
        "hp/metric", "train/loss", "w/pair/train", "w/pair/val", "w/scalar", "w/tensor"
    ]  # fmt: skip
    assert sorted(tags["images"]) == ["w/hwc", "w/image", "w/images"]
    assert tags["histograms"] == ["w/histogram"]
    assert tags["graph"] is True
    assert {"w/text/text_summary", "w/pr", "custom_scalars__config__"} <= set(tags["tensors"])
    accumulator = accumulate(run)
    assert tb_scalars(run, "w/scalar") == [(3, 0.5)]
    assert [(e.step, e.wall_time) for e in accumulator.Scalars("w/tensor")] == [(4, 1.7e9)]
    assert tb_scalars(run, "w/pair/val") == [(5, 2.0)]
    assert tb_scalars(run, "hp/metric") == [(13, 0.75)]
    image = accumulator.Images("w/image")[0]
    assert (image.step, image.width, image.height) == (6, 5, 8)
    assert accumulator.Histograms("w/histogram")[0].histogram_value.num == 1000
    text = accumulator.Tensors("w/text/text_summary")[0]
    assert (text.step, text.tensor_proto.string_val[0]) == (9, b"hello *world*")
    # Every record but the file_version is counted, so a resume can cut at any of them.
    assert len(raw_events(run)) == n_events + 2  # + file_version, + session end


def test_writer_adds_a_matplotlib_figure(tmp_path):
    pyplot = pytest.importorskip("matplotlib.pyplot")
    figure = pyplot.figure(figsize=(2, 1), dpi=50)
    figure.gca().plot([1, 2, 3])
    sink = open_sink(tmp_path)
    sink.writer.add_figure("figure", figure, global_step=3)
    sink.close(COMPLETED)
    image = accumulate(tmp_path / "run").Images("figure")[0]
    assert (image.step, image.width, image.height) == (3, 100, 50)


def test_null_writer_is_the_same_class_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    writer = null_writer()
    assert type(writer) is type(open_sink(tmp_path / "tb").writer) is RunWriter
    use_every_method(writer)
    writer.flush()
    writer.close()
    assert sorted(os.listdir(tmp_path)) == ["tb"]  # nothing beside the sink's own folder


MISTAKES = {
    "scalar is a string": lambda w: w.add_scalar("x", "high", 0),
    "scalar is a vector": lambda w: w.add_scalar("x", torch.ones(3), 0),
    "scalars not a dict": lambda w: w.add_scalars("x", [1.0, 2.0], 0),
    "hparams not a dict": lambda w: w.add_hparams([("lr", 0.1)], {"m": 1.0}),
    "image of 5 axes": lambda w: w.add_image("x", torch.rand(1, 1, 3, 4, 4), 0),
    "images not a batch": lambda w: w.add_images("x", torch.rand(3, 4), 0),
    "histogram of strings": lambda w: w.add_histogram("x", ["a", "b"], 0),
    "figure not a figure": lambda w: w.add_figure("x", torch.rand(3, 4, 4), 0),
    "pr curve of strings": lambda w: w.add_pr_curve("x", ["a"], ["b"], 0),
    "embedding of 3 axes": lambda w: w.add_embedding(torch.rand(2, 3, 4)),
    "unknown keyword": lambda w: w.add_scalar("x", 1.0, step=0),
}


@pytest.mark.parametrize("mistake", list(MISTAKES), ids=list(MISTAKES))
def test_a_mistake_fails_alike_with_tensorboard_on_and_off(tmp_path, monkeypatch, mistake):
    monkeypatch.chdir(tmp_path)
    failures = []
    for writer in (open_sink(tmp_path / "tb").writer, null_writer()):
        with pytest.raises(Exception) as failure:
            MISTAKES[mistake](writer)
        failures.append(failure.type)
    assert failures[0] is failures[1]


# --- resume: events after the checkpoint are dropped, each (tag, step) stays once ---


def value(tag: str, step: int, attempt: int) -> float:
    return step * 10.0 + attempt + (0.5 if tag == "b" else 0.0)


def attempt(tb_dir, number, steps, state, checkpoint_after=None, closes=True):
    """One process of a run: logs a and b (as the loop does) and a text (as a model does) per
    step; returns the sink's state at the checkpoint taken after ``checkpoint_after``."""
    sink = open_sink(tb_dir, config={"lr": 0.1}, state=state)
    checkpoint = None
    for step in steps:
        sink.write([Scalar(tag, value(tag, step, number), step, 1.7e9 + step) for tag in "ab"])
        sink.writer.add_text("note", f"attempt {number}", step)
        if step == checkpoint_after:
            sink.flush()
            checkpoint = sink.state()
    if closes:
        sink.close(COMPLETED)
    return checkpoint


def chop_last_record(run_dir, n_bytes: int) -> None:
    """A process killed mid-write leaves the end of its last record unwritten."""
    newest = event_files(run_dir)[-1]
    os.truncate(newest, newest.stat().st_size - n_bytes)


@pytest.mark.parametrize("resume_from", ["first checkpoint", "second checkpoint", "none"])
@pytest.mark.parametrize("torn", [0, 1, 12, 30])
def test_a_resumed_run_reads_like_an_uninterrupted_one(tmp_path, resume_from, torn):
    tb = tmp_path / "tb"
    # Attempt 1 checkpoints after step 2 and dies after step 5; attempt 2 resumes there,
    # checkpoints after step 5 and dies after step 7 (mid-write when torn); attempt 3 resumes
    # from one of the checkpoints (or from nothing: the first attempt's never reached disk).
    first = attempt(tb, 1, range(0, 6), None, checkpoint_after=2, closes=False)
    second = attempt(tb, 2, range(3, 8), first, checkpoint_after=5, closes=False)
    if torn:
        chop_last_record(tb / "run", torn)
    state, owners = {
        "first checkpoint": (first, {**dict.fromkeys(range(3), 1)}),
        "second checkpoint": (second, {**dict.fromkeys(range(3), 1), 3: 2, 4: 2, 5: 2}),
        "none": (None, {}),
    }[resume_from]
    start = max(owners, default=-1) + 1
    attempt(tb, 3, range(start, 10), state)

    run = tb / "run"
    assert Counter(tag_steps(run)) == Counter(
        [(SESSION_START, 0)]
        + [(tag, step) for step in range(10) for tag in ("a", "b", "note/text_summary")]
        + [(SESSION_END, 0)]
    )  # each once
    for tag in "ab":
        expected = [(s, f32(value(tag, s, owners.get(s, 3)))) for s in range(10)]
        assert tb_scalars(run, tag) == expected
    notes = [t.tensor_proto.string_val[0] for t in accumulate(run).Tensors("note/text_summary")]
    assert notes == [f"attempt {owners.get(s, 3)}".encode() for s in range(10)]
    assert session_end_status(run) == api_pb2.STATUS_SUCCESS

    # The same steps and values written in one go read back the same.
    straight = tmp_path / "straight"
    sink = open_sink(straight, config={"lr": 0.1})
    for step in range(10):
        sink.write([Scalar(t, value(t, step, owners.get(step, 3)), step, 1.0) for t in "ab"])
    sink.close(COMPLETED)
    for tag in "ab":
        assert tb_scalars(run, tag) == tb_scalars(straight / "run", tag)


def test_resume_keeps_files_before_the_checkpoint_untouched(tmp_path):
    first = attempt(tmp_path, 1, range(3), None, checkpoint_after=2)  # closed after it
    (file_one,) = event_files(tmp_path / "run")
    before = file_one.read_bytes()
    attempt(tmp_path, 2, range(3, 5), first)
    assert event_files(tmp_path / "run")[0] == file_one
    assert len(file_one.read_bytes()) < len(before)  # its session end was after the checkpoint
    assert before.startswith(file_one.read_bytes())


def test_a_corrupt_record_ends_the_file_as_for_tensorboard(tmp_path):
    sink = open_sink(tmp_path)
    sink.write([Scalar("loss", float(s), s, 1.0) for s in range(5)])
    sink.flush()
    checkpoint = sink.state()
    (path,) = event_files(tmp_path / "run")
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF  # in the last scalar's record: its checksum no longer matches
    path.write_bytes(bytes(data))
    assert tb_scalars(tmp_path / "run", "loss") == [(s, float(s)) for s in range(4)]
    with pytest.warns(UserWarning, match="holds 5 events, not the checkpoint's 6"):
        resumed = open_sink(tmp_path, state=checkpoint)
    assert resumed.state() == {"n_events": 5}
    resumed.write([Scalar("loss", 4.5, 4, 1.0)])
    resumed.close(COMPLETED)
    assert tb_scalars(tmp_path / "run", "loss") == [(s, float(s)) for s in range(4)] + [(4, 4.5)]


@pytest.mark.parametrize("clock", ["real", "standing still, then stepping back"])
def test_event_file_names_are_unique_and_sort_in_creation_order(tmp_path, monkeypatch, clock):
    if clock != "real":
        stamps = iter([1_700_000_000_000_000] * 3 + [1_600_000_000_000_000])
        monkeypatch.setattr(tensorboard.time, "time_ns", lambda: next(stamps) * 1000)
    state = None
    created = []
    for _ in range(4):
        sink = open_sink(tmp_path, state=state)
        sink.write([Scalar("loss", 1.0, len(created), 1.0)])  # a file holding no kept event goes
        sink.flush()
        state = sink.state()
        created.append(event_files(tmp_path / "run")[-1].name)
        sink.close(INTERRUPTED)
    assert [p.name for p in event_files(tmp_path / "run")] == created
    assert len(set(created)) == 4
    host_pid = re.escape(f".{socket.gethostname()}.{os.getpid()}") + "$"
    for name in created:
        assert re.match(r"events\.out\.tfevents\.\d{16}" + host_pid, name), name


# --- the HParams tab ---


def hparams_plugin(logdir):
    """The hparams plugin's backend over a logdir, as TensorBoard serves it."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    tb_context = base_plugin.TBContext(
        logdir=str(logdir), multiplexer=multiplexer, data_provider=provider
    )
    return backend_context.Context(tb_context), context.RequestContext()


RUNS = {  # name: (config, status, best validation loss, test accuracy)
    "mlp": ({"lr": 0.1, "net": {"hidden": 32, "act": "relu"}}, COMPLETED, 0.25, 0.9),
    "cnn": ({"lr": 0.2, "seed": None, "net": {"channels": [8, 16]}}, FAILED, 0.5, 0.8),
    "rnn": ({"optim": {"betas": [0.9, 0.99], "nesterov": True}}, INTERRUPTED, 0.75, 0.7),
}


def test_the_hparams_tab_shows_every_runs_keys_metrics_and_status(tmp_path):
    for name, (config, status, best, accuracy) in RUNS.items():
        sink = open_sink(tmp_path, name, config)
        sink.write([Scalar("train/loss", 1.0, s, 1.0) for s in range(3)])
        sink.write([Scalar("validation/best_loss", best, 2, 1.0)])
        sink.write([Scalar("test/accuracy", accuracy, 2, 1.0)])
        sink.close(status)

    backend, request_context = hparams_plugin(tmp_path)
    experiment = get_experiment.Handler(
        request_context, backend, "", api_pb2.GetExperimentRequest()
    ).run()
    assert {info.name: info.type for info in experiment.hparam_infos} == {
        "lr": api_pb2.DATA_TYPE_FLOAT64,
        "net.hidden": api_pb2.DATA_TYPE_FLOAT64,
        "net.act": api_pb2.DATA_TYPE_STRING,
        "net.channels": api_pb2.DATA_TYPE_STRING,
        "seed": api_pb2.DATA_TYPE_STRING,
        "optim.betas": api_pb2.DATA_TYPE_STRING,
        "optim.nesterov": api_pb2.DATA_TYPE_BOOL,
    }  # the union of the three runs' keys
    assert sorted(info.name.tag for info in experiment.metric_infos) == [
        "test/accuracy", "train/loss", "validation/best_loss"
    ]  # fmt: skip

    request = api_pb2.ListSessionGroupsRequest(
        allowed_statuses=[
            api_pb2.STATUS_UNKNOWN,
            api_pb2.STATUS_SUCCESS,
            api_pb2.STATUS_FAILURE,
            api_pb2.STATUS_RUNNING,
        ],
        slice_size=100,
    )
    groups = list_session_groups.Handler(request_context, backend, "", request).run()
    rows = {group.name: group for group in groups.session_groups}
    assert sorted(rows) == sorted(RUNS)
    statuses = {
        COMPLETED: api_pb2.STATUS_SUCCESS,
        FAILED: api_pb2.STATUS_FAILURE,
        INTERRUPTED: api_pb2.STATUS_UNKNOWN,
    }
    for name, (config, status, best, accuracy) in RUNS.items():
        row = rows[name]
        hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in row.hparams.items()}
        assert hparams == {
            k: float(v) if type(v) is int else v for k, v in flatten_config(config).items()
        }
        metrics = {m.name.tag: m.value for m in row.metric_values}
        assert metrics == {
            "train/loss": 1.0,
            "validation/best_loss": best,
            "test/accuracy": f32(accuracy),
        }
        (session,) = row.sessions
        assert session.status == statuses[status]
        assert session.end_time_secs > 0


def test_trained_runs_are_rows_of_the_hparams_tab_with_their_keys_and_results(
    tmp_path, project_class, base_config
):
    tb, summaries = tmp_path / "tb", {}
    cls = project_class()
    for seed, prefix in ((1, "one"), (2, "two")):
        config = {**base_config, "seed": seed, "prefix": prefix, "tensorboard_dir": str(tb)}
        summary = cls(config).train()
        summaries[Path(summary["run_dir"]).name] = (seed, summary)

    backend, request_context = hparams_plugin(tb)
    experiment = get_experiment.Handler(
        request_context, backend, "", api_pb2.GetExperimentRequest()
    ).run()
    keys = {info.name for info in experiment.hparam_infos}
    assert {"seed", "prefix", "n_epochs", "precision"} <= keys
    assert {"validation/best_loss", "test/loss"} <= {m.name.tag for m in experiment.metric_infos}
    request = api_pb2.ListSessionGroupsRequest(
        allowed_statuses=[api_pb2.STATUS_SUCCESS], slice_size=100
    )
    groups = list_session_groups.Handler(request_context, backend, "", request).run()
    rows = {group.name: group for group in groups.session_groups}
    assert sorted(rows) == sorted(summaries)  # one row per run, both completed
    for name, (seed, summary) in summaries.items():
        hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in rows[name].hparams.items()}
        assert hparams["seed"] == seed and hparams["prefix"] == name.split("_")[0]
        metrics = {m.name.tag: m.value for m in rows[name].metric_values}
        assert metrics["validation/best_loss"] == f32(summary["best"]["loss"])
        assert metrics["test/loss"] == f32(summary["test"]["loss"])


def test_a_resumed_run_keeps_its_session_start_and_ends_once(tmp_path):
    sink = open_sink(tmp_path, config={"lr": 0.1})
    sink.flush()
    checkpoint = sink.state()
    sink.close(INTERRUPTED)
    resumed = open_sink(tmp_path, config={"lr": 0.1}, state=checkpoint)
    resumed.close(COMPLETED)
    assert [t for t, _ in tag_steps(tmp_path / "run")] == [SESSION_START, SESSION_END]
    assert session_end_status(tmp_path / "run") == api_pb2.STATUS_SUCCESS


@pytest.mark.parametrize(
    ("config", "flat"),
    [
        ({}, {}),
        (
            {"lr": 0.1, "n": 3, "on": True, "name": "x"},
            {"lr": 0.1, "n": 3, "on": True, "name": "x"},
        ),
        (
            {"optim": {"lr": 0.1, "sched": {"gamma": 0.5}}},
            {"optim.lr": 0.1, "optim.sched.gamma": 0.5},
        ),
        (
            {"layers": [64, 32], "seed": None, "extra": {}},
            {"layers": "[64, 32]", "seed": "None", "extra": "{}"},
        ),
    ],
)
def test_flatten_config(config, flat):
    assert flatten_config(config) == flat


def test_import_mlproject_does_not_import_tensorboardx():
    code = "import sys, mlproject; print('tensorboardX' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
