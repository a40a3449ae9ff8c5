"""sdk_helpers end to end: spans made with it, exported by the real OTel SDK to a real collector over gRPC
and HTTP, checked field by field in the lake; redaction before export; the docstring examples run."""

from __future__ import annotations

import doctest
import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

import sdk_helpers as af
from collector.service import Collector
from sdk_helpers import context, redaction, setup, steps
from tests.conftest import query_dicts, start_collector


@pytest.fixture
def collector(tmp_path: Path) -> Any:
    running = start_collector(tmp_path / "data")
    yield running
    running.stop()


def _agent_run(telemetry: af.Telemetry) -> None:
    with af.user_session(user_id="u-42", session_id="chat-7"), af.agent_run("planner") as root:
        assert root.is_recording()
        af.declare_budget(cost_usd=0.25, tool_calls=5)
        af.set_prompt("planner", 7)
        with af.guardrail_check("pii", source="INPUT", content="mail me at bob@example.com") as check:
            check.record("redact", reason="email address", risk_category="pii")
        with af.llm_call(
            "gpt-4o-mini", provider="openai", messages=[{"role": "user", "content": "Trip to Rome for bob@example.com"}]
        ) as call:
            call.record(
                output=[{"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "function": {"name": "search_flights", "arguments": '{"to": "FCO"}'}}]}],
                response_model="gpt-4o-mini-2024-07-18", input_tokens=120, output_tokens=30, cache_read_tokens=100,
                finish_reason="tool_calls", response_id="resp-1",
            )  # fmt: skip
        with af.tool_call("search_flights", arguments={"to": "FCO"}, call_id="c1") as tool:
            af.mark_retry(2, max_attempts=3, cause="timeout")
            tool.record({"flights": 3})
        with af.human_approval("book_hotel") as approval:
            approval.record("approved", approver="ops@example.com")
        with pytest.raises(ValueError), af.tool_call("book_hotel", arguments={"city": "Rome"}):
            raise ValueError("no rooms left")
    assert telemetry.flush()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_spans_arrive_with_every_field(collector: Collector, protocol: str) -> None:
    port = collector.grpc_port if protocol == "grpc" else collector.http_port
    telemetry = af.configure(
        f"http://127.0.0.1:{port}", service_name="helper-test", protocol=protocol, set_global=False,
        redact=[af.mask_common_secrets],
    )  # fmt: skip
    try:
        _agent_run(telemetry)
    finally:
        telemetry.shutdown()
    collector.flush()
    rows = {r["name"]: r for r in query_dicts(collector, "SELECT * FROM spans")}
    assert set(rows) == {
        "invoke_agent planner", "apply_guardrail pii", "chat gpt-4o-mini", "execute_tool search_flights",
        "human_approval book_hotel", "execute_tool book_hotel",
    }  # fmt: skip
    root = rows["invoke_agent planner"]
    assert (root["span_type"], root["agent_name"], root["parent_span_id"]) == ("agent", "planner", None)
    assert (root["prompt_name"], root["prompt_version"], root["service_name"]) == ("planner", "7", "helper-test")
    attributes = json.loads(root["attributes"])
    assert attributes["agentflight.budget.cost_usd"] == 0.25 and attributes["agentflight.budget.tool_calls"] == 5
    # user and session reached every span, not only the root
    assert {(r["user_id"], r["session_id"]) for r in rows.values()} == {("u-42", "chat-7")}
    assert all(r["trace_id"] == root["trace_id"] for r in rows.values())
    llm = rows["chat gpt-4o-mini"]
    assert (llm["span_type"], llm["kind"], llm["provider"], llm["request_model"]) == (
        "llm",
        "CLIENT",
        "openai",
        "gpt-4o-mini",
    )
    assert (llm["response_model"], llm["input_tokens"], llm["output_tokens"], llm["cache_read_tokens"]) == (
        "gpt-4o-mini-2024-07-18", 120, 30, 100,
    )  # fmt: skip
    assert llm["finish_reason"] == "tool_calls" and llm["cost_usd"] > 0 and llm["response_id"] == "resp-1"
    assert json.loads(llm["input_messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Trip to Rome for [email]"}]}
    ]
    output = json.loads(llm["output_messages"])[0]
    assert output["parts"][0] == {"type": "tool_call", "id": "c1", "name": "search_flights", "arguments": {"to": "FCO"}}
    tool = rows["execute_tool search_flights"]
    assert (tool["span_type"], tool["tool_name"], tool["tool_call_id"]) == ("tool", "search_flights", "c1")
    assert json.loads(tool["tool_arguments"]) == {"to": "FCO"} and json.loads(tool["tool_result"]) == {"flights": 3}
    assert json.loads(tool["attributes"])["agentflight.retry.attempt"] == 2
    guard = rows["apply_guardrail pii"]
    guard_attrs = json.loads(guard["attributes"])
    assert guard["span_type"] == "guardrail" and guard_attrs["gen_ai.guardrail.result.value"] == "redact"
    assert guard_attrs["gen_ai.guardrail.content.input.value"] == "mail me at [email]"
    failed = rows["execute_tool book_hotel"]
    assert failed["is_error"] and failed["error_type"] == "ValueError" and failed["error_message"] == "no rooms left"
    assert json.loads(failed["events"])[0]["name"] == "exception"
    approval = json.loads(rows["human_approval book_hotel"]["attributes"])
    assert approval["agentflight.approval.decision"] == "approved"
    assert approval["agentflight.approval.approver"] == "ops@example.com"  # not content: never redacted
    # nothing unredacted anywhere on disk
    for part in (collector.settings.lake_dir / "spans").rglob("*.parquet"):
        assert b"bob@example.com" not in part.read_bytes()


def test_redaction_hooks_reach_only_content_and_can_drop() -> None:
    dropped = redaction.redact_attributes(
        [lambda key, text: None if "secret" in text else text.upper()],
        {"gen_ai.input.messages": "a secret", "gen_ai.tool.call.result": "ok", "gen_ai.request.model": "secret-model"},
    )
    assert dropped == {"gen_ai.tool.call.result": "OK", "gen_ai.request.model": "secret-model"}
    assert redaction.is_content_key("llm.input_messages.0.message.content")
    assert redaction.is_content_key("gen_ai.prompt.0.content") and not redaction.is_content_key(
        "gen_ai.usage.input_tokens"
    )
    masked = af.mask_common_secrets(
        "x", "key sk-abcdefghijklmnopqrst card 4111 1111 1111 1111 Bearer abcdefghijklmnopqrstu"
    )
    assert masked == "key [api-key] card [card] Bearer [token]"


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(ValueError, match="protocol"):
        af.configure("http://127.0.0.1:1", protocol="carrier-pigeon", set_global=False)
    with pytest.raises(ValueError, match="declare_budget: tokens must be positive"):
        af.declare_budget(tokens=0)


def test_messages_become_genai_parts() -> None:
    assert steps.to_parts("hi") == [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    assert steps.to_parts([{"role": "tool", "tool_call_id": "c1", "content": "42"}]) == [
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "42"}]}
    ]
    assert steps.llm_call.__doc__ and SpanKind.CLIENT  # the model span is a CLIENT span (checked in the lake above)


def test_docstring_examples_run_against_a_real_collector(collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLIGHT_ENDPOINT", f"http://127.0.0.1:{collector.grpc_port}")
    failures = 0
    for module in (af, setup, steps, context, redaction):
        result = doctest.testmod(module, verbose=False)
        failures += result.failed
        assert result.attempted > 0 or module is setup or module is context, module.__name__
    assert failures == 0
    collector.flush()
    names = {r["name"] for r in query_dicts(collector, "SELECT name FROM spans")}
    assert {"invoke_agent planner", "execute_tool search_flights"} <= names
