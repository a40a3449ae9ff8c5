"""OTLP/HTTP receiver (Starlette app): POST /v1/traces and /v1/logs in protobuf or JSON, gzip or not,
plus GET /health and GET /metrics (Prometheus text) for the ingest counters.

Bodies are read in chunks against the size limit and gunzipped incrementally against the same limit, so
a 100 MB body or a gzip bomb is refused after reading at most the limit, never held in memory whole.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable

from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from collector.admission import UndecodableRequest
from collector.ingest import Ingestor, Outcome, Status
from collector.otlp_json import OtlpJsonError
from store.keys import key_from_headers

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_HTTP_CODES = {
    Status.OK: 200,
    Status.UNAUTHENTICATED: 401,
    Status.INVALID: 400,
    Status.TOO_LARGE: 413,
    Status.OVERLOADED: 503,
    Status.UNAVAILABLE: 503,
}


class _TooLarge(Exception):
    pass


class _BadEncoding(Exception):
    pass


async def _read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    received = bytearray()
    async for chunk in chunks:
        received += chunk
        if len(received) > limit:
            raise _TooLarge(f"request body exceeds the {limit}-byte limit")
    return bytes(received)


def _gunzip_limited(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=47)  # gzip or zlib header, detected
    out = bytearray()
    try:
        chunk = inflater.decompress(data, limit + 1 - len(out))
        out += chunk
        while inflater.unconsumed_tail and len(out) <= limit:
            out += inflater.decompress(inflater.unconsumed_tail, limit + 1 - len(out))
    except zlib.error as exc:
        raise _BadEncoding(f"body is not valid gzip: {exc}") from None
    if len(out) > limit:
        raise _TooLarge(f"decompressed body exceeds the {limit}-byte limit")
    if not inflater.eof:
        raise _BadEncoding("gzip body is truncated")
    return bytes(out)


def _media_type(request: Request) -> str | None:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == PROTOBUF:
        return "protobuf"
    if content_type == JSON:
        return "json"
    return None


def _error(status: Status, message: str, media: str, retry_after: float = 0.0) -> Response:
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    code = _HTTP_CODES[status]
    if media == "protobuf":
        body = status_pb2.Status(code=code, message=message).SerializeToString()
        return Response(body, status_code=code, media_type=PROTOBUF, headers=headers)
    return JSONResponse({"code": code, "message": message}, status_code=code, headers=headers)


def _success(signal: str, outcome: Outcome, media: str) -> Response:
    if signal == "traces":
        traces = ExportTraceServiceResponse()
        if outcome.rejected:
            traces.partial_success.rejected_spans = outcome.rejected_total
            traces.partial_success.error_message = outcome.rejection_message()
        message: ExportTraceServiceResponse | ExportLogsServiceResponse = traces
    else:
        logs = ExportLogsServiceResponse()
        if outcome.rejected:
            logs.partial_success.rejected_log_records = outcome.rejected_total
            logs.partial_success.error_message = outcome.rejection_message()
        message = logs
    if media == "protobuf":
        return Response(message.SerializeToString(), media_type=PROTOBUF)
    payload: dict[str, object] = {}
    if outcome.rejected:
        key = "rejectedSpans" if signal == "traces" else "rejectedLogRecords"
        payload["partialSuccess"] = {key: str(outcome.rejected_total), "errorMessage": outcome.rejection_message()}
    return JSONResponse(payload)


def build_http_app(ingestor: Ingestor, health: Callable[[], dict[str, object]]) -> Starlette:
    async def export(request: Request, signal: str) -> Response:
        media = _media_type(request)
        if media is None:
            ingestor.finish("http", signal, Outcome(Status.INVALID, "unsupported content type"))
            return JSONResponse({"code": 415, "message": f"Content-Type must be {PROTOBUF} or {JSON}"}, status_code=415)
        project = ingestor.authenticate(
            key_from_headers(request.headers.get("authorization"), request.headers.get("x-api-key"))
        )
        if project is None:
            ingestor.finish("http", signal, Outcome(Status.UNAUTHENTICATED))
            return _error(Status.UNAUTHENTICATED, "missing, unknown or revoked API key", media)
        declared = request.headers.get("content-length")
        size = int(declared) if declared and declared.isdigit() else 0
        refused = ingestor.reserve(size)
        if refused is not None:
            ingestor.finish("http", signal, refused)
            return _error(refused.status, refused.message, media, refused.retry_after_seconds)
        try:
            try:
                body = await _read_limited(request.stream(), ingestor.max_request_bytes)
                encoding = request.headers.get("content-encoding", "identity").strip().lower()
                if encoding == "gzip":
                    body = await asyncio.to_thread(_gunzip_limited, body, ingestor.max_request_bytes)
                elif encoding not in ("identity", ""):
                    raise _BadEncoding(f"unsupported Content-Encoding {encoding!r}; use gzip or none")
            except _TooLarge as exc:
                outcome = ingestor.finish("http", signal, Outcome(Status.TOO_LARGE, str(exc)))
                return _error(outcome.status, outcome.message, media)
            except _BadEncoding as exc:
                outcome = ingestor.finish("http", signal, Outcome(Status.INVALID, str(exc)))
                return _error(outcome.status, outcome.message, media)
            try:
                admitted = await asyncio.to_thread(ingestor.admit, signal, body, media, project)
            except (UndecodableRequest, OtlpJsonError) as exc:
                outcome = ingestor.finish("http", signal, Outcome(Status.INVALID, str(exc)))
                return _error(outcome.status, outcome.message, media)
            future = ingestor.log_admitted(signal, project, admitted)
            if future is not None:
                try:
                    await asyncio.wrap_future(future)
                except Exception:
                    outcome = ingestor.finish(
                        "http",
                        signal,
                        Outcome(Status.UNAVAILABLE, "write-ahead log unavailable", retry_after_seconds=2),
                    )
                    return _error(outcome.status, outcome.message, media, outcome.retry_after_seconds)
            outcome = ingestor.finish("http", signal, ingestor.accepted(signal, admitted))
            return _success(signal, outcome, media)
        finally:
            ingestor.release(size)

    async def traces(request: Request) -> Response:
        return await export(request, "traces")

    async def logs(request: Request) -> Response:
        return await export(request, "logs")

    async def health_route(_: Request) -> Response:
        return JSONResponse({"status": "ok", **health()})

    async def metrics_route(_: Request) -> Response:
        return PlainTextResponse(ingestor.metrics.prometheus(), media_type="text/plain; version=0.0.4")

    return Starlette(
        routes=[
            Route("/v1/traces", traces, methods=["POST"]),
            Route("/v1/logs", logs, methods=["POST"]),
            Route("/health", health_route, methods=["GET"]),
            Route("/metrics", metrics_route, methods=["GET"]),
        ]
    )
