"""The two ways usage is counted (docs/design.md invariant 4) agree: polars' with_lineage over many traces (the index,
big traces) and plain Python's counted_spans over one trace (small traces, the eval export)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import polars as pl

from collector.service import Collector
from query.lineage import INHERITED, TOKEN_COLUMNS, counted_spans, with_lineage
from tests.conftest import CAPTURED, grpc_export, query_dicts
from tests.detector_traces import SECOND, Recorder, agent, llm

COLUMNS = ("trace_id", "span_id", "parent_span_id", "span_type", *TOKEN_COLUMNS, "cost_usd", *INHERITED)


def test_python_and_polars_count_the_same_spans(collector: Collector) -> None:
    for path in sorted(CAPTURED.glob("*.binpb")):
        grpc_export(collector.grpc_port, path.read_bytes())
    # Model spans around model spans that report usage (LangChain's around OpenAI's), through an agent span
    # too, and a model span whose parent never arrives.
    rec = Recorder(collector.grpc_port, time.time_ns() - 3_600 * SECOND)
    try:
        t = rec.trace("nested")
        t.span("root", "invoke_agent a", 0, 10, agent("a"))
        t.span("outer", "chat wrapper", 1, 9, llm(300, 30, 0.03))
        t.span("step", "invoke_agent b", 2, 8, agent("b"), parent="outer")
        t.span("inner", "chat", 3, 4, llm(100, 10, 0.01), parent="step")
        t.span("inner2", "chat", 5, 6, llm(200, 20, 0.02), parent="step")
        t.span("sibling", "chat", 9, 9.5, llm(50, 5, 0.005))
        orphan = rec.trace("orphan")
        orphan.span("root", "invoke_agent a", 0, 10, agent("a"), late=True)  # never sent
        orphan.span("alone", "chat", 1, 2, llm(10, 1, 0.001))
    finally:
        rec.shutdown()
    collector.flush()
    rows = query_dicts(
        collector,
        f"SELECT DISTINCT ON (trace_id, span_id) {', '.join(COLUMNS)} FROM spans ORDER BY trace_id, span_id",
    )
    # A model span around another model span that reports usage (LangChain around OpenAI): only the inner counts.
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_trace[row["trace_id"]].append(row)
    python = {
        (s["trace_id"], s["span_id"])
        for spans in by_trace.values()
        for s in counted_spans(spans, {s["span_id"]: s for s in spans})
    }
    lined = with_lineage(pl.DataFrame(rows, infer_schema_length=None))
    polars = set(lined.filter(pl.col("counted")).select("trace_id", "span_id").iter_rows())
    assert python == polars
    nested = {s for t, s in python if t == rec.traces["nested"].trace_id}
    spans = rec.traces["nested"].spans
    named = {format(spans[k].get_span_context().span_id, "016x") for k in ("inner", "inner2", "sibling")}
    assert nested == named  # the wrapper is not counted; its inner calls and its sibling are
    assert any(t == rec.traces["orphan"].trace_id for t, _ in python)
