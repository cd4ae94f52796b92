"""TensorBoard event files: a cheap synchronous writer, a reader, and truncation for resumed runs.

The only module of mlproject that imports tensorboardX. tensorboardX's ``SummaryWriter`` hands
every event to a writer thread through a ``multiprocessing.Queue`` (60-200 µs per scalar in the
training thread, plus the thread's own work under the GIL). ``EventWriter`` instead appends a
tuple to a list (about 1 µs) and serialises the whole buffer at ``flush()`` (about 3 µs per
scalar), in the calling thread, with no writer thread at all.

On disk an event file is a sequence of TFRecords, ``[u64 length][u32 masked crc32c(length)]
[Event proto][u32 masked crc32c(Event)]``, read by TensorBoard in file-name order. The first
record of every file is the ``file_version`` event, which carries no summary; every other
record this module writes carries exactly one summary value and is what ``n_events`` and
``truncate_run`` count.
"""

from __future__ import annotations

import logging
import math
import mmap
import numbers
import operator
import os
import re
import shutil
import socket
import struct
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import tensorboardX.crc32c
import tensorboardX.summary
from tensorboardX.proto import event_pb2

logger = logging.getLogger(__name__)

# --- On-disk names: every file this module creates or reads is named here. ---
# TensorBoard reads any file whose name contains this mark, in name order.
EVENT_FILE_MARK = "tfevents"
# Our files: PREFIX + 16-digit microseconds since the epoch + "." + hostname + "." + pid.
EVENT_FILE_PREFIX = "events.out.tfevents."
# truncate_run's scratch copies; the name lacks EVENT_FILE_MARK so TensorBoard never reads one.
TRUNCATE_TMP_PREFIX = ".truncate-"
# The first event of every file, as tensorboardX and TensorFlow write it.
FILE_VERSION = "brain.Event:2"

_OUR_FILE_NAME = re.compile(re.escape(EVENT_FILE_PREFIX) + r"(\d{16})\.")

# --- TFRecord framing. ---
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d").pack
_F32 = struct.Struct("<f").pack
_HEADER_BYTES = 12  # u64 length + u32 crc of it
_FOOTER_BYTES = 4  # u32 crc of the payload
_CRC_TABLE = tensorboardX.crc32c.CRC_TABLE
# tensorboardX binds a native crc32c when the optional `crc32c` package is installed; without
# it, a pure-Python loop costs ~0.15 µs per byte, so short records are checksummed in batches
# with numpy instead (see _masked_crc32c_many).
_NATIVE_CRC = getattr(tensorboardX.crc32c, "_crc32c_native", None) is not None
_crc32c = tensorboardX.crc32c.crc32c
_VECTOR_MIN_RECORDS = 24  # below this, numpy's per-call overhead beats the batching gain
_VECTOR_MAX_BYTES = 512  # longer records would make every short one pad to their length
_READ_BATCH_RECORDS = 4096  # records checksummed together while reading
_COPY_CHUNK_BYTES = 1 << 20

_HEADERS: dict[int, bytes] = {}  # payload length -> its 12-byte record header
_HEADER_CACHE_MAX_LENGTH = 1 << 16  # images have many distinct lengths; scalars a handful


def _mask(crc: int) -> int:
    # TFRecord stores a rotated, offset crc so that a crc of data that holds crcs stays useful.
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _header(length: int) -> bytes:
    header = _HEADERS.get(length)
    if header is None:
        length_bytes = _U64.pack(length)
        header = length_bytes + _U32.pack(_mask(_crc32c(length_bytes)))
        if length < _HEADER_CACHE_MAX_LENGTH:
            _HEADERS[length] = header
    return header


def _record(payload: bytes) -> bytes:
    return _header(len(payload)) + payload + _U32.pack(_mask(_crc32c(payload)))


# Records of different lengths are checksummed together by left-padding them with zero bytes to
# one length. A zero byte moves the crc register by a bijection, so starting a record padded by
# k bytes from _PAD_INITS[k] (the standard start value moved back k zero bytes) reaches the
# standard start value exactly where its real bytes begin.
_PAD_INITS = [0xFFFFFFFF]
# Each table entry's top byte is distinct, so it tells which index produced it.
_INDEX_OF_TOP_BYTE = {entry >> 24: i for i, entry in enumerate(_CRC_TABLE)}


def _pad_inits(k: int) -> list[int]:
    while len(_PAD_INITS) <= k:
        register = _PAD_INITS[-1]
        i = _INDEX_OF_TOP_BYTE[register >> 24]
        _PAD_INITS.append((((register ^ _CRC_TABLE[i]) << 8) & 0xFFFFFFFF) | i)
    return _PAD_INITS


_NP_CRC_TABLE = np.array(_CRC_TABLE, dtype=np.uint32)


def _masked_crc32c_many(payloads: Sequence[bytes]) -> list[int]:
    """The masked crc32c of each payload; short ones are done together with numpy."""
    if _NATIVE_CRC or len(payloads) < _VECTOR_MIN_RECORDS:
        return [_mask(_crc32c(p)) for p in payloads]
    crcs = [0] * len(payloads)
    short = []
    for i, payload in enumerate(payloads):
        if len(payload) <= _VECTOR_MAX_BYTES:
            short.append(i)
        else:
            crcs[i] = _mask(_crc32c(payload))
    for i, crc in zip(short, _masked_crc32c_padded([payloads[i] for i in short])):
        crcs[i] = crc
    return crcs


def _masked_crc32c_padded(batch: list[bytes]) -> list[int]:
    if not batch:
        return []
    width = max(map(len, batch))
    inits = _pad_inits(width)
    padded = b"".join([p.rjust(width, b"\0") for p in batch])
    # One row per byte position, so each step of the crc loop is a few whole-array operations.
    columns = np.frombuffer(padded, np.uint8).reshape(len(batch), width).T.copy()
    register = np.array([inits[width - len(p)] for p in batch], dtype=np.uint32)
    index = np.empty_like(register)
    for column in columns:
        np.bitwise_xor(register, column, out=index)
        index &= 0xFF
        register >>= 8
        register ^= _NP_CRC_TABLE.take(index)
    register ^= 0xFFFFFFFF
    return (((register >> 15) | (register << 17)) + np.uint32(0xA282EAD8)).tolist()


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 fields encode negatives as their 64-bit two's complement
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_ONE_BYTE_STEP_FIELDS = [b""] + [b"\x10" + bytes((s,)) for s in range(1, 0x80)]


def _step_field(step: int) -> bytes:
    # Event.step is field 2 (varint); proto3 omits it when 0. Steps below 2**21 are inlined.
    if 0 <= step < 0x80:
        return _ONE_BYTE_STEP_FIELDS[step]
    if 0 < step < 0x4000:
        return bytes((0x10, (step & 0x7F) | 0x80, step >> 7))
    if 0 < step < 0x200000:
        return bytes((0x10, (step & 0x7F) | 0x80, ((step >> 7) & 0x7F) | 0x80, step >> 14))
    return b"\x10" + _varint(step)


def _scalar_suffix_template(tag: str) -> bytes:
    """The bytes of a scalar Event after its step field, up to the 4 value bytes.

    Built once per tag from tensorboardX's own ``summary.scalar`` (which also cleans the tag as
    ``SummaryWriter`` does), so that the per-scalar work at flush is a few byte concatenations.
    """
    summary = tensorboardX.summary.scalar(tag, 1.0).SerializeToString()
    value_field = b"\x15" + _F32(1.0)  # Summary.Value.simple_value: field 2, 32-bit
    if not summary.endswith(value_field):
        raise RuntimeError(
            f"tensorboardX encoded the scalar summary of tag {tag!r} unexpectedly "
            f"({summary!r}); EventWriter cannot build scalar events by hand with this version"
        )
    # Event.summary is field 5, length-delimited.
    return b"\x2a" + _varint(len(summary)) + summary[:-4]


def _checked_scalar(tag: Any, value: Any, step: Any) -> tuple[float, int]:
    if not isinstance(tag, str):
        raise TypeError(f"a scalar's tag must be a str; got {tag!r} ({type(tag).__name__})")
    if not isinstance(value, numbers.Real):
        raise TypeError(
            f"add_scalar({tag!r}) needs a python number; got {type(value).__name__}. "
            f"Convert a tensor with .item() on the steps that are logged only."
        )
    return float(value), _checked_step(step)


def _checked_step(step: Any) -> int:
    try:
        return operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an int; got {step!r} ({type(step).__name__})") from None


def _count(name: str, value: Any) -> int:
    try:
        count = operator.index(value)
    except TypeError:
        count = -1
    if count < 0 or isinstance(value, bool):
        raise ValueError(
            f"{name} must be an int >= 0 (the n_events recorded in the checkpoint resumed "
            f"from, or 0); got {value!r}"
        )
    return count


class _ClosedBuffer:
    """Stands in for the buffer of a closed writer, so that a late event fails loudly."""

    def __len__(self) -> int:
        return 0

    def append(self, item: object) -> None:
        raise ValueError(
            "this EventWriter is closed, so the event would be lost; open a new EventWriter"
        )

    extend = append


_CLOSED = _ClosedBuffer()
_IMAGE_AXES = {2: "HW", 3: "CHW", 4: "NCHW"}  # add_image: an image's dimensions by count
_DEFAULT_HISTOGRAM_BINS: list[float] = []


def _tensorflow_bins() -> list[float]:
    # The same bucket edges as SummaryWriter.default_bins (TensorFlow's histogram.cc).
    if not _DEFAULT_HISTOGRAM_BINS:
        v, positive = 1e-12, []
        while v < 1e20:
            positive.append(v)
            v *= 1.1
        _DEFAULT_HISTOGRAM_BINS.extend([-b for b in reversed(positive)] + [0.0] + positive)
    return _DEFAULT_HISTOGRAM_BINS


def _next_file_name(logdir: Path) -> str:
    # Names must sort in creation order even for writers created in the same microsecond or
    # after the clock stepped back, so never reuse or undercut a timestamp already in the folder.
    stamp = time.time_ns() // 1000
    for name in os.listdir(logdir):
        match = _OUR_FILE_NAME.match(name)
        if match:
            stamp = max(stamp, int(match.group(1)) + 1)
    return f"{EVENT_FILE_PREFIX}{stamp:016d}.{socket.gethostname()}.{os.getpid()}"


class EventWriter:
    """A synchronous, buffered writer of one TensorBoard event file.

    ``add_*`` only buffer in memory; ``flush()`` serialises the buffer, writes it and
    ``fsync``s the file, so a killed process loses exactly what was added since the last
    flush. Call ``maybe_flush()`` every step (it is one clock comparison when nothing is due)
    and ``flush()`` before recording ``n_events`` in a checkpoint. Not thread-safe: use it from
    the thread that trains.

    Args:
        logdir: The run folder; it must exist. One new event file is created in it.
        initial_count: The ``n_events`` of the checkpoint this process resumes from (0 for a
            fresh run), so that ``n_events`` keeps counting the whole run's events.
        flush_secs: ``maybe_flush()`` flushes when this many seconds passed since the last
            flush (0: at every call; ``math.inf``: never).

    Example:
        >>> with EventWriter(run_dir) as writer:
        ...     for step in range(100):
        ...         writer.add_scalar("train/loss", 1.0 / (step + 1), step)
        ...         writer.maybe_flush()
        >>> read_scalars(run_dir)["train/loss"][-1]
        (99, 0.009999999776482582)
    """

    def __init__(
        self, logdir: str | os.PathLike, *, initial_count: int = 0, flush_secs: float = 10.0
    ):
        logdir = Path(logdir)
        if not logdir.is_dir():
            raise FileNotFoundError(
                f"logdir {str(logdir)!r} is not an existing folder; EventWriter does not create "
                f"it. Create it first: os.makedirs(logdir, exist_ok=True)"
            )
        initial_count = _count("initial_count", initial_count)
        if not isinstance(flush_secs, numbers.Real) or not flush_secs >= 0:
            raise ValueError(
                f"flush_secs must be a number of seconds >= 0 (math.inf: only explicit "
                f"flushes); got {flush_secs!r}"
            )
        self._flush_secs = float(flush_secs)
        self._pending: list[Any] | _ClosedBuffer = []
        self._n_written = initial_count
        self._scalar_suffixes: dict[str, bytes] = {}
        while True:
            path = logdir / _next_file_name(logdir)
            try:
                # "x": a name clash with another process must not truncate its file.
                self._file = open(path, "xb")
                break
            except FileExistsError:
                continue
        self._path = path
        version = event_pb2.Event(wall_time=time.time(), file_version=FILE_VERSION)
        try:
            self._write(_record(version.SerializeToString()))
        except BaseException:
            self._file.close()
            raise
        self._next_flush = time.monotonic() + self._flush_secs

    @property
    def path(self) -> Path:
        """The event file this writer appends to."""
        return self._path

    @property
    def n_events(self) -> int:
        """``initial_count`` plus every event added through this writer, flushed or not."""
        return self._n_written + len(self._pending)

    def add_scalar(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        """Buffer one scalar; ``wall_time`` defaults to now (seconds since the epoch)."""
        # Checked here, not at flush, so a bad call fails at its line; the common case costs
        # three class comparisons.
        if value.__class__ is not float or step.__class__ is not int or tag.__class__ is not str:
            value, step = _checked_scalar(tag, value, step)
        self._pending.append(
            (tag, value, step, time.time() if wall_time is None else float(wall_time))
        )

    def add_scalars_batch(
        self,
        tags: Sequence[str],
        values: Sequence[float],
        steps: Sequence[int],
        wall_times: Sequence[float],
    ) -> None:
        """Buffer ``add_scalar(tags[i], values[i], steps[i], wall_times[i])`` for every i."""
        if not len(tags) == len(values) == len(steps) == len(wall_times):
            raise ValueError(
                f"tags, values, steps and wall_times must have one length; got {len(tags)}, "
                f"{len(values)}, {len(steps)} and {len(wall_times)}"
            )
        if not (
            all(v.__class__ is float for v in values)
            and all(s.__class__ is int for s in steps)
            and all(t.__class__ is str for t in tags)
        ):
            checked = [_checked_scalar(t, v, s) for t, v, s in zip(tags, values, steps)]
            values, steps = [v for v, _ in checked], [s for _, s in checked]
        if not all(w.__class__ is float for w in wall_times):
            wall_times = [float(w) for w in wall_times]
        self._pending.extend(zip(tags, values, steps, wall_times))

    def add_image(self, tag: str, img: Any, step: int, dataformats: str = "CHW") -> None:
        """Buffer one image, as ``SummaryWriter.add_image`` (float in [0, 1] or uint8)."""
        # tensorboardX checks this with assert, which vanishes under python -O.
        ndim = np.ndim(img)
        if sorted(dataformats.upper()) != sorted(_IMAGE_AXES.get(ndim, "?")):
            raise ValueError(
                f"add_image({tag!r}): dataformats={dataformats!r} does not fit an image of "
                f"{ndim} dimensions; name each of its axes once with the letters of "
                f"{_IMAGE_AXES.get(ndim, 'CHW')!r} in the array's order, e.g. 'HWC'"
            )
        self._add_summary(tensorboardX.summary.image(tag, img, dataformats=dataformats), step)

    def add_histogram(self, tag: str, values: Any, step: int, bins: str = "tensorflow") -> None:
        """Buffer a histogram of ``values``; ``bins`` as ``SummaryWriter.add_histogram``."""
        edges = _tensorflow_bins() if bins == "tensorflow" else bins
        self._add_summary(tensorboardX.summary.histogram(tag, values, edges), step)

    def add_text(self, tag: str, text: str, step: int) -> None:
        """Buffer a text (markdown) event; TensorBoard shows it under ``tag + "/text_summary"``."""
        self._add_summary(tensorboardX.summary.text(tag, text), step)

    def _add_summary(self, summary: Any, step: int) -> None:
        # Serialised now rather than at flush, so the buffer holds bytes, not user tensors.
        event = event_pb2.Event(wall_time=time.time(), step=_checked_step(step), summary=summary)
        self._pending.append(_record(event.SerializeToString()))

    def maybe_flush(self) -> None:
        """Flush if ``flush_secs`` have passed since the last flush."""
        if time.monotonic() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        """Write every buffered event, then flush and ``fsync`` the file.

        If the disk write fails, the exception propagates and those events are dropped from
        the buffer all the same: part of them may be on disk, and a later flush must not write
        them twice.
        """
        pending = self._pending
        if pending:
            data = self._serialise(pending)
            self._n_written += len(pending)
            self._pending = []
            self._write(data)
        self._next_flush = time.monotonic() + self._flush_secs

    def _serialise(self, pending: list[Any]) -> bytes:
        suffixes = self._scalar_suffixes
        payloads = []
        for item in pending:
            if item.__class__ is bytes:
                continue
            tag, value, step, wall_time = item
            suffix = suffixes.get(tag)
            if suffix is None:
                suffix = suffixes[tag] = _scalar_suffix_template(tag)
            try:
                value_bytes = _F32(value)
            except OverflowError:  # beyond float32's range: store inf, as protobuf would
                value_bytes = _F32(math.copysign(math.inf, value))
            # Event.wall_time is field 1, a 64-bit double.
            payloads.append(b"\x09" + _F64(wall_time) + _step_field(step) + suffix + value_bytes)
        crcs = iter(_masked_crc32c_many(payloads))
        scalar_payloads = iter(payloads)
        records = []
        for item in pending:
            if item.__class__ is bytes:
                records.append(item)
            else:
                payload = next(scalar_payloads)
                records.append(_header(len(payload)) + payload + _U32.pack(next(crcs)))
        return b"".join(records)

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Flush and close the file; later calls do nothing, later ``add_*`` raise."""
        if self._pending is _CLOSED:
            return
        try:
            self.flush()
        finally:
            self._pending = _CLOSED
            self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def event_files(logdir: str | os.PathLike) -> list[Path]:
    """The event files of one run folder, oldest first (TensorBoard's reading order).

    Example:
        >>> [p.name for p in event_files(run_dir)]  # doctest: +SKIP
        ['events.out.tfevents.1717171717000001.host.4242']
    """
    folder = Path(logdir)
    return sorted(
        (p for p in folder.iterdir() if EVENT_FILE_MARK in p.name and p.is_file()),
        key=lambda p: p.name,
    )


def _scan(path: Path) -> Iterator[tuple[bytes, int]]:
    """Yield ``(payload, end offset)`` of each intact record, stopping at the first bad one.

    A bad record is one cut short (a process killed mid-write) or failing its checksums; what
    follows it in the same file is not read, as TensorBoard does.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return  # mmap refuses an empty file
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            pos, intact = 0, True
            while intact and pos < size:
                # Parse a batch of records first, so their checksums are computed together.
                batch: list[tuple[bytes, int, int, int]] = []
                while pos < size and len(batch) < _READ_BATCH_RECORDS:
                    if size - pos < _HEADER_BYTES:
                        intact = False
                        break
                    (length,) = _U64.unpack_from(data, pos)
                    end = pos + _HEADER_BYTES + length + _FOOTER_BYTES
                    if end > size or data[pos : pos + _HEADER_BYTES] != _header(length):
                        intact = False
                        break
                    payload = data[pos + _HEADER_BYTES : end - _FOOTER_BYTES]
                    batch.append(
                        (payload, pos, end, _U32.unpack_from(data, end - _FOOTER_BYTES)[0])
                    )
                    pos = end
                crcs = _masked_crc32c_many([payload for payload, _, _, _ in batch])
                for (payload, start, end, stored), crc in zip(batch, crcs):
                    if crc != stored:
                        pos, intact = start, False
                        break
                    yield payload, end
            if pos < size:
                logger.warning(
                    "%s: ignoring %d bytes from offset %d: a record cut short or corrupt "
                    "(a process killed while writing?)",
                    path,
                    size - pos,
                    pos,
                )


def read_events(logdir: str | os.PathLike) -> list[tuple[str, int, float | None, float]]:
    """Every summary value of a run folder, in file order.

    Returns:
        ``(tag, step, value, wall_time)`` tuples; ``value`` is the scalar, or None for images,
        histograms, text and other non-scalar summaries.

    Example:
        >>> read_events(run_dir)[:1]  # doctest: +SKIP
        [('train/loss', 0, 1.0, 1717171717.25)]
    """
    out = []
    for path in event_files(logdir):
        for payload, _ in _scan(path):
            event = event_pb2.Event.FromString(payload)
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                scalar = value.simple_value if value.WhichOneof("value") == "simple_value" else None
                out.append((value.tag, event.step, scalar, event.wall_time))
    return out


def read_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Each scalar tag of a run folder mapped to its ``(step, value)`` pairs in write order.

    Example:
        >>> read_scalars(run_dir)["train/loss"][:2]  # doctest: +SKIP
        [(0, 1.0), (1, 0.5)]
    """
    scalars: dict[str, list[tuple[int, float]]] = {}
    for tag, step, value, _ in read_events(logdir):
        if value is not None:
            scalars.setdefault(tag, []).append((step, value))
    return scalars


def truncate_run(logdir: str | os.PathLike, keep: int) -> int:
    """Keep only the first ``keep`` counted events of a run folder; return how many were dropped.

    Counted events are those carrying a summary (not the ``file_version`` event), taken across
    the event files oldest first: exactly what ``EventWriter.n_events`` counts. Files wholly
    within ``keep`` are left untouched; the file holding the boundary is copied up to it into
    a scratch file, ``fsync``ed and renamed over the original; later files are deleted. A
    record cut short at a file's end is dropped too (it is not counted as dropped).

    Args:
        logdir: The run folder.
        keep: The ``n_events`` recorded in the checkpoint being resumed.

    Example:
        >>> n = truncate_run(run_dir, checkpoint["n_events"])
        >>> writer = EventWriter(run_dir, initial_count=checkpoint["n_events"])
    """
    keep = _count("keep", keep)
    folder = Path(logdir)
    for stale in folder.glob(TRUNCATE_TMP_PREFIX + "*"):
        stale.unlink()  # left by a truncate_run that was killed before its rename
    remaining, dropped = keep, 0
    for path in event_files(folder):
        if remaining == 0:
            dropped += sum(_carries_summary(payload) for payload, _ in _scan(path))
            path.unlink()
            _fsync_dir(folder)
            continue
        cut = 0
        n_dropped_here = 0
        for payload, end in _scan(path):
            if _carries_summary(payload):
                if remaining == 0:
                    n_dropped_here += 1
                    continue
                remaining -= 1
            if n_dropped_here == 0:
                cut = end
        dropped += n_dropped_here
        if cut < path.stat().st_size:
            _cut_file(path, cut)
    if remaining:
        warnings.warn(
            f"truncate_run({str(folder)!r}, keep={keep}): the folder holds only "
            f"{keep - remaining} events, so {remaining} that were flushed before the checkpoint "
            f"are missing; n_events will overcount them",
            stacklevel=2,
        )
    return dropped


def _carries_summary(payload: bytes) -> bool:
    return event_pb2.Event.FromString(payload).HasField("summary")


def _cut_file(path: Path, size: int) -> None:
    # A copy renamed over the original: a crash leaves either the old or the new file whole.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=TRUNCATE_TMP_PREFIX)
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            left = size
            while left:
                chunk = src.read(min(left, _COPY_CHUNK_BYTES))
                if not chunk:
                    raise OSError(f"{path} shrank while truncate_run copied it")
                dst.write(chunk)
                left -= len(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copymode(path, tmp_name)  # mkstemp makes it 0600; keep it readable as before
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # Makes a rename or unlink durable; Windows cannot open a folder, and needs no such step.
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the sink (interim: the TensorBoard helper's rewrite replaces this file) -------------------
from mlproject.sinks import RunInfo, Scalar, Sink  # noqa: E402


class _NullWriter:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def null_writer() -> Any:
    return _NullWriter()


class TensorBoardSink(Sink):
    name = "tensorboard"

    def __init__(self, tensorboard_dir: str | os.PathLike):
        self.root = Path(tensorboard_dir)
        self._events: EventWriter | None = None

    def open(self, run: RunInfo, state: dict[str, Any] | None) -> None:
        folder = self.root / run.name
        folder.mkdir(parents=True, exist_ok=True)
        n = state["n_events"] if state else 0
        truncate_run(folder, n)
        self._events = EventWriter(folder, initial_count=n, flush_secs=math.inf)

    @property
    def writer(self) -> Any:
        return self._events

    def write(self, scalars: list[Scalar]) -> None:
        tags, values, steps, times = zip(*scalars)
        self._events.add_scalars_batch(tags, values, steps, times)

    def flush(self) -> None:
        self._events.flush()

    def state(self) -> dict[str, Any]:
        return {"n_events": self._events.n_events}

    def close(self, status: str) -> None:
        if self._events is not None:
            self._events.close()
