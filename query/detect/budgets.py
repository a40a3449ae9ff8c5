"""Budget findings: a trace, session, user-day, user-month or project-day that used 80 % or all of a budget.

Limits come from the project's detector config (config.py) and, for a trace, from budgets the agent declared
on its own spans (`agentflight.budget.<metric>`; the stricter limit wins). Usage accumulates in time order:
tokens and cost per counted model call (at its end), steps per counted model call, tool calls per tool span
(at their start), duration as the trace's elapsed time at each span's end. The finding points at the span
where the line was crossed: `budget_warning` (warning) at `budgets.warning_at` of a limit, `budget_breach`
(error) at the limit; one finding per scope and metric, the highest level reached.

Evidence: `scope`, `scope_key`, `metric`, `limit`, `source` (config / declared and the declaring span),
`total`, `ratio`, `crossed_at` (the running total at the crossing span), `warning_span_id`, `breach_span_id`.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from query.detect.config import SCOPE_METRICS, TRACE_METRICS, BudgetSettings, DetectorConfig
from query.detect.finding import Finding, frame
from query.detect.signals import json_object, number

DECLARED_PREFIX = "agentflight.budget."
NS_PER_MS = 1_000_000
_UNITS = {
    "tokens": "tokens",
    "cost_usd": "USD",
    "steps": "model calls",
    "tool_calls": "tool calls",
    "duration_ms": "ms",
}


def crossings(events: pl.DataFrame, limits: pl.DataFrame, key: list[str], warning_at: float) -> pl.DataFrame:
    """Per key: total, and the first event at which the running total reached warning_at and 1.0 of its limit.

    `events` has the key columns, `amount`, `at` (order), `trace_id`, `span_id`; `limits` the key columns
    and `limit`. Only keys whose total reached the warning line are returned."""
    if events.height == 0 or limits.height == 0:
        return pl.DataFrame()
    running = (
        events.join(limits, on=key, how="inner")
        .sort([*key, "at", "span_id"])
        .with_columns(pl.col("amount").fill_null(0).cum_sum().over(key).alias("running"))
    )
    warn_line = pl.col("running") >= pl.col("limit") * warning_at
    breach_line = pl.col("running") >= pl.col("limit")
    return (
        running.group_by(key, maintain_order=True)
        .agg(
            pl.col("limit").first(),
            pl.col("running").last().alias("total"),
            pl.col("trace_id").filter(warn_line).first().alias("warning_trace_id"),
            pl.col("span_id").filter(warn_line).first().alias("warning_span_id"),
            pl.col("at").filter(warn_line).first().alias("warning_at_ns"),
            pl.col("running").filter(warn_line).first().alias("warning_running"),
            pl.col("trace_id").filter(breach_line).first().alias("breach_trace_id"),
            pl.col("span_id").filter(breach_line).first().alias("breach_span_id"),
            pl.col("at").filter(breach_line).first().alias("breach_at_ns"),
            pl.col("running").filter(breach_line).first().alias("breach_running"),
        )
        .filter(pl.col("warning_span_id").is_not_null())
    )


def finding_from(row: dict[str, Any], scope: str, scope_key: str, metric: str, source: dict[str, Any]) -> Finding:
    breached = row["breach_span_id"] is not None
    level = "breach" if breached else "warning"
    limit, total = row["limit"], row["total"]
    unit = _UNITS[metric]
    shown = (lambda v: f"{v:.4f}") if metric == "cost_usd" else (lambda v: f"{v:,.0f}")
    scope_words = scope.replace("_", "-")
    return Finding(
        trace_id=row[f"{level}_trace_id"],
        span_id=row[f"{level}_span_id"],
        kind="budget",
        code=f"budget_{level}",
        severity="error" if breached else "warning",
        message=f"{scope_words} {scope_key} used {shown(total)} of its {shown(limit)} {unit} {metric} budget"
        + f" ({total / limit:.0%})",
        start_ns=row[f"{level}_at_ns"],
        evidence={
            "scope": scope,
            "scope_key": scope_key,
            "metric": metric,
            "limit": limit,
            **source,
            "total": total,
            "ratio": round(total / limit, 4),
            "crossed_at": row[f"{level}_running"],
            "warning_span_id": row["warning_span_id"],
            "breach_span_id": row["breach_span_id"],
        },
    )


# --- per trace ------------------------------------------------------------------------------------------


def _trace_events(spans: pl.DataFrame, metric: str) -> pl.DataFrame:
    counted = spans.filter(pl.col("counted"))
    end = pl.coalesce("end_time_unix_nano", "start_time_unix_nano")
    if metric == "tokens":
        chosen = counted.select(
            "trace_id",
            "span_id",
            end.alias("at"),
            (pl.col("input_tokens").fill_null(0) + pl.col("output_tokens").fill_null(0))
            .cast(pl.Float64)
            .alias("amount"),
        )
    elif metric == "cost_usd":
        chosen = counted.select("trace_id", "span_id", end.alias("at"), pl.col("cost_usd").alias("amount"))
    elif metric == "steps":
        chosen = counted.filter(pl.col("span_type") == "llm").select(
            "trace_id", "span_id", end.alias("at"), pl.lit(1.0).alias("amount")
        )
    elif metric == "tool_calls":
        chosen = spans.filter(pl.col("span_type") == "tool").select(
            "trace_id", "span_id", pl.col("start_time_unix_nano").alias("at"), pl.lit(1.0).alias("amount")
        )
    else:  # duration_ms: elapsed time at each span's end; the running total is the latest elapsed time
        first = pl.col("start_time_unix_nano").min().over("trace_id")
        chosen = (
            spans.select("trace_id", "span_id", end.alias("at"), ((end - first) / NS_PER_MS).alias("elapsed"))
            .sort("trace_id", "at", "span_id")
            .with_columns(pl.col("elapsed").cum_max().over("trace_id").alias("latest"))
            .with_columns(pl.col("latest").diff().over("trace_id").fill_null(pl.col("latest")).alias("amount"))
            .drop("elapsed", "latest")
        )
    return chosen.with_columns(pl.col("amount").cast(pl.Float64))


def declared(spans: pl.DataFrame) -> dict[str, dict[str, tuple[float, str]]]:
    """trace -> metric -> (the strictest declared limit, the span that declared it)."""
    out: dict[str, dict[str, tuple[float, str]]] = {}
    marked = spans.filter(pl.col("signal_attributes").str.contains(DECLARED_PREFIX, literal=True))
    for trace_id, span_id, attributes in marked.select("trace_id", "span_id", "signal_attributes").iter_rows():
        for key, value in json_object(attributes).items():
            metric = key.removeprefix(DECLARED_PREFIX)
            limit = number(value)
            if not key.startswith(DECLARED_PREFIX) or metric not in TRACE_METRICS or limit is None or limit <= 0:
                continue
            current = out.setdefault(trace_id, {}).get(metric)
            if current is None or limit < current[0]:
                out[trace_id][metric] = (limit, span_id)
    return out


def detect(spans: pl.DataFrame, config: DetectorConfig) -> pl.DataFrame:
    configured = config.budgets.for_scope("trace")
    by_agent = declared(spans)
    if not configured and not by_agent:
        return frame([])
    traces = spans.select("trace_id").unique()["trace_id"].to_list()
    findings: list[Finding] = []
    for metric in TRACE_METRICS:
        limits: dict[str, tuple[float, dict[str, Any]]] = {}
        for trace_id in traces if metric in configured else by_agent:
            own = by_agent.get(trace_id, {}).get(metric)
            base = configured.get(metric)
            if own is not None and (base is None or own[0] < base):
                limits[trace_id] = (own[0], {"source": "declared", "declared_by": own[1]})
            elif base is not None:
                limits[trace_id] = (base, {"source": "config"})
        if not limits:
            continue
        frame_limits = pl.DataFrame(
            {"trace_id": list(limits), "limit": [v[0] for v in limits.values()]},
            schema={"trace_id": pl.String, "limit": pl.Float64},
        )
        events = _trace_events(spans.filter(pl.col("trace_id").is_in(list(limits))), metric)
        for row in crossings(events, frame_limits, ["trace_id"], config.budgets.warning_at).iter_rows(named=True):
            findings.append(finding_from(row, "trace", row["trace_id"], metric, limits[row["trace_id"]][1]))
    return frame(findings)


# --- across traces: session, user per day and month, project per day ---------------------------------

_SCOPE_KEYS = {
    "session": (pl.col("session_id"), pl.col("session_id").is_not_null()),
    "user_day": (pl.concat_str("user_id", pl.lit(" on "), "day"), pl.col("user_id").is_not_null()),
    "user_month": (pl.concat_str("user_id", pl.lit(" in "), "month"), pl.col("user_id").is_not_null()),
    "project_day": (pl.col("day"), pl.lit(True)),
}


def detect_scopes(usage: pl.DataFrame, budgets: BudgetSettings) -> pl.DataFrame:
    """Findings for the cross-trace budgets from counted usage rows (query/summaries.py USAGE_SCHEMA)."""
    if usage.height == 0:
        return frame([])
    stamped = usage.with_columns(
        pl.from_epoch("start_ns", time_unit="ns").dt.strftime("%Y-%m-%d").alias("day"),
        pl.from_epoch("start_ns", time_unit="ns").dt.strftime("%Y-%m").alias("month"),
    )
    findings: list[Finding] = []
    for scope, (key_expr, present) in _SCOPE_KEYS.items():
        limits_by_metric = budgets.for_scope(scope)
        for metric in SCOPE_METRICS:
            if metric not in limits_by_metric:
                continue
            amount = (
                (pl.col("input_tokens").fill_null(0) + pl.col("output_tokens").fill_null(0)).cast(pl.Float64)
                if metric == "tokens"
                else pl.col("cost_usd")
            )
            events = stamped.filter(present).select(
                key_expr.alias("scope_key"),
                "trace_id",
                "span_id",
                pl.col("start_ns").alias("at"),
                amount.alias("amount"),
            )
            keys = events.select("scope_key").unique().with_columns(pl.lit(limits_by_metric[metric]).alias("limit"))
            for row in crossings(events, keys, ["scope_key"], budgets.warning_at).iter_rows(named=True):
                findings.append(finding_from(row, scope, row["scope_key"], metric, {"source": "config"}))
    return frame(findings)
