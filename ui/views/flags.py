"""Flags: what the detectors found (loops, retries, budgets, guardrails, errors), how often over time, the
findings and the traces they flag, filterable by kind and severity (filters live in the URL), and for a
chosen finding its evidence and a link to the replay of its trace.

Messages and evidence are data: they are shown in tables, as text and as JSON, never as Markdown.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import polars as pl
import streamlit as st

from ui.common import RANGES, call, client, nothing_found, param, set_params, since
from ui.render import money, show_json, show_table, show_text

KINDS = ("loop", "retry", "budget", "guardrail", "error")
SEVERITIES = ("error", "warning", "info")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
LIMIT = 500  # the API's page size limit; narrower filters reach older findings


def _chosen(name: str, allowed: tuple[str, ...]) -> list[str]:
    return [v for v in param(name).split(",") if v in allowed]


def filters() -> dict[str, Any]:
    st.title("Flags")
    top = st.columns([2, 3, 3, 2])
    ranges = list(RANGES)
    chosen_range = param("range", "all time")
    values: dict[str, Any] = {
        "range": top[0].selectbox(
            "Time range",
            ranges,
            index=ranges.index(chosen_range) if chosen_range in ranges else ranges.index("all time"),
        ),
        "kind": top[1].multiselect("Kind", KINDS, default=_chosen("kind", KINDS), placeholder="any kind"),
        "severity": top[2].multiselect(
            "Severity", SEVERITIES, default=_chosen("severity", SEVERITIES), placeholder="any severity"
        ),
        "code": top[3].text_input("Code", param("code"), placeholder="e.g. rate_limit"),
    }
    set_params(
        {
            "range": None if values["range"] == "all time" else values["range"],
            "kind": ",".join(values["kind"]),
            "severity": ",".join(values["severity"]),
            "code": values["code"].strip(),
        }
    )
    return values


def _query(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "from": since(values["range"]),
        # Any kind means any flag kind: readiness findings are not flags and have their own page (readiness.py).
        "kind": ",".join(values["kind"] or KINDS),
        "severity": ",".join(values["severity"]),
    }


def counts(values: dict[str, Any]) -> dict[str, Any] | None:
    hours = RANGES.get(values["range"])
    bucket = "hour" if hours is not None and hours <= 24 else "day"
    data = call(lambda: client().get("/findings/counts", bucket=bucket, **_query(values)), "Counting findings")
    if data is None:
        return None
    cols = st.columns(len(KINDS))
    for column, kind in zip(cols, KINDS, strict=True):
        column.metric(kind, f"{int(data['totals'].get(kind, 0)):,}")
    if data["counts"]:
        st.subheader("Findings over time")
        frame = pl.DataFrame(
            data["counts"],
            schema={
                "bucket": pl.String,
                "kind": pl.String,
                "findings": pl.Int64,
                "traces": pl.Int64,
                "errors": pl.Int64,
                "warnings": pl.Int64,
            },
            orient="row",
        ).rename({"bucket": bucket, "traces": "flagged_traces"})
        st.bar_chart(frame, x=bucket, y="findings", color="kind", stack=True)
        show_table(frame)
    return data


def _replay(trace_id: str) -> str:
    return f"replay?trace_id={quote(trace_id, safe='')}"


def findings_table(findings: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "open": _replay(f["trace_id"]),
                "time": (f["time"] or "")[:19].replace("T", " "),
                "severity": f["severity"],
                "kind": f["kind"],
                "code": f["code"],
                "message": f["message"],
                "wasted_tokens": f["wasted_tokens"],
                "wasted_cost_usd": f["wasted_cost_usd"],
                "trace_id": f["trace_id"],
                "span_id": f["span_id"],
            }
            for f in findings
        ],
        schema_overrides={"wasted_tokens": pl.Int64, "wasted_cost_usd": pl.Float64},
    )


def flagged_traces(findings: list[dict[str, Any]]) -> pl.DataFrame:
    """The findings grouped by trace: which kinds flag it, the worst severity, the first message."""
    by_trace: dict[str, dict[str, Any]] = {}
    for f in findings:  # newest first
        row = by_trace.setdefault(
            f["trace_id"],
            {"open": _replay(f["trace_id"]), "kinds": set(), "worst": "info", "findings": 0, "first_message": ""},
        )
        row["kinds"].add(f["kind"])
        row["findings"] += 1
        if SEVERITY_RANK.get(f["severity"], 9) <= SEVERITY_RANK[row["worst"]]:
            row["worst"] = f["severity"]
        row["first_message"] = f["message"]  # the last seen is the oldest, i.e. where it started
        row["time"] = (f["time"] or "")[:19].replace("T", " ")
    rows = [
        {
            "open": r["open"],
            "first_flagged": r["time"],
            "kinds": ", ".join(k for k in KINDS if k in r["kinds"]),
            "worst_severity": r["worst"],
            "findings": r["findings"],
            "first_message": r["first_message"],
            "trace_id": trace_id,
        }
        for trace_id, r in by_trace.items()
    ]
    return pl.DataFrame(rows)


REPLAY_LINK = st.column_config.LinkColumn("open", display_text="replay")


def detail(finding: dict[str, Any]) -> None:
    st.subheader("Finding")
    show_text(finding["message"])
    cols = st.columns(4)
    cols[0].metric("Spans concerned", f"{len(finding.get('span_ids') or [])}")
    cols[1].metric(
        "Wasted tokens", "—" if finding.get("wasted_tokens") is None else f"{int(finding['wasted_tokens']):,}"
    )
    cols[2].metric(
        "Wasted cost", "—" if finding.get("wasted_cost_usd") is None else money(float(finding["wasted_cost_usd"]))
    )
    cols[3].link_button("Open the replay of this trace", _replay(finding["trace_id"]))
    show_text(
        f"{finding['kind']} / {finding['code']} · severity {finding['severity']} · {finding['time']}\n"
        f"trace {finding['trace_id']} · span {finding['span_id']}"
    )
    show_json(finding.get("evidence") or {}, label="Evidence")


def main() -> None:
    values = filters()
    summary = counts(values)
    if summary is None:
        return
    params = _query(values) | {"code": values["code"].strip()}
    page = call(lambda: client().get("/findings", limit=LIMIT, **params), "Loading findings")
    if page is None:
        return
    findings: list[dict[str, Any]] = page["findings"]
    if not findings:
        nothing_found("Nothing flagged with these filters.", good_news=True)
        return
    st.subheader("Findings")
    more = " (the newest; narrow the filters to reach older ones)" if page.get("next_cursor") else ""
    st.caption(f"{len(findings)} findings{more} · newest first · select a row for its evidence")
    table = findings_table(findings)
    selection = show_table(
        table,
        on_select="rerun",
        selection_mode="single-row",
        key="findings_table",
        column_config={
            "open": REPLAY_LINK,
            "wasted_cost_usd": st.column_config.NumberColumn("wasted cost (USD)", format="%.6f"),
        },
    )
    rows = selection.selection.rows if selection is not None else []
    if not rows:
        st.caption("The newest finding is shown below; select a row to see another.")
    detail(findings[rows[0] if rows else 0])
    st.subheader("Flagged traces")
    show_table(flagged_traces(findings), column_config={"open": REPLAY_LINK})


main()
