"""The replay's model of a trace (pure functions): its steps in order, the cost so far at each, where the
first error and the first finding are, and the waterfall's rows."""

from __future__ import annotations

from typing import Any

import polars as pl

FLAG_ORDER = ("error", "loop", "retry", "budget", "guardrail")


def cumulative_cost(spans: list[dict[str, Any]]) -> list[float]:
    """Cost spent by the time each step ended: own (counted) cost of every span that ended by then."""

    def end(span: dict[str, Any]) -> int:
        return int(span.get("end_time_unix_nano") or span.get("start_time_unix_nano") or 0)

    ended = sorted((end(s), (s.get("own") or {}).get("cost_usd") or 0.0) for s in spans)
    out = []
    for span in spans:
        until = end(span)
        out.append(round(sum(cost for end, cost in ended if end <= until), 12))
    return out


def first_error(spans: list[dict[str, Any]]) -> int | None:
    """The step where a failure started: the earliest-starting failed span with no failed child."""
    failed_parents = {s["parent_span_id"] for s in spans if s.get("is_error")}
    origins = [i for i, s in enumerate(spans) if s.get("is_error") and s["span_id"] not in failed_parents]
    candidates = origins or [i for i, s in enumerate(spans) if s.get("is_error")]
    return min(candidates, key=lambda i: spans[i].get("start_time_unix_nano") or 0) if candidates else None


def first_finding(spans: list[dict[str, Any]], findings: list[dict[str, Any]]) -> int | None:
    """The step the most severe, earliest finding points at."""
    where = {s["span_id"]: i for i, s in enumerate(spans)}
    rank = {"error": 0, "warning": 1, "info": 2}
    ordered = sorted(findings, key=lambda f: (rank.get(f["severity"], 3), f.get("start_time_unix_nano") or 0))
    return next((where[f["span_id"]] for f in ordered if f["span_id"] in where), None)


def findings_by_span(findings: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for finding in findings:
        for span_id in finding.get("span_ids") or [finding["span_id"]]:
            out.setdefault(span_id, []).append(finding)
    return out


def step_label(index: int, span: dict[str, Any]) -> str:
    marks = ("✖ " if span.get("is_error") else "") + ("⚑ " if span.get("flags") else "")
    return f"{index + 1}. {marks}{'  ' * min(span.get('depth') or 0, 8)}{span['name']}"


def waterfall(spans: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per span for the timeline chart: offset and end in ms, type, and whether it failed or is flagged."""
    rows = [
        {
            "step": index + 1,
            "label": f"{index + 1:>4} {'· ' * min(s.get('depth') or 0, 8)}{s['name'][:60]}",
            "start_ms": s.get("offset_ms") or 0.0,
            "end_ms": (s.get("offset_ms") or 0.0) + max(s.get("duration_ms") or 0.0, 0.001),
            "span_type": s.get("span_type") or "other",
            "status": "error" if s.get("is_error") else ("flagged" if s.get("flags") else "ok"),
            "duration_ms": s.get("duration_ms") or 0.0,
        }
        for index, s in enumerate(spans)
    ]
    return pl.DataFrame(rows) if rows else pl.DataFrame()
