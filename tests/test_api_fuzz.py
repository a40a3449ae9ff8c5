"""The query API against its own OpenAPI spec: schemathesis fuzzes every operation over HTTP and no answer is a 5xx.

A real collector loads the captured OTLP/JSON fixtures (plus one trace naming a user and a session), a real API
(uvicorn on port 0) serves the lake, and the spec is read from the running server's /openapi.json, so a route
added later is fuzzed without touching this file. Path ids are drawn half the time from ids that exist, so the
fuzzer reaches the code behind the 404s, not only the 404s. Each operation gets valid and invalid inputs
(schemathesis' positive and negative modes); the checks are: never a 5xx, and a body that matches the response
schema wherever the spec declares one. Hand-picked hostile inputs per route follow as plain tests, including
one regression case for each 500 the fuzzer found.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import response_schema_conformance

from collector.service import Collector
from tests.conftest import CAPTURED, ApiServer, start_api, start_collector

pytestmark = pytest.mark.slow

# Per operation and generation mode: about 900 requests over the 13 operations, ~30 s on 2 cores.
MAX_EXAMPLES = 40
USER = "fuzz-user-ü@example.com"
SESSION = "fuzz-session-☃"
HUGE = str(10**30)
# Random text is never a SELECT: half the fuzzed /sql bodies carry one of these instead.
SQL_SAMPLES = [
    "SELECT 1",
    "SELECT * FROM spans LIMIT 3",
    "SELECT trace_id, count(*) AS n, max(start_time_unix_nano) FROM spans GROUP BY ALL",
    "SELECT * FROM events LIMIT 3",
]


def _extra_trace() -> bytes:
    """One OTLP/JSON trace that names a user and a session (the captured fixtures name neither) and carries
    a NaN attribute, so the session, user and span routes have real data behind them."""
    span = {
        "traceId": "f0" * 16,
        "spanId": "f1" * 8,
        "name": "chat fuzz-model",
        "kind": 3,
        "startTimeUnixNano": "1790000000000000000",
        "endTimeUnixNano": "1790000001000000000",
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "fuzz-model"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "7"}},
            {"key": "user.id", "value": {"stringValue": USER}},
            {"key": "session.id", "value": {"stringValue": SESSION}},
            {"key": "fuzz.nan", "value": {"doubleValue": "NaN"}},
        ],
    }
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "fuzz-service"}}]}
    return json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}).encode()


@dataclass
class Live:
    collector: Collector
    api: ApiServer
    trace_id: str
    span_id: str
    requests: int = 0
    statuses: dict[str, Counter[int]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    collector = start_collector(tmp_path_factory.mktemp("fuzz") / "data")
    api: ApiServer | None = None
    try:
        bodies = [path.read_bytes() for path in sorted(CAPTURED.glob("*.json"))]
        assert bodies, f"no OTLP/JSON fixtures in {CAPTURED}"
        with httpx.Client(timeout=60) as http:
            for body in [*bodies, _extra_trace()]:
                response = http.post(
                    f"http://127.0.0.1:{collector.http_port}/v1/traces",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                assert response.status_code == 200, (response.status_code, response.text)
        collector.flush()
        api = start_api(collector.settings)
        with api.client() as client:
            traces = client.get("/traces", params={"limit": 500}).json()["traces"]
            assert len(traces) > 1, traces
            assert any(t["session_id"] == SESSION and t["user_id"] == USER for t in traces)
            biggest = max(traces, key=lambda t: t["span_count"])
            spans = client.get(f"/traces/{biggest['trace_id']}").json()["spans"]
        yield Live(collector, api, biggest["trace_id"], spans[-1]["span_id"])
    finally:
        if api is not None:
            api.stop()
        collector.stop()


@pytest.fixture(scope="module")
def api_schema(live: Live) -> Any:
    """The served spec, with path ids bound half the time to ids that exist in the lake."""
    known = {"trace_id": live.trace_id, "span_id": live.span_id, "session_id": SESSION, "user_id": USER}
    config = SchemathesisConfig.from_dict(
        {
            "dictionaries": {
                **{f"known_{name}": {"values": [value]} for name, value in known.items()},
                "known_sql": {"values": SQL_SAMPLES},
            },
            "parameters": {
                **{f"path.{name}": {"dictionary": f"known_{name}", "probability": 0.5} for name in known},
                "body.sql": {"dictionary": "known_sql", "probability": 0.5},
            },
        }
    )
    return schemathesis.openapi.from_url(f"{live.api.url}/openapi.json", config=config)


def _fuzz(operation: Any, mode: GenerationMode, live: Live, session: requests.Session) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def run(case: Any) -> None:
        live.requests += 1
        response = case.call_and_validate(
            base_url=live.api.url, session=session, checks=[not_a_server_error, response_schema_conformance]
        )
        live.statuses.setdefault(label, Counter())[response.status_code] += 1

    try:
        run()
    except Unsatisfiable:
        # Negative mode on an operation that takes nothing but free strings: no invalid input exists.
        assert mode == GenerationMode.NEGATIVE, label


def test_fuzz_every_operation_never_answers_5xx(api_schema: Any, live: Live) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    names = {f"{op.method.upper()} {op.path}" for op in operations}
    # The spec is the running app's: every route is in it, /sql included.
    assert {"GET /traces", "GET /traces/{trace_id}/spans/{span_id}", "POST /sql", "GET /costs"} <= names, names
    failures: list[str] = []
    with requests.Session() as session:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    _fuzz(operation, mode, live, session)
                except Exception as exc:  # collect every operation's failure, then report them together
                    failures.append(f"{operation.method.upper()} {operation.path} [{mode.value}]: {exc}")
    print(f"fuzzed {len(operations)} operations with {live.requests} requests; statuses: {live.statuses}")
    assert not failures, "\n\n".join(failures)
    assert live.requests >= len(operations) * 10
    # The known ids got the fuzzer past the 404s: every operation answered 200 some of the time.
    assert all(200 in live.statuses.get(name, {}) for name in names), live.statuses


# --- hand-picked hostile inputs ------------------------------------------------------------------


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


TEN_KB = "x" * 10_240
TIMES = [
    "0000-01-01",  # year 0: not a date
    "0001-01-01T00:00:00+05:00",  # year 1 at +05:00 is year 0 in UTC (was a 500 with q=)
    "9999-12-31T23:59:59-05:00",  # year 10000 in UTC (was a 500 with q=)
    "99999-01-01",
    "2300-01-01",  # past int64 nanoseconds
    "1900-01-01",
    "²",  # a Unicode digit int() refuses (was a 500)
    "١٢٣",  # Arabic-Indic digits int() would take
    "--5",  # was a 500
    "-5",
    "9" * 5000,  # past int()'s 4,300-digit limit (was a 500)
    HUGE,
    "NaN",
    "inf",
    "\x00",
    TEN_KB,
]
HOSTILE_GETS: list[tuple[str, dict[str, str]]] = [
    *[("/traces", {"from": t, "q": "a"}) for t in TIMES],
    *[("/traces", {"to": t}) for t in TIMES],
    *[("/users/" + USER, {"from": t, "to": t}) for t in TIMES],
    *[("/costs", {"from": t, "group_by": "day,hour"}) for t in TIMES],
    *[("/costs/unit-economics", {"to": t}) for t in TIMES],
    ("/traces", {"min_duration_ms": "1.1e308"}),  # inf nanoseconds (was a 500)
    ("/traces", {"min_duration_ms": "1e200"}),  # past BIGINT (was a 500)
    ("/traces", {"min_duration_ms": "9223372036853"}),
    ("/traces", {"min_duration_ms": "NaN"}),
    ("/traces", {"min_cost": "inf"}),
    ("/traces", {"min_cost": "1e308"}),
    ("/traces", {"min_cost": "-0"}),
    ("/traces", {"limit": HUGE}),
    ("/traces", {"limit": "-1"}),
    ("/traces", {"limit": "1.5"}),
    ("/traces", {"q": TEN_KB}),
    ("/traces", {"q": "%_\\'\"\x00"}),
    ("/traces", {"service": TEN_KB, "user": "ü\x00☃", "session": "' OR 1=1 --"}),
    ("/traces", {"cursor": "!!!"}),
    ("/traces", {"cursor": "é"}),
    ("/traces", {"cursor": TEN_KB}),
    ("/traces", {"cursor": _cursor("[1, 2]")}),
    ("/traces", {"cursor": _cursor("{}")}),
    ("/traces", {"cursor": _cursor('{"a": 1, "b": 2, "c": 3}')}),
    ("/traces", {"cursor": _cursor(f'["start", {HUGE}, "a"]')}),
    ("/traces", {"cursor": _cursor('["start", NaN, "a"]')}),
    ("/traces", {"cursor": _cursor('["start", 1e999, "a"]')}),
    ("/traces", {"cursor": _cursor('["start", -Infinity, "' + "x" * 300 + '"]')}),
    ("/traces", {"cursor": _cursor('["cost", 1, 2]')}),
    ("/traces", {"cursor": base64.urlsafe_b64encode(b"\xff\xfe\x00").decode()}),
    ("/traces/" + "0" * 32, {}),
    ("/traces/..%2F..%2Fetc%2Fpasswd", {}),
    ("/traces/../../etc/passwd", {}),
    ("/traces/" + TEN_KB, {}),
    ("/traces/" + "é" * 32, {}),
    ("/traces/{trace}", {"offset": HUGE}),
    ("/traces/{trace}", {"offset": HUGE, "limit": "5000", "max_depth": "1000"}),
    ("/traces/{trace}", {"offset": "-1"}),
    ("/traces/{trace}", {"max_depth": "0", "content": "true"}),
    ("/traces/{trace}", {"content": "maybe"}),
    ("/traces/{trace}/spans/..%2F..", {}),
    ("/traces/{trace}/spans/" + "F" * 16, {}),
    ("/traces/{trace}/spans/" + TEN_KB, {}),
    ("/traces/{trace}/spans/{span}", {}),
    ("/traces/f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0/spans/f1f1f1f1f1f1f1f1", {}),  # a NaN attribute
    ("/traces/{trace}/export", {"format": "eval"}),
    ("/traces/{trace}/export", {"format": "otlp_logs"}),
    ("/traces/{trace}/export", {"format": "../otlp"}),
    ("/sessions", {"offset": HUGE}),  # past BIGINT OFFSET (was a 500)
    ("/sessions", {"offset": "1000000001"}),
    ("/sessions", {"limit": "0"}),
    ("/sessions", {"user": TEN_KB}),
    ("/sessions/" + SESSION, {}),
    ("/sessions/" + TEN_KB, {}),
    ("/sessions/..%2F..", {}),
    ("/users", {"offset": HUGE}),  # was a 500
    ("/users", {"offset": "9223372036854775807"}),
    ("/users/" + USER, {"bucket": "hour"}),
    ("/users/" + USER, {"bucket": "minute"}),
    ("/users/%00", {}),
    ("/costs", {"group_by": TEN_KB}),
    ("/costs", {"group_by": ",,,"}),
    ("/costs", {"group_by": "model,model"}),
    ("/costs", {"group_by": ",".join(["model", "provider", "user", "session", "day", "hour", "tool", "agent"])}),
    ("/costs", {"limit": HUGE}),
    ("/costs/unit-economics", {"sessions_per_day": "1e12"}),
    ("/costs/unit-economics", {"sessions_per_day": "1e13"}),
    ("/costs/unit-economics", {"sessions_per_day": "inf"}),
    ("/costs/unit-economics", {"sessions_per_day": "NaN"}),
    ("/metrics", {}),
    ("/nowhere", {}),
]
HOSTILE_SQL: list[Any] = [
    {"sql": "SELECT 1"},
    {"sql": ""},
    {"sql": ";;"},
    {"sql": "SELECT 1; SELECT 2"},
    {"sql": TEN_KB},
    {"sql": "\x00"},
    {"sql": "SELECT 'ü☃\x00'"},
    {"sql": "SELECT 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b, '-inf'::DOUBLE AS c"},
    {"sql": f"SELECT {HUGE}::HUGEINT AS h, 1.5::DECIMAL(38, 10) AS d, INTERVAL 1 DAY AS i, TIME '12:00' AS t"},
    # Dates and timestamps Python cannot hold (were a 500 in the JSON encoding)
    {"sql": "SELECT 'infinity'::TIMESTAMP AS a, '-infinity'::TIMESTAMPTZ AS b, 'infinity'::DATE AS c"},
    {"sql": "SELECT DATE '5877642-06-25' AS d, [TIMESTAMP '294247-01-01'] AS l, {'x': 'infinity'::TIMESTAMP_S} AS s"},
    {"sql": "SELECT MAP {DATE '5877642-06-25': 1} AS m, 'infinity'::TIMESTAMP_MS AS ms"},
    {"sql": "SELECT 'infinity'::TIMESTAMP AS a", "format": "arrow"},
    {"sql": "SELECT 'infinity'::TIMESTAMP AS a", "format": "parquet"},
    {"sql": "SELECT 1 AS a, 2 AS a"},
    {"sql": "SELECT * FROM spans LIMIT 5"},
    {"sql": "SELECT * FROM spans", "format": "parquet"},
    {"sql": "SELECT * FROM read_parquet('../../etc/passwd')"},
    {"sql": "SELECT 1", "format": "xml"},
    {"sql": 5},
    {"sql": None},
    {"sql": ["SELECT 1"]},
    {},
    [],
    "SELECT 1",
]


def _path(path: str, live: Live) -> str:
    return path.replace("{trace}", live.trace_id).replace("{span}", live.span_id)


def _assert_answer(response: httpx.Response, what: object) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert isinstance(response.json().get("error"), str), (what, response.text[:500])


@pytest.mark.parametrize(("path", "params"), HOSTILE_GETS, ids=[f"{p[:40]}{sorted(q)}" for p, q in HOSTILE_GETS])
def test_hostile_query_answers_4xx_or_200(live: Live, path: str, params: dict[str, str]) -> None:
    with live.api.client() as client:
        response = client.get(_path(path, live), params=params)
    _assert_answer(response, (path, params))


@pytest.mark.parametrize("body", HOSTILE_SQL, ids=[json.dumps(b)[:50] for b in HOSTILE_SQL])
def test_hostile_sql_answers_4xx_or_200(live: Live, body: Any) -> None:
    with live.api.client() as client:
        response = client.post("/sql", json=body)
    _assert_answer(response, body)


def test_hostile_raw_bodies_answer_4xx(live: Live) -> None:
    raw: list[tuple[bytes, str]] = [
        (b"not json", "application/json"),
        (b"", "application/json"),
        (b'{"sql": "SELECT 1"', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b'{"sql": "SELECT 1"}', "text/plain"),
        (b'{"sql": "' + b"[" * 100_000 + b'"}', "application/json"),
        (b"[" * 10_000, "application/json"),
    ]
    with live.api.client() as client:
        for body, content_type in raw:
            response = client.post("/sql", content=body, headers={"content-type": content_type})
            _assert_answer(response, body[:40])
            assert response.status_code != 200 or content_type == "application/json", body[:40]


def test_regressions_answer_with_clear_errors(live: Live) -> None:
    """The 500s the fuzzer and the hostile inputs found, each now a 4xx that says what is wrong, or a 200."""
    with live.api.client() as client:
        for params in ({"from": "²"}, {"from": "--5"}, {"to": "9" * 5000}):
            response = client.get("/traces", params=params)
            assert response.status_code == 400, (params, response.text)
            assert response.json()["error"].startswith(next(iter(params))), response.text
        for params in ({"from": "0001-01-01T00:00:00+05:00", "q": "a"}, {"to": "9999-12-31T23:59:59-05:00", "q": "a"}):
            assert client.get("/traces", params=params).status_code == 200, params
        # An ISO time before 1970 or past 2262 selects what it always did: everything, or nothing.
        everything = client.get("/traces", params={"limit": 500}).json()["traces"]
        assert client.get("/traces", params={"from": "0001-01-01", "limit": 500}).json()["traces"] == everything
        assert client.get("/traces", params={"to": "9999-12-31", "limit": 500}).json()["traces"] == everything
        assert client.get("/traces", params={"from": "9999-12-31"}).json()["traces"] == []

        response = client.get("/traces", params={"min_duration_ms": "1.1e308"})
        assert response.status_code == 400 and "min_duration_ms" in response.json()["error"], response.text
        assert client.get("/traces", params={"min_duration_ms": "9223372036853"}).json()["traces"] == []

        for route in ("/sessions", "/users"):
            response = client.get(route, params={"offset": "431738649746925944832"})
            assert response.status_code == 400 and "offset" in response.json()["error"], response.text
            assert client.get(route, params={"offset": "1000000000"}).status_code == 200

        response = client.post("/sql", json={"sql": "SELECT 'infinity'::TIMESTAMP AS a, DATE '5877642-06-25' AS d"})
        assert response.status_code == 200, response.text
        out_of_range = ["<value out of range: 9223372036854775807>", "<value out of range: 2146045306>"]
        assert response.json()["rows"] == [out_of_range], response.text
        normal = client.post("/sql", json={"sql": "SELECT TIMESTAMP '2020-01-01 01:02:03.5' AS t"}).json()
        assert normal["rows"] == [["2020-01-01T01:02:03.500000"]], normal
        # Two columns of one name were one value per row (the row went through a dict).
        both = client.post("/sql", json={"sql": "SELECT 1 AS a, 2 AS a"}).json()
        assert both["rows"] == [[1, 2]] and len(both["columns"]) == 2, both

        # Unknown paths and methods answer in the API's error shape.
        missing = client.get("/nowhere")
        assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}, missing.text
        wrong = client.delete("/traces")
        assert wrong.status_code == 405 and "error" in wrong.json(), wrong.text
