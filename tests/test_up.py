"""`agentflight up` on an empty data directory: collector and query API start, sample traces are visible."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from store.views import connect
from tests.conftest import REPO


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_up_serves_sample_traces_through_the_api(tmp_path: Path) -> None:
    grpc_port, http_port, api_port = _free_port(), _free_port(), _free_port()
    command = [
        sys.executable, "-m", "collector.cli", "up", "--data-dir", str(tmp_path / "data"),
        "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--api-port", str(api_port),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        text = "".join(output)
        assert "Latest traces:" in text and f"http://127.0.0.1:{api_port}" in text, text
        traces = httpx.get(f"http://127.0.0.1:{api_port}/traces", timeout=30).json()["traces"]
        assert len(traces) >= 3
        assert any(t["root_name"] in text for t in traces)
        for service in ("capture-otel_v2", "js-agent", "capture-openinference"):  # the three bundled exports
            assert service in text
        tree = httpx.get(f"http://127.0.0.1:{api_port}/traces/{traces[0]['trace_id']}", timeout=30).json()
        assert tree["total_spans"] == traces[0]["span_count"]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, "".join(output)
    con = connect(tmp_path / "data" / "lake")
    assert con.execute("SELECT count(*) FROM spans").fetchone() == (13,)
    # The API process went down with it.
    try:
        httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=2)
        raise AssertionError("the API outlived `agentflight up`")
    except httpx.TransportError:
        pass
