"""Reading one trace's rows out of span parts: row groups chosen by their trace_id statistics, then by a look at
their trace_id column, and only the row groups that hold the trace decoded in full.

Compacted parts are sorted by trace in 4,096-row groups, so in every part exactly one row group's min/max range
covers any trace id, whether the part holds that trace or not. DuckDB's scan then decodes that group's columns
in every part of the day (14 ms a part for a trace's 41 columns over a 10M lake). Reading the candidate
groups' trace_id column first (about 0.5 ms) and decoding the rest only where the id is present reads one group
instead of one per part. Footers are parsed once per file and kept (files are immutable; a path is never reused).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Row groups up to this size are decoded whole by pyarrow (a 4,096-row group of a trace's 41 columns: 9.7 ms);
# bigger ones, e.g. a writer's 32,768-row parts, go to DuckDB, which decodes only the matching rows' columns
# (a 23,789-row group: 30 ms against pyarrow's 62 ms).
_DECODE_WHOLE_ROWS = 8_192
# Footers kept: a 10M-span lake of a month has about 100 parts; a year of busy days stays well under this.
_FOOTER_CACHE_FILES = 4096


class TraceReader:
    """Thread-safe; one per process. `duckdb` scans the row groups too big to decode whole."""

    def __init__(self, duckdb: duckdb.DuckDBPyConnection) -> None:
        self._duckdb = duckdb
        self._footers: OrderedDict[str, pq.FileMetaData] = OrderedDict()
        self._lock = threading.Lock()

    def _footer(self, path: str) -> pq.FileMetaData:
        with self._lock:
            cached = self._footers.get(path)
            if cached is not None:
                self._footers.move_to_end(path)
                return cached
        footer = pq.read_metadata(path)
        with self._lock:
            self._footers[path] = footer
            while len(self._footers) > _FOOTER_CACHE_FILES:
                self._footers.popitem(last=False)
        return footer

    def read(self, files: Sequence[str], trace_id: str, columns: Sequence[str]) -> pa.Table | None:
        """The rows of `trace_id` in `files` (every copy: the caller deduplicates), with `columns`, or None when
        there are none; a column a file lacks (written before it existed) comes back null."""
        found, big = [], []
        for path in files:
            footer = self._footer(path)
            names = set(footer.schema.names)
            if "trace_id" not in names:
                continue
            groups = _candidate_groups(footer, trace_id)
            if not groups:
                continue
            handle = pq.ParquetFile(path, metadata=footer)
            hits = [g for g in groups if _holds(handle.read_row_group(g, columns=["trace_id"]), trace_id)]
            if not hits:
                continue
            if sum(footer.row_group(g).num_rows for g in hits) > _DECODE_WHOLE_ROWS:
                big.append(path)
                continue
            present = [c for c in columns if c in names]
            table = handle.read_row_groups(hits, columns=present)
            found.append(table.filter(pc.equal(table["trace_id"], trace_id)))
        if big:
            found.append(self._scan(big, trace_id, columns))
        if not found:
            return None
        return pa.concat_tables(found, promote_options="permissive")

    def _scan(self, files: list[str], trace_id: str, columns: Sequence[str]) -> pa.Table:
        """DuckDB's filtered scan, for row groups too big to decode whole."""
        selected = ", ".join(f'"{c}"' for c in columns)
        con = self._duckdb.cursor()
        try:
            return con.sql(
                f"""SELECT {selected} FROM read_parquet(?, hive_partitioning=false, union_by_name=true)
                    WHERE trace_id = ?""",
                params=[files, trace_id],
            ).to_arrow_table()
        finally:
            con.close()


def _candidate_groups(footer: pq.FileMetaData, trace_id: str) -> list[int]:
    column = footer.schema.names.index("trace_id")
    groups = []
    for g in range(footer.num_row_groups):
        stats = footer.row_group(g).column(column).statistics
        if stats is None or not stats.has_min_max or stats.min <= trace_id <= stats.max:
            groups.append(g)
    return groups


def _holds(ids: pa.Table, trace_id: str) -> bool:
    return bool(pc.any(pc.equal(ids["trace_id"], trace_id)).as_py())
