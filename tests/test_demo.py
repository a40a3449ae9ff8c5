"""The demo travel agent through the real pipeline: openai client -> openai-v2 instrumentation + sdk_helpers
-> OTLP gRPC -> collector -> lake -> API. Each scenario produces the findings it is built to produce."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.service import Collector
from examples.scenarios import Scenario, run_demo, scenarios
from examples.stub_llm import decide
from examples.travel_agent import PINNED_MODEL
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


def _scenario_trace(api: ApiServer, scenario: Scenario) -> dict[str, Any]:
    if scenario.user_id is not None:
        return _trace_of(api, scenario.user_id)
    traces = api.client(None).get("/traces", params={"session": scenario.session_id}).json()["traces"]
    assert len(traces) == 1, (scenario.name, traces)
    return api.client(None).get(f"/traces/{traces[0]['trace_id']}").json()


def test_every_scenario_is_one_trace_with_its_findings(demo: tuple[Collector, ApiServer, Any]) -> None:
    _, api, result = demo
    assert result.traces == len(scenarios(4)) and result.failed == []
    for scenario in scenarios(4):
        if not scenario.expect:
            continue
        trace = _scenario_trace(api, scenario)
        kinds = {f["kind"] for f in trace["findings"]}
        assert set(scenario.expect) <= kinds, (scenario.name, trace["findings"])
        assert "loop" not in kinds or scenario.name == "tool-loop", scenario.name
        # Each readiness scenario shows exactly the misses it was built for, and the others none.
        readiness = {f["code"] for f in trace["findings"] if f["kind"] == "readiness"}
        assert readiness == set(scenario.expect_codes), (scenario.name, readiness)
        assert "readiness" not in trace["trace"]["flags"]


def test_healthy_runs_have_no_findings_and_carry_user_and_session(demo: tuple[Collector, ApiServer, Any]) -> None:
    _, api, _ = demo
    client = api.client(None)
    for scenario in scenarios(4):
        if scenario.expect:
            continue
        traces = client.get("/traces", params={"session": scenario.session_id}).json()["traces"]
        assert traces and all(t["flags"] == [] and t["user_id"] == scenario.user_id for t in traces), traces
        assert all(t["cost_usd"] and t["cost_usd"] > 0 for t in traces)
        for t in traces:  # pinned model, input guardrail, approvals before bookings and mails: no readiness miss
            assert client.get(f"/traces/{t['trace_id']}").json()["findings"] == [], scenario.name


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
    assert all(s["request_model"] == PINNED_MODEL and s["reported"]["input_tokens"] > 0 for s in llm)
    # The instrumentation's message content is on every model call.
    assert all(s["input_messages"] and s["output_messages"] for s in llm)
    tools = [s for s in spans if s["span_type"] == "tool"]
    assert [t["tool_name"] for t in tools].count("search_flights") == 4


def test_readiness_evidence_for_the_demo_misses(demo: tuple[Collector, ApiServer, Any]) -> None:
    _, api, _ = demo
    codes = lambda user: {f["code"]: f for f in _trace_of(api, user)["findings"]}  # noqa: E731
    double = codes("user-double")
    assert double["side_effect_repeated"]["evidence"]["tool"] == "book_hotel"
    assert double["side_effect_repeated"]["evidence"]["executions"] == 2
    assert double["side_effect_unapproved"]["evidence"]["tools"] == ["book_hotel"]
    injection = codes("user-nairobi")["prompt_injection"]["evidence"]
    assert injection["source"] == "tool_result" and injection["tool"] == "get_weather"
    assert "ignore all previous instructions" in injection["phrase"]
    pii = codes("user-pii")["pii_in_output"]["evidence"]
    assert pii["kinds"] == {"card": 1, "email": 1, "phone": 1} and "jane.roe" not in str(pii)


def test_the_readiness_report_for_the_demo(demo: tuple[Collector, ApiServer, Any], capsys: Any) -> None:
    collector, api, _ = demo
    report = api.client(None).get("/readiness").json()
    sections = {s["section"]: s for s in report["sections"]}
    checks = {c["check"]: c for s in report["sections"] for c in s["checks"]}
    alias_trace = _trace_of(api, "user-alias")["trace"]["trace_id"]
    assert report["held"] is False and [s["service"] for s in report["services"]] == ["travel-agent"]
    assert checks["pinned model versions"]["held"] is False
    assert checks["pinned model versions"]["trace_ids"] == [alias_trace]
    (alias,) = checks["pinned model versions"]["aliases"]
    assert (alias["model"], alias["response_models"], alias["traces"]) == ("gpt-4o", ["gpt-4o-2024-08-06"], 1)
    assert checks["input guardrail on every request"]["held"] is True  # the agent checks every request
    assert checks["output guardrail on every request"]["held"] is False  # and no answer
    for name, user in (
        ("no prompt injection got through", "user-nairobi"),
        ("no personal data in answers", "user-pii"),
        ("no side effect executed twice", "user-double"),
        ("side effects approved first", "user-double"),
        ("retries back off", "user-storm"),
        ("non-retryable errors are not retried", "user-auth"),
    ):
        assert checks[name]["held"] is False
        assert checks[name]["trace_ids"] == [_trace_of(api, user)["trace"]["trace_id"]], name
    assert checks["every tool call acts for a user"]["held"] is False
    assert checks["every request names its session"]["held"] is True
    assert checks["every request names its user"]["held"] is False
    assert checks["prompts are versioned"]["held"] is True
    assert sections["economics"]["tables"]["projection"][0]["daily_users"] == 100
    # The same report from the lake, without the API, as `agentflight report` prints it.
    from collector.cli import main

    assert main(["report", "--data-dir", str(collector.settings.data_dir)]) == 0
    printed = capsys.readouterr().out
    assert "== Model control: NOT HELD" in printed and alias_trace in printed
    assert main(["report", "--data-dir", str(collector.settings.data_dir), "--since", "nonsense"]) == 2


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
