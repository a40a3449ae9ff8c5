"""Error findings: each failed span where the failure started, classified, with its exception and stack.

A failure propagates: the tool raises, the agent span around it fails too. One finding per origin (a failed
span with no failed child) tells the story once; the ancestors it took down are listed in the evidence.
A failure that a later attempt of the same call made good is a warning, not an error (evidence
`recovered_by_retry`), and took none of its ancestors down: an ancestor that failed too has its own finding.
Guardrail tripwires are outcomes, not errors (docs/conventions.md §3): the guardrail detector reports them.
"""

from __future__ import annotations

import re
from typing import Any

import polars as pl

from query.detect.config import DetectorConfig
from query.detect.finding import Finding, frame
from query.detect.signals import call_key, classify_error, exception_details, json_object

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
    recovered = _recovered(spans)
    # A failure a retry made good took nothing down: a parent that failed anyway failed for its own reason.
    has_failed_child = {
        (t, p) for (t, s), p in parent_of.items() if p is not None and (t, p) in failed_ids and (t, s) not in recovered
    }
    findings = []
    for span in failed.iter_rows(named=True):
        key = (span["trace_id"], span["span_id"])
        if key in has_failed_child or is_tripwire(span["error_type"], span["error_message"]):
            continue
        took_down = [] if key in recovered else _ancestors(key, parent_of, failed_ids)
        findings.append(_finding(span, took_down, key in recovered))
    return frame(findings)


def _recovered(spans: pl.DataFrame) -> set[tuple[str, str]]:
    """Failed spans that a later sibling of the same type and model or tool did again successfully."""
    key = call_key()
    group = ["trace_id", "parent_span_id", "span_type", "_key"]
    siblings = spans.filter(pl.col("parent_span_id").is_not_null()).with_columns(key.alias("_key"))
    ok = pl.col("is_error").fill_null(False).not_()
    marked = siblings.with_columns(
        pl.col("start_time_unix_nano").filter(ok).max().over(group).alias("_last_success")
    ).filter(
        pl.col("is_error").fill_null(False)
        & (pl.col("_last_success") >= pl.coalesce("end_time_unix_nano", "start_time_unix_nano"))
    )
    return set(zip(marked["trace_id"].to_list(), marked["span_id"].to_list(), strict=True))


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


_CLASS_REPR = re.compile(r"^<class '([^']+)'>$")  # some instrumentations record str(type(exc))


def _finding(span: dict[str, Any], took_down: list[str], recovered: bool) -> Finding:
    attributes = json_object(span["signal_attributes"])
    exception = exception_details(span["signal_events"])
    message = span["error_message"] or exception.get("exception_message") or span["status_message"] or ""
    error_type = span["error_type"] or exception.get("exception_type")
    if error_type:
        error_type = _CLASS_REPR.sub(r"\1", error_type)
    error_class, http_status = classify_error(span["span_type"], error_type, message, attributes)
    what = span["tool_name"] if span["span_type"] == "tool" and span["tool_name"] else span["name"]
    return Finding(
        trace_id=span["trace_id"],
        span_id=span["span_id"],
        kind="error",
        code=error_class,
        # A failure a retry made good is worth knowing, not waking anyone for.
        severity="warning" if recovered else "error",
        message=f"{what} failed ({error_class.replace('_', ' ')})"
        + (f": {error_type}" if error_type else "")
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
            "recovered_by_retry": recovered,
        },
    )
