"""Auth and isolation, exhaustively: every API route and both OTLP endpoints refuse missing, wrong and
revoked keys, and 1,000 random requests with project A's key never see a canary of project B (list and
detail routes, text search, costs, findings, SQL, exports)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import sdk_helpers as af
from collector.service import Collector
from store.keys import create_key, revoke_key
from tests.conftest import ApiServer, grpc_export, start_api, start_collector

CANARY = "canary-b-7f3e"  # in project B's names, ids, attributes and content; never in A's answers
REQUESTS = 1_000


def _send(port: int, key: str, project: str, marker: str, traces: int = 6) -> None:
    telemetry = af.configure(f"http://127.0.0.1:{port}", api_key=key, service_name=f"svc-{marker}", set_global=False)
    for i in range(traces):
        with af.user_session(user_id=f"user-{marker}-{i % 2}", session_id=f"session-{marker}-{i % 3}"):
            with (
                af.agent_run(f"agent-{marker}"),
                af.llm_call("gpt-4o-mini", provider="openai", messages=f"question {marker} {i}") as call,
            ):
                call.record(output=f"answer {marker} {i}", input_tokens=10 + i, output_tokens=5)
            with (
                af.agent_run(f"agent-{marker}"),
                pytest.raises(RuntimeError),
                af.tool_call(f"tool-{marker}", arguments={"q": marker}),
            ):
                raise RuntimeError(f"failure {marker}")
    telemetry.shutdown()


@pytest.fixture(scope="module")
def two_projects(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Collector, ApiServer, dict[str, Any]]]:
    data = tmp_path_factory.mktemp("isolation") / "data"
    key_a, _ = create_key(data / "keys.json", "alpha")
    key_b, _ = create_key(data / "keys.json", "beta")
    key_revoked, record = create_key(data / "keys.json", "alpha")
    collector = start_collector(data)
    _send(collector.grpc_port, key_a, "alpha", "alpha-a1")
    _send(collector.grpc_port, key_b, "beta", CANARY)
    collector.flush()
    assert revoke_key(data / "keys.json", record.key_id)
    api = start_api(collector.settings)
    with api.client(key_b) as beta:
        theirs = beta.get("/traces").json()["traces"]
    assert theirs and all(CANARY in t["root_name"] for t in theirs)
    ids = {
        "trace_ids": [t["trace_id"] for t in theirs],
        "span_ids": [t["root_span_id"] for t in theirs],
        "keys": {"a": key_a, "b": key_b, "revoked": key_revoked},
    }
    yield collector, api, ids
    api.stop()
    collector.stop()


def _random_request(rng: random.Random, ids: dict[str, Any]) -> tuple[str, str, dict[str, Any] | None, Any]:
    """(method, path, params, json body): a route of the API with arguments aimed at project B's data."""
    b_trace, b_span = rng.choice(ids["trace_ids"]), rng.choice(ids["span_ids"])
    text = rng.choice([CANARY, f"agent-{CANARY}", f"user-{CANARY}-0", f"session-{CANARY}-1", "canary", "a", ""])
    group = rng.choice(["model", "user", "session", "agent", "tool", "service", "day"])
    kind = rng.choice(["error", "retry", None])
    choices: list[tuple[str, str, dict[str, Any] | None, Any]] = [
        ("GET", "/traces", {"q": text or None, "limit": rng.randint(1, 500)}, None),
        ("GET", "/traces", {"user": text, "session": f"session-{CANARY}-{rng.randint(0, 2)}"}, None),
        ("GET", "/traces", {"agent": f"agent-{CANARY}", "flag": rng.choice(["error", "retry", "loop", None])}, None),
        ("GET", "/traces", {"tool": f"tool-{CANARY}", "service": f"svc-{CANARY}", "status": "error"}, None),
        ("GET", f"/traces/{b_trace}", {"content": rng.choice(["true", "false"])}, None),
        ("GET", f"/traces/{b_trace}/spans/{b_span}", None, None),
        ("GET", f"/traces/{b_trace}/export", {"format": rng.choice(["otlp", "otlp_logs", "eval"])}, None),
        ("GET", "/sessions", {"user": text or None}, None),
        ("GET", f"/sessions/session-{CANARY}-{rng.randint(0, 2)}", None, None),
        ("GET", "/users", None, None),
        ("GET", f"/users/user-{CANARY}-{rng.randint(0, 1)}", None, None),
        ("GET", "/costs", {"group_by": group}, None),
        ("GET", "/costs/unit-economics", {"sessions_per_day": rng.randint(1, 1000)}, None),
        ("GET", "/findings", {"kind": kind, "trace_id": rng.choice([b_trace, None])}, None),
        ("GET", "/findings/counts", None, None),
        ("POST", "/sql", None, {"sql": rng.choice([
            "SELECT * FROM spans", "SELECT name, user_id, attributes FROM spans",
            f"SELECT * FROM spans WHERE name LIKE '%{CANARY}%'", "SELECT * FROM events",
            "SELECT DISTINCT project FROM spans", "SELECT * FROM spans_with_content",
        ])}),
    ]  # fmt: skip
    return rng.choice(choices)


def test_a_thousand_random_requests_never_see_the_other_project(
    two_projects: tuple[Collector, ApiServer, dict[str, Any]],
) -> None:
    _, api, ids = two_projects
    rng = random.Random(20261122)
    statuses: dict[int, int] = {}
    seen_alpha = 0
    with api.client(ids["keys"]["a"]) as alpha:
        for _ in range(REQUESTS):
            method, path, params, body = _random_request(rng, ids)
            response = alpha.request(method, path, params={k: v for k, v in (params or {}).items() if v is not None},
                                     json=body)  # fmt: skip
            # A 404 may quote the id the caller asked for; anything else with the canary came from B's data.
            text = response.text
            for echoed in (path.rsplit("/", 1)[-1], *(str(v) for v in (params or {}).values())):
                text = text.replace(echoed, "")
            assert CANARY not in text, (method, path, params, body, response.text[:300])
            assert response.status_code < 500, (path, response.text[:300])
            if f"/traces/{ids['trace_ids'][0][:8]}" in path or path.startswith(("/sessions/", "/users/")):
                assert response.status_code == 404, (path, response.status_code)
            seen_alpha += "alpha-a1" in response.text
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    # The requests did reach data (project A's), so the absence of B's canary means something.
    assert seen_alpha > REQUESTS // 10 and statuses.get(200, 0) > REQUESTS // 2, (seen_alpha, statuses)


def _routes(api: ApiServer) -> list[tuple[str, str]]:
    from fastapi.routing import APIRoute

    out = []
    for route in api.app.routes:
        if isinstance(route, APIRoute) and route.path not in ("/health",):
            path = route.path.replace("{trace_id}", "a" * 32).replace("{span_id}", "b" * 16)
            path = path.replace("{session_id:path}", "s").replace("{user_id:path}", "u")
            out.extend((method, path) for method in sorted(route.methods or ()))
    return out


@pytest.mark.parametrize("which", ["missing", "wrong", "revoked"])
def test_every_route_refuses_a_bad_key(two_projects: tuple[Collector, ApiServer, dict[str, Any]], which: str) -> None:
    collector, api, ids = two_projects
    key = {"missing": None, "wrong": "af_not-a-key", "revoked": ids["keys"]["revoked"]}[which]
    routes = _routes(api)
    assert len(routes) >= 14  # every route but /health
    with api.client(key) as client:
        for method, path in routes:
            response = client.request(method, path, json={"sql": "SELECT 1"} if method == "POST" else None)
            assert response.status_code == 401, (which, method, path, response.status_code)
    headers = {"content-type": "application/x-protobuf", **({"authorization": f"Bearer {key}"} if key else {})}
    for signal in ("traces", "logs"):
        response = httpx.post(
            f"http://127.0.0.1:{collector.http_port}/v1/{signal}", content=b"", headers=headers, timeout=10
        )
        assert response.status_code == 401, (which, signal, response.status_code)
    metadata = [("authorization", f"Bearer {key}")] if key else []
    with pytest.raises(Exception) as refused:
        grpc_export(collector.grpc_port, b"", metadata=metadata)
    assert "UNAUTHENTICATED" in str(refused.value), which
