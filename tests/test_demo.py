"""The demo travel agent through the real pipeline: openai client -> openai-v2 instrumentation + sdk_helpers
-> OTLP gRPC -> collector -> lake -> API. Each scenario produces the findings it is built to produce."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.service import Collector
from examples.scenarios import run_demo, scenarios
from examples.stub_llm import decide
from tests.conftest import ApiServer, start_api, start_collector


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Collector, ApiServer, Any]]:
    collector = start_collector(tmp_path_factory.mktemp("demo") / "data")
    result = run_demo(f"http://127.0.0.1:{collector.grpc_port}", users=4)
    collector.flush()
    api = start_api(collector.settings)
    try:
        yield collector, api, result
    finally:
        api.stop()
        collector.stop()


def _trace_of(api: ApiServer, user: str) -> dict[str, Any]:
    traces = api.client(None).get("/traces", params={"user": user}).json()["traces"]
    assert len(traces) == 1, (user, traces)
    return api.client(None).get(f"/traces/{traces[0]['trace_id']}").json()


def test_every_scenario_is_one_trace_with_its_findings(demo: tuple[Collector, ApiServer, Any]) -> None:
    _, api, result = demo
    assert result.traces == len(scenarios(4)) and result.failed == []
    for scenario in scenarios(4):
        if not scenario.expect:
            continue
        trace = _trace_of(api, scenario.user_id)
        kinds = {f["kind"] for f in trace["findings"]}
        assert set(scenario.expect) <= kinds, (scenario.name, trace["findings"])
        assert "loop" not in kinds or scenario.name == "tool-loop", scenario.name


def test_healthy_runs_have_no_findings_and_carry_user_and_session(demo: tuple[Collector, ApiServer, Any]) -> None:
    _, api, _ = demo
    client = api.client(None)
    for scenario in scenarios(4):
        if scenario.expect:
            continue
        traces = client.get("/traces", params={"session": scenario.session_id}).json()["traces"]
        assert traces and all(t["flags"] == [] and t["user_id"] == scenario.user_id for t in traces), traces
        assert all(t["cost_usd"] and t["cost_usd"] > 0 for t in traces)


def test_findings_carry_the_evidence_the_scenarios_were_built_for(demo: tuple[Collector, ApiServer, Any]) -> None:
    _, api, _ = demo
    codes = lambda user: {(f["kind"], f["code"]): f for f in _trace_of(api, user)["findings"]}  # noqa: E731
    loop = codes("user-loop")[("loop", "repeated_tool_call")]
    assert loop["evidence"]["tool"] == "search_flights" and loop["evidence"]["repeats"] == 4
    assert loop["wasted_tokens"] > 0 and loop["wasted_cost_usd"] > 0
    storm = codes("user-storm")
    assert storm[("retry", "retry")]["evidence"]["attempts"] == 5
    assert storm[("retry", "retry")]["evidence"]["outcome"] == "recovered"
    assert ("retry", "retry_without_backoff") in storm and storm[("error", "rate_limit")]["severity"] == "warning"
    assert ("retry", "non_retryable_retry") in codes("user-auth")
    budget = _trace_of(api, "user-budget")["findings"]
    assert {f["evidence"]["metric"] for f in budget if f["code"] == "budget_breach"} == {"cost_usd", "tokens"}
    assert all(f["evidence"]["source"] == "declared" for f in budget)
    guard = codes("user-guard")[("guardrail", "guardrail_block")]
    assert guard["evidence"]["guardrail"] == "prompt-injection" and "Ignore previous" in guard["evidence"]["content"]
    assert ("guardrail", "content_filter") in codes("user-filter")
    lima = codes("user-lima")[("error", "server")]
    assert "503" in lima["evidence"]["error_message"] and lima["evidence"]["span_type"] == "tool"


def test_the_model_calls_nest_under_the_agent_span(demo: tuple[Collector, ApiServer, Any]) -> None:
    _, api, _ = demo
    trace = _trace_of(api, "user-loop")
    spans = trace["spans"]
    root = spans[0]
    assert root["name"] == "invoke_agent travel-planner" and root["depth"] == 0
    llm = [s for s in spans if s["span_type"] == "llm"]
    assert llm and all(s["parent_span_id"] == root["span_id"] for s in llm)
    assert all(s["request_model"] == "gpt-4o-mini" and s["reported"]["input_tokens"] > 0 for s in llm)
    # The instrumentation's message content is on every model call.
    assert all(s["input_messages"] and s["output_messages"] for s in llm)
    tools = [s for s in spans if s["span_type"] == "tool"]
    assert [t["tool_name"] for t in tools].count("search_flights") == 4


def test_the_stub_model_is_deterministic() -> None:
    messages = [{"role": "user", "content": "Plan a weekend in Oslo"}]
    first = decide(messages, 1)
    assert first == decide(messages, 1)
    assert [c["function"]["name"] for c in first["message"]["tool_calls"]] == ["get_weather", "search_flights"]


def test_demo_runs_offline_in_seconds(tmp_path: Path) -> None:
    collector = start_collector(tmp_path / "data")
    try:
        result = run_demo(f"http://127.0.0.1:{collector.grpc_port}", users=1)
        collector.flush()
    finally:
        collector.stop()
    assert result.traces == len(scenarios(1))
