"""The Costs, Flags, Sessions, Users, SQL and Readiness pages (Streamlit AppTest) against a real API: over the demo
agent's traces, over a lake whose names, ids and content are hostile markup, over an empty lake, and with the API
down."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import streamlit
from streamlit.testing.v1 import AppTest

import sdk_helpers as af
from tests.conftest import REPO, ApiServer, start_api, start_collector

TIMEOUT = 60
PAGES = ("costs", "flags", "sessions", "users", "sql", "readiness")
# Markdown that would fetch from elsewhere if rendered (image, link), HTML, a bidi override and a terminal escape.
HOSTILE = "![t](http://evil.example/t.png) <script>alert(1)</script> **bold** [x](http://evil.example/x) \u202e\x1b[31m"
SHOWN = "<script>alert(1)</script>"  # what of it must be visible, as text


def _page(name: str, **params: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "ui" / "views" / f"{name}.py"), default_timeout=TIMEOUT)
    for key, value in params.items():
        at.query_params[key] = value
    return at


def _texts(at: AppTest) -> str:
    return "\n".join(str(t.value) for t in at.text)


def _cells(at: AppTest) -> str:
    return "\n".join(d.value.to_csv() for d in at.dataframe)


def _markup(at: AppTest) -> str:
    """Everything the page rendered through Markdown: none of it may come from the data."""
    parts = [
        str(e.value) for elements in (at.markdown, at.caption, at.title, at.header, at.subheader) for e in elements
    ]
    parts += [str(e.value) for elements in (at.error, at.warning, at.info, at.success) for e in elements]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    return "\n".join(parts)


def _frame_with(at: AppTest, column: str) -> Any:
    frames = [d.value for d in at.dataframe if column in d.value.columns]
    assert frames, f"no table with a {column!r} column"
    return frames[0]


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """What the pages offer for download: (label, data) of every st.download_button."""
    seen: list[tuple[str, Any]] = []
    original = streamlit.download_button

    def recording(label: str, data: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((label, data))
        return original(label, data, *args, **kwargs)

    monkeypatch.setattr(streamlit, "download_button", recording)
    return seen


# -- Costs --------------------------------------------------------------------------------------------------


def test_costs_break_down_by_model_with_totals_outliers_and_unit_economics(
    ui_env: ApiServer, downloads: list[tuple[str, Any]]
) -> None:
    at = _page("costs").run()
    assert not at.exception
    by_model = at.dataframe[0].value
    mini = by_model[by_model["model"] == "gpt-4o-mini-2024-07-18"].iloc[0]
    assert mini["cost_usd"] > 0 and mini["model_calls"] > 0 and mini["input_tokens"] > 0
    assert set(by_model["model"]) == {"gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06"}
    metrics = {m.label: m.value for m in at.metric}
    total = httpx.get(f"{ui_env.url}/costs", timeout=30).json()["total"]
    assert metrics["Total cost"] == f"${total['cost_usd']:,.6f}"
    assert metrics["Unknown-cost share"] == "0.0%"
    assert metrics["Projected monthly (30 days)"].startswith("$")
    # the CSV offered is the breakdown shown
    label, csv = downloads[0]
    assert label == "Download this breakdown (CSV)"
    assert csv.splitlines()[0].startswith("model,cost_usd,model_calls,input_tokens")
    assert "gpt-4o-mini-2024-07-18," in csv
    # outliers: the budget-breaking request is the most expensive, and links to its replay
    outliers = _frame_with(at, "x_average")
    assert outliers.iloc[0]["user"] == "user-budget" and outliers.iloc[0]["x_average"] > 1
    assert outliers.iloc[0]["open"] == f"replay?trace_id={outliers.iloc[0]['trace_id']}"
    assert list(outliers["cost_usd"]) == sorted(outliers["cost_usd"], reverse=True)
    # top users link to the Users page; every section is there
    top_users = _frame_with(at, "user")
    assert top_users.iloc[0]["open"] == "users?user=user-budget"
    headings = [h.value for h in at.subheader]
    for heading in ("Cost by model", "Unit economics", "Cost over time", "Top users", "Top sessions"):
        assert heading in headings
    assert "Most expensive requests" in headings and "Cost per tool vs per model" in headings


def test_costs_breakdown_range_and_projection_come_from_the_url(ui_env: ApiServer) -> None:
    at = _page("costs", by="user", range="last 24 hours", spd="250").run()
    assert not at.exception
    assert at.selectbox[1].value == "user" and at.number_input[0].value == 250
    by_user = at.dataframe[0].value
    assert by_user.iloc[0]["user"] == "user-budget" and by_user.iloc[0]["cost_usd"] > 0.03
    assert "hour" in at.dataframe[1].value.columns  # a day or less is shown by the hour
    economics = httpx.get(f"{ui_env.url}/costs/unit-economics", params={"sessions_per_day": 250}, timeout=30).json()
    metrics = {m.label: m.value for m in at.metric}
    daily = economics["projection"]["daily_cost_usd"]
    assert metrics["Daily at 250 sessions/day"] == (f"${daily:,.6f}" if daily < 1 else f"${daily:,.2f}")
    at.selectbox[1].select("prompt version").run()
    assert not at.exception
    assert at.query_params["by"] == "prompt version"
    by_prompt = at.dataframe[0].value
    assert list(by_prompt.columns[:2]) == ["prompt", "prompt_version"]
    assert by_prompt.iloc[0]["prompt"] == "travel-planner" and by_prompt.iloc[0]["prompt_version"] == "3"


# -- Flags --------------------------------------------------------------------------------------------------


def test_flags_count_every_kind_and_list_findings_that_open_their_replay(ui_env: ApiServer) -> None:
    at = _page("flags").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    for kind in ("loop", "retry", "budget", "guardrail", "error"):
        assert int(metrics[kind]) > 0, kind
    counts = _frame_with(at, "flagged_traces")
    assert set(counts["kind"]) == {"loop", "retry", "budget", "guardrail", "error"}
    findings = _frame_with(at, "message")
    loop = findings[findings["message"].str.contains("search_flights called 4 times")].iloc[0]
    assert loop["kind"] == "loop" and loop["code"] == "repeated_tool_call" and loop["wasted_tokens"] > 0
    assert loop["open"] == f"replay?trace_id={loop['trace_id']}"
    traces = httpx.get(f"{ui_env.url}/traces", params={"flag": "loop"}, timeout=30).json()["traces"]
    assert loop["trace_id"] == traces[0]["trace_id"]
    # the newest flag's evidence is shown, as JSON (readiness findings are not flags: they have their own page)
    flag_kinds = "loop,retry,budget,guardrail,error"
    newest = httpx.get(f"{ui_env.url}/findings", params={"limit": 1, "kind": flag_kinds}, timeout=30).json()
    newest = newest["findings"][0]
    assert newest["message"] in _texts(at)
    assert at.json and json.loads(at.json[0].value) == newest["evidence"]
    flagged = _frame_with(at, "worst_severity")
    assert flagged["trace_id"].is_unique and set(flagged["trace_id"]) == set(findings["trace_id"])


def test_flag_filters_live_in_the_url(ui_env: ApiServer) -> None:
    at = _page("flags", kind="loop").run()
    assert not at.exception
    assert at.multiselect[0].value == ["loop"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["loop"] == "1" and metrics["retry"] == "0"
    assert set(_frame_with(at, "message")["kind"]) == {"loop"}
    at.multiselect[0].select("retry").run()
    at.multiselect[1].select("warning").run()
    assert not at.exception
    assert at.query_params["kind"] == "loop,retry" and at.query_params["severity"] == "warning"
    findings = _frame_with(at, "message")
    assert set(findings["kind"]) == {"loop", "retry"} and set(findings["severity"]) == {"warning"}
    assert "retry_without_backoff" in set(findings["code"])


# -- Sessions -----------------------------------------------------------------------------------------------


def test_sessions_list_and_one_session_as_a_conversation(ui_env: ApiServer) -> None:
    at = _page("sessions").run()
    assert not at.exception
    sessions = at.dataframe[0].value
    assert {"session-loop", "session-00-0", "session-00-1"} <= set(sessions["session"])
    assert sessions[sessions["session"] == "session-loop"].iloc[0]["open"] == "sessions?session=session-loop"
    at = _page("sessions", session="session-loop").run()
    assert not at.exception
    assert at.selectbox[0].value == "session-loop"
    traces = _frame_with(at, "#")
    expected = httpx.get(f"{ui_env.url}/traces", params={"session": "session-loop"}, timeout=30).json()["traces"]
    assert list(traces["trace_id"]) == [t["trace_id"] for t in expected]
    assert traces.iloc[0]["open"] == f"replay?trace_id={expected[0]['trace_id']}" and traces.iloc[0]["flags"] == "loop"
    assert {m.label: m.value for m in at.metric}["Requests"] == "1"
    texts = _texts(at)
    assert "Find me flights to Atlantis" in texts  # what the user asked
    assert "Your trip to Atlantis" in texts  # what the agent answered
    assert "search_flights called 4 times" in texts


def test_an_unknown_session_is_an_error_not_a_traceback(ui_env: ApiServer) -> None:
    at = _page("sessions", session="no-such-session").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["The API refused the request (HTTP 404):"]
    assert "no session 'no-such-session'" in at.code[0].value


# -- Users --------------------------------------------------------------------------------------------------


def test_users_by_cost_and_one_user_over_time(ui_env: ApiServer) -> None:
    at = _page("users").run()
    assert not at.exception
    users = at.dataframe[0].value
    assert users.iloc[0]["user"] == "user-budget"
    assert list(users["cost_usd"].dropna()) == sorted(users["cost_usd"].dropna(), reverse=True)
    at = _page("users", user="user-auth").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Requests"] == "1" and metrics["Sessions"] == "1" and metrics["Cost"].startswith("$")
    series = _frame_with(at, "failed_spans")
    assert series.iloc[0]["cost_usd"] > 0 and series.iloc[0]["input_tokens"] > 0
    assert series.iloc[0]["flagged_retry"] == 1 and series.iloc[0]["flagged_error"] == 1
    sessions = _frame_with(at, "session")
    assert list(sessions["session"]) == ["session-auth"]
    assert sessions.iloc[0]["open"] == "sessions?session=session-auth"
    assert {h.value for h in at.subheader} >= {"Cost over time", "Tokens over time", "Flags over time", "Sessions"}
    at.selectbox[1].select("hour").run()
    assert not at.exception and at.query_params["bucket"] == "hour"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00Z", _frame_with(at, "failed_spans").iloc[0]["hour"])


# -- SQL ----------------------------------------------------------------------------------------------------


def test_sql_runs_an_example_and_offers_csv(ui_env: ApiServer, downloads: list[tuple[str, Any]]) -> None:
    at = _page("sql").run()
    assert not at.exception
    at.selectbox[0].select("cost per user per day").run()
    assert not at.exception and not at.error
    rows = at.dataframe[0].value
    assert list(rows.columns) == ["user_id", "day", "cost_usd", "tokens"]
    budget = rows[rows["user_id"] == "user-budget"].iloc[0]
    assert budget["cost_usd"] > 0.03 and budget["tokens"] > 10_000
    label, csv = downloads[-1]
    assert label == "Download as CSV" and csv.startswith("user_id,day,cost_usd,tokens\n") and "user-budget," in csv
    at.selectbox[0].select("tokens per tool").run()
    tools = at.dataframe[0].value
    assert "search_flights" in set(tools["tool_name"]) and tools["calls"].max() >= 4


def test_sql_shows_the_apis_refusal(ui_env: ApiServer) -> None:
    at = _page("sql").run()
    at.text_area[0].input("DELETE FROM spans").run()
    at.button[0].click().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["The API refused the request (HTTP 400):"]
    assert "only a single SELECT is allowed" in at.code[-1].value
    assert not at.dataframe
    at.text_area[0].input("SELECT 1 AS a, 1 AS a, [1, 2] AS l, {'x': 1} AS s").run()
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert list(at.dataframe[0].value.iloc[0]) == [1, 1, "[1, 2]", '{"x": 1}']


# -- Readiness ----------------------------------------------------------------------------------------------


def test_readiness_shows_each_section_with_its_checks_and_proving_traces(ui_env: ApiServer) -> None:
    at = _page("readiness").run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Overall"] == "NOT HELD" and int(metrics["Requests"]) > 0
    titles = [s.value for s in at.subheader]
    assert "Model control: NOT HELD" in titles and "Attribution coverage: NOT HELD" in titles
    checks = [d.value for d in at.dataframe if "check" in d.value.columns]
    rows = {r["check"]: r for frame in checks for r in frame.to_dict("records")}
    pinned = rows["pinned model versions"]
    assert pinned["verdict"] == "NOT HELD" and "gpt-4o" in pinned["what was seen"]
    alias = httpx.get(f"{ui_env.url}/traces", params={"user": "user-alias"}, timeout=30).json()["traces"][0]
    assert pinned["open"] == f"replay?trace_id={alias['trace_id']}" and pinned["proving traces"] == 1
    assert rows["input guardrail on every request"]["verdict"] == "held"
    # One service in the demo; choosing it keeps the verdicts and puts it in the URL.
    at.selectbox[1].select("travel-agent").run()
    assert not at.exception and at.query_params["service"] == "travel-agent"
    assert {m.label: m.value for m in at.metric}["Overall"] == "NOT HELD"


# -- the API down, an empty lake ----------------------------------------------------------------------------


def test_every_page_says_when_the_api_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLIGHT_API_URL", "http://127.0.0.1:9")
    for name in PAGES:
        at = _page(name, session="s", user="u").run()
        assert not at.exception, name
        assert len(at.error) == 1 and "is not answering" in at.error[0].value, name


def test_every_page_says_how_to_send_traces_to_an_empty_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    collector = start_collector(tmp_path / "data")
    api = start_api(collector.settings)
    try:
        monkeypatch.setenv("AGENTFLIGHT_API_URL", api.url)
        for name in PAGES:
            at = _page(name).run()
            assert not at.exception, name
            assert not at.error, name
            assert any("OTEL_EXPORTER_OTLP_ENDPOINT" in c.value for c in at.code), name
    finally:
        api.stop()
        collector.stop()


# -- hostile data -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A session of two requests whose user, session, agent, prompt, tool, model, messages and error are all
    hostile markup (the ids hold '/', which the API's path routes cannot take)."""
    collector = start_collector(tmp_path_factory.mktemp("ui-hostile") / "data")
    telemetry = af.configure(f"http://127.0.0.1:{collector.grpc_port}", service_name="ui-hostile", set_global=False)
    with af.user_session(user_id=HOSTILE, session_id=HOSTILE):
        for question, model in (("first question", "gpt-4o-mini"), (HOSTILE, HOSTILE)):
            with af.agent_run(HOSTILE):
                af.set_prompt(HOSTILE, version=HOSTILE)
                with af.llm_call(model, provider="openai", messages=question) as llm:
                    llm.record(output=HOSTILE, input_tokens=5, output_tokens=5)
                with contextlib.suppress(RuntimeError), af.tool_call(HOSTILE, arguments={"q": HOSTILE}):
                    raise RuntimeError(HOSTILE)
    telemetry.shutdown()
    collector.flush()
    api = start_api(collector.settings)
    yield api
    api.stop()
    collector.stop()


def _assert_shown_as_data(at: AppTest, where: str) -> None:
    assert not at.exception, where
    assert "evil.example" not in _markup(at) and "<script" not in _markup(at), where
    shown = _texts(at) + _cells(at) + "\n".join(str(j.value) for j in at.json)
    assert SHOWN in shown, where
    assert "\x1b" not in _texts(at) + _cells(at) and "\u202e" not in _texts(at) + _cells(at), where


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("costs", {}),
        ("costs", {"by": "user"}),
        ("costs", {"by": "tool"}),
        ("costs", {"by": "prompt version"}),
        ("flags", {}),
        ("sessions", {}),
        ("sessions", {"session": HOSTILE}),
        ("users", {}),
        ("users", {"user": HOSTILE}),
        ("readiness", {}),
    ],
)
def test_hostile_names_and_content_are_shown_as_text(
    hostile: ApiServer, monkeypatch: pytest.MonkeyPatch, name: str, params: dict[str, str]
) -> None:
    monkeypatch.setenv("AGENTFLIGHT_API_URL", hostile.url)
    at = _page(name, **params).run()
    _assert_shown_as_data(at, f"{name} {params}")
    if params.get("session"):  # the session's requests in order, with what was asked, though its id holds '/'
        texts = _texts(at)
        assert texts.index("first question") < texts.rindex(SHOWN)
        assert list(_frame_with(at, "#")["#"]) == [1, 2]
        assert {m.label: m.value for m in at.metric}["Requests"] == "2"
    if params.get("user"):
        assert {m.label: m.value for m in at.metric}["Requests"] == "2"
        assert _frame_with(at, "failed_spans").iloc[0]["flagged_error"] == 2
    if name == "costs" and not params:  # the hostile model has no price: said, with a number only
        assert at.warning and "model calls have no known price" in at.warning[0].value


def test_hostile_sql_results_are_a_table(hostile: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLIGHT_API_URL", hostile.url)
    at = _page("sql").run()
    at.text_area[0].input("SELECT DISTINCT user_id, tool_name, error_message FROM spans").run()
    at.button[0].click().run()
    _assert_shown_as_data(at, "sql")
    # a database message that quotes a stored value stays out of Markdown too
    at.text_area[0].input("SELECT CAST(user_id AS INTEGER) FROM spans").run()
    at.button[0].click().run()
    assert not at.exception and at.error
    assert "evil.example" not in _markup(at)


def test_pages_never_render_through_markdown_or_html() -> None:
    for name in PAGES:
        source = (REPO / "ui" / "views" / f"{name}.py").read_text()
        for forbidden in ("markdown(", "st.html(", "unsafe_allow_html", "st.write(", "st.latex("):
            assert forbidden not in source, (name, forbidden)
