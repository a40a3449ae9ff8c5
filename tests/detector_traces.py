"""Agent traces for the detector tests, built with the real OpenTelemetry SDK and exported over OTLP/gRPC.

`Recorder` wraps a TracerProvider whose SimpleSpanProcessor sends each span to the collector the moment it
ends, with start and end times set explicitly (seconds from the trace's own start), so every number a
detector reports (backoff gaps, running totals, wasted tokens) follows from the scenario. A span marked
`late` stays open until `send_late()`: the rest of its trace is stored and read first, then it arrives.

Every id the SDK draws at random gets a name (`trace`, `trace.span`) so findings can be compared with golden
files. Model calls use an unpriced model with a reported cost (`gen_ai.usage.cost`), so costs are exactly
what the scenario says, whatever the price table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

SECOND = 1_000_000_000
MODEL = "acme-chat"  # no price in the table: the cost is the one the span reports


def llm(inp: int, out: int, cost: float, model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "acme",
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": inp,
        "gen_ai.usage.output_tokens": out,
        "gen_ai.usage.cost": cost,
        **extra,
    }


def tool(name: str, arguments: Any = None, result: str | None = None, **extra: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name, **extra}
    if arguments is not None:
        attrs["gen_ai.tool.call.arguments"] = arguments if isinstance(arguments, str) else json.dumps(arguments)
    if result is not None:
        attrs["gen_ai.tool.call.result"] = result
    return attrs


def agent(name: str, **extra: Any) -> dict[str, Any]:
    return {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name, **extra}


def messages(text: str) -> str:
    return json.dumps([{"role": "user", "parts": [{"type": "text", "content": text}]}])


def raised(exc: BaseException) -> BaseException:
    """The exception with a real traceback, as an instrumentation records it after catching it."""
    try:
        raise exc
    except BaseException as caught:  # handing the caught exception back is the point
        return caught


@dataclass
class Trace:
    recorder: Recorder
    name: str
    offset_s: float
    spans: dict[str, Span] = field(default_factory=dict)

    @property
    def start_ns(self) -> int:
        return self.recorder.base_ns + int(self.offset_s * SECOND)

    def at(self, seconds: float) -> int:
        return self.start_ns + round(seconds * SECOND)

    @property
    def trace_id(self) -> str:
        return format(next(iter(self.spans.values())).get_span_context().trace_id, "032x")

    def span_id(self, key: str) -> str:
        return format(self.spans[key].get_span_context().span_id, "016x")

    def span(
        self,
        key: str,
        name: str,
        start: float,
        end: float,
        attrs: dict[str, Any] | None = None,
        *,
        parent: str | None = "root",
        error: str | None = None,
        exception: BaseException | None = None,
        events: tuple[tuple[str, dict[str, Any], float], ...] = (),
        late: bool = False,
        setup: Callable[[Span], None] | None = None,
    ) -> Span:
        """One span from `start` to `end` seconds into the trace; the first span of a trace is its root."""
        if not self.spans:
            parent = None
        context = otel_trace.set_span_in_context(self.spans[parent]) if parent is not None else None
        span = self.recorder.tracer.start_span(name, context=context, attributes=attrs, start_time=self.at(start))
        assert isinstance(span, Span)
        self.spans[key] = span
        self.recorder.names[format(span.get_span_context().span_id, "016x")] = f"{self.name}.{key}"
        self.recorder.names.setdefault(format(span.get_span_context().trace_id, "032x"), self.name)
        for event_name, event_attrs, at in events:
            span.add_event(event_name, event_attrs, timestamp=self.at(at))
        if exception is not None:
            span.record_exception(exception, timestamp=self.at(end))
        if error is not None or exception is not None:
            description = error if error is not None else f"{type(exception).__name__}: {exception}"
            span.set_status(Status(StatusCode.ERROR, description))
        if setup is not None:
            setup(span)  # e.g. an sdk_helpers call that sets attributes on the span before it ends
        if late:
            self.recorder.late.append((span, self.at(end)))
        else:
            span.end(end_time=self.at(end))
        return span


class Recorder:
    """Traces exported as they are built; `late` spans held back until `send_late()`."""

    def __init__(self, port: int, base_ns: int, service: str = "detector-e2e") -> None:
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("detector-e2e")
        self.base_ns = base_ns
        self.names: dict[str, str] = {}  # hex trace and span ids -> names
        self.traces: dict[str, Trace] = {}
        self.late: list[tuple[Span, int]] = []
        self._next_offset = 0.0

    def trace(self, name: str, length_s: float = 20.0) -> Trace:
        assert name not in self.traces, name
        built = Trace(self, name, self._next_offset)
        self._next_offset += length_s
        self.traces[name] = built
        return built

    @property
    def span_count(self) -> int:
        return sum(len(t.spans) for t in self.traces.values())

    def send_late(self) -> int:
        sent = len(self.late)
        for span, end_ns in self.late:
            span.end(end_time=end_ns)
        self.late.clear()
        return sent

    def shutdown(self) -> None:
        self.provider.shutdown()
