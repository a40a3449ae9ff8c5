"""One call to send an agent's traces (and content events) to agentflight: `configure(...)`.

Sets up the OTel SDK: a tracer provider with batching OTLP export (gRPC on :4317 or HTTP on :4318), a
logger provider for the content events some instrumentations emit, the user/session baggage processor,
redaction hooks, and a flush at interpreter exit so the last spans of a short script are not lost.

>>> import sdk_helpers
>>> telemetry = sdk_helpers.configure(
...     endpoint="http://localhost:4317", api_key=None, service_name="travel-agent", set_global=False
... )
>>> telemetry.shutdown()
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from sdk_helpers import steps
from sdk_helpers.context import BaggageAttributes
from sdk_helpers.redaction import RedactingLogProcessor, RedactingSpanExporter, Redactor

log = logging.getLogger(__name__)

DEFAULT_GRPC = "http://localhost:4317"
DEFAULT_HTTP = "http://localhost:4318"
# Export every second, in batches the collector takes in one request; 2,048 queued spans per process keeps
# memory bounded if the collector is down (older spans are dropped and counted by the SDK, never blocking).
EXPORT_INTERVAL_MS = 1000
BATCH_SIZE = 512
QUEUE_SIZE = 2048


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    logger_provider: LoggerProvider

    def flush(self, timeout_millis: int = 10_000) -> bool:
        ok = self.tracer_provider.force_flush(timeout_millis)
        return self.logger_provider.force_flush(timeout_millis) and ok

    def shutdown(self) -> None:
        self.flush()
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


def _exporters(protocol: str, endpoint: str, headers: dict[str, str]) -> tuple[SpanExporter, LogRecordExporter]:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

        insecure = not endpoint.startswith("https://")
        return (
            GrpcSpans(endpoint=endpoint, insecure=insecure, headers=headers),
            GrpcLogs(endpoint=endpoint, insecure=insecure, headers=headers),
        )
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

        base = endpoint.rstrip("/")
        return HttpSpans(endpoint=f"{base}/v1/traces", headers=headers), HttpLogs(
            endpoint=f"{base}/v1/logs", headers=headers
        )
    raise ValueError(f"configure: protocol must be 'grpc' or 'http', got {protocol!r}")


def configure(
    endpoint: str | None = None,
    *,
    api_key: str | None = None,
    service_name: str | None = None,
    protocol: str | None = None,
    redact: Sequence[Redactor] = (),
    resource_attributes: Mapping[str, Any] | None = None,
    set_global: bool = True,
) -> Telemetry:
    """Start exporting. Arguments left out come from the environment: `AGENTFLIGHT_ENDPOINT` (else
    `OTEL_EXPORTER_OTLP_ENDPOINT`, else localhost), `AGENTFLIGHT_API_KEY`, `OTEL_SERVICE_NAME`,
    `AGENTFLIGHT_PROTOCOL` (`grpc` or `http`). With `set_global`, instrumentations that use the global
    providers (openai-v2, OpenInference, ...) export through it too."""
    protocol = protocol or os.environ.get("AGENTFLIGHT_PROTOCOL", "grpc")
    if protocol not in ("grpc", "http"):
        raise ValueError(f"configure: protocol must be 'grpc' or 'http', got {protocol!r}")
    endpoint = (
        endpoint
        or os.environ.get("AGENTFLIGHT_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or (DEFAULT_GRPC if protocol == "grpc" else DEFAULT_HTTP)
    )
    api_key = api_key if api_key is not None else os.environ.get("AGENTFLIGHT_API_KEY")
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    resource = Resource.create(
        {"service.name": service_name or os.environ.get("OTEL_SERVICE_NAME", "agent"), **(resource_attributes or {})}
    )
    span_exporter, log_exporter = _exporters(protocol, endpoint, headers)
    if redact:
        span_exporter = RedactingSpanExporter(span_exporter, redact)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BaggageAttributes())
    tracer_provider.add_span_processor(
        BatchSpanProcessor(
            span_exporter,
            schedule_delay_millis=EXPORT_INTERVAL_MS,
            max_export_batch_size=BATCH_SIZE,
            max_queue_size=QUEUE_SIZE,
        )
    )
    logger_provider = LoggerProvider(resource=resource)
    if redact:
        logger_provider.add_log_record_processor(RedactingLogProcessor(redact))
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(log_exporter, schedule_delay_millis=EXPORT_INTERVAL_MS)
    )
    telemetry = Telemetry(tracer_provider, logger_provider)
    steps.use_provider(tracer_provider)
    if set_global:
        from opentelemetry import _logs

        trace.set_tracer_provider(tracer_provider)
        _logs.set_logger_provider(logger_provider)
    atexit.register(telemetry.shutdown)
    log.info("sdk_helpers: exporting %s to %s as %s", protocol, endpoint, resource.attributes.get("service.name"))
    return telemetry
