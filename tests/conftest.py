"""Shared test fixtures: a real collector on port 0 over a temporary data directory, and ways to talk to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest

from collector.config import Settings, WriterSettings
from collector.service import Collector
from store.views import connect

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "data" / "otlp"  # real exports and convention variants: see its README.md
CAPTURED = FIXTURES / "captured"
TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def free_port() -> int:
    """A TCP port nobody listens on now (for processes that take a port number, not port 0)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_collector(data_dir: Path, **overrides: Any) -> Collector:
    settings = Settings(data_dir=data_dir, grpc_port=0, http_port=0, **overrides)
    return Collector(settings, writer_settings=WriterSettings(flush_interval_seconds=0.2)).start()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    running = start_collector(tmp_path / "data")
    yield running
    running.stop()


def query(c: Collector, sql: str, project: str | None = None, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con: duckdb.DuckDBPyConnection = connect(c.settings.lake_dir, project)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def query_dicts(c: Collector, sql: str, project: str | None = None) -> list[dict[str, Any]]:
    con = connect(c.settings.lake_dir, project)
    try:
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def grpc_export(
    port: int, body: bytes, *, method: str = TRACE_METHOD, metadata: list[tuple[str, str]] | None = None
) -> tuple[bytes, grpc.Call]:
    """Send raw request bytes exactly as a client put them on the wire."""
    options = [("grpc.max_send_message_length", 256 * 1024 * 1024)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        response, rpc = call.with_call(body, metadata=metadata, timeout=60)
        return response, rpc


class ApiServer:
    """The query API served by a real uvicorn on port 0 in a background thread."""

    def __init__(self, settings: Settings) -> None:
        import threading

        import uvicorn

        from query.app import create_app

        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        import time

        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("query API did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def client(self, key: str | None = None) -> Any:
        import httpx

        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_api(settings: Settings) -> ApiServer:
    return ApiServer(settings)


@pytest.fixture(scope="session")
def demo_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A real API over real data: the demo agent's scenarios sent through a real collector (UI tests)."""
    from examples.scenarios import run_demo

    running = start_collector(tmp_path_factory.mktemp("ui-demo") / "data")
    try:
        run_demo(f"http://127.0.0.1:{running.grpc_port}", users=4)
        running.flush()
        api = start_api(running.settings)
        try:
            yield api
        finally:
            api.stop()
    finally:
        running.stop()


@pytest.fixture
def ui_env(demo_api: ApiServer, monkeypatch: pytest.MonkeyPatch) -> ApiServer:
    """Points the UI (ui/client.py reads the environment) at the demo API."""
    monkeypatch.setenv("AGENTFLIGHT_API_URL", demo_api.url)
    monkeypatch.delenv("AGENTFLIGHT_API_KEY", raising=False)
    return demo_api
