"""One trace for the API: its spans read from the lake, its tree (paged), per-span content and findings.

The index says which date partitions hold the trace; only those parts are read, with the trace id pushed
down to Parquet row-group statistics (compacted parts are sorted by trace). The tree is built from light
columns; message content is read only for the spans on the requested page, each field capped, so a
10,000-span trace answers with a bounded payload and the full content of any span is one more request.
"""

from __future__ import annotations

import json
import re
from typing import Any

import polars as pl
import pyarrow as pa

from query import findings
from query.errors import NotFound
from query.index import TraceIndex
from query.lineage import TOKEN_COLUMNS, counted_spans, with_lineage
from query.summaries import LIGHT_COLUMNS
from query.traces import SUMMARY_COLUMNS, iso, summary_json
from query.tree import Node, build_tree
from store.schema import SPAN_SCHEMA

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_SPAN_ID = re.compile(r"^[0-9a-f]{16}$")
NODE_COLUMNS = (
    *LIGHT_COLUMNS,
    "kind",
    "status_code",
    "status_message",
    "error_type",
    "error_message",
    "finish_reason",
    "tool_call_id",
    "total_tokens",
    "reported_cost_usd",
    "response_id",
    "scope_name",
)
CONTENT_COLUMNS = ("input_messages", "output_messages", "tool_arguments", "tool_result")
RAW_COLUMNS = ("attributes", "events", "links", "resource", "scope_attributes")
# Inline content per field on a tree page; the span route returns it whole.
CONTENT_CAP_CHARS = 16_384
# Which usage counts: plain Python for a small trace (polars costs 7 ms a call, Python ~0.1 ms for 20 spans);
# polars above this, where it is faster (10,000 spans: 17 ms in Python).
PYTHON_LINEAGE_SPANS = 1_000
DEFAULT_CONTENT_SPANS = 200  # traces up to this size get content inline by default


def normalise_trace_id(trace_id: str) -> str:
    lowered = trace_id.strip().lower()
    if not _TRACE_ID.match(lowered):
        raise NotFound(f"no trace {trace_id!r} in this project")
    return lowered


def locate(index: TraceIndex, project: str, trace_id: str) -> dict[str, Any]:
    index.refresh(project)
    found = index.rows(f"SELECT {SUMMARY_COLUMNS} FROM traces WHERE project = ? AND trace_id = ?", [project, trace_id])
    if not found:
        raise NotFound(f"no trace {trace_id!r} in this project")
    return found[0]


def _read(index: TraceIndex, files: list[str], trace_id: str, columns: tuple[str, ...]) -> pl.DataFrame:
    """The trace's spans, the newest copy of each (store/trace_reader.py reads only the row groups holding it)."""
    table = index.trace_reader.read(files, trace_id, columns)
    if table is None:
        table = pa.schema([SPAN_SCHEMA.field(c) for c in columns]).empty_table()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return (
        frame.sort("received_at_unix_nano", descending=True, nulls_last=True)
        .unique(subset="span_id", keep="first", maintain_order=True)
        .select([pl.col(c) if c in frame.columns else pl.lit(None).alias(c) for c in columns])
    )


def _parse_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _capped(text: str | None, cap: int | None) -> tuple[Any, bool]:
    if text is None:
        return None, False
    if cap is not None and len(text) > cap:
        return text[:cap], True
    return _parse_json(text), False


def event_content(
    index: TraceIndex, project: str, dates: list[str], trace_id: str, spans: pl.DataFrame
) -> dict[str, tuple[str | None, str | None]]:
    """Messages that arrived as OTLP log events (the official GenAI instrumentations), per span id: joined
    on span id, or on the provider response id for records emitted outside the span."""
    files = index.event_files(project, dates)
    if not files:
        return {}
    response_ids = [r for r in spans.get_column("response_id").to_list() if r] if "response_id" in spans.columns else []
    con = index.cursor()
    try:
        events = con.execute(
            """SELECT span_id, response_id, time_unix_nano, event_id, input_messages, output_messages
               FROM read_parquet(?, hive_partitioning=false, union_by_name=true)
               WHERE (trace_id = ? OR (span_id IS NULL AND list_contains(?, response_id)))
                 AND (input_messages IS NOT NULL OR output_messages IS NOT NULL)
               QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY received_at_unix_nano DESC) = 1
               ORDER BY time_unix_nano, event_id""",
            [files, trace_id, response_ids],
        ).fetchall()
    finally:
        con.close()
    by_response = (
        dict(zip(spans.get_column("response_id").to_list(), spans.get_column("span_id").to_list(), strict=True))
        if response_ids
        else {}
    )
    collected: dict[str, tuple[list[Any], list[Any]]] = {}
    for span_id, response_id, _, _, inputs, outputs in events:
        owner = span_id or by_response.get(response_id)
        if owner is None:
            continue
        ins, outs = collected.setdefault(owner, ([], []))
        for text, target in ((inputs, ins), (outputs, outs)):
            parsed = _parse_json(text)
            if isinstance(parsed, list):
                target.extend(parsed)
    return {
        span_id: (json.dumps(ins) if ins else None, json.dumps(outs) if outs else None)
        for span_id, (ins, outs) in collected.items()
    }


def node_json(node: Node, trace_start: int) -> dict[str, Any]:
    span = node.span
    start, end = span["start_time_unix_nano"], span["end_time_unix_nano"]
    return {
        "span_id": span["span_id"],
        "parent_span_id": span["parent_span_id"],
        "name": span["name"],
        "span_type": span["span_type"],
        "kind": span["kind"],
        "service_name": span["service_name"],
        "depth": node.depth,
        "orphan": node.orphan,
        "children": len(node.children),
        "descendants": node.descendants,
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "offset_ms": round((start - trace_start) / 1e6, 3) if start is not None else None,
        "duration_ms": round((end - start) / 1e6, 3) if start is not None and end is not None else None,
        "status_code": span["status_code"],
        "status_message": span["status_message"],
        "is_error": bool(span["is_error"]),
        "error_type": span["error_type"],
        "error_message": span["error_message"],
        "provider": span["provider"],
        "request_model": span["request_model"],
        "response_model": span["response_model"],
        "finish_reason": span["finish_reason"],
        "agent_name": span["agent_name"],
        "tool_name": span["tool_name"],
        "tool_call_id": span["tool_call_id"],
        "prompt_name": span["prompt_name"],
        "prompt_version": span["prompt_version"],
        "user_id": span["user_id"],
        "session_id": span["session_id"],
        "reported": {**{c: span[c] for c in TOKEN_COLUMNS}, "cost_usd": span["cost_usd"]},
        "cost_status": span["cost_status"],
        "counted": bool(span["counted"]),
        "own": node.own,
        "inclusive": node.inclusive,
    }


def get_trace(
    index: TraceIndex,
    project: str,
    trace_id: str,
    *,
    offset: int = 0,
    limit: int = 500,
    max_depth: int | None = None,
    content: bool | None = None,
) -> dict[str, Any]:
    trace_id = normalise_trace_id(trace_id)
    summary = locate(index, project, trace_id)
    dates = summary["dates"]
    files = index.span_files(project, dates)
    with_content = content if content is not None else summary["span_count"] <= DEFAULT_CONTENT_SPANS
    # A small trace's content comes in the same read as its structure: one Parquet scan, not two.
    inline = with_content and summary["span_count"] <= DEFAULT_CONTENT_SPANS
    columns = (*NODE_COLUMNS, *(CONTENT_COLUMNS if inline else ()), "received_at_unix_nano")
    spans = _read(index, files, trace_id, columns)
    if spans.height > PYTHON_LINEAGE_SPANS:
        rows = with_lineage(spans).to_dicts()
    else:
        rows = spans.to_dicts()
        by_id = {r["span_id"]: r for r in rows}
        counted = {id(r) for r in counted_spans(rows, by_id)}
        for row in rows:
            row["counted"] = id(row) in counted
    nodes = build_tree(rows)
    visible = [n for n in nodes if max_depth is None or n.depth <= max_depth]
    page = visible[offset : offset + limit]
    trace_start = summary["start_ns"]
    out_nodes = []
    for node in page:
        entry = node_json(node, trace_start)
        if max_depth is not None and node.depth == max_depth:
            entry["hidden_descendants"] = node.descendants
        out_nodes.append(entry)
    found = findings.for_trace(index, project, trace_id)
    flagged: dict[str, set[str]] = {}
    for finding in found:
        for span_id in finding["span_ids"]:
            flagged.setdefault(span_id, set()).add(finding["kind"])
    for entry in out_nodes:
        entry["flags"] = sorted(flagged.get(entry["span_id"], ()))
    if with_content and page:
        inline_rows = spans.select("span_id", *CONTENT_COLUMNS).to_dicts() if inline else None
        _attach_content(index, project, dates, trace_id, spans, out_nodes, inline_rows)
    return {
        "trace": summary_json(summary),
        "total_spans": len(nodes),
        "visible_spans": len(visible),
        "offset": offset,
        "limit": limit,
        "next_offset": offset + limit if offset + limit < len(visible) else None,
        "content_included": bool(with_content and page),
        "spans": out_nodes,
        "findings": found,
    }


def _attach_content(
    index: TraceIndex,
    project: str,
    dates: list[str],
    trace_id: str,
    spans: pl.DataFrame,
    out_nodes: list[dict[str, Any]],
    rows: list[dict[str, Any]] | None = None,
) -> None:
    if rows is None:
        rows = _read_content(index, project, dates, trace_id, [n["span_id"] for n in out_nodes])
    from_events = event_content(index, project, dates, trace_id, spans)
    by_id = {r["span_id"]: r for r in rows}
    for entry in out_nodes:
        row = by_id.get(entry["span_id"], {})
        inputs, outputs = row.get("input_messages"), row.get("output_messages")
        event_in, event_out = from_events.get(entry["span_id"], (None, None))
        fields = {
            "input_messages": inputs if inputs is not None else event_in,
            "output_messages": outputs if outputs is not None else event_out,
            "tool_arguments": row.get("tool_arguments"),
            "tool_result": row.get("tool_result"),
        }
        truncated = []
        for name, text in fields.items():
            value, cut = _capped(text, CONTENT_CAP_CHARS)
            entry[name] = value
            if cut:
                truncated.append(name)
        entry["content_truncated"] = truncated


def _read_content(
    index: TraceIndex, project: str, dates: list[str], trace_id: str, span_ids: list[str]
) -> list[dict[str, Any]]:
    files = index.span_files(project, dates)
    selected = ", ".join(f'"{c}"' for c in ("span_id", *CONTENT_COLUMNS))
    return index.rows(
        f"""WITH hits AS MATERIALIZED (
                SELECT {selected} FROM read_parquet(?, hive_partitioning=false, union_by_name=true)
                WHERE trace_id = ? AND list_contains(?, span_id))
            SELECT * FROM hits
            QUALIFY row_number() OVER (PARTITION BY span_id ORDER BY received_at_unix_nano DESC) = 1""",
        [files, trace_id, span_ids],
    )


def get_span(index: TraceIndex, project: str, trace_id: str, span_id: str) -> dict[str, Any]:
    """Everything stored for one span: promoted fields, whole content, raw attributes, events, links."""
    trace_id = normalise_trace_id(trace_id)
    span_id = span_id.strip().lower()
    if not _SPAN_ID.match(span_id):
        raise NotFound(f"no span {span_id!r} in trace {trace_id}")
    summary = locate(index, project, trace_id)
    dates = summary["dates"]
    found = index.rows(
        """SELECT * EXCLUDE (project) FROM read_parquet(?, hive_partitioning=false, union_by_name=true)
           WHERE trace_id = ? AND span_id = ?
           ORDER BY received_at_unix_nano DESC LIMIT 1""",
        [index.span_files(project, dates), trace_id, span_id],
    )
    if not found:
        raise NotFound(f"no span {span_id!r} in trace {trace_id}")
    span = found[0]
    light = pl.DataFrame([{"span_id": span_id, "response_id": span.get("response_id")}])
    event_in, event_out = event_content(index, project, dates, trace_id, light).get(span_id, (None, None))
    if span.get("input_messages") is None:
        span["input_messages"] = event_in
    if span.get("output_messages") is None:
        span["output_messages"] = event_out
    for name in (*CONTENT_COLUMNS, *RAW_COLUMNS):
        span[name] = _parse_json(span.get(name))
    span["start_time"] = iso(span.get("start_time_unix_nano"))
    return span
