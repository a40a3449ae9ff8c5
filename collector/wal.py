"""The write-ahead log: admitted export requests, appended with group-commit fsync, read back by the writer.

Layout: `<wal-dir>/segment-<20-digit first sequence>.wal`, each a run of framed records
    magic b"AFW1" | u32 payload length | u32 crc32(payload) | payload
    payload = u8 signal | u16 project length | project utf-8 | i64 received_at ns | u64 sequence | body
Appends from many threads are queued and one thread writes them together and fsyncs once (group commit);
an append returns only after its fsync. On open, a torn tail (a record cut short by a crash) is
truncated; a record whose checksum fails is copied to `quarantine/` and skipped, never a crash loop.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

log = logging.getLogger(__name__)

MAGIC = b"AFW1"
_FRAME = struct.Struct("<4sII")
_HEADER = struct.Struct("<BH")
_TAIL = struct.Struct("<qQ")
SIGNAL_TRACES = 1
SIGNAL_LOGS = 2
MAX_RECORD_BYTES = 80 * 1024 * 1024  # a 64 MiB request plus framing; larger lengths mean corruption
_SEGMENT_PREFIX = "segment-"
_SEGMENT_SUFFIX = ".wal"


@dataclass(frozen=True, slots=True)
class WalRecord:
    signal: int
    project: str
    received_at_unix_nano: int
    body: bytes
    sequence: int = 0


@dataclass(frozen=True, slots=True, order=True)
class WalPosition:
    """A point in the log: the segment's first sequence number and a byte offset inside it."""

    segment: int
    offset: int


def encode_record(record: WalRecord) -> bytes:
    project = record.project.encode()
    payload = b"".join(
        (
            _HEADER.pack(record.signal, len(project)),
            project,
            _TAIL.pack(record.received_at_unix_nano, record.sequence),
            record.body,
        )
    )
    return _FRAME.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> WalRecord:
    signal, project_len = _HEADER.unpack_from(payload, 0)
    start = _HEADER.size
    project = payload[start : start + project_len].decode()
    received_at, sequence = _TAIL.unpack_from(payload, start + project_len)
    body = payload[start + project_len + _TAIL.size :]
    return WalRecord(signal, project, received_at, body, sequence)


def segment_path(directory: Path, first_sequence: int) -> Path:
    return directory / f"{_SEGMENT_PREFIX}{first_sequence:020d}{_SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    """First sequence numbers of the segments present, oldest first."""
    found = []
    for entry in directory.glob(f"{_SEGMENT_PREFIX}*{_SEGMENT_SUFFIX}"):
        digits = entry.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)]
        if digits.isdigit():
            found.append(int(digits))
    return sorted(found)


class _Scan:
    """Result of scanning one segment file from some offset."""

    def __init__(self) -> None:
        self.records: list[tuple[WalPosition, WalRecord]] = []
        self.good_end = 0
        self.corrupt: list[tuple[int, int]] = []  # (offset, length) of records that failed their checksum
        self.torn = False


def _scan(
    path: Path,
    first_sequence: int,
    start: int,
    limit_records: int | None = None,
    want: Callable[[int], bool] | None = None,
) -> _Scan:
    """Read framed records from `start`; stops at EOF, at a torn tail, or after limit_records wanted ones.
    Records whose sequence `want` refuses are stepped over after reading only their header: a writer shard
    skips half the log, and reading, checksumming and copying those bodies cost it ~1.5 µs per span."""
    scan = _Scan()
    scan.good_end = start
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(start)
        offset = start
        while limit_records is None or len(scan.records) < limit_records:
            frame = handle.read(_FRAME.size)
            if not frame:
                break
            if len(frame) < _FRAME.size:
                scan.torn = True
                break
            magic, length, crc = _FRAME.unpack(frame)
            if magic != MAGIC or length > MAX_RECORD_BYTES:
                scan.torn = True  # unreadable framing: nothing after it can be trusted
                break
            end = offset + _FRAME.size + length
            if want is not None and end <= size:
                header = handle.read(_HEADER.size)
                _, project_len = _HEADER.unpack(header)
                handle.seek(project_len + _TAIL.size - 8, os.SEEK_CUR)
                (sequence,) = struct.unpack("<Q", handle.read(8))
                if not want(sequence):
                    handle.seek(end)
                    offset = scan.good_end = end
                    continue
                handle.seek(offset + _FRAME.size)
            payload = handle.read(length)
            if len(payload) < length:
                scan.torn = True
                break
            if zlib.crc32(payload) != crc:
                scan.corrupt.append((offset, end - offset))
            else:
                record = decode_payload(payload)
                # The header check above is skipped for a record still being appended when the file size
                # was read; it may be complete now, so the owner check must be made here as well.
                if want is None or want(record.sequence):
                    scan.records.append((WalPosition(first_sequence, end), record))
            offset = end
            scan.good_end = end
    return scan


class WriteAheadLog:
    """Appender side. One instance per collector process; thread-safe appends with group commit."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 128 * 1024 * 1024,
        fsync: bool = True,
        max_batch_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.directory = directory
        self.quarantine = directory / "quarantine"
        directory.mkdir(parents=True, exist_ok=True)
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._max_batch_bytes = max_batch_bytes
        self._queue: queue.Queue[tuple[bytes, Future[WalPosition]] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._durable = threading.Lock()
        self.quarantined_records = 0
        self.fsyncs = 0
        # (end position, wall time) of each group commit, oldest first, for the flush-lag gauge.
        self._commits: collections.deque[tuple[WalPosition, float]] = collections.deque(maxlen=100_000)
        self._next_sequence, self._segment, self._handle = self._recover()
        self._durable_position = WalPosition(self._segment, self._handle.tell())
        self._thread = threading.Thread(target=self._run, name="wal-group-commit", daemon=True)
        self._thread.start()

    # --- recovery --------------------------------------------------------------------------------

    def _recover(self) -> tuple[int, int, BinaryIO]:
        segments = list_segments(self.directory)
        next_sequence = 0
        for first in segments:
            path = segment_path(self.directory, first)
            scan = _scan(path, first, 0)
            if scan.corrupt:
                self._quarantine(path, scan.corrupt)
            if scan.torn:
                log.warning("wal: truncating torn tail of %s at byte %d", path.name, scan.good_end)
                with path.open("r+b") as handle:
                    handle.truncate(scan.good_end)
                    os.fsync(handle.fileno())
            if scan.records:
                next_sequence = max(next_sequence, scan.records[-1][1].sequence + 1)
            else:
                next_sequence = max(next_sequence, first)
        segment = next_sequence
        current: BinaryIO = segment_path(self.directory, segment).open("ab")
        self._fsync_dir()
        return next_sequence, segment, current

    def _quarantine(self, path: Path, spans: list[tuple[int, int]]) -> None:
        self.quarantine.mkdir(exist_ok=True)
        with path.open("rb") as source:
            for offset, length in spans:
                source.seek(offset)
                target = self.quarantine / f"{path.stem}-{offset}.bad"
                if not target.exists():
                    target.write_bytes(source.read(length))
                    self.quarantined_records += 1
                    log.error(
                        "wal: record at %s:%d failed its checksum; moved aside to %s",
                        path.name,
                        offset,
                        target,
                    )

    def _fsync_dir(self) -> None:
        if not self._fsync:
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- appends ----------------------------------------------------------------------------------

    def append(self, signal: int, project: str, received_at_unix_nano: int, body: bytes) -> Future[WalPosition]:
        """Queue one record; the future resolves with its end position once it is fsynced."""
        future: Future[WalPosition] = Future()
        with self._lock:
            sequence = self._next_sequence
            self._next_sequence += 1
            # Encoding under the lock keeps sequence order equal to queue order.
            data = encode_record(WalRecord(signal, project, received_at_unix_nano, body, sequence))
            self._queue.put((data, future))
        return future

    def append_and_wait(
        self, signal: int, project: str, received_at_unix_nano: int, body: bytes, timeout: float = 30.0
    ) -> WalPosition:
        return self.append(signal, project, received_at_unix_nano, body).result(timeout)

    @property
    def durable_position(self) -> WalPosition:
        with self._durable:
            return self._durable_position

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            size = len(item[0])
            stop = False
            while size < self._max_batch_bytes:
                try:
                    extra = self._queue.get_nowait()
                except queue.Empty:
                    break
                if extra is None:
                    stop = True
                    break
                batch.append(extra)
                size += len(extra[0])
            try:
                position = self._write(b"".join(data for data, _ in batch))
            except Exception as exc:  # disk full, I/O error: every waiting client gets an error, not a hang
                log.exception("wal: write failed")
                for _, future in batch:
                    future.set_exception(exc)
            else:
                for _, future in batch:
                    future.set_result(position)
            if stop:
                return

    def _write(self, data: bytes) -> WalPosition:
        self._handle.write(data)
        self._handle.flush()
        if self._fsync:
            os.fdatasync(self._handle.fileno())
        self.fsyncs += 1
        position = WalPosition(self._segment, self._handle.tell())
        if position.offset >= self._segment_bytes:
            self._rotate()
        with self._durable:
            self._durable_position = position
            self._commits.append((position, time.time()))
        return position

    def unpublished_age_seconds(self, published: WalPosition) -> float:
        """Age of the oldest commit not yet published past `published` (0 when all are)."""
        with self._durable:
            while self._commits and self._commits[0][0] <= published:
                self._commits.popleft()
            return time.time() - self._commits[0][1] if self._commits else 0.0

    def _rotate(self) -> None:
        with self._lock:
            first = self._next_sequence
        self._handle.close()
        self._segment = first
        self._handle = cast(BinaryIO, segment_path(self.directory, first).open("ab"))
        self._fsync_dir()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._handle.close()

    def remove_segments_before(self, position: WalPosition) -> int:
        """Delete whole segments that every record of has been published past `position`."""
        removed = 0
        for first in list_segments(self.directory):
            if first < position.segment and first != self._segment:
                segment_path(self.directory, first).unlink(missing_ok=True)
                removed += 1
        return removed

    def depth_bytes(self, consumed: WalPosition) -> int:
        """Bytes logged but not yet consumed by the writer."""
        total = 0
        for first in list_segments(self.directory):
            if first < consumed.segment:
                continue
            try:
                size = segment_path(self.directory, first).stat().st_size
            except FileNotFoundError:
                continue
            total += size - consumed.offset if first == consumed.segment else size
        return max(total, 0)


class WalReader:
    """Consumer side: yields records after a position, following new segments as they appear."""

    def __init__(self, directory: Path, start: WalPosition) -> None:
        self.directory = directory
        self.position = start

    def read_available(
        self, max_records: int = 4096, want: Callable[[int], bool] | None = None
    ) -> Iterator[tuple[WalPosition, WalRecord]]:
        """Records durable on disk after self.position, oldest first; advances the position as it goes."""
        segments = list_segments(self.directory)
        produced = 0
        for first in segments:
            if first < self.position.segment:
                continue
            start = self.position.offset if first == self.position.segment else 0
            if first > self.position.segment:
                self.position = WalPosition(first, 0)
            path = segment_path(self.directory, first)
            try:
                scan = _scan(path, first, start, max_records - produced, want)
            except FileNotFoundError:
                continue
            for position, record in scan.records:
                self.position = position
                produced += 1
                yield position, record
            if scan.good_end > self.position.offset:  # past skipped or corrupt records too
                self.position = WalPosition(first, scan.good_end)
            if produced >= max_records:
                return
            if scan.torn:
                return  # a record being written right now: read it next time
