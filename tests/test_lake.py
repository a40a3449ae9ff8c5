"""The lake over data that came through the collector: dedup on read, compaction, retention, re-pricing,
project-scoped views, and the writer lock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from collector.pricing import ProjectPricers
from collector.reprice import reprice_lake
from collector.service import Collector
from store.lake import Lake, WriterLock
from store.schema import SCHEMA_VERSION_KEY
from store.views import connect
from tests.conftest import CAPTURED, LOGS_METHOD, grpc_export, query, start_collector
from tests.test_bad_input import _request

TAU = (CAPTURED / "tau_replay_openinference_10.binpb").read_bytes()


def _totals(c: Collector) -> tuple[int, int, float]:
    row = query(c, "SELECT count(*), sum(input_tokens), round(sum(cost_usd), 9) FROM spans")[0]
    return int(row[0]), int(row[1] or 0), float(row[2] or 0)


def test_sending_everything_twice_changes_no_number(collector: Collector) -> None:
    grpc_export(collector.grpc_port, TAU)
    collector.flush()
    once = _totals(collector)
    grpc_export(collector.grpc_port, TAU)
    collector.flush()
    assert _totals(collector) == once
    assert query(collector, "SELECT count(*) FROM spans_raw")[0][0] == 2 * once[0]
    assert once[0] == 209 and once[1] > 0


def _codecs(path: Path) -> tuple[str, bool]:
    """(compression, whether the message JSON went without a dictionary while the span type kept one)."""
    group = pq.read_metadata(path).row_group(0)
    columns = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    plain = not columns["input_messages"].has_dictionary_page and columns["span_type"].has_dictionary_page
    return columns["input_messages"].compression, plain


def test_compaction_merges_parts_and_removes_duplicates(collector: Collector) -> None:
    for _ in range(3):
        grpc_export(collector.grpc_port, TAU)
        collector.flush()
    before = _totals(collector)
    parts = collector.lake.parts("spans")
    assert len(parts) >= 3
    assert {_codecs(p.path) for p in parts} == {("SNAPPY", True)}  # a writer's part is written for speed
    lake = Lake(collector.settings.lake_dir, writer_id="test")
    groups = list(lake.compaction_candidates("spans", min_parts=2, small_bytes=1 << 30))
    assert len(groups) == 1
    merged, duplicates = lake.compact(groups[0])
    assert duplicates == 2 * 209
    assert [p.path for p in collector.lake.parts("spans")] == [merged.path]
    assert pq.read_schema(merged.path).metadata[SCHEMA_VERSION_KEY] == b"1"
    assert pq.read_metadata(merged.path).num_rows == 209
    assert _codecs(merged.path) == ("ZSTD", True)  # ...and merged for size
    assert _totals(collector) == before
    # Rows are sorted by trace so that one trace is found in few row groups.
    trace_ids = pq.read_table(merged.path, columns=["trace_id"]).column(0).to_pylist()
    assert trace_ids == sorted(trace_ids)


def test_retention_drops_whole_old_partitions(collector: Collector) -> None:
    old = _request(["old"], trace_byte=3)
    old_day = dt.datetime(2020, 1, 2, tzinfo=dt.UTC)
    for span in old.resource_spans[0].scope_spans[0].spans:
        span.start_time_unix_nano = int(old_day.timestamp() * 1e9)
        span.end_time_unix_nano = span.start_time_unix_nano + 10
    grpc_export(collector.grpc_port, old.SerializeToString())
    grpc_export(collector.grpc_port, _request(["new"], trace_byte=4).SerializeToString())
    collector.flush()
    assert sorted(r[0] for r in query(collector, "SELECT name FROM spans")) == ["new", "old"]
    dropped = Lake(collector.settings.lake_dir).drop_older_than(365)
    assert [p.name for p in dropped] == ["date=2020-01-02"]
    assert [r[0] for r in query(collector, "SELECT name FROM spans")] == ["new"]


def test_views_for_one_project_never_show_another(tmp_path: Path) -> None:
    from store.keys import create_key

    data = tmp_path / "data"
    key_a, _ = create_key(data / "keys.json", "acme")
    key_b, _ = create_key(data / "keys.json", "globex")
    c = start_collector(data)
    try:
        grpc_export(c.grpc_port, _request(["a-span"]).SerializeToString(), metadata=[("x-api-key", key_a)])
        grpc_export(c.grpc_port, _request(["b-span"]).SerializeToString(), metadata=[("x-api-key", key_b)])
        c.flush()
        assert query(c, "SELECT name FROM spans", project="acme") == [("a-span",)]
        assert query(c, "SELECT name FROM spans_raw", project="globex") == [("b-span",)]
        assert query(c, "SELECT count(*) FROM spans")[0][0] == 2
    finally:
        c.stop()


def test_reprice_applies_a_new_override_to_stored_spans(tmp_path: Path) -> None:
    data = tmp_path / "data"
    c = start_collector(data)
    try:
        grpc_export(c.grpc_port, TAU)
        c.flush()
        before = query(c, "SELECT count(*) FROM spans WHERE cost_status = 'override'")[0][0]
        model = query(c, "SELECT coalesce(response_model, request_model) FROM spans WHERE input_tokens > 0 LIMIT 1")
    finally:
        c.stop()
    assert before == 0 and model
    prices = data / "prices"
    prices.mkdir()
    (prices / "default.toml").write_text(f'[[model]]\nmatch = "{model[0][0]}"\ninput_mtok = 1000\noutput_mtok = 2000\n')
    report = reprice_lake(data / "lake", ProjectPricers(prices).for_project)
    assert report.parts >= 1 and report.changed > 0
    con = connect(data / "lake")
    row = con.execute(
        "SELECT count(*), sum(cost_usd), sum(input_tokens * 1000 / 1e6 + output_tokens * 2000 / 1e6) "
        "FROM spans WHERE cost_status = 'override'"
    ).fetchone()
    assert row is not None and row[0] > 0 and abs(row[1] - row[2]) < 1e-6
    assert con.execute("SELECT count(*) FROM spans").fetchone() == (209,)


def test_one_writer_per_lake(collector: Collector) -> None:
    with pytest.raises(RuntimeError, match="another agentflight writer"):
        WriterLock(collector.settings.lake_dir).acquire()


def test_part_names_and_layout(collector: Collector) -> None:
    grpc_export(collector.grpc_port, _request(["x"]).SerializeToString())
    collector.flush()
    (part,) = Lake(collector.settings.lake_dir).parts("spans")
    assert part.path.name.startswith("part-") and "-w0-" in part.path.name
    assert part.path.relative_to(collector.settings.lake_dir).parts[:2] == ("spans", "project=default")


def _log_request(count: int) -> bytes:
    """Log records, every third tied to no trace (a plain log line)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for n in range(count):
        record = records.add(time_unix_nano=1_750_000_000_000_000_000 + n, event_name="gen_ai.user.message")
        record.body.string_value = f"message {n} " + "x" * 200
        if n % 3:
            record.trace_id = (n * 7919 + 1).to_bytes(16, "big")
            record.span_id = (n + 1).to_bytes(8, "big")
    return request.SerializeToString()


def _newest_copies(files: list[str], table: str) -> list[tuple[object, ...]]:
    """What a merge must keep, by DuckDB: one row per key, the copy received last, in a stable order."""
    keys = "trace_id, span_id" if table == "spans" else "event_id"
    import duckdb

    return duckdb.sql(
        f"""SELECT * FROM read_parquet({files!r}, hive_partitioning=false, union_by_name=true)
        QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY received_at_unix_nano DESC) = 1
        ORDER BY ALL"""
    ).fetchall()


def test_a_merge_cut_into_many_ranges_keeps_exactly_the_newest_copy_of_every_row(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Merges over SORT_RANGE_BYTES deal rows to per-range spill files; cut 209 spans (and log records, a third
    of them without a trace id) into dozens of ranges, with every span sent three times and one part written
    before a column existed, and the merge must equal DuckDB's dedup of the same files, sorted by trace."""
    import pyarrow as pa

    import store.lake as lake_module

    for _ in range(3):
        grpc_export(collector.grpc_port, TAU)
        grpc_export(collector.grpc_port, _log_request(60), method=LOGS_METHOD)
        collector.flush()
    lake = Lake(collector.settings.lake_dir, writer_id="test")
    newest = lake.parts("spans")[-1]
    old_shape = pq.read_table(newest.path)
    dropped = old_shape.schema.names[-1]
    received = pa.array([t + 1 for t in old_shape.column("received_at_unix_nano").to_pylist()], pa.int64())
    old_shape = old_shape.set_column(
        old_shape.schema.get_field_index("received_at_unix_nano"), "received_at_unix_nano", received
    )
    lake.publish("spans", newest.project, newest.date, old_shape.drop_columns([dropped]), {})
    monkeypatch.setattr(lake_module, "SORT_RANGE_BYTES", 16 * 1024)
    for table, expected_rows in (("spans", 209), ("events", 60)):
        parts = lake.parts(table)
        files = [str(p.path) for p in parts]
        expected = _newest_copies(files, table)
        assert len(expected) == expected_rows
        rows_in = sum(pq.read_metadata(f).num_rows for f in files)
        groups = list(lake.compaction_candidates(table, min_parts=2, small_bytes=1 << 30))
        assert [len(g) for g in groups] == [len(parts)]
        merged, duplicates = lake.compact(groups[0])
        assert duplicates == rows_in - expected_rows
        assert _newest_copies([str(merged.path)], table) == expected
        keys = pq.read_table(merged.path, columns=["trace_id", "received_at_unix_nano"])
        trace_ids = [t for t in keys.column("trace_id").to_pylist() if t is not None]
        assert trace_ids == sorted(trace_ids)
        assert keys.column("trace_id").to_pylist()[len(trace_ids) :] == [None] * (keys.num_rows - len(trace_ids))
        assert not list(lake.compaction_tmp_dir.iterdir())  # the spill files are gone
    # The part written before the column existed held the newest copies: they won, with the column empty.
    assert query(collector, f'SELECT count(*) FROM spans WHERE "{dropped}" IS NULL')[0][0] >= 1


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""  # exited meanwhile


def _nice(pid: int) -> int:
    """Field 19 of /proc/<pid>/stat (counted after the parenthesised command name)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
    except FileNotFoundError:
        return -100  # exited meanwhile


def _descendants(pid: int) -> list[int]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        children = [int(c) for task in tasks for c in (task / "children").read_text().split()]
    except FileNotFoundError:
        return []  # exited meanwhile
    return children + [d for child in children for d in _descendants(child)]


def test_the_maintenance_process_compacts_at_nice_19_and_removes_half_written_parts(tmp_path: Path) -> None:
    """Compaction runs in a process of its own per round, at the lowest priority (so it takes the cores' spare
    time, not the writers'), merges the parts of a running collector, counts what it removed, and deletes part files a
    killed process left half-written (only once they are an hour old: a write may be under way)."""
    import os
    import time

    from collector.config import Settings, WriterSettings

    settings = Settings(data_dir=tmp_path / "data", grpc_port=0, http_port=0, log_level="WARNING")
    quick = WriterSettings(flush_interval_seconds=0.2, maintenance_interval_seconds=0.5, compact_min_parts=2)
    collector = Collector(settings, writer_settings=quick).start()
    try:
        partition = collector.settings.lake_dir / "spans" / "project=default" / "date=2026-01-01"
        partition.mkdir(parents=True)
        stale, fresh = partition / "part-1-w0-dead.parquet.tmp", partition / "part-2-w1-busy.parquet.tmp"
        stale.write_bytes(b"half a part")
        fresh.write_bytes(b"being written")
        os.utime(stale, (time.time() - 7200, time.time() - 7200))
        for _ in range(3):
            grpc_export(collector.grpc_port, TAU)
            collector.flush()
        deadline = time.monotonic() + 60
        maintainer_nice: set[int] = set()  # a round's process lives while it works: look for it meanwhile
        while collector.metrics.snapshot()["parts_compacted"] == 0 and time.monotonic() < deadline:
            maintainer_nice |= {_nice(p) for p in _descendants(os.getpid()) if _comm(p) == "af-maintainer"} - {-100}
            time.sleep(0.01)
        time.sleep(0.5)  # the counters follow the merge by one report
        metrics = collector.metrics.snapshot()
        # Which parts one round finds depends on timing (a merged part is merged again only with as much new
        # data); what holds every time: copies were dropped, counted, and every span reads once.
        assert metrics["parts_compacted"] >= 2 and metrics["spans_deduplicated"] >= 209, metrics
        assert len(collector.lake.parts("spans")) < 3
        assert query(collector, "SELECT count(*) FROM spans_raw")[0][0] + metrics["spans_deduplicated"] == 3 * 209
        assert _totals(collector)[0] == 209
        assert not stale.exists() and fresh.exists()
        assert maintainer_nice == {max(19, os.getpriority(os.PRIO_PROCESS, 0))}
        writers = [p for p in _descendants(os.getpid()) if _comm(p).startswith("af-writer")]
        assert writers and {_nice(p) for p in writers} == {os.getpriority(os.PRIO_PROCESS, 0)}
        # pyarrow would import pandas (36 MB a process) on a writer's first Arrow array: kept out
        assert [p for p in writers if "/pandas/" in Path(f"/proc/{p}/maps").read_text()] == []
    finally:
        collector.stop()


def test_agentflight_maintain_merges_the_parts_of_a_stopped_collector(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    collector = start_collector(tmp_path / "data")
    try:
        for _ in range(3):
            grpc_export(collector.grpc_port, TAU)
            collector.flush()
        assert len(collector.lake.parts("spans")) >= 3
    finally:
        collector.stop()
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "maintain", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    assert "removed 418 duplicate row(s), dropped 0 partition(s)" in done.stdout, done.stdout
    assert len(Lake(tmp_path / "data" / "lake").parts("spans")) == 1


def test_maintenance_waits_while_the_writers_are_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A merge's memory and CPU go on top of the writers' during a burst, so a round waits while the WAL
    backlog is over MAINTENANCE_MAX_BACKLOG_BYTES (for at most MAINTENANCE_MAX_SKIPS intervals)."""
    import time

    import collector.writer_pool as pool_module
    from collector.config import Settings, WriterSettings

    settings = Settings(data_dir=tmp_path / "data", grpc_port=0, http_port=0, log_level="WARNING")
    quick = WriterSettings(flush_interval_seconds=0.2, maintenance_interval_seconds=0.2, compact_min_parts=2)
    collector = Collector(settings, writer_settings=quick).start()
    try:
        backlog = [1 << 40]  # the writers far behind, as in a burst
        monkeypatch.setattr(collector.writer, "backlog_bytes", lambda: backlog[0])
        monkeypatch.setattr(pool_module, "MAINTENANCE_MAX_SKIPS", 1_000)
        for _ in range(3):
            grpc_export(collector.grpc_port, TAU)
            collector.flush()
        time.sleep(2.0)  # ten intervals
        assert collector.metrics.snapshot()["parts_compacted"] == 0
        assert len(collector.lake.parts("spans")) >= 3
        backlog[0] = 0  # caught up: the next interval merges
        deadline = time.monotonic() + 30
        while collector.metrics.snapshot()["parts_compacted"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert collector.metrics.snapshot()["parts_compacted"] >= 2
    finally:
        collector.stop()
