"""The lake writer of one WAL shard: tails the WAL, decodes, normalises and prices its records, publishes
Parquet parts and checkpoints how far it got. Runs in its own process (see writer_pool.py), so decoding
never competes with the receivers for the GIL; shard k of n takes the records whose sequence % n == k.

A part is published before the checkpoint moves past its records, so a crash in between replays them and
produces duplicates, which readers remove (at-least-once in, exactly-once on read).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from collector.decode import decode_logs, decode_traces
from collector.pricing import Pricer
from collector.rows import IngestStats, PartitionBuffer
from collector.wal import SIGNAL_TRACES, WalPosition, WalReader, list_segments
from store.lake import Lake

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WriterSettings:
    # Publish when this many rows are buffered... (10k rows of ~2 KB spans are ~50 MB of Arrow per writer)
    flush_rows: int = 10_000
    flush_interval_seconds: float = 1.0  # ...or when the oldest buffered row is this old
    # WAL records read between checks of flush_rows: a record is a whole export request (often 512 spans),
    # so reading 256 at once buffered up to 131k spans and 1.75 GB per writer in the benchmark.
    read_batch_records: int = 4
    compact_min_parts: int = 8
    compact_small_bytes: int = 64 * 1024 * 1024
    maintenance_interval_seconds: float = 30.0
    retention_days: int | None = None
    processes: int = 2  # one per core on the 2-core target machine; the receivers mostly wait on I/O


@dataclass
class WriterCounters:
    """Cumulative counts of one writer process, sent to the collector after every publish."""

    spans_written: int = 0
    logs_written: int = 0
    spans_dropped: int = 0
    wal_records_failed: int = 0
    parts_published: int = 0
    parts_compacted: int = 0
    spans_deduplicated: int = 0
    model_spans_without_model: int = 0
    model_spans_without_tokens: int = 0
    spans_without_user: int = 0
    unknown_price_models: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def checkpoint_path(wal_dir: Path, writer_id: str) -> Path:
    return wal_dir / f"checkpoint-{writer_id}.json"


def load_checkpoint(path: Path) -> WalPosition:
    try:
        doc = json.loads(path.read_text())
        return WalPosition(int(doc["segment"]), int(doc["offset"]))
    except FileNotFoundError:
        return WalPosition(0, 0)
    except (ValueError, KeyError, TypeError):
        log.error("writer: checkpoint %s unreadable; replaying the whole WAL (duplicates are removed on read)", path)
        return WalPosition(0, 0)


def resume_position(wal_dir: Path) -> WalPosition:
    """Where every shard resumes: the lowest checkpoint of all. Resuming a shard from its own checkpoint
    would lose records if the number of shards changed between runs; the lowest one at worst replays
    a second's worth of records twice, which reads deduplicate."""
    positions = [load_checkpoint(path) for path in wal_dir.glob("checkpoint-*.json")]
    if not positions:
        first = list_segments(wal_dir)
        return WalPosition(first[0], 0) if first else WalPosition(0, 0)
    return min(positions)


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
        wal_dir: Path,
        lake: Lake,
        pricers: Callable[[str], Pricer],
        settings: WriterSettings,
        *,
        shard: int = 0,
        shards: int = 1,
        start: WalPosition | None = None,
    ) -> None:
        self.lake = lake
        self.pricers = pricers
        self.settings = settings
        self.shard, self.shards = shard, shards
        self.counters = WriterCounters()
        self.checkpoint_path = checkpoint_path(wal_dir, lake.writer_id)
        self.published_position = start if start is not None else load_checkpoint(self.checkpoint_path)
        self._reader = WalReader(wal_dir, self.published_position)
        self._buffer = PartitionBuffer()
        self._buffered_since: float | None = None
        self._last_maintenance = time.monotonic()

    def _owns(self, sequence: int) -> bool:
        return sequence % self.shards == self.shard

    @property
    def read_position(self) -> WalPosition:
        return self._reader.position

    @property
    def buffered_rows(self) -> int:
        return self._buffer.rows

    def publish_due(self) -> bool:
        return self._buffer.rows >= self.settings.flush_rows or (
            self._buffered_since is not None
            and time.monotonic() - self._buffered_since >= self.settings.flush_interval_seconds
        )

    def drain_once(self) -> int:
        """Read and buffer what the WAL holds past the read position (one batch); returns records read."""
        read = 0
        stats = IngestStats()
        for _, record in self._reader.read_available(self.settings.read_batch_records, self._owns):
            read += 1
            if self._buffered_since is None:
                self._buffered_since = time.monotonic()
            try:
                if record.signal == SIGNAL_TRACES:
                    spans, skipped = decode_traces(record.body)
                    pricer = self.pricers(record.project)
                    self._buffer.add_spans(record.project, record.received_at_unix_nano, spans, pricer, stats)
                else:
                    logs, skipped = decode_logs(record.body, record.received_at_unix_nano)
                    self._buffer.add_logs(record.project, record.received_at_unix_nano, logs, stats)
            except Exception:
                # Admission already parsed this request, so this is a bug, not bad input: count the loss loudly.
                log.exception("writer: could not decode WAL record %d; its items are dropped", record.sequence)
                self.counters.wal_records_failed += 1
                continue
            self.counters.spans_dropped += skipped
        c = self.counters
        c.spans_without_user += stats.spans_without_user
        c.model_spans_without_model += stats.model_spans_without_model
        c.model_spans_without_tokens += stats.model_spans_without_tokens
        c.spans_dropped += stats.failed_spans
        for model, count in stats.unknown_price_models.items():
            c.unknown_price_models[model] = c.unknown_price_models.get(model, 0) + count
        return read

    def publish(self) -> None:
        """Publish everything buffered, then move the checkpoint to the read position."""
        position = self._reader.position
        tables = self._buffer.drain()
        for table, project, date, data in tables:
            self.lake.publish(table, project, date, data, {"wal_end": f"{position.segment}:{position.offset}"})
            if table == "spans":
                self.counters.spans_written += data.num_rows
            else:
                self.counters.logs_written += data.num_rows
        self.counters.parts_published += len(tables)
        if position != self.published_position:
            _store_checkpoint(self.checkpoint_path, position)
        self.published_position = position
        self._buffered_since = None

    def maintenance_due(self) -> bool:
        return time.monotonic() - self._last_maintenance >= self.settings.maintenance_interval_seconds

    def maintenance(self) -> None:
        """Compaction of small parts, retention, and deletion of retired parts (shard 0 only)."""
        self._last_maintenance = time.monotonic()
        for table in ("spans", "events"):
            candidates = self.lake.compaction_candidates(
                table, self.settings.compact_min_parts, self.settings.compact_small_bytes
            )
            for group in list(candidates):
                _, duplicates = self.lake.compact(group)
                self.counters.parts_compacted += len(group)
                if table == "spans":
                    self.counters.spans_deduplicated += duplicates
        if self.settings.retention_days is not None:
            for dropped in self.lake.drop_older_than(self.settings.retention_days):
                log.info("retention: dropped %s", dropped)
        self.lake.purge_retired()
