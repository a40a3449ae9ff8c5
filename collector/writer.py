"""The lake writer: tails the WAL, decodes, normalises and prices records, publishes Parquet parts, and
checkpoints how far it got. It is the lake's only writer (DESIGN invariant 3); it also runs compaction
and retention between batches.

A part is published before the checkpoint moves past its records, so a crash in between replays them
and produces duplicates, which readers remove (at-least-once in, exactly-once on read).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from collector.decode import decode_logs, decode_traces
from collector.metrics import IngestMetrics
from collector.pricing import Pricer
from collector.rows import IngestStats, PartitionBuffer
from collector.wal import SIGNAL_TRACES, WalPosition, WalReader, WriteAheadLog
from store.lake import Lake

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WriterSettings:
    flush_rows: int = 50_000  # publish when this many rows are buffered...
    flush_interval_seconds: float = 1.0  # ...or when the oldest buffered row is this old
    read_batch_records: int = 512
    compact_min_parts: int = 8
    compact_small_bytes: int = 64 * 1024 * 1024
    maintenance_interval_seconds: float = 30.0
    retention_days: int | None = None


def _load_checkpoint(path: Path) -> WalPosition:
    try:
        doc = json.loads(path.read_text())
        return WalPosition(int(doc["segment"]), int(doc["offset"]))
    except FileNotFoundError:
        return WalPosition(0, 0)
    except (ValueError, KeyError, TypeError):
        log.error("writer: checkpoint %s unreadable; replaying the whole WAL (duplicates are removed on read)", path)
        return WalPosition(0, 0)


def _store_checkpoint(path: Path, position: WalPosition) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as handle:
        json.dump({"segment": position.segment, "offset": position.offset}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class LakeWriter:
    def __init__(
        self,
        wal: WriteAheadLog,
        lake: Lake,
        pricers: Callable[[str], Pricer],
        metrics: IngestMetrics,
        settings: WriterSettings | None = None,
    ) -> None:
        self.wal = wal
        self.lake = lake
        self.pricers = pricers
        self._backlog_cache = (0.0, 0)
        self.metrics = metrics
        self.settings = settings or WriterSettings()
        self.checkpoint_path = wal.directory / f"checkpoint-{lake.writer_id}.json"
        self.published_position = _load_checkpoint(self.checkpoint_path)
        self._reader = WalReader(wal.directory, self.published_position)
        self._buffer = PartitionBuffer()
        self._buffered_since: float | None = None
        self._buffered_first_received_ns: int | None = None
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._flush_requested = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_maintenance = time.monotonic()
        metrics.wal_depth_bytes = lambda: self.wal.depth_bytes(self.published_position)
        metrics.flush_lag_seconds = self._flush_lag

    def backlog_bytes(self) -> int:
        """WAL bytes not yet published, re-measured at most every 100 ms (it is asked on every export)."""
        measured_at, value = self._backlog_cache
        now = time.monotonic()
        if now - measured_at > 0.1:
            value = self.wal.depth_bytes(self.published_position)
            self._backlog_cache = (now, value)
        return value

    def _flush_lag(self) -> float:
        first = self._buffered_first_received_ns
        if first is None:
            return 0.0 if self.wal.durable_position <= self.published_position else 0.001
        return max(0.0, (time.time_ns() - first) / 1e9)

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lake-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self._drain_once()
        self._publish()

    def flush(self, timeout: float = 60.0) -> None:
        """Block until everything durable in the WAL when called is published and queryable."""
        target = self.wal.durable_position
        deadline = time.monotonic() + timeout
        with self._progress:
            while self.published_position < target:
                self._flush_requested.set()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"writer did not reach {target} within {timeout}s")
                self._progress.wait(min(remaining, 0.05))

    # --- main loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                read = self._drain_once()
                due = self._buffer.rows >= self.settings.flush_rows or (
                    self._buffered_since is not None
                    and time.monotonic() - self._buffered_since >= self.settings.flush_interval_seconds
                )
                if due or (self._flush_requested.is_set() and read == 0):
                    self._flush_requested.clear()
                    self._publish()
                if read == 0 and not self._flush_requested.is_set():
                    self.wal.wait_for_change(self.wal.durable_position, timeout=0.05)
                if time.monotonic() - self._last_maintenance >= self.settings.maintenance_interval_seconds:
                    self.maintenance()
            except Exception:  # keep the writer alive: a failure here must never stop ingest
                log.exception("writer: batch failed; retrying")
                time.sleep(0.5)

    def _drain_once(self) -> int:
        read = 0
        stats = IngestStats()
        for _, record in self._reader.read_available(self.settings.read_batch_records):
            read += 1
            if self._buffered_since is None:
                self._buffered_since = time.monotonic()
                self._buffered_first_received_ns = record.received_at_unix_nano
            try:
                if record.signal == SIGNAL_TRACES:
                    spans, skipped = decode_traces(record.body)
                    self._buffer.add_spans(
                        record.project, record.received_at_unix_nano, spans, self.pricers(record.project), stats
                    )
                else:
                    logs, skipped = decode_logs(record.body, record.received_at_unix_nano)
                    self._buffer.add_logs(record.project, record.received_at_unix_nano, logs, stats)
            except Exception:
                # Admission already parsed this request, so this is a bug, not bad input: count the loss loudly.
                log.exception("writer: could not decode WAL record %d; its items are dropped", record.sequence)
                with self.metrics.lock:
                    self.metrics.wal_records_failed += 1
                continue
            if skipped:
                with self.metrics.lock:
                    self.metrics.spans_dropped += skipped
        if read:
            with self.metrics.lock:
                self.metrics.spans_without_user += stats.spans_without_user
                self.metrics.model_spans_without_model += stats.model_spans_without_model
                self.metrics.model_spans_without_tokens += stats.model_spans_without_tokens
                self.metrics.unknown_price_models.update(stats.unknown_price_models)
                self.metrics.spans_dropped += stats.failed_spans
        return read

    def _publish(self) -> None:
        position = self._reader.position
        tables = self._buffer.drain()
        written = {"spans": 0, "events": 0}
        for table, project, date, data in tables:
            self.lake.publish(table, project, date, data, {"wal_end": f"{position.segment}:{position.offset}"})
            written[table] += data.num_rows
        if position != self.published_position:
            _store_checkpoint(self.checkpoint_path, position)
        with self.metrics.lock:
            self.metrics.spans_written += written["spans"]
            self.metrics.logs_written += written["events"]
            self.metrics.parts_published += len(tables)
            if tables:
                self.metrics.last_publish_unix = time.time()
        self._buffered_since = None
        self._buffered_first_received_ns = None
        with self._progress:
            self.published_position = position
            self._progress.notify_all()
        self.wal.remove_segments_before(position)

    def maintenance(self) -> None:
        """Compaction of small parts, retention, and deletion of retired parts."""
        self._last_maintenance = time.monotonic()
        for table in ("spans", "events"):
            for group in list(
                self.lake.compaction_candidates(
                    table, self.settings.compact_min_parts, self.settings.compact_small_bytes
                )
            ):
                _, duplicates = self.lake.compact(group)
                with self.metrics.lock:
                    self.metrics.parts_compacted += len(group)
                    if table == "spans":
                        self.metrics.spans_deduplicated += duplicates
        if self.settings.retention_days is not None:
            for dropped in self.lake.drop_older_than(self.settings.retention_days):
                log.info("retention: dropped %s", dropped)
        self.lake.purge_retired()
