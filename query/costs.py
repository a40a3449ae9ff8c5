"""Cost breakdowns over the counted usage rows, and unit economics over the per-trace summaries.

Only leaf model spans are summed (docs/design.md invariant 4); a span whose cost is unknown is counted in
`unknown_cost_spans` and left out of the sum, never priced at $0 (invariant 5). Every breakdown reports
that share, so a total is never silently short.
"""

from __future__ import annotations

from typing import Any

from query.errors import BadRequest
from query.index import TraceIndex
from query.lineage import EXACT_COST_SUM, TOKEN_COLUMNS

# group_by name -> SQL expression over the usage rows
DIMENSIONS = {
    "model": "model",
    "request_model": "request_model",
    "provider": "provider",
    "user": "user_id",
    "session": "session_id",
    "service": "service_name",
    "agent": "agent_name",
    "tool": "tool_name",
    "prompt": "prompt_name",
    "prompt_version": "prompt_version",
    "span_type": "span_type",
    "day": "strftime(make_timestamp(start_ns // 1000), '%Y-%m-%d')",
    "hour": "strftime(make_timestamp(start_ns // 1000), '%Y-%m-%dT%H:00Z')",
}
MAX_GROUPS = 10_000
_SUMS = ", ".join(f"sum({c})::BIGINT AS {c}" for c in TOKEN_COLUMNS)


def _range(from_ns: int | None, to_ns: int | None, column: str) -> tuple[str, list[Any]]:
    clauses, params = ["true"], []
    if from_ns is not None:
        clauses.append(f"{column} >= ?")
        params.append(from_ns)
    if to_ns is not None:
        clauses.append(f"{column} < ?")
        params.append(to_ns)
    return " AND ".join(clauses), params


def _group_json(row: dict[str, Any]) -> dict[str, Any]:
    tokens = {c: row.pop(c) or 0 for c in TOKEN_COLUMNS}
    spans = row["spans"]
    row["tokens"] = {**tokens, "total_tokens": tokens["input_tokens"] + tokens["output_tokens"]}
    row["unknown_cost_share"] = round(row["unknown_cost_spans"] / spans, 6) if spans else 0.0
    return row


def _distinct_traces(con: Any, source: str, where: str, params: list[Any]) -> int:
    row = con.execute(f"SELECT count(DISTINCT trace_id) FROM {source} WHERE {where}", params).fetchone()
    return int(row[0]) if row else 0


def cost_breakdown(
    index: TraceIndex,
    project: str,
    group_by: list[str],
    *,
    from_ns: int | None = None,
    to_ns: int | None = None,
    limit: int = 1000,
    count_traces: bool = False,
) -> dict[str, Any]:
    unknown = [g for g in group_by if g not in DIMENSIONS]
    if unknown:
        raise BadRequest(f"group_by: {', '.join(unknown)} not among {', '.join(DIMENSIONS)}")
    if len(set(group_by)) != len(group_by):
        raise BadRequest("group_by: a dimension is repeated")
    if not 1 <= limit <= MAX_GROUPS:
        raise BadRequest(f"limit: must be between 1 and {MAX_GROUPS}")
    index.refresh(project)
    usage = index.usage_source(project)
    empty = {"spans": 0, "traces": 0, "cost_usd": None, "unknown_cost_spans": 0, **{c: 0 for c in TOKEN_COLUMNS}}
    if usage is None:
        return {"group_by": group_by, "groups": [], "total": _group_json(dict(empty)), "truncated": False}
    where, params = _range(from_ns, to_ns, "start_ns")
    # A distinct trace count per group costs more than the rest of the breakdown together (0.45 of 1.05 s
    # at 10M spans), so groups carry it only on request; the total always does.
    per_group_traces = "count(DISTINCT trace_id)" if count_traces else "NULL::BIGINT"
    measures = f"""count(*) AS spans, {per_group_traces} AS traces, {_SUMS}, {EXACT_COST_SUM} AS cost_usd,
                   count(*) FILTER (WHERE cost_usd IS NULL) AS unknown_cost_spans"""
    source, source_params = usage
    con = index.cursor()
    try:
        groups: list[dict[str, Any]] = []
        truncated = False
        if not group_by:
            result = con.execute(f"SELECT {measures} FROM {source} WHERE {where}", [*source_params, *params])
            names = [d[0] for d in result.description or []]
            total = dict(zip(names, result.fetchone() or (), strict=True))
            if not count_traces:
                total["traces"] = _distinct_traces(con, source, where, [*source_params, *params])
        else:
            # One scan for the groups and the total (GROUPING SETS): the usage rows are read once, which
            # halves the cost of a breakdown over 10M spans. The total row sorts first (_total = 1).
            dims = ", ".join(f'{DIMENSIONS[g]} AS "{g}"' for g in group_by)
            keys = ", ".join(f'"{g}"' for g in group_by)
            result = con.execute(
                f"""SELECT {dims}, {measures}, grouping({keys}) > 0 AS _total FROM {source} WHERE {where}
                    GROUP BY GROUPING SETS (({keys}), ())
                    ORDER BY _total DESC, cost_usd DESC NULLS LAST, spans DESC, {keys}
                    LIMIT ?""",
                [*source_params, *params, limit + 2],
            )
            names = [d[0] for d in result.description or []]
            rows = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
            total = {k: v for k, v in rows[0].items() if k not in group_by and k != "_total"}
            if not count_traces:
                total["traces"] = _distinct_traces(con, source, where, [*source_params, *params])
            groups = [{k: v for k, v in r.items() if k != "_total"} for r in rows[1:]]
            truncated = len(groups) > limit
            groups = groups[:limit]
    finally:
        con.close()
    return {
        "group_by": group_by,
        "groups": [_group_json(g) for g in groups],
        "total": _group_json(total),
        "truncated": truncated,
    }


def unit_economics(
    index: TraceIndex,
    project: str,
    *,
    from_ns: int | None = None,
    to_ns: int | None = None,
    sessions_per_day: float | None = None,
) -> dict[str, Any]:
    if sessions_per_day is not None and not sessions_per_day >= 0:
        raise BadRequest("sessions_per_day: must be zero or more")
    index.refresh(project)
    where, params = _range(from_ns, to_ns, "start_ns")
    con = index.cursor()
    try:
        row = con.execute(
            f"""SELECT count(*) AS traces, count(DISTINCT session_id) AS sessions,
                       {EXACT_COST_SUM} AS cost_usd,
                       (sum(TRY_CAST(cost_usd AS DECIMAL(38, 12))) FILTER (WHERE session_id IS NOT NULL))::DOUBLE
                           AS session_cost,
                       sum(unknown_cost_spans)::BIGINT AS unknown_cost_spans,
                       sum(counted_spans)::BIGINT AS counted_spans
                FROM traces WHERE project = ? AND {where}""",
            [project, *params],
        ).fetchone()
    finally:
        con.close()
    traces, sessions, cost, session_cost, unknown_spans, counted = row or (0, 0, None, None, 0, 0)
    per_trace = cost / traces if traces and cost is not None else None
    per_session = session_cost / sessions if sessions and session_cost is not None else None
    out: dict[str, Any] = {
        "traces": traces,
        "sessions": sessions,
        "cost_usd": cost,
        "avg_cost_per_trace_usd": per_trace,
        "avg_cost_per_session_usd": per_session,
        "unknown_cost_spans": unknown_spans or 0,
        "unknown_cost_share": round((unknown_spans or 0) / counted, 6) if counted else 0.0,
    }
    if sessions_per_day is not None:
        # Agents that send no session id: each trace is its own session, and the basis says so.
        basis_cost, basis = (per_session, "session") if sessions else (per_trace, "trace (no session ids sent)")
        daily = basis_cost * sessions_per_day if basis_cost is not None else None
        out["projection"] = {
            "sessions_per_day": sessions_per_day,
            "daily_cost_usd": daily,
            "monthly_cost_usd": daily * 30 if daily is not None else None,
            "basis": f"average cost per {basis} over the selected range; 30-day month",
        }
    return out
