"""End to end with the real OpenTelemetry SDK exporters (gRPC and HTTP) → collector → Parquet → DuckDB."""

from __future__ import annotations

import json
import time

import pyarrow.parquet as pq
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from collector.service import Collector
from store.schema import SCHEMA_VERSION, SCHEMA_VERSION_KEY
from tests.conftest import query, query_dicts


def _provider(exporter: object, service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[arg-type]
    return provider


def _agent_run(provider: TracerProvider) -> str:
    tracer = provider.get_tracer("test-agent")
    with tracer.start_as_current_span(
        "invoke_agent travel", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "travel"}
    ) as root:
        root.set_attribute("user.id", "u-42")
        root.set_attribute("session.id", "s-7")
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "gen_ai.usage.input_tokens": 1200,
                "gen_ai.usage.output_tokens": 300,
                "gen_ai.usage.cache_read.input_tokens": 1024,
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "Book me a flight to Paris"}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": "Which date?"}],
                            "finish_reason": "stop",
                        }
                    ]
                ),
                "gen_ai.response.finish_reasons": ["stop"],
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool search_flights",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "search_flights",
                "gen_ai.tool.call.id": "call_1",
                "gen_ai.tool.call.arguments": '{"to": "CDG"}',
            },
        ) as tool:
            tool.set_status(Status(StatusCode.ERROR, "upstream timeout"))
        return format(root.get_span_context().trace_id, "032x")


def _check_agent_trace(c: Collector, trace_id: str, service: str) -> None:
    rows = {r["name"]: r for r in query_dicts(c, f"SELECT * FROM spans WHERE trace_id = '{trace_id}'")}
    assert set(rows) == {"invoke_agent travel", "chat gpt-4o-mini", "execute_tool search_flights"}
    root, chat, tool = rows["invoke_agent travel"], rows["chat gpt-4o-mini"], rows["execute_tool search_flights"]
    assert root["span_type"] == "agent" and root["parent_span_id"] is None and root["agent_name"] == "travel"
    assert root["user_id"] == "u-42" and root["session_id"] == "s-7"
    assert chat["span_type"] == "llm" and chat["parent_span_id"] == root["span_id"]
    assert (chat["provider"], chat["request_model"], chat["response_model"]) == (
        "openai",
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
    )
    assert (chat["input_tokens"], chat["output_tokens"], chat["cache_read_tokens"]) == (1200, 300, 1024)
    # docs/conventions.md §4.2 verified call: 1200 in (1024 cached) / 300 out on gpt-4o-mini = $0.0002832
    assert chat["cost_status"] == "computed" and abs(chat["cost_usd"] - 0.0002832) < 1e-9
    assert chat["cost_source"].startswith("genai-prices@")
    assert json.loads(chat["input_messages"])[0]["parts"][0]["content"] == "Book me a flight to Paris"
    assert chat["finish_reason"] == "stop"
    assert chat["service_name"] == service and chat["kind"] == "INTERNAL"
    assert tool["span_type"] == "tool" and tool["tool_name"] == "search_flights" and tool["tool_call_id"] == "call_1"
    assert tool["status_code"] == "ERROR" and tool["is_error"] and tool["error_message"] == "upstream timeout"
    assert json.loads(tool["attributes"])["gen_ai.tool.call.arguments"] == '{"to": "CDG"}'
    assert tool["start_time_unix_nano"] <= tool["end_time_unix_nano"]
    assert isinstance(tool["start_time_unix_nano"], int)


def test_grpc_sdk_exporter_lands_in_lake(collector: Collector) -> None:
    exporter = GrpcSpanExporter(endpoint=f"127.0.0.1:{collector.grpc_port}", insecure=True)
    provider = _provider(exporter, "agent-grpc")
    trace_id = _agent_run(provider)
    provider.shutdown()
    collector.flush()
    _check_agent_trace(collector, trace_id, "agent-grpc")
    assert collector.metrics.spans_accepted == 3 and collector.metrics.spans_written == 3


def test_http_sdk_exporter_lands_in_lake(collector: Collector) -> None:
    exporter = HttpSpanExporter(endpoint=f"http://127.0.0.1:{collector.http_port}/v1/traces")
    provider = _provider(exporter, "agent-http")
    trace_id = _agent_run(provider)
    provider.shutdown()
    collector.flush()
    _check_agent_trace(collector, trace_id, "agent-http")


def test_parts_are_partitioned_and_carry_schema_version(collector: Collector) -> None:
    provider = _provider(GrpcSpanExporter(endpoint=f"127.0.0.1:{collector.grpc_port}", insecure=True), "svc")
    _agent_run(provider)
    provider.shutdown()
    collector.flush()
    parts = collector.lake.parts("spans")
    assert parts, "no part published"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    for part in parts:
        assert part.path.parent.name == f"date={today}" and part.path.parent.parent.name == "project=default"
        metadata = pq.read_schema(part.path).metadata
        assert metadata[SCHEMA_VERSION_KEY] == str(SCHEMA_VERSION).encode()
    assert not list(collector.lake.table_dir("spans").rglob("*.tmp"))


def test_log_events_join_their_span(collector: Collector) -> None:
    """OTel ≤1.36 content events sent as OTLP log records are joined to the span on read,
    whichever arrives first."""
    tracer_provider = _provider(GrpcSpanExporter(endpoint=f"127.0.0.1:{collector.grpc_port}", insecure=True), "ev")
    logger_provider = LoggerProvider(resource=Resource.create({"service.name": "ev"}))
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(GrpcLogExporter(endpoint=f"127.0.0.1:{collector.grpc_port}", insecure=True))
    )
    logger = logger_provider.get_logger("opentelemetry.instrumentation.openai_v2")
    tracer = tracer_provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    with tracer.start_as_current_span(
        "chat gpt-4o-mini",
        attributes={"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini"},
    ) as span:
        ctx = span.get_span_context()
        logger.emit(
            LogRecord(
                event_name="gen_ai.user.message",
                body={"content": "Say this is a test"},
                attributes={"gen_ai.system": "openai"},
                trace_id=ctx.trace_id,
                span_id=ctx.span_id,
                trace_flags=ctx.trace_flags,
            )
        )
        logger.emit(
            LogRecord(
                event_name="gen_ai.choice",
                body={
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "This is a test."},
                },
                attributes={"gen_ai.system": "openai"},
                trace_id=ctx.trace_id,
                span_id=ctx.span_id,
                trace_flags=ctx.trace_flags,
            )
        )
    logger_provider.shutdown()  # the log records reach the collector before the span does
    tracer_provider.shutdown()
    collector.flush()
    trace_id = format(ctx.trace_id, "032x")
    events = query(collector, f"SELECT event_name FROM events WHERE trace_id = '{trace_id}' ORDER BY time_unix_nano")
    assert [e[0] for e in events] == ["gen_ai.user.message", "gen_ai.choice"]
    row = query_dicts(collector, f"SELECT * FROM spans_with_content WHERE trace_id = '{trace_id}'")[0]
    inputs, outputs = json.loads(row["input_messages"]), json.loads(row["output_messages"])
    assert inputs[0]["role"] == "user" and inputs[0]["parts"][0]["content"] == "Say this is a test"
    assert outputs[0]["role"] == "assistant" and outputs[0]["parts"][0]["content"] == "This is a test."


def test_span_envelope_is_kept_losslessly(collector: Collector) -> None:
    """Trace state, flags, dropped counts and scope attributes survive ingest (docs/design.md invariant 8)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from tests.conftest import grpc_export

    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = "lib"
    attribute = scope_spans.scope.attributes.add()
    attribute.key, attribute.value.int_value = "scope.level", 3
    span = scope_spans.spans.add()
    span.trace_id, span.span_id, span.name = b"\x0a" * 16, b"\x0b" * 8, "envelope"
    span.start_time_unix_nano, span.end_time_unix_nano = 1_790_000_000_000_000_000, 1_790_000_000_000_000_100
    span.trace_state, span.flags = "vendor=abc", 257
    span.dropped_events_count, span.dropped_links_count = 4, 2
    grpc_export(collector.grpc_port, request.SerializeToString())
    collector.flush()
    row = query_dicts(collector, "SELECT * FROM spans")[0]
    assert (row["trace_state"], row["flags"], row["dropped_events_count"], row["dropped_links_count"]) == (
        "vendor=abc",
        257,
        4,
        2,
    )
    assert json.loads(row["scope_attributes"]) == {"scope.level": 3}
