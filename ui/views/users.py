"""Users: end users by cost with totals; a chosen user (URL `?user=<id>`): cost, tokens and flagged requests
over time, and their sessions.

User ids and session ids are data: shown in tables, charts and as text, never as Markdown.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import polars as pl
import streamlit as st

from ui.common import call, client, nothing_found, param, set_params
from ui.render import money, show_table, show_text

T = TypeVar("T")
LIST_LIMIT = 200
CHART_USERS = 20
TRACE_PAGES = 10  # flags over time read the user's trace list, 500 a page
BUCKETS = ("day", "hour")
MONEY_COLUMN = st.column_config.NumberColumn("cost (USD)", format="%.6f")


def _time(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat()


def _link(page: str, key: str, value: str | None) -> str | None:
    return None if value is None else f"{page}?{key}={quote(value, safe='')}"


def user_list() -> list[dict[str, Any]] | None:
    data = call(lambda: client().get("/users", limit=LIST_LIMIT), "Loading users")
    if data is None:
        return None
    users: list[dict[str, Any]] = data["users"]
    if not users:
        nothing_found(
            "No request carries a user id yet. Send one with `sdk_helpers.user_session(user_id=...)` or the "
            "`user.id` / `enduser.id` span attribute."
        )
        return []
    frame = pl.DataFrame(
        [
            {
                "user": u["user_id"],
                "cost_usd": u["cost_usd"],
                "sessions": u["sessions"],
                "requests": u["traces"],
                "tokens": u["tokens"]["total_tokens"],
                "errors": u["errors"],
                "unknown_cost_calls": u["unknown_cost_spans"],
                "last_active": _time(u["last_end_time"]),
                "open": _link("users", "user", u["user_id"]),
            }
            for u in users
        ],
        schema_overrides={"cost_usd": pl.Float64},
    )
    st.subheader("Users by cost")
    st.bar_chart(
        frame.head(CHART_USERS), x="user", y="cost_usd", y_label="cost (USD)", sort="-cost_usd", horizontal=True
    )
    more = " (the most expensive)" if data.get("next_offset") is not None else ""
    st.caption(f"{frame.height} users{more}")
    show_table(
        frame,
        column_config={"cost_usd": MONEY_COLUMN, "open": st.column_config.LinkColumn("open", display_text="open")},
    )
    return users


def _bucket_of(start_time: str, bucket: str) -> str:
    return start_time[:10] if bucket == "day" else f"{start_time[:13]}:00Z"


def _traces_of(user_id: str, cursor: str | None) -> Any:
    return client().get("/traces", user=user_id, limit=500, cursor=cursor)


def user_traces(user_id: str) -> list[dict[str, Any]] | None:
    """The user's trace summaries (up to TRACE_PAGES pages of 500), newest first."""
    traces: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(TRACE_PAGES):
        page = call(partial(_traces_of, user_id, cursor), "Loading the user's requests")
        if page is None:
            return None
        traces += page["traces"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return traces


def flags_over_time(traces: list[dict[str, Any]], bucket: str) -> pl.DataFrame:
    """Flagged requests per kind per bucket, from the user's trace summaries (the findings routes have no user
    filter; each trace summary carries its flags)."""
    counted: Counter[tuple[str, str]] = Counter()
    for trace in traces:
        for kind in trace["flags"] or []:
            counted[(_bucket_of(trace["start_time"] or "", bucket), kind)] += 1
    rows = [{bucket: b, "kind": k, "flagged_requests": n} for (b, k), n in sorted(counted.items())]
    return pl.DataFrame(rows, schema={bucket: pl.String, "kind": pl.String, "flagged_requests": pl.Int64}, orient="row")


def path_safe(value: str) -> bool:
    """Whether an id can travel as a path segment: the API routes on the decoded path, so an id holding "/"
    (or "." / "..") never reaches /users/{id}."""
    return "/" not in value and value not in (".", "..")


def aggregate(traces: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals in the shape of the API's, added up from trace summaries."""
    costs = [t["cost_usd"] for t in traces if t["cost_usd"] is not None]
    starts = [t["start_time_unix_nano"] for t in traces]
    ends = [t["start_time_unix_nano"] + int(t["duration_ms"] * 1e6) for t in traces]
    return {
        "traces": len(traces),
        "errors": sum(t["error_count"] for t in traces),
        "cost_usd": sum(costs) if costs else None,
        "unknown_cost_spans": sum(t["unknown_cost_spans"] or 0 for t in traces),
        "tokens": {k: sum(t["tokens"][k] for t in traces) for k in ("input_tokens", "output_tokens", "total_tokens")},
        "first_start_time": _iso(min(starts)) if starts else None,
        "last_end_time": _iso(max(ends)) if ends else None,
    }


def from_traces(traces: list[dict[str, Any]], bucket: str) -> dict[str, Any]:
    """GET /users/{id}'s answer made from the user's trace summaries."""
    by_bucket: dict[str, list[dict[str, Any]]] = {}
    by_session: dict[str | None, list[dict[str, Any]]] = {}
    for trace in traces:
        by_bucket.setdefault(_bucket_of(trace["start_time"] or "", bucket), []).append(trace)
        by_session.setdefault(trace["session_id"], []).append(trace)
    return {
        "totals": aggregate(traces),
        "over_time": {"points": [{"bucket": b, **aggregate(ts)} for b, ts in sorted(by_bucket.items())]},
        "sessions": [{"session_id": sid, **aggregate(ts)} for sid, ts in by_session.items()],  # newest first
    }


def user_detail(user_id: str, bucket: str) -> None:
    data: dict[str, Any] | None = None
    if path_safe(user_id):
        data = call(lambda: client().get(f"/users/{quote(user_id, safe='')}", bucket=bucket), "Loading the user")
        if data is None:
            return
    traces = user_traces(user_id)
    if data is None:
        if traces is None:
            return
        if not traces:
            st.info("No request of this user was found.")
            return
        data = from_traces(traces, bucket)
    totals, sessions = data["totals"], data["sessions"]
    st.header("User")
    if not path_safe(user_id):
        st.caption(
            "This id holds a '/', which the API's /users/{id} route cannot take: the totals are added up from "
            "the user's request list."
        )
    first, last = _time(totals["first_start_time"]), _time(totals["last_end_time"])
    show_text(f"user {user_id} · first seen {first} · last {last}")
    cols = st.columns(5)
    cols[0].metric("Cost", money(totals["cost_usd"]))
    cols[1].metric("Requests", f"{totals['traces']:,}")
    cols[2].metric("Sessions", f"{sum(1 for s in sessions if s['session_id'] is not None):,}")
    cols[3].metric("Tokens", f"{totals['tokens']['total_tokens']:,}")
    cols[4].metric("Errors", f"{totals['errors'] or 0:,}")
    if totals["unknown_cost_spans"]:
        st.caption(f"{totals['unknown_cost_spans']:,} model calls have no known price and are not in the cost.")
    points = data["over_time"]["points"]
    series = pl.DataFrame(
        [
            {
                bucket: p["bucket"],
                "cost_usd": p["cost_usd"],
                "input_tokens": p["tokens"]["input_tokens"],
                "output_tokens": p["tokens"]["output_tokens"],
                "requests": p["traces"],
                "failed_spans": p["errors"],
            }
            for p in points
        ],
        schema_overrides={"cost_usd": pl.Float64},
    )
    flags = flags_over_time(traces, bucket) if traces is not None else None
    left, middle, right = st.columns(3)
    with left:
        st.subheader("Cost over time")
        st.bar_chart(series, x=bucket, y="cost_usd", y_label="cost (USD)")
    with middle:
        st.subheader("Tokens over time")
        st.bar_chart(series, x=bucket, y=["input_tokens", "output_tokens"], y_label="tokens", stack=True)
    with right:
        st.subheader("Flags over time")
        if flags is not None and not flags.is_empty():
            st.bar_chart(flags, x=bucket, y="flagged_requests", color="kind", stack=True)
        elif flags is not None:
            st.caption("No flagged request for this user.")
    if flags is not None and not flags.is_empty():
        wide = flags.pivot(on="kind", index=bucket, values="flagged_requests").fill_null(0)
        wide = wide.rename({k: f"flagged_{k}" for k in wide.columns if k != bucket})
        series = series.join(wide, on=bucket, how="left").with_columns(
            [pl.col(c).fill_null(0) for c in wide.columns if c != bucket]
        )
    show_table(series, column_config={"cost_usd": MONEY_COLUMN})
    st.subheader("Sessions")
    show_table(
        pl.DataFrame(
            [
                {
                    "session": s["session_id"],
                    "requests": s["traces"],
                    "cost_usd": s["cost_usd"],
                    "tokens": s["tokens"]["total_tokens"],
                    "errors": s["errors"],
                    "first_start": _time(s["first_start_time"]),
                    "last_end": _time(s["last_end_time"]),
                    "open": _link("sessions", "session", s["session_id"]),
                }
                for s in sessions
            ],
            schema_overrides={"cost_usd": pl.Float64, "session": pl.String, "open": pl.String},
        ),
        column_config={"cost_usd": MONEY_COLUMN, "open": st.column_config.LinkColumn("open", display_text="open")},
    )


def main() -> None:
    st.title("Users")
    users = user_list()
    wanted = param("user")
    if users is None or not (users or wanted):
        return
    ids = [u["user_id"] for u in users]
    options = ["", *ids] if not wanted or wanted in ids else ["", wanted, *ids]
    left, right = st.columns([3, 1])
    chosen = left.selectbox(
        "Open a user", options, index=options.index(wanted), format_func=lambda u: u or "choose a user…"
    )
    bucket = right.selectbox(
        "Over time by", BUCKETS, index=BUCKETS.index(param("bucket", "day")) if param("bucket") in BUCKETS else 0
    )
    set_params({"user": chosen, "bucket": None if bucket == "day" else bucket})
    if chosen:
        user_detail(chosen, bucket)


main()
