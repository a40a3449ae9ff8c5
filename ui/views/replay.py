"""Replay: one trace as a timeline beside a step-through player, its findings with evidence, raw data per
span, and a playground to re-send a model call. Structure comes in one request; each step's content is
fetched when the step is shown, so a 2,000-span trace opens as fast as a small one."""

from __future__ import annotations

import json
from typing import Any

import altair as alt
import streamlit as st

from ui import playground, render
from ui.common import call, client, param, set_params
from ui.steps import cumulative_cost, findings_by_span, first_error, first_finding, step_label, waterfall

MAX_SPANS = 5000  # the API's page limit; larger traces show their first 5,000 steps (the rest are counted)
WINDOW = 150  # timeline rows drawn around the current step
TYPE_COLORS = {
    "agent": "#6c5ce7", "llm": "#0984e3", "tool": "#00b894", "guardrail": "#e17055", "chain": "#b2bec3",
    "retriever": "#fdcb6e", "embedding": "#74b9ff", "other": "#dfe6e9",
}  # fmt: skip


def load(trace_id: str) -> dict[str, Any] | None:
    return call(lambda: client().get(f"/traces/{trace_id}", limit=MAX_SPANS, content="false"), "Loading the trace")


def header(trace: dict[str, Any], findings: list[dict[str, Any]]) -> None:
    summary = trace["trace"]
    st.text(f"trace {render.clean(summary['trace_id'])} · {render.clean(summary['start_time'])}")
    st.subheader("Request")
    st.text(render.clean(summary["root_name"]))
    cells = st.columns(6)
    cells[0].metric("duration", f"{summary['duration_ms'] / 1000:.2f} s")
    cells[1].metric("steps", summary["span_count"])
    cells[2].metric("tokens", f"{summary['tokens']['total_tokens']:,}")
    cells[3].metric("cost", render.money(summary["cost_usd"]))
    cells[4].metric("errors", summary["error_count"])
    cells[5].metric("findings", len(findings))
    if summary["user_id"] or summary["session_id"]:
        st.text(
            f"user {render.clean(summary['user_id'] or '-')} · session {render.clean(summary['session_id'] or '-')}"
        )


def timeline(spans: list[dict[str, Any]], current: int) -> None:
    low = max(0, min(current - WINDOW // 3, len(spans) - WINDOW))
    rows = waterfall(spans[low : low + WINDOW])
    if rows.height == 0:
        return
    if len(spans) > WINDOW:
        st.caption(f"timeline: steps {low + 1}–{low + rows.height} of {len(spans)} (moves with the player)")
    chart = (
        alt.Chart(rows.to_pandas())
        .mark_bar(height=10)
        .encode(
            y=alt.Y("label:N", sort=None, title=None, axis=alt.Axis(labelLimit=320)),
            x=alt.X("start_ms:Q", title="ms since the request started"),
            x2="end_ms:Q",
            color=alt.Color("span_type:N", scale=alt.Scale(domain=list(TYPE_COLORS), range=list(TYPE_COLORS.values()))),
            stroke=alt.condition("datum.status == 'error'", alt.value("#d63031"), alt.value(None)),
            strokeWidth=alt.condition("datum.status == 'ok'", alt.value(0), alt.value(2)),
            tooltip=["step:Q", "label:N", "span_type:N", "status:N", "duration_ms:Q"],
        )
        .properties(height=max(120, 22 * rows.height))  # 22 px a row keeps every label on the axis
    )
    st.altair_chart(chart, width="stretch")


def controls(spans: list[dict[str, Any]], findings: list[dict[str, Any]], key: str) -> int:
    """Previous / next / first error / first finding, and a picker; the picker's state is the current step."""
    last = len(spans) - 1
    if st.session_state.get(key) is None or st.session_state[key] > last:
        st.session_state[key] = 0
    step = int(st.session_state[key])
    error_at, finding_at = first_error(spans), first_finding(spans, findings)

    def go(index: int) -> None:  # runs before the next script run, so the picker shows the new step
        st.session_state[key] = max(0, min(index, last))

    buttons = st.columns(4)
    buttons[0].button("◀ Previous", disabled=step == 0, on_click=go, args=(step - 1,))
    buttons[1].button("Next ▶", disabled=step >= last, on_click=go, args=(step + 1,))
    buttons[2].button("First error", disabled=error_at is None, on_click=go, args=(error_at or 0,))
    buttons[3].button("First finding", disabled=finding_at is None, on_click=go, args=(finding_at or 0,))
    labels = [step_label(i, s) for i, s in enumerate(spans)]
    return int(st.selectbox("Step", range(len(spans)), format_func=lambda i: labels[i], key=key))


def step_detail(trace_id: str, span: dict[str, Any], spent: float, findings: list[dict[str, Any]]) -> None:
    st.subheader(f"Step: {span['span_type']}")
    st.text(render.clean(span["name"]))
    own = span.get("own") or {}
    is_model = span["span_type"] in ("llm", "embedding")
    top, bottom = st.columns(2), st.columns(2)
    top[0].metric("latency", f"{(span['duration_ms'] or 0):.1f} ms")
    top[1].metric("tokens", f"{(own.get('input_tokens') or 0) + (own.get('output_tokens') or 0):,}")
    bottom[0].metric("cost", render.money(own.get("cost_usd")) if is_model else "-")
    bottom[1].metric("cost so far", render.money(spent))
    facts = {
        "status": span["status_code"], "model": span["response_model"] or span["request_model"],
        "provider": span["provider"], "tool": span["tool_name"], "agent": span["agent_name"],
        "finish reason": span["finish_reason"], "error": span["error_type"],
    }  # fmt: skip
    st.text(" · ".join(f"{k}: {render.clean(v)}" for k, v in facts.items() if v))
    if span["is_error"]:
        st.error("This step failed.")
        render.show_text(span["error_message"] or span["status_message"] or "", "error message")
    for finding in findings:
        with st.container(border=True):
            st.text(f"{finding['severity'].upper()} · {finding['kind']} · {render.clean(finding['message'])}")
            render.show_json(finding["evidence"], "evidence")
    detail = call(lambda: client().get(f"/traces/{trace_id}/spans/{span['span_id']}"), "Loading the step")
    if detail is None:
        return
    if span["span_type"] == "tool" or detail.get("tool_arguments") is not None:
        render.show_json(detail.get("tool_arguments"), "arguments")
        render.show_json(detail.get("tool_result"), "result")
    render.show_messages(detail.get("input_messages"), "what the model saw")
    render.show_messages(detail.get("output_messages"), "what it answered")
    with st.expander("Raw attributes, events, links, resource"):
        for name in ("attributes", "events", "links", "resource"):
            render.show_json(detail.get(name), name)
    if span["span_type"] == "llm" and detail.get("input_messages"):
        rerun_panel(span, detail)


def rerun_panel(span: dict[str, Any], detail: dict[str, Any]) -> None:
    with st.expander("Playground: re-run this model call"):
        base, _ = playground.endpoint()
        st.text(f"sends to {render.clean(base)} (AGENTFLIGHT_PLAYGROUND_BASE_URL / _API_KEY)")
        model = st.text_input("model", span["request_model"] or span["response_model"] or "", key="pg-model")
        temperature = st.number_input("temperature", 0.0, 2.0, 0.0, 0.1, key="pg-temp")
        default = json.dumps(playground.to_openai(detail["input_messages"]), indent=1, ensure_ascii=False)
        edited = st.text_area("messages (JSON, chat completions form)", default, height=240, key="pg-messages")
        if st.button("Re-run", key="pg-run"):
            try:
                messages = json.loads(edited)
                answer = playground.rerun(model, messages, temperature)
            except (ValueError, playground.PlaygroundError) as exc:
                st.error("The re-run failed:")
                st.code(str(exc), language="text")  # may quote the endpoint's answer: text, not Markdown
                return
            recorded, fresh = st.columns(2)
            with recorded:
                render.show_messages(detail.get("output_messages"), "recorded answer")
            with fresh:
                st.text(f"new answer ({render.clean(answer['model'])}, {render.clean(answer['finish_reason'])})")
                render.show_text(answer["text"] or "(no text)")
                if answer["tool_calls"]:
                    render.show_json(answer["tool_calls"], "tool calls")


def main() -> None:
    st.title("Replay")
    trace_id = st.text_input("Trace id", param("trace_id")).strip()
    set_params({"trace_id": trace_id})
    if not trace_id:
        st.info("Open a trace from the Traces or Flags page, or paste a trace id.")
        return
    trace = load(trace_id)
    if trace is None:
        return
    spans: list[dict[str, Any]] = trace["spans"]
    findings: list[dict[str, Any]] = trace["findings"]
    header(trace, findings)
    if trace["total_spans"] > len(spans):
        st.warning(f"Showing the first {len(spans)} of {trace['total_spans']} steps.")
    if not spans:
        return
    step = controls(spans, findings, key=f"step-{trace_id}")
    spent = cumulative_cost(spans)
    by_span = findings_by_span(findings)
    left, right = st.columns([3, 2])
    with left:
        timeline(spans, step)
        if findings:
            st.subheader("Findings")
            for finding in findings:
                st.text(f"{finding['severity'].upper():8} {finding['kind']:9} {render.clean(finding['message'])}")
    with right:
        step_detail(trace_id, spans[step], spent[step], by_span.get(spans[step]["span_id"], []))


main()
