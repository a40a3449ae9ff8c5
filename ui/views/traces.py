"""Traces: the searchable, filterable list of requests; filters live in the URL; a row opens its replay."""

from __future__ import annotations

from typing import Any

import polars as pl
import streamlit as st

from ui.common import RANGES, call, client, empty_state, param, set_params, since
from ui.render import clean

FLAGS = ("", "error", "loop", "retry", "budget", "guardrail")
SORTS = ("start", "cost", "duration", "tokens", "spans")
PAGE_SIZE = 100


def filters() -> dict[str, Any]:
    st.title("Traces")
    top = st.columns([2, 2, 2, 2, 2])
    chosen_range = param("range", "all time")
    values: dict[str, Any] = {
        "range": top[0].selectbox("Time range", list(RANGES), index=list(RANGES).index(chosen_range)
                                  if chosen_range in RANGES else len(RANGES) - 1),
        "q": top[1].text_input("Search names and content", param("q")),
        "user": top[2].text_input("User", param("user")),
        "session": top[3].text_input("Session", param("session")),
        "flag": top[4].selectbox("Flag", FLAGS, index=FLAGS.index(param("flag")) if param("flag") in FLAGS else 0,
                                 format_func=lambda f: f or "any"),
    }  # fmt: skip
    more = st.columns([2, 2, 2, 2, 2])
    values["model"] = more[0].text_input("Model", param("model"))
    values["agent"] = more[1].text_input("Agent", param("agent"))
    values["tool"] = more[2].text_input("Tool", param("tool"))
    status = param("status")
    values["status"] = more[3].selectbox(
        "Status", ("", "error", "ok"), index=("", "error", "ok").index(status) if status in ("error", "ok") else 0,
        format_func=lambda s: s or "any",
    )  # fmt: skip
    values["min_cost"] = more[4].text_input("Min cost (USD)", param("min_cost"))
    sort = param("sort", "start")
    values["sort"] = st.radio("Sort by", SORTS, index=SORTS.index(sort) if sort in SORTS else 0, horizontal=True)
    set_params(
        values
        | ({"sort": None} if values["sort"] == "start" else {})
        | ({"range": None} if values["range"] == "all time" else {})
    )
    return values


def query(values: dict[str, Any], cursor: str | None) -> dict[str, Any] | None:
    params = {k: values[k] for k in ("q", "user", "session", "flag", "model", "agent", "tool", "status", "sort")}
    params["from"] = since(values["range"])
    if values["min_cost"]:
        params["min_cost"] = values["min_cost"]
    return call(lambda: client().get("/traces", limit=PAGE_SIZE, cursor=cursor, **params), "Loading traces")


def table(traces: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "open": f"replay?trace_id={t['trace_id']}",
                "start": t["start_time"][:19].replace("T", " "),
                "request": t["root_name"],
                "service": t["service_name"],
                "user": t["user_id"],
                "session": t["session_id"],
                "status": "error" if t["error"] else "ok",
                "flags": ", ".join(t["flags"]),
                "duration_ms": t["duration_ms"],
                "spans": t["span_count"],
                "tokens": t["tokens"]["total_tokens"],
                "cost_usd": t["cost_usd"],
                "trace_id": t["trace_id"],
            }
            for t in traces
        ],
        schema_overrides={"cost_usd": pl.Float64},
    )


def main() -> None:
    values = filters()
    key = repr(sorted(values.items()))
    if st.session_state.get("traces_key") != key:
        st.session_state["traces_key"], st.session_state["traces_cursors"] = key, [None]
    cursors: list[str | None] = st.session_state["traces_cursors"]
    page = query(values, cursors[-1])
    if page is None:
        return
    traces = page["traces"]
    if not traces and len(cursors) == 1:
        if any(values[k] for k in ("q", "user", "session", "flag", "model", "agent", "tool", "status", "min_cost")):
            st.info("No traces match these filters.")
        else:
            empty_state()
        return
    frame = table(traces)
    st.caption(f"{frame.height} traces on this page · newest first unless sorted · click a row to replay it")
    selection = st.dataframe(
        frame,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key="trace_table",
        column_config={
            "open": st.column_config.LinkColumn("open", display_text="replay"),
            "cost_usd": st.column_config.NumberColumn("cost (USD)", format="%.6f"),
            "duration_ms": st.column_config.NumberColumn("duration (ms)", format="%.1f"),
        },
    )
    rows = selection.selection.rows if selection is not None else []
    if rows:
        st.switch_page("views/replay.py", query_params={"trace_id": frame["trace_id"][rows[0]]})
    # The same choice without a pointer on the grid (keyboard, screen readers, scripted browsers).
    pick, go = st.columns([5, 1], vertical_alignment="bottom")
    labels = {
        t["trace_id"]: clean(
            f"{t['start_time'][:19].replace('T', ' ')} · {t['user_id'] or '-'} · {t['root_name']}"
            + (f" · {', '.join(t['flags'])}" if t["flags"] else "")
            + (" · error" if t["error"] else "")
        )
        for t in traces
    }
    chosen = pick.selectbox("Open a trace", list(labels), format_func=labels.__getitem__, key="trace_pick")
    if go.button("Open replay", key="trace_open") and chosen:
        st.switch_page("views/replay.py", query_params={"trace_id": chosen})
    left, right = st.columns(2)
    if len(cursors) > 1 and left.button("← Newer"):
        cursors.pop()
        st.rerun()
    if page.get("next_cursor") and right.button("Older →"):
        cursors.append(page["next_cursor"])
        st.rerun()


main()
