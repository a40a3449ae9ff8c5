"""Bad input gets the right status, the good spans of a mixed request are stored, the server stays up."""

from __future__ import annotations

import gzip
import json

import grpc
import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.service import Collector
from tests.conftest import grpc_export, query

NOW = 1_790_000_000_000_000_000


def _request(names: list[str], *, trace_byte: int = 1, trace_id: bytes | None = None) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    kv = resource_spans.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "bad-input-test"
    scope_spans = resource_spans.scope_spans.add()
    for index, name in enumerate(names):
        span = scope_spans.spans.add()
        span.trace_id = trace_id or bytes([trace_byte]) * 16
        span.span_id = (index + 1).to_bytes(8, "big")
        span.name = name
        span.start_time_unix_nano = NOW + index
        span.end_time_unix_nano = NOW + index + 1000
    return request


def _names(c: Collector) -> list[str]:
    c.flush()
    return sorted(row[0] for row in query(c, "SELECT name FROM spans"))


def _still_up(c: Collector) -> None:
    response, _ = grpc_export(c.grpc_port, _request(["alive"], trace_byte=9).SerializeToString())
    assert ExportTraceServiceResponse.FromString(response).partial_success.rejected_spans == 0
    assert httpx.get(f"http://127.0.0.1:{c.http_port}/health").json()["status"] == "ok"


def test_invalid_utf8_rejects_only_that_span(collector: Collector) -> None:
    body = _request(["good-a", "BADXX", "good-b"]).SerializeToString().replace(b"BADXX", b"B\xff\xfeXX")
    response, _ = grpc_export(collector.grpc_port, body)
    partial = ExportTraceServiceResponse.FromString(response).partial_success
    assert partial.rejected_spans == 1 and "invalid_utf8" in partial.error_message
    assert _names(collector) == ["good-a", "good-b"]
    assert collector.metrics.spans_rejected["invalid_utf8"] == 1
    _still_up(collector)


def test_wrong_id_lengths_and_end_before_start_are_counted(collector: Collector) -> None:
    request = _request(["ok", "short-trace", "short-span", "zero-span", "backwards", "bad-parent"])
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[1].trace_id = b"\x01" * 8
    spans[2].span_id = b"\x02" * 4
    spans[3].span_id = bytes(8)
    spans[4].end_time_unix_nano = spans[4].start_time_unix_nano - 1
    spans[5].parent_span_id = b"\x03" * 3
    response, _ = grpc_export(collector.grpc_port, request.SerializeToString())
    assert ExportTraceServiceResponse.FromString(response).partial_success.rejected_spans == 5
    assert _names(collector) == ["ok"]
    assert dict(collector.metrics.spans_rejected) == {
        "bad_trace_id": 1,
        "bad_span_id": 2,
        "end_before_start": 1,
        "bad_parent_span_id": 1,
    }


def test_garbage_bytes_are_invalid_argument(collector: Collector) -> None:
    with pytest.raises(grpc.RpcError) as info:
        grpc_export(collector.grpc_port, b"\xff\x00garbage\x13\x37" * 100)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    response = httpx.post(
        f"http://127.0.0.1:{collector.http_port}/v1/traces",
        content=b"\xff\x00garbage" * 10,
        headers={"content-type": "application/x-protobuf"},
    )
    assert response.status_code == 400
    _still_up(collector)
    assert _names(collector) == ["alive"]


def test_oversized_grpc_request_is_resource_exhausted(collector: Collector) -> None:
    huge = _request(["x" * (100 * 1024 * 1024)]).SerializeToString()  # 100 MB
    with pytest.raises(grpc.RpcError) as info:
        grpc_export(collector.grpc_port, huge)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _still_up(collector)


def test_oversized_http_request_is_413(collector: Collector) -> None:
    huge = _request(["x" * (100 * 1024 * 1024)]).SerializeToString()
    response = httpx.post(
        f"http://127.0.0.1:{collector.http_port}/v1/traces",
        content=huge,
        headers={"content-type": "application/x-protobuf"},
        timeout=60,
    )
    assert response.status_code == 413
    _still_up(collector)


def test_gzip_bomb_is_refused_quickly(collector: Collector) -> None:
    bomb = gzip.compress(b"\x00" * (200 * 1024 * 1024), compresslevel=9)  # ~200 KB on the wire
    assert len(bomb) < 1024 * 1024
    response = httpx.post(
        f"http://127.0.0.1:{collector.http_port}/v1/traces",
        content=bomb,
        headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"},
        timeout=60,
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/x-protobuf"
    assert "decompressed" in status_pb2.Status.FromString(response.content).message
    _still_up(collector)


def test_gzip_protobuf_is_accepted(collector: Collector) -> None:
    body = gzip.compress(_request(["zipped"]).SerializeToString())
    response = httpx.post(
        f"http://127.0.0.1:{collector.http_port}/v1/traces",
        content=body,
        headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"},
    )
    assert response.status_code == 200
    assert _names(collector) == ["zipped"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2, 3]",
        json.dumps({"resourceSpans": {"not": "a list"}}).encode(),
        json.dumps({"resourceSpans": ["not an object"]}).encode(),
    ],
)
def test_json_with_the_wrong_shape_is_400(collector: Collector, body: bytes) -> None:
    response = httpx.post(
        f"http://127.0.0.1:{collector.http_port}/v1/traces", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["message"]
    _still_up(collector)


def test_json_bad_span_among_good_ones(collector: Collector) -> None:
    good = {
        "traceId": "11" * 16,
        "spanId": "22" * 8,
        "name": "good",
        "startTimeUnixNano": str(NOW),
        "endTimeUnixNano": NOW + 5,
        "attributes": [{"key": "n", "value": {"intValue": 3}}],
    }
    bad_id = {**good, "spanId": "nothex!!", "name": "bad-id"}
    bad_attr = {**good, "spanId": "33" * 8, "name": "bad-attr", "attributes": [{"key": "k", "value": {"intValue": []}}]}
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [good, bad_id, bad_attr, "not-a-span"]}]}]}
    response = httpx.post(
        f"http://127.0.0.1:{collector.http_port}/v1/traces",
        content=json.dumps(doc),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] == "3"
    assert _names(collector) == ["good"]


def test_unsupported_content_type_is_415(collector: Collector) -> None:
    response = httpx.post(
        f"http://127.0.0.1:{collector.http_port}/v1/traces", content=b"x", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415


def test_ingest_counters_on_health_and_metrics(collector: Collector) -> None:
    request = _request(["priced", "backwards"])
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[1].end_time_unix_nano = spans[1].start_time_unix_nano - 1
    for key, value in (
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.request.model", "no-such-model-9"),
        ("gen_ai.provider.name", "openai"),
    ):
        attribute = spans[0].attributes.add()
        attribute.key, attribute.value.string_value = key, value
    attribute = spans[0].attributes.add()
    attribute.key, attribute.value.int_value = "gen_ai.usage.input_tokens", 10
    grpc_export(collector.grpc_port, request.SerializeToString())
    collector.flush()
    health = httpx.get(f"http://127.0.0.1:{collector.http_port}/health").json()
    assert health["spans_accepted"] == 1 and health["spans_written"] == 1
    assert health["spans_rejected"] == {"end_before_start": 1}
    assert health["unknown_price_models"] == {"openai/no-such-model-9": 1}
    assert health["spans_without_user"] == 1 and health["wal_depth_bytes"] == 0
    metrics = httpx.get(f"http://127.0.0.1:{collector.http_port}/metrics").text
    assert 'agentflight_spans_rejected_total{reason="end_before_start"} 1.0' in metrics
    assert 'agentflight_unknown_price_model_spans_total{model="openai/no-such-model-9"} 1.0' in metrics
    assert "agentflight_spans_written_total 1.0" in metrics
    row = query(collector, "SELECT cost_usd, cost_status FROM spans")[0]
    assert row == (None, "unknown_model")  # never $0 for a model without a price
