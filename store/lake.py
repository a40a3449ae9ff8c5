"""The Parquet lake's data operations: atomic part publish, compaction and retention.

Parts are immutable: written as `.tmp`, fsynced, then renamed into place, so readers only ever see whole
files. Compaction writes the merged part first and retires its inputs after a grace period (readers that
listed the old files a moment ago can still open them); duplicates that meanwhile exist in both are
removed by the readers' dedup (docs/design.md invariant 2). Paths and the writer lock live in store/layout.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc
import pyarrow.parquet as pq

from store.layout import TABLES, LakeLayout, Part, WriterLock, fsync_dir, partition_date
from store.schema import (
    EVENT_SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    SPAN_SCHEMA,
)

log = logging.getLogger(__name__)

# Big row groups: Parquet zstd-1 with 25.6k-row groups measured 76.6k spans/s; small groups cost
# both write speed and scan speed.
ROW_GROUP_ROWS = 32_768
# Compacted parts are sorted by trace and read mostly one trace at a time: a lookup decodes whole row groups,
# so smaller groups there (a trace over a 10M lake's 3-part day: 18.4 -> 12.8 ms per part at 4,096 rows).
COMPACTED_ROW_GROUP_ROWS = 4_096
ZSTD_LEVEL = 1
# A writer's part lives until a merge rewrites it with zstd (every maintenance round, once a partition holds
# compact_min_parts of them): written with snappy, Parquet encoding costs 4.9 instead of 6.9 us a span of the
# ingest benchmark (bench/ingest.py's spans, 5,000-row part), for a part 1.85x the size (4.6 vs 2.5 MB).
SHORT_LIVED_COMPRESSION = "snappy"
# Columns whose values are nearly all distinct (ids, message and attribute JSON): a dictionary page is built for
# them, then abandoned at its 1 MB limit, which only cost time (the same part 6.9 -> 6.6 us a span without).
_NO_DICTIONARY = frozenset(
    {"span_id", "tool_call_id", "tool_arguments", "tool_result", "response_id", "input_messages", "output_messages",
     "attributes", "events", "event_id", "body"}
)  # fmt: skip


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    return [name for name in schema.names if name not in _NO_DICTIONARY]


RETIRE_GRACE_SECONDS = 120.0
# A `.parquet.tmp` older than this was left by a killed process: a part write takes seconds, a 1M-row merge ~30 s.
UNFINISHED_GRACE_SECONDS = 3600.0
# A merge sorted all its rows in one DuckDB query, which needs them all in memory at once: 3M small spans
# (91 MB uncompressed) took +377 MB RSS under a 256 MB memory_limit, and 200k agent spans from the ingest
# benchmark (700 MB) failed with OutOfMemory, so such a partition never compacted again. A merge bigger than
# SORT_RANGE_BYTES (uncompressed, as the Parquet footers count them, plus SORT_ROW_BYTES a row) is now cut into
# trace-id ranges of about that size, each deduplicated and sorted on its own (see _spilled_ranges).
SORT_RANGE_BYTES = 16 * 1024 * 1024
SORT_ROW_BYTES = 64
# Trace ids sampled to place the range bounds: 64k ids put each range within ~1 % of its share.
BOUNDS_SAMPLE_IDS = 65_536
# The most rows one merge takes in: its time and peak grow with it (the soak's 3M rows above) and writer 0
# publishes nothing meanwhile; at 1M, a merge of the soak's spans takes ~7 s. Bigger parts stay as they are,
# like parts past small_bytes.
MERGE_MAX_ROWS = 1_000_000
_DEDUP_KEYS = {"spans": ("trace_id", "span_id"), "events": ("event_id",)}
_SORT_KEYS = {"spans": ("trace_id", "start_time_unix_nano"), "events": ("trace_id", "time_unix_nano")}
# Rows per batch when dealing inputs to range spill files: 4,096 agent spans are ~14 MB decoded.
SPILL_BATCH_ROWS = 4_096

# Space-separated names of the parts a compacted part was merged from (all in its own partition directory).
COMPACTED_SOURCES_KEY = b"agentflight.compacted_sources"
_COMPACTED_FROM_KEY = b"agentflight.compacted_from"
_SCHEMAS = {"spans": SPAN_SCHEMA, "events": EVENT_SCHEMA}

__all__ = ["TABLES", "Lake", "Part", "WriterLock", "compacted_sources", "partition_date"]


@dataclass(frozen=True, slots=True)
class _Footer:
    rows: int
    uncompressed_bytes: int
    compacted: bool  # merged by compact() before (else a writer's part, or a repriced one)


def _conformed_batches(path: Path, target: pa.Schema) -> Iterator[pa.RecordBatch]:
    """A part's rows in `target`'s columns and types, a batch at a time; a column the part predates is all
    nulls (what DuckDB's union_by_name gives the one-query merge)."""
    with pq.ParquetFile(path) as file:
        present = set(file.schema_arrow.names)
        wanted = [name for name in target.names if name in present]
        for batch in file.iter_batches(batch_size=SPILL_BATCH_ROWS, columns=wanted, use_threads=False):
            columns = [
                batch.column(field.name).cast(field.type) if field.name in present
                else pa.nulls(batch.num_rows, field.type)
                for field in target
            ]  # fmt: skip
            yield pa.RecordBatch.from_arrays(columns, schema=target)


def _range_bounds(parts: list[Part], row_cost: dict[Path, float], ranges: int) -> list[str]:
    """ranges - 1 ascending trace ids cutting the parts' rows into ranges of about equal cost, each row weighed
    by its part's cost per row (the ids need not be uniform: the benchmarks' are counters), from every
    stride-th trace id of each part (at most BOUNDS_SAMPLE_IDS in all)."""
    if ranges <= 1:
        return []
    rows = sum(pq.read_metadata(part.path).num_rows for part in parts)
    stride = max(1, math.ceil(rows / BOUNDS_SAMPLE_IDS))
    ids: list[pa.Array] = []
    weights: list[np.ndarray] = []
    for part in parts:
        column = pq.read_table(part.path, columns=["trace_id"], use_threads=False).column(0)
        sample = column.take(pa.array(np.arange(0, len(column), stride)))
        ids.extend(sample.chunks)
        weights.append(np.full(len(sample), row_cost.get(part.path, SORT_ROW_BYTES)))
    sampled = pa.chunked_array(ids, pa.string())
    valid = len(sampled) - sampled.null_count
    if not valid:
        return []
    order = pc.sort_indices(sampled).to_numpy()[:valid]  # nulls sort last
    running = np.cumsum(np.concatenate(weights)[order])
    positions = np.minimum(np.searchsorted(running, running[-1] * np.arange(1, ranges) / ranges), valid - 1)
    cuts: list[str] = []
    for trace_id in sampled.take(pa.array(order[positions])).to_pylist():
        if trace_id is not None and (not cuts or trace_id > cuts[-1]):
            cuts.append(trace_id)
    return cuts


def _spilled_ranges(parts: list[Part], bounds: list[str], target: pa.Schema, spill_dir: Path) -> Iterator[pa.Table]:
    """Deal every row of `parts` to the spill file of its trace-id range (ranges split at `bounds`, then one
    for rows without a trace id), decoding each input once; then yield the ranges in trace-id order.
    Re-reading every input once per range instead (with the range as a filter DuckDB pushes into the scan,
    which skips nothing in unsorted writer parts) took 54 s of CPU to merge 200k agent spans (45 ranges).
    The spill files are uncompressed: lz4 cost more CPU (4 s of 11) than the page cache saves."""
    cuts = np.asarray(bounds, dtype=object)
    no_trace = len(bounds) + 1
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    try:
        for part in parts:
            for batch in _conformed_batches(part.path, target):
                trace_ids = batch.column("trace_id")
                numbers = np.searchsorted(cuts, pc.fill_null(trace_ids, "").to_numpy(zero_copy_only=False), "right")
                if trace_ids.null_count:
                    numbers[trace_ids.is_null().to_numpy(zero_copy_only=False)] = no_trace
                dealt = batch.take(pa.array(np.argsort(numbers, kind="stable")))
                offset = 0
                for number, count in enumerate(np.bincount(numbers, minlength=no_trace + 1).tolist()):
                    if count:
                        if number not in writers:
                            writers[number] = pa.ipc.new_file(spill_dir / f"range-{number:05d}.arrow", target)
                        writers[number].write_batch(dealt.slice(offset, count))
                    offset += count
    finally:
        for writer in writers.values():
            writer.close()
    for number in sorted(writers):
        path = spill_dir / f"range-{number:05d}.arrow"
        with pa.memory_map(str(path)) as source:
            yield pa.ipc.open_file(source).read_all()
        path.unlink()


def _deduplicated_sorted(rows: pa.Table, keys: tuple[str, ...], order: tuple[str, ...]) -> pa.Table:
    """`rows` with one row per `keys` (the one received last) in `order`. Only the key columns are sorted;
    the wide rows are gathered once, at the end."""
    if not rows.num_rows:
        return rows
    by_key = pc.sort_indices(
        rows.select([*keys, "received_at_unix_nano"]),
        sort_keys=[*((key, "ascending") for key in keys), ("received_at_unix_nano", "descending")],
    )
    repeat = np.ones(rows.num_rows - 1, dtype=bool)
    for key in keys:
        column = rows.column(key).take(by_key)
        before, after = column.slice(0, len(column) - 1), column.slice(1)
        same = pc.fill_null(pc.equal(before, after), False).to_numpy(zero_copy_only=False)
        both_null = pc.and_(pc.is_null(before), pc.is_null(after)).to_numpy(zero_copy_only=False)
        repeat &= same | both_null
    kept = by_key.filter(pa.array(np.concatenate([[True], ~repeat])))
    in_order = pc.sort_indices(rows.select(list(order)).take(kept), sort_keys=[(c, "ascending") for c in order])
    return rows.take(kept.take(in_order))


def compacted_sources(part: Part) -> frozenset[str] | None:
    """The names of the parts `part` was compacted from, or None when it holds spans of its own (a writer's
    part, a repriced part, or a part compacted before the names were recorded)."""
    metadata = pq.read_metadata(part.path).metadata or {}
    names = metadata.get(COMPACTED_SOURCES_KEY)
    return frozenset(names.decode().split()) if names else None


class Lake(LakeLayout):
    """A LakeLayout that also writes: publishing, compaction, retirement of merged parts, retention."""

    def __init__(self, root: Path, writer_id: str = "w0") -> None:
        super().__init__(root, writer_id)
        self._footers: dict[Path, _Footer] = {}

    # --- publishing -------------------------------------------------------------------------------

    def _new_part_path(self, table: str, project: str, date: str) -> Path:
        directory = self.partition_dir(table, project, date)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"part-{time.time_ns()}-{self.writer_id}-{uuid.uuid4().hex[:12]}.parquet"
        return directory / name

    def publish(
        self,
        table: str,
        project: str,
        date: str,
        data: pa.Table,
        extra_metadata: dict[str, str],
        row_group_rows: int = ROW_GROUP_ROWS,
        *,
        short_lived: bool = False,
    ) -> Part:
        """Write one immutable part atomically (tmp file, fsync, rename, fsync the directory). A short-lived part
        (a writer's, which a merge will rewrite) trades size for write speed (SHORT_LIVED_COMPRESSION)."""
        final = self._new_part_path(table, project, date)
        tmp = final.with_suffix(".parquet.tmp")
        metadata = dict(data.schema.metadata or {})
        metadata[SCHEMA_VERSION_KEY] = str(SCHEMA_VERSION).encode()
        for key, value in extra_metadata.items():
            metadata[f"agentflight.{key}".encode()] = value.encode()
        data = data.replace_schema_metadata(metadata)
        with tmp.open("wb") as handle:
            pq.write_table(
                data,
                handle,
                compression=SHORT_LIVED_COMPRESSION if short_lived else "zstd",
                compression_level=None if short_lived else ZSTD_LEVEL,
                use_dictionary=_dictionary_columns(data.schema),
                row_group_size=row_group_rows,
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
        return Part(table, project, date, final)

    # --- compaction -------------------------------------------------------------------------------

    def compaction_candidates(
        self, table: str, min_parts: int, small_bytes: int, max_rows: int = MERGE_MAX_ROWS
    ) -> Iterator[list[Part]]:
        """Per partition, the parts worth merging (at least min_parts of them), smallest first: every small part
        a writer published, and a part merged before only while it is no bigger than the rest of the group
        together. Re-merging the whole day at every cycle made each cycle cost what the day held (the 10-minute
        soak: 0.9 s -> 24 s per merge, writer 0's RSS raised for most of each minute); this way a row is
        rewritten about log2(part / cycle's new rows) times."""
        by_partition: dict[tuple[str, str], list[tuple[Part, _Footer]]] = {}
        listed = self.parts(table)
        for part in listed:
            if part.size < small_bytes:
                footer = self._footer(part)
                if footer is not None and footer.rows < max_rows:
                    by_partition.setdefault((part.project, part.date), []).append((part, footer))
        live, base = {part.path for part in listed}, self.table_dir(table)
        self._footers = {path: f for path, f in self._footers.items() if path in live or not path.is_relative_to(base)}
        for members in by_partition.values():
            members.sort(key=lambda member: (member[1].compacted, member[1].uncompressed_bytes, member[0].path.name))
            group: list[Part] = []
            rows = size = 0
            for part, footer in members:
                if footer.compacted and footer.uncompressed_bytes > size:
                    break  # rewriting it would cost more than the new rows are worth: wait for more of them
                if group and rows + footer.rows > max_rows:
                    break
                group.append(part)
                rows += footer.rows
                size += footer.uncompressed_bytes
            if len(group) >= min_parts:
                yield group

    def _footer(self, part: Part) -> _Footer | None:
        """Rows, uncompressed bytes and origin of a part, from its footer (read once: parts are immutable)."""
        footer = self._footers.get(part.path)
        if footer is None:
            try:
                metadata = pq.read_metadata(part.path)
            except (FileNotFoundError, OSError, pa.ArrowInvalid):
                return None  # retired or being retired meanwhile
            uncompressed = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
            compacted = _COMPACTED_FROM_KEY in (metadata.metadata or {})
            footer = self._footers[part.path] = _Footer(metadata.num_rows, uncompressed, compacted)
        return footer

    def compact(self, parts: list[Part]) -> tuple[Part, int]:
        """Merge parts of one partition into one, dropping duplicate rows (newest copy wins) and
        sorting by trace so a trace lookup reads few row groups. Returns the new part and the
        number of duplicate rows removed.

        A merge bigger than SORT_RANGE_BYTES is cut into trace-id ranges of about that size: one pass over the
        inputs deals each row to its range's spill file, then each range is deduplicated, sorted and written
        out in turn, so the memory a merge takes does not grow with the partition and every input is decoded
        once. A trace, and so every copy of a span, falls in one range."""
        first = parts[0]
        table, project, date = first.table, first.project, first.date
        assert all((p.table, p.project, p.date) == (table, project, date) for p in parts)
        final = self._new_part_path(table, project, date)
        tmp = final.with_suffix(".parquet.tmp")
        # What holding one row of each input costs (its share of the part's uncompressed bytes, plus the
        # per-row overhead): ranges are cut by this weight, not by rows (agent spans from the ingest
        # benchmark are 3.5 KB a row, the soak's 30 B: cut by rows, one range held 600 MB).
        row_cost: dict[Path, float] = {}
        rows_in = 0
        for part in parts:
            footer = self._footer(part)
            if footer is not None and footer.rows:
                row_cost[part.path] = footer.uncompressed_bytes / footer.rows + SORT_ROW_BYTES
                rows_in += footer.rows
        total_cost = sum(row_cost.get(p.path, 0.0) * f.rows for p in parts if (f := self._footer(p)))
        target = _SCHEMAS[table]
        metadata = {
            **(target.metadata or {}),
            _COMPACTED_FROM_KEY: str(len(parts)).encode(),
            # The inputs' names let a reader that already summarised them see the merge as no change.
            COMPACTED_SOURCES_KEY: " ".join(p.path.name for p in parts).encode(),
        }
        spill_dir = self.compaction_tmp_dir / f"merge-{uuid.uuid4().hex[:12]}"
        rows_out = 0
        try:
            bounds = _range_bounds(parts, row_cost, math.ceil(total_cost / SORT_RANGE_BYTES))
            if bounds:
                spill_dir.mkdir(parents=True)
                ranges: Iterator[pa.Table] = _spilled_ranges(parts, bounds, target, spill_dir)
            else:
                batches = [batch for part in parts for batch in _conformed_batches(part.path, target)]
                ranges = iter([pa.Table.from_batches(batches, schema=target)])
            with pq.ParquetWriter(
                tmp,
                target.with_metadata(metadata),
                compression="zstd",
                compression_level=ZSTD_LEVEL,
                use_dictionary=_dictionary_columns(target),
            ) as writer:
                for rows in ranges:
                    merged = _deduplicated_sorted(rows, _DEDUP_KEYS[table], _SORT_KEYS[table])
                    writer.write_table(merged, row_group_size=COMPACTED_ROW_GROUP_ROWS)
                    rows_out += merged.num_rows
        finally:
            shutil.rmtree(spill_dir, ignore_errors=True)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
        self.retire(parts)
        return Part(table, project, date, final), rows_in - rows_out

    def retire(self, parts: list[Part]) -> None:
        """Move merged inputs out of the read path; delete them once the grace period has passed."""
        self.retired_dir.mkdir(parents=True, exist_ok=True)
        for part in parts:
            target = self.retired_dir / f"{time.time_ns()}-{part.table}-{part.project}-{part.path.name}"
            try:
                os.replace(part.path, target)
            except FileNotFoundError:
                continue

    def purge_retired(self, grace_seconds: float = RETIRE_GRACE_SECONDS) -> int:
        if not self.retired_dir.exists():
            return 0
        cutoff = time.time_ns() - int(grace_seconds * 1e9)
        removed = 0
        for path in self.retired_dir.iterdir():
            stamp = path.name.split("-", 1)[0]
            if stamp.isdigit() and int(stamp) < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def remove_unfinished(self, older_than_seconds: float = UNFINISHED_GRACE_SECONDS) -> int:
        """Delete part files a process was killed while writing (`.parquet.tmp`, never renamed into place) once
        they are older than any write takes."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for table in TABLES:
            for path in self.table_dir(table).glob("*/*/*.parquet.tmp"):
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue  # renamed into place or removed meanwhile
        return removed

    # --- retention --------------------------------------------------------------------------------

    def drop_older_than(self, days: int, today: dt.date | None = None) -> list[Path]:
        """Retention drops whole date partitions older than `days` (never part of one)."""
        today = today or dt.datetime.now(tz=dt.UTC).date()
        cutoff = (today - dt.timedelta(days=days)).isoformat()
        dropped = []
        for table in TABLES:
            base = self.table_dir(table)
            if not base.exists():
                continue
            for project_dir in base.iterdir():
                for date_dir in project_dir.glob("date=*"):
                    if date_dir.name.split("=", 1)[1] < cutoff:
                        shutil.rmtree(date_dir, ignore_errors=True)
                        dropped.append(date_dir)
        return dropped
