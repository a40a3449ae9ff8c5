"""GET /traces/{id}/export: reads a trace's whole rows and hands them to query/export.py's encoders."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
from fastapi.responses import Response

from query.index import TraceIndex
from query.trace_view import event_content, locate, normalise_trace_id


def trace_rows(
    index: TraceIndex, project: str, trace_id: str, dates: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every stored column of the trace's spans (deduplicated) and of its log records in these partitions."""
    spans = index.rows(
        """WITH hits AS MATERIALIZED (
               SELECT * FROM read_parquet(?, hive_partitioning=false, union_by_name=true) WHERE trace_id = ?)
           SELECT * FROM hits
           QUALIFY row_number() OVER (PARTITION BY span_id ORDER BY received_at_unix_nano DESC) = 1
           ORDER BY start_time_unix_nano, span_id""",
        [index.span_files(project, dates), trace_id],
    )
    event_files = index.event_files(project, dates)
    events: list[dict[str, Any]] = []
    if event_files:
        response_ids = [s["response_id"] for s in spans if s.get("response_id")]
        events = index.rows(
            """SELECT * FROM read_parquet(?, hive_partitioning=false, union_by_name=true)
               WHERE trace_id = ? OR (span_id IS NULL AND list_contains(?, response_id))
               QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY received_at_unix_nano DESC) = 1
               ORDER BY time_unix_nano, event_id""",
            [event_files, trace_id, response_ids],
        )
    return spans, events


def export_trace(index: TraceIndex, project: str, trace_id: str, fmt: str) -> Response:
    from query import export
    from query.app import SafeJSONResponse

    name = normalise_trace_id(trace_id)
    dates = locate(index, project, name)["dates"]
    spans, events = trace_rows(index, project, name, dates)
    if fmt == "otlp":
        return SafeJSONResponse(
            export.trace_to_otlp_json(spans),
            headers={"content-disposition": f'attachment; filename="{name}.otlp.json"'},
        )
    if fmt == "otlp_logs":
        return SafeJSONResponse(
            export.logs_to_otlp_json(events),
            headers={"content-disposition": f'attachment; filename="{name}.otlp-logs.json"'},
        )
    light = pl.DataFrame(
        {"span_id": [s["span_id"] for s in spans], "response_id": [s.get("response_id") for s in spans]},
        schema={"span_id": pl.String, "response_id": pl.String},
    )
    content = event_content(index, project, dates, name, light)
    case = export.trace_to_eval_case(spans, content or None)
    return Response(
        json.dumps(case, ensure_ascii=False) + "\n",
        media_type="application/x-ndjson",
        headers={"content-disposition": f'attachment; filename="{name}.eval.jsonl"'},
    )
