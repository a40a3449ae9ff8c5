"""Sessions and users: a session's traces in order with totals; a user's sessions, cost and tokens over time.

Both read the per-trace summaries of the index, whose user and session are the request's (the first span
that names one), so a session is exactly the traces that carry its id.
"""

from __future__ import annotations

from typing import Any

from query.errors import BadRequest, NotFound
from query.index import TraceIndex
from query.lineage import EXACT_COST_SUM, TOKEN_COLUMNS
from query.traces import SUMMARY_COLUMNS, iso, summary_json

_TOTALS = f"""count(*) AS traces, sum(span_count)::BIGINT AS spans, sum(error_count)::BIGINT AS errors,
    {", ".join(f"sum({c})::BIGINT AS {c}" for c in TOKEN_COLUMNS)}, {EXACT_COST_SUM} AS cost_usd,
    sum(unknown_cost_spans)::BIGINT AS unknown_cost_spans,
    min(start_ns) AS first_start_ns, max(end_ns) AS last_end_ns"""
BUCKETS = {"day": "%Y-%m-%d", "hour": "%Y-%m-%dT%H:00Z"}
MAX_TRACES = 1000
# OFFSET is a BIGINT in DuckDB; far below that, a page this deep is empty for any real project.
MAX_OFFSET = 1_000_000_000


def _totals_json(row: dict[str, Any]) -> dict[str, Any]:
    tokens = {c: row.pop(c) or 0 for c in TOKEN_COLUMNS}
    row["tokens"] = {**tokens, "total_tokens": tokens["input_tokens"] + tokens["output_tokens"]}
    row["first_start_time"] = iso(row.get("first_start_ns"))
    row["last_end_time"] = iso(row.get("last_end_ns"))
    return row


def get_session(index: TraceIndex, project: str, session_id: str, limit: int = MAX_TRACES) -> dict[str, Any]:
    index.refresh(project)
    traces = index.rows(
        f"""SELECT {SUMMARY_COLUMNS} FROM traces WHERE project = ? AND session_id = ?
            ORDER BY start_ns, trace_id LIMIT ?""",
        [project, session_id, limit + 1],
    )
    if not traces:
        raise NotFound(f"no session {session_id!r} in this project")
    totals = index.rows(
        f"SELECT {_TOTALS}, list_distinct(list(user_id)) AS users FROM traces WHERE project = ? AND session_id = ?",
        [project, session_id],
    )[0]
    return {
        "session_id": session_id,
        "totals": _totals_json(totals),
        "traces": [summary_json(t) for t in traces[:limit]],
        "truncated": len(traces) > limit,
    }


def list_sessions(
    index: TraceIndex, project: str, *, user: str | None = None, limit: int = 100, offset: int = 0
) -> dict[str, Any]:
    if not 1 <= limit <= MAX_TRACES:
        raise BadRequest(f"limit: must be between 1 and {MAX_TRACES}")
    if not 0 <= offset <= MAX_OFFSET:
        raise BadRequest(f"offset: must be between 0 and {MAX_OFFSET}")
    index.refresh(project)
    where, params = "project = ? AND session_id IS NOT NULL", [project]
    if user is not None:
        where += " AND user_id = ?"
        params.append(user)
    sessions = index.rows(
        f"""SELECT session_id, arg_min(user_id, start_ns) AS user_id, {_TOTALS} FROM traces WHERE {where}
            GROUP BY session_id ORDER BY max(start_ns) DESC, session_id LIMIT ? OFFSET ?""",
        [*params, limit + 1, offset],
    )
    return {
        "sessions": [_totals_json(s) for s in sessions[:limit]],
        "next_offset": offset + limit if len(sessions) > limit else None,
    }


def get_user(
    index: TraceIndex,
    project: str,
    user_id: str,
    *,
    bucket: str = "day",
    from_ns: int | None = None,
    to_ns: int | None = None,
) -> dict[str, Any]:
    if bucket not in BUCKETS:
        raise BadRequest(f"bucket: must be one of {', '.join(BUCKETS)}")
    index.refresh(project)
    where = "project = ? AND user_id = ?"
    params: list[Any] = [project, user_id]
    if from_ns is not None:
        where += " AND start_ns >= ?"
        params.append(from_ns)
    if to_ns is not None:
        where += " AND start_ns < ?"
        params.append(to_ns)
    totals = index.rows(f"SELECT {_TOTALS} FROM traces WHERE {where}", params)[0]
    if not totals["traces"]:
        raise NotFound(f"no user {user_id!r} in this project (in this time range)")
    series = index.rows(
        f"""SELECT strftime(make_timestamp(start_ns // 1000), '{BUCKETS[bucket]}') AS bucket, {_TOTALS}
            FROM traces WHERE {where} GROUP BY 1 ORDER BY 1""",
        params,
    )
    sessions = index.rows(
        f"""SELECT session_id, {_TOTALS} FROM traces WHERE {where}
            GROUP BY session_id ORDER BY max(start_ns) DESC NULLS LAST LIMIT 500""",
        params,
    )
    return {
        "user_id": user_id,
        "totals": _totals_json(totals),
        "over_time": {"bucket": bucket, "points": [_totals_json(p) for p in series]},
        "sessions": [_totals_json(s) for s in sessions],
    }


def list_users(index: TraceIndex, project: str, *, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    if not 1 <= limit <= MAX_TRACES:
        raise BadRequest(f"limit: must be between 1 and {MAX_TRACES}")
    if not 0 <= offset <= MAX_OFFSET:
        raise BadRequest(f"offset: must be between 0 and {MAX_OFFSET}")
    index.refresh(project)
    users = index.rows(
        f"""SELECT user_id, count(DISTINCT session_id) AS sessions, {_TOTALS} FROM traces
            WHERE project = ? AND user_id IS NOT NULL
            GROUP BY user_id ORDER BY cost_usd DESC NULLS LAST, user_id LIMIT ? OFFSET ?""",
        [project, limit + 1, offset],
    )
    return {
        "users": [_totals_json(u) for u in users[:limit]],
        "next_offset": offset + limit if len(users) > limit else None,
    }
