"""The detectors end to end: traces built with the real OTel SDK, sent over OTLP/gRPC to the real collector,
findings read back from the query API (`GET /traces/{id}`, `/findings`, `/findings/counts`, `/traces?flag=`).

For every detector (docs/design.md "Detectors (flags)", docs/conventions.md §1b and §3) there is a positive trace,
near misses that must not fire, and a trace whose verdict a LATE span changes: everything else is stored and read first,
then the late span arrives and the next read shows the finding appear or change. The captured fixtures
(tests/data/otlp/captured) must produce what their content implies and no false loop or retry.

Findings are frozen in tests/data/golden/findings_*.json with random ids replaced by scenario names and
times by milliseconds from the trace's start. Regenerate (then REVIEW the diff) with:
    AGENTFLIGHT_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_detectors_e2e.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.service import Collector
from sdk_helpers import declare_budget, mark_retry
from tests.conftest import CAPTURED, ApiServer, grpc_export, query, query_dicts, start_api, start_collector
from tests.detector_traces import MODEL, SECOND, Recorder, Trace, agent, llm, messages, raised, tool

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden"
UPDATE_GOLDEN = os.environ.get("AGENTFLIGHT_UPDATE_GOLDEN") == "1"
CHAT = f"chat {MODEL}"
SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}
HOUR_NS = 3600 * 1_000_000_000
# The scenarios start on a whole hour an hour or two ago and last minutes: one UTC day, one date partition.
BASE_NS = (time.time_ns() // HOUR_NS - 1) * HOUR_NS

# Trace budgets for every trace of the project, a session budget and a user-day budget (config.py). The
# scenarios of the other detectors stay far below them and name no user or session.
DETECTOR_CONFIG = """\
[budgets.trace]
tokens = 10000
cost_usd = 1.0

[budgets.session]
tokens = 5000

[budgets.user_day]
cost_usd = 0.5
"""


# --- scenarios -------------------------------------------------------------------------------------------


def _root(t: Trace, end: float = 10.0, extra: dict[str, Any] | None = None) -> None:
    t.span("root", "invoke_agent researcher", 0, end, agent("researcher") | (extra or {}))


def loop_scenarios(rec: Recorder) -> None:
    # Positive: the same search three times (arguments differ only in key order and spacing), a model call
    # before each; the calls that asked for repeats 2 and 3 are the waste.
    t = rec.trace("loop_tool_repeat")
    _root(t)
    for i, arguments in enumerate(
        [
            '{"query": "weather paris", "limit": 3}',
            '{"limit":3,"query":"weather paris"}',
            '{ "query":"weather paris","limit":3 }',
        ]
    ):
        t.span(f"llm{i + 1}", CHAT, 1 + 2 * i, 1.5 + 2 * i, llm(100 + 20 * i, 10, 0.001 * (i + 1)))
        t.span(f"search{i + 1}", "execute_tool search", 1.6 + 2 * i, 1.8 + 2 * i, tool("search", arguments))
    t.span("llm4", CHAT, 8, 8.5, llm(200, 40, 0.004))
    # Near miss: the same search twice only.
    t = rec.trace("loop_tool_twice")
    _root(t)
    for i in range(2):
        t.span(f"llm{i + 1}", CHAT, 1 + 2 * i, 1.5 + 2 * i, llm(100, 10, 0.001))
        t.span(f"search{i + 1}", "execute_tool search", 1.6 + 2 * i, 1.8 + 2 * i, tool("search", {"query": "q"}))
    # Near miss: the same tool three times with different arguments.
    t = rec.trace("loop_tool_other_args")
    _root(t)
    for i in range(3):
        t.span(f"llm{i + 1}", CHAT, 1 + 2 * i, 1.5 + 2 * i, llm(100, 10, 0.001))
        t.span(f"search{i + 1}", "execute_tool search", 1.6 + 2 * i, 1.8 + 2 * i, tool("search", {"query": f"q{i}"}))
    # Positive: the same model input three times (the agent resent the conversation unchanged).
    t = rec.trace("loop_model_input")
    _root(t)
    for i in range(3):
        same = llm(300, 30, 0.003) | {"gen_ai.input.messages": messages("summarise the report")}
        t.span(f"llm{i + 1}", CHAT, 1 + 2 * i, 2 + 2 * i, same)
    # Near miss: two identical inputs and a third that differs.
    t = rec.trace("loop_model_input_near")
    _root(t)
    for i, text in enumerate(["summarise the report", "summarise the report", "summarise the appendix"]):
        t.span(
            f"llm{i + 1}", CHAT, 1 + 2 * i, 2 + 2 * i, llm(300, 30, 0.003) | {"gen_ai.input.messages": messages(text)}
        )
    # Positive: plan -> act three times over (different arguments each turn, so no repeated call).
    t = rec.trace("loop_cycle")
    _root(t, end=15)
    for i in range(3):
        t.span(f"llm{i + 1}", CHAT, 1 + 4 * i, 1.5 + 4 * i, llm(100, 10, 0.001))
        t.span(f"plan{i + 1}", "execute_tool plan", 2 + 4 * i, 2.5 + 4 * i, tool("plan", {"step": i}))
        t.span(f"act{i + 1}", "execute_tool act", 3 + 4 * i, 3.5 + 4 * i, tool("act", {"step": i}))
    # Near miss: the cycle twice, then the answer.
    t = rec.trace("loop_cycle_twice")
    _root(t, end=15)
    for i in range(2):
        t.span(f"llm{i + 1}", CHAT, 1 + 4 * i, 1.5 + 4 * i, llm(100, 10, 0.001))
        t.span(f"plan{i + 1}", "execute_tool plan", 2 + 4 * i, 2.5 + 4 * i, tool("plan", {"step": i}))
        t.span(f"act{i + 1}", "execute_tool act", 3 + 4 * i, 3.5 + 4 * i, tool("act", {"step": i}))
    t.span("answer", "execute_tool answer", 10, 10.5, tool("answer", {"text": "done"}))
    # Late: two identical lookups are read first; a third, identical, arrives late and makes it a loop.
    t = rec.trace("loop_late")
    _root(t)
    for i in range(3):
        t.span(f"llm{i + 1}", CHAT, 1 + 2 * i, 1.5 + 2 * i, llm(100, 10, 0.001))
        t.span(
            f"lookup{i + 1}", "execute_tool lookup", 1.6 + 2 * i, 1.8 + 2 * i, tool("lookup", {"id": 7}), late=i == 2
        )


def _call(t: Trace, key: str, start: float, end: float, failure: tuple[int, str, str] | None = None, **kw: Any) -> None:
    """A model call of the default model: 200 + 20 tokens, or failed with (HTTP status, error type, message)."""
    if failure is None:
        t.span(key, CHAT, start, end, llm(200, 20, 0.002), **kw)
        return
    status, kind, text = failure
    attrs = llm(0, 0, 0.0) | {"error.type": kind, "http.response.status_code": status}
    t.span(key, CHAT, start, end, attrs, error=f"Error code: {status} - {text}", **kw)


RATE_LIMITED = (429, "RateLimitError", "Rate limit reached for acme-chat in organization org-1 on requests per min")
UNAVAILABLE = (503, "InternalServerError", "The server is overloaded or not ready yet.")
UNAUTHORISED = (401, "AuthenticationError", "Incorrect API key provided: sk-***")
SERVER_ERROR = (500, "InternalServerError", "The server had an error while processing your request.")


def retry_scenarios(rec: Recorder) -> None:
    # Late: a rate-limited call and a retry that failed again (exhausted); the third attempt, late, recovers.
    t = rec.trace("retry_late_recovered")
    _root(t)
    _call(t, "attempt1", 1.0, 1.2, RATE_LIMITED)
    _call(t, "attempt2", 2.2, 2.4, UNAVAILABLE)
    _call(t, "attempt3", 4.4, 5.0, late=True)
    # Positive: a 401 retried (no retry can fix it), failing again.
    t = rec.trace("retry_non_retryable")
    _root(t)
    _call(t, "attempt1", 1.0, 1.1, UNAUTHORISED)
    _call(t, "attempt2", 1.6, 1.7, UNAUTHORISED)
    # Positive: a 500 retried 10 ms later (no backoff), recovered.
    t = rec.trace("retry_no_backoff")
    _root(t)
    _call(t, "attempt1", 1.0, 1.2, SERVER_ERROR)
    _call(t, "attempt2", 1.21, 1.8)
    # Near miss: the first call succeeded; the later one of the same model failed: an error, not a retry.
    t = rec.trace("retry_first_ok")
    _root(t)
    _call(t, "call1", 1.0, 1.5)
    _call(t, "call2", 2.0, 2.1, SERVER_ERROR)
    # Near miss: the same model called twice, both fine.
    t = rec.trace("retry_both_ok")
    _root(t)
    _call(t, "call1", 1.0, 1.5)
    _call(t, "call2", 2.0, 2.5)
    # HTTP client spans: one span for the request that was sent three times (resend_count 2).
    t = rec.trace("retry_http_resend")
    _root(t)
    http = {
        "http.request.method": "POST",
        "url.full": "https://api.acme.example/v1/chat",
        "server.address": "api.acme.example",
    }
    t.span("post", "POST", 1.0, 3.0, {**http, "http.request.resend_count": 2, "http.response.status_code": 200})
    # HTTP client spans, one per attempt as OTel HTTP instrumentations make them: a 429, then the resend.
    t = rec.trace("retry_http_pair")
    _root(t)
    t.span("post1", "POST", 1.0, 1.1, {**http, "http.response.status_code": 429, "error.type": "429"}, error="")
    t.span("post2", "POST", 2.1, 2.5, {**http, "http.request.resend_count": 1, "http.response.status_code": 200})
    # Pydantic AI: the tool asked the model to fix its arguments (ModelRetry), the model called it again.
    t = rec.trace("retry_pydantic_tool")
    _root(t)
    retry_attrs = {
        "pydantic_ai.tool.retry.cause": "model_retry",
        "pydantic_ai.tool.retry.attempt": 1,
        "pydantic_ai.tool.retry.max_retries": 3,
        "logfire.level_num": 17,
    }
    asked = "x must be positive\n\nFix the errors and try again."
    t.span("llm1", CHAT, 0.5, 0.9, llm(100, 10, 0.001))
    t.span(
        "add1",
        "execute_tool add_numbers",
        1.0,
        1.1,
        tool("add_numbers", {"x": -1, "y": 2}, asked, **retry_attrs),
        error="ModelRetry",
    )
    t.span("llm2", CHAT, 1.2, 1.6, llm(120, 10, 0.001))
    t.span("add2", "execute_tool add_numbers", 1.7, 1.8, tool("add_numbers", {"x": 1, "y": 2}, "3"))
    # Pydantic AI output validation retried until the limit: only the framework's attributes say so.
    t = rec.trace("retry_pydantic_output")
    output_attrs = agent("researcher") | {
        "pydantic_ai.output.retry.cause": "validation",
        "pydantic_ai.output.retry.attempt": 2,
        "pydantic_ai.output.retry.max_retries": 2,
    }
    t.span(
        "root",
        "invoke_agent researcher",
        0,
        3,
        output_attrs,
        error="UnexpectedModelBehavior: Exceeded maximum retries (2) for output validation",
    )
    # The SDK helper (sdk_helpers.mark_retry): attempt 1 is the first try, not a retry; attempt 3 of 3 that
    # failed is an exhausted retry.
    t = rec.trace("retry_sdk_marked")
    _root(t)
    fetch = tool("fetch_docs", {"url": "https://docs.example/a"})
    t.span("first", "execute_tool fetch_docs", 1.0, 1.5, fetch, setup=lambda s: mark_retry(1, max_attempts=3, span=s))
    fetch_b = tool("fetch_docs", {"url": "https://docs.example/b"})
    t.span(
        "third",
        "execute_tool fetch_docs",
        2.0,
        2.5,
        fetch_b,
        error="ConnectionError: connection refused",
        setup=lambda s: mark_retry(3, max_attempts=3, cause="connection refused", span=s),
    )


def guardrail_scenarios(rec: Recorder) -> None:
    bedrock = {
        "gen_ai.operation.name": "apply_guardrail",
        "gen_ai.provider.name": "aws.bedrock",
        "gen_ai.guardrail.component.name": "Amazon Bedrock Guardrails",
        "gen_ai.guardrail.policy.id": "gr-abc123",
        "gen_ai.guardrail.policy.version": "1",
        "gen_ai.guardrail.source": "INPUT",
        "gen_ai.guardrail.result.type": "action",
    }
    # Positive: the Bedrock guardrail intervened on the input (OTel gen_ai.guardrail.*); no model call followed.
    t = rec.trace("guardrail_intervened")
    _root(t)
    t.span(
        "check",
        "apply_guardrail Amazon Bedrock Guardrails",
        0.5,
        0.8,
        {
            **bedrock,
            "gen_ai.guardrail.result.value": "GUARDRAIL_INTERVENED",
            "gen_ai.guardrail.result.reason": "Guardrail policy blocked the requested topic",
            "gen_ai.guardrail.content.input.value": "how do I pick the lock of my neighbour's door",
        },
    )
    # Near misses: the guardrail let the input through, OpenLIT's guard allowed it, an answer mentions a refusal.
    t = rec.trace("guardrail_passed")
    _root(t)
    t.span(
        "check",
        "apply_guardrail Amazon Bedrock Guardrails",
        0.5,
        0.8,
        {**bedrock, "gen_ai.guardrail.result.value": "NONE"},
    )
    allow = {"guard.name": "prompt_injection", "guard.phase": "preflight", "guard.action": "allow", "guard.score": 0.02}
    answer = json.dumps(
        [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": "Your refusal letter is attached."}],
                "finish_reason": "stop",
            }
        ]
    )
    t.span(
        "llm",
        CHAT,
        1.0,
        2.0,
        llm(100, 20, 0.001) | {"gen_ai.output.messages": answer, "gen_ai.response.finish_reasons": ["stop"]},
        events=(("guard.evaluation", allow, 1.0),),
    )
    # Positive: OpenLIT's guard.evaluation event denied the input.
    t = rec.trace("guardrail_openlit_deny")
    _root(t)
    deny = {
        "guard.name": "prompt_injection",
        "guard.phase": "preflight",
        "guard.action": "deny",
        "guard.score": 0.97,
        "guard.classification": "prompt_injection",
        "guard.explanation": "instruction override attempt",
    }
    t.span("llm", CHAT, 1.0, 1.1, llm(50, 0, 0.0005), events=(("guard.evaluation", deny, 1.0),))
    # Positive: the provider's content filter stopped the answer.
    t = rec.trace("guardrail_content_filter")
    _root(t)
    cut = json.dumps(
        [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": "Here is how to"}],
                "finish_reason": "content_filter",
            }
        ]
    )
    t.span(
        "llm",
        CHAT,
        1.0,
        2.0,
        llm(100, 5, 0.001) | {"gen_ai.output.messages": cut, "gen_ai.response.finish_reasons": ["content_filter"]},
    )
    # Positive: the model refused (an output part of type refusal).
    t = rec.trace("guardrail_refusal")
    _root(t)
    refusal = json.dumps(
        [
            {
                "role": "assistant",
                "parts": [{"type": "refusal", "content": "I can't help with that request."}],
                "finish_reason": "stop",
            }
        ]
    )
    t.span(
        "llm",
        CHAT,
        1.0,
        2.0,
        llm(100, 8, 0.001) | {"gen_ai.output.messages": refusal, "gen_ai.response.finish_reasons": ["stop"]},
    )
    # Late: the answer is read first; the output guardrail that blocked it arrives late.
    t = rec.trace("guardrail_late")
    _root(t)
    t.span("llm", CHAT, 1.0, 2.0, llm(100, 40, 0.001))
    t.span(
        "check",
        "apply_guardrail output-moderation",
        2.1,
        2.3,
        {
            **bedrock,
            "gen_ai.guardrail.component.name": "output-moderation",
            "gen_ai.guardrail.source": "OUTPUT",
            "gen_ai.guardrail.result.value": "GUARDRAIL_INTERVENED",
            "gen_ai.guardrail.content.output.value": "the customer's card number is 4111 1111 1111 1111",
            "gen_ai.guardrail.risk.category": "pii",
        },
        late=True,
    )


class InputGuardrailTripwireTriggered(Exception):
    """What the OpenAI Agents SDK raises when an input guardrail trips."""


InputGuardrailTripwireTriggered.__module__ = "agents.exceptions"


def error_scenarios(rec: Recorder) -> None:
    # Positive: one failure of each class, each a different model or tool (so none is a retry of another).
    t = rec.trace("errors_classified")
    _root(t)
    for i, (key, failure) in enumerate(
        [("rate_limited", RATE_LIMITED), ("unauthorised", UNAUTHORISED), ("unavailable", UNAVAILABLE)]
    ):
        status, kind, text = failure
        attrs = llm(0, 0, 0.0, model=f"acme-{key}") | {"error.type": kind, "http.response.status_code": status}
        t.span(key, f"chat acme-{key}", 1 + i, 1.5 + i, attrs, error=f"Error code: {status} - {text}")
    t.span(
        "timed_out",
        "chat acme-slow",
        4.0,
        4.6,
        llm(0, 0, 0.0, model="acme-slow") | {"error.type": "APITimeoutError"},
        exception=raised(TimeoutError("Request timed out.")),
    )
    bad = llm(0, 0, 0.0, model="acme-small") | {"error.type": "BadRequestError", "http.response.status_code": 400}
    t.span(
        "too_long",
        "chat acme-small",
        5.0,
        5.1,
        bad,
        error="Error code: 400 - This model's maximum context length is 8192 tokens",
    )
    t.span(
        "ship",
        "execute_tool ship_order",
        6.0,
        6.2,
        tool("ship_order", {"order": 42}),
        exception=raised(ValueError("carrier API returned an empty manifest")),
    )
    # A failure that propagates: the tool raised, the agent around it failed with the same exception: one finding.
    t = rec.trace("errors_propagated")
    boom = raised(RuntimeError("payment gateway rejected the charge"))
    t.span("root", "invoke_agent researcher", 0, 3, agent("researcher"), exception=boom)
    t.span("charge", "execute_tool charge_card", 1.0, 1.5, tool("charge_card", {"amount": 12}), exception=boom)
    # Two unrelated failures: a tool error the agent recovered from, and the agent's own failure later.
    t = rec.trace("errors_distinct")
    t.span("root", "invoke_agent researcher", 0, 5, agent("researcher"), error="task failed (reward 0)")
    t.span(
        "pay1",
        "execute_tool pay",
        1.0,
        1.1,
        tool("pay", {"method": "gift_card"}),
        error="Error: gift card balance is not enough",
    )
    t.span("llm", CHAT, 1.2, 1.8, llm(100, 10, 0.001))
    t.span("pay2", "execute_tool pay", 2.0, 2.1, tool("pay", {"method": "credit_card"}, "paid"))
    # Near misses: "error" in names and results of spans that did not fail; a guardrail tripwire (an outcome).
    t = rec.trace("errors_near_miss")
    _root(t)
    t.span("page", "render error page", 1.0, 1.1, {"http.response.status_code": 200})
    t.span(
        "codes",
        "execute_tool lookup_error_codes",
        1.2,
        1.3,
        tool("lookup_error_codes", {"code": "E42"}, "E42: timeout error"),
    )
    t.span(
        "triage",
        "invoke_agent triage",
        2.0,
        2.5,
        agent("triage"),
        exception=raised(InputGuardrailTripwireTriggered("Guardrail InputGuardrail triggered tripwire")),
    )
    # Late: the agent failed; the tool whose failure it was arrives late and becomes the finding.
    t = rec.trace("errors_late")
    sync = raised(RuntimeError("inventory sync failed"))
    t.span("root", "invoke_agent researcher", 0, 3, agent("researcher"), exception=sync)
    t.span(
        "sync",
        "execute_tool sync_inventory",
        1.0,
        2.0,
        tool("sync_inventory", {"warehouse": "north"}),
        exception=sync,
        late=True,
    )


def budget_scenarios(rec: Recorder) -> None:
    # Config trace budget of 10,000 tokens: 4,000 (40 %), 8,000 (warning), 11,000 (breach).
    t = rec.trace("budget_trace_breach")
    _root(t)
    for i, (inp, out) in enumerate([(3600, 400), (3600, 400), (2700, 300)]):
        t.span(f"llm{i + 1}", CHAT, 1 + 2 * i, 2 + 2 * i, llm(inp, out, 0.01))
    # Near miss: half the budget.
    t = rec.trace("budget_trace_half")
    _root(t)
    t.span("llm1", CHAT, 1, 2, llm(4500, 500, 0.01))
    # 85 % of it: a warning, no breach.
    t = rec.trace("budget_trace_warning")
    _root(t)
    t.span("llm1", CHAT, 1, 2, llm(4000, 500, 0.01))
    t.span("llm2", CHAT, 3, 4, llm(3500, 500, 0.01))
    # The agent declared its own budget (sdk_helpers.declare_budget): the stricter limit wins.
    t = rec.trace("budget_declared")
    t.span(
        "root",
        "invoke_agent researcher",
        0,
        10,
        agent("researcher"),
        setup=lambda s: declare_budget(cost_usd=0.05, steps=3, tokens=1000, tool_calls=4, span=s),
    )
    for i, cost in enumerate([0.015, 0.03, 0.02]):
        t.span(f"llm{i + 1}", CHAT, 1 + 2 * i, 2 + 2 * i, llm(250, 50, cost))
        if i < 2:
            t.span(f"tool{i + 1}", "execute_tool search", 2.1 + 2 * i, 2.5 + 2 * i, tool("search", {"query": f"q{i}"}))
    # Late: 7,000 tokens read first (70 %), then a late expensive call crosses the 10,000 line.
    t = rec.trace("budget_late")
    _root(t)
    t.span("llm1", CHAT, 1, 2, llm(6500, 500, 0.05))
    t.span("llm2", CHAT, 6, 7, llm(3800, 200, 0.2), late=True)
    # A session of two requests, each within its own budget, over the session's 5,000 tokens together.
    t = rec.trace("budget_session_1")
    _root(t, extra={"session.id": "sess-budget"})
    t.span("llm1", CHAT, 1, 2, llm(2700, 300, 0.01))
    t = rec.trace("budget_session_2")
    _root(t, extra={"session.id": "sess-budget"})
    t.span("llm1", CHAT, 1, 2, llm(900, 100, 0.01))
    t.span("llm2", CHAT, 3, 4, llm(1350, 150, 0.01))
    # Near miss: another session, 60 % of the budget.
    t = rec.trace("budget_session_small")
    _root(t, extra={"session.id": "sess-small"})
    t.span("llm1", CHAT, 1, 2, llm(2700, 300, 0.01))
    # One user's requests in a day: $0.30, then $0.15 (warning at $0.40) and $0.10 (breach of $0.50).
    t = rec.trace("budget_user_1")
    _root(t, extra={"user.id": "user-budget"})
    t.span("llm1", CHAT, 1, 2, llm(300, 30, 0.3))
    t = rec.trace("budget_user_2")
    _root(t, extra={"user.id": "user-budget"})
    t.span("llm1", CHAT, 1, 2, llm(300, 30, 0.15))
    t.span("llm2", CHAT, 3, 4, llm(300, 30, 0.1))
    # Near miss: another user, $0.20 in the day.
    t = rec.trace("budget_user_small")
    _root(t, extra={"user.id": "user-small"})
    t.span("llm1", CHAT, 1, 2, llm(300, 30, 0.2))


def scenarios(rec: Recorder) -> None:
    loop_scenarios(rec)
    retry_scenarios(rec)
    guardrail_scenarios(rec)
    error_scenarios(rec)
    budget_scenarios(rec)


# --- reading findings back ---------------------------------------------------------------------------------

_ID = re.compile(r"\b(?:[0-9a-f]{32}|[0-9a-f]{16})\b")


def _get(api: ApiServer, path: str, **params: Any) -> Any:
    with api.client() as client:
        response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def normalise(value: Any, names: dict[str, str], day: str) -> Any:
    """Ids to names, today's date to DAY, floats rounded: what a golden file can hold."""
    if isinstance(value, str):
        return _ID.sub(lambda m: names.get(m.group(0), m.group(0)), value).replace(day, "DAY")
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, list):
        return [normalise(v, names, day) for v in value]
    if isinstance(value, dict):
        return {k: normalise(v, names, day) for k, v in value.items()}
    return value


def _finding(f: dict[str, Any], t: Trace, names: dict[str, str], day: str) -> dict[str, Any]:
    out = {k: v for k, v in f.items() if k not in ("time", "start_time_unix_nano", "finding_id")}
    out["at_ms"] = (f["start_time_unix_nano"] - t.start_ns) / 1e6
    evidence = dict(out["evidence"])
    if evidence.get("stacktrace"):
        # Paths and line numbers of this file: keep the exception's last line, which the scenario decides.
        evidence["stacktrace"] = "… " + evidence["stacktrace"].strip().splitlines()[-1]
    out["evidence"] = evidence
    return normalise(out, names, day)


def snapshot(api: ApiServer, rec: Recorder) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Every scenario trace as the API shows it: (normalised for goldens, raw findings per trace)."""
    day = time.strftime("%Y-%m-%d", time.gmtime(rec.base_ns / 1e9))
    shown: dict[str, Any] = {}
    raw: dict[str, list[dict[str, Any]]] = {}
    for name, t in rec.traces.items():
        body = _get(api, f"/traces/{t.trace_id}")
        raw[name] = body["findings"]
        # Most severe first, then in time order (ties, e.g. two budgets crossed at one span, in any order).
        order = [(SEVERITY_RANK[f["severity"]], f["start_time_unix_nano"]) for f in body["findings"]]
        assert order == sorted(order), name
        findings = [_finding(f, t, rec.names, day) for f in body["findings"]]
        shown[name] = {
            "flags": body["trace"]["flags"],
            "span_flags": {rec.names[s["span_id"]].split(".", 1)[1]: s["flags"] for s in body["spans"] if s["flags"]},
            "findings": sorted(findings, key=lambda f: json.dumps(f, sort_keys=True)),
        }
    return shown, raw


@dataclasses.dataclass
class Stack:
    collector: Collector
    api: ApiServer
    rec: Recorder
    before: dict[str, Any]  # every trace as read before the late spans arrived (normalised)
    after: dict[str, Any]  # and after
    raw: dict[str, list[dict[str, Any]]]  # the findings of each trace after, as the API sent them


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("detectors") / "data"
    (data / "detectors").mkdir(parents=True)
    (data / "detectors" / "default.toml").write_text(DETECTOR_CONFIG)
    collector = start_collector(data)
    api = None
    try:
        rec = Recorder(collector.grpc_port, BASE_NS)
        scenarios(rec)
        collector.flush()
        held_back = len(rec.late)
        assert query(collector, "SELECT count(DISTINCT span_id) FROM spans")[0][0] == rec.span_count - held_back
        api = start_api(collector.settings)
        before, _ = snapshot(api, rec)
        assert rec.send_late() == held_back
        collector.flush()
        assert query(collector, "SELECT count(DISTINCT span_id) FROM spans")[0][0] == rec.span_count
        after, raw = snapshot(api, rec)
        rec.shutdown()
        yield Stack(collector, api, rec, before, after, raw)
    finally:
        if api is not None:
            api.stop()
        collector.stop()


# --- what each scenario must produce ---------------------------------------------------------------------

# Readiness findings (test_readiness_e2e.py has their own scenarios) are listed where these traces earn them: tool
# calls on requests that name no user, an unapproved charge_card, a call failed for its context length.
# (kind, code, severity, span) per trace, after every span arrived; LATE_BEFORE is what the late scenarios
# showed before their late span did. Every other trace must read the same before and after.
EXPECTED: dict[str, list[tuple[str, str, str, str]]] = {
    "loop_tool_repeat": [
        ("loop", "repeated_tool_call", "warning", "search2"),
        ("readiness", "tool_without_user", "info", "search1"),
    ],
    "loop_tool_twice": [("readiness", "tool_without_user", "info", "search1")],
    "loop_tool_other_args": [("readiness", "tool_without_user", "info", "search1")],
    "loop_model_input": [("loop", "repeated_model_input", "warning", "llm2")],
    "loop_model_input_near": [],
    "loop_cycle": [
        ("loop", "step_cycle", "warning", "plan2"),
        ("readiness", "tool_without_user", "info", "plan1"),
    ],
    "loop_cycle_twice": [("readiness", "tool_without_user", "info", "plan1")],
    "loop_late": [
        ("loop", "repeated_tool_call", "warning", "lookup2"),
        ("readiness", "tool_without_user", "info", "lookup1"),
    ],
    "retry_late_recovered": [
        ("error", "rate_limit", "warning", "attempt1"),
        ("error", "server", "warning", "attempt2"),
        ("retry", "retry", "info", "attempt2"),
    ],
    "retry_non_retryable": [
        ("error", "auth", "error", "attempt1"),
        ("error", "auth", "error", "attempt2"),
        ("retry", "non_retryable_retry", "error", "attempt2"),
        ("retry", "retry", "warning", "attempt2"),
    ],
    "retry_no_backoff": [
        ("error", "server", "warning", "attempt1"),
        ("retry", "retry", "info", "attempt2"),
        ("retry", "retry_without_backoff", "warning", "attempt2"),
    ],
    "retry_first_ok": [("error", "server", "error", "call2")],
    "retry_both_ok": [],
    "retry_http_resend": [("retry", "retry", "info", "post")],
    "retry_http_pair": [("error", "rate_limit", "warning", "post1"), ("retry", "retry", "info", "post2")],
    "retry_pydantic_tool": [
        ("error", "tool_error", "warning", "add1"),
        ("readiness", "tool_without_user", "info", "add1"),
        ("retry", "retry", "info", "add2"),
    ],
    "retry_pydantic_output": [("error", "validation", "error", "root"), ("retry", "retry", "warning", "root")],
    "retry_sdk_marked": [
        ("error", "server", "error", "third"),
        ("readiness", "tool_without_user", "info", "first"),
        ("retry", "retry", "warning", "third"),
    ],
    "guardrail_intervened": [("guardrail", "guardrail_block", "warning", "check")],
    "guardrail_passed": [],
    "guardrail_openlit_deny": [("guardrail", "guardrail_block", "warning", "llm")],
    "guardrail_content_filter": [("guardrail", "content_filter", "warning", "llm")],
    "guardrail_refusal": [("guardrail", "refusal", "info", "llm")],
    "guardrail_late": [("guardrail", "guardrail_block", "warning", "check")],
    "errors_classified": [
        ("error", "auth", "error", "unauthorised"),
        ("error", "rate_limit", "error", "rate_limited"),
        ("error", "server", "error", "unavailable"),
        ("error", "timeout", "error", "timed_out"),
        ("error", "tool_error", "error", "ship"),
        ("error", "validation", "error", "too_long"),
        ("readiness", "context_overflow", "warning", "too_long"),
        ("readiness", "tool_without_user", "info", "ship"),
    ],
    "errors_propagated": [
        ("error", "tool_error", "error", "charge"),
        ("readiness", "side_effect_unapproved", "warning", "charge"),
        ("readiness", "tool_without_user", "info", "charge"),
    ],
    "errors_distinct": [
        ("error", "other", "error", "root"),
        ("error", "tool_error", "warning", "pay1"),
        ("readiness", "tool_without_user", "info", "pay1"),
        ("retry", "retry", "info", "pay2"),
    ],
    "errors_near_miss": [
        ("guardrail", "guardrail_block", "warning", "triage"),
        ("readiness", "tool_without_user", "info", "codes"),
    ],
    "errors_late": [
        ("error", "tool_error", "error", "sync"),
        ("readiness", "tool_without_user", "info", "sync"),
    ],
    "budget_trace_breach": [("budget", "budget_breach", "error", "llm3")],
    "budget_trace_half": [],
    "budget_trace_warning": [("budget", "budget_warning", "warning", "llm2")],
    "budget_declared": [
        ("budget", "budget_breach", "error", "llm3"),
        ("budget", "budget_breach", "error", "llm3"),
        ("budget", "budget_warning", "warning", "llm3"),
        ("readiness", "tool_without_user", "info", "tool1"),
    ],
    "budget_late": [("budget", "budget_breach", "error", "llm2")],
    "budget_session_1": [],
    "budget_session_2": [("budget", "budget_breach", "error", "llm2")],
    "budget_session_small": [],
    "budget_user_1": [],
    "budget_user_2": [("budget", "budget_breach", "error", "llm2")],
    "budget_user_small": [],
}
LATE_BEFORE: dict[str, list[tuple[str, str, str, str]]] = {
    "loop_late": [("readiness", "tool_without_user", "info", "lookup1")],
    "retry_late_recovered": [
        ("error", "rate_limit", "error", "attempt1"),
        ("error", "server", "error", "attempt2"),
        ("retry", "retry", "warning", "attempt2"),
    ],
    "guardrail_late": [],
    "errors_late": [("error", "other", "error", "root")],
    "budget_late": [],
}
GOLDEN_GROUPS = {
    "loop_": "loops",
    "retry_": "retries",
    "guardrail_": "guardrails",
    "errors_": "errors",
    "budget_": "budgets",
}


def _verdict(shown: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return sorted((f["kind"], f["code"], f["severity"], f["span_id"].split(".", 1)[1]) for f in shown["findings"])


def _check_golden(name: str, value: Any) -> None:
    path = GOLDEN_DIR / name
    if UPDATE_GOLDEN:
        path.write_text(json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    assert json.loads(path.read_text()) == json.loads(json.dumps(value)), f"{name} differs from the golden file"


def _evidence(stack: Stack, scenario: str, code: str) -> dict[str, Any]:
    (finding,) = [f for f in stack.after[scenario]["findings"] if f["code"] == code]
    return finding["evidence"]


# --- tests -----------------------------------------------------------------------------------------------


def test_every_scenario_gives_exactly_its_findings(stack: Stack) -> None:
    assert set(stack.after) == set(EXPECTED)
    assert {name: _verdict(shown) for name, shown in stack.after.items()} == EXPECTED


def test_late_spans_change_only_their_own_traces_verdict(stack: Stack) -> None:
    assert {name: _verdict(stack.before[name]) for name in LATE_BEFORE} == LATE_BEFORE
    for name in LATE_BEFORE:
        assert _verdict(stack.before[name]) != EXPECTED[name], name
    # A partition recomputed for a late span leaves every other trace's findings exactly as they were.
    unchanged = {name: shown for name, shown in stack.after.items() if name not in LATE_BEFORE}
    assert {name: stack.before[name] for name in unchanged} == unchanged


@pytest.mark.parametrize("prefix", list(GOLDEN_GROUPS))
def test_findings_golden(stack: Stack, prefix: str) -> None:
    golden: dict[str, Any] = {}
    for name, shown in stack.after.items():
        if name.startswith(prefix):
            golden[name] = {"before_late_span": stack.before[name], **shown} if name in LATE_BEFORE else shown
    _check_golden(f"findings_{GOLDEN_GROUPS[prefix]}.json", golden)


def test_loop_evidence(stack: Stack) -> None:
    tool = _evidence(stack, "loop_tool_repeat", "repeated_tool_call")
    assert tool["arguments"] == '{"limit":3,"query":"weather paris"}' and tool["repeats"] == 3
    assert tool["span_ids"] == [f"loop_tool_repeat.search{i}" for i in (1, 2, 3)]
    # The model calls that asked for repeats 2 and 3: 120 + 10 and 140 + 10 tokens, $0.002 + $0.003.
    assert tool["wasted_model_calls"] == ["loop_tool_repeat.llm2", "loop_tool_repeat.llm3"]
    assert (tool["wasted_tokens"], tool["wasted_cost_usd"]) == (280, 0.005)
    (finding,) = [f for f in stack.after["loop_tool_repeat"]["findings"] if f["kind"] == "loop"]
    assert (finding["wasted_tokens"], finding["wasted_cost_usd"]) == (280, 0.005)
    model = _evidence(stack, "loop_model_input", "repeated_model_input")
    assert (model["repeats"], model["wasted_tokens"], model["wasted_cost_usd"]) == (3, 660, 0.006)
    cycle = _evidence(stack, "loop_cycle", "step_cycle")
    assert (cycle["cycle"], cycle["period"], cycle["repeats"]) == (["tool:plan", "tool:act"], 2, 3)
    late = _evidence(stack, "loop_late", "repeated_tool_call")
    assert late["span_ids"] == [f"loop_late.lookup{i}" for i in (1, 2, 3)]


def test_retry_evidence(stack: Stack) -> None:
    before = next(f for f in stack.before["retry_late_recovered"]["findings"] if f["code"] == "retry")["evidence"]
    after = _evidence(stack, "retry_late_recovered", "retry")
    assert (before["outcome"], before["attempts"], before["backoff_ms"]) == ("exhausted", 2, [1000.0])
    assert (after["outcome"], after["attempts"], after["backoff_ms"]) == ("recovered", 3, [1000.0, 2000.0])
    assert after["error_classes"] == ["rate_limit", "server"] and after["http_statuses"] == [429, 503]
    fatal = _evidence(stack, "retry_non_retryable", "non_retryable_retry")
    assert (fatal["error_class"], fatal["http_statuses"], fatal["outcome"]) == ("auth", [401, 401], "exhausted")
    hasty = _evidence(stack, "retry_no_backoff", "retry_without_backoff")
    assert hasty["backoff_ms"] == [10.0] and hasty["failed_span_id"] == "retry_no_backoff.attempt1"
    resend = _evidence(stack, "retry_http_resend", "retry")
    assert (resend["signal"], resend["attempts"], resend["outcome"]) == ("http_resend", 3, "recovered")
    # The 429 and its resend are two HTTP spans: one retry, told once (structure and resend_count agree).
    pair = _evidence(stack, "retry_http_pair", "retry")
    assert (pair["signal"], pair["span_ids"], pair["http_statuses"]) == (
        "structural",
        ["retry_http_pair.post1", "retry_http_pair.post2"],
        [429],
    )
    pydantic_tool = _evidence(stack, "retry_pydantic_tool", "retry")
    assert (pydantic_tool["signal"], pydantic_tool["outcome"]) == ("structural", "recovered")
    output = _evidence(stack, "retry_pydantic_output", "retry")
    assert (output["signal"], output["cause"], output["attempts"], output["max_retries"], output["outcome"]) == (
        "framework",
        "validation",
        2,
        2,
        "exhausted",
    )
    marked = _evidence(stack, "retry_sdk_marked", "retry")
    assert (marked["attempts"], marked["max_retries"], marked["cause"], marked["outcome"]) == (
        3,
        3,
        "connection refused",
        "exhausted",
    )


def test_budget_evidence(stack: Stack) -> None:
    breach = _evidence(stack, "budget_trace_breach", "budget_breach")
    assert (breach["scope"], breach["metric"], breach["limit"], breach["source"]) == (
        "trace",
        "tokens",
        10000,
        "config",
    )
    assert (breach["total"], breach["crossed_at"], breach["ratio"]) == (11000, 11000, 1.1)
    assert (breach["warning_span_id"], breach["breach_span_id"]) == (
        "budget_trace_breach.llm2",
        "budget_trace_breach.llm3",
    )
    warning = _evidence(stack, "budget_trace_warning", "budget_warning")
    assert (warning["total"], warning["breach_span_id"]) == (8500, None)
    budget_findings = [f for f in stack.after["budget_declared"]["findings"] if f["kind"] == "budget"]
    declared = {f["evidence"]["metric"]: f["evidence"] for f in budget_findings}
    assert set(declared) == {"cost_usd", "steps", "tokens"}  # 2 of 4 tool calls is no finding
    for metric, limit in (("cost_usd", 0.05), ("steps", 3), ("tokens", 1000)):
        assert (declared[metric]["source"], declared[metric]["declared_by"]) == ("declared", "budget_declared.root")
        assert declared[metric]["limit"] == limit
    assert declared["cost_usd"]["warning_span_id"] == "budget_declared.llm2"  # $0.045 of $0.05
    assert declared["cost_usd"]["total"] == pytest.approx(0.065)
    late = _evidence(stack, "budget_late", "budget_breach")
    assert (late["total"], late["warning_span_id"], late["breach_span_id"]) == (
        11000,
        "budget_late.llm2",
        "budget_late.llm2",
    )
    session = _evidence(stack, "budget_session_2", "budget_breach")
    assert (session["scope"], session["scope_key"], session["total"], session["limit"]) == (
        "session",
        "sess-budget",
        5500,
        5000,
    )
    assert (session["warning_span_id"], session["breach_span_id"]) == ("budget_session_2.llm1", "budget_session_2.llm2")
    user = _evidence(stack, "budget_user_2", "budget_breach")
    assert (user["scope"], user["scope_key"], user["limit"]) == ("user_day", "user-budget on DAY", 0.5)
    assert user["total"] == pytest.approx(0.55) and user["warning_span_id"] == "budget_user_2.llm1"


def test_guardrail_evidence(stack: Stack) -> None:
    bedrock = _evidence(stack, "guardrail_intervened", "guardrail_block")
    assert bedrock == {
        "action": "block",
        "content": "how do I pick the lock of my neighbour's door",
        "guardrail": "Amazon Bedrock Guardrails",
        "phase": "input",
        "policy": "gr-abc123",
        "reason": "Guardrail policy blocked the requested topic",
        "risk": None,
        "signal": "gen_ai.guardrail.result.value",
        "verdict": "GUARDRAIL_INTERVENED",
    }
    openlit = _evidence(stack, "guardrail_openlit_deny", "guardrail_block")
    assert (openlit["guardrail"], openlit["phase"], openlit["verdict"], openlit["risk"]) == (
        "prompt_injection",
        "input",
        "deny",
        0.97,
    )
    assert _evidence(stack, "guardrail_content_filter", "content_filter")["finish_reason"] == "content_filter"
    assert _evidence(stack, "guardrail_refusal", "refusal")["content"] == "I can't help with that request."
    late = _evidence(stack, "guardrail_late", "guardrail_block")
    assert (late["guardrail"], late["phase"], late["risk"]) == ("output-moderation", "output", "pii")
    tripwire = _evidence(stack, "errors_near_miss", "guardrail_block")
    assert (tripwire["guardrail"], tripwire["signal"]) == (
        "agents.exceptions.InputGuardrailTripwireTriggered",
        "tripwire exception",
    )


def test_error_evidence(stack: Stack) -> None:
    by_span = {
        f["span_id"].split(".", 1)[1]: f for f in stack.after["errors_classified"]["findings"] if f["kind"] == "error"
    }
    assert {k: f["evidence"]["http_status"] for k, f in by_span.items()} == {
        "rate_limited": 429,
        "unauthorised": 401,
        "unavailable": 503,
        "timed_out": None,
        "too_long": 400,
        "ship": None,
    }
    assert "Incorrect API key provided" in by_span["unauthorised"]["message"]
    # The exception's message and stack, as the SDK recorded them (the golden keeps the stack's last line).
    ship = by_span["ship"]["evidence"]
    assert (ship["error_type"], ship["error_message"]) == ("ValueError", "carrier API returned an empty manifest")
    assert ship["stacktrace"] == "… ValueError: carrier API returned an empty manifest"
    assert by_span["timed_out"]["evidence"]["stacktrace"] == "… TimeoutError: Request timed out."
    raw = next(f for f in stack.raw["errors_classified"] if f["code"] == "tool_error")["evidence"]["stacktrace"]
    assert raw.startswith("Traceback (most recent call last):") and "detector_traces.py" in raw
    propagated = _evidence(stack, "errors_propagated", "tool_error")
    assert propagated["failed_ancestors"] == ["errors_propagated.root"]
    distinct = {f["code"]: f["evidence"] for f in stack.after["errors_distinct"]["findings"]}
    assert distinct["tool_error"]["recovered_by_retry"] and distinct["tool_error"]["failed_ancestors"] == []
    assert distinct["other"]["error_message"] == "task failed (reward 0)"


def test_findings_routes_filter_page_and_count(stack: Stack) -> None:
    api, rec = stack.api, stack.rec
    everything = [(rec.names[f["trace_id"]], f["code"], f["span_id"]) for fs in stack.raw.values() for f in fs]
    # Newest first, paged by cursor: every finding once.
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = _get(api, "/findings", limit=7, **({"cursor": cursor} if cursor else {}))
        seen += page["findings"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted((rec.names[f["trace_id"]], f["code"], f["span_id"]) for f in seen) == sorted(everything)
    starts = [f["start_time_unix_nano"] for f in seen]
    assert starts == sorted(starts, reverse=True)
    by_kind = Counter(f["kind"] for f in seen)
    assert by_kind == {"budget": 8, "error": 20, "guardrail": 6, "loop": 4, "retry": 11, "readiness": 16}
    # Filters: kind (one or several), severity, code, trace, time window.
    for kind in by_kind:
        assert Counter(f["kind"] for f in _get(api, "/findings", kind=kind, limit=500)["findings"]) == {
            kind: by_kind[kind]
        }
    both = _get(api, "/findings", kind="loop,guardrail", limit=500)["findings"]
    assert len(both) == by_kind["loop"] + by_kind["guardrail"]
    errors = _get(api, "/findings", severity="error", limit=500)["findings"]
    assert {f["severity"] for f in errors} == {"error"} and len(errors) == sum(f["severity"] == "error" for f in seen)
    breaches = _get(api, "/findings", code="budget_breach", limit=500)["findings"]
    assert sorted(rec.names[f["trace_id"]] for f in breaches) == [
        "budget_declared",
        "budget_declared",
        "budget_late",
        "budget_session_2",
        "budget_trace_breach",
        "budget_user_2",
    ]
    cycle = rec.traces["loop_cycle"]
    assert [f["code"] for f in _get(api, "/findings", trace_id=cycle.trace_id)["findings"]] == [
        "step_cycle",
        "tool_without_user",
    ]
    window = {"from": str(cycle.start_ns), "to": str(cycle.at(20))}
    assert [rec.names[f["span_id"]] for f in _get(api, "/findings", **window)["findings"]] == [
        "loop_cycle.plan2",
        "loop_cycle.plan1",
    ]
    with api.client() as client:
        assert client.get("/findings", params={"kind": "bogus"}).status_code == 400
        assert client.get("/findings", params={"severity": "fatal"}).status_code == 400
        assert client.get("/findings", params={"cursor": "garbage"}).status_code == 400
    # Counts per kind per day, and the traces flagged with each kind.
    counts = _get(api, "/findings/counts", bucket="day")
    assert counts["totals"] == dict(by_kind)
    day = time.strftime("%Y-%m-%d", time.gmtime(BASE_NS / 1e9))
    assert {(r["bucket"], r["kind"]) for r in counts["counts"]} == {(day, k) for k in by_kind}
    for row in counts["counts"]:
        flagged = {rec.names[f["trace_id"]] for f in seen if f["kind"] == row["kind"]}
        assert row["traces"] == len(flagged)
        if row["kind"] == "readiness":  # counted, but never a flag on the trace list (query/detect/readiness.py)
            assert not any("readiness" in shown["flags"] for shown in stack.after.values())
            continue
        traces = _get(api, "/traces", flag=row["kind"], limit=500)["traces"]
        assert {rec.names[t["trace_id"]] for t in traces} == flagged
        assert flagged == {name for name, shown in stack.after.items() if row["kind"] in shown["flags"]}
    assert {rec.names[t["trace_id"]] for t in _get(api, "/traces", flag="loop")["traces"]} == {
        "loop_tool_repeat",
        "loop_model_input",
        "loop_cycle",
        "loop_late",
    }


def test_findings_cursor_keeps_findings_that_share_a_span(stack: Stack) -> None:
    """budget_declared has two budget_breach findings (cost and steps) on the same span at the same time."""
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = _get(stack.api, "/findings", limit=1, code="budget_breach", **({"cursor": cursor} if cursor else {}))
        seen += page["findings"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 6


# --- the captured fixtures -----------------------------------------------------------------------------------

TASK_FAILED = ("error", "other", "error", "invoke_agent airline-agent")
# Read off the stored spans (tests/conftest.py query_dicts): of the 10 tau-bench conversations, 9 end with the
# agent span failed "task failed (reward 0)"; two had tool calls fail and made good by a later call of the
# same tool (an agent-level retry, recovered: the failures are warnings, the agent's own failure is separate).
# Repeated get_reservation_details calls looked up different reservations (the results differ; the arguments
# were not recorded): no loop. The JS agent's tool timed out (an exception event with its stack).
CAPTURED_EXPECTED: dict[str, list[tuple[str, str, str, str]]] = {
    "10ab0a3fb05cfb2e567f383de25b3981": [TASK_FAILED],
    "1f790236b999e0f95e09ad6136349959": [TASK_FAILED],
    "5867498150be44f7ad34c0fbec827eaf": [TASK_FAILED],
    "5b1e37e5f8118f3383af25e805218a05": [TASK_FAILED],
    "73e01cd4a664c6db871c0bb19c4cb2e1": [
        TASK_FAILED,
        ("error", "tool_error", "warning", "execute_tool book_reservation"),
        ("retry", "retry", "info", "execute_tool book_reservation"),
    ],
    "9be4ef563f74fc62df362c57f2b46ae2": [],
    "9e25916d661df26c6c2056edc5395318": [
        TASK_FAILED,
        *[("error", "tool_error", "warning", "execute_tool update_reservation_flights")] * 5,
        ("retry", "retry", "info", "execute_tool update_reservation_flights"),
    ],
    "a780b740d98d2d1aa6f0a61e321a993b": [TASK_FAILED],
    "a7e014d3c966c58f5e0ea4b0a8421cd8": [TASK_FAILED],
    "adfcf461ef74345753173551c4c48230": [TASK_FAILED],
    "a4cde8f7cb347dfd35b7acb4208467bc": [("error", "timeout", "error", "execute_tool get_weather")],
    "e3c61ca64211eccc4bef3dd43d0e2669": [("error", "timeout", "error", "execute_tool get_weather")],
}


def _send_captured(collector: Collector, *, skip: tuple[str, ...] = ()) -> None:
    """`.binpb` files as the raw gRPC request bytes; `.json` files (OTLP/JSON) to POST /v1/traces unchanged."""
    for path in sorted(CAPTURED.iterdir()):
        if path.name in skip:
            continue
        if path.suffix == ".binpb":
            grpc_export(collector.grpc_port, path.read_bytes())
        elif path.suffix == ".json":
            response = httpx.post(
                f"http://127.0.0.1:{collector.http_port}/v1/traces",
                content=path.read_bytes(),
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 200, response.text
    collector.flush()


def _all_findings(api: ApiServer) -> list[dict[str, Any]]:
    body = _get(api, "/findings", limit=500)
    assert body["next_cursor"] is None
    return sorted(body["findings"], key=lambda f: (f["trace_id"], f["start_time_unix_nano"], f["code"], f["span_id"]))


def _check_captured_readiness(
    api: ApiServer,
    found: list[dict[str, Any]],
    span_by_id: dict[tuple[str, str], dict[str, Any]],
    service_of: dict[str, str],
) -> None:
    """What the captures' content implies for readiness: they ask for OpenAI aliases (gpt-4o-mini, gpt-4o, gpt-4,
    gpt-5.4, answered by dated snapshots; the JS agent's gpt-4o-mini, whose answer names no model, and the made-up
    `this-model-does-not-exist` are not judged), no span names a
    user so every trace that called a tool did so for nobody, and one tau-bench conversation booked a reservation
    with no approval step in the trace (its confirmation is only in the chat). No injection, PII, overflow or
    double side effect: the captures hold none."""
    readiness = [f for f in found if f["kind"] == "readiness"]
    codes = Counter(f["code"] for f in readiness)
    assert codes == {"tool_without_user": 11, "side_effect_unapproved": 1}
    # Aliases are judged by the report over the captures' days (not a finding on each trace).
    first = min(s["start_time_unix_nano"] for s in span_by_id.values())
    report = _get(api, "/readiness", since=str(first - 86_400 * SECOND), until=str(first + 300 * 86_400 * SECOND))
    (pinned,) = [c for sec in report["sections"] for c in sec["checks"] if c["check"] == "pinned model versions"]
    assert pinned["held"] is False
    assert {a["model"] for a in pinned["aliases"]} == {"gpt-4o-mini", "gpt-4o", "gpt-4", "gpt-5.4"}
    (unapproved,) = [f for f in readiness if f["code"] == "side_effect_unapproved"]
    assert unapproved["evidence"]["tools"] == ["book_reservation"] and unapproved["trace_id"].startswith("73e01cd4")
    anonymous = {f["trace_id"] for f in readiness if f["code"] == "tool_without_user"}
    with_tools = {t for (t, _), s in span_by_id.items() if s["name"].startswith("execute_tool")}
    assert anonymous == with_tools


def test_captured_fixtures_give_what_their_content_implies(tmp_path: Path) -> None:
    collector = start_collector(tmp_path / "data")
    api = start_api(collector.settings)
    try:
        _send_captured(collector)
        spans = query_dicts(
            collector,
            """SELECT DISTINCT ON (trace_id, span_id) trace_id, span_id, name, service_name, is_error, error_message,
                      start_time_unix_nano
               FROM spans ORDER BY trace_id, span_id""",
        )
        span_by_id = {(s["trace_id"], s["span_id"]): s for s in spans}
        service_of = {s["trace_id"]: s["service_name"] for s in spans}
        found = _all_findings(api)
        by_trace: dict[str, list[tuple[str, str, str, str]]] = {}
        for f in found:
            name = span_by_id[(f["trace_id"], f["span_id"])]["name"]
            if f["kind"] != "readiness":  # checked on their own below
                by_trace.setdefault(f["trace_id"], []).append((f["kind"], f["code"], f["severity"], name))
        # The agent traces, finding by finding.
        agents = {t for t, s in service_of.items() if not s.startswith("cassette-replay")}
        assert {t: sorted(by_trace.get(t, [])) for t in agents} == {
            **{t: [] for t in agents},
            **{t: sorted(v) for t, v in CAPTURED_EXPECTED.items()},
        }
        # The recorded OpenAI exchanges: exactly the failed calls, each a 4xx no retry can fix (a model that
        # does not exist: 404, or 400 from the Responses API), with the provider's message.
        replayed = [
            f for f in found if service_of[f["trace_id"]].startswith("cassette-replay") and f["kind"] != "readiness"
        ]
        failed = {
            (s["trace_id"], s["span_id"]) for s in spans if s["is_error"] and s["service_name"].startswith("cassette")
        }
        assert {(f["trace_id"], f["span_id"]) for f in replayed} == failed and len(failed) == 9
        assert Counter((f["kind"], f["code"], f["severity"], f["evidence"]["http_status"]) for f in replayed) == {
            ("error", "validation", "error", 404): 8,
            ("error", "validation", "error", 400): 1,
        }
        for f in replayed:
            assert f["evidence"]["error_message"] == span_by_id[(f["trace_id"], f["span_id"])]["error_message"]
            assert "does not exist" in f["message"]
        openinference = [f for f in replayed if service_of[f["trace_id"]] == "cassette-replay-openinference"]
        assert len(openinference) == 5
        assert all(f["evidence"]["stacktrace"].startswith("Traceback (most recent call last)") for f in openinference)
        timeout = next(f for f in found if f["code"] == "timeout")
        assert "upstream weather API timed out" in timeout["evidence"]["stacktrace"]
        # No loop anywhere; the only retries are the two tau-bench tool retries, recovered.
        retries = [f for f in found if f["kind"] == "retry"]
        assert {
            (f["trace_id"][:8], f["evidence"]["target"], f["evidence"]["attempts"], f["evidence"]["outcome"])
            for f in retries
        } == {
            ("73e01cd4", "book_reservation", 2, "recovered"),
            ("9e25916d", "update_reservation_flights", 6, "recovered"),
        }
        assert not [f for f in found if f["kind"] in ("loop", "budget", "guardrail")]
        assert _get(api, "/traces", flag="loop")["traces"] == []
        assert {t["trace_id"][:8] for t in _get(api, "/traces", flag="retry")["traces"]} == {"73e01cd4", "9e25916d"}
        _check_captured_readiness(api, found, span_by_id, service_of)
        assert _get(api, "/findings/counts")["totals"] == {"error": 26, "readiness": 12, "retry": 2}
        _check_golden("findings_captured.json", found)
        # The small files again (a client's retry of its export): the same findings, no retry or loop from copies.
        _send_captured(collector, skip=("tau_replay_openinference_10.binpb",))
        assert query(collector, "SELECT count(*) > count(DISTINCT (trace_id, span_id)) FROM spans_raw")[0][0]
        assert _all_findings(api) == found
    finally:
        api.stop()
        collector.stop()
