"""Projects and keys on both transports, and overload answered with retry hints that real clients obey."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collector.service import Collector
from store.keys import create_key, revoke_key
from tests.conftest import grpc_export, query, start_collector
from tests.test_bad_input import _request


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[Collector, str, str, str]]:
    data = tmp_path / "data"
    key_a, record_a = create_key(data / "keys.json", "acme")
    key_b, _ = create_key(data / "keys.json", "globex")
    running = start_collector(data)
    yield running, key_a, key_b, record_a.key_id
    running.stop()


def _projects(c: Collector) -> dict[str, list[str]]:
    c.flush()
    out: dict[str, list[str]] = {}
    for project, name in query(c, "SELECT project, name FROM spans ORDER BY name"):
        out.setdefault(project, []).append(name)
    return out


def test_grpc_refuses_missing_and_wrong_keys(keyed: tuple[Collector, str, str, str]) -> None:
    c, key_a, _, _ = keyed
    for metadata in (None, [("authorization", "Bearer nope")], [("x-api-key", "af_wrong")]):
        with pytest.raises(grpc.RpcError) as info:
            grpc_export(c.grpc_port, _request(["refused"]).SerializeToString(), metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    grpc_export(
        c.grpc_port, _request(["via-bearer"]).SerializeToString(), metadata=[("authorization", f"Bearer {key_a}")]
    )
    grpc_export(
        c.grpc_port, _request(["via-x-api-key"], trace_byte=2).SerializeToString(), metadata=[("x-api-key", key_a)]
    )
    assert _projects(c) == {"acme": ["via-bearer", "via-x-api-key"]}
    assert c.metrics.requests[("grpc", "traces", "unauthenticated")] == 3


def test_http_refuses_missing_wrong_and_revoked_keys(keyed: tuple[Collector, str, str, str]) -> None:
    c, key_a, key_b, key_a_id = keyed
    url = f"http://127.0.0.1:{c.http_port}/v1/traces"
    body = _request(["http"]).SerializeToString()
    headers = {"content-type": "application/x-protobuf"}
    assert httpx.post(url, content=body, headers=headers).status_code == 401
    assert httpx.post(url, content=body, headers={**headers, "authorization": "Bearer bad"}).status_code == 401
    assert httpx.post(url, content=body, headers={**headers, "x-api-key": key_b}).status_code == 200
    assert revoke_key(c.settings.keys_path, key_a_id)
    c.keys._checked = 0.0  # the key ring re-reads the file at most once a second; do not wait for it
    assert httpx.post(url, content=body, headers={**headers, "authorization": f"Bearer {key_a}"}).status_code == 401
    assert _projects(c) == {"globex": ["http"]}


def test_project_comes_from_the_key_never_from_attributes(keyed: tuple[Collector, str, str, str]) -> None:
    c, _, key_b, _ = keyed
    request = _request(["spoof"])
    attribute = request.resource_spans[0].resource.attributes.add()
    attribute.key, attribute.value.string_value = "project", "acme"
    grpc_export(c.grpc_port, request.SerializeToString(), metadata=[("x-api-key", key_b)])
    assert _projects(c) == {"globex": ["spoof"]}


def test_overload_answers_unavailable_with_retry_info(collector: Collector) -> None:
    collector.ingestor._backlog_bytes = lambda: collector.settings.max_wal_backlog_bytes + 1
    with pytest.raises(grpc.RpcError) as info:
        grpc_export(collector.grpc_port, _request(["overloaded"]).SerializeToString())
    error = info.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    trailers = dict(error.trailing_metadata())  # type: ignore[attr-defined]
    retry = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    assert 0 < retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9 <= 2
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.details[0].Is(error_details_pb2.RetryInfo.DESCRIPTOR)
    response = httpx.post(
        f"http://127.0.0.1:{collector.http_port}/v1/traces",
        content=_request(["overloaded"]).SerializeToString(),
        headers={"content-type": "application/x-protobuf"},
    )
    assert response.status_code == 503 and 1 <= int(response.headers["retry-after"]) <= 2


def test_sdk_exporter_retries_after_overload_and_the_span_lands(collector: Collector) -> None:
    """The real Python exporter reads the retryinfo trailer, waits, and re-sends; nothing is lost."""
    refusals = {"left": 2}

    def backlog() -> int:
        if refusals["left"] > 0:
            refusals["left"] -= 1
            return collector.settings.max_wal_backlog_bytes + 1
        return 0

    collector.ingestor._backlog_bytes = backlog
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(GrpcSpanExporter(endpoint=f"127.0.0.1:{collector.grpc_port}", insecure=True, timeout=10))
    )
    with provider.get_tracer("t").start_as_current_span("retried"):
        pass
    provider.shutdown()
    collector.flush()
    assert refusals["left"] == 0
    assert query(collector, "SELECT name FROM spans") == [("retried",)]
    assert collector.metrics.requests[("grpc", "traces", "overloaded")] == 2
