"""The Parquet lake's data operations: atomic part publish, compaction and retention.

Parts are immutable: written as `.tmp`, fsynced, then renamed into place, so readers only ever see whole
files. Compaction writes the merged part first and retires its inputs after a grace period (readers that
listed the old files a moment ago can still open them); duplicates that meanwhile exist in both are
removed by the readers' dedup (DESIGN invariant 2). Paths and the writer lock live in store/layout.py.
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
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from store.layout import TABLES, LakeLayout, Part, WriterLock, fsync_dir, partition_date
from store.schema import (
    EVENT_COLUMN_NAMES,
    EVENT_SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    SPAN_COLUMN_NAMES,
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
RETIRE_GRACE_SECONDS = 120.0
# A merge sorted all its rows in one DuckDB query, which needs them all in memory at once: 3M small spans
# (91 MB uncompressed) took +377 MB RSS under a 256 MB memory_limit, and 200k agent spans from the ingest
# benchmark (700 MB) failed with OutOfMemory, so such a partition never compacted again. A merge now sorts one
# trace-id range at a time, each about SORT_RANGE_BYTES (uncompressed, as the Parquet footers count them, plus
# SORT_ROW_BYTES a row), under COMPACTION_MEMORY_LIMIT, and streams it out. Merging the soak's 3M rows
# (56 parts): 48 MB ranges at 256 MB +390 MB peak, 14 s; 16 MB at 128 MB +285 MB, 22 s; 16 MB at 64 MB
# +233 MB, 23 s; the same with 200k agent spans added (800 MB): 41 s instead of OutOfMemory.
SORT_RANGE_BYTES = 16 * 1024 * 1024
SORT_ROW_BYTES = 64
COMPACTION_MEMORY_LIMIT = "128MB"
# The most rows one merge takes in: its time and peak grow with it (the soak's 3M rows above) and writer 0
# publishes nothing meanwhile; at 1M, a merge of the soak's spans takes ~7 s. Bigger parts stay as they are,
# like parts past small_bytes.
MERGE_MAX_ROWS = 1_000_000
_DEDUP_KEYS = {"spans": "trace_id, span_id", "events": "event_id"}
_COLUMN_NAMES = {"spans": SPAN_COLUMN_NAMES, "events": EVENT_COLUMN_NAMES}

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


def _trace_ranges(bounds: list[str]) -> list[tuple[str, list[str]]]:
    """SQL conditions (and their parameters) for the ranges between bounds, then one for rows without a trace id
    (log records not tied to a span). Plain comparisons, which DuckDB pushes into the Parquet scan, skipping the
    row groups of sorted (compacted) inputs whose trace-id statistics lie outside the range."""
    lows: list[str | None] = [None, *bounds]
    highs: list[str | None] = [*bounds, None]
    ranges: list[tuple[str, list[str]]] = []
    for low, high in zip(lows, highs, strict=True):
        conditions = ["trace_id >= ?"] * (low is not None) + ["trace_id < ?"] * (high is not None)
        params = [value for value in (low, high) if value is not None]
        ranges.append((" AND ".join(conditions) or "trace_id IS NOT NULL", params))
    ranges.append(("trace_id IS NULL", []))
    return ranges


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
    ) -> Part:
        """Write one immutable part atomically (tmp file, fsync, rename, fsync the directory)."""
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
                compression="zstd",
                compression_level=ZSTD_LEVEL,
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

    def compact(self, parts: list[Part], memory_limit: str = COMPACTION_MEMORY_LIMIT) -> tuple[Part, int]:
        """Merge parts of one partition into one, dropping duplicate rows (newest copy wins) and
        sorting by trace so a trace lookup reads few row groups. Returns the new part and the
        number of duplicate rows removed.

        The rows are sorted one trace-id range at a time (ranges cut at quantiles of a sample of trace ids,
        each within SORT_RANGE_BYTES and SORT_RANGE_ROWS) and streamed into the new part, so the memory a merge
        takes does not grow with the partition. A trace, and so every copy of a span, falls in one range."""
        first = parts[0]
        table, project, date = first.table, first.project, first.date
        assert all((p.table, p.project, p.date) == (table, project, date) for p in parts)
        final = self._new_part_path(table, project, date)
        tmp = final.with_suffix(".parquet.tmp")
        columns = ", ".join(f'"{c}"' for c in _COLUMN_NAMES[table])
        order = "trace_id, start_time_unix_nano" if table == "spans" else "trace_id, time_unix_nano"
        files = [str(p.path) for p in parts]
        # What sorting one row of each input costs (its share of the part's uncompressed bytes, plus the
        # per-row overhead): the ranges are cut by this weight, not by rows (agent spans from the ingest
        # benchmark are 3.5 KB a row, the soak's 30 B: cut by rows, one range held 600 MB and failed).
        row_cost: dict[str, float] = {}
        rows_in = 0
        for part in parts:
            footer = self._footer(part)
            if footer is not None and footer.rows:
                row_cost[str(part.path)] = footer.uncompressed_bytes / footer.rows + SORT_ROW_BYTES
                rows_in += footer.rows
        total_cost = sum(row_cost[str(p.path)] * f.rows for p in parts if (f := self._footer(p)) and f.rows)
        ranges = max(1, math.ceil(total_cost / SORT_RANGE_BYTES))
        target = _SCHEMAS[table]
        metadata = {
            **(target.metadata or {}),
            _COMPACTED_FROM_KEY: str(len(parts)).encode(),
            # The inputs' names let a reader that already summarised them see the merge as no change.
            COMPACTED_SOURCES_KEY: " ".join(p.path.name for p in parts).encode(),
        }
        import duckdb  # only the writer compacts; the receiving process never loads DuckDB

        self.compaction_tmp_dir.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(
            config={"memory_limit": memory_limit, "threads": 1, "temp_directory": str(self.compaction_tmp_dir)}
        )
        rows_out = 0
        try:
            bounds = self._range_bounds(con, files, row_cost, ranges)
            with pq.ParquetWriter(
                tmp, target.with_metadata(metadata), compression="zstd", compression_level=ZSTD_LEVEL
            ) as writer:
                for where, params in _trace_ranges(bounds):
                    relation = con.sql(
                        f"""SELECT {columns} FROM read_parquet(?, hive_partitioning=false, union_by_name=true)
                        WHERE {where}
                        QUALIFY row_number() OVER (
                            PARTITION BY {_DEDUP_KEYS[table]} ORDER BY received_at_unix_nano DESC) = 1
                        ORDER BY {order}""",
                        params=[files, *params],
                    )
                    assert relation is not None
                    for batch in relation.to_arrow_reader(COMPACTED_ROW_GROUP_ROWS):
                        writer.write_batch(batch.cast(target), row_group_size=COMPACTED_ROW_GROUP_ROWS)
                        rows_out += batch.num_rows
        finally:
            con.close()
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
        self.retire(parts)
        return Part(table, project, date, final), rows_in - rows_out

    @staticmethod
    def _range_bounds(con: Any, files: list[str], row_cost: dict[str, float], ranges: int) -> list[str]:
        """ranges - 1 ascending trace ids cutting the merge into ranges of about equal sorting cost, from a
        sample of rows each weighted by its file's cost per row (the ids need not be uniform: the benchmarks'
        are counters)."""
        if ranges <= 1:
            return []
        sample = con.execute(
            "SELECT trace_id, filename FROM read_parquet(?, hive_partitioning=false, filename=true) "
            "WHERE trace_id IS NOT NULL USING SAMPLE reservoir(8192 ROWS) REPEATABLE (7)",
            [files],
        ).fetchall()
        weighted = sorted((trace_id, row_cost.get(filename, SORT_ROW_BYTES)) for trace_id, filename in sample)
        total = sum(weight for _, weight in weighted)
        cuts: list[str] = []
        running = 0.0
        for trace_id, weight in weighted:
            running += weight
            due = running >= total * (len(cuts) + 1) / ranges and len(cuts) < ranges - 1
            if due and (not cuts or trace_id > cuts[-1]):
                cuts.append(trace_id)
        return cuts

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
