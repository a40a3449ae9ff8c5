"""Showing trace content safely (docs/design.md invariant 7): content is data, rendered as text, code or JSON only.

Nothing that came from a span ever goes through st.markdown or st.html: a stored prompt injection must not
run or fetch anything in the viewer's browser. Control characters (terminal escapes, bidi overrides) are
stripped, since they can disguise what a text says.
"""

from __future__ import annotations

import json
import re
from typing import Any

import polars as pl
import streamlit as st

# C0/C1 controls except tab and newline, and the Unicode bidi overrides/isolates (U+202A-202E, U+2066-2069).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
PREVIEW_CHARS = 20_000  # longer content is cut in the page; the span detail route has the whole text


def clean(text: Any) -> str:
    return _CONTROL.sub("", text if isinstance(text, str) else json.dumps(text, default=str, ensure_ascii=False))


def show_text(text: Any, label: str | None = None) -> None:
    if label:
        st.text(f"▸ {clean(label)}")  # st.caption would render Markdown; a label may name stored data
    body = clean(text)
    if len(body) > PREVIEW_CHARS:
        body = body[:PREVIEW_CHARS] + f"\n… ({len(body) - PREVIEW_CHARS} more characters)"
    st.text(body)


def show_json(value: Any, label: str | None = None) -> None:
    if label:
        st.text(f"▸ {clean(label)}")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            show_text(value)
            return
    st.json(_cleaned(value), expanded=2)


def _cleaned(value: Any) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [_cleaned(v) for v in value]
    if isinstance(value, dict):
        return {clean(k): _cleaned(v) for k, v in value.items()}
    return value


def show_messages(messages: list[dict[str, Any]] | None, label: str) -> None:
    """OTel GenAI messages ([{role, parts}]) as one text block per message."""
    if not messages:
        return
    st.text(f"▸ {clean(label)}")
    for message in messages:
        role = clean(message.get("role", "?"))
        for part in message.get("parts") or []:
            kind = part.get("type")
            if kind == "text":
                st.text(f"[{role}] {clean(part.get('content', ''))[:PREVIEW_CHARS]}")
            elif kind == "tool_call":
                st.text(f"[{role}] calls {clean(part.get('name'))}({clean(part.get('arguments'))[:2000]})")
            elif kind == "tool_call_response":
                st.text(f"[{role}] tool result: {clean(part.get('response'))[:PREVIEW_CHARS]}")
            else:
                st.text(f"[{role}] {clean(kind)}: {clean(part)[:2000]}")


def money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.6f}" if value < 1 else f"${value:,.2f}"


def show_table(frame: pl.DataFrame, **options: Any) -> Any:
    """st.dataframe with control characters (terminal escapes, bidi overrides) stripped from text cells and
    from column names (a pivot makes columns of data)."""
    text = [name for name, kind in frame.schema.items() if kind == pl.String]
    if text:
        frame = frame.with_columns(pl.col(text).map_elements(clean, return_dtype=pl.String))
    names = {name: clean(name) for name in frame.columns}
    if len(set(names.values())) == len(names):
        frame = frame.rename(names)
    return st.dataframe(frame, hide_index=True, **options)
