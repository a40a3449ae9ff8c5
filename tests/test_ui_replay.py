"""The Traces and Replay pages (Streamlit AppTest) against a real API over data from the demo agent, a
2,000-span trace, a hostile trace, a stub model for the playground, and an API that is down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

import sdk_helpers as af
from examples.stub_llm import StubLLM
from tests.conftest import REPO, ApiServer, start_api, start_collector

TIMEOUT = 60
HOSTILE = "<script>alert(1)</script> **bold** [x](http://evil.example) \x1b[31m"


def _page(name: str) -> AppTest:
    return AppTest.from_file(str(REPO / "ui" / "views" / f"{name}.py"), default_timeout=TIMEOUT)


def _trace_id(api: ApiServer, **params: Any) -> str:
    traces = httpx.get(f"{api.url}/traces", params=params, timeout=30).json()["traces"]
    assert len(traces) == 1, traces
    return str(traces[0]["trace_id"])


def _texts(at: AppTest) -> str:
    return "\n".join(str(t.value) for t in at.text)


def test_trace_list_shows_requests_and_filters_from_the_url(ui_env: ApiServer) -> None:
    at = _page("traces").run()
    assert not at.exception
    frame = at.dataframe[0].value
    assert {"user-loop", "user-storm", "user-budget"} <= set(frame["user"])
    loop_row = frame[frame["user"] == "user-loop"].iloc[0]
    assert loop_row["flags"] == "loop" and loop_row["cost_usd"] > 0 and loop_row["open"].startswith("replay?trace_id=")
    at = _page("traces")
    at.query_params["flag"] = "retry"
    at.run()
    assert set(at.dataframe[0].value["user"]) == {"user-storm", "user-auth"}
    assert at.selectbox[1].value == "retry"  # the URL's filter is the widget's value


def test_replay_steps_to_the_first_finding_with_its_evidence(ui_env: ApiServer) -> None:
    at = _page("replay")
    at.query_params["trace_id"] = _trace_id(ui_env, user="user-loop")
    at.run()
    assert not at.exception
    assert "search_flights called 4 times with the same arguments" in _texts(at)
    at.button[3].click().run()  # First finding
    assert not at.exception
    assert "execute_tool search_flights" in _texts(at)
    assert any("Atlantis" in str(j.value) for j in at.json)  # the tool's arguments
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["cost so far"].startswith("$") and metrics["findings"] == "1"


def test_replay_jumps_to_the_failing_step(ui_env: ApiServer) -> None:
    at = _page("replay")
    at.query_params["trace_id"] = _trace_id(ui_env, user="user-lima")
    at.run()
    at.button[2].click().run()  # First error
    assert not at.exception
    assert [e.value for e in at.error] == ["This step failed."]
    assert "503 Service Unavailable" in _texts(at)
    assert "execute_tool book_hotel" in _texts(at)


def test_playground_reruns_a_model_call_against_a_configured_endpoint(
    ui_env: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = StubLLM().start()
    monkeypatch.setenv("AGENTFLIGHT_PLAYGROUND_BASE_URL", stub.base_url)
    try:
        at = _page("replay")
        at.query_params["trace_id"] = _trace_id(ui_env, user="user-00", session="session-00-0")
        at.run()
        at.button[1].click().run()  # Next: the input guardrail
        at.button[1].click().run()  # Next: the first model call
        assert "chat gpt-4o-mini" in _texts(at)
        at.button(key="pg-run").click().run()
        assert not at.exception
        assert "new answer (gpt-4o-mini-2024-07-18, tool_calls)" in _texts(at)
        assert stub.requests == 1
    finally:
        stub.stop()


@pytest.fixture(scope="module")
def special(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A 2,000-span trace and a trace whose content is hostile markup."""
    collector = start_collector(tmp_path_factory.mktemp("ui-special") / "data")
    telemetry = af.configure(f"http://127.0.0.1:{collector.grpc_port}", service_name="ui-special", set_global=False)
    with af.user_session(user_id="big"), af.agent_run("big-agent"):
        for i in range(1999):
            with af.tool_call("step", arguments={"i": i}) as tool:
                tool.record(i)
    with (
        af.user_session(user_id="hostile"),
        af.agent_run(HOSTILE),
        af.llm_call("gpt-4o-mini", provider="openai", messages=HOSTILE) as llm,
    ):
        llm.record(output=HOSTILE, input_tokens=5, output_tokens=5)
    telemetry.shutdown()
    collector.flush()
    api = start_api(collector.settings)
    yield api
    api.stop()
    collector.stop()


def test_a_2000_span_trace_replays(special: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLIGHT_API_URL", special.url)
    at = _page("replay")
    at.query_params["trace_id"] = _trace_id(special, user="big")
    at.run()
    assert not at.exception
    assert len(at.selectbox[0].options) == 2000
    at.selectbox[0].select(1500).run()
    assert not at.exception
    assert any(str(j.value) == "{'i': 1499}" or "1499" in str(j.value) for j in at.json)


def test_hostile_content_is_shown_as_text_never_markup(special: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLIGHT_API_URL", special.url)
    at = _page("replay")
    at.query_params["trace_id"] = _trace_id(special, user="hostile")
    at.run()
    at.button[1].click().run()
    assert not at.exception
    assert "<script>alert(1)</script>" in _texts(at)
    assert "\x1b" not in _texts(at)  # control characters stripped
    assert all("<script" not in str(m.value) for m in at.markdown)
    for page in ("traces", "replay"):
        source = (REPO / "ui" / "views" / f"{page}.py").read_text()
        assert "unsafe_allow_html" not in source and "st.markdown(" not in source and "st.html(" not in source


def test_pages_say_when_the_api_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLIGHT_API_URL", "http://127.0.0.1:9")
    for name, params in (("traces", {}), ("replay", {"trace_id": "0" * 32})):
        at = _page(name)
        for key, value in params.items():
            at.query_params[key] = value
        at.run()
        assert not at.exception
        assert "is not answering" in at.error[0].value


def test_an_empty_lake_says_how_to_send_traces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    collector = start_collector(tmp_path / "data")
    api = start_api(collector.settings)
    try:
        monkeypatch.setenv("AGENTFLIGHT_API_URL", api.url)
        at = _page("traces").run()
        assert not at.exception
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" in at.code[0].value
    finally:
        api.stop()
        collector.stop()
