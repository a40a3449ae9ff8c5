"""The query API over HTTP, on data that went through the real collector (OTel SDK exporter or captured files).

Expected numbers come from the scenario itself (tokens we sent) or from DuckDB over the lake's own rows,
never from the API's code. Goldens for the tree and the cost breakdown of the captured fixtures:
    AGENTFLIGHT_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_api.py -k golden
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from collector.service import Collector
from store.keys import create_key
from tests.conftest import CAPTURED, ApiServer, grpc_export, query, start_api, start_collector

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden"
BASE_NS = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000  # an hour ago, whole seconds
SECOND = 1_000_000_000


def _llm(model: str, inp: int, out: int, provider: str = "openai", **extra: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": inp,
        "gen_ai.usage.output_tokens": out,
        **extra,
    }


class Scenario:
    """Four requests an agent could make, with the numbers a correct backend must report."""

    def __init__(self, port: int) -> None:
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
        self.provider = TracerProvider(resource=Resource.create({"service.name": "api-test"}))
        self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("scenario")
        self.ids: dict[str, str] = {}

    def span(self, name: str, start_s: float, end_s: float, attrs: dict[str, Any], parent: Any = None) -> Any:
        context = otel_trace.set_span_in_context(parent) if parent is not None else None
        span = self.tracer.start_span(
            name, context=context, attributes=attrs, start_time=BASE_NS + int(start_s * SECOND)
        )
        span._end_s = end_s  # type: ignore[attr-defined]
        return span

    @staticmethod
    def end(span: Any) -> None:
        span.end(end_time=BASE_NS + int(span._end_s * SECOND))

    def run(self) -> None:
        agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}
        # T1: a wrapper model span around the call that really happened (counted once), a tool, another call.
        root = self.span("invoke_agent planner", 0, 5, {**agent, "user.id": "u1", "session.id": "s1"})
        wrapper = self.span("ChatOpenAI", 0.1, 1.0, _llm("gpt-4o-mini", 100, 20), root)
        inner = self.span("chat gpt-4o-mini", 0.2, 0.9, _llm("gpt-4o-mini", 100, 20), wrapper)
        tool = self.span(
            "execute_tool get_weather",
            1.1,
            1.5,
            {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather"},
            root,
        )
        second = self.span("chat gpt-4o-mini", 2.0, 3.0, _llm("gpt-4o-mini", 60, 10), root)
        for s in (inner, wrapper, tool, second, root):
            self.end(s)
        self.ids["t1"] = format(root.get_span_context().trace_id, "032x")
        self.ids["t1_wrapper"] = format(wrapper.get_span_context().span_id, "016x")
        self.ids["t1_inner"] = format(inner.get_span_context().span_id, "016x")
        # T2: a rate-limited call, then a retry that worked.
        root = self.span("invoke_agent planner", 10, 14, {**agent, "user.id": "u1", "session.id": "s1"})
        failed = self.span("chat gpt-4o-mini", 10.1, 10.2, _llm("gpt-4o-mini", 0, 0, **{"error.type": "429"}), root)
        failed.set_status(Status(StatusCode.ERROR, "Rate limit reached"))
        ok = self.span("chat gpt-4o-mini", 11, 12, _llm("gpt-4o-mini", 50, 5), root)
        for s in (failed, ok, root):
            self.end(s)
        self.ids["t2"] = format(root.get_span_context().trace_id, "032x")
        # T3: a self-hosted model nobody has a price for, under a versioned prompt; searchable text.
        root = self.span(
            "invoke_agent support",
            20,
            22,
            {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support", "user.id": "u2",
             "session.id": "s2"},
        )  # fmt: skip
        messages = [{"role": "user", "parts": [{"type": "text", "content": "where is the needle-phrase?"}]}]
        local = self.span(
            "chat my-local-model",
            20.5,
            21.5,
            _llm("my-local-model", 10, 10, provider="acme", **{"gen_ai.input.messages": json.dumps(messages),
                 "gen_ai.prompt.name": "triage", "gen_ai.prompt.version": "7"}),
            root,
        )  # fmt: skip
        for s in (local, root):
            self.end(s)
        self.ids["t3"] = format(root.get_span_context().trace_id, "032x")
        # T4: the root arrives, a child whose parent (an unexported span) never does.
        root = self.span("handle request", 30, 33, {"user.id": "u3"})
        trace_id = root.get_span_context().trace_id
        ghost = NonRecordingSpan(SpanContext(trace_id, 0xDEAD, is_remote=False, trace_flags=TraceFlags(1)))
        orphan = self.span("chat gpt-4o-mini", 31, 32, _llm("gpt-4o-mini", 7, 3), ghost)
        for s in (orphan, root):
            self.end(s)
        self.ids["t4"] = format(trace_id, "032x")
        self.ids["t4_orphan"] = format(orphan.get_span_context().span_id, "016x")
        self.provider.shutdown()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Collector, ApiServer, Scenario]]:
    collector = start_collector(tmp_path_factory.mktemp("api") / "data")
    scenario = Scenario(collector.grpc_port)
    scenario.run()
    collector.flush()
    api = start_api(dataclasses.replace(collector.settings, sql_timeout_seconds=1.0, sql_max_rows=1000))
    yield collector, api, scenario
    api.stop()
    collector.stop()


def _get(api: ApiServer, path: str, **params: Any) -> Any:
    with api.client() as client:
        response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _span_cost(collector: Collector, span_name: str, trace_id: str) -> float:
    rows = query(collector, "SELECT cost_usd FROM spans WHERE trace_id = ? AND name = ?", params=[trace_id, span_name])
    return sum(r[0] for r in rows)


def test_list_is_newest_first_with_request_summaries(stack: tuple[Collector, ApiServer, Scenario]) -> None:
    collector, api, sc = stack
    traces = _get(api, "/traces")["traces"]
    assert [t["trace_id"] for t in traces] == [sc.ids["t4"], sc.ids["t3"], sc.ids["t2"], sc.ids["t1"]]
    t1 = next(t for t in traces if t["trace_id"] == sc.ids["t1"])
    assert t1["root_name"] == "invoke_agent planner"
    assert t1["span_count"] == 5 and t1["llm_calls"] == 3 and t1["tool_calls"] == 1
    # The wrapper reports the same 100/20 as the call inside it: counted once (invariant 4).
    assert t1["tokens"]["input_tokens"] == 160 and t1["tokens"]["output_tokens"] == 30
    expected = _span_cost(collector, "chat gpt-4o-mini", sc.ids["t1"])
    assert t1["cost_usd"] == pytest.approx(expected) and expected > 0
    assert (t1["user_id"], t1["session_id"], t1["duration_ms"]) == ("u1", "s1", 5000.0)
    assert t1["agents"] == ["planner"] and t1["tools"] == ["get_weather"] and not t1["error"]
    t2 = next(t for t in traces if t["trace_id"] == sc.ids["t2"])
    assert t2["error"] and t2["flags"] == ["error", "retry"]
    t3 = next(t for t in traces if t["trace_id"] == sc.ids["t3"])
    assert t3["cost_usd"] is None and t3["unknown_cost_spans"] == 1


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"user": "u1"}, ["t2", "t1"]),
        ({"session": "s2"}, ["t3"]),
        ({"model": "my-local-model"}, ["t3"]),
        ({"provider": "acme"}, ["t3"]),
        ({"agent": "support"}, ["t3"]),
        ({"tool": "get_weather"}, ["t1"]),
        ({"span_type": "tool"}, ["t1"]),
        ({"service": "api-test", "status": "error"}, ["t2"]),
        ({"status": "ok", "user": "u1"}, ["t1"]),
        ({"flag": "error"}, ["t2"]),
        ({"flag": "loop"}, []),
        ({"min_duration_ms": 4500}, ["t1"]),
        ({"min_duration_ms": 3500}, ["t2", "t1"]),
        ({"q": "NEEDLE-phrase"}, ["t3"]),
        ({"q": "execute_tool get_"}, ["t1"]),
        ({"q": "100%_"}, []),
        ({"sort": "duration", "order": "asc", "user": "u1"}, ["t2", "t1"]),
    ],
)
def test_filters(stack: tuple[Collector, ApiServer, Scenario], params: dict[str, Any], expected: list[str]) -> None:
    _, api, sc = stack
    found = [t["trace_id"] for t in _get(api, "/traces", **params)["traces"]]
    assert found == [sc.ids[name] for name in expected]


def test_time_range_and_min_cost(stack: tuple[Collector, ApiServer, Scenario]) -> None:
    _, api, sc = stack
    window = {"from": str(BASE_NS + 5 * SECOND), "to": str(BASE_NS + 25 * SECOND)}
    assert [t["trace_id"] for t in _get(api, "/traces", **window)["traces"]] == [sc.ids["t3"], sc.ids["t2"]]
    iso_from = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((BASE_NS + 25 * SECOND) / SECOND))
    assert [t["trace_id"] for t in _get(api, "/traces", **{"from": iso_from})["traces"]] == [sc.ids["t4"]]
    costly = _get(api, "/traces", min_cost=1e-12)["traces"]
    assert {t["trace_id"] for t in costly} == {sc.ids["t1"], sc.ids["t2"], sc.ids["t4"]}


def test_cursor_pages_through_every_trace_once(stack: tuple[Collector, ApiServer, Scenario]) -> None:
    collector, api, _ = stack
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1, "sort": "cost"}
        if cursor:
            params["cursor"] = cursor
        page = _get(api, "/traces", **params)
        seen += [t["trace_id"] for t in page["traces"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    distinct = query(collector, "SELECT count(DISTINCT trace_id) FROM spans")[0][0]
    assert len(seen) == len(set(seen)) == distinct == 4


def test_bad_parameters_answer_4xx_with_a_message(stack: tuple[Collector, ApiServer, Scenario]) -> None:
    _, api, _ = stack
    with api.client() as client:
        for path, params in [
            ("/traces", {"cursor": "garbage"}),
            ("/traces", {"from": "yesterday"}),
            ("/traces", {"limit": 0}),
            ("/traces", {"flag": "bogus"}),
            ("/costs", {"group_by": "model,colour"}),
            ("/costs", {"group_by": "model,model"}),
        ]:
            response = client.get(path, params=params)
            assert 400 <= response.status_code < 500, (path, params, response.text)
            assert response.json()["error"]
        cursor = client.get("/traces", params={"limit": 1}).json()["next_cursor"]
        other_sort = client.get("/traces", params={"limit": 1, "sort": "cost", "cursor": cursor})
        assert other_sort.status_code == 400 and "sort order" in other_sort.json()["error"]
        assert client.get("/traces/not-a-trace-id").status_code == 404
        assert client.get("/traces/" + "0" * 32).status_code == 404


def test_trace_tree(stack: tuple[Collector, ApiServer, Scenario]) -> None:
    _, api, sc = stack
    body = _get(api, f"/traces/{sc.ids['t1']}")
    spans = body["spans"]
    assert [(s["name"], s["depth"]) for s in spans] == [
        ("invoke_agent planner", 0),
        ("ChatOpenAI", 1),
        ("chat gpt-4o-mini", 2),
        ("execute_tool get_weather", 1),
        ("chat gpt-4o-mini", 1),
    ]
    root, wrapper, inner = spans[0], spans[1], spans[2]
    assert wrapper["span_id"] == sc.ids["t1_wrapper"] and inner["span_id"] == sc.ids["t1_inner"]
    assert not wrapper["counted"] and wrapper["own"]["input_tokens"] == 0 and wrapper["reported"]["input_tokens"] == 100
    assert wrapper["inclusive"]["input_tokens"] == 100 and inner["own"]["input_tokens"] == 100
    assert root["inclusive"]["input_tokens"] == body["trace"]["tokens"]["input_tokens"] == 160
    assert root["inclusive"]["cost_usd"] == pytest.approx(body["trace"]["cost_usd"])
    assert root["children"] == 3 and root["descendants"] == 4
    assert [s["offset_ms"] for s in spans] == [0.0, 100.0, 200.0, 1100.0, 2000.0]
    assert body["content_included"] and body["findings"] == []


def test_orphans_hang_under_the_root_marked(stack: tuple[Collector, ApiServer, Scenario]) -> None:
    _, api, sc = stack
    body = _get(api, f"/traces/{sc.ids['t4']}")
    root, orphan = body["spans"]
    assert (root["depth"], root["orphan"], root["children"]) == (0, False, 1)
    assert (orphan["span_id"], orphan["depth"], orphan["orphan"]) == (sc.ids["t4_orphan"], 1, True)
    assert orphan["parent_span_id"] == format(0xDEAD, "016x")
    assert root["inclusive"]["input_tokens"] == 7


def test_errors_are_findings_with_the_message(stack: tuple[Collector, ApiServer, Scenario]) -> None:
    _, api, sc = stack
    findings = _get(api, f"/traces/{sc.ids['t2']}")["findings"]
    assert [(f["kind"], f["code"]) for f in findings] == [("error", "rate_limit"), ("retry", "retry")]
    assert "Rate limit reached" in findings[0]["message"]
    assert findings[1]["evidence"]["outcome"] == "recovered" and findings[1]["evidence"]["attempts"] == 2


def test_span_detail_has_content_and_raw_attributes(stack: tuple[Collector, ApiServer, Scenario]) -> None:
    _, api, sc = stack
    tree = _get(api, f"/traces/{sc.ids['t3']}")
    llm = next(s for s in tree["spans"] if s["span_type"] == "llm")
    assert llm["input_messages"][0]["parts"][0]["content"] == "where is the needle-phrase?"
    assert (llm["prompt_name"], llm["prompt_version"]) == ("triage", "7")
    span = _get(api, f"/traces/{sc.ids['t3']}/spans/{llm['span_id']}")
    assert span["attributes"]["gen_ai.request.model"] == "my-local-model"
    assert span["resource"]["service.name"] == "api-test"
    assert span["cost_status"] == "unknown_model" and span["cost_usd"] is None
    with api.client() as client:
        assert client.get(f"/traces/{sc.ids['t3']}/spans/{'f' * 16}").status_code == 404


def test_sessions_and_users(stack: tuple[Collector, ApiServer, Scenario]) -> None:
    _, api, sc = stack
    session = _get(api, "/sessions/s1")
    assert [t["trace_id"] for t in session["traces"]] == [sc.ids["t1"], sc.ids["t2"]]
    assert session["totals"]["traces"] == 2 and session["totals"]["tokens"]["input_tokens"] == 210
    assert session["totals"]["errors"] == 1
    user = _get(api, "/users/u1", bucket="hour")
    assert user["totals"]["traces"] == 2 and [s["session_id"] for s in user["sessions"]] == ["s1"]
    assert sum(p["traces"] for p in user["over_time"]["points"]) == 2
    sessions = _get(api, "/sessions")["sessions"]
    assert [s["session_id"] for s in sessions] == ["s2", "s1"]
    users = {u["user_id"]: u for u in _get(api, "/users")["users"]}
    assert set(users) == {"u1", "u2", "u3"} and users["u1"]["sessions"] == 1
    with api.client() as client:
        assert client.get("/sessions/nope").status_code == 404
        assert client.get("/users/nobody").status_code == 404


def test_cost_breakdown_matches_the_lake(stack: tuple[Collector, ApiServer, Scenario]) -> None:
    collector, api, sc = stack
    body = _get(api, "/costs", group_by="model,agent,prompt_version")
    groups = {(g["model"], g["agent"], g["prompt_version"]): g for g in body["groups"]}
    local = groups[("my-local-model", "support", "7")]
    assert local["cost_usd"] is None and local["unknown_cost_share"] == 1.0 and local["tokens"]["input_tokens"] == 10
    # The leaf spans of the gpt-4o-mini calls, priced by the lake; the wrapper is left out.
    leaf_cost = query(
        collector,
        "SELECT sum(cost_usd), sum(input_tokens) FROM spans WHERE request_model = 'gpt-4o-mini' AND span_id <> ?",
        params=[sc.ids["t1_wrapper"]],
    )[0]
    mini = [g for key, g in groups.items() if key[0].startswith("gpt-4o-mini")]
    assert sum(g["cost_usd"] for g in mini) == pytest.approx(leaf_cost[0])
    assert sum(g["tokens"]["input_tokens"] for g in mini) == leaf_cost[1] == 217
    assert body["total"]["spans"] == 5 and body["total"]["unknown_cost_spans"] == 1
    assert body["total"]["unknown_cost_share"] == pytest.approx(0.2)
    by_day = _get(api, "/costs", group_by="day")["groups"]
    assert sum(g["spans"] for g in by_day) == 5
    assert _get(api, "/costs", group_by="tool")["total"]["traces"] == 4


def test_unit_economics(stack: tuple[Collector, ApiServer, Scenario]) -> None:
    _, api, _ = stack
    body = _get(api, "/costs/unit-economics", sessions_per_day=1000)
    assert body["traces"] == 4 and body["sessions"] == 2
    assert body["avg_cost_per_trace_usd"] == pytest.approx(body["cost_usd"] / 4)
    # s2 cost is unknown, so the session average is s1's known cost over the two sessions.
    assert body["projection"]["daily_cost_usd"] == pytest.approx(body["avg_cost_per_session_usd"] * 1000)
    assert body["projection"]["monthly_cost_usd"] == pytest.approx(body["projection"]["daily_cost_usd"] * 30)


def test_metrics_and_openapi(stack: tuple[Collector, ApiServer, Scenario]) -> None:
    _, api, _ = stack
    with api.client() as client:
        assert "agentflight_api_requests_total" in client.get("/metrics").text
        paths = client.get("/openapi.json").json()["paths"]
    for path in ("/traces", "/traces/{trace_id}", "/sessions/{session_id}", "/users/{user_id}", "/costs", "/sql"):
        assert path in paths


# --- captured fixtures: dedup, late spans, goldens ---------------------------------------------------


def _send_captured(collector: Collector) -> None:
    for path in sorted(CAPTURED.glob("*.json")):
        response = httpx.post(
            f"http://127.0.0.1:{collector.http_port}/v1/traces",
            content=path.read_bytes(),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200
    collector.flush()


def _snapshot(api: ApiServer) -> dict[str, Any]:
    traces = _get(api, "/traces", limit=500)["traces"]
    return {
        "traces": traces,
        "trees": {t["trace_id"]: _get(api, f"/traces/{t['trace_id']}") for t in traces},
        "costs": _get(api, "/costs", group_by="model,provider,day", count_traces="true"),
        "unit": _get(api, "/costs/unit-economics"),
    }


def _check_golden(name: str, value: Any) -> None:
    path = GOLDEN_DIR / name
    if os.environ.get("AGENTFLIGHT_UPDATE_GOLDEN"):
        path.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")
    assert json.loads(path.read_text()) == json.loads(json.dumps(value)), f"{name} differs from the golden file"


def test_captured_goldens_dedup_and_late_spans(tmp_path: Path) -> None:
    collector = start_collector(tmp_path / "data")
    api = start_api(collector.settings)
    try:
        _send_captured(collector)
        first = _snapshot(api)
        weather = next(t for t in first["traces"] if t["root_name"] == "invoke_agent weather-agent")
        _check_golden("api_trace_weather_agent.json", first["trees"][weather["trace_id"]])
        _check_golden("api_costs_captured.json", first["costs"])
        # Everything again (a client retry, a WAL replay): not one number moves (invariant 2).
        _send_captured(collector)
        assert query(collector, "SELECT count(*) > count(DISTINCT span_id) FROM spans_raw")[0][0]
        assert _snapshot(api) == first
        # A span that arrives after the trace was read shows up on the next read.
        late = ExportTraceServiceRequest()
        scope_spans = late.resource_spans.add().scope_spans.add()
        span = scope_spans.spans.add(
            trace_id=bytes.fromhex(weather["trace_id"]),
            span_id=bytes.fromhex("00000000000000aa"),
            parent_span_id=bytes.fromhex(weather["root_span_id"]),
            name="late tool",
            start_time_unix_nano=weather["start_time_unix_nano"] + 1000,
            end_time_unix_nano=weather["start_time_unix_nano"] + 2000,
        )
        span.attributes.append(KeyValue(key="gen_ai.tool.name", value=AnyValue(string_value="late_tool")))
        grpc_export(collector.grpc_port, late.SerializeToString())
        collector.flush()
        after = _get(api, f"/traces/{weather['trace_id']}")
        assert after["total_spans"] == weather["span_count"] + 1
        assert "late tool" in [s["name"] for s in after["spans"]]
        assert _get(api, "/traces", tool="late_tool")["traces"][0]["trace_id"] == weather["trace_id"]
    finally:
        api.stop()
        collector.stop()


def test_large_trace_is_paged_and_collapsible(tmp_path: Path) -> None:
    """10,000 spans: the default answer is one bounded page without content; depth collapses on the server."""
    collector = start_collector(tmp_path / "data")
    api = start_api(collector.settings)
    try:
        trace_id = os.urandom(16)
        request = ExportTraceServiceRequest()
        spans = request.resource_spans.add().scope_spans.add().spans
        start = time.time_ns()
        root = spans.add(trace_id=trace_id, span_id=(1).to_bytes(8, "big"), name="root", start_time_unix_nano=start)
        root.end_time_unix_nano = start + 10_000_000
        for step in range(1, 100):  # 99 steps of 100 children each, plus the root: 10,000 spans
            step_id = (step + 1).to_bytes(8, "big")
            spans.add(trace_id=trace_id, span_id=step_id, parent_span_id=root.span_id, name=f"step {step}",
                      start_time_unix_nano=start + step, end_time_unix_nano=start + step + 10)  # fmt: skip
            for child in range(100):
                spans.add(trace_id=trace_id, span_id=(1_000_000 + step * 1000 + child).to_bytes(8, "big"),
                          parent_span_id=step_id, name="x" * 64, start_time_unix_nano=start + step + child,
                          end_time_unix_nano=start + step + child + 5)  # fmt: skip
        assert len(spans) == 10_000
        grpc_export(collector.grpc_port, request.SerializeToString())
        collector.flush()
        with api.client() as client:
            response = client.get(f"/traces/{trace_id.hex()}")
            assert response.status_code == 200
            body = response.json()
            assert body["total_spans"] == 10_000 and len(body["spans"]) == 500 and body["next_offset"] == 500
            assert not body["content_included"] and len(response.content) < 1_000_000
            collapsed = client.get(f"/traces/{trace_id.hex()}", params={"max_depth": 1}).json()
            assert collapsed["visible_spans"] == 100
            assert sum(s.get("hidden_descendants", 0) for s in collapsed["spans"]) == 10_000 - 100
            last = client.get(f"/traces/{trace_id.hex()}", params={"offset": 9_900, "limit": 500}).json()
            assert len(last["spans"]) == 100 and last["next_offset"] is None
    finally:
        api.stop()
        collector.stop()


def test_keys_scope_every_route_to_one_project(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key_a, _ = create_key(data / "keys.json", "alpha")
    key_b, _ = create_key(data / "keys.json", "beta")
    collector = start_collector(data)
    api = start_api(collector.settings)
    try:
        for key, name in ((key_a, "alpha work"), (key_b, "beta secret")):
            request = ExportTraceServiceRequest()
            request.resource_spans.add().scope_spans.add().spans.add(
                trace_id=os.urandom(16), span_id=os.urandom(8), name=name,
                start_time_unix_nano=time.time_ns(), end_time_unix_nano=time.time_ns() + 1,
                attributes=[KeyValue(key="session.id", value=AnyValue(string_value=f"session-{name}")),
                            KeyValue(key="user.id", value=AnyValue(string_value=f"user-{name}"))],
            )  # fmt: skip
            grpc_export(collector.grpc_port, request.SerializeToString(), metadata=[("authorization", f"Bearer {key}")])
        collector.flush()
        with api.client() as anonymous, api.client("wrong") as wrong:
            for client in (anonymous, wrong):
                for path in ("/traces", "/costs", "/sessions", "/users", "/metrics", f"/traces/{'a' * 32}"):
                    response = client.get(path)
                    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
                assert client.post("/sql", json={"sql": "SELECT 1"}).status_code == 401
            assert anonymous.get("/health").status_code == 200
        with api.client(key_a) as alpha, api.client(key_b) as beta:
            mine = alpha.get("/traces").json()["traces"]
            theirs = beta.get("/traces").json()["traces"]
            assert [t["root_name"] for t in mine] == ["alpha work"] and [t["root_name"] for t in theirs] == [
                "beta secret"
            ]
            beta_trace = theirs[0]["trace_id"]
            assert alpha.get(f"/traces/{beta_trace}").status_code == 404
            assert alpha.get(f"/traces/{beta_trace}/spans/{theirs[0]['root_span_id']}").status_code == 404
            assert alpha.get(f"/traces/{beta_trace}/export").status_code == 404
            assert alpha.get("/sessions/session-beta secret").status_code == 404
            assert alpha.get("/users/user-beta secret").status_code == 404
            assert alpha.get("/costs", params={"group_by": "user"}).json()["total"]["spans"] == 0
            assert beta.get(f"/traces/{beta_trace}").status_code == 200
    finally:
        api.stop()
        collector.stop()


def test_sql_route_formats_and_refusals(stack: tuple[Collector, ApiServer, Scenario]) -> None:
    import io

    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    collector, api, _ = stack
    sql = "SELECT trace_id, count(*) AS spans FROM spans GROUP BY ALL ORDER BY trace_id"
    expected = query(collector, sql)
    with api.client() as client:
        body = client.post("/sql", json={"sql": sql}).json()
        assert [c["name"] for c in body["columns"]] == ["trace_id", "spans"]
        assert [tuple(r) for r in body["rows"]] == expected and body["row_count"] == 4
        arrow = client.post("/sql", json={"sql": sql, "format": "arrow"})
        assert arrow.headers["content-type"] == "application/vnd.apache.arrow.stream"
        assert ipc.open_stream(arrow.content).read_all().num_rows == 4
        parquet = client.post("/sql", json={"sql": sql, "format": "parquet"})
        assert pq.read_table(io.BytesIO(parquet.content)).column("spans").to_pylist() == [r[1] for r in expected]
        for bad, status in [
            ("SELECT 1; DROP VIEW spans", 400),
            ("COPY spans TO '/tmp/x.csv'", 400),
            ("SELECT * FROM read_csv('/etc/passwd')", 400),
            ("SELEKT 1", 400),
            ("SELECT sum(a.range * b.range) FROM range(100000000) a, range(100000000) b", 408),
        ]:
            response = client.post("/sql", json={"sql": bad})
            assert response.status_code == status, (bad, response.text)
            assert response.json()["error"] and "/" not in response.json()["error"].split(":")[0]
        assert client.post("/sql", json={"sql": "SELECT * FROM range(1001)"}).status_code == 413
        assert client.post("/sql", json={"sql": "SELECT * FROM range(1000)"}).json()["row_count"] == 1000
        assert client.post("/sql", json={}).status_code == 422


def test_export_route_reimports_and_gives_an_eval_case(
    stack: tuple[Collector, ApiServer, Scenario], tmp_path: Path
) -> None:
    collector, api, sc = stack
    with api.client() as client:
        otlp = client.get(f"/traces/{sc.ids['t1']}/export", params={"format": "otlp"})
        assert otlp.status_code == 200 and "attachment" in otlp.headers["content-disposition"]
        case = client.get(f"/traces/{sc.ids['t3']}/export", params={"format": "eval"})
        assert case.headers["content-type"].startswith("application/x-ndjson")
        (line,) = case.text.splitlines()
        assert json.loads(line)["trace_id"] == sc.ids["t3"]
        assert "needle-phrase" in json.dumps(json.loads(line)["input"])
        assert client.get(f"/traces/{sc.ids['t1']}/export", params={"format": "csv"}).status_code == 422
    other = start_collector(tmp_path / "other")
    try:
        response = httpx.post(f"http://127.0.0.1:{other.http_port}/v1/traces", json=otlp.json())
        assert response.status_code == 200
        other.flush()
        columns = "span_id, parent_span_id, name, span_type, input_tokens, output_tokens, cost_usd, attributes"
        sql = f"SELECT {columns} FROM spans WHERE trace_id = ? ORDER BY span_id"
        assert query(other, sql, params=[sc.ids["t1"]]) == query(collector, sql, params=[sc.ids["t1"]])
    finally:
        other.stop()


def test_session_and_user_ids_with_slashes_are_addressable(tmp_path: Path) -> None:
    """Agents use ids like 'tenant/42'; URL-encoded, they reach the session and user routes."""
    import sdk_helpers as af

    collector = start_collector(tmp_path / "data")
    telemetry = af.configure(f"http://127.0.0.1:{collector.grpc_port}", service_name="slashes", set_global=False)
    with af.user_session(user_id="acme/u 1", session_id="acme/s/7"), af.agent_run("a"):
        pass
    telemetry.shutdown()
    collector.flush()
    api = start_api(collector.settings)
    try:
        client = api.client()
        assert client.get("/sessions/acme%2Fs%2F7").json()["session_id"] == "acme/s/7"
        assert client.get("/users/acme%2Fu%201").json()["user_id"] == "acme/u 1"
        assert client.get("/sessions/acme%2Fnone").status_code == 404
    finally:
        api.stop()
        collector.stop()
