"""Trace export (query/export.py): OTLP/JSON that re-imports to the same rows, and eval cases.

One collector (`source`) receives every captured fixture, a hand-built edge-case trace (orphan span, two
services, every AnyValue type, an error span, links, trace state, dropped counts) and GenAI log records. Every
stored trace is exported with `trace_to_otlp_json`, its log records with `logs_to_otlp_json`, and both are POSTed
over HTTP/JSON to a second, fresh collector (`target`). Every column of every span and event row must come back
equal, `received_at_unix_nano` aside (an int attribute that came back as a string, a lost event, a changed
scope... fails the comparison).

Goldens (tests/data/golden/export_*.json); regenerate with
    AGENTFLIGHT_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_export.py -k golden
then review the diff.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.service import Collector
from query.export import any_value, logs_to_otlp_json, trace_to_eval_case, trace_to_otlp_json
from tests.conftest import CAPTURED, FIXTURES, grpc_export, query_dicts, start_collector

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden"
UPDATE_GOLDEN = os.environ.get("AGENTFLIGHT_UPDATE_GOLDEN") == "1"
CAPTURED_FILES = sorted(p for p in CAPTURED.iterdir() if p.suffix in (".binpb", ".json"))
NOT_COMPARED = ("received_at_unix_nano",)  # a new arrival; `project` is "default" on both sides
POST_BATCH = 20  # traces per re-import request (each request is one WAL fsync: keeps the module fast)

# ------------------------------------------------------------------------------------------- the edge trace

EDGE_TRACE = "e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0"
ROOT, CHAT1, CHAT2, TOOL, BACKEND, ORPHAN = (f"{i:016x}" for i in range(0xA1, 0xA7))
MISSING_PARENT = "deadbeefdeadbeef"
T0 = 1_790_000_000_000_000_000
MS = 1_000_000


def _s(text: str) -> dict[str, Any]:
    return {"stringValue": text}


def _i(number: int) -> dict[str, Any]:
    return {"intValue": str(number)}


def _kv(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"key": key, "value": value}


TYPED_ATTRIBUTES = [
    _kv("typed.int", _i(42)),
    _kv("typed.int_as_number", {"intValue": 7}),  # OTel JS sends numbers
    _kv("typed.int64_min", _i(-(2**63))),
    _kv("typed.int64_max", _i(2**63 - 1)),
    _kv("typed.double", {"doubleValue": 0.2}),
    _kv("typed.double_integral", {"doubleValue": 3.0}),  # must stay a double, not become int 3
    _kv("typed.double_zero", {"doubleValue": 0}),
    _kv("typed.double_negative_zero", {"doubleValue": -0.0}),
    _kv("typed.double_huge", {"doubleValue": 1e300}),
    _kv("typed.double_tiny", {"doubleValue": 5e-324}),
    _kv("typed.nan", {"doubleValue": "NaN"}),
    _kv("typed.inf", {"doubleValue": "-Infinity"}),
    _kv("typed.bool_true", {"boolValue": True}),
    _kv("typed.bool_false", {"boolValue": False}),
    _kv("typed.string", _s('héllo ✓ \u0007 \n "quoted"')),
    _kv("typed.string_empty", _s("")),
    _kv("typed.string_numeric", _s("42")),  # must stay a string, not become int 42
    _kv("typed.bytes", {"bytesValue": base64.b64encode(b"\x00\x01\xfe\xff").decode()}),
    _kv("typed.empty_value", {}),
    _kv("typed.array_mixed", {"arrayValue": {"values": [_s("a"), _i(1), {"doubleValue": 1.5}, {"boolValue": True}]}}),
    _kv("typed.array_empty", {"arrayValue": {}}),
    _kv("typed.array_nested", {"arrayValue": {"values": [{"arrayValue": {"values": [_i(1), _i(2)]}}, {}]}}),
    _kv(
        "typed.kvlist",
        {
            "kvlistValue": {
                "values": [
                    _kv("inner.int", _i(5)),
                    _kv("inner.double", {"doubleValue": 5.0}),
                    _kv("inner.list", {"arrayValue": {"values": [{"kvlistValue": {"values": [_kv("x", _s("y"))]}}]}}),
                    _kv("inner.bytes", {"bytesValue": base64.b64encode(b"\xab").decode()}),
                ]
            }
        },
    ),
    _kv("typed.kvlist_empty", {"kvlistValue": {}}),
]


def _span(span_id: str, parent: str | None, name: str, start_ms: int, end_ms: int, **extra: Any) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": EDGE_TRACE,
        "spanId": span_id,
        "name": name,
        "startTimeUnixNano": str(T0 + start_ms * MS),
        "endTimeUnixNano": str(T0 + end_ms * MS),
        "kind": 1,
    }
    if parent is not None:
        span["parentSpanId"] = parent
    span.update(extra)
    return span


def edge_trace_request() -> dict[str, Any]:
    """A two-service agent trace with an orphan, an error and every attribute value type (OTLP/JSON)."""
    chat_attrs = [
        _kv("gen_ai.operation.name", _s("chat")),
        _kv("gen_ai.provider.name", _s("openai")),
        _kv("gen_ai.request.model", _s("gpt-4o-mini")),
        _kv("gen_ai.request.temperature", {"doubleValue": 0.0}),
        _kv("gen_ai.request.stop_sequences", {"arrayValue": {"values": [_s("END")]}}),
        _kv("gen_ai.usage.input_tokens", _i(30)),
        _kv("gen_ai.usage.output_tokens", _i(5)),
    ]
    frontend = {
        "resource": {
            "attributes": [
                _kv("service.name", _s("edge-frontend")),
                _kv("deployment.environment", _s("test")),
                _kv("host.cpu.count", _i(2)),
                _kv("host.load", {"doubleValue": 0.5}),
                _kv("host.tags", {"arrayValue": {"values": [_s("a"), _s("b")]}}),
                _kv("host.id.raw", {"bytesValue": base64.b64encode(b"\x10\x20").decode()}),
            ]
        },
        "scopeSpans": [
            {
                "scope": {
                    "name": "edge.agent",
                    "version": "1.0",
                    "attributes": [_kv("scope.flag", {"boolValue": True})],
                },
                "spans": [
                    _span(
                        ROOT,
                        None,
                        "invoke_agent edge-agent",
                        0,
                        100,
                        kind=2,
                        traceState="vendor=abc,other=1",
                        flags=0x301,
                        attributes=[
                            _kv("gen_ai.operation.name", _s("invoke_agent")),
                            _kv("gen_ai.agent.name", _s("edge-agent")),
                            _kv("user.id", _s("user-7")),
                            _kv("session.id", _s("session-7")),
                            *TYPED_ATTRIBUTES,
                        ],
                        droppedAttributesCount=3,
                        events=[
                            {
                                "name": "checkpoint",
                                "timeUnixNano": str(T0 + 1 * MS),
                                "attributes": TYPED_ATTRIBUTES[:12],
                            },
                            {"name": "bare", "timeUnixNano": str(T0 + 2 * MS)},
                        ],
                        links=[
                            {
                                "traceId": "0123456789abcdef0123456789abcdef",
                                "spanId": "0123456789abcdef",
                                "attributes": [_kv("link.kind", _s("follows")), _kv("link.n", _i(1))],
                            },
                            {"traceId": "fedcba9876543210fedcba9876543210", "spanId": "fedcba9876543210"},
                        ],
                        status={"code": 1, "message": ""},
                    ),
                ],
            },
            {
                "scope": {"name": "opentelemetry.instrumentation.openai_v2", "version": "2.4b0"},
                "spans": [
                    _span(
                        CHAT1,
                        ROOT,
                        "chat gpt-4o-mini",
                        10,
                        20,
                        kind=3,
                        attributes=[*chat_attrs, _kv("gen_ai.response.id", _s("resp-edge-1"))],
                    ),
                    _span(
                        CHAT2,
                        ROOT,
                        "chat gpt-4o-mini",
                        50,
                        60,
                        kind=3,
                        attributes=[*chat_attrs, _kv("gen_ai.response.id", _s("resp-edge-2"))],
                    ),
                ],
            },
            {
                "scope": {
                    "name": "edge.agent",
                    "version": "1.0",
                    "attributes": [_kv("scope.flag", {"boolValue": True})],
                },
                "spans": [
                    _span(
                        TOOL,
                        ROOT,
                        "execute_tool lookup",
                        25,
                        45,
                        attributes=[
                            _kv("gen_ai.operation.name", _s("execute_tool")),
                            _kv("gen_ai.tool.name", _s("lookup")),
                            _kv("gen_ai.tool.call.id", _s("call_edge_1")),
                            _kv("gen_ai.tool.call.arguments", _s('{"city": "Oslo"}')),
                            _kv("error.type", _s("TimeoutError")),
                        ],
                        events=[
                            {
                                "name": "exception",
                                "timeUnixNano": str(T0 + 44 * MS),
                                "attributes": [
                                    _kv("exception.type", _s("TimeoutError")),
                                    _kv("exception.message", _s("backend did not answer")),
                                    _kv("exception.escaped", {"boolValue": True}),
                                ],
                            }
                        ],
                        status={"code": 2, "message": "backend did not answer"},
                    ),
                ],
            },
        ],
    }
    backend = {
        "resource": {"attributes": [_kv("service.name", _s("edge-backend")), _kv("service.version", _s("9"))]},
        "scopeSpans": [
            {
                "scope": {"name": "edge.backend"},
                "spans": [
                    _span(
                        BACKEND,
                        TOOL,
                        "GET /lookup",
                        26,
                        44,
                        kind=2,
                        flags=0x100,
                        attributes=[_kv("http.request.method", _s("GET")), _kv("http.response.status_code", _i(504))],
                        status={"code": 2},
                    ),
                    # parent never arrived: an orphan in the set
                    _span(ORPHAN, MISSING_PARENT, "late background job", 70, 90, kind=5),
                ],
            }
        ],
    }
    return {"resourceSpans": [frontend, backend]}


def edge_logs_request() -> dict[str, Any]:
    """GenAI content log records for the edge trace's chat spans (which carry no inline content)."""
    resource = {"attributes": [_kv("service.name", _s("edge-frontend")), _kv("telemetry.sdk.language", _s("python"))]}

    def record(name: str, ms: int, body: dict[str, Any], span_id: str | None, **extra: Any) -> dict[str, Any]:
        rec: dict[str, Any] = {"timeUnixNano": str(T0 + ms * MS), "eventName": name, "body": body}
        if span_id is not None:
            rec.update(traceId=EDGE_TRACE, spanId=span_id)
        rec.update(extra)
        return rec

    kv = "kvlistValue"
    records = [
        record("gen_ai.system.message", 10, {kv: {"values": [_kv("content", _s("You are terse."))]}}, CHAT1),
        record("gen_ai.user.message", 11, {kv: {"values": [_kv("content", _s("Weather in Oslo?"))]}}, CHAT1),
        # only an observed time; the event name as an attribute (older SDKs)
        {
            "observedTimeUnixNano": str(T0 + 19 * MS),
            "traceId": EDGE_TRACE,
            "spanId": CHAT1,
            "severityNumber": 9,
            "severityText": "INFO",
            "attributes": [_kv("event.name", _s("gen_ai.choice")), _kv("gen_ai.system", _s("openai"))],
            "body": {
                kv: {
                    "values": [
                        _kv("index", _i(0)),
                        _kv("finish_reason", _s("tool_calls")),
                        _kv(
                            "message",
                            {
                                kv: {
                                    "values": [
                                        _kv("role", _s("assistant")),
                                        _kv(
                                            "tool_calls",
                                            {
                                                "arrayValue": {
                                                    "values": [
                                                        {
                                                            kv: {
                                                                "values": [
                                                                    _kv("id", _s("call_edge_1")),
                                                                    _kv("type", _s("function")),
                                                                    _kv(
                                                                        "function",
                                                                        {
                                                                            kv: {
                                                                                "values": [
                                                                                    _kv("name", _s("lookup")),
                                                                                    _kv(
                                                                                        "arguments",
                                                                                        _s('{"city":"Oslo"}'),
                                                                                    ),
                                                                                ]
                                                                            }
                                                                        },
                                                                    ),
                                                                ]
                                                            }
                                                        }
                                                    ]
                                                }
                                            },
                                        ),
                                    ]
                                }
                            },
                        ),
                    ]
                }
            },
        },
        # emitted outside the span context: joined to CHAT2 by gen_ai.response.id; structured messages
        record(
            "gen_ai.client.inference.operation.details",
            59,
            {},
            None,
            attributes=[
                _kv("gen_ai.response.id", _s("resp-edge-2")),
                _kv(
                    "gen_ai.input.messages",
                    _s('[{"role":"user","parts":[{"type":"text","content":"Weather in Oslo?"}]}]'),
                ),
                _kv(
                    "gen_ai.output.messages",
                    _s('[{"role":"assistant","parts":[{"type":"text","content":"Cold, I could not check."}]}]'),
                ),
                _kv("typed.bytes", {"bytesValue": base64.b64encode(b"\x01\x02").decode()}),
                _kv("typed.double", {"doubleValue": 2.0}),
                _kv("typed.int", _i(2)),
            ],
        ),
        # a non-GenAI record with a bytes body
        record("app.audit", 95, {"bytesValue": base64.b64encode(b"\xde\xad").decode()}, ROOT, severityNumber=13),
    ]
    return {
        "resourceLogs": [{"resource": resource, "scopeLogs": [{"scope": {"name": "edge.logs"}, "logRecords": records}]}]
    }


# ----------------------------------------------------------------------------------------------- the lakes


def post_json(c: Collector, signal: str, doc: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{c.http_port}/v1/{signal}", json=doc, timeout=60)


def send_captured(c: Collector, path: Path) -> None:
    body = path.read_bytes()
    if path.suffix == ".binpb":
        raw, call = grpc_export(c.grpc_port, body)
        assert call.code() == grpc.StatusCode.OK
        assert ExportTraceServiceResponse.FromString(raw).partial_success.rejected_spans == 0
    else:
        answer = httpx.post(
            f"http://127.0.0.1:{c.http_port}/v1/traces",
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        assert answer.status_code == 200 and "partialSuccess" not in answer.json(), answer.text


def file_trace_ids(path: Path) -> set[str]:
    """The trace ids a fixture file holds, read with the proto classes / json module (not the collector)."""
    body = path.read_bytes()
    if path.suffix == ".binpb":
        request = ExportTraceServiceRequest.FromString(body)
        return {s.trace_id.hex() for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}
    doc = json.loads(body)
    return {s["traceId"].lower() for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]}


def by_trace(rows: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    out: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["trace_id"], []).append(row)
    return out


def comparable(rows: list[dict[str, Any]], key: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(r[k] for k in key): {c: v for c, v in r.items() if c not in NOT_COMPARED} for r in rows}


@dataclass
class Lakes:
    source: Collector
    spans: list[dict[str, Any]]
    events: list[dict[str, Any]]
    reimported_spans: list[dict[str, Any]]
    reimported_events: list[dict[str, Any]]
    answers: list[httpx.Response] = field(default_factory=list)

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [r for r in self.spans if r["trace_id"] == trace_id]

    def content(self, trace_id: str) -> dict[str, tuple[str | None, str | None]]:
        rows = query_dicts(
            self.source,
            f"SELECT span_id, input_messages, output_messages FROM span_content WHERE trace_id = '{trace_id}'",
        )
        return {r["span_id"]: (r["input_messages"], r["output_messages"]) for r in rows}


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lakes]:
    source = start_collector(tmp_path_factory.mktemp("export-source") / "data")
    target = start_collector(tmp_path_factory.mktemp("export-target") / "data")
    try:
        for path in CAPTURED_FILES:
            send_captured(source, path)
        for signal, doc in (
            ("traces", edge_trace_request()),
            ("logs", edge_logs_request()),
            ("logs", json.loads((FIXTURES / "otlp_examples" / "logs.json").read_text())),
        ):
            answer = post_json(source, signal, doc)
            assert answer.status_code == 200 and answer.json() == {}, answer.text
        source.flush()
        spans = query_dicts(source, "SELECT * FROM spans ORDER BY trace_id, span_id")
        events = query_dicts(source, "SELECT * FROM events ORDER BY event_id")

        # one export per trace (spans and its log records), several traces to a request
        answers = []
        span_docs = [trace_to_otlp_json(rows) for rows in by_trace(spans).values()]
        log_docs = [logs_to_otlp_json(rows) for rows in by_trace(events).values()]
        for signal, docs, outer in (("traces", span_docs, "resourceSpans"), ("logs", log_docs, "resourceLogs")):
            for i in range(0, len(docs), POST_BATCH):
                answers.append(
                    post_json(target, signal, {outer: [g for d in docs[i : i + POST_BATCH] for g in d[outer]]})
                )
        target.flush()
        lakes = Lakes(
            source,
            spans,
            events,
            query_dicts(target, "SELECT * FROM spans ORDER BY trace_id, span_id"),
            query_dicts(target, "SELECT * FROM events ORDER BY event_id"),
            answers,
        )
        yield lakes
    finally:
        source.stop()
        target.stop()


# ------------------------------------------------------------------------------------------ round trips


def test_every_export_is_accepted_whole(lakes: Lakes) -> None:
    assert lakes.answers and all(a.status_code == 200 and a.json() == {} for a in lakes.answers), [
        a.text for a in lakes.answers if a.json() != {}
    ]
    assert len(lakes.reimported_spans) == len(lakes.spans) > 350
    assert len(lakes.reimported_events) == len(lakes.events) == 6


@pytest.mark.parametrize("path", CAPTURED_FILES, ids=[p.name for p in CAPTURED_FILES])
def test_captured_traces_round_trip_exactly(lakes: Lakes, path: Path) -> None:
    trace_ids = file_trace_ids(path)
    key = ("trace_id", "span_id")
    before = comparable([r for r in lakes.spans if r["trace_id"] in trace_ids], key)
    after = comparable([r for r in lakes.reimported_spans if r["trace_id"] in trace_ids], key)
    assert before and set(after) == set(before)
    diffs = [(k, col, v, after[k][col]) for k, row in before.items() for col, v in row.items() if after[k][col] != v]
    assert not diffs, diffs[:5]


SPAN_KIND_NAMES = ("SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT",
                   "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER")  # fmt: skip
STATUS_NAMES = ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")


def canonical_value(value: dict[str, Any]) -> Any:
    """An OTLP/JSON AnyValue with its type kept and the spelling variants (intValue as number or string) removed."""
    if not value:
        return None
    ((kind, inner),) = value.items()
    if kind == "intValue":
        return ("int", int(inner))
    if kind == "doubleValue":
        return ("double", float(inner))
    if kind == "arrayValue":
        return ("array", [canonical_value(v) for v in (inner or {}).get("values", [])])
    if kind == "kvlistValue":
        return ("kvlist", canonical_attributes((inner or {}).get("values", [])))
    return (kind, inner)


def canonical_attributes(items: list[dict[str, Any]] | None) -> list[tuple[str, Any]]:
    return [(kv["key"], canonical_value(kv.get("value") or {})) for kv in items or []]


def _enum(value: Any, names: tuple[str, ...]) -> int:
    return names.index(value) if isinstance(value, str) else int(value or 0)


def canonical_request(doc: dict[str, Any]) -> dict[str, Any]:
    """span id -> everything OTLP/JSON says about the span, its scope and its resource, spelling-independent."""
    out = {}
    for rs in doc["resourceSpans"]:
        resource = canonical_attributes(rs.get("resource", {}).get("attributes"))
        for ss in rs["scopeSpans"]:
            scope = ss.get("scope", {})
            scope_key = (scope.get("name", ""), scope.get("version", ""), canonical_attributes(scope.get("attributes")))
            for sp in ss["spans"]:
                status = sp.get("status") or {}
                out[sp["spanId"].lower()] = {
                    "resource": resource,
                    "scope": scope_key,
                    "trace_id": sp["traceId"].lower(),
                    "parent": (sp.get("parentSpanId") or "").lower(),
                    "name": sp["name"],
                    "kind": _enum(sp.get("kind"), SPAN_KIND_NAMES),
                    "times": (int(sp["startTimeUnixNano"]), int(sp["endTimeUnixNano"])),
                    "attributes": canonical_attributes(sp.get("attributes")),
                    "events": [
                        (e["name"], int(e["timeUnixNano"]), canonical_attributes(e.get("attributes")))
                        for e in sp.get("events") or []
                    ],
                    "links": [
                        (ln["traceId"].lower(), ln["spanId"].lower(), canonical_attributes(ln.get("attributes")))
                        for ln in sp.get("links") or []
                    ],
                    "status": (_enum(status.get("code"), STATUS_NAMES), status.get("message", "")),
                    "flags": int(sp.get("flags") or 0),
                    "trace_state": sp.get("traceState", ""),
                    "dropped": [
                        int(sp.get(k) or 0)
                        for k in ("droppedAttributesCount", "droppedEventsCount", "droppedLinksCount")
                    ],
                }
    return out


JSON_FILES = [p for p in CAPTURED_FILES if p.suffix == ".json"]


@pytest.mark.parametrize("path", JSON_FILES, ids=[p.name for p in JSON_FILES])
def test_export_says_what_the_client_sent(lakes: Lakes, path: Path) -> None:
    """The export of the stored traces, compared with the client's own OTLP/JSON request (read with the json
    module): the same spans, resources, scopes, and every attribute with its original AnyValue type."""
    sent = canonical_request(json.loads(path.read_bytes()))
    exported: dict[str, Any] = {}
    for trace_id in file_trace_ids(path):
        exported.update(canonical_request(trace_to_otlp_json(lakes.trace(trace_id))))
    assert set(exported) == set(sent)
    diffs = [(k, f, v, exported[k][f]) for k, span in sent.items() for f, v in span.items() if exported[k][f] != v]
    assert not diffs, diffs[:3]


def test_edge_trace_round_trips_exactly(lakes: Lakes) -> None:
    key = ("trace_id", "span_id")
    before = comparable(lakes.trace(EDGE_TRACE), key)
    after = comparable([r for r in lakes.reimported_spans if r["trace_id"] == EDGE_TRACE], key)
    assert len(before) == 6 and after == before

    root = next(r for r in lakes.reimported_spans if r["span_id"] == ROOT)
    attributes = json.loads(root["attributes"])
    # exact types after two trips through the lake: int stays int, an integral double stays a double
    assert attributes["typed.int"] == 42 and type(attributes["typed.int"]) is int
    assert attributes["typed.double_integral"] == 3.0 and type(attributes["typed.double_integral"]) is float
    assert '"typed.double_integral":3.0' in root["attributes"] and '"typed.string_numeric":"42"' in root["attributes"]
    assert attributes["typed.int64_min"] == -(2**63) and attributes["typed.int64_max"] == 2**63 - 1
    assert attributes["typed.empty_value"] is None and attributes["typed.array_empty"] == []
    assert attributes["typed.kvlist"]["inner.list"] == [{"x": "y"}]
    # COLLECTOR (lossy on ingest, by design of collector/decode.py): bytes are stored as lowercase hex and
    # NaN/±Infinity doubles as "nan"/"inf"/"-inf", indistinguishable from strings in the lake. The export can only
    # send them back as stringValue; the stored columns round-trip exactly (compared above), the AnyValue type
    # does not.
    assert attributes["typed.bytes"] == "0001feff" and attributes["typed.nan"] == "nan"
    assert attributes["typed.inf"] == "-inf"
    assert (root["trace_state"], root["flags"], root["dropped_attributes_count"]) == ("vendor=abc,other=1", 0x301, 3)
    assert json.loads(root["scope_attributes"]) == {"scope.flag": True}
    assert [link["attributes"] for link in json.loads(root["links"])] == [{"link.kind": "follows", "link.n": 1}, {}]
    orphan = next(r for r in lakes.reimported_spans if r["span_id"] == ORPHAN)
    assert orphan["parent_span_id"] == MISSING_PARENT and orphan["service_name"] == "edge-backend"


def test_log_records_round_trip_exactly(lakes: Lakes) -> None:
    before = comparable(lakes.events, ("event_id",))
    after = comparable(lakes.reimported_events, ("event_id",))
    # event_id is a content hash of (trace id, span id, time, event name, body JSON, attribute JSON): equal ids
    # mean the re-imported records hashed the same
    assert len(before) == 6 and after == before
    choice = next(e for e in lakes.reimported_events if e["event_name"] == "gen_ai.choice")
    assert choice["time_unix_nano"] == T0 + 19 * MS  # it had only an observed time
    assert json.loads(choice["body"])["index"] == 0
    outside = next(e for e in lakes.reimported_events if e["event_name"] == "gen_ai.client.inference.operation.details")
    assert outside["span_id"] is None and outside["response_id"] == "resp-edge-2"
    example = next(e for e in lakes.reimported_events if e["service_name"] == "my.service")
    assert json.loads(example["attributes"])["double.attribute"] == 637.704
    assert json.loads(example["attributes"])["int.attribute"] == 10


def test_known_collector_gaps_in_json_reimport(tmp_path: Path) -> None:
    """Two COLLECTOR BUGS (not fixed here: collector/ is not this module's) that break the re-import of spans that
    arrived over gRPC/protobuf. The export itself carries the stored values (asserted below).

    1. collector/otlp_json.py `_span` never reads `droppedEventsCount` / `droppedLinksCount`: over HTTP/JSON both
       are always stored as 0 (the protobuf path stores them). Fix: read them like `droppedAttributesCount`.
    2. The protobuf path stores a span whose link has a malformed id (admission.span_rejection checks only the
       span's own ids; decode stores link ids as whatever hex they are, here "" and "010203"), while the JSON
       parser rejects any span with such a link as bad_shape. Fix: judge link ids the same way on both paths.
    When fixed, these comparisons become plain row equality like the others."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    dropped, bad_link = scope.spans.add(), scope.spans.add()
    for i, span in enumerate((dropped, bad_link)):
        span.trace_id, span.span_id, span.name = bytes(range(1, 17)), bytes(range(1 + i, 9 + i)), f"span {i}"
        span.start_time_unix_nano, span.end_time_unix_nano = T0, T0 + MS
    dropped.dropped_events_count, dropped.dropped_links_count = 1, 2
    bad_link.links.add().span_id = b"\x01\x02\x03"
    c = start_collector(tmp_path / "data")  # re-imported into the same lake: the newest copy is what reads see
    try:
        grpc_export(c.grpc_port, request.SerializeToString())
        c.flush()
        rows = query_dicts(c, "SELECT * FROM spans ORDER BY span_id")
        assert [(r["dropped_events_count"], r["dropped_links_count"]) for r in rows] == [(1, 2), (0, 0)]
        assert json.loads(rows[1]["links"]) == [{"trace_id": "", "span_id": "010203", "attributes": {}}]
        doc = trace_to_otlp_json(rows)
        exported = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
        assert (exported[0]["droppedEventsCount"], exported[0]["droppedLinksCount"]) == (1, 2)
        answer = post_json(c, "traces", doc)
        # BUG 2: the span with the malformed link is refused
        assert answer.json()["partialSuccess"] == {
            "rejectedSpans": "1",
            "errorMessage": "rejected 1 item(s): bad_shape=1",
        }
        c.flush()
        assert query_dicts(c, "SELECT count(*) AS n FROM spans_raw") == [{"n": 3}]
        again = query_dicts(c, f"SELECT * FROM spans WHERE span_id = '{rows[0]['span_id']}'")[0]
        assert again["received_at_unix_nano"] > rows[0]["received_at_unix_nano"]  # the re-imported copy
        # BUG 1: the dropped event/link counts are lost; every other column is equal
        assert (again.pop("dropped_events_count"), again.pop("dropped_links_count")) == (0, 0)
        lost = (*NOT_COMPARED, "dropped_events_count", "dropped_links_count")
        assert {k: v for k, v in again.items() if k not in NOT_COMPARED} == {
            k: v for k, v in rows[0].items() if k not in lost
        }
    finally:
        c.stop()


# ------------------------------------------------------------------------------------------ export shape


def test_otlp_shape_groups_by_resource_and_scope(lakes: Lakes) -> None:
    doc = trace_to_otlp_json(lakes.trace(EDGE_TRACE))
    services = [
        next(a["value"]["stringValue"] for a in rs["resource"]["attributes"] if a["key"] == "service.name")
        for rs in doc["resourceSpans"]
    ]
    assert services == ["edge-frontend", "edge-backend"]
    frontend, backend = doc["resourceSpans"]
    # the two edge.agent scope blocks of the request (same name, version, attributes) are one scope now
    assert [(s["scope"]["name"], [x["name"] for x in s["spans"]]) for s in frontend["scopeSpans"]] == [
        ("edge.agent", ["invoke_agent edge-agent", "execute_tool lookup"]),
        ("opentelemetry.instrumentation.openai_v2", ["chat gpt-4o-mini", "chat gpt-4o-mini"]),
    ]
    (backend_scope,) = backend["scopeSpans"]
    assert backend_scope["scope"] == {"name": "edge.backend", "version": "", "attributes": []}
    root = frontend["scopeSpans"][0]["spans"][0]
    assert root["traceId"] == EDGE_TRACE and root["spanId"] == ROOT and "parentSpanId" not in root
    assert root["kind"] == 2 and root["status"] == {"code": 1, "message": ""}
    assert root["startTimeUnixNano"] == str(T0) and isinstance(root["endTimeUnixNano"], str)
    values = {a["key"]: a["value"] for a in root["attributes"]}
    assert values["typed.int"] == {"intValue": "42"} and values["typed.double_integral"] == {"doubleValue": 3.0}
    assert values["typed.bool_false"] == {"boolValue": False} and values["typed.empty_value"] == {}
    assert values["typed.bytes"] == {"stringValue": "0001feff"}  # stored as hex: see the round-trip test
    assert values["typed.array_nested"] == {"arrayValue": {"values": [{"arrayValue": {"values": [
        {"intValue": "1"}, {"intValue": "2"}]}}, {}]}}  # fmt: skip
    orphan = backend_scope["spans"][1]
    assert orphan["parentSpanId"] == MISSING_PARENT and orphan["kind"] == 5
    tool = frontend["scopeSpans"][0]["spans"][1]
    assert tool["status"] == {"code": 2, "message": "backend did not answer"}
    assert tool["events"][0]["name"] == "exception" and tool["events"][0]["timeUnixNano"] == str(T0 + 44 * MS)


def test_any_value_encoding() -> None:
    assert any_value(True) == {"boolValue": True}  # bool before int
    assert any_value(0) == {"intValue": "0"}
    assert any_value(0.0) == {"doubleValue": 0.0}
    assert any_value(float("nan")) == {"doubleValue": "NaN"}
    assert any_value(float("-inf")) == {"doubleValue": "-Infinity"}
    assert any_value(None) == {}
    assert any_value({"a": [1, "b"]}) == {
        "kvlistValue": {
            "values": [{"key": "a", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "b"}]}}}]
        }
    }
    # already-parsed JSON columns are accepted as well as text
    row = {"trace_id": EDGE_TRACE, "span_id": ROOT, "start_time_unix_nano": 1, "end_time_unix_nano": 2,
           "attributes": {"n": 1}, "events": None, "links": None, "resource": {"service.name": "s"}}  # fmt: skip
    (span,) = trace_to_otlp_json([row])["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert span["attributes"] == [{"key": "n", "value": {"intValue": "1"}}] and span["events"] == span["links"] == []


# ------------------------------------------------------------------------------------------------- goldens


def check_golden(name: str, actual: Any) -> None:
    target = GOLDEN_DIR / name
    text = json.dumps(actual, indent=1, ensure_ascii=False) + "\n"
    if UPDATE_GOLDEN:
        target.write_text(text)
        pytest.skip(f"golden {name} rewritten: review the diff")
    assert target.exists(), f"no golden {name}; generate with AGENTFLIGHT_UPDATE_GOLDEN=1, then review it"
    assert json.loads(target.read_text()) == json.loads(text)


def only_trace(path: Path) -> str:
    (trace_id,) = file_trace_ids(path)
    return trace_id


def test_golden_otlp_export_of_captured_otel_v2(lakes: Lakes) -> None:
    trace_id = only_trace(CAPTURED / "captured_otel_v2.json")
    check_golden("export_otlp_captured_otel_v2.json", trace_to_otlp_json(lakes.trace(trace_id)))


@pytest.mark.parametrize("name", ["captured_otel_v2.json", "captured_openinference.json", "captured_js_http_json.json"])
def test_golden_eval_case_of_captured_agent(lakes: Lakes, name: str) -> None:
    trace_id = only_trace(CAPTURED / name)
    case = trace_to_eval_case(lakes.trace(trace_id), lakes.content(trace_id))
    check_golden(f"export_eval_{name.removesuffix('.json')}.json", case)


def test_golden_eval_case_of_edge_trace(lakes: Lakes) -> None:
    check_golden("export_eval_edge.json", trace_to_eval_case(lakes.trace(EDGE_TRACE), lakes.content(EDGE_TRACE)))


# --------------------------------------------------------------------------------------------- eval cases


def test_eval_case_of_a_tool_calling_agent(lakes: Lakes) -> None:
    case = trace_to_eval_case(lakes.trace(only_trace(CAPTURED / "captured_otel_v2.json")))
    assert case["input"] == "What's the weather in Paris?"
    assert case["expected_output"] is None
    assert case["actual_output"] == "It is 21C and sunny in Paris."
    # the tool span has no arguments/result attributes: both come from the model messages, matched by call id
    assert case["tool_calls"] == [
        {"id": "call_0001", "name": "get_weather", "arguments": {"city": "Paris"},
         "result": '{"temp_c": 21, "sky": "sunny"}', "error": None}
    ]  # fmt: skip
    assert [m["role"] for m in case["messages"]] == ["system", "user"]
    meta = case["metadata"]
    assert meta["service"] == "capture-otel_v2" and meta["models"] == ["gpt-4o-mini-2024-07-18"]
    assert meta["tokens"]["input"] == 126 and meta["tokens"]["output"] == 21 and meta["error"] is None
    assert meta["cost_usd"] == pytest.approx(3.15e-05) and meta["unpriced_model_calls"] == 0


def test_eval_case_with_reused_call_ids(lakes: Lakes) -> None:
    """tau-bench replay: the stub reuses call ids across tools; each tool span takes the arguments of the nearest
    preceding request with its id and name, and the result sent back to the next model call."""
    trace_id = next(t for t in by_trace(lakes.spans) if t and t.startswith("73e01cd4"))
    case = trace_to_eval_case(lakes.trace(trace_id))
    calls = [(c["name"], c["arguments"], c["result"]) for c in case["tool_calls"]]
    assert calls[0][:2] == ("get_user_details", {"user_id": "mia_li_3668"})
    assert calls[3] == ("calculate", {"expression": "152 + 103"}, "255.0")
    assert [c["name"] for c in case["tool_calls"]] == [
        "get_user_details", "search_direct_flight", "search_onestop_flight", "calculate", "book_reservation",
        "think", "calculate", "book_reservation",
    ]  # fmt: skip
    failed = case["tool_calls"][4]
    assert failed["error"] is not None and "payment amount does not add up" in failed["error"]
    assert case["input"].startswith("Hi! I'm looking to book a flight from New York to Seattle")
    assert case["actual_output"].startswith("Your flight from New York (JFK) to Seattle (SEA) has been successfully")
    assert case["metadata"]["session_id"] == "tau-airline-task0-trial0"


def test_eval_case_content_from_log_events(lakes: Lakes) -> None:
    """The edge trace's chat spans carry no content: it comes from the span_content view (log records joined by
    span id, and by response id for the record emitted outside the span)."""
    spans = lakes.trace(EDGE_TRACE)
    assert all(s["input_messages"] is None for s in spans if s["span_type"] == "llm")
    assert trace_to_eval_case(spans)["input"] is None  # without the log content there is nothing to show
    case = trace_to_eval_case(spans, lakes.content(EDGE_TRACE))
    assert case["input"] == "Weather in Oslo?"
    assert case["actual_output"] == "Cold, I could not check."
    assert [m["role"] for m in case["messages"]] == ["system", "user"]
    assert case["tool_calls"] == [
        {"id": "call_edge_1", "name": "lookup", "arguments": {"city": "Oslo"}, "result": None,
         "error": "TimeoutError: backend did not answer"}
    ]  # fmt: skip
    meta = case["metadata"]
    assert meta["service"] == "edge-frontend" and meta["services"] == ["edge-backend", "edge-frontend"]
    assert (meta["user_id"], meta["session_id"]) == ("user-7", "session-7")
    assert meta["tokens"]["input"] == 60 and meta["span_count"] == 6
    assert meta["error"] == {"span_id": TOOL, "span_name": "execute_tool lookup", "type": "TimeoutError",
                             "message": "backend did not answer"}  # fmt: skip


def _model_span(span_id: str, parent: str | None, start: int, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "trace_id": EDGE_TRACE, "span_id": span_id, "parent_span_id": parent, "name": "chat", "span_type": "llm",
        "start_time_unix_nano": start, "end_time_unix_nano": start + 10, "input_tokens": 10, "output_tokens": 2,
        "total_tokens": 12, "cost_usd": 0.5, "response_model": "m",
    }  # fmt: skip
    row.update(extra)
    return row


def test_eval_case_counts_only_leaf_model_spans() -> None:
    """docs/design.md invariant 4: a wrapper model span (LangChain around the OpenAI instrumentation) is not added."""
    spans = [
        {"trace_id": EDGE_TRACE, "span_id": "1" * 16, "parent_span_id": None, "name": "agent", "span_type": "agent",
         "start_time_unix_nano": 0, "end_time_unix_nano": 100, "service_name": "svc"},
        _model_span("2" * 16, "1" * 16, 1, input_tokens=99, output_tokens=9, total_tokens=108, cost_usd=9.0),
        _model_span("3" * 16, "2" * 16, 2),
        _model_span("4" * 16, "1" * 16, 50, cost_usd=None, response_model="unknown-model"),
        _model_span("5" * 16, "0" * 16, 60, span_type="embedding", output_tokens=None, total_tokens=10),
    ]  # fmt: skip
    meta = trace_to_eval_case(spans)["metadata"]
    assert meta["tokens"] == {"input": 30, "output": 4, "total": 34, "cache_read": None, "cache_write": None,
                              "reasoning": None}  # fmt: skip
    assert meta["cost_usd"] == 1.0 and meta["unpriced_model_calls"] == 1
    assert meta["models"] == ["m", "unknown-model"] and meta["service"] == "svc"


def test_eval_case_of_an_orphan_only_trace_without_content() -> None:
    spans = [_model_span("6" * 16, MISSING_PARENT, 5, service_name="late", input_messages=None)]
    case = trace_to_eval_case(spans)
    assert case["trace_id"] == EDGE_TRACE and case["metadata"]["service"] == "late"
    assert case["input"] is None and case["actual_output"] is None and case["messages"] is None
    assert case["tool_calls"] == [] and case["metadata"]["error"] is None


def test_eval_case_user_turn_and_tool_calls_from_messages_only() -> None:
    """No tool spans: the calls the model requested, results from the next call's input; the user's turn is the
    user message after the history."""
    history = [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Hi"}]},
        {"role": "assistant", "parts": [{"type": "text", "content": "Hello"}]},
        {"role": "user", "parts": [{"type": "text", "content": "Add 2 and 3"}]},
    ]
    call = {"type": "tool_call", "id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}}
    first_out = [{"role": "assistant", "parts": [call]}]
    second_in = [
        *history,
        *first_out,
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "5"}]},
    ]
    second_out = [{"role": "assistant", "parts": [{"type": "text", "content": "5"}]}]
    spans = [
        _model_span("7" * 16, None, 0, input_messages=json.dumps(history), output_messages=json.dumps(first_out)),
        _model_span("8" * 16, None, 20, input_messages=json.dumps(second_in), output_messages=json.dumps(second_out)),
    ]
    case = trace_to_eval_case(spans)
    assert case["input"] == "Add 2 and 3" and case["actual_output"] == "5" and case["messages"] == history
    assert case["tool_calls"] == [
        {"id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}, "result": "5", "error": None}
    ]
