"""Findings for the API: one trace's, the filtered list (newest first, cursor paged) and counts per kind per day.

Findings are derived data kept current by the trace index (query/index.py): a read refreshes the index first,
so a late span that adds or clears a finding shows on the next read.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from query.detect.finding import KINDS, SEVERITIES
from query.errors import BadRequest
from query.index import TraceIndex
from query.traces import iso

_COLUMNS = (
    "finding_id, trace_id, span_id, span_ids, kind, code, severity, message, evidence, start_ns, "
    "wasted_tokens, wasted_cost_usd"
)
_ORDER = {"error": 0, "warning": 1, "info": 2}
BUCKETS = {"day": "%Y-%m-%d", "hour": "%Y-%m-%dT%H:00Z"}


def finding_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "finding_id": row["finding_id"],
        "trace_id": row["trace_id"],
        "span_id": row["span_id"],
        "span_ids": row["span_ids"],
        "kind": row["kind"],
        "code": row["code"],
        "severity": row["severity"],
        "message": row["message"],
        "time": iso(row["start_ns"]),
        "start_time_unix_nano": row["start_ns"],
        "wasted_tokens": row["wasted_tokens"],
        "wasted_cost_usd": row["wasted_cost_usd"],
        "evidence": json.loads(row["evidence"]) if row["evidence"] else {},
    }


def for_trace(index: TraceIndex, project: str, trace_id: str) -> list[dict[str, Any]]:
    """A trace's findings, most severe first, then in time order (the index is already refreshed)."""
    rows = index.rows(
        f"SELECT {_COLUMNS} FROM findings WHERE project = ? AND trace_id = ? ORDER BY start_ns, code, finding_id",
        [project, trace_id],
    )
    rows.sort(key=lambda r: _ORDER.get(r["severity"], 3))  # stable: time order within a severity
    return [finding_json(r) for r in rows]


@dataclass(frozen=True, slots=True)
class FindingFilter:
    kinds: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    code: str | None = None
    trace_id: str | None = None
    from_ns: int | None = None
    to_ns: int | None = None

    def where(self, project: str) -> tuple[str, list[Any]]:
        clauses: list[str] = ["project = ?"]
        params: list[Any] = [project]
        if self.kinds:
            clauses.append("list_contains(?, kind)")
            params.append(list(self.kinds))
        if self.severities:
            clauses.append("list_contains(?, severity)")
            params.append(list(self.severities))
        if self.code is not None:
            clauses.append("code = ?")
            params.append(self.code)
        if self.trace_id is not None:
            clauses.append("trace_id = ?")
            params.append(self.trace_id)
        if self.from_ns is not None:
            clauses.append("start_ns >= ?")
            params.append(self.from_ns)
        if self.to_ns is not None:
            clauses.append("start_ns < ?")
            params.append(self.to_ns)
        return " AND ".join(clauses), params


def parse_choices(value: str | None, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    chosen = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in chosen if v not in allowed]
    if bad:
        raise BadRequest(f"{name}: {bad[0]!r} is not one of {', '.join(allowed)}")
    return chosen


def parse_filter(
    kind: str | None,
    severity: str | None,
    code: str | None,
    trace_id: str | None,
    from_ns: int | None,
    to_ns: int | None,
) -> FindingFilter:
    return FindingFilter(
        kinds=parse_choices(kind, "kind", KINDS),
        severities=parse_choices(severity, "severity", SEVERITIES),
        code=code,
        trace_id=trace_id.lower() if trace_id else None,
        from_ns=from_ns,
        to_ns=to_ns,
    )


def _encode(row: dict[str, Any]) -> str:
    key = [row["start_ns"], row["finding_id"]]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def _decode(cursor: str) -> list[Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()))
    except (ValueError, TypeError):
        raise BadRequest("cursor: not a cursor this API returned") from None
    if not (
        isinstance(key, list) and len(key) == 2 and isinstance(key[0], int) and isinstance(key[1], str)
    ):
        raise BadRequest("cursor: not a cursor this API returned")
    return key


def list_findings(
    index: TraceIndex, project: str, flt: FindingFilter, limit: int, cursor: str | None
) -> dict[str, Any]:
    where, params = flt.where(project)
    if cursor is not None:
        start_ns, after = _decode(cursor)
        where += " AND (start_ns < ? OR (start_ns = ? AND finding_id < ?))"
        params += [start_ns, start_ns, after]
    rows = index.rows(
        f"""SELECT {_COLUMNS} FROM findings WHERE {where}
            ORDER BY start_ns DESC, finding_id DESC LIMIT ?""",
        [*params, limit + 1],
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {"findings": [finding_json(r) for r in rows], "next_cursor": _encode(rows[-1]) if more and rows else None}


def counts(index: TraceIndex, project: str, flt: FindingFilter, bucket: str) -> dict[str, Any]:
    """Findings and flagged traces per kind per day (or hour), oldest bucket first."""
    if bucket not in BUCKETS:
        raise BadRequest(f"bucket: must be one of {', '.join(BUCKETS)}")
    where, params = flt.where(project)
    rows = index.rows(
        f"""SELECT strftime(make_timestamp(start_ns // 1000), '{BUCKETS[bucket]}') AS bucket, kind,
                   count(*) AS findings, count(DISTINCT trace_id) AS traces,
                   count(*) FILTER (WHERE severity = 'error') AS errors,
                   count(*) FILTER (WHERE severity = 'warning') AS warnings
            FROM (SELECT {_COLUMNS} FROM findings WHERE {where})
            GROUP BY ALL ORDER BY bucket, kind""",
        params,
    )
    totals: dict[str, int] = {}
    for row in rows:
        totals[row["kind"]] = totals.get(row["kind"], 0) + row["findings"]
    return {"bucket": bucket, "counts": rows, "totals": totals}
