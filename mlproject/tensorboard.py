"""TensorBoard sink: a run's event file, written through tensorboardX's own writer parts.

The only module of mlproject that imports tensorboardX. Events are serialised with its protos and
framed by its ``RecordWriter`` (CRC32C native with the ``crc32c`` package) in the calling thread;
tensorboardX's ``SummaryWriter`` would hand each one to a writer thread through a queue instead.
Each event file's first record is the ``file_version`` event; every later record is an event
that ``state()["n_events"]`` counts, across a run's files in name (= creation) order.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import struct
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from tensorboardX import SummaryWriter
from tensorboardX.proto.api_pb2 import Status
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboardX.record_writer import RecordWriter, masked_crc32c
from tensorboardX.summary import hparams, scalar
from tensorboardX.writer import FileWriter

from mlproject.runs import flatten
from mlproject.sinks import COMPLETED, FAILED, INTERRUPTED, RunInfo, Scalar, Sink

# Our files: PREFIX + 16-digit µs since the epoch + "." + host + "." + pid (unique, sortable).
EVENT_FILE_PREFIX = "events.out.tfevents."
EVENT_FILE_MARK = "tfevents"  # TensorBoard reads every file whose name holds it, in name order
_STAMP = re.compile(re.escape(EVENT_FILE_PREFIX) + r"(\d{16})\.")
# How the HParams tab shows a run that ended so; an interrupted run may resume: no verdict yet.
HPARAMS_STATUS = {
    COMPLETED: Status.Value("STATUS_SUCCESS"),
    FAILED: Status.Value("STATUS_FAILURE"),
    INTERRUPTED: Status.Value("STATUS_UNKNOWN"),
}


class _Events:
    """Stands in for tensorboardX's EventFileWriter (a queue and a thread): appends each event to
    one file through its RecordWriter, in the calling thread, and counts the events."""

    def __init__(self, path: Path, n_events: int):
        self.path, self.n_events = path, n_events
        self.records: RecordWriter | None = RecordWriter(str(path))
        version = Event(wall_time=time.time(), file_version="brain.Event:2")
        self.records.write(version.SerializeToString())

    def add_event(self, event: Event) -> None:
        if self.records is None:
            raise ValueError(f"{self.path} is closed (the run ended): the event would be lost")
        self.records.write(event.SerializeToString())
        self.n_events += 1

    def get_logdir(self) -> str:
        return str(self.path.parent)

    def flush(self) -> None:
        if self.records is not None:
            self.records.flush()  # and fsync

    def close(self) -> None:
        if self.records is not None:
            self.flush()
            self.records.close()
            self.records = None


class _FileWriter(FileWriter):
    # FileWriter.__init__ would start a writer thread and an atexit hook; its methods only use:
    def __init__(self, events: _Events):
        self.event_writer, self._default_metadata = events, {}


class RunWriter(SummaryWriter):
    """tensorboardX's ``SummaryWriter``, writing synchronously into the run's own event file.

    Every method works as in tensorboardX, except two that would create sub-folders, and so
    extra runs in TensorBoard's run list and HParams tab: ``add_scalars(main, {k: v})`` writes
    the tags ``main/k`` into this run, and ``add_hparams(h, metrics)`` writes ``metrics`` as
    scalars of this run (metric columns); the run's hparams are its config, recorded when it
    started, so ``h`` is not recorded (a warning says so). ``flush()`` makes the events durable;
    ``close()`` only flushes, as the sink closes the file. ``null_writer()`` writes nothing.

    Example:
        >>> writer = sink.writer  # or model.writer
        >>> writer.add_images("inputs", batch[:8], global_step=step)
        >>> writer.add_scalars("loss", {"train": 0.3, "val": 0.4}, step)  # loss/train, loss/val
    """

    def __init__(self, events: _Events | None):
        self._events = events
        super().__init__(events and events.get_logdir(), write_to_disk=events is not None)

    def _get_file_writer(self) -> Any:
        if self._events is None:
            return super()._get_file_writer()  # tensorboardX's DummyFileWriter
        if self.file_writer is None:
            self.file_writer = _FileWriter(self._events)
            self.all_writers = {self._events.get_logdir(): self.file_writer}
        return self.file_writer

    def add_scalars(self, main_tag, tag_scalar_dict, global_step=None, walltime=None) -> None:
        walltime = time.time() if walltime is None else walltime
        for tag, value in tag_scalar_dict.items():
            self.add_scalar(f"{main_tag}/{tag}", value, global_step, walltime)

    def add_hparams(self, hparam_dict, metric_dict, name=None, global_step=None) -> None:
        if type(hparam_dict) is not dict or type(metric_dict) is not dict:
            raise TypeError(f"hparam_dict and metric_dict must be dicts; got {hparam_dict!r}")
        if hparam_dict:
            warnings.warn(
                f"add_hparams records only the metrics: this run's hparams are its config, "
                f"recorded when it started. Put {sorted(hparam_dict)} in the config instead.",
                stacklevel=2,
            )
        for tag, value in metric_dict.items():
            self.add_scalar(tag, value, global_step)

    def add_embedding(self, *args: Any, **kwargs: Any) -> None:
        if self._events is not None:
            return super().add_embedding(*args, **kwargs)  # projector files in the run folder
        # Not events: written to a scratch folder and discarded, so bad input fails as with
        # TensorBoard on.
        with tempfile.TemporaryDirectory() as scratch:
            self.logdir, logdir = scratch, self.logdir
            try:
                super().add_embedding(*args, **kwargs)
            finally:
                self.logdir = logdir

    def close(self) -> None:
        self.flush()


def _accepts_bfloat16(method: Any) -> Any:
    """tensorboardX turns tensors into numpy arrays, which have no bfloat16: under
    precision='bf16' a model's ``add_images(fake)`` would raise; give it float32 instead."""

    @functools.wraps(method)
    def add(self: RunWriter, *args: Any, **kwargs: Any) -> Any:
        args = tuple(_float32(a) for a in args)
        return method(self, *args, **{k: _float32(v) for k, v in kwargs.items()})

    return add


def _float32(value: Any) -> Any:
    is_bf16 = isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16
    return value.float() if is_bf16 else value


for _name in [name for name in vars(SummaryWriter) if name.startswith("add_")]:
    setattr(RunWriter, _name, _accepts_bfloat16(getattr(RunWriter, _name)))


def null_writer() -> RunWriter:
    """The writer of a run without TensorBoard: the same class as ``TensorBoardSink.writer``
    (each ``add_*`` still checks its input), writing nothing.

    Example:
        >>> null_writer().add_image("x", torch.rand(3, 8, 8), global_step=0)  # nothing written
    """
    return RunWriter(None)


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, str | bool | float]:
    """A config as HParams columns: nested keys dotted, lists, None and the like as strings.

    Example:
        >>> flatten_config({"optim": {"lr": 0.1, "betas": [0.9, 0.99]}, "seed": None})
        {'optim.lr': 0.1, 'optim.betas': '[0.9, 0.99]', 'seed': 'None'}
    """
    return {
        key: value if isinstance(value, str | bool | int | float) else str(value)
        for key, value in flatten(config, prefix).items()
    }


def _record_ends(path: Path) -> list[int]:
    """The end offset of each intact record of an event file, until a torn or corrupt one.

    Hand-written: tensorboardX only writes records, and tensorboard's reader is no runtime
    dependency. A record is [u64 length][u32 crc of it][payload][u32 crc of the payload].
    """
    ends = []
    with open(path, "rb") as f:
        while len(header := f.read(12)) == 12:
            length, crc = struct.unpack("<QI", header)
            if crc != masked_crc32c(header[:8]):
                break
            body = f.read(length + 4)
            if len(body) < length + 4 or body[-4:] != struct.pack("<I", masked_crc32c(body[:-4])):
                break
            ends.append(f.tell())
    return ends


def _truncate(folder: Path, keep: int) -> int:
    """Keep a run folder's first ``keep`` events (and no torn record); return how many it has."""
    kept = 0
    for path in sorted(p for p in folder.iterdir() if EVENT_FILE_MARK in p.name and p.is_file()):
        ends = _record_ends(path) if kept < keep else []
        n = min(max(len(ends) - 1, 0), keep - kept)
        kept, size = kept + n, ends[n] if ends else 0
        if size == 0:
            path.unlink()
        elif size < path.stat().st_size:
            os.truncate(path, size)
            _fsync(path)
    _fsync(folder)
    if kept < keep:
        warnings.warn(f"{folder} holds {kept} events, not the checkpoint's {keep}", stacklevel=3)
    return kept


def _fsync(path: Path) -> None:
    if os.name != "nt" or path.is_file():  # Windows cannot open a folder, nor needs to
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _new_event_file(folder: Path) -> Path:
    # Never reuse or undercut a stamp in the folder: names sort in creation order, even after
    # the clock stepped back.
    stamps = [int(m[1]) + 1 for p in folder.iterdir() if (m := _STAMP.match(p.name))]
    stamp = max([time.time_ns() // 1000, *stamps])
    return folder / f"{EVENT_FILE_PREFIX}{stamp:016d}.{socket.gethostname()}.{os.getpid()}"


def _session_end(status: str) -> Summary:
    # tensorboardX's hparams() writes only STATUS_SUCCESS; built here from its protos.
    info = SessionEndInfo(status=HPARAMS_STATUS[status], end_time_secs=time.time())
    content = HParamsPluginData(session_end_info=info, version=0).SerializeToString()
    plugin = SummaryMetadata.PluginData(plugin_name="hparams", content=content)
    value = Summary.Value(
        tag="_hparams_/session_end_info", metadata=SummaryMetadata(plugin_data=plugin)
    )
    return Summary(value=[value])


class TensorBoardSink(Sink):
    """Writes a run's scalars, hparams and ``writer`` events to ``<tensorboard_dir>/<run name>/``.

    Each ``open`` starts a new event file. A fresh run (``state`` None) first drops any events
    of an attempt that died before its first checkpoint and records its config as the HParams
    session start; a resumed run drops the events written after its checkpoint, so each
    (tag, step) is in the files once. ``close`` records the HParams session end.

    Example:
        >>> sink = TensorBoardSink("tb")
        >>> sink.open(RunInfo("mnist-1", Path("runs/mnist-1"), {"lr": 0.1}), state=None)
        >>> sink.write([Scalar("train/loss", 0.25, 0, time.time())])
        >>> sink.close(COMPLETED)
    """

    name = "tensorboard"

    def __init__(self, tensorboard_dir: str | os.PathLike):
        self.tensorboard_dir = Path(tensorboard_dir)
        self._events: _Events | None = None
        self._writer: RunWriter | None = None
        self._templates: dict[str, tuple[Event, Any]] = {}  # tag -> (event, its summary value)

    @property
    def writer(self) -> RunWriter:
        """A full ``SummaryWriter`` into this run's event file (``Model.writer``)."""
        if self._writer is None:
            raise RuntimeError("TensorBoardSink.writer exists once open() has been called")
        return self._writer

    def open(self, run: RunInfo, state: dict[str, Any] | None) -> None:
        folder = self.tensorboard_dir / run.name
        folder.mkdir(parents=True, exist_ok=True)
        kept = _truncate(folder, state["n_events"] if state else 0)
        self._events = _Events(_new_event_file(folder), kept)
        self._writer = RunWriter(self._events)
        if state is None:
            _, session_start, _ = hparams(flatten_config(run.config), {})
            self._writer.file_writer.add_summary(session_start)

    def write(self, scalars: list[Scalar]) -> None:
        templates, payloads = self._templates, []
        for tag, value, step, wall_time in scalars:
            if tag not in templates:
                event = Event(summary=scalar(tag, 0.0))  # tensorboardX cleans the tag
                templates[tag] = event, event.summary.value[0]
            event, summary_value = templates[tag]
            event.wall_time, event.step, summary_value.simple_value = wall_time, step, value
            payloads.append(event.SerializeToString())
        records = self._events and self._events.records
        if records is None:
            raise ValueError("TensorBoardSink.write after close: the scalars would be lost")
        for payload in payloads:
            records.write(payload)
        self._events.n_events += len(payloads)
        # To the OS, so a live TensorBoard sees them; RecordWriter.flush would fsync too.
        records._writer.flush()

    def flush(self) -> None:
        self._events.flush()

    def state(self) -> dict[str, Any]:
        return {"n_events": self._events.n_events}

    def close(self, status: str) -> None:
        if status not in HPARAMS_STATUS:
            raise ValueError(f"status must be one of {sorted(HPARAMS_STATUS)}; got {status!r}")
        if self._events is None or self._events.records is None:
            return
        try:
            self._writer.file_writer.add_summary(_session_end(status))
        finally:
            self._events.close()
