"""The lake writer of one WAL shard: tails the WAL, decodes, normalises and prices its records, publishes
Parquet parts and checkpoints how far it got. Runs in its own process (see writer_pool.py), so decoding
never competes with the receivers for the GIL; shard k of n takes the records whose sequence % n == k.

A part is published before the checkpoint moves past its records, so a crash in between replays them and
produces duplicates, which readers remove (at-least-once in, exactly-once on read).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from collector.checkpoints import checkpoint_path, load_checkpoint, store_checkpoint
from collector.config import WriterSettings
from collector.decode import decode_logs, decode_traces
from collector.metrics import WriterCounters
from collector.pricing import Pricer
from collector.rows import IngestStats, PartitionBuffer
from collector.wal import SIGNAL_TRACES, WalPosition, WalReader
from store.lake import Lake

log = logging.getLogger(__name__)


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
        self._oldest_received_ns: int | None = None

    def _owns(self, sequence: int) -> bool:
        return sequence % self.shards == self.shard

    @property
    def read_position(self) -> WalPosition:
        return self._reader.position

    def publish_due(self, *, caught_up: bool = False) -> bool:
        """Publish at flush_rows, or once the oldest buffered row has waited flush_interval_seconds in this
        writer. A writer that has caught up with the WAL also publishes rows *received* that long ago: after a
        burst, the rows of its tail were received seconds before they were read, and holding them another
        interval kept the last ~4k of the ingest benchmark's 200k spans unqueryable for up to a second with
        both writers idle (bench/ingest.py, 2026-12-04). While behind it does not, or every batch read would
        be its own small part."""
        if self._buffered_since is None:
            return False
        interval = self.settings.flush_interval_seconds
        if self._buffer.rows >= self.settings.flush_rows or time.monotonic() - self._buffered_since >= interval:
            return True
        oldest = self._oldest_received_ns
        return caught_up and oldest is not None and time.time_ns() - oldest >= interval * 1e9

    def drain_once(self) -> int:
        """Read and buffer what the WAL holds past the read position (one batch); returns records read."""
        read = 0
        stats = IngestStats()
        for _, record in self._reader.read_available(self.settings.read_batch_records, self._owns):
            read += 1
            if self._buffered_since is None:
                self._buffered_since = time.monotonic()
            if self._oldest_received_ns is None or record.received_at_unix_nano < self._oldest_received_ns:
                self._oldest_received_ns = record.received_at_unix_nano
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
        c.unknown_price_models.update(stats.unknown_price_models)
        return read

    def publish(self) -> None:
        """Publish everything buffered, then move the checkpoint to the read position."""
        position = self._reader.position
        tables = self._buffer.drain()
        for table, project, date, data in tables:
            wal_end = {"wal_end": f"{position.segment}:{position.offset}"}
            self.lake.publish(table, project, date, data, wal_end, short_lived=True)
            if table == "spans":
                self.counters.spans_written += data.num_rows
            else:
                self.counters.logs_written += data.num_rows
        self.counters.parts_published += len(tables)
        if position != self.published_position:
            store_checkpoint(self.checkpoint_path, position)
        self.published_position = position
        self._buffered_since = None
        self._oldest_received_ns = None
