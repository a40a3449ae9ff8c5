"""Which parts of a partition hold which traces: per part, the sorted hashes of its trace ids, so the spans of a
trace seen before are read from the parts that hold it instead of from every part of the day.

An exporter's batches cut long traces (the OTel SDK sends what it holds every 5 s), so most increments touch a
trace that earlier parts began. Reading those traces from every part of the day made each increment cost what
the day held: bench/ingest.py's 200k spans with every trace split over two parts (/tmp/prof/make_split.py)
took the index 57 us of CPU a span against 27 with whole traces, and the gap grows with the day's part count.

The hashes live in memory only (8 bytes per trace per part, about 12 MB for a 10M-span day); a part is read
for them (its trace_id column) the first time it is asked about. A hash collision only adds a part to read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from store.layout import Part


def _hashes(trace_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Sorted distinct 64-bit hashes of the trace ids (nulls left out)."""
    series = pl.Series(trace_ids).drop_nulls()
    return np.unique(series.hash(seed=0).to_numpy())


class PartTraces:
    """Not thread-safe: the index calls it under its refresh lock."""

    def __init__(self) -> None:
        self._keys: dict[Path, tuple[str, np.ndarray]] = {}  # part -> (project, hashes)

    def holding(self, parts: list[Part], trace_ids: pa.Array | pa.ChunkedArray) -> list[Part]:
        """The parts that hold a span of one of `trace_ids` (and, rarely, one that only holds a colliding hash).
        Raises FileNotFoundError for a part retired since it was listed, like any read of it."""
        wanted = _hashes(trace_ids)
        if wanted.size == 0:
            return []
        return [part for part in parts if np.isin(wanted, self._of(part), assume_unique=True).any()]

    def keep_only(self, project: str, live: set[Path]) -> None:
        """Forget the project's parts that are no longer listed (merged away, dropped by retention)."""
        for path in [path for path, (owner, _) in self._keys.items() if owner == project and path not in live]:
            del self._keys[path]

    def _of(self, part: Part) -> np.ndarray:
        known = self._keys.get(part.path)
        if known is None:
            column = pq.read_table(part.path, columns=["trace_id"], use_threads=False).column(0)
            known = self._keys[part.path] = (part.project, _hashes(column))
        return known[1]
