"""Costs: where the money goes (by model, provider, user, agent, tool, prompt version, day), over time, the
most expensive requests, the share of calls with no known price, and what a number of sessions a day costs.

Every number comes from GET /costs (leaf model calls only), GET /costs/unit-economics and GET /traces; names
from the data are shown only in tables and charts.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import polars as pl
import streamlit as st

from ui.common import RANGES, call, client, nothing_found, param, set_params, since
from ui.render import money, show_table, show_text

# label shown -> the API's group_by
BREAKDOWNS = {
    "model": "model",
    "provider": "provider",
    "user": "user",
    "agent": "agent",
    "tool": "tool",
    "prompt version": "prompt,prompt_version",
    "day": "day",
    "session": "session",
    "service": "service",
}
TOKEN_KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
CHART_GROUPS = 25  # the chart shows the most expensive groups; the table and the CSV have them all
TOP = 10
DEFAULT_SESSIONS_PER_DAY = 1000.0
NONE_LABEL = "(none)"


def _bucket(label: str) -> str:
    """Hours for a range of a day or less, days otherwise."""
    hours = RANGES.get(label)
    return "hour" if hours is not None and hours <= 24 else "day"


def _index(options: list[str], value: str, default: str) -> int:
    return options.index(value) if value in options else options.index(default)


def _sessions_per_day() -> float:
    try:
        value = float(param("spd", str(DEFAULT_SESSIONS_PER_DAY)))
    except ValueError:
        return DEFAULT_SESSIONS_PER_DAY
    return value if 0 <= value <= 1e9 else DEFAULT_SESSIONS_PER_DAY


def filters() -> dict[str, Any]:
    st.title("Costs")
    top = st.columns([2, 2, 2])
    ranges, breakdowns = list(RANGES), list(BREAKDOWNS)
    values: dict[str, Any] = {
        "range": top[0].selectbox("Time range", ranges, index=_index(ranges, param("range"), "all time")),
        "by": top[1].selectbox("Break down by", breakdowns, index=_index(breakdowns, param("by"), "model")),
        "spd": top[2].number_input(
            "Sessions per day (projection)",
            min_value=0.0,
            max_value=1e9,
            value=_sessions_per_day(),
            step=100.0,
            format="%.0f",
        ),
    }
    set_params(
        {
            "range": None if values["range"] == "all time" else values["range"],
            "by": None if values["by"] == "model" else values["by"],
            "spd": None if values["spd"] == DEFAULT_SESSIONS_PER_DAY else f"{values['spd']:g}",
        }
    )
    return values


def breakdown(group_by: str, since: str | None, **extra: Any) -> dict[str, Any] | None:
    return call(lambda: client().get("/costs", group_by=group_by, **{"from": since}, **extra), "Adding up costs")


def _label(value: Any) -> str:
    return NONE_LABEL if value is None else str(value)


def frame(groups: list[dict[str, Any]], dims: list[str]) -> pl.DataFrame:
    """One row per group: its keys, cost, model calls, tokens by kind and the unknown-cost share."""
    rows = []
    for g in groups:
        tokens = g["tokens"]
        row: dict[str, Any] = {d: _label(g.get(d)) for d in dims}
        row |= {
            "cost_usd": g["cost_usd"],
            "model_calls": g["spans"],
            **{k: tokens.get(k, 0) for k in TOKEN_KINDS},
            "total_tokens": tokens.get("total_tokens", 0),
            "unknown_cost_calls": g["unknown_cost_spans"],
            "unknown_cost_share": g["unknown_cost_share"],
        }
        rows.append(row)
    schema: dict[str, Any] = {d: pl.String for d in dims}
    schema |= {"cost_usd": pl.Float64, "model_calls": pl.Int64, **{k: pl.Int64 for k in TOKEN_KINDS}}
    schema |= {"total_tokens": pl.Int64, "unknown_cost_calls": pl.Int64, "unknown_cost_share": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


MONEY_COLUMN = st.column_config.NumberColumn("cost (USD)", format="%.6f")
SHARE_COLUMN = st.column_config.NumberColumn("unknown-cost share", format="percent")


def totals(total: dict[str, Any]) -> None:
    cols = st.columns(5)
    cols[0].metric("Total cost", money(total["cost_usd"]))
    cols[1].metric("Requests (traces)", f"{total['traces'] or 0:,}")
    cols[2].metric("Model calls", f"{total['spans']:,}")
    cols[3].metric("Tokens", f"{total['tokens']['total_tokens']:,}")
    cols[4].metric("Unknown-cost share", f"{total['unknown_cost_share']:.1%}")
    unknown = int(total["unknown_cost_spans"])
    if unknown:
        st.warning(
            f"{unknown:,} model calls have no known price: they are left out of every cost here (never counted as "
            "$0). The SQL page lists them: `SELECT provider, request_model, count(*) FROM spans WHERE cost_status = "
            "'unknown_model' GROUP BY ALL`."
        )


def show_breakdown(label: str, data: dict[str, Any]) -> None:
    group_by = BREAKDOWNS[label]
    dims = list(data["group_by"])
    table = frame(data["groups"], dims)
    if table.is_empty():
        return
    st.subheader(f"Cost by {label}")
    if len(dims) > 1:
        table = table.with_columns(pl.concat_str([pl.col(d) for d in dims], separator=" v").alias("group"))
        x = "group"
    else:
        x = dims[0]
    chart = table.head(CHART_GROUPS) if x != "day" else table.sort(x)
    st.bar_chart(
        chart, x=x, y="cost_usd", y_label="cost (USD)", sort=True if x == "day" else "-cost_usd", horizontal=x != "day"
    )
    if len(dims) > 1:
        table = table.drop("group")
    show_table(
        table,
        column_config={"cost_usd": MONEY_COLUMN, "unknown_cost_share": SHARE_COLUMN},
    )
    if data.get("truncated"):
        st.caption(f"Only the {table.height:,} most expensive groups are shown.")
    st.download_button(
        "Download this breakdown (CSV)",
        table.write_csv(),
        file_name=f"agentflight-costs-by-{group_by.replace(',', '-')}.csv",
        mime="text/csv",
        on_click="ignore",
    )


def over_time(values: dict[str, Any], since: str | None) -> None:
    bucket = _bucket(values["range"])
    data = breakdown(f"{bucket},model", since)
    if data is None or not data["groups"]:
        return
    st.subheader("Cost over time")
    table = frame(data["groups"], [bucket, "model"]).sort(bucket)
    st.bar_chart(table, x=bucket, y="cost_usd", color="model", y_label="cost (USD)", stack=True)
    per_bucket = (
        table.group_by(bucket)
        .agg(pl.col("cost_usd").sum(), pl.col("model_calls").sum(), pl.col("total_tokens").sum())
        .sort(bucket)
    )
    show_table(per_bucket, column_config={"cost_usd": MONEY_COLUMN})


def _link(page: str, key: str, value: str) -> str | None:
    return None if value == NONE_LABEL else f"{page}?{key}={quote(value, safe='')}"


def top_users_and_sessions(since: str | None) -> None:
    left, right = st.columns(2)
    for column, dim, page in ((left, "user", "users"), (right, "session", "sessions")):
        with column:
            st.subheader("Top users" if dim == "user" else "Top sessions")
            data = breakdown(dim, since, limit=TOP)
            if data is None:
                continue
            table = frame(data["groups"], [dim]).select(dim, "cost_usd", "model_calls", "total_tokens")
            links = [_link(page, dim, value) for value in table[dim]]
            table = table.with_columns(pl.Series("open", links, dtype=pl.String))
            show_table(
                table,
                column_config={
                    "cost_usd": MONEY_COLUMN,
                    "open": st.column_config.LinkColumn("open", display_text="open"),
                },
            )


def outliers(since: str | None, per_trace: float | None) -> None:
    st.subheader("Most expensive requests")
    page = call(
        lambda: client().get("/traces", sort="cost", order="desc", limit=TOP, **{"from": since}), "Finding outliers"
    )
    if page is None:
        return
    rows = [
        {
            "open": f"replay?trace_id={quote(t['trace_id'], safe='')}",
            "start": (t["start_time"] or "")[:19].replace("T", " "),
            "request": t["root_name"],
            "user": t["user_id"],
            "session": t["session_id"],
            "models": ", ".join(t["models"] or []),
            "cost_usd": t["cost_usd"],
            "x_average": t["cost_usd"] / per_trace if t["cost_usd"] is not None and per_trace else None,
            "tokens": t["tokens"]["total_tokens"],
            "duration_ms": t["duration_ms"],
            "flags": ", ".join(t["flags"] or []),
            "trace_id": t["trace_id"],
        }
        for t in page["traces"]
        if t["cost_usd"] is not None
    ]
    if not rows:
        st.caption("No priced request in this time range.")
        return
    show_table(
        pl.DataFrame(rows, schema_overrides={"cost_usd": pl.Float64, "x_average": pl.Float64}),
        column_config={
            "open": st.column_config.LinkColumn("open", display_text="replay"),
            "cost_usd": MONEY_COLUMN,
            "x_average": st.column_config.NumberColumn("× average request", format="%.1f"),
            "duration_ms": st.column_config.NumberColumn("duration (ms)", format="%.1f"),
        },
    )


def tools_vs_models(since: str | None) -> None:
    data = breakdown("tool,model", since)
    if data is None or not data["groups"]:
        return
    st.subheader("Cost per tool vs per model")
    st.caption(
        "A model call counts toward the tool whose span encloses it; calls the agent makes itself are under "
        f"{NONE_LABEL}."
    )
    table = frame(data["groups"], ["tool", "model"])
    st.bar_chart(table, x="tool", y="cost_usd", color="model", y_label="cost (USD)", stack=True, horizontal=True)
    wide = table.pivot(on="model", index="tool", values="cost_usd", aggregate_function="sum").sort("tool")
    show_table(wide)


def unit_economics(values: dict[str, Any], since: str | None) -> dict[str, Any] | None:
    data = call(
        lambda: client().get("/costs/unit-economics", sessions_per_day=values["spd"], **{"from": since}),
        "Working out unit economics",
    )
    if data is None:
        return None
    st.subheader("Unit economics")
    projection = data.get("projection") or {}
    cols = st.columns(4)
    cols[0].metric("Average cost per session", money(data["avg_cost_per_session_usd"]))
    cols[1].metric("Average cost per request", money(data["avg_cost_per_trace_usd"]))
    cols[2].metric(f"Daily at {values['spd']:,.0f} sessions/day", money(projection.get("daily_cost_usd")))
    cols[3].metric("Projected monthly (30 days)", money(projection.get("monthly_cost_usd")))
    show_text(
        f"{data['sessions']:,} sessions, {data['traces']:,} requests in range; "
        f"unknown-cost share {data['unknown_cost_share']:.1%}. Basis: {projection.get('basis', '')}"
    )
    return data


def main() -> None:
    values = filters()
    start = since(values["range"])
    data = breakdown(BREAKDOWNS[values["by"]], start)
    if data is None:
        return
    total = data["total"]
    if not total["spans"]:
        nothing_found("No model calls in this time range.")
        return
    totals(total)
    show_breakdown(values["by"], data)
    economics = unit_economics(values, start)
    over_time(values, start)
    top_users_and_sessions(start)
    outliers(start, economics["avg_cost_per_trace_usd"] if economics else None)
    tools_vs_models(start)


main()
