"""The trace list: filters, sort orders, cursor paging and free-text search over the trace index.

Filters on the index's per-trace summaries are one SQL statement; free text (span names and message
content) scans the lake's date partitions newest first and stops once a page is full, so a search over a
large lake costs what it takes to fill one page, not a full scan.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any

from query.errors import BadRequest
from query.index import TraceIndex
from query.lineage import TOKEN_COLUMNS

FLAG_KINDS = ("loop", "retry", "budget", "guardrail", "error")
SORT_KEYS = {
    "start": "start_ns",
    "duration": "duration_ns",
    "cost": "coalesce(cost_usd, -1.0)",
    "tokens": "(coalesce(input_tokens, 0) + coalesce(output_tokens, 0))",
    "spans": "span_count",
}
MAX_LIMIT = 500
# Durations are int64 nanoseconds (about 292 years); one ms below keeps float rounding inside int64.
MAX_DURATION_MS = 2**63 // 1_000_000 - 1
# Text search reads content columns; these are where names, prompts, answers and tool I/O live.
_SPAN_TEXT_COLUMNS = ("name", "input_messages", "output_messages", "tool_arguments", "tool_result", "status_message")
_EVENT_TEXT_COLUMNS = ("input_messages", "output_messages", "body")


@dataclass(frozen=True)
class TraceFilter:
    from_ns: int | None = None
    to_ns: int | None = None
    service: str | None = None
    user: str | None = None
    session: str | None = None
    model: str | None = None
    provider: str | None = None
    agent: str | None = None
    tool: str | None = None
    span_type: str | None = None
    status: str | None = None  # "error" or "ok"
    flag: str | None = None
    min_cost: float | None = None
    min_duration_ms: float | None = None
    text: str | None = None
    trace_ids: tuple[str, ...] | None = field(default=None)

    def where(self, project: str) -> tuple[str, list[Any]]:
        clauses: list[str] = ["project = ?"]
        params: list[Any] = [project]
        equal = {"user_id": self.user, "session_id": self.session}
        contains = {
            "services": self.service,
            "models": self.model,
            "providers": self.provider,
            "agents": self.agent,
            "tools": self.tool,
            "span_types": self.span_type,
            "flags": self.flag,
        }
        for column, value in equal.items():
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        for column, value in contains.items():
            if value is not None:
                clauses.append(f"list_contains({column}, ?)")
                params.append(value)
        if self.from_ns is not None:
            clauses.append("start_ns >= ?")
            params.append(self.from_ns)
        if self.to_ns is not None:
            clauses.append("start_ns < ?")
            params.append(self.to_ns)
        if self.status == "error":
            clauses.append("error_count > 0")
        elif self.status == "ok":
            clauses.append("error_count = 0")
        if self.min_cost is not None:
            clauses.append("cost_usd >= ?")
            params.append(self.min_cost)
        if self.min_duration_ms is not None:
            clauses.append("duration_ns >= ?")
            params.append(int(self.min_duration_ms * 1_000_000))
        if self.trace_ids is not None:
            clauses.append("list_contains(?, trace_id)")
            params.append(list(self.trace_ids))
        return " AND ".join(clauses), params


_INTEGER = re.compile(r"-?[0-9]+")


def parse_time(value: str | None, name: str) -> int | None:
    """Unix nanoseconds from an integer (ns) or an ISO 8601 time (UTC unless it says otherwise)."""
    if value is None or value == "":
        return None
    text = value.strip()
    if _INTEGER.fullmatch(text):
        # ASCII digits only (int() would take "²" or "١٢٣"), and no more than any int64 has: int() refuses
        # strings past 4,300 digits with a ValueError, and such a number is out of range anyway.
        number = int(text) if len(text) <= 20 else -1
        if not 0 <= number < 2**63:
            raise BadRequest(f"{name}: {value!r} is out of range for nanoseconds since the epoch")
        return number
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name}: {value!r} is neither an ISO 8601 time nor integer nanoseconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    ns = int(parsed.timestamp()) * 1_000_000_000 + parsed.microsecond * 1000
    # Every stored time is in [0, 2**63) ns, so clamping an earlier or later ISO time selects the same spans
    # and keeps the bound a BIGINT that iso() can print (year 1 at +05:00 is year 0 in UTC).
    return min(max(ns, 0), 2**63 - 1)


def iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return (
        dt.datetime.fromtimestamp(ns // 1_000_000_000, tz=dt.UTC)
        .replace(microsecond=(ns // 1000) % 1_000_000)
        .isoformat()
        .replace("+00:00", "Z")
    )


def _encode_cursor(sort: str, value: Any, trace_id: str) -> str:
    raw = json.dumps([sort, value, trace_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        kind, value, trace_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError):
        raise BadRequest("cursor: not a cursor this API returned") from None
    if kind != sort or not isinstance(trace_id, str) or not isinstance(value, int | float):
        raise BadRequest("cursor: made for another sort order; start again without a cursor")
    return value, trace_id


SUMMARY_COLUMNS = (
    "trace_id, root_name, root_span_id, has_root, service_name, start_ns, end_ns, duration_ns, span_count, "
    "llm_calls, tool_calls, error_count, user_id, session_id, services, models, providers, agents, tools, "
    f"span_types, {', '.join(TOKEN_COLUMNS)}, cost_usd, counted_spans, unknown_cost_spans, flags, dates"
)


def summary_json(row: dict[str, Any]) -> dict[str, Any]:
    """The API shape of one trace summary."""
    tokens = {c: row[c] or 0 for c in TOKEN_COLUMNS}
    return {
        "trace_id": row["trace_id"],
        "root_name": row["root_name"],
        "root_span_id": row["root_span_id"],
        "root_missing": not row["has_root"],
        "service_name": row["service_name"],
        "start_time_unix_nano": row["start_ns"],
        "start_time": iso(row["start_ns"]),
        "duration_ms": round(row["duration_ns"] / 1e6, 3),
        "span_count": row["span_count"],
        "llm_calls": row["llm_calls"],
        "tool_calls": row["tool_calls"],
        "tokens": {**tokens, "total_tokens": tokens["input_tokens"] + tokens["output_tokens"]},
        "cost_usd": row["cost_usd"],
        "unknown_cost_spans": row["unknown_cost_spans"],
        "user_id": row["user_id"],
        "session_id": row["session_id"],
        "error": row["error_count"] > 0,
        "error_count": row["error_count"],
        "flags": row["flags"],
        "services": row["services"],
        "models": row["models"],
        "providers": row["providers"],
        "agents": row["agents"],
        "tools": row["tools"],
        "span_types": row["span_types"],
    }


def _page_query(
    index: TraceIndex, project: str, flt: TraceFilter, sort: str, descending: bool, limit: int, cursor: str | None
) -> list[dict[str, Any]]:
    where, params = flt.where(project)
    key = SORT_KEYS[sort]
    if cursor is not None:
        value, trace_id = _decode_cursor(cursor, sort)
        op = "<" if descending else ">"
        where += f" AND ({key} {op} ? OR ({key} = ? AND trace_id {op} ?))"
        params += [value, value, trace_id]
    direction = "DESC" if descending else "ASC"
    return index.rows(
        f"""SELECT {SUMMARY_COLUMNS}, {key} AS _sort_value FROM traces WHERE {where}
            ORDER BY {key} {direction}, trace_id {direction} LIMIT ?""",
        [*params, limit],
    )


def _text_matches(index: TraceIndex, project: str, text: str, dates: list[str]) -> set[str]:
    """Trace ids in these dates whose span names or message content contain the text (case-insensitive)."""
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    found: set[str] = set()
    con = index.cursor()
    try:
        for files, columns in (
            (index.span_files(project, dates), _SPAN_TEXT_COLUMNS),
            (index.event_files(project, dates), _EVENT_TEXT_COLUMNS),
        ):
            if not files:
                continue
            condition = " OR ".join(f"\"{c}\" ILIKE ? ESCAPE '\\'" for c in columns)
            rows = con.execute(
                f"""SELECT DISTINCT trace_id FROM read_parquet(?, hive_partitioning=false, union_by_name=true)
                    WHERE trace_id IS NOT NULL AND ({condition})""",
                [files, *([pattern] * len(columns))],
            ).fetchall()
            found.update(r[0] for r in rows)
    finally:
        con.close()
    return found


def list_traces(
    index: TraceIndex,
    project: str,
    flt: TraceFilter,
    *,
    sort: str = "start",
    descending: bool = True,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    if sort not in SORT_KEYS:
        raise BadRequest(f"sort: {sort!r} is not one of {', '.join(SORT_KEYS)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit: must be between 1 and {MAX_LIMIT}")
    if flt.flag is not None and flt.flag not in FLAG_KINDS:
        raise BadRequest(f"flag: {flt.flag!r} is not one of {', '.join(FLAG_KINDS)}")
    if flt.status is not None and flt.status not in ("error", "ok"):
        raise BadRequest("status: must be 'error' or 'ok'")
    if flt.min_duration_ms is not None and not 0 <= flt.min_duration_ms <= MAX_DURATION_MS:
        raise BadRequest(f"min_duration_ms: must be between 0 and {MAX_DURATION_MS}")
    index.refresh(project)
    if flt.text:
        rows = _search_pages(index, project, flt, sort, descending, limit, cursor)
    else:
        rows = _page_query(index, project, flt, sort, descending, limit + 1, cursor)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(sort, rows[-1]["_sort_value"], rows[-1]["trace_id"]) if more and rows else None
    return {"traces": [summary_json(r) for r in rows], "next_cursor": next_cursor}


def _search_pages(
    index: TraceIndex, project: str, flt: TraceFilter, sort: str, descending: bool, limit: int, cursor: str | None
) -> list[dict[str, Any]]:
    """Free-text search one date partition at a time, newest first; stops early only when the page order
    is by start time (later partitions cannot then hold an earlier row of the page)."""
    assert flt.text is not None
    dates = index.dates(project)
    if flt.from_ns is not None:
        dates = [d for d in dates if d >= (iso(flt.from_ns) or "")[:10]]
    if flt.to_ns is not None:
        dates = [d for d in dates if d <= (iso(flt.to_ns) or "")[:10]]
    by_start_desc = sort == "start" and descending
    ordered = sorted(dates, reverse=by_start_desc)
    matched: set[str] = set()
    rows: list[dict[str, Any]] = []
    for date in ordered:
        matched |= _text_matches(index, project, flt.text, [date])
        if by_start_desc and matched:
            narrowed = TraceFilter(**{**flt.__dict__, "text": None, "trace_ids": tuple(sorted(matched))})
            rows = _page_query(index, project, narrowed, sort, descending, limit + 1, cursor)
            if len(rows) > limit:
                return rows
    if not matched:
        return []
    narrowed = TraceFilter(**{**flt.__dict__, "text": None, "trace_ids": tuple(sorted(matched))})
    return _page_query(index, project, narrowed, sort, descending, limit + 1, cursor)
