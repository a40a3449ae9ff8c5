"""Every real client request in tests/data/otlp/captured/ replayed exactly as it was sent, end to end.

`.binpb` files are raw ExportTraceServiceRequest bytes and go over gRPC unchanged (tau_replay is one 6 MB
request, above gRPC's default 4 MiB); `.json` files are OTLP/JSON and go to POST /v1/traces unchanged. For
each file: every span lands exactly once, with the canonical fields frozen in
tests/data/golden/captured_<name>.json (reviewed by hand against the fixture and docs/conventions.md §1-§3), stored
losslessly, unchanged by a second replay, and identical whichever transport carried it.

The expected span ids, attributes, events and resources are read from the fixture files here, with the
opentelemetry-proto classes and the json module, never through the collector's own decoder.

Regenerating the goldens (then REVIEW the diff against the fixtures before committing):
    AGENTFLIGHT_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_captured_replay.py -k golden
The "review" notes already in a golden file are kept.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from collector.service import Collector
from tests.conftest import CAPTURED, grpc_export, query, query_dicts, start_collector

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden"
UPDATE_GOLDEN = os.environ.get("AGENTFLIGHT_UPDATE_GOLDEN") == "1"
GRPC_DEFAULT_MAX_RECEIVE = 4 * 1024 * 1024

EXPECTED_FILES = (
    "captured_js_grpc.json",
    "captured_js_http_json.json",
    "captured_openinference.binpb",
    "captured_openinference.json",
    "captured_otel_v2.binpb",
    "captured_otel_v2.json",
    "replayed_cassettes_openinference.binpb",
    "replayed_cassettes_otel_v2.binpb",
    "replayed_cassettes_otel_v2.json",
    "tau_replay_openinference_10.binpb",
)
CAPTURED_FILES = sorted(p for p in CAPTURED.iterdir() if p.suffix in (".binpb", ".json"))
FILE_IDS = [p.name for p in CAPTURED_FILES]
PAIRS = sorted(
    {p.stem for p in CAPTURED_FILES if p.suffix == ".json"} & {p.stem for p in CAPTURED_FILES if p.suffix == ".binpb"}
)

# The per-span record frozen in the goldens: canonical columns as stored, plus cost rounded and message presence.
GOLDEN_COLUMNS = (
    "name",
    "span_type",
    "provider",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "reasoning_tokens",
    "total_tokens",
    "user_id",
    "session_id",
    "agent_name",
    "tool_name",
    "tool_call_id",
    "is_error",
    "error_type",
    "error_message",
    "finish_reason",
    "cost_status",
)
SUMMED = ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens", "total_tokens")
SPAN_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_CODES = ("UNSET", "OK", "ERROR")


# ------------------------------------------------------------------------------ reading the fixtures ourselves


@dataclass
class FileSpan:
    """One span as the fixture file holds it, AnyValues flattened to the lake's JSON form
    (store/schema.py: bytes as lowercase hex, arrays as lists, kvlists as objects)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: str
    status_message: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    dropped_attributes_count: int
    resource: dict[str, Any]
    scope_name: str
    scope_version: str

    @property
    def key(self) -> str:
        return f"{self.trace_id}:{self.span_id}"


def _pb_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


def _pb_attrs(key_values: Any) -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value) for kv in key_values}


def _parse_binpb(body: bytes) -> list[FileSpan]:
    request = ExportTraceServiceRequest.FromString(body)
    spans = []
    for rs in request.resource_spans:
        resource = _pb_attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append(
                    FileSpan(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex() or None,
                        name=s.name,
                        kind=SPAN_KINDS[s.kind],
                        start_time_unix_nano=s.start_time_unix_nano,
                        end_time_unix_nano=s.end_time_unix_nano,
                        status_code=STATUS_CODES[s.status.code],
                        status_message=s.status.message,
                        attributes=_pb_attrs(s.attributes),
                        events=[
                            {"name": e.name, "time_unix_nano": e.time_unix_nano, "attributes": _pb_attrs(e.attributes)}
                            for e in s.events
                        ],
                        dropped_attributes_count=s.dropped_attributes_count,
                        resource=resource,
                        scope_name=ss.scope.name,
                        scope_version=ss.scope.version,
                    )
                )
    return spans


def _json_value(value: dict[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:  # a decimal string (proto3 JSON) or a plain number (OTel JS over HTTP/JSON)
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return value["boolValue"]
    if "arrayValue" in value:
        return [_json_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return _json_attrs(value["kvlistValue"].get("values", []))
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"]).hex()
    return None


def _json_attrs(key_values: list[dict[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: _json_value(kv.get("value", {})) for kv in key_values}


def _enum(value: Any, names: tuple[str, ...], prefix: str) -> str:
    if isinstance(value, int):
        return names[value]
    return str(value or names[0]).removeprefix(prefix)


def _parse_json(body: bytes) -> list[FileSpan]:
    doc = json.loads(body)
    spans = []
    for rs in doc["resourceSpans"]:
        resource = _json_attrs(rs.get("resource", {}).get("attributes", []))
        for ss in rs["scopeSpans"]:
            scope = ss.get("scope", {})
            for s in ss["spans"]:
                status = s.get("status", {})
                spans.append(
                    FileSpan(
                        trace_id=s["traceId"].lower(),
                        span_id=s["spanId"].lower(),
                        parent_span_id=s.get("parentSpanId", "").lower() or None,
                        name=s["name"],
                        kind=_enum(s.get("kind", 0), SPAN_KINDS, "SPAN_KIND_"),
                        start_time_unix_nano=int(s["startTimeUnixNano"]),
                        end_time_unix_nano=int(s["endTimeUnixNano"]),
                        status_code=_enum(status.get("code", 0), STATUS_CODES, "STATUS_CODE_"),
                        status_message=status.get("message", ""),
                        attributes=_json_attrs(s.get("attributes", [])),
                        events=[
                            {
                                "name": e["name"],
                                "time_unix_nano": int(e["timeUnixNano"]),
                                "attributes": _json_attrs(e.get("attributes", [])),
                            }
                            for e in s.get("events", [])
                        ],
                        dropped_attributes_count=int(s.get("droppedAttributesCount", 0)),
                        resource=resource,
                        scope_name=scope.get("name", ""),
                        scope_version=scope.get("version", ""),
                    )
                )
    return spans


_PARSED: dict[Path, list[FileSpan]] = {}


def file_spans(path: Path) -> list[FileSpan]:
    if path not in _PARSED:
        body = path.read_bytes()
        _PARSED[path] = _parse_binpb(body) if path.suffix == ".binpb" else _parse_json(body)
    return _PARSED[path]


# ------------------------------------------------------------------------------------------------- replaying


def replay(c: Collector, path: Path) -> None:
    """Send the file's bytes exactly as the client sent them and check the export was fully accepted."""
    body = path.read_bytes()
    if path.suffix == ".binpb":
        raw, call = grpc_export(c.grpc_port, body)
        assert call.code() == grpc.StatusCode.OK
        response = ExportTraceServiceResponse.FromString(raw)
        assert response.partial_success.rejected_spans == 0, response.partial_success.error_message
    else:
        answer = httpx.post(
            f"http://127.0.0.1:{c.http_port}/v1/traces",
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert "partialSuccess" not in answer.json(), answer.text


SPANS_SQL = "SELECT * FROM spans ORDER BY trace_id, span_id"
SUMS_SQL = (
    "SELECT count(*), "
    + ", ".join(f"sum({column})" for column in SUMMED)
    + ", round(sum(cost_usd), 12), count(cost_usd), count(DISTINCT (trace_id, span_id)) FROM spans"
)


@dataclass
class Replay:
    """What the lake held after the file was replayed once, and again after a second identical replay."""

    rows: list[dict[str, Any]]
    raw_count: int
    sums: tuple[Any, ...]
    rows_again: list[dict[str, Any]]
    raw_count_again: int
    sums_again: tuple[Any, ...]
    sessions_per_trace: list[tuple[Any, ...]]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Replay]:
    """Each file replayed once into its own fresh collector (then once more), the results kept for the module's
    tests; the collector is stopped as soon as its results are read."""
    done: dict[Path, Replay] = {}

    def run(path: Path) -> Replay:
        if path not in done:
            c = start_collector(tmp_path_factory.mktemp(path.stem) / "data")
            try:
                replay(c, path)
                c.flush()
                rows = query_dicts(c, SPANS_SQL)
                ((raw_count,),) = query(c, "SELECT count(*) FROM spans_raw")
                (sums,) = query(c, SUMS_SQL)
                sessions = query(
                    c, "SELECT trace_id, count(session_id), max(session_id) FROM spans GROUP BY trace_id ORDER BY 3"
                )
                replay(c, path)
                c.flush()
                rows_again = query_dicts(c, SPANS_SQL)
                ((raw_count_again,),) = query(c, "SELECT count(*) FROM spans_raw")
                (sums_again,) = query(c, SUMS_SQL)
            finally:
                c.stop()
            done[path] = Replay(rows, raw_count, sums, rows_again, raw_count_again, sums_again, sessions)
        return done[path]

    return run


# ------------------------------------------------------------------------------------------------- goldens


def golden_path(path: Path) -> Path:
    """tests/data/golden/captured_<fixture file name without its captured_ prefix>.json"""
    return GOLDEN_DIR / f"captured_{path.name.removeprefix('captured_')}.json"


def golden_record(row: dict[str, Any]) -> dict[str, Any]:
    record = {column: row[column] for column in GOLDEN_COLUMNS}
    record["cost_usd"] = None if row["cost_usd"] is None else round(row["cost_usd"], 10)
    for side in ("input", "output"):
        text = row[f"{side}_messages"]
        messages = json.loads(text) if text is not None else None
        record[f"has_{side}_messages"] = bool(messages)
        record[f"{side}_first_role"] = messages[0].get("role") if messages else None
    return record


def _write_golden(target: Path, path: Path, records: dict[str, dict[str, Any]]) -> None:
    review: list[str] = []
    if target.exists():
        review = json.loads(target.read_text()).get("review", [])
    head = {
        "file": path.name,
        "transport": "grpc" if path.suffix == ".binpb" else "http/json",
        "span_count": len(records),
        "review": review,
    }
    lines = ["{"]
    for name, value in head.items():
        if name == "review":  # one note per line
            notes = ",\n".join(f"  {json.dumps(note, ensure_ascii=False)}" for note in review)
            lines.append(f' "review": [\n{notes}\n ],' if review else ' "review": [],')
        else:
            lines.append(f" {json.dumps(name)}: {json.dumps(value, ensure_ascii=False)},")
    lines.append(' "spans": {')
    items = [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in records.items()]
    lines.append(",\n".join(items))
    lines.append(" }")
    lines.append("}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n")


def load_golden(path: Path) -> dict[str, Any]:
    target = golden_path(path)
    assert target.exists(), f"no golden {target.name}; generate with AGENTFLIGHT_UPDATE_GOLDEN=1, then review it"
    golden: dict[str, Any] = json.loads(target.read_text())
    return golden


def _key(row: dict[str, Any]) -> str:
    return f"{row['trace_id']}:{row['span_id']}"


# ---------------------------------------------------------------------------------------------------- tests


def test_every_captured_file_is_replayed() -> None:
    assert tuple(FILE_IDS) == EXPECTED_FILES
    assert PAIRS == ["captured_openinference", "captured_otel_v2", "replayed_cassettes_otel_v2"]
    if not UPDATE_GOLDEN:
        assert sorted(p.name for p in GOLDEN_DIR.glob("captured_*.json")) == sorted(
            golden_path(p).name for p in CAPTURED_FILES
        )


@pytest.mark.parametrize("path", CAPTURED_FILES, ids=FILE_IDS)
def test_each_span_lands_once_with_the_golden_fields(replayed: Callable[[Path], Replay], path: Path) -> None:
    expected = file_spans(path)
    result = replayed(path)
    rows = result.rows

    # 1. each span exactly once: as many rows as the file has spans, the same (trace_id, span_id) pairs,
    # and no second stored copy of any span
    assert len(rows) == len(expected)
    assert {(r["trace_id"], r["span_id"]) for r in rows} == {(s.trace_id, s.span_id) for s in expected}
    assert result.raw_count == len(expected)

    # 2. the canonical fields, span by span
    actual = {_key(r): golden_record(r) for r in rows}
    if UPDATE_GOLDEN:
        _write_golden(golden_path(path), path, {s.key: actual[s.key] for s in expected})
        pytest.skip(f"golden {golden_path(path).name} rewritten: review it against the fixture")
    golden = load_golden(path)
    assert golden["file"] == path.name and golden["span_count"] == len(expected)
    assert set(actual) == set(golden["spans"])
    mismatches = [
        (key, field, want, actual[key][field])
        for key, record in golden["spans"].items()
        for field, want in record.items()
        if actual[key].get(field) != want
    ]
    assert not mismatches, f"{len(mismatches)} field(s) differ from the golden, first: {mismatches[:10]}"
    assert all(set(actual[key]) == set(golden["spans"][key]) for key in actual)


@pytest.mark.parametrize("path", CAPTURED_FILES, ids=FILE_IDS)
def test_replay_is_lossless(replayed: Callable[[Path], Replay], path: Path) -> None:
    expected = {s.key: s for s in file_spans(path)}
    rows = replayed(path).rows
    assert len(rows) == len(expected)
    for row in rows:
        span = expected[_key(row)]
        assert json.loads(row["attributes"]) == span.attributes, span.key
        assert json.loads(row["events"]) == span.events, span.key
        assert json.loads(row["resource"]) == span.resource, span.key
        assert row["service_name"] == span.resource["service.name"] == json.loads(row["resource"])["service.name"]
        assert row["dropped_attributes_count"] == span.dropped_attributes_count, span.key
        assert (row["parent_span_id"], row["name"], row["kind"]) == (span.parent_span_id, span.name, span.kind)
        assert (row["start_time_unix_nano"], row["end_time_unix_nano"]) == (
            span.start_time_unix_nano,
            span.end_time_unix_nano,
        )
        assert (row["status_code"], row["status_message"]) == (span.status_code, span.status_message)
        assert (row["scope_name"], row["scope_version"]) == (span.scope_name, span.scope_version)


@pytest.mark.parametrize("path", CAPTURED_FILES, ids=FILE_IDS)
def test_replaying_twice_changes_no_number(replayed: Callable[[Path], Replay], path: Path) -> None:
    n = len(file_spans(path))
    result = replayed(path)
    count, *token_sums, cost, priced, distinct = result.sums
    assert count == distinct == n
    golden = load_golden(path)["spans"].values()
    for column, total in zip(SUMMED, token_sums, strict=True):
        values = [g[column] for g in golden if g[column] is not None]
        assert total == (sum(values) if values else None), column
    costs = [g["cost_usd"] for g in golden if g["cost_usd"] is not None]
    assert priced == len(costs)
    if costs:  # the goldens hold each cost rounded to 1e-10
        assert cost == pytest.approx(sum(costs), rel=0, abs=1e-10 * len(costs))
    else:
        assert cost is None

    assert result.raw_count_again == 2 * n  # the second copy was stored ...
    assert result.sums_again == result.sums  # ... and read back as one: same count, tokens and cost
    strip = "received_at_unix_nano"
    assert [{k: v for k, v in r.items() if k != strip} for r in result.rows_again] == [
        {k: v for k, v in r.items() if k != strip} for r in result.rows
    ]


@pytest.mark.parametrize("stem", PAIRS)
def test_grpc_and_http_json_copies_give_identical_rows(replayed: Callable[[Path], Replay], stem: str) -> None:
    binpb, as_json = CAPTURED / f"{stem}.binpb", CAPTURED / f"{stem}.json"
    grpc_rows, http_rows = replayed(binpb).rows, replayed(as_json).rows
    assert len(grpc_rows) == len(file_spans(binpb)) == len(file_spans(as_json)) > 0
    for grpc_row, http_row in zip(grpc_rows, http_rows, strict=True):
        grpc_row, http_row = dict(grpc_row), dict(http_row)
        assert grpc_row.pop("received_at_unix_nano") != http_row.pop("received_at_unix_nano")  # two real arrivals
        assert grpc_row == http_row, _key(grpc_row)


def test_tau_replay_is_one_oversized_request_accepted_whole(replayed: Callable[[Path], Replay]) -> None:
    path = CAPTURED / "tau_replay_openinference_10.binpb"
    body = path.read_bytes()
    assert len(body) > GRPC_DEFAULT_MAX_RECEIVE
    assert len(ExportTraceServiceRequest.FromString(body).resource_spans) == 1
    result = replayed(path)
    spans = file_spans(path)
    assert len(result.rows) == len(spans) == 209
    dropped = {s.key: s.dropped_attributes_count for s in spans if s.dropped_attributes_count}
    assert len(dropped) == 16 and min(dropped.values()) > 0
    assert {_key(r): r["dropped_attributes_count"] for r in result.rows if r["dropped_attributes_count"]} == dropped
    # the SDK's limit is 128 attributes: a span that dropped some arrives with exactly 128
    assert {len(json.loads(r["attributes"])) for r in result.rows if r["dropped_attributes_count"]} == {128}
    # the conversation id sits on each run's root span only; one per trace, so it rolls up to the trace on read
    assert [(count, session) for _, count, session in result.sessions_per_trace] == [
        (1, f"tau-airline-task{i}-trial0") for i in range(10)
    ]
    per_type: dict[str, int] = {}
    for row in result.rows:
        per_type[row["span_type"]] = per_type.get(row["span_type"], 0) + 1
    assert per_type == {"llm": 141, "tool": 58, "agent": 10}


@pytest.mark.parametrize(
    ("name", "errors"),
    [
        (
            "replayed_cassettes_openinference.binpb",
            {
                ("ChatCompletion", "openai.NotFoundError", 404): 2,
                ("CreateEmbeddings", "openai.NotFoundError", 404): 2,
                ("Response", "openai.BadRequestError", 400): 1,
            },
        ),
        (
            "replayed_cassettes_otel_v2.binpb",
            {
                # opentelemetry-util-genai 1.1b0 writes error.type as str() of the exception class
                ("chat this-model-does-not-exist", "<class 'openai.NotFoundError'>", 404): 2,
                ("embeddings non-existent-embedding-model", "NotFoundError", 404): 2,
            },
        ),
    ],
)
def test_cassette_4xx_responses_are_errors(
    replayed: Callable[[Path], Replay], name: str, errors: dict[tuple[str, str, int], int]
) -> None:
    path = CAPTURED / name
    failed_in_file = {s.key for s in file_spans(path) if s.status_code == "ERROR"}
    found: dict[tuple[str, str, int], int] = {}
    for row in replayed(path).rows:
        assert row["is_error"] == (_key(row) in failed_in_file), _key(row)
        if not row["is_error"]:
            assert row["error_type"] is None and row["error_message"] is None
            continue
        match = re.match(r"Error code: (4\d\d) - ", row["error_message"])
        assert match, row["error_message"]
        group = (row["name"], row["error_type"], int(match.group(1)))
        found[group] = found.get(group, 0) + 1
        # a refused call used no tokens and costs nothing we could know
        assert row["input_tokens"] is None and row["cost_usd"] is None and row["cost_status"] == "no_usage"
        assert row["request_model"] in ("this-model-does-not-exist", "non-existent-embedding-model")
    assert found == errors


@pytest.mark.parametrize("name", ["captured_js_grpc.json", "captured_js_http_json.json"])
def test_js_exception_event_makes_an_error_span(replayed: Callable[[Path], Replay], name: str) -> None:
    rows = {r["name"]: r for r in replayed(CAPTURED / name).rows}
    assert set(rows) == {"chat gpt-4o-mini", "execute_tool get_weather", "invoke_agent js-agent"}
    tool = rows["execute_tool get_weather"]
    events = json.loads(tool["events"])
    assert [e["name"] for e in events] == ["exception"]
    assert events[0]["attributes"]["exception.message"] == "upstream weather API timed out"
    assert "at /app/send.js:35:24" in events[0]["attributes"]["exception.stacktrace"]
    assert tool["is_error"] and tool["status_code"] == "ERROR"
    assert tool["error_type"] == "Error"  # exception.type (no error.type attribute)
    assert tool["error_message"] == "timeout"  # docs/conventions.md §3: status.message before exception.message
    assert not rows["chat gpt-4o-mini"]["is_error"] and not rows["invoke_agent js-agent"]["is_error"]
    # the intValue arrived as a string (gRPC JSON rendering) or a JSON number (HTTP/JSON): the same ints
    chat = rows["chat gpt-4o-mini"]
    assert json.loads(chat["attributes"])["gen_ai.usage.input_tokens"] == 42
    assert (chat["input_tokens"], chat["output_tokens"]) == (42, 7)
    # the gen_ai.choice event carries only {"index": 0} (no content captured): kept as an event, no output message
    (choice,) = next(s for s in file_spans(CAPTURED / name) if s.name == "chat gpt-4o-mini").events
    assert json.loads(chat["events"]) == [choice] and choice["attributes"] == {"index": 0}
    assert chat["output_messages"] is None
