"""Readiness: which production practices hold per service over a time range (GET /readiness), each check with
its verdict, what was measured and the traces that prove it (each a link to its replay), and the tables behind
each section. The range and service live in the URL.

Summaries, names and table cells come from stored data: they are shown in tables and as text, never as Markdown.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import polars as pl
import streamlit as st

from ui.common import RANGES, call, client, nothing_found, param, set_params, since
from ui.render import show_table, show_text

ALL = "all services"
DEFAULT_RANGE = "last 7 days"
VERDICT = {True: "held", False: "NOT HELD", None: "n/a"}
REPLAY_LINK = st.column_config.LinkColumn("open", display_text="replay")


def _replay(trace_id: str) -> str:
    return f"replay?trace_id={quote(trace_id, safe='')}"


def _cell(value: Any) -> Any:
    """A table cell: lists and objects as compact text, numbers and strings as they are."""
    if isinstance(value, list | dict):
        return ", ".join(str(v) for v in value) if isinstance(value, list) else json.dumps(value)
    return value


def checks_table(section: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "verdict": VERDICT[c["held"]],
                "check": c["check"],
                "what was seen": c["summary"],
                "open": _replay(c["trace_ids"][0]) if c["trace_ids"] else None,
                "proving traces": len(c["trace_ids"]),
                "trace ids": ", ".join(c["trace_ids"]),
            }
            for c in section["checks"]
        ],
        schema={
            "verdict": pl.String,
            "check": pl.String,
            "what was seen": pl.String,
            "open": pl.String,
            "proving traces": pl.Int64,
            "trace ids": pl.String,
        },
    )


def data_table(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame([{k: _cell(v) for k, v in r.items()} for r in rows], infer_schema_length=None)


def main() -> None:
    st.title("Readiness")
    top = st.columns([2, 3])
    ranges = [r for r in RANGES if r != "last hour"]
    chosen = param("range", DEFAULT_RANGE)
    label = top[0].selectbox("Time range", ranges, index=ranges.index(chosen) if chosen in ranges else 2)
    start = since(label)
    overall = call(lambda: client().get("/readiness", since=start), "Checking readiness")
    if overall is None:
        return
    services = [s["service"] for s in overall["services"] if s["service"] is not None]
    wanted = param("service", ALL)
    options = [ALL, *services]
    service = top[1].selectbox("Service", options, index=options.index(wanted) if wanted in options else 0)
    set_params({"range": None if label == DEFAULT_RANGE else label, "service": None if service == ALL else service})
    report = overall
    if service != ALL:
        report = call(lambda: client().get("/readiness", since=start, service=service), "Checking readiness")
        if report is None:
            return
    if not report["totals"].get("traces"):
        nothing_found("No requests in this range.")
        return
    totals = report["totals"]
    cols = st.columns(4)
    cols[0].metric("Overall", VERDICT[report["held"]])
    cols[1].metric("Requests", f"{totals.get('traces') or 0:,}")
    cols[2].metric("Users", f"{totals.get('users') or 0:,}")
    held = sum(s["held"] is True for s in report["sections"])
    cols[3].metric("Sections held", f"{held} of {len(report['sections'])}")
    show_text(f"{report['since']} .. {report['until']}")
    if len(overall["services"]) > 1 and service == ALL:
        st.subheader("Per service")
        show_table(
            pl.DataFrame(
                [
                    {"service": s["service"], "verdict": VERDICT[s["held"]]}
                    | {name: VERDICT[held] for name, held in s["sections"].items()}
                    for s in overall["services"]
                ]
            )
        )
    for section in report["sections"]:
        st.subheader(f"{section['title']}: {VERDICT[section['held']]}")  # our own words only
        show_table(checks_table(section), column_config={"open": REPLAY_LINK})
        for name, rows in section["tables"].items():
            if rows:
                with st.expander(name.replace("_", " ")):
                    show_table(data_table(rows))


main()
