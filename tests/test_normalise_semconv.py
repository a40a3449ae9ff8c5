"""normalise_span / messages_from_log against the 38 semconv fixtures plus focused edge cases."""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import collector.normalise as normalise_module
from collector.messages import Message, clear_memos, dumps, otel_messages, system_message
from collector.normalise import OUTPUT_KEYS, messages_from_log, normalise_span
from collector.otlp_model import DecodedLog, DecodedSpan, SpanEvent
from collector.providers import normalise_provider, provider_from_host
from store.schema import SPAN_COLUMN_NAMES, SPAN_TYPES
from tests.semconv_fixtures import entry_to_logs, entry_to_span, load_entries

ENTRIES = load_entries()

# ----------------------------------------------------------------------------------------------------- helpers

_ANNOTATION = re.compile(r"\s+\(.*\)$")


def _clean(value: Any) -> Any:
    """Fixture strings sometimes carry a note: ``"my_agent (inherited via baggage)"`` -> ``"my_agent"``."""
    return _ANNOTATION.sub("", value) if isinstance(value, str) else value


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _messages(text: str | None) -> list[Message]:
    return json.loads(text) if text else []


def _log_messages(entry: dict[str, Any]) -> tuple[list[Message], list[Message]]:
    inputs: list[Message] = []
    outputs: list[Message] = []
    for log in entry_to_logs(entry):
        ins, outs, _ = messages_from_log(log)
        inputs.extend(ins or [])
        outputs.extend(outs or [])
    return inputs, outputs


def _all_outputs(entry: dict[str, Any], result: dict[str, Any]) -> list[Message]:
    return _messages(result["output_messages"]) + _log_messages(entry)[1]


def _parts(messages: list[Message], kind: str) -> list[dict[str, Any]]:
    return [p for m in messages for p in m["parts"] if p.get("type") == kind]


def _text_of(messages: list[Message]) -> list[str]:
    return [p["content"] for p in _parts(messages, "text")]


def span(
    attributes: dict[str, Any],
    name: str = "span",
    *,
    status: str = "UNSET",
    status_message: str = "",
    events: list[SpanEvent] | None = None,
    resource: dict[str, Any] | None = None,
    scope_name: str = "",
) -> DecodedSpan:
    return DecodedSpan(
        trace_id="0" * 32,
        span_id="0" * 16,
        parent_span_id=None,
        name=name,
        kind="INTERNAL",
        start_time_unix_nano=1,
        end_time_unix_nano=2,
        status_code=status,
        status_message=status_message,
        attributes=attributes,
        events=events or [],
        resource=resource or {},
        scope_name=scope_name,
    )


def log(event_name: str, body: Any = None, attributes: dict[str, Any] | None = None) -> DecodedLog:
    return DecodedLog(
        trace_id=None,
        span_id=None,
        time_unix_nano=0,
        event_name=event_name,
        severity_number=9,
        severity_text="INFO",
        body=body,
        attributes=attributes or {},
    )


# ------------------------------------------------------------------------------------------ expect-key checks

Check = Callable[[dict[str, Any], dict[str, Any], Any], None]


def _same(column: str) -> Check:
    def check(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
        assert result[column] == _clean(expected), column

    return check


def _check_kind(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
    # The fixtures call the generic kind "span"; our schema calls it "other".
    assert result["span_type"] == ("other" if expected == "span" else expected)


def _check_finish_reasons(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
    assert result["finish_reason"] is not None
    assert result["finish_reason"].split(",") == expected


def _check_error(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
    assert result["is_error"] is expected


def _check_reported_cost(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
    # Every fixture's cost_usd is the cost the span reported itself (pricing may later compute its own).
    assert result["reported_cost_usd"] == pytest.approx(expected)
    assert result["reported_cost_source"] is not None


def _check_cost_source(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
    assert expected == "emitted"
    assert result["reported_cost_source"] is not None


def _check_message_count(column: str) -> Check:
    def check(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
        messages = _messages(result[column])
        if isinstance(expected, int):
            assert len(messages) == expected
        else:
            assert [m["role"] for m in messages] == [m["role"] for m in expected]

    return check


def _check_system_prompt(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
    messages = _messages(result["input_messages"])
    assert (messages[0]["role"] == "system") is expected


def _check_requested_tool_calls(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
    calls = _parts(_all_outputs(entry, result), "tool_call")
    if isinstance(expected, int):
        assert len(calls) == expected
        return
    assert len(calls) == len(expected)
    for call, want in zip(calls, expected, strict=True):
        for key, value in want.items():
            got = call[key]
            assert (_json_or_text(got) if key == "arguments" else got) == value, key


def _check_server_tool_calls(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
    assert [p["name"] for p in _parts(_all_outputs(entry, result), "server_tool_call")] == expected


def _check_json_text(column: str) -> Check:
    def check(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
        assert isinstance(result[column], str)
        got = result[column] if isinstance(expected, str) else _json_or_text(result[column])
        assert got == expected

    return check


def _check_prompt(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
    assert result["prompt_name"] == expected["name"]
    assert result["prompt_version"] == str(expected["version"])


def _check_uncached(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
    uncached = result["input_tokens"] - (result["cache_read_tokens"] or 0) - (result["cache_write_tokens"] or 0)
    assert uncached == expected


def _check_own_tokens(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
    assert expected is None
    assert result["input_tokens"] is None and result["output_tokens"] is None and result["total_tokens"] is None


def _check_counts_towards_totals(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
    # Totals sum only llm/embedding spans (semconv §3); the agent span keeps its own gen_ai.usage.* as emitted.
    assert (result["span_type"] in ("llm", "embedding")) is expected


def _check_kind_trap(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
    assert result["span_type"] == "llm"
    assert result["tool_name"] is None  # the requested calls' names are not this span's tool


def _check_messages_from_logs(side: int) -> Check:
    def check(entry: dict[str, Any], result: dict[str, Any], expected: Any) -> None:
        assert entry.get("logs"), "fixture promises log-record content"
        assert _log_messages(entry)[side]

    return check


CHECKS: dict[str, Check] = {
    "kind": _check_kind,
    "provider": _same("provider"),
    "provider_hint": _same("provider"),
    "request_model": _same("request_model"),
    "response_model": _same("response_model"),
    "input_tokens": _same("input_tokens"),
    "output_tokens": _same("output_tokens"),
    "total_tokens": _same("total_tokens"),
    "cache_read_tokens": _same("cache_read_tokens"),
    "cache_write_tokens": _same("cache_write_tokens"),
    "reasoning_tokens": _same("reasoning_tokens"),
    "uncached_input_tokens": _check_uncached,
    "own_tokens": _check_own_tokens,
    "tokens_count_towards_totals": _check_counts_towards_totals,
    "user_id": _same("user_id"),
    "session_id": _same("session_id"),
    "agent_name": _same("agent_name"),
    "tool_name": _same("tool_name"),
    "tool_call_id": _same("tool_call_id"),
    "tool_arguments": _check_json_text("tool_arguments"),
    "tool_result": _check_json_text("tool_result"),
    "response_id": _same("response_id"),
    "environment": _same("environment"),
    "finish_reasons": _check_finish_reasons,
    "error": _check_error,
    "error_type": _same("error_type"),
    "error_message": _same("error_message"),
    "cost_usd": _check_reported_cost,
    "reported_cost_usd": _check_reported_cost,
    "cost_source": _check_cost_source,
    "input_messages": _check_message_count("input_messages"),
    "output_messages": _check_message_count("output_messages"),
    "system_prompt_in_messages": _check_system_prompt,
    "requested_tool_calls": _check_requested_tool_calls,
    "server_tool_calls": _check_server_tool_calls,
    "prompt": _check_prompt,
    "kind_trap": _check_kind_trap,
    "input_messages_from": _check_messages_from_logs(0),
    "output_messages_from": _check_messages_from_logs(1),
}

# Expect keys normalise_span deliberately does not promote, and why.
NOT_PROMOTED: dict[str, str] = {
    "note": "free-text commentary for humans",
    "kind_detected_by": "documents which decision-list rule fires; the resulting kind is asserted",
    "tags": "no tags column; tags stay in the lossless attributes JSON",
    "metadata": "no metadata column; kept in the attributes JSON",
    "ttft_ms": "time to first token is derived from span events/timestamps, not by normalise_span",
    "streaming": "no streaming column; kept in the attributes JSON",
    "computed_cost_usd": "computed by collector/pricing.py from the normalised tokens, not by normalise_span",
    "aggregated_tokens": "run totals (gen_ai.aggregated_usage.*) are never promoted; 'own_tokens' asserts that",
    "tool_type": "no tool_type column",
    "tool_definitions": "no tool-definitions column; kept in the attributes JSON",
    "guardrail_name": "no guardrail columns in store/schema.py",
    "guardrail_hit": "no guardrail columns in store/schema.py",
    "retry_signal": "retries are detected structurally across spans, not per span",
    "subkind": "no sub-kind column (handoff is a tool span)",
    "from_agent": "no handoff columns",
    "to_agent": "no handoff columns",
    "level": "Langfuse level WARNING is not an error; no level column ('error' asserts the outcome)",
    "name": "the span name is a raw column, not normalised",
    "input_from": "free-form content provenance note (traceloop.entity.input)",
    "output_from": "free-form content provenance note (traceloop.entity.output)",
}


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_fixture(entry: dict[str, Any]) -> None:
    result = normalise_span(entry_to_span(entry))
    assert set(result) == set(OUTPUT_KEYS)
    assert result["span_type"] in SPAN_TYPES
    for record in entry_to_logs(entry):  # every correlated GenAI log record contributes a message
        ins, outs, _ = messages_from_log(record)
        assert ins or outs, record.event_name
    for key, expected in entry["expect"].items():
        if key in NOT_PROMOTED:
            continue
        assert key in CHECKS, f"expect key {key!r} is neither checked nor listed in NOT_PROMOTED"
        CHECKS[key](entry, result, expected)


def test_fixture_count_and_extra_content_checks() -> None:
    assert len(ENTRIES) == 38
    by_id = {e["id"]: normalise_span(entry_to_span(e)) for e in ENTRIES}
    # Pydantic AI tool_call_response 'result' is normalised to the schema's 'response'
    pyd = _messages(by_id["pyd-01-agent-run-v5"]["input_messages"])
    (response,) = _parts(pyd, "tool_call_response")
    assert response["response"] == "1" and "result" not in response
    # OpenInference tool message; legacy OpenLLMetry finish reason; Strands nested content; OpenLIT span events
    oi = _messages(by_id["oi-02-llm-after-tool"]["input_messages"])
    assert oi[3]["role"] == "tool" and _parts(oi, "tool_call_response")[0]["response"] == "2001"
    assert _text_of(_messages(by_id["oth-01-strands-model-invoke"]["input_messages"])) == ["yo"]
    assert _messages(by_id["oth-01-strands-model-invoke"]["output_messages"])[0]["role"] == "assistant"
    olit = _messages(by_id["olit-01-openai-chat-1.27"]["input_messages"])
    assert olit == [{"role": "user", "parts": [{"type": "text", "content": "What is LLM Observability?"}]}]
    assert by_id["olit-01-openai-chat-1.27"]["output_messages"] is not None
    # Langfuse input / output
    lf = by_id["lf-01-generation"]
    assert _text_of(_messages(lf["input_messages"])) == ["hi"]
    assert _text_of(_messages(lf["output_messages"])) == ["hello"]
    # Pydantic AI v1 all_messages_events: tool message with the call id
    pyd4 = _messages(by_id["pyd-04-agent-run-v1-legacy-events"]["input_messages"])
    assert [m["role"] for m in pyd4] == ["user", "assistant", "tool"]
    assert _parts(pyd4, "tool_call_response")[0]["id"] == "<call-id>"
    # no content -> None
    assert by_id["otel-01-chat-no-content"]["input_messages"] is None
    assert by_id["otel-01-chat-no-content"]["output_messages"] is None


def test_pure_inputs_untouched() -> None:
    spans = [entry_to_span(e) for e in ENTRIES]
    spans.append(
        span(
            {
                "gen_ai.prompt.0.role": "user",
                "gen_ai.prompt.0.content": {"0": {"text": "structured leaf"}, "1": {"x": {"2": 3}}},
                "gen_ai.input.messages": [
                    {"role": "user", "parts": [{"type": "tool_call_response", "id": "a", "result": 1}]}
                ],
                "gen_ai.output.messages": [
                    {"role": "assistant", "parts": [{"type": "tool_call", "name": "f", "arguments": '{"a": 1}'}]}
                ],
            },
            "openai.chat",
        )
    )
    for item in spans:
        before = copy.deepcopy((item.attributes, [(e.name, e.attributes) for e in item.events], item.resource))
        normalise_span(item)
        assert (item.attributes, [(e.name, e.attributes) for e in item.events], item.resource) == before
    structured = spans[-1]
    del structured.attributes["gen_ai.input.messages"]
    result = normalise_span(structured)
    # a structured (kvlist) leaf value is content as sent, not part of the flattened key tree
    (part,) = _messages(result["input_messages"])[0]["parts"]
    assert json.loads(part["content"]) == {"0": {"text": "structured leaf"}, "1": {"x": {"2": 3}}}


def test_logfire_v1_request_response_data() -> None:
    result = normalise_span(
        span(
            {
                "request_data": '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}',
                "response_data": '{"message": {"role": "assistant", "content": "yo"}, "usage": {"total_tokens": 3}}',
            },
            "Chat Completion with 'gpt-4o'",
        )
    )
    assert _text_of(_messages(result["input_messages"])) == ["hi"]
    assert _text_of(_messages(result["output_messages"])) == ["yo"]


def test_output_keys_are_span_columns() -> None:
    # server_address is a pricing input (genai-prices provider_api_url), not a lake column.
    assert set(OUTPUT_KEYS) - {"server_address"} <= set(SPAN_COLUMN_NAMES)


# --------------------------------------------------------------------------------------------- focused units


def test_indexed_messages_sort_numerically() -> None:
    attrs: dict[str, Any] = {}
    indices = list(range(12))
    random.Random(7).shuffle(indices)
    for i in sorted(indices, key=str):  # lexical insertion order: 0, 1, 10, 11, 2, ...
        attrs[f"gen_ai.prompt.{i}.role"] = "user"
        attrs[f"gen_ai.prompt.{i}.content"] = f"m{i}"
    attrs["gen_ai.prompt.10.tool_calls.10.name"] = "late"
    attrs["gen_ai.prompt.10.tool_calls.9.name"] = "early"
    result = normalise_span(span(attrs, "openai.chat"))
    messages = _messages(result["input_messages"])
    assert _text_of(messages) == [f"m{i}" for i in range(12)]
    assert [p["name"] for p in _parts(messages, "tool_call")] == ["early", "late"]


def test_openinference_indexed_contents_and_tool_calls() -> None:
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.contents.0.message_content.type": "text",
        "llm.input_messages.0.message.contents.0.message_content.text": "look",
        "llm.input_messages.0.message.contents.1.message_content.type": "image",
        "llm.input_messages.0.message.contents.1.message_content.image.image.url": "https://x/y.png",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.tool_calls.0.tool_call.id": "c1",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "f",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"a": 1}',
    }
    result = normalise_span(span(attrs))
    (message,) = _messages(result["input_messages"])
    assert message["parts"] == [
        {"type": "text", "content": "look"},
        {"type": "uri", "modality": "image", "uri": "https://x/y.png"},
    ]
    (out,) = _messages(result["output_messages"])
    assert out["parts"] == [{"type": "tool_call", "id": "c1", "name": "f", "arguments": {"a": 1}}]


def test_exclusive_cache_semantics_are_added() -> None:
    exclusive = normalise_span(
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.usage.input_tokens": 5,  # Anthropic-native: excludes cache
                "gen_ai.usage.cache_read.input_tokens": 1000,
                "gen_ai.usage.cache_creation.input_tokens": 200,
                "gen_ai.usage.output_tokens": 50,
            }
        )
    )
    assert exclusive["input_tokens"] == 1205
    assert exclusive["total_tokens"] == 1255
    inclusive = normalise_span(
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.usage.input_tokens": 1205,
                "gen_ai.usage.cache_read.input_tokens": 1000,
                "gen_ai.usage.cache_write.input_tokens": 200,
                "gen_ai.usage.output_tokens": 50,
            }
        )
    )
    assert inclusive["input_tokens"] == 1205
    assert (inclusive["cache_read_tokens"], inclusive["cache_write_tokens"]) == (1000, 200)


def test_langfuse_usage_details_input_excludes_cache() -> None:
    result = normalise_span(
        span(
            {
                "langfuse.observation.type": "generation",
                "langfuse.observation.usage_details": '{"input": 10, "output": 2, "input_cached_tokens": 4}',
            }
        )
    )
    assert (result["input_tokens"], result["cache_read_tokens"], result["total_tokens"]) == (14, 4, 16)


def test_reasoning_is_subset_of_output() -> None:
    result = normalise_span(
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 5,  # Gemini-style: excludes thoughts
                "gen_ai.usage.reasoning.output_tokens": 20,
            }
        )
    )
    assert (result["output_tokens"], result["reasoning_tokens"], result["total_tokens"]) == (25, 20, 35)


def test_aggregated_usage_is_never_own_usage() -> None:
    result = normalise_span(
        span(
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "a",
                "gen_ai.aggregated_usage.input_tokens": 103,
                "gen_ai.aggregated_usage.output_tokens": 12,
                "gen_ai.aggregated_usage.total_tokens": 115,
            },
            "invoke_agent a",
        )
    )
    assert result["span_type"] == "agent"
    for key in ("input_tokens", "output_tokens", "total_tokens", "cache_read_tokens", "reasoning_tokens"):
        assert result[key] is None


def test_token_spellings_and_types() -> None:
    vercel = normalise_span(
        span(
            {
                "ai.operationId": "ai.generateText.doGenerate",
                "ai.model.id": "claude-3-5-haiku",
                "ai.model.provider": "anthropic.messages",
                "ai.usage.promptTokens": "15",
                "ai.usage.completionTokens": 7.0,
                "ai.telemetry.metadata.userId": "u",
                "ai.telemetry.metadata.sessionId": "s",
            },
            "ai.generateText.doGenerate",
            scope_name="ai",
        )
    )
    assert vercel["span_type"] == "llm" and vercel["provider"] == "anthropic"
    assert (vercel["input_tokens"], vercel["output_tokens"], vercel["total_tokens"]) == (15, 7, 22)
    assert (vercel["user_id"], vercel["session_id"]) == ("u", "s")
    long_value = normalise_span(
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.usage.input_tokens": {"low": 14, "high": 0, "unsigned": False},
                "gen_ai.usage.output_tokens": -1,  # OpenLIT: unset
            }
        )
    )
    assert (long_value["input_tokens"], long_value["output_tokens"], long_value["total_tokens"]) == (14, None, None)
    openlit = normalise_span(
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.usage.prompt_tokens": 100,
                "gen_ai.usage.prompt_tokens_details.cached_tokens": 40,
                "gen_ai.usage.completion_tokens_details.reasoning_tokens": 3,
                "gen_ai.usage.completion_tokens": 9,
            }
        )
    )
    assert (openlit["input_tokens"], openlit["cache_read_tokens"], openlit["reasoning_tokens"]) == (100, 40, 3)


def test_reported_cost_precedence() -> None:
    result = normalise_span(span({"operation.cost": "0.5", "gen_ai.usage.cost": 0.7}))
    assert (result["reported_cost_usd"], result["reported_cost_source"]) == (0.5, "operation.cost")
    result = normalise_span(span({"litellm.cost.total": 0.25}))
    assert (result["reported_cost_usd"], result["reported_cost_source"]) == (0.25, "litellm.cost.total")
    assert normalise_span(span({"llm.cost.total": "n/a"}))["reported_cost_usd"] is None


def test_agent_name_never_decides_agent_alone() -> None:
    propagated = normalise_span(span({"gen_ai.agent.name": "weather", "http.route": "/x"}, "GET /x"))
    assert propagated["span_type"] == "other"
    assert propagated["agent_name"] == "weather"  # still propagated onto the span
    with_model = normalise_span(span({"gen_ai.agent.name": "weather", "gen_ai.request.model": "m"}, "weather step"))
    assert with_model["span_type"] != "agent"
    named = normalise_span(span({"agent.name": "weather"}, "weather"))
    assert named["span_type"] == "agent"


def test_tool_name_on_chat_span_is_not_a_tool_span() -> None:
    result = normalise_span(
        span(
            {
                "gen_ai.tool.name": "get_weather,get_time",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 3,
            },
            "openlit span",
        )
    )
    assert result["span_type"] == "llm" and result["tool_name"] is None
    tool = normalise_span(span({"gen_ai.tool.name": "get_weather"}, "whatever"))
    assert tool["span_type"] == "tool" and tool["tool_name"] == "get_weather"


@pytest.mark.parametrize(
    ("attrs", "name", "expected"),
    [
        ({"gen_ai.operation.name": "search_memory"}, "x", "retriever"),
        ({"gen_ai.operation.name": "plan"}, "x", "chain"),
        ({"gen_ai.operation.name": "invoke_workflow"}, "x", "chain"),
        ({"gen_ai.operation.name": "fetch_response"}, "x", "llm"),
        ({"gen_ai.operation.name": "something_custom"}, "x", "other"),
        ({"openinference.span.kind": "RERANKER"}, "x", "reranker"),
        ({"openinference.span.kind": "UNKNOWN", "gen_ai.operation.name": "chat"}, "x", "llm"),
        ({"langfuse.observation.type": "span", "langfuse.observation.model.name": "m"}, "x", "llm"),
        ({"traceloop.span.kind": "task"}, "x", "chain"),
        ({"llm.request.type": "rerank"}, "x", "reranker"),
        ({"gen_ai.guardrail.name": "pii", "gen_ai.guardrail.status": "FAILED"}, "pii.guardrail", "guardrail"),
        ({}, "openai.embeddings", "embedding"),
        ({}, "anthropic.chat", "llm"),
        ({}, "RunnableSequence.task", "chain"),
        ({}, "create_agent", "agent"),
        ({}, "running tool", "tool"),
        ({"ai.operationId": "ai.embedMany.doEmbed"}, "x", "embedding"),
        ({"ai.operationId": "ai.toolCall", "ai.toolCall.name": "t", "ai.toolCall.args": '{"a":1}'}, "x", "tool"),
        ({"ai.operationId": "ai.streamText"}, "x", "chain"),
        ({"retrieval.documents.0.document.id": "d"}, "x", "retriever"),
        ({"db.system": "qdrant"}, "x", "retriever"),
        ({"embedding.model_name": "e"}, "x", "embedding"),
    ],
)
def test_decision_list(attrs: dict[str, Any], name: str, expected: str) -> None:
    assert normalise_span(span(attrs, name))["span_type"] == expected


def test_structured_kvlist_messages() -> None:
    # arrayValue of kvlistValues, already flattened by the decoder into lists and dicts
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system_instructions": [{"type": "text", "content": "be brief"}],
        "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}],
        "gen_ai.output.messages": [
            {
                "role": "assistant",
                "parts": [{"type": "tool_call", "id": "c", "name": "f", "arguments": {"x": 1}}],
                "finish_reason": "tool_call",
            }
        ],
    }
    result = normalise_span(span(attrs))
    assert json.loads(result["input_messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
    ]
    assert json.loads(result["output_messages"])[0]["parts"][0]["arguments"] == {"x": 1}
    assert result["finish_reason"] == "tool_call"
    assert ":" in result["input_messages"] and ", " not in result["input_messages"]  # compact separators


def test_invalid_json_messages_kept_as_text() -> None:
    broken = '[{"role": "user", "parts": [{"type": "text", "content": "héllo"'
    result = normalise_span(
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.input.messages": broken,
                "gen_ai.output.messages": "not json at all",
            }
        )
    )
    assert json.loads(result["input_messages"]) == [{"role": "user", "parts": [{"type": "text", "content": broken}]}]
    assert "héllo" in result["input_messages"]  # ensure_ascii=False
    assert _text_of(json.loads(result["output_messages"])) == ["not json at all"]
    assert json.loads(result["output_messages"])[0]["role"] == "assistant"


def test_legacy_content_parts_in_indexed_content() -> None:
    attrs = {
        "llm.request.type": "chat",
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": '[{"type": "text", "text": "what is this"}, '
        '{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]',
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.finish_reason": "tool_calls",
        "gen_ai.completion.0.tool_calls.0.id": "c1",
        "gen_ai.completion.0.tool_calls.0.name": "lookup",
        "gen_ai.completion.0.tool_calls.0.arguments": '{"q": "x"}',
    }
    result = normalise_span(span(attrs, "openai.chat"))
    (message,) = _messages(result["input_messages"])
    assert message["parts"] == [
        {"type": "text", "content": "what is this"},
        {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "AAAA"},
    ]
    assert _parts(_messages(result["output_messages"]), "tool_call")[0]["arguments"] == {"q": "x"}
    assert result["finish_reason"] == "tool_calls"


def test_span_events_per_message_and_openlit_prompt() -> None:
    events = [
        SpanEvent("gen_ai.system.message", 1, {"content": "sys"}),
        SpanEvent("gen_ai.user.message", 2, {"content": '[{"text": "hello"}]'}),  # Strands / Bedrock blocks
        SpanEvent(
            "gen_ai.choice",
            3,
            {
                "message": '[{"text": "hi"}, {"toolUse": {"toolUseId": "t1", "name": "f", "input": {"a": 1}}}]',
                "finish_reason": "tool_use",
            },
        ),
    ]
    result = normalise_span(span({"gen_ai.operation.name": "chat"}, events=events))
    inputs = _messages(result["input_messages"])
    assert [m["role"] for m in inputs] == ["system", "user"] and _text_of(inputs) == ["sys", "hello"]
    (out,) = _messages(result["output_messages"])
    assert out["parts"][1] == {"type": "tool_call", "id": "t1", "name": "f", "arguments": {"a": 1}}
    assert result["finish_reason"] == "tool_use"
    prompt = SpanEvent("gen_ai.content.prompt", 1, {"gen_ai.prompt": "system: be nice\nuser: hi\nthere"})
    result = normalise_span(span({"gen_ai.operation.name": "chat"}, events=[prompt]))
    assert _messages(result["input_messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "be nice"}]},
        {"role": "user", "parts": [{"type": "text", "content": "hi\nthere"}]},
    ]


def test_pydantic_v1_events_attribute() -> None:
    events = json.dumps(
        [
            {"event.name": "gen_ai.system.message", "content": "sys", "role": "system"},
            {"event.name": "gen_ai.user.message", "content": "Hello", "role": "user", "gen_ai.message.index": 0},
            {"event.name": "gen_ai.choice", "index": 0, "message": {"role": "assistant", "content": "Hi"}},
        ]
    )
    result = normalise_span(span({"gen_ai.operation.name": "chat", "events": events}))
    assert _text_of(_messages(result["input_messages"])) == ["sys", "Hello"]
    assert _text_of(_messages(result["output_messages"])) == ["Hi"]


def test_vercel_messages() -> None:
    attrs = {
        "ai.operationId": "ai.generateText.doGenerate",
        "ai.model.id": "gpt-4o",
        "ai.prompt.messages": json.dumps(
            [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": [{"type": "text", "text": "q"}]},
                {
                    "role": "assistant",
                    "content": [{"type": "tool-call", "toolCallId": "c", "toolName": "f", "args": {"a": 1}}],
                },
                {
                    "role": "tool",
                    "content": [{"type": "tool-result", "toolCallId": "c", "toolName": "f", "result": 42}],
                },
            ]
        ),
        "ai.response.text": "answer",
        "ai.response.toolCalls": json.dumps(
            [{"toolCallType": "function", "toolCallId": "d", "toolName": "g", "args": '{"b": 2}'}]
        ),
        "ai.response.finishReason": "stop",
    }
    result = normalise_span(span(attrs, scope_name="ai"))
    inputs = _messages(result["input_messages"])
    assert [m["role"] for m in inputs] == ["system", "user", "assistant", "tool"]
    assert inputs[3]["parts"] == [{"type": "tool_call_response", "id": "c", "response": 42, "name": "f"}]
    (out,) = _messages(result["output_messages"])
    assert out["parts"] == [
        {"type": "text", "content": "answer"},
        {"type": "tool_call", "id": "d", "name": "g", "arguments": {"b": 2}},
    ]
    assert result["finish_reason"] == "stop"


def test_openinference_value_fallback() -> None:
    attrs = {
        "openinference.span.kind": "LLM",
        "input.value": '{"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o-mini"}',
        "output.value": '{"choices": [{"message": {"role": "assistant", "content": "yo"}, "finish_reason": "stop"}]}',
    }
    result = normalise_span(span(attrs))
    assert _text_of(_messages(result["input_messages"])) == ["hi"]
    assert _text_of(_messages(result["output_messages"])) == ["yo"]
    assert result["finish_reason"] == "stop"


def test_tool_arguments_as_text() -> None:
    result = normalise_span(
        span(
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "f",
                "gen_ai.tool.call.arguments": {"city": "Zürich"},
                "gen_ai.tool.call.result": ["a", 1],
            },
            "execute_tool f",
        )
    )
    assert result["tool_arguments"] == '{"city":"Zürich"}'
    assert result["tool_result"] == '["a",1]'
    spaced = normalise_span(
        span({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.call.arguments": '{"x": 1}'}, "execute_tool g")
    )
    assert spaced["tool_arguments"] == '{"x": 1}'  # JSON text kept as sent
    assert spaced["tool_name"] == "g"


def test_provider_normalisation() -> None:
    table = {
        "OpenAI": "openai",
        "Anthropic": "anthropic",
        "aws.bedrock": "aws",
        "az.ai.openai": "azure",
        "azure.ai.openai": "azure",
        "gcp.gen_ai": "google",
        "gcp.vertex_ai": "google",
        "gemini": "google",
        "x_ai": "x-ai",
        "xai": "x-ai",
        "mistral_ai": "mistral",
        "moonshot_ai": "moonshotai",
        "together_ai": "together",
        "fireworks_ai": "fireworks",
        "groq": "groq",
        "deepseek": "deepseek",
        "cohere": "cohere",
        "IBM.watsonx.ai": "ibm.watsonx.ai",
        "openai.chat": "openai",
        "Ollama": "ollama",
    }
    for raw, expected in table.items():
        assert normalise_provider(raw) == expected, raw
    assert normalise_provider("") is None and normalise_provider(3) is None
    assert provider_from_host("https://api.openai.com/v1/") == "openai"
    assert provider_from_host("myres.openai.azure.com") == "azure"
    assert provider_from_host("bedrock-runtime.us-east-1.amazonaws.com") == "aws"
    assert provider_from_host("s3.amazonaws.com") is None
    derived = normalise_span(span({"gen_ai.request.model": "claude", "server.address": "api.anthropic.com"}))
    assert (derived["provider"], derived["server_address"]) == ("anthropic", "api.anthropic.com")
    azure = normalise_span(span({"gen_ai.system": "openai", "server.address": "x.openai.azure.com"}))
    assert azure["provider"] == "azure"
    assert normalise_span(span({"gen_ai.request.model": "meta-llama/Llama-3"}))["provider"] is None


def test_user_session_environment() -> None:
    result = normalise_span(
        span(
            {
                "gen_ai.request.user": "request-param",
                "traceloop.association.properties.user_id": "explicit",
                "gen_ai.conversation.id": "conv",
            },
            resource={"deployment.environment.name": "staging"},
        )
    )
    assert (result["user_id"], result["session_id"], result["environment"]) == ("explicit", "conv", "staging")
    assert normalise_span(span({"gen_ai.request.user": ""}))["user_id"] is None
    assert normalise_span(span({"llm.user": "p"}))["user_id"] == "p"


def test_errors() -> None:
    plain = normalise_span(span({"error.type": "timeout"}))
    assert (plain["is_error"], plain["error_type"]) == (True, "timeout")
    status = normalise_span(span({"http.response.status_code": 503}, status="ERROR", status_message="upstream"))
    assert (status["is_error"], status["error_type"], status["error_message"]) == (True, "5xx", "upstream")
    lf = normalise_span(span({"langfuse.observation.level": "ERROR", "langfuse.observation.status_message": "boom"}))
    assert (lf["is_error"], lf["error_message"]) == (True, "boom")
    finish = normalise_span(span({"gen_ai.response.finish_reasons": ["error"]}))
    assert finish["is_error"] is True
    deferral = normalise_span(
        span({"gen_ai.operation.name": "execute_tool", "pydantic_ai.tool.deferral.name": "approval"}, status="ERROR")
    )
    assert (deferral["is_error"], deferral["error_type"], deferral["error_message"]) == (False, None, None)
    tripwire = normalise_span(
        span(
            {"gen_ai.operation.name": "invoke_agent"},
            status="ERROR",
            events=[
                SpanEvent(
                    "exception",
                    1,
                    {"exception.type": "InputGuardrailTripwireTriggered", "exception.message": "tripped"},
                )
            ],
        )
    )
    assert tripwire["is_error"] is False
    guard = normalise_span(span({"openinference.span.kind": "GUARDRAIL"}, status="ERROR"))
    assert (guard["span_type"], guard["is_error"]) == ("guardrail", False)
    ok = normalise_span(span({"langfuse.observation.level": "WARNING", "langfuse.observation.status_message": "meh"}))
    assert (ok["is_error"], ok["error_message"]) == (False, None)


def test_prompt_and_ids() -> None:
    result = normalise_span(
        span({"traceloop.prompt.key": "greet", "traceloop.prompt.version": 3, "gen_ai.response.id": "r1"})
    )
    assert (result["prompt_name"], result["prompt_version"], result["response_id"]) == ("greet", "3", "r1")


# --------------------------------------------------------------------------------------------------------- logs


def test_log_events_legacy_shapes() -> None:
    ins, outs, rid = messages_from_log(
        log(
            "gen_ai.assistant.message",
            {
                "content": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
            },
        )
    )
    assert ins == [
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "c", "name": "f", "arguments": {"a": 1}}]}
    ]
    assert outs is None and rid is None
    ins, _, _ = messages_from_log(log("gen_ai.tool.message", {"content": "rainy", "id": "c"}))
    assert ins == [{"role": "tool", "parts": [{"type": "tool_call_response", "id": "c", "response": "rainy"}]}]
    ins, _, _ = messages_from_log(log("gen_ai.system.message", {"content": "sys"}))
    assert ins == [{"role": "system", "parts": [{"type": "text", "content": "sys"}]}]
    _, outs, rid = messages_from_log(
        log(
            "gen_ai.choice",
            {"index": 0, "finish_reason": "stop", "message": {"content": "ok"}},
            {"gen_ai.response.id": "resp-1"},
        )
    )
    assert outs == [{"role": "assistant", "parts": [{"type": "text", "content": "ok"}], "finish_reason": "stop"}]
    assert rid == "resp-1"


def test_log_operation_details_structured_and_json() -> None:
    structured = log(
        "gen_ai.client.inference.operation.details",
        None,
        {
            "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "q"}]}],
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": "a"}], "finish_reason": "stop"}]
            ),
            "gen_ai.system_instructions": '[{"type": "text", "content": "sys"}]',
            "gen_ai.response.id": "r9",
        },
    )
    ins, outs, rid = messages_from_log(structured)
    assert [m["role"] for m in ins or []] == ["system", "user"]
    assert _text_of(outs or []) == ["a"] and rid == "r9"


def test_log_non_genai_and_odd_bodies() -> None:
    assert messages_from_log(log("http.request", {"content": "x"})) == (None, None, None)
    assert messages_from_log(log("", {"content": "x"})) == (None, None, None)
    named = log("", {"content": "x"}, {"event.name": "gen_ai.user.message"})
    assert messages_from_log(named)[0] == [{"role": "user", "parts": [{"type": "text", "content": "x"}]}]
    assert messages_from_log(log("gen_ai.user.message", "plain text body"))[0] == [
        {"role": "user", "parts": [{"type": "text", "content": "plain text body"}]}
    ]
    for body in (None, 5, [1, 2], {"content": {"weird": True}}, {"content": [None, 3]}):
        messages_from_log(log("gen_ai.user.message", body))
        messages_from_log(log("gen_ai.choice", body))
        messages_from_log(log("gen_ai.client.inference.operation.details", body, {"gen_ai.input.messages": body}))


# ------------------------------------------------------------------------------------------- never raises

# Every attribute key normalise_span reads, so random values hit each code path.
_KEYS = sorted(
    {key for entry in ENTRIES for key in entry["attributes"]}
    | {
        "gen_ai.system_instructions",
        "pydantic_ai.all_messages",
        "events",
        "all_messages_events",
        "ai.prompt",
        "ai.prompt.messages",
        "ai.response.text",
        "ai.response.toolCalls",
        "ai.response.object",
        "ai.response.providerMetadata",
        "ai.operationId",
        "langfuse.observation.cost_details",
        "llm.cost.total",
        "operation.cost",
        "litellm.cost.total",
        "error.type",
        "logfire.level_num",
        "http.response.status_code",
        "langfuse.observation.level",
        "gen_ai.guardrail.error.type",
        "gen_ai.framework.error.type",
        "db.system",
        "traceloop.entity.input",
        "traceloop.entity.output",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.prompt.0.content",
        "gen_ai.prompt.1.tool_calls.0.arguments",
        "gen_ai.completion.0.content",
        "llm.input_messages.0.message.contents.0.message_content.text",
        "gen_ai.prompt.0.content.0.text",
        "gen_ai.prompt.0",
        "llm.prompts.0.prompt.text",
        "llm.choices.0",
        "deployment.environment.name",
        "langfuse.trace.metadata.langfuse_user_id",
        "final_result",
        "pydantic_ai.tool.deferral.name",
    }
)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "[",
            "{",
            "[{",
            "null",
            "[1, 2]",
            '{"a": 1}',
            '[{"type": 3}]',
            '"quoted"',
            "-1",
            "1e400",
            "user: hi",
            '[{"role": 1, "parts": 5}]',
            '{"messages": 3}',
            '{"choices": [1]}',
            '[{"text": null}]',
            '{"total": "x", "a": 1}',
            "chat",
            "execute_tool",
            "ERROR",
        ]
    ),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "role",
                    "content",
                    "parts",
                    "type",
                    "text",
                    "message",
                    "tool_calls",
                    "id",
                    "name",
                    "arguments",
                    "function",
                    "result",
                    "low",
                    "high",
                    "messages",
                    "choices",
                    "input",
                    "output",
                    "total",
                    "finish_reason",
                    "toolUse",
                    "image_url",
                    "source",
                    "args",
                    "kwargs",
                ]
            ),
            children,
            max_size=5,
        ),
    ),
    max_leaves=12,
)
_events = st.lists(
    st.builds(
        SpanEvent,
        name=st.sampled_from(
            [
                "exception",
                "gen_ai.choice",
                "gen_ai.user.message",
                "gen_ai.content.prompt",
                "gen_ai.content.completion",
                "x",
            ]
        ),
        time_unix_nano=st.just(0),
        attributes=st.dictionaries(
            st.sampled_from(
                [
                    "content",
                    "message",
                    "gen_ai.prompt",
                    "gen_ai.completion",
                    "exception.type",
                    "exception.message",
                    "role",
                    "id",
                ]
            ),
            _values,
            max_size=3,
        ),
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    attrs=st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=12)), _values, max_size=12),
    name=st.sampled_from(["", "chat x", "execute_tool t", "agent run", "openai.chat", "x.tool", "invoke_agent"]),
    status=st.sampled_from(["UNSET", "OK", "ERROR"]),
    events=_events,
)
def test_never_raises_on_odd_values(attrs: dict[str, Any], name: str, status: str, events: list[SpanEvent]) -> None:
    result = normalise_span(span(attrs, name, status=status, events=events, resource=dict(attrs)))
    assert set(result) == set(OUTPUT_KEYS)
    assert result["span_type"] in SPAN_TYPES
    assert isinstance(result["is_error"], bool)
    for key in ("input_messages", "output_messages", "tool_arguments", "tool_result"):
        assert result[key] is None or isinstance(result[key], str)
    for key in ("input_messages", "output_messages"):
        if result[key] is not None:
            for message in json.loads(result[key]):
                assert isinstance(message["role"], str) and isinstance(message["parts"], list)
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        assert result[key] is None or (isinstance(result[key], int) and result[key] >= 0)


@settings(max_examples=200, deadline=None)
@given(
    event_name=st.sampled_from(
        [
            "gen_ai.user.message",
            "gen_ai.choice",
            "gen_ai.tool.message",
            "gen_ai.client.inference.operation.details",
            "other",
        ]
    ),
    body=_values,
    attrs=st.dictionaries(
        st.sampled_from(
            [
                "gen_ai.input.messages",
                "gen_ai.output.messages",
                "gen_ai.system_instructions",
                "gen_ai.response.id",
                "event.name",
            ]
        ),
        _values,
        max_size=4,
    ),
)
def test_messages_from_log_never_raises(event_name: str, body: Any, attrs: dict[str, Any]) -> None:
    ins, outs, rid = messages_from_log(log(event_name, body, attrs))
    assert ins is None or isinstance(ins, list)
    assert outs is None or isinstance(outs, list)
    assert rid is None or isinstance(rid, str)


_PLAIN_KEYS = [
    "http.route",
    "http.request.method",
    "http.response.status_code",
    "http.status_code",
    "url.path",
    "server.address",
    "db.system",
    "db.statement",
    "user.id",
    "session.id",
    "enduser.id",
    "error.type",
    "deployment.environment",
    "deployment.environment.name",
    "service.name",
    "exception.type",
]


@settings(max_examples=300, deadline=None)
@given(
    attrs=st.dictionaries(st.sampled_from(_PLAIN_KEYS), _values, max_size=6),
    name=st.sampled_from(
        [
            "GET /x",
            "chat room",
            "invoke_agent bot",
            "execute_tool t",
            "x.tool",
            "a.workflow",
            "openai.embeddings",
            "apply_guardrail g",
            "agent run",
            "",
        ]
    ),
    status=st.sampled_from(["UNSET", "ERROR"]),
    server=st.sampled_from([None, "api.openai.com", "example.com", "x.openai.azure.com"]),
)
def test_plain_fast_path_matches_full_path(attrs: dict[str, Any], name: str, status: str, server: str | None) -> None:
    if server is not None:
        attrs["server.address"] = server
    plain = span(
        attrs,
        name,
        status=status,
        status_message="boom: x",
        resource={"deployment.environment": "p"},
        events=[SpanEvent("exception", 1, {"exception.type": "boom", "exception.message": "m"})],
    )
    plan = normalise_module._plan(attrs)
    assert not normalise_module._has_genai_signal(plain, plan)
    full = normalise_module._normalise_genai(plain, attrs, plan)
    assert normalise_module._normalise_plain(plain, attrs, plan) == full


def test_odd_types_where_strings_are_expected() -> None:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": 5,
        "gen_ai.provider.name": ["openai"],
        "gen_ai.request.model": 42,
        "gen_ai.response.model": {"x": 1},
        "user.id": 123,
        "session.id": ["s"],
        "gen_ai.response.finish_reasons": "stop",
        "gen_ai.input.messages": 7,
        "gen_ai.output.messages": {"role": "assistant", "content": "single dict"},
        "langfuse.observation.type": ["generation"],
        "gen_ai.usage.input_tokens": True,
    }
    result = normalise_span(span(attrs, "chat x"))
    assert result["span_type"] == "llm"
    assert (result["provider"], result["request_model"], result["response_model"]) == (None, "42", None)
    assert (result["user_id"], result["session_id"], result["finish_reason"]) == ("123", None, "stop")
    assert result["input_tokens"] is None  # a bool is not a count
    assert _text_of(_messages(result["input_messages"])) == ["7"]
    assert _text_of(_messages(result["output_messages"])) == ["single dict"]


# ------------------------------------------------------------------------------ roles lost to the attribute limit


def test_missing_role_is_inferred_from_tool_calls_and_call_id() -> None:
    # OpenInference, first messages after the SDK's 128-attribute limit evicted their role keys
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.input_messages.0.message.tool_calls.0.tool_call.id": "c1",
        "llm.input_messages.0.message.tool_calls.0.tool_call.function.name": "lookup",
        "llm.input_messages.1.message.tool_call_id": "c1",
        "llm.input_messages.1.message.content": "found",
        "llm.input_messages.2.message.content": "thanks",
        "llm.input_messages.3.message.role": "user",
        "llm.input_messages.3.message.content": "and now?",
    }
    roles = [m["role"] for m in _messages(normalise_span(span(attrs))["input_messages"])]
    assert roles == ["assistant", "tool", "user", "user"]  # no clue left: the default


def test_an_event_name_gives_the_role_no_inference() -> None:
    ins, _, _ = messages_from_log(log("gen_ai.user.message", {"content": "hi", "tool_call_id": "c"}))
    _, outs, _ = messages_from_log(log("gen_ai.choice", {"message": {"tool_call_id": "c", "content": "x"}}))
    assert (ins or [{}])[0].get("role") == "user"
    assert (outs or [{}])[0].get("role") == "assistant"


def test_missing_role_in_otel_json_and_a_present_role_wins() -> None:
    text = json.dumps(
        [
            {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]},
            {"tool_call_id": "c", "content": "ok"},
            {"role": "user", "tool_call_id": "c", "content": "kept"},
            {"role": "", "tool_calls": [{"id": "d"}]},
        ]
    )
    result = normalise_span(span({"gen_ai.operation.name": "chat", "gen_ai.input.messages": text}))
    assert [m["role"] for m in _messages(result["input_messages"])] == ["assistant", "tool", "user", "assistant"]


# ------------------------------------------------------------------- message texts kept as sent (fast path)


def _expected_json(value: Any, role: str, system: Any = None) -> str | None:
    """What normalisation gives a gen_ai.*.messages value by the plain rule: convert every message, encode."""
    messages = otel_messages(value, role)
    if system is not None:
        sys_msg = system_message(system)
        if sys_msg is not None:
            messages = [sys_msg, *messages]
    return dumps(messages) if messages else None


def _check_messages(inputs: Any, outputs: Any = None, system: Any = None) -> dict[str, Any]:
    """normalise_span's message columns equal the plain rule's, with the memos cold and then warm."""
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.input.messages": inputs}
    if outputs is not None:
        attrs["gen_ai.output.messages"] = outputs
    if system is not None:
        attrs["gen_ai.system_instructions"] = system
    clear_memos()
    results = [normalise_span(span(dict(attrs))) for _ in range(3)]
    assert results[0] == results[1] == results[2]
    assert results[0]["input_messages"] == _expected_json(inputs, "user", system)
    if outputs is not None:
        assert results[0]["output_messages"] == _expected_json(outputs, "assistant")
        expected_reasons = [m["finish_reason"] for m in otel_messages(outputs, "assistant") if "finish_reason" in m]
        assert results[0]["finish_reason"] == (",".join(expected_reasons) or None)
    return results[0]


_CANONICAL = (
    '[{"role":"user","parts":[{"type":"text","content":"héllo \\"quoted\\": a\\\\b\\n\\tc"}]},'
    '{"role":"assistant","parts":[{"type":"tool_call","id":"c1","name":"f","arguments":{"q":"x y","n":[1,2.5,-3,'
    'true,null,{}],"e":[]}}],"name":"bot"},'
    '{"role":"tool","parts":[{"type":"tool_call_response","id":"c1","response":{"items":[{"score":0.125}]}}]},'
    '{"role":"assistant","parts":[{"type":"reasoning","content":"hmm"},{"type":"server_tool_call","x":1}],'
    '"finish_reason":"stop"}]'
)


def test_a_canonical_text_is_kept_as_sent() -> None:
    result = _check_messages(_CANONICAL, _CANONICAL, system='[{"type":"text","content":"be brief"}]')
    system = '{"role":"system","parts":[{"type":"text","content":"be brief"}]}'
    assert result["input_messages"] == "[" + system + "," + _CANONICAL[1:]
    assert result["output_messages"] == _CANONICAL
    assert result["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "text",
    [
        '[{"role": "user", "parts": [{"type": "text", "content": "spaced separators"}]}]',
        '[{"role":"user","parts":[{"type":"text","content":"a"}] }]',
        '[{"role":"user","parts":[{"type":"text","content":"a"}]}]  ',
        '[{"role":"user","parts":[{"type":"text","content":"a"}]}\n]',
        '[{"role":"user","parts":[{"type":"text","content":"a","content":"b"}]}]',
        '[{"role":"user","parts":[{"type":"tool_call","arguments":{"x":1,"y":2,"x":3}}]}]',
        '[{"role":"user","parts":[{"type":"tool_call","arguments":{"a b":1,"a~b":2}}]}]',
        '[{"role":"user","parts":[{"type":"text","content":"caf\\u00e9"}]}]',
        '[{"role":"user","parts":[{"type":"text","content":"a\\/b"}]}]',
        '[{"role":"user","parts":[{"type":"text","content":"x\\u001Fy"}]}]',
        '[{"role":"user","parts":[{"type":"x","n":1.50}]}]',
        '[{"role":"user","parts":[{"type":"x","n":1e5}]}]',
        '[{"role":"user","parts":[{"type":"x","n":1E-7}]}]',
        '[{"role":"user","parts":[{"type":"x","n":0.00001}]}]',
        '[{"role":"user","parts":[{"type":"x","n":1e400}]}]',
        '[{"role":"user","parts":[{"type":"x","n":-0}]}]',
        '[{"role":"user","parts":[{"type":"x","n":-0.0,"m":NaN,"k":-Infinity}]}]',
        '[{"role":"user","parts":[{"type":"x","n":' + "9" * 5000 + "}]}]",
        '[{"role":"user","parts":[{"type":"x","k\\\\":1}]}]',
        '[{"role":"user","parts":[{"type":"text","content":"say \\":\\" twice"}]}]',
        '[{"role":"user","parts":[{"type":"tool_call","arguments":"{\\"a\\":1}"}]}]',
        '[{"role":"user","parts":[{"type":"tool_call","arguments":"plain text"}]}]',
        '[{"role":"user","parts":[{"type":"input_text","text":"rebuilt"}]}]',
        '[{"role":"user","parts":[{"type":"text","text":"no content key"}]}]',
        '[{"role":"user","parts":["bare string part"]}]',
        '[{"role":"user","parts":[{"type":5}]}]',
        '[{"role":"user","parts":[{"type":"x"}],"name":""}]',
        '[{"role":"user","parts":[{"type":"x"}],"finish_reason":5}]',
        '[{"role":"user","parts":[{"type":"x"}],"extra":1}]',
        '[{"role":"user","parts":[{"type":"x"}],"finish_reason":"stop","name":"n"}]',
        '[{"role":"","parts":[{"type":"x"}]}]',
        '[{"role":7,"parts":[{"type":"x"}]}]',
        '[{"role":"user","parts":{"type":"x"}}]',
        '[{"role":"user","parts":[{"type":"x","nested":[{"role":"user","parts":[]},{"role":"tool"}]}]}]',
        '[{"role":"user","parts":[{"type":"x"}]},{"role":"tool","parts":[{"type":"x"}]},{"role":"user"]',
        '[{"role":"user","parts":[{"type":"x"}]}],{"role":"user","parts":[]}]',
        '[{"role":"user","parts":[{"type":"x","deep":' + "[" * 300 + "]" * 300 + "}]}]",
        '[{"role":"user","parts":[{"type":"x","deep":' + "[" * 150 + "]" * 150 + "}]}]",
        '[{"role":"user","content":"OpenAI shape"}]',
        "[]",
        "",
    ],
)
def test_near_canonical_texts_match_the_plain_rule(text: str) -> None:
    _check_messages(text, text)


def test_memoised_messages_in_other_company() -> None:
    first = '{"role":"user","parts":[{"type":"text","content":"q"}]}'
    reply = '{"role":"assistant","parts":[{"type":"tool_call","id":"c","name":"f","arguments":{"a":1}}]'
    tool = '{"role":"tool","parts":[{"type":"tool_call_response","id":"c","response":"r"}]}'
    clear_memos()
    chat1 = span(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.input.messages": f"[{first}]",
            "gen_ai.output.messages": f'[{reply},"finish_reason":"tool_calls"}}]',
        }
    )
    assert normalise_span(chat1)["output_messages"] == f'[{reply},"finish_reason":"tool_calls"}}]'
    # the next call sends the reply back without its finish reason (memoised from the output above), a tool
    # result, and a message that is not canonical alone: the text is converted whole
    for inputs in (
        f"[{first},{reply}}},{tool}]",
        f"[{tool},{first}]",
        f'[{first},{reply}}},{{"role":"user","parts":[{{"type":"text","content":"x","content":"y"}}]}}]',
        f"[{first},{first}]",
    ):
        result = normalise_span(span({"gen_ai.operation.name": "chat", "gen_ai.input.messages": inputs}))
        assert result["input_messages"] == _expected_json(inputs, "user"), inputs


_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.sampled_from('ab ~:,"\\{}[]é\n\t\u2028'), max_size=8),
)
_json_value = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(alphabet=st.sampled_from("ab ~:\""), max_size=3), inner, max_size=3),
    ),
    max_leaves=8,
)
_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "content": _json_leaf.filter(lambda v: isinstance(v, str))}),
    st.fixed_dictionaries(
        {"type": st.just("tool_call"), "id": st.text(max_size=3), "name": st.just("f"), "arguments": _json_value}
    ),
    st.fixed_dictionaries({"type": st.just("tool_call_response"), "id": st.just("c"), "response": _json_value}),
    st.fixed_dictionaries({"type": st.sampled_from(["server_tool_call", "x y"])}, optional={"v": _json_value}),
    st.dictionaries(st.sampled_from(["type", "content", "text", "x"]), _json_value, max_size=3),
)
_message = st.fixed_dictionaries(  # mostly canonical, so that both paths are taken
    {"role": st.sampled_from(["user", "assistant", "tool", "user", "a b", ""]), "parts": st.lists(_part, max_size=3)},
    optional={
        "name": st.sampled_from(["bot", "bot", ""]),
        "finish_reason": st.sampled_from(["stop", "tool_calls", "a b", ""]),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    conversation=st.lists(_message, min_size=1, max_size=5),
    ascii_only=st.sampled_from([False, False, True]),
    spaced=st.sampled_from([False, False, True]),
)
def test_message_texts_match_the_plain_rule(conversation: list[Message], ascii_only: bool, spaced: bool) -> None:
    separators = (", ", ": ") if spaced else (",", ":")
    clear_memos()
    for end in range(1, len(conversation) + 1):  # a growing history, as an agent sends it: exercises the memo
        inputs = json.dumps(conversation[:end], ensure_ascii=ascii_only, separators=separators)
        outputs = json.dumps(conversation[end - 1 : end], ensure_ascii=ascii_only, separators=separators)
        result = normalise_span(
            span({"gen_ai.operation.name": "chat", "gen_ai.input.messages": inputs, "gen_ai.output.messages": outputs})
        )
        assert result["input_messages"] == _expected_json(inputs, "user")
        assert result["output_messages"] == _expected_json(outputs, "assistant")


def test_plans_follow_the_keys_not_the_first_span() -> None:
    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "a", "gen_ai.tool.call.id": "1"}
    first = normalise_span(span(dict(tool), "execute_tool a"))
    second = normalise_span(span({**tool, "gen_ai.tool.name": "b", "gen_ai.tool.call.id": 2}, "execute_tool b"))
    assert (first["tool_name"], first["tool_call_id"]) == ("a", "1")
    assert (second["tool_name"], second["tool_call_id"]) == ("b", "2")
    # same keys, other order: its own plan, the same answer
    reordered = normalise_span(span(dict(reversed(list(tool.items()))), "execute_tool a"))
    assert reordered == first
    # several keys of one list: priority order, whatever the attribute order
    spellings = {"llm.token_count.prompt": 5, "gen_ai.usage.input_tokens": "x", "gen_ai.usage.prompt_tokens": 7}
    providers = {"llm.provider": "anthropic", "gen_ai.system": "x", "gen_ai.provider.name": "openai"}
    result = normalise_span(span({**spellings, **providers}))
    assert (result["input_tokens"], result["provider"]) == (7, "openai")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    conversation=st.lists(_message, min_size=1, max_size=4),
    position=st.floats(min_value=0, max_value=1),
    insert=st.sampled_from([" ", "\n", "~", ",", '"', "\\", "0", "1e1", '"role":"user",', '"type":"x",']),
)
def test_near_miss_texts_match_the_plain_rule(conversation: list[Message], position: float, insert: str) -> None:
    # a canonical text with one insertion anywhere (inside a string it may still be canonical; elsewhere it is
    # whitespace, a duplicate key, another number or invalid JSON)
    text = json.dumps(conversation, ensure_ascii=False, separators=(",", ":"))
    at = int(position * len(text))
    mutated = text[:at] + insert + text[at:]
    for inputs in (text, mutated):
        _check_messages(inputs, inputs)
