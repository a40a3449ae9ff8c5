"""OTLP/gRPC receiver: TraceService/Export and LogsService/Export with raw-bytes handlers.

grpcio answers INTERNAL (which clients treat as final and drop the batch) when it cannot deserialize a
request, so the handlers take the raw bytes and we parse them ourselves: undecodable → INVALID_ARGUMENT.
Overload answers UNAVAILABLE with a RetryInfo delay both in the status details and in the
`google.rpc.retryinfo-bin` trailer, which is the one the Python exporter reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from collector.ingest import Ingestor, Outcome, Status
from store.keys import key_from_headers

log = logging.getLogger(__name__)

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
_GRPC_CODES = {
    Status.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Status.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    Status.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Status.OVERLOADED: grpc.StatusCode.UNAVAILABLE,
    Status.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}


def _retry_trailers(outcome: Outcome) -> list[tuple[str, bytes]]:
    seconds = int(outcome.retry_after_seconds)
    retry = error_details_pb2.RetryInfo(
        retry_delay=Duration(seconds=seconds, nanos=int((outcome.retry_after_seconds - seconds) * 1e9))
    )
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=outcome.message)
    status.details.add().Pack(retry)
    return [
        ("google.rpc.retryinfo-bin", retry.SerializeToString()),
        ("grpc-status-details-bin", status.SerializeToString()),
    ]


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self._methods: dict[str, grpc.RpcMethodHandler] = {
            TRACE_METHOD: grpc.unary_unary_rpc_method_handler(self._make("traces")),
            LOGS_METHOD: grpc.unary_unary_rpc_method_handler(self._make("logs")),
        }

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._methods.get(handler_call_details.method)

    def _make(self, signal: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def handle(body: bytes, context: grpc.ServicerContext) -> bytes:
            return self._export(signal, body, context)

        return handle

    def _export(self, signal: str, body: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = {key.lower(): value for key, value in context.invocation_metadata()}
        authorization = metadata.get("authorization")
        api_key = metadata.get("x-api-key")
        project = self.ingestor.authenticate(
            key_from_headers(
                authorization if isinstance(authorization, str) else None,
                api_key if isinstance(api_key, str) else None,
            )
        )
        if project is None:
            self.ingestor.finish("grpc", signal, Outcome(Status.UNAUTHENTICATED))
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing, unknown or revoked API key")
            raise AssertionError("unreachable: abort raises")
        size = len(body)
        refused = self.ingestor.reserve(size)
        if refused is not None:
            self._abort(signal, context, self.ingestor.finish("grpc", signal, refused))
        try:
            outcome = self.ingestor.export("grpc", signal, project, body, "protobuf")
        finally:
            self.ingestor.release(size)
        if outcome.status is not Status.OK:
            self._abort(signal, context, outcome)
        if signal == "traces":
            traces = ExportTraceServiceResponse()
            if outcome.rejected:
                traces.partial_success.rejected_spans = outcome.rejected_total
                traces.partial_success.error_message = outcome.rejection_message()
            return traces.SerializeToString()
        logs = ExportLogsServiceResponse()
        if outcome.rejected:
            logs.partial_success.rejected_log_records = outcome.rejected_total
            logs.partial_success.error_message = outcome.rejection_message()
        return logs.SerializeToString()

    def _abort(self, signal: str, context: grpc.ServicerContext, outcome: Outcome) -> None:
        if outcome.retry_after_seconds:
            context.set_trailing_metadata(_retry_trailers(outcome))
        context.abort(_GRPC_CODES[outcome.status], outcome.message or outcome.status.value)


def start_grpc_server(
    ingestor: Ingestor,
    host: str,
    port: int,
    *,
    max_request_bytes: int,
    workers: int = 16,
    tls: tuple[bytes, bytes] | None = None,
) -> tuple[grpc.Server, int]:
    """Start the receiver; returns the server and the bound port (port 0 picks a free one). With `tls`
    (certificate chain, private key; PEM) it accepts TLS connections only."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otlp-grpc"),
        handlers=[_Handler(ingestor)],
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ],
        maximum_concurrent_rpcs=workers * 8,
    )
    if tls is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        chain, key = tls
        bound = server.add_secure_port(f"{host}:{port}", grpc.ssl_server_credentials([(key, chain)]))
    if bound == 0:
        raise OSError(f"cannot bind the OTLP gRPC receiver to {host}:{port}")
    server.start()
    log.info("OTLP gRPC receiver on %s:%d%s", host, bound, " (TLS)" if tls else "")
    return server, bound
