"""What every page shares: the API client, error display, the empty state, and URL-held filters."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from ui.client import ApiClient, ApiError

T = TypeVar("T")

RANGES = {"last hour": 1, "last 24 hours": 24, "last 7 days": 24 * 7, "last 30 days": 24 * 30, "all time": None}

EMPTY_STATE = """No traces yet. Point an agent at the collector:

    export OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318     # OTLP/HTTP (gRPC: localhost:4317)

or, in Python, `import sdk_helpers; sdk_helpers.configure(service_name="my-agent")`.
Run `agentflight demo` to load the demo agent's traces."""


def client() -> ApiClient:
    return ApiClient.from_env()


def call(fetch: Callable[[], T], what: str = "Loading") -> T | None:
    """Runs an API call with a spinner; an ApiError is shown to the user and gives None."""
    try:
        with st.spinner(f"{what}…"):
            return fetch()
    except ApiError as exc:
        st.error(exc.summary)  # our own words: st.error renders Markdown
        if exc.detail:
            st.code(exc.detail, language="text")
        return None


def empty_state() -> None:
    st.info("No traces yet.")
    st.code(EMPTY_STATE, language="text")


def nothing_found(reason: str, *, good_news: bool = False) -> None:
    """An empty answer: the how-to-send empty state when the project has no traces at all, else `reason`
    (a fixed sentence of ours: st.info and st.success render Markdown)."""
    anything = call(lambda: client().get("/traces", limit=1), "Looking for traces")
    if anything is None:
        return
    if not anything["traces"]:
        empty_state()
    elif good_news:
        st.success(reason)
    else:
        st.info(reason)


def param(name: str, default: str = "") -> str:
    value = st.query_params.get(name)
    return value if isinstance(value, str) else default


def set_params(values: dict[str, Any]) -> None:
    """Keeps the page's filters in the URL so a link reproduces the view."""
    wanted = {k: str(v) for k, v in values.items() if v not in (None, "", False)}
    current = {k: st.query_params.get(k) for k in st.query_params}
    if wanted != current:
        st.query_params.clear()
        st.query_params.update(wanted)


def since(label: str) -> str | None:
    """The start of a RANGES choice as ISO 8601 (None for all time)."""
    hours = RANGES.get(label)
    if hours is None:
        return None
    return (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)).isoformat()
