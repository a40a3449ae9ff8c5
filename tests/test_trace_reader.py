"""store/trace_reader.py against DuckDB's filtered scan of the same files: writer parts, compacted parts sorted in
small row groups, a part with one big row group (the DuckDB path), and a part written before a column existed."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from collector.service import Collector
from store.lake import Lake
from store.trace_reader import TraceReader
from tests.conftest import CAPTURED, grpc_export

COLUMNS = ("trace_id", "span_id", "name", "start_time_unix_nano", "input_tokens", "attributes", "links")


def _scan(files: list[str], trace_id: str) -> list[tuple[object, ...]]:
    con = duckdb.connect()
    try:
        selected = ", ".join(COLUMNS)
        return sorted(
            con.execute(
                f"""SELECT {selected} FROM read_parquet(?, hive_partitioning=false, union_by_name=true)
                    WHERE trace_id = ?""",
                [files, trace_id],
            ).fetchall(),
            key=repr,
        )
    finally:
        con.close()


def _read(reader: TraceReader, files: list[str], trace_id: str) -> list[tuple[object, ...]]:
    table = reader.read(files, trace_id, COLUMNS)
    if table is None:
        return []
    rows = table.select(list(COLUMNS)).to_pylist()
    return sorted((tuple(r[c] for c in COLUMNS) for r in rows), key=repr)


def test_reader_finds_exactly_what_a_scan_finds(collector: Collector, tmp_path: Path) -> None:
    for path in sorted(CAPTURED.glob("*.binpb"))[:4]:
        grpc_export(collector.grpc_port, path.read_bytes())
        collector.flush()
    lake = Lake(collector.settings.lake_dir, writer_id="test")
    writer_parts = lake.parts("spans")
    assert len(writer_parts) >= 4
    sample = pq.read_table(writer_parts[0].path)
    date, project = writer_parts[0].date, writer_parts[0].project

    # Compaction of the writer parts: sorted, in small row groups.
    groups = list(lake.compaction_candidates("spans", min_parts=2, small_bytes=1 << 20))
    for group in groups:
        lake.compact(group)

    # One big row group: the sample's rows again under made-up trace ids (DuckDB's path).
    column = sample.schema.get_field_index("trace_id")
    copies = [
        sample.set_column(column, "trace_id", pc.binary_join_element_wise(sample["trace_id"], f"{i:04d}", ""))
        for i in range(8_192 // sample.num_rows + 1)
    ]
    big = pa.concat_tables([sample, *copies])
    assert big.num_rows > 8_192
    lake.publish("spans", project, date, big, {}, row_group_rows=1 << 20)
    # A part from before the `links` column existed: it reads back null.
    lake.publish("spans", project, date, sample.drop_columns(["links"]), {})
    files = [str(p.path) for p in lake.parts("spans")]
    assert len(files) >= 3
    reader = TraceReader(duckdb.connect())
    trace_ids = sorted(set(big["trace_id"].to_pylist()))
    checked = 0
    for trace_id in trace_ids[:: max(1, len(trace_ids) // 25)]:
        expected = _scan(files, trace_id)
        assert _read(reader, files, trace_id) == expected
        checked += bool(expected)
    assert checked >= 20
    assert _read(reader, files, "0" * 32) == []
    # A sample trace's spans are in three parts (compacted, big, old): every copy is returned.
    first = sample["trace_id"][0].as_py()
    spans = sum(1 for t in sample["trace_id"].to_pylist() if t == first)
    assert len(_read(reader, files, first)) == 3 * spans
