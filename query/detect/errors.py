"""Error findings: each failed span where the failure started, classified, with its exception and stack.

A failure propagates: the tool raises, the agent span around it fails too. One finding per origin (a failed
span with no failed child) tells the story once; the ancestors it took down are listed in the evidence.
Guardrail tripwires are outcomes, not errors (semconv.md §3): the guardrail detector reports them.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from query.detect.config import DetectorConfig
from query.detect.finding import Finding, frame
from query.detect.signals import classify_error, exception_details, json_object

_TRIPWIRE = "tripwire"
MESSAGE_CHARS = 4000


def is_tripwire(error_type: str | None, message: str | None) -> bool:
    return _TRIPWIRE in f"{error_type or ''} {message or ''}".lower()


def detect(spans: pl.DataFrame, config: DetectorConfig) -> pl.DataFrame:
    failed = spans.filter(pl.col("is_error").fill_null(False) & (pl.col("span_type") != "guardrail"))
    if failed.height == 0:
        return frame([])
    failed_ids = set(zip(failed["trace_id"].to_list(), failed["span_id"].to_list(), strict=True))
    parent_of = {
        (t, s): p
        for t, s, p in zip(
            failed["trace_id"].to_list(), failed["span_id"].to_list(), failed["parent_span_id"].to_list(), strict=True
        )
    }
    has_failed_child = {(t, p) for (t, _), p in parent_of.items() if p is not None and (t, p) in failed_ids}
    findings = []
    for span in failed.iter_rows(named=True):
        key = (span["trace_id"], span["span_id"])
        if key in has_failed_child or is_tripwire(span["error_type"], span["error_message"]):
            continue
        findings.append(_finding(span, _ancestors(key, parent_of, failed_ids)))
    return frame(findings)


def _ancestors(
    key: tuple[str, str], parent_of: dict[tuple[str, str], str | None], failed: set[tuple[str, str]]
) -> list[str]:
    trace_id, _span_id = key
    chain: list[str] = []
    current = parent_of.get(key)
    while current is not None and (trace_id, current) in failed and current not in chain and len(chain) < 256:
        chain.append(current)
        current = parent_of.get((trace_id, current))
    return chain


def _finding(span: dict[str, Any], took_down: list[str]) -> Finding:
    attributes = json_object(span["signal_attributes"])
    exception = exception_details(span["signal_events"])
    message = span["error_message"] or exception.get("exception_message") or span["status_message"] or ""
    error_type = span["error_type"] or exception.get("exception_type")
    error_class, http_status = classify_error(span["span_type"], error_type, message, attributes)
    what = span["tool_name"] if span["span_type"] == "tool" and span["tool_name"] else span["name"]
    return Finding(
        trace_id=span["trace_id"],
        span_id=span["span_id"],
        kind="error",
        code=error_class,
        severity="error",
        message=f"{what} failed ({error_class.replace('_', ' ')}): {error_type or 'error'}"
        + (f": {message}" if message else ""),
        start_ns=span["start_time_unix_nano"],
        evidence={
            "error_class": error_class,
            "error_type": error_type,
            "error_message": (message or "")[:MESSAGE_CHARS] or None,
            "http_status": http_status,
            "stacktrace": exception.get("stacktrace"),
            "span_name": span["name"],
            "span_type": span["span_type"],
            "failed_ancestors": took_down,
        },
    )
