"""Deterministic synthetic agent workload for the ingest benchmark: pre-serialized ExportTraceServiceRequest bytes.

Used by bench/ingest.py. Each request is generated independently from (seed, request index), so any process can
build any share of the run and the bytes are identical whatever the number of senders. A request holds whole agent
runs (the last one cut short to fit, as a BatchSpanProcessor would split it) in the OTel GenAI current conventions:
an `invoke_agent <agent>` root carrying user.id and session.id, `chat <model>` LLM spans with provider, request and
response model, token usage including cache reads, `gen_ai.input.messages` / `gen_ai.output.messages` JSON and
finish reasons, and `execute_tool <name>` spans with arguments and results. Trace and span ids are unique across
the whole run (a bijective 64-bit mix of a counter), never zero.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, Status

# 2025-06-02T09:00:00Z: a fixed base keeps the bytes deterministic; every model below is priced at that date.
BASE_TIME_NS = 1_748_854_800 * 1_000_000_000
_MASK64 = (1 << 64) - 1
_SPANS_PER_REQUEST_LIMIT = 1 << 20  # span counter = request index * this + position: unique across the run

# (provider, request model, response model, server address, weight). The last one is not in any price table.
MODELS: tuple[tuple[str, str, str, str, float], ...] = (
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "api.openai.com", 0.40),
    ("openai", "gpt-4o", "gpt-4o-2024-08-06", "api.openai.com", 0.25),
    ("anthropic", "claude-sonnet-4-20250514", "claude-sonnet-4-20250514", "api.anthropic.com", 0.25),
    ("openai", "orbit-large-2", "orbit-large-2-0611", "llm.internal.example.com", 0.10),
)
AGENTS = ("support-triage", "research-assistant", "billing-helper", "code-reviewer")
SERVICES = ("support-agent", "research-agent", "billing-agent")
TOOLS: dict[str, tuple[str, ...]] = {
    "search_knowledge_base": ("query", "top_k"),
    "get_order_status": ("order_id",),
    "lookup_customer": ("customer_id", "fields"),
    "web_search": ("query", "max_results"),
    "run_sql": ("sql",),
    "create_ticket": ("title", "priority", "body"),
    "get_weather": ("location", "unit"),
    "read_file": ("path",),
}
_CORPUS = (
    "the order was shipped on monday and the customer reports that the package never arrived at the address "
    "listed on the invoice please check the tracking number against the carrier records before issuing a refund "
    "according to policy section four refunds over fifty dollars need approval from a supervisor the account "
    "shows three previous tickets about late deliveries which were resolved with store credit I can look up the "
    "latest status of the shipment and summarise the options available to the customer including replacement "
    "expedited shipping or a full refund to the original payment method our records indicate the item is in stock "
    "at the regional warehouse and could be dispatched today if confirmed before the cutoff time of three pm the "
    "quarterly report lists revenue growth of twelve percent driven by subscriptions while churn fell slightly "
    "compared with the previous period analysts expect margins to improve as infrastructure costs decline the "
    "function raises a key error when the configuration file is missing the retry section consider adding a "
    "default value and a unit test that covers the empty file case the query scans the whole table because the "
    "index on customer id is not used when the column is cast to text"
)
_WORDS = tuple(_CORPUS.split())


def _mix64(value: int) -> int:
    """splitmix64 finaliser: a bijection on 64-bit integers, so distinct counters give distinct ids."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


@lru_cache(maxsize=8)
def _sentences(seed: int) -> tuple[str, ...]:
    """A pool of 4096 distinct sentences (5-28 words) to compose message content from."""
    rng = random.Random(seed ^ 0x5EED)
    out = []
    for index in range(4096):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 28))]
        words[0] = words[0].capitalize()
        out.append(" ".join(words) + f" (ref {index:04d}).")
    return tuple(out)


def _text(rng: random.Random, pool: tuple[str, ...], sentences: int) -> str:
    return " ".join(pool[rng.randrange(len(pool))] for _ in range(sentences))


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, (list, tuple)):
        return KeyValue(
            key=key, value=AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=str(v)) for v in value]))
        )
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class RequestStats:
    spans: int
    traces: int
    llm_spans: int
    tool_spans: int
    bytes: int


class _Ids:
    def __init__(self, seed: int, request_index: int) -> None:
        self._salt = _mix64(seed) >> 1  # < 2**63, so salt + counter never wraps to zero
        self._next = request_index * _SPANS_PER_REQUEST_LIMIT + 1

    def counter(self) -> int:
        value = self._next
        self._next += 1
        return value

    def span_id(self, counter: int) -> bytes:
        return _mix64(self._salt + counter).to_bytes(8, "big")

    def trace_id(self, counter: int) -> bytes:
        high = _mix64((self._salt + counter) ^ (1 << 63))  # unique per counter (xor and mix are bijections)
        return high.to_bytes(8, "big") + _mix64(high).to_bytes(8, "big")


def _pick_model(rng: random.Random) -> tuple[str, str, str, str, float]:
    return rng.choices(MODELS, weights=[m[4] for m in MODELS])[0]


def _agent_run(
    rng: random.Random, pool: tuple[str, ...], ids: _Ids, start_ns: int, max_spans: int
) -> tuple[list[tuple[str, Span]], int, int]:
    """One agent run as (scope, span) pairs, root last (it ends last); at most max_spans spans."""
    trace_counter = ids.counter()
    trace_id = ids.trace_id(trace_counter)
    root_id = ids.span_id(trace_counter)
    agent = rng.choice(AGENTS)
    provider, request_model, response_model, server, _ = _pick_model(rng)
    user = f"user-{rng.randrange(5000):05d}"
    session = f"sess-{rng.randrange(1 << 40):010x}"
    system_prompt = f"You are {agent}, a careful assistant for Acme Corp. " + _text(rng, pool, 5)
    system_instructions = _dumps([{"type": "text", "content": system_prompt}])
    question = _text(rng, pool, rng.randint(2, 5))
    history: list[dict[str, Any]] = [{"role": "user", "parts": [{"type": "text", "content": question}]}]
    children: list[tuple[str, Span]] = []
    clock = start_ns + rng.randint(1, 5) * 1_000_000
    turns = rng.randint(2, 6)
    llm = tools = 0
    input_total = output_total = 0
    for turn in range(turns):
        if len(children) + 2 > max_spans:
            break
        last = turn == turns - 1
        counter = ids.counter()
        duration = rng.randint(300, 4000) * 1_000_000
        tool_names = [] if last else rng.sample(sorted(TOOLS), rng.choice((1, 1, 1, 2, 2, 3)))
        calls = [
            {
                "type": "tool_call",
                "id": f"call_{ids.span_id(counter).hex()}{index}",
                "name": name,
                "arguments": {arg: _argument(rng, pool, arg) for arg in TOOLS[name]},
            }
            for index, name in enumerate(tool_names)
        ]
        output_parts: list[dict[str, Any]] = []
        if last or rng.random() < 0.3:
            output_parts.append({"type": "text", "content": _text(rng, pool, rng.randint(2, 6) if last else 1)})
        output_parts.extend(calls)
        finish = "stop" if last else "tool_calls"
        output_messages = [{"role": "assistant", "parts": output_parts, "finish_reason": finish}]
        input_tokens = 400 + 180 * turn + rng.randint(0, 900)
        cache_read = (input_tokens // 256) * 128 if turn else 0
        output_tokens = rng.randint(20, 600)
        input_total += input_tokens
        output_total += output_tokens
        attributes = [
            _kv("gen_ai.operation.name", "chat"),
            _kv("gen_ai.provider.name", provider),
            _kv("gen_ai.request.model", request_model),
            _kv("gen_ai.response.model", response_model),
            _kv("gen_ai.response.id", f"chatcmpl-{_mix64(counter):016x}"),
            _kv("gen_ai.request.temperature", 0.2),
            _kv("gen_ai.request.max_tokens", 2048),
            _kv("gen_ai.usage.input_tokens", input_tokens),
            _kv("gen_ai.usage.output_tokens", output_tokens),
            _kv("gen_ai.usage.cache_read.input_tokens", cache_read),
            _kv("gen_ai.response.finish_reasons", [finish]),
            _kv("gen_ai.conversation.id", session),
            _kv("server.address", server),
            _kv("server.port", 443),
            # Instrumentations record the whole conversation each call; we keep the latest few messages so the
            # average span stays near the ~2 KB the docs/design.md measurements used.
            _kv("gen_ai.system_instructions", system_instructions),
            _kv("gen_ai.input.messages", _dumps(history[-6:])),
            _kv("gen_ai.output.messages", _dumps(output_messages)),
        ]
        children.append(
            (
                "chat",
                Span(
                    trace_id=trace_id,
                    span_id=ids.span_id(counter),
                    parent_span_id=root_id,
                    name=f"chat {request_model}",
                    kind=Span.SPAN_KIND_CLIENT,
                    start_time_unix_nano=clock,
                    end_time_unix_nano=clock + duration,
                    attributes=attributes,
                ),
            )
        )
        llm += 1
        clock += duration + rng.randint(1, 20) * 1_000_000
        history.append({"role": "assistant", "parts": calls or output_parts})
        for call in calls:
            if len(children) + 2 > max_spans:
                break
            tool_counter = ids.counter()
            tool_duration = rng.randint(5, 1500) * 1_000_000
            failed = rng.random() < 0.02
            result = {"status": "error", "error": "upstream timeout"} if failed else _tool_result(rng, pool)
            tool_attributes = [
                _kv("gen_ai.operation.name", "execute_tool"),
                _kv("gen_ai.tool.name", call["name"]),
                _kv("gen_ai.tool.call.id", call["id"]),
                _kv("gen_ai.tool.type", "function"),
                _kv("gen_ai.tool.call.arguments", _dumps(call["arguments"])),
                _kv("gen_ai.tool.call.result", _dumps(result)),
            ]
            span = Span(
                trace_id=trace_id,
                span_id=ids.span_id(tool_counter),
                parent_span_id=root_id,
                name=f"execute_tool {call['name']}",
                kind=Span.SPAN_KIND_INTERNAL,
                start_time_unix_nano=clock,
                end_time_unix_nano=clock + tool_duration,
                attributes=tool_attributes,
            )
            if failed:
                span.attributes.append(_kv("error.type", "TimeoutError"))
                span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="upstream timeout"))
                event = span.events.add(name="exception", time_unix_nano=clock + tool_duration)
                event.attributes.extend(
                    [
                        _kv("exception.type", "TimeoutError"),
                        _kv("exception.message", "upstream timeout after 1.5 s"),
                    ]
                )
            children.append(("agent", span))
            tools += 1
            clock += tool_duration + rng.randint(1, 5) * 1_000_000
            history.append(
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": call["id"], "response": result}]}
            )
    root = Span(
        trace_id=trace_id,
        span_id=root_id,
        name=f"invoke_agent {agent}",
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=clock + rng.randint(1, 10) * 1_000_000,
        attributes=[
            _kv("gen_ai.operation.name", "invoke_agent"),
            _kv("gen_ai.agent.name", agent),
            _kv("gen_ai.agent.id", f"agent-{AGENTS.index(agent)}"),
            _kv("gen_ai.provider.name", provider),
            _kv("gen_ai.request.model", request_model),
            _kv("gen_ai.conversation.id", session),
            _kv("user.id", user),
            _kv("session.id", session),
            _kv("gen_ai.input.messages", _dumps(history[:1])),
            # Run totals, which a backend must not add to the children's usage (docs/design.md invariant 4).
            _kv("gen_ai.aggregated_usage.input_tokens", input_total),
            _kv("gen_ai.aggregated_usage.output_tokens", output_total),
        ],
    )
    children.append(("agent", root))
    return children, llm, tools


def _argument(rng: random.Random, pool: tuple[str, ...], name: str) -> Any:
    if name in ("top_k", "max_results"):
        return rng.choice((3, 5, 10))
    if name.endswith("_id"):
        return f"{name[:-3]}-{rng.randrange(10**6):06d}"
    if name == "sql":
        return f"SELECT * FROM orders WHERE customer_id = {rng.randrange(10**5)} ORDER BY created_at DESC LIMIT 20"
    if name == "fields":
        return ["email", "plan", "created_at"]
    if name == "priority":
        return rng.choice(("low", "normal", "high"))
    if name == "unit":
        return "celsius"
    if name == "path":
        return f"src/service/module_{rng.randrange(100)}.py"
    return _text(rng, pool, 1)[:120]


def _tool_result(rng: random.Random, pool: tuple[str, ...]) -> Any:
    return {
        "status": "ok",
        "items": [
            {"id": f"doc-{rng.randrange(10**6):06d}", "score": round(rng.random(), 3), "text": _text(rng, pool, 1)}
            for _ in range(rng.randint(1, 4))
        ],
    }


_RESOURCE_COMMON = (
    ("service.version", "2.14.1"),
    ("deployment.environment.name", "production"),
    ("telemetry.sdk.language", "python"),
    ("telemetry.sdk.name", "opentelemetry"),
    ("telemetry.sdk.version", "1.38.0"),
    ("host.name", "agent-worker-7"),
    ("process.runtime.name", "cpython"),
    ("process.runtime.version", "3.12.7"),
)
_SCOPES = {
    "agent": ("opentelemetry.instrumentation.openai_agents", "0.1.0"),
    "chat": ("opentelemetry.instrumentation.openai_v2", "2.2b0"),
}


def build_request(seed: int, request_index: int, spans_per_request: int) -> tuple[bytes, RequestStats]:
    """The serialized request number `request_index` of a run, and what it holds. Pure and deterministic."""
    if not 1 <= spans_per_request < _SPANS_PER_REQUEST_LIMIT // 2:
        raise ValueError(f"spans_per_request must be between 1 and {_SPANS_PER_REQUEST_LIMIT // 2 - 1}")
    rng = random.Random(seed * 1_000_003 + request_index)
    pool = _sentences(seed)
    ids = _Ids(seed, request_index)
    by_scope: dict[str, list[Span]] = {"agent": [], "chat": []}
    count = traces = llm = tools = 0
    clock = BASE_TIME_NS + request_index * 2_000_000_000
    while count < spans_per_request:
        spans, run_llm, run_tools = _agent_run(rng, pool, ids, clock, spans_per_request - count)
        for scope, span in spans:
            by_scope[scope].append(span)
        count += len(spans)
        traces += 1
        llm += run_llm
        tools += run_tools
        clock += rng.randint(1, 50) * 1_000_000
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    service = SERVICES[rng.randrange(len(SERVICES))]
    resource_spans.resource.attributes.extend(
        [
            _kv("service.name", service),
            *(_kv(k, v) for k, v in _RESOURCE_COMMON),
            _kv("process.pid", 4000 + request_index % 97),
        ]
    )
    for scope, scope_members in by_scope.items():
        name, version = _SCOPES[scope]
        scope_spans = ScopeSpans()
        scope_spans.scope.name = name
        scope_spans.scope.version = version
        scope_spans.spans.extend(scope_members)
        resource_spans.scope_spans.append(scope_spans)
    body = request.SerializeToString()
    return body, RequestStats(spans=count, traces=traces, llm_spans=llm, tool_spans=tools, bytes=len(body))


def plan_requests(total_spans: int, spans_per_request: int) -> list[int]:
    """Spans per request: full requests, then one smaller request with the remainder."""
    full, rest = divmod(total_spans, spans_per_request)
    return [spans_per_request] * full + ([rest] if rest else [])
