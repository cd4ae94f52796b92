"""Tests of mlproject.tensorboard: what TensorBoard reads back, buffering, and run truncation."""

import math
import os
import random
import re
import socket
import struct

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import (
    STORE_EVERYTHING_SIZE_GUIDANCE,
    EventAccumulator,
)
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboardX.record_writer import masked_crc32c

from mlproject import tensorboard
from mlproject.tensorboard import (
    EventWriter,
    event_files,
    read_events,
    read_scalars,
    truncate_run,
)


def f32(x: float) -> float:
    """What a float becomes once stored as TensorBoard's 32-bit simple_value."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def accumulate(logdir) -> EventAccumulator:
    """TensorBoard's own reader over the run folder, keeping every event."""
    accumulator = EventAccumulator(str(logdir), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE)
    accumulator.Reload()
    return accumulator


def tb_scalars(logdir, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in accumulate(logdir).Scalars(tag)]


STEPS = [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**40]  # every step-encoding width
VALUES = [0.0, -1.5, 1 / 3, 1e-30, 3.4e38, -2.5e-7, 123456.789, 1.0, -0.0]


@pytest.mark.parametrize("batched", [False, True])
def test_scalars_read_back_exactly_by_tensorboard_and_read_scalars(tmp_path, batched):
    long_tag = "x/" + "long" * 50  # a tag length that needs a two-byte varint
    wall_times = [1.7e9 + 0.25 * i for i in range(len(STEPS))]
    with EventWriter(tmp_path) as writer:
        for tag in ["train/loss", long_tag]:
            if batched:
                n = len(STEPS)
                writer.add_scalars_batch([tag] * n, VALUES, STEPS, wall_times)
            else:
                for step, value, wall_time in zip(STEPS, VALUES, wall_times):
                    writer.add_scalar(tag, value, step, wall_time)
        # Enough events in one flush for the batched checksum path to run.
        for step in range(300):
            writer.add_scalar("many", step / 7, step)

    expected = [(s, f32(v)) for s, v in zip(STEPS, VALUES)]
    for tag in ["train/loss", long_tag]:
        assert tb_scalars(tmp_path, tag) == expected
        assert read_scalars(tmp_path)[tag] == expected
    assert [e.wall_time for e in accumulate(tmp_path).Scalars("train/loss")] == wall_times
    many = [(s, f32(s / 7)) for s in range(300)]
    assert tb_scalars(tmp_path, "many") == many
    assert read_scalars(tmp_path)["many"] == many


def test_scalar_tags_are_cleaned_as_summary_writer_cleans_them(tmp_path):
    with EventWriter(tmp_path) as writer:
        writer.add_scalar("/loss (val)", 2.0, 3)
    assert read_scalars(tmp_path) == {"loss__val_": [(3, 2.0)]}
    assert tb_scalars(tmp_path, "loss__val_") == [(3, 2.0)]


def test_non_finite_and_out_of_float32_range_values(tmp_path):
    with EventWriter(tmp_path) as writer:
        for step, value in enumerate([math.nan, math.inf, -math.inf, 1e39, -1e39]):
            writer.add_scalar("odd", value, step)
    values = [v for _, v in read_scalars(tmp_path)["odd"]]
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf, math.inf, -math.inf]
    assert [e.value for e in accumulate(tmp_path).Scalars("odd")][1:] == values[1:]


@pytest.mark.parametrize("count", [1, 23, 24, 500])
def test_batched_checksums_equal_tensorboardx_ones(count):
    rng = random.Random(count)
    # Lengths on both sides of the longest payload that is checksummed in a numpy batch.
    payloads = [rng.randbytes(rng.choice([0, 1, 40, 511, 512, 513, 1100])) for _ in range(count)]
    assert tensorboard._masked_crc32c_many(payloads) == [masked_crc32c(p) for p in payloads]


def test_images_histograms_and_text_are_readable_by_tensorboard(tmp_path):
    with EventWriter(tmp_path) as writer:
        writer.add_image("img/chw", torch.rand(3, 8, 5), 4)
        writer.add_image("img/hwc", np.zeros((6, 7, 3), dtype=np.uint8), 5, dataformats="HWC")
        writer.add_image("img/hw", np.ones((4, 4)), 5, dataformats="HW")
        writer.add_histogram("weights", torch.randn(1000), 6)
        writer.add_histogram("auto", np.arange(10.0), 6, bins="auto")
        writer.add_text("note", "hello *world*", 7)
        writer.add_scalar("loss", 0.5, 7)

    accumulator = accumulate(tmp_path)
    tags = accumulator.Tags()
    assert sorted(tags["images"]) == ["img/chw", "img/hw", "img/hwc"]
    assert sorted(tags["histograms"]) == ["auto", "weights"]
    assert tags["tensors"] == ["note/text_summary"]
    chw = accumulator.Images("img/chw")[0]
    assert (chw.step, chw.width, chw.height) == (4, 5, 8)
    hwc = accumulator.Images("img/hwc")[0]
    assert (hwc.step, hwc.width, hwc.height) == (5, 7, 6)
    histogram = accumulator.Histograms("weights")[0]
    assert (histogram.step, histogram.histogram_value.num) == (6, 1000)
    assert accumulator.Histograms("auto")[0].histogram_value.max == 9.0
    text = accumulator.Tensors("note/text_summary")[0]
    assert (text.step, text.tensor_proto.string_val[0]) == (7, b"hello *world*")

    events = read_events(tmp_path)
    assert [(tag, step, value) for tag, step, value, _ in events] == [
        ("img/chw", 4, None),
        ("img/hwc", 5, None),
        ("img/hw", 5, None),
        ("weights", 6, None),
        ("auto", 6, None),
        ("note/text_summary", 7, None),
        ("loss", 7, 0.5),
    ]


def test_add_image_rejects_dataformats_that_do_not_fit(tmp_path):
    with EventWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match="dataformats='CHW'"):
            writer.add_image("img", np.zeros((8, 8)), 0)
        with pytest.raises(ValueError, match="dataformats='CCW'"):
            writer.add_image("img", np.zeros((3, 8, 8)), 0, dataformats="CCW")
        assert writer.n_events == 0


def test_n_events_counts_every_kind_from_initial_count(tmp_path):
    writer = EventWriter(tmp_path, initial_count=7)
    assert writer.n_events == 7
    writer.add_scalar("a", 1.0, 0)
    writer.add_scalars_batch(["a", "b", "c"], [1.0, 2.0, 3.0], [1, 1, 1], [1.0, 1.0, 1.0])
    writer.add_image("img", np.zeros((3, 2, 2)), 0)
    writer.add_histogram("h", np.ones(5), 0)
    writer.add_text("t", "x", 0)
    assert writer.n_events == 14
    writer.flush()
    assert writer.n_events == 14
    writer.add_scalar("a", 1.0, 2)
    writer.close()
    assert writer.n_events == 15
    # The file_version event is in the file but is not counted.
    assert len(list(EventFileLoader(str(writer.path)).Load())) == 9
    assert len(read_events(tmp_path)) == 8


def test_events_reach_disk_only_at_flush(tmp_path):
    writer = EventWriter(tmp_path)
    (path,) = event_files(tmp_path)
    assert path == writer.path
    # The file_version record is on disk from the start, and it is the file's first event.
    first = next(iter(EventFileLoader(str(path)).Load()))
    assert first.file_version == "brain.Event:2"
    size_at_open = path.stat().st_size
    writer.add_scalar("loss", 1.0, 0)
    writer.add_image("img", np.zeros((3, 2, 2)), 0)
    assert path.stat().st_size == size_at_open
    assert read_events(tmp_path) == []
    writer.flush()
    assert read_scalars(tmp_path) == {"loss": [(0, 1.0)]}
    assert [tag for tag, *_ in read_events(tmp_path)] == ["loss", "img"]
    writer.close()


def test_maybe_flush_waits_for_flush_secs(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(tensorboard.time, "monotonic", lambda: clock[0])
    writer = EventWriter(tmp_path, flush_secs=5.0)
    writer.add_scalar("loss", 1.0, 0)
    clock[0] = 1004.9
    writer.maybe_flush()
    assert read_scalars(tmp_path) == {}
    clock[0] = 1005.0
    writer.maybe_flush()
    assert read_scalars(tmp_path) == {"loss": [(0, 1.0)]}
    writer.add_scalar("loss", 2.0, 1)
    clock[0] = 1009.9  # the clock restarts at each flush
    writer.maybe_flush()
    assert len(read_scalars(tmp_path)["loss"]) == 1
    clock[0] = 1010.0
    writer.maybe_flush()
    assert read_scalars(tmp_path)["loss"] == [(0, 1.0), (1, 2.0)]
    writer.close()


def test_maybe_flush_with_zero_flush_secs_flushes_every_call(tmp_path):
    with EventWriter(tmp_path, flush_secs=0) as writer:
        for step in range(3):
            writer.add_scalar("loss", float(step), step)
            writer.maybe_flush()
            assert len(read_scalars(tmp_path)["loss"]) == step + 1


def test_close_is_idempotent_and_later_events_fail_loudly(tmp_path):
    with EventWriter(tmp_path) as writer:
        writer.add_scalar("loss", 1.0, 0)
    writer.close()
    writer.flush()
    writer.maybe_flush()
    with pytest.raises(ValueError, match="closed"):
        writer.add_scalar("loss", 2.0, 1)
    with pytest.raises(ValueError, match="closed"):
        writer.add_text("t", "x", 1)
    assert read_scalars(tmp_path) == {"loss": [(0, 1.0)]}
    assert writer.n_events == 1


def test_add_scalar_accepts_numpy_numbers_and_rejects_tensors(tmp_path):
    with EventWriter(tmp_path) as writer:
        writer.add_scalar("a", np.float32(0.5), np.int64(3))
        writer.add_scalar("a", 2, 4)
        writer.add_scalars_batch(["a"], [np.float64(1.5)], [np.int32(5)], [1.0])
        with pytest.raises(TypeError, match=r"\.item\(\)"):
            writer.add_scalar("a", torch.tensor(1.0), 6)
        with pytest.raises(TypeError, match="step must be an int"):
            writer.add_scalar("a", 1.0, "6")
        with pytest.raises(TypeError, match="tag must be a str"):
            writer.add_scalar(("a",), 1.0, 6)
        with pytest.raises(TypeError, match=r"\.item\(\)"):
            writer.add_scalars_batch(["a"], [torch.tensor(1.0)], [6], [1.0])
        with pytest.raises(ValueError, match="one length; got 2, 1, 1 and 1"):
            writer.add_scalars_batch(["a", "b"], [1.0], [6], [1.0])
        assert writer.n_events == 3
    assert read_scalars(tmp_path) == {"a": [(3, 0.5), (4, 2.0), (5, 1.5)]}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"initial_count": -1}, ValueError, "initial_count must be an int >= 0"),
        ({"initial_count": 1.5}, ValueError, "initial_count must be an int >= 0"),
        ({"flush_secs": -1}, ValueError, "flush_secs must be a number of seconds >= 0"),
    ],
)
def test_constructor_rejects_bad_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        EventWriter(tmp_path, **kwargs)
    assert event_files(tmp_path) == []


def test_constructor_needs_an_existing_logdir(tmp_path):
    with pytest.raises(FileNotFoundError, match="Create it first"):
        EventWriter(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("clock", ["real", "standing still, then stepping back"])
def test_file_names_sort_in_creation_order_even_within_one_microsecond(
    tmp_path, monkeypatch, clock
):
    if clock != "real":
        stamps = iter([1_700_000_000_000_000] * 3 + [1_600_000_000_000_000])
        monkeypatch.setattr(tensorboard.time, "time_ns", lambda: next(stamps) * 1000)
    (tmp_path / "notes.txt").write_text("not an event file")
    created = [EventWriter(tmp_path).path.name for _ in range(4)]

    assert [p.name for p in event_files(tmp_path)] == created
    assert len(set(created)) == 4
    suffix = re.escape(f".{socket.gethostname()}.{os.getpid()}") + "$"
    for name in created:
        assert re.match(r"events\.out\.tfevents\.\d{16}" + suffix, name), name


def write_two_processes(logdir) -> tuple[list[tuple[str, int]], list]:
    """Two writers in sequence: 20 events (steps 0-9), then 10 more (steps 10-14).

    Returns the (tag, step) of each counted event in write order and the two files' bytes.
    """
    order = [(tag, step) for step in range(15) for tag in ("a", "b")]
    with EventWriter(logdir) as first:
        for tag, step in order[:20]:
            first.add_scalar(tag, float(step), step)
    with EventWriter(logdir, initial_count=first.n_events) as second:
        for tag, step in order[20:]:
            second.add_scalar(tag, float(step), step)
    assert second.n_events == 30
    return order, [p.read_bytes() for p in event_files(logdir)]


@pytest.mark.parametrize("keep", [0, 7, 19, 20, 21, 24, 30])
def test_truncate_run_then_resume_logs_each_step_exactly_once(tmp_path, keep):
    order, original = write_two_processes(tmp_path)

    assert truncate_run(tmp_path, keep) == 30 - keep
    files = event_files(tmp_path)
    assert len(files) == (0 if keep == 0 else 1 if keep <= 20 else 2)
    assert sorted(os.listdir(tmp_path)) == [p.name for p in files]  # no scratch file left
    if keep >= 20:
        assert files[0].read_bytes() == original[0]  # wholly kept: untouched
    if keep == 30:
        assert files[1].read_bytes() == original[1]
    assert [(tag, step) for tag, step, _, _ in read_events(tmp_path)] == order[:keep]

    # The resumed process re-logs every event after the checkpoint, with new values.
    with EventWriter(tmp_path, initial_count=keep) as resumed:
        for tag, step in order[keep:]:
            resumed.add_scalar(tag, step + 0.5, step)
    assert resumed.n_events == 30

    for tag in ("a", "b"):
        expected = [
            (step, float(step) if order.index((tag, step)) < keep else step + 0.5)
            for step in range(15)
        ]
        assert tb_scalars(tmp_path, tag) == expected
        assert read_scalars(tmp_path)[tag] == expected


def test_truncate_run_rejects_a_negative_keep(tmp_path):
    write_two_processes(tmp_path)
    with pytest.raises(ValueError, match="keep must be an int >= 0"):
        truncate_run(tmp_path, -1)
    assert len(read_events(tmp_path)) == 30


def write_ten_and_measure_last_record(logdir) -> tuple[EventWriter, int]:
    writer = EventWriter(logdir)
    for step in range(9):
        writer.add_scalar("loss", float(step), step)
    writer.flush()
    size_nine = writer.path.stat().st_size
    writer.add_scalar("loss", 9.0, 9)
    writer.close()
    return writer, writer.path.stat().st_size - size_nine


@pytest.mark.parametrize("chop", [1, 4, 12, 20, "all but one byte"])
def test_a_record_cut_short_is_ignored_then_dropped_by_truncate_run(tmp_path, chop):
    writer, record_size = write_ten_and_measure_last_record(tmp_path)
    chop = record_size - 1 if chop == "all but one byte" else chop
    size = writer.path.stat().st_size
    os.truncate(writer.path, size - chop)

    nine = [(step, float(step)) for step in range(9)]
    assert read_scalars(tmp_path) == {"loss": nine}
    assert tb_scalars(tmp_path, "loss") == nine

    assert truncate_run(tmp_path, 9) == 0
    assert writer.path.stat().st_size == size - record_size
    with EventWriter(tmp_path, initial_count=9) as resumed:
        resumed.add_scalar("loss", 9.5, 9)
    expected = nine + [(9, 9.5)]
    assert read_scalars(tmp_path) == {"loss": expected}
    assert tb_scalars(tmp_path, "loss") == expected


def test_truncate_run_warns_when_events_before_the_checkpoint_are_missing(tmp_path):
    writer, _ = write_ten_and_measure_last_record(tmp_path)
    os.truncate(writer.path, writer.path.stat().st_size - 3)
    with pytest.warns(UserWarning, match="holds only 9 events, so 1 that were flushed"):
        assert truncate_run(tmp_path, 10) == 0
    assert len(read_scalars(tmp_path)["loss"]) == 9


def test_a_corrupt_record_ends_the_file_for_readers_and_truncate_run(tmp_path):
    writer, record_size = write_ten_and_measure_last_record(tmp_path)
    data = bytearray(writer.path.read_bytes())
    sixth_scalar = len(data) - 5 * record_size
    data[sixth_scalar + 20] ^= 0xFF  # a payload byte: its checksum no longer matches
    writer.path.write_bytes(bytes(data))

    five = [(step, float(step)) for step in range(5)]
    assert read_scalars(tmp_path) == {"loss": five}
    assert tb_scalars(tmp_path, "loss") == five
    assert truncate_run(tmp_path, 5) == 0
    assert writer.path.stat().st_size == sixth_scalar
