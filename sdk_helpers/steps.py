"""Spans for the steps of an agent: a run, a model call, a tool call, a guardrail check, a human approval.

Each is a context manager that opens a span named and attributed the OTel GenAI way (current spelling), so
any GenAI-aware backend reads them, and yields a small handle to record what happened. An exception leaving
the block marks the span failed with `error.type` and an `exception` event, and is re-raised.

>>> from sdk_helpers import agent_run, llm_call, tool_call
>>> question = [{"role": "user", "content": "Trip to Rome?"}]
>>> with agent_run("travel-planner"):
...     with llm_call("gpt-4o-mini", provider="openai", messages=question) as call:
...         call.record(output="Let me search.", input_tokens=12, output_tokens=4, finish_reason="tool_calls")
...     with tool_call("search_flights", arguments={"to": "FCO"}) as tool:
...         tool.record({"flights": 3})
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from sdk_helpers import conventions as c

TRACER_NAME = "agentflight.sdk_helpers"
_provider: trace.TracerProvider | None = None  # set by configure(); else the global provider


def use_provider(provider: trace.TracerProvider | None) -> None:
    global _provider
    _provider = provider


def _tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME, tracer_provider=_provider)


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def to_parts(messages: Sequence[Mapping[str, Any]] | str) -> list[dict[str, Any]]:
    """Chat messages (OpenAI style `{"role", "content", "tool_calls"}` or already in parts form) as OTel
    GenAI messages `[{"role", "parts": [...]}]`."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    out = []
    for message in messages:
        if "parts" in message:
            out.append(dict(message))
            continue
        parts: list[dict[str, Any]] = []
        content = message.get("content")
        if isinstance(content, str) and content:
            parts.append({"type": "text", "content": content})
        for call in message.get("tool_calls") or []:
            function = call.get("function", call)
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                with suppress(ValueError):
                    arguments = json.loads(arguments)
            parts.append(
                {"type": "tool_call", "id": call.get("id"), "name": function.get("name"), "arguments": arguments}
            )
        if message.get("role") == "tool":
            parts = [{"type": "tool_call_response", "id": message.get("tool_call_id"), "response": content}]
        out.append({"role": message.get("role", "user"), "parts": parts})
    return out


@contextmanager
def _step(name: str, kind: SpanKind, attributes: dict[str, Any]) -> Iterator[Span]:
    clean = {k: v for k, v in attributes.items() if v is not None}
    with _tracer().start_as_current_span(
        name, kind=kind, attributes=clean, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except BaseException as exc:
            span.record_exception(exc)
            span.set_attribute(c.ERROR_TYPE, type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, str(exc)[:1000]))
            raise


@contextmanager
def agent_run(name: str, *, agent_id: str | None = None, conversation_id: str | None = None) -> Iterator[Span]:
    """The whole run of an agent (`invoke_agent <name>`): everything it does nests under it."""
    with _step(
        f"invoke_agent {name}",
        SpanKind.INTERNAL,
        {c.OPERATION: "invoke_agent", c.AGENT_NAME: name, c.AGENT_ID: agent_id, c.CONVERSATION_ID: conversation_id},
    ) as span:
        yield span


class LlmCall:
    """Handle of a model call: `record` what came back."""

    def __init__(self, span: Span) -> None:
        self.span = span

    def record(
        self,
        *,
        output: str | Sequence[Mapping[str, Any]] | None = None,
        response_model: str | None = None,
        response_id: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_read_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        finish_reason: str | None = None,
    ) -> None:
        values = {
            c.RESPONSE_MODEL: response_model,
            c.RESPONSE_ID: response_id,
            c.INPUT_TOKENS: input_tokens,
            c.OUTPUT_TOKENS: output_tokens,
            c.CACHE_READ_TOKENS: cache_read_tokens,
            c.CACHE_WRITE_TOKENS: cache_write_tokens,
            c.REASONING_TOKENS: reasoning_tokens,
            c.FINISH_REASONS: [finish_reason] if finish_reason else None,
        }
        if output is not None:
            messages = [{"role": "assistant", "content": output}] if isinstance(output, str) else output
            parts = to_parts(messages)
            if finish_reason:
                for message in parts:
                    message.setdefault("finish_reason", finish_reason)
            values[c.OUTPUT_MESSAGES] = _json(parts)
        for key, value in values.items():
            if value is not None:
                self.span.set_attribute(key, value)


@contextmanager
def llm_call(
    model: str,
    *,
    provider: str | None = None,
    messages: Sequence[Mapping[str, Any]] | str | None = None,
    system: str | None = None,
    operation: str = "chat",
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> Iterator[LlmCall]:
    """A call to a model (`chat <model>`, a CLIENT span). Skip it when an instrumentation (openai-v2,
    OpenInference) already makes the span for your client library: two spans for one call are fine for
    agentflight (it counts usage once) but noise in the tree."""
    with _step(
        f"{operation} {model}",
        SpanKind.CLIENT,
        {
            c.OPERATION: operation,
            c.PROVIDER: provider,
            c.REQUEST_MODEL: model,
            c.REQUEST_TEMPERATURE: temperature,
            c.REQUEST_MAX_TOKENS: max_tokens,
            c.INPUT_MESSAGES: _json(to_parts(messages)) if messages is not None else None,
            c.SYSTEM_INSTRUCTIONS: _json([{"type": "text", "content": system}]) if system else None,
        },
    ) as span:
        yield LlmCall(span)


class ToolCall:
    def __init__(self, span: Span) -> None:
        self.span = span

    def record(self, result: Any) -> None:
        """What the tool returned (JSON-serialised unless it is text)."""
        self.span.set_attribute(c.TOOL_RESULT, _json(result))


@contextmanager
def tool_call(
    name: str, *, arguments: Any = None, call_id: str | None = None, tool_type: str = "function"
) -> Iterator[ToolCall]:
    """A tool execution (`execute_tool <name>`) with its arguments; `record` its result."""
    with _step(
        f"execute_tool {name}",
        SpanKind.INTERNAL,
        {
            c.OPERATION: "execute_tool",
            c.TOOL_NAME: name,
            c.TOOL_TYPE: tool_type,
            c.TOOL_CALL_ID: call_id,
            c.TOOL_ARGUMENTS: _json(arguments) if arguments is not None else None,
        },
    ) as span:
        yield ToolCall(span)


class GuardrailCheck:
    def __init__(self, span: Span, source: str) -> None:
        self.span = span
        self.source = source

    def record(
        self,
        action: str,
        *,
        reason: str | None = None,
        risk_category: str | None = None,
        risk_score: float | None = None,
        output: str | None = None,
    ) -> None:
        """The verdict: `allow`, `block`, `redact` or `warn` (what the guardrail did), and why."""
        values = {
            c.GUARDRAIL_RESULT_TYPE: "action",
            c.GUARDRAIL_RESULT_VALUE: action,
            c.GUARDRAIL_REASON: reason,
            c.GUARDRAIL_RISK_CATEGORY: risk_category,
            c.GUARDRAIL_RISK_SCORE: risk_score,
            c.GUARDRAIL_OUTPUT: output,
        }
        for key, value in values.items():
            if value is not None:
                self.span.set_attribute(key, value)


@contextmanager
def guardrail_check(
    name: str, *, source: str = "INPUT", content: str | None = None, policy_id: str | None = None
) -> Iterator[GuardrailCheck]:
    """A guardrail looking at input (`source="INPUT"`) or output (`"OUTPUT"`) content (`apply_guardrail <name>`)."""
    with _step(
        f"apply_guardrail {name}",
        SpanKind.INTERNAL,
        {
            c.OPERATION: "apply_guardrail",
            c.GUARDRAIL_NAME: name,
            c.GUARDRAIL_SOURCE: source,
            c.GUARDRAIL_POLICY: policy_id,
            c.GUARDRAIL_INPUT: content,
        },
    ) as span:
        yield GuardrailCheck(span, source)


class Approval:
    def __init__(self, span: Span) -> None:
        self.span = span

    def record(self, decision: str, *, approver: str | None = None) -> None:
        """`approved` or `rejected`, and by whom."""
        self.span.set_attribute(c.APPROVAL_DECISION, decision)
        if approver is not None:
            self.span.set_attribute(c.APPROVAL_APPROVER, approver)


@contextmanager
def human_approval(action: str) -> Iterator[Approval]:
    """A person approving an irreversible action (`human_approval <action>`) before the agent takes it."""
    with _step(f"human_approval {action}", SpanKind.INTERNAL, {c.APPROVAL_ACTION: action}) as span:
        yield Approval(span)


def mark_retry(
    attempt: int, *, max_attempts: int | None = None, cause: str | None = None, span: Span | None = None
) -> None:
    """Says the current span is attempt number `attempt` (1 is the first try) of something retried."""
    target = span or trace.get_current_span()
    target.set_attribute(c.RETRY_ATTEMPT, attempt)
    if max_attempts is not None:
        target.set_attribute(c.RETRY_MAX_ATTEMPTS, max_attempts)
    if cause is not None:
        target.set_attribute(c.RETRY_CAUSE, cause)


def declare_budget(
    *,
    tokens: int | None = None,
    cost_usd: float | None = None,
    steps: int | None = None,
    tool_calls: int | None = None,
    duration_ms: float | None = None,
    span: Span | None = None,
) -> None:
    """Declares this request's budget on the current span (usually the agent run); agentflight warns at 80 %
    and flags a breach at 100 %, pointing at the span where the line was crossed.

    >>> from sdk_helpers import agent_run, declare_budget
    >>> with agent_run("support-bot"):
    ...     declare_budget(cost_usd=0.05, tool_calls=10)
    """
    target = span or trace.get_current_span()
    limits = {
        "tokens": tokens,
        "cost_usd": cost_usd,
        "steps": steps,
        "tool_calls": tool_calls,
        "duration_ms": duration_ms,
    }
    for metric, limit in limits.items():
        if limit is not None:
            if limit <= 0:
                raise ValueError(f"declare_budget: {metric} must be positive, got {limit!r}")
            target.set_attribute(c.BUDGET_PREFIX + metric, limit)


def set_prompt(name: str, version: str | int | None = None, *, span: Span | None = None) -> None:
    """Names the prompt template (and version) behind the current step, for cost and quality by prompt version."""
    target = span or trace.get_current_span()
    target.set_attribute(c.PROMPT_NAME, name)
    if version is not None:
        target.set_attribute(c.PROMPT_VERSION, str(version))
