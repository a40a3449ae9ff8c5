"""Sessions: conversations by last activity with totals; a chosen session (URL `?session=<id>`) as its
requests in order, each with what the user asked and what the agent answered, and a link to its replay.

Ids, messages and names are data: shown in tables and as text, never as Markdown.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import polars as pl
import streamlit as st

from ui.common import call, client, nothing_found, param, set_params
from ui.render import money, show_table, show_text

T = TypeVar("T")
LIST_LIMIT = 200
MAX_TRACES = 1000  # as GET /sessions/{id}
TURNS = 20  # requests shown with their messages; the table lists every one


def _time(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


def _session_link(session_id: str) -> str:
    return f"sessions?session={quote(session_id, safe='')}"


def _replay(trace_id: str) -> str:
    return f"replay?trace_id={quote(trace_id, safe='')}"


def session_list(user: str) -> list[dict[str, Any]] | None:
    data = call(lambda: client().get("/sessions", limit=LIST_LIMIT, user=user), "Loading sessions")
    if data is None:
        return None
    sessions: list[dict[str, Any]] = data["sessions"]
    if not sessions:
        if user:
            st.info("This user has no sessions.")
            return []
        nothing_found(
            "No request carries a session id yet. Send one with "
            "`sdk_helpers.user_session(user_id=..., session_id=...)` or the `session.id` / "
            "`gen_ai.conversation.id` span attribute."
        )
        return []
    frame = pl.DataFrame(
        [
            {
                "session": s["session_id"],
                "user": s["user_id"],
                "requests": s["traces"],
                "cost_usd": s["cost_usd"],
                "tokens": s["tokens"]["total_tokens"],
                "errors": s["errors"],
                "first_start": _time(s["first_start_time"]),
                "last_end": _time(s["last_end_time"]),
                "open": _session_link(s["session_id"]),
            }
            for s in sessions
        ],
        schema_overrides={"cost_usd": pl.Float64, "user": pl.String},
    )
    more = " (the most recent)" if data.get("next_offset") is not None else ""
    st.caption(f"{frame.height} sessions{more}, most recently active first")
    show_table(
        frame,
        column_config={
            "cost_usd": st.column_config.NumberColumn("cost (USD)", format="%.6f"),
            "open": st.column_config.LinkColumn("open", display_text="open"),
        },
    )
    return sessions


def _messages(value: Any) -> list[Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return value if isinstance(value, list) else []


def _texts(messages: list[Any], role: str) -> list[str]:
    found = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != role:
            continue
        for part in message.get("parts") or []:
            if isinstance(part, dict) and part.get("type") == "text" and part.get("content"):
                found.append(str(part["content"]))
    return found


def exchange(trace: dict[str, Any]) -> tuple[str | None, str | None]:
    """What the user asked (the last user message of the first model call) and what the agent answered (the
    text of the last model call that answered in text)."""
    calls = sorted(
        (s for s in trace.get("spans") or [] if s.get("span_type") == "llm"),
        key=lambda s: s.get("start_time_unix_nano") or 0,
    )
    asked = next((t[-1] for s in calls if (t := _texts(_messages(s.get("input_messages")), "user"))), None)
    answered = next(
        ("\n".join(t) for s in reversed(calls) if (t := _texts(_messages(s.get("output_messages")), "assistant"))),
        None,
    )
    return asked, answered


def _trace(trace_id: str) -> Any:
    return client().get(f"/traces/{quote(trace_id, safe='')}")


def conversation(traces: list[dict[str, Any]]) -> None:
    st.subheader("Conversation")
    if len(traces) > TURNS:
        st.caption(f"The first {TURNS} of {len(traces)} requests; the table above lists them all.")
    for number, summary in enumerate(traces[:TURNS], start=1):
        trace_id = summary["trace_id"]
        with st.container(border=True):
            flags = ", ".join(summary["flags"] or [])
            show_text(
                f"{number}. {_time(summary['start_time'])} · {summary['root_name'] or ''} · "
                f"{money(summary['cost_usd'])} · {summary['tokens']['total_tokens']:,} tokens"
                + (" · failed" if summary["error"] else "")
                + (f" · flags: {flags}" if flags else "")
            )
            trace = call(partial(_trace, trace_id), "Loading the messages")
            if trace is None:
                continue
            asked, answered = exchange(trace)
            if asked is None and answered is None:
                st.caption("No message content was recorded for this request.")
            if asked is not None:
                with st.chat_message("user"):
                    show_text(asked)
            if answered is not None:
                with st.chat_message("assistant"):
                    show_text(answered)
            for finding in trace.get("findings") or []:
                show_text(f"⚑ {finding['kind']}: {finding['message']}")
            st.link_button("Open the replay", _replay(trace_id))


def path_safe(value: str) -> bool:
    """Whether an id can travel as a path segment: the API routes on the decoded path, so an id holding "/"
    (or "." / "..") never reaches /sessions/{id}."""
    return "/" not in value and value not in (".", "..")


def from_traces(session_id: str) -> dict[str, Any] | None:
    """GET /sessions/{id}'s answer made from GET /traces?session=<id> (oldest first)."""
    traces: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(traces) < MAX_TRACES:
        page = call(partial(_session_traces, session_id, cursor), "Loading the session")
        if page is None:
            return None
        traces += page["traces"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    if not traces:
        st.info("No request carries this session id.")
        return None
    costs = [t["cost_usd"] for t in traces if t["cost_usd"] is not None]
    first = min(t["start_time_unix_nano"] for t in traces)
    last = max(t["start_time_unix_nano"] + int(t["duration_ms"] * 1e6) for t in traces)
    totals = {
        "traces": len(traces),
        "errors": sum(t["error_count"] for t in traces),
        "cost_usd": sum(costs) if costs else None,
        "unknown_cost_spans": sum(t["unknown_cost_spans"] or 0 for t in traces),
        "tokens": {"total_tokens": sum(t["tokens"]["total_tokens"] for t in traces)},
        "first_start_ns": first,
        "last_end_ns": last,
        "users": sorted({t["user_id"] for t in traces if t["user_id"]}),
    }
    return {"totals": totals, "traces": traces, "truncated": cursor is not None}


def _session_traces(session_id: str, cursor: str | None) -> Any:
    return client().get("/traces", session=session_id, sort="start", order="asc", limit=500, cursor=cursor)


def session_detail(session_id: str) -> None:
    if path_safe(session_id):
        data = call(lambda: client().get(f"/sessions/{quote(session_id, safe='')}"), "Loading the session")
    else:
        data = from_traces(session_id)
    if data is None:
        return
    totals, traces = data["totals"], data["traces"]
    st.header("Session")
    if not path_safe(session_id):
        st.caption(
            "This id holds a '/', which the API's /sessions/{id} route cannot take: the totals are added up from "
            "the session's request list."
        )
    show_text(f"session {session_id} · users: {', '.join(u for u in totals.get('users') or [] if u) or 'none'}")
    cols = st.columns(5)
    cols[0].metric("Requests", f"{totals['traces']:,}")
    cols[1].metric("Cost", money(totals["cost_usd"]))
    cols[2].metric("Tokens", f"{totals['tokens']['total_tokens']:,}")
    cols[3].metric("Errors", f"{totals['errors'] or 0:,}")
    span = (totals["last_end_ns"] - totals["first_start_ns"]) / 1e9 if totals["first_start_ns"] else 0.0
    cols[4].metric("Duration", f"{span * 1000:,.0f} ms" if span < 10 else f"{span:,.1f} s")
    if totals["unknown_cost_spans"]:
        st.caption(f"{totals['unknown_cost_spans']:,} model calls have no known price and are not in the cost.")
    frame = pl.DataFrame(
        [
            {
                "#": number,
                "start": _time(t["start_time"]),
                "request": t["root_name"],
                "duration_ms": t["duration_ms"],
                "cost_usd": t["cost_usd"],
                "tokens": t["tokens"]["total_tokens"],
                "status": "error" if t["error"] else "ok",
                "flags": ", ".join(t["flags"] or []),
                "open": _replay(t["trace_id"]),
                "trace_id": t["trace_id"],
            }
            for number, t in enumerate(traces, start=1)
        ],
        schema_overrides={"cost_usd": pl.Float64, "request": pl.String},
    )
    show_table(
        frame,
        column_config={
            "cost_usd": st.column_config.NumberColumn("cost (USD)", format="%.6f"),
            "duration_ms": st.column_config.NumberColumn("duration (ms)", format="%.1f"),
            "open": st.column_config.LinkColumn("open", display_text="replay"),
        },
    )
    if data.get("truncated"):
        st.caption(f"The first {len(traces):,} requests of this session.")
    conversation(traces)


def main() -> None:
    st.title("Sessions")
    user = st.text_input("User", param("user"), placeholder="any user")
    sessions = session_list(user.strip())
    wanted = param("session")
    if sessions is None or not (sessions or wanted):
        return
    ids = [s["session_id"] for s in sessions]
    options = ["", *ids] if not wanted or wanted in ids else ["", wanted, *ids]
    chosen = st.selectbox(
        "Open a session", options, index=options.index(wanted), format_func=lambda s: s or "choose a session…"
    )
    set_params({"user": user.strip(), "session": chosen})
    if chosen:
        session_detail(chosen)


main()
