"""Test helper: load tests/data/otlp/semconv/spans.json and turn its entries into DecodedSpan / DecodedLog."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from collector.otlp_model import DecodedLog, DecodedSpan, SpanEvent

FIXTURES_PATH = Path(__file__).resolve().parent / "data" / "otlp" / "semconv" / "spans.json"


@cache
def load_entries() -> tuple[dict[str, Any], ...]:
    return tuple(json.loads(FIXTURES_PATH.read_text(encoding="utf-8")))


def _nanos(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def entry_to_span(entry: dict[str, Any]) -> DecodedSpan:
    """One spans.json entry -> the DecodedSpan the decoder would produce for it."""
    span = entry["span"]
    scope = entry.get("scope") or {}
    start = _nanos(span.get("start_time_unix_nano"))
    return DecodedSpan(
        trace_id=span.get("trace_id", "0" * 32),
        span_id=span.get("span_id", "0" * 16),
        parent_span_id=span.get("parent_span_id"),
        name=span["name"],
        kind=span.get("kind", "INTERNAL"),
        start_time_unix_nano=start,
        end_time_unix_nano=_nanos(span.get("end_time_unix_nano")) or start,
        status_code=span.get("status", "UNSET"),
        status_message=span.get("status_message", ""),
        attributes=dict(entry.get("attributes") or {}),
        events=[
            SpanEvent(
                name=ev["name"],
                time_unix_nano=_nanos(ev.get("time_unix_nano")),
                attributes=dict(ev.get("attributes") or {}),
            )
            for ev in entry.get("events") or []
        ],
        resource=dict(entry.get("resource") or {}),
        scope_name=scope.get("name", ""),
        scope_version=scope.get("version", ""),
    )


def entry_to_logs(entry: dict[str, Any]) -> list[DecodedLog]:
    """The correlated log records of one spans.json entry."""
    span = entry["span"]
    return [
        DecodedLog(
            trace_id=span.get("trace_id"),
            span_id=span.get("span_id"),
            time_unix_nano=_nanos(log.get("time_unix_nano")),
            event_name=log.get("event_name", ""),
            severity_number=9,
            severity_text="INFO",
            body=log.get("body"),
            attributes=dict(log.get("attributes") or {}),
        )
        for log in entry.get("logs") or []
    ]
