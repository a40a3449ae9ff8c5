"""The trace index kept current by increments gives exactly what a full derive of the same parts gives.

One long-lived `TraceIndex` follows a lake through what happens to it in production: traces arriving span by
span, late spans, the same spans sent again (the newest copy wins), compaction of parts it has summarised and
of parts it has not, and re-pricing. After every step its trace rows, findings and usage rows are compared
with a fresh index's over a copy of the span parts, and the log says which path the long-lived index took.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import query.index as index_module
from collector.pricing import ProjectPricers
from collector.reprice import reprice_lake
from collector.service import Collector
from query.detect.config import DetectorConfigs
from query.index import TraceIndex
from store.lake import Lake, compacted_sources
from tests.conftest import CAPTURED, grpc_export, start_api, start_collector
from tests.detector_traces import SECOND, Recorder, agent, llm
from tests.test_detectors_e2e import BASE_NS, DETECTOR_CONFIG, scenarios

PROJECT = "default"
DAY_NS = 86_400 * SECOND
TAU = (CAPTURED / "tau_replay_openinference_10.binpb").read_bytes()


def _sorted_rows(index: TraceIndex, sql: str) -> list[dict[str, Any]]:
    rows = index.rows(sql, [PROJECT])
    return sorted(rows, key=repr)


def _rounded(value: Any) -> Any:
    # Cost sums add the same numbers in another order after an increment: equal to 1e-12 dollars.
    if isinstance(value, float) and not math.isnan(value):
        return round(value, 12)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _state(index: TraceIndex) -> dict[str, Any]:
    index.refresh(PROJECT)
    source = index.usage_source(PROJECT)
    assert source is not None
    usage = index.rows(f"SELECT * FROM {source[0]}", source[1])
    return _rounded(
        {
            "traces": _sorted_rows(index, "SELECT * FROM traces WHERE project = ?"),
            "trace_rows": _sorted_rows(index, "SELECT * FROM trace_rows WHERE project = ?"),
            "findings": _sorted_rows(index, "SELECT * FROM findings WHERE project = ?"),
            "usage": sorted(usage, key=repr),
            "dates": index.dates(PROJECT),
        }
    )


class Follower:
    """A long-lived index over the collector's lake, checked against a full derive after every step."""

    def __init__(self, collector: Collector, scratch: Path, caplog: pytest.LogCaptureFixture) -> None:
        self.collector = collector
        self.lake_dir = collector.settings.lake_dir
        self.scratch = scratch
        self.configs = DetectorConfigs(collector.settings.data_dir / "detectors")
        self.index = TraceIndex(self.lake_dir, configs=self.configs)
        self.caplog = caplog
        self.checks = 0

    def check(self, flush: bool = True) -> dict[str, int]:
        """Compare with a fresh index over a copy of the span parts; returns how many partitions the
        long-lived index derived whole and by increment in this step."""
        if flush:
            self.collector.flush()
        known = set(self.index.dates(PROJECT))
        self.caplog.clear()
        followed = _state(self.index)
        messages = [r.getMessage() for r in self.caplog.records]
        paths = {  # a partition seen for the first time is derived whole, and is not counted
            "whole": sum("indexed default/" in m and "increment" not in m and m.split("/")[1][:10] in known
                         for m in messages),
            "increment": sum("by increment" in m for m in messages),
        }  # fmt: skip
        copy = self.scratch / f"copy{self.checks}"
        self.checks += 1
        shutil.copytree(self.lake_dir / "spans", copy / "spans")
        fresh = _state(TraceIndex(copy, configs=self.configs))
        assert followed["traces"], "the lake has traces"
        for key in fresh:
            assert followed[key] == fresh[key], f"{key} differ after step {self.checks}"
        if self.checks % 2:
            # Every other step writes the derived files from memory: the next steps amend written files.
            self.index.publish(PROJECT)
            assert _state(self.index) == followed
        return paths


@pytest.fixture
def follower(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Follower]:
    caplog.set_level(logging.DEBUG, logger="query.index")
    data = tmp_path / "data"
    (data / "detectors").mkdir(parents=True)
    # Session and user budgets too: their findings are recomputed from the usage rows the increments rewrite.
    (data / "detectors" / "default.toml").write_text(DETECTOR_CONFIG)
    collector = start_collector(data)
    try:
        yield Follower(collector, tmp_path / "scratch", caplog)
    finally:
        collector.stop()


def test_increments_equal_a_full_derive_through_late_spans_resends_compaction_and_repricing(
    follower: Follower,
) -> None:
    collector = follower.collector
    rec = Recorder(collector.grpc_port, BASE_NS)
    try:
        # The detector scenarios, span by span (a late span of each "late" scenario held back).
        scenarios(rec)
        follower.check()

        # Every captured file as its own part: after the first, each is an increment of its partition.
        increments = 0
        captured = sorted(CAPTURED.glob("*.binpb"))
        for path in captured:
            grpc_export(collector.grpc_port, path.read_bytes())
            paths = follower.check()
            assert paths["whole"] == 0
            increments += paths["increment"]
        assert increments >= len(captured) - 1

        # A trace across midnight: rows in two partitions, merged; its late span lands in the second one.
        midnight = BASE_NS // DAY_NS * DAY_NS
        across = Recorder(collector.grpc_port, midnight - 30 * SECOND)
        try:
            t = across.trace("midnight")
            t.span("root", "invoke_agent night", 0, 90, agent("night"))
            t.span("before", "chat acme-chat", 1, 2, llm(100, 10, 0.001))
            t.span("after", "chat acme-chat", 40, 41, llm(200, 20, 0.002), late=True)
            follower.check()
            across.send_late()
            assert follower.check()["increment"] == 1
        finally:
            across.shutdown()
        midnight_row = follower.index.rows("SELECT dates, span_count FROM traces WHERE trace_id = ?", [t.trace_id])
        assert [len(midnight_row[0]["dates"]), midnight_row[0]["span_count"]] == [2, 3]

        # The late spans change verdicts (a loop appears, a retry recovers): increments again.
        assert rec.send_late() > 0
        paths = follower.check()
        assert paths == {"whole": 0, "increment": 1}

        # The same spans again: every copy is a duplicate, and nothing changes.
        grpc_export(collector.grpc_port, TAU)
        assert follower.check()["whole"] == 0

        # Compaction of everything summarised: a merge of known parts is no change (files renamed, not derived).
        lake = Lake(follower.lake_dir, writer_id="test")
        groups = list(lake.compaction_candidates("spans", min_parts=2, small_bytes=1 << 30))
        assert groups
        for group in groups:
            compacted, _ = lake.compact(group)
            assert compacted_sources(compacted) == {p.path.name for p in group}
        assert follower.check() == {"whole": 0, "increment": 0}

        # New spans compacted with old ones before the index saw them: the merge holds new content.
        rec2 = Recorder(collector.grpc_port, BASE_NS + 3_600_000_000_000)
        try:
            scenarios(rec2)
            collector.flush()
            groups = list(lake.compaction_candidates("spans", min_parts=2, small_bytes=1 << 30))
            assert groups
            for group in groups:
                lake.compact(group)
            assert follower.check()["whole"] == 0
            rec2.send_late()
        finally:
            rec2.shutdown()
        assert follower.check()["whole"] == 0

        # Re-pricing (the collector stopped, as the command requires) replaces parts with no record of what
        # they merged: the partitions are derived whole.
        collector.stop()
        report = reprice_lake(follower.lake_dir, ProjectPricers(collector.settings.data_dir / "prices").for_project)
        assert report.parts >= 1
        assert follower.check(flush=False)["whole"] >= 1

        # More spans, then the files written at shutdown: a restarted index reads them and summarises nothing.
        restarted = start_collector(collector.settings.data_dir)
        try:
            grpc_export(
                restarted.grpc_port, (CAPTURED / sorted(p.name for p in CAPTURED.glob("*.binpb"))[0]).read_bytes()
            )
            restarted.flush()
        finally:
            restarted.stop()
        before = _state(follower.index)
        follower.index.publish(PROJECT)
        follower.caplog.clear()
        again = _state(TraceIndex(follower.lake_dir, configs=follower.configs))
        assert not [r for r in follower.caplog.records if "indexed" in r.getMessage()]
        assert again == before
    finally:
        rec.shutdown()


def test_api_writes_lagging_derived_files_when_it_stops(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="query.index")
    collector = start_collector(tmp_path / "data")
    api = None
    try:
        captured = sorted(CAPTURED.glob("*.binpb"))
        grpc_export(collector.grpc_port, captured[0].read_bytes())
        collector.flush()
        api = start_api(collector.settings)
        with api.client() as client:
            first = client.get("/traces", params={"limit": 500}).json()["traces"]
            grpc_export(collector.grpc_port, captured[1].read_bytes())
            collector.flush()
            caplog.clear()
            second = client.get("/traces", params={"limit": 500}).json()["traces"]
        assert len(second) > len(first)
        assert any("by increment" in r.getMessage() for r in caplog.records)
        assert not any("published" in r.getMessage() for r in caplog.records)  # the files lag memory
        caplog.clear()
        api.stop()
        api = None
        assert any("published" in r.getMessage() for r in caplog.records)
        caplog.clear()
        restarted = TraceIndex(collector.settings.lake_dir)
        restarted.refresh(PROJECT)
        assert not [r for r in caplog.records if "indexed" in r.getMessage()]  # read, not summarised again
        assert len(restarted.rows("SELECT * FROM traces", [])) == len(second)
    finally:
        if api is not None:
            api.stop()
        collector.stop()


def test_derived_files_deleted_under_a_live_index_are_rebuilt(
    follower: Follower, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured = sorted(CAPTURED.glob("*.binpb"))
    grpc_export(follower.collector.grpc_port, captured[0].read_bytes())
    follower.check()  # first sight, and the files written
    grpc_export(follower.collector.grpc_port, captured[1].read_bytes())
    assert follower.check()["increment"] >= 1  # memory now ahead of the files
    shutil.rmtree(follower.lake_dir / "_derived")  # "derived data: delete it and it is rebuilt"
    monkeypatch.setattr(index_module, "PUBLISH_EVERY_SECONDS", 0.0)  # the lagging files are due now
    assert follower.check()["whole"] >= 1  # the write found no file to amend: derived whole, not an error
    assert list((follower.lake_dir / "_derived" / "usage").rglob("*.parquet"))


def _one_span_request(name: str, error: bool) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=bytes.fromhex("5" * 32), span_id=bytes.fromhex("6" * 16), name=name,
        start_time_unix_nano=BASE_NS, end_time_unix_nano=BASE_NS + SECOND,
    )  # fmt: skip
    span.status.code = 2 if error else 1
    return request.SerializeToString()


def test_a_span_sent_again_with_other_content_is_summarised_from_its_newest_copy(tmp_path: Path) -> None:
    """An exporter that re-sends a span after changing it (a status set late): the index reads the copy received
    last, in an increment and in a whole derive."""
    collector = start_collector(tmp_path / "data")
    try:
        index = TraceIndex(collector.settings.lake_dir)
        grpc_export(collector.grpc_port, _one_span_request("first version", error=False))
        collector.flush()
        index.refresh(PROJECT)
        assert [r["root_name"] for r in index.rows("SELECT root_name FROM traces WHERE project = ?", [PROJECT])] == [
            "first version"
        ]
        grpc_export(collector.grpc_port, _one_span_request("second version", error=True))
        collector.flush()
        for reader in (index, TraceIndex(collector.settings.lake_dir)):
            reader.refresh(PROJECT)
            rows = reader.rows("SELECT root_name, error_count FROM traces WHERE project = ?", [PROJECT])
            assert [(r["root_name"], r["error_count"]) for r in rows] == [("second version", 1)]
    finally:
        collector.stop()


def test_a_late_span_is_summarised_from_the_parts_that_hold_its_trace(follower: Follower) -> None:
    """Five traces in five flushes, then a late span of the first: its trace is read from the two parts that hold
    it, not from every part of the day, and the result equals a fresh index's whole derive."""
    rec = Recorder(follower.collector.grpc_port, BASE_NS)
    try:
        for n in range(5):
            t = rec.trace(f"t{n}")
            t.span("root", f"invoke_agent a{n}", 0, 10, agent(f"a{n}"))
            t.span("call", "chat acme-chat", 1, 2, llm(100, 10, 0.001), late=n == 0)
            follower.check()  # one part each
        assert rec.send_late() == 1
        follower.caplog.clear()
        assert follower.check() == {"whole": 0, "increment": 1}
        reads = [r.getMessage() for r in follower.caplog.records if "seen before" in r.getMessage()]
        assert len(reads) == 1, reads
        holders, day = (int(n) for n in reads[0].split("read from ")[1].removesuffix(" parts").split(" of "))
        assert (holders, day >= 6) == (2, True), reads[0]  # two writers: a flush may publish two parts
    finally:
        rec.shutdown()
    row = follower.index.rows("SELECT span_count FROM traces WHERE trace_id = ?", [rec.traces["t0"].trace_id])
    assert row == [{"span_count": 2}]
