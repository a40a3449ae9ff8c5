"""`agentflight up` on an empty data directory: collector and query API start, sample and demo traces are visible."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from examples.scenarios import scenarios
from store.views import connect
from tests.conftest import REPO, free_port


def _children(pid: int) -> list[int]:
    return [
        int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()
    ]


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text()


def _nice(proc: Path) -> int:
    """Field 19 of /proc/<pid>[/task/<tid>]/stat (after the parenthesised command name)."""
    return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[16])


def test_up_serves_sample_traces_through_the_api(tmp_path: Path) -> None:
    grpc_port, http_port, api_port, ui_port = free_port(), free_port(), free_port(), free_port()
    command = [
        sys.executable, "-m", "collector.cli", "up", "--data-dir", str(tmp_path / "data"),
        "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--api-port", str(api_port),
        "--ui-port", str(ui_port),
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
        assert "travel-agent" in text and "Findings:" in text and "loop" in text
        assert f"UI:                    http://127.0.0.1:{ui_port}" in text
        assert httpx.get(f"http://127.0.0.1:{ui_port}/_stcore/health", timeout=10).text == "ok"
        services = {
            t["service_name"] for t in httpx.get(f"http://127.0.0.1:{api_port}/traces?limit=100").json()["traces"]
        }
        assert {"capture-otel_v2", "js-agent", "capture-openinference", "travel-agent"} <= services
        tree = httpx.get(f"http://127.0.0.1:{api_port}/traces/{traces[0]['trace_id']}", timeout=30).json()
        assert tree["total_spans"] == traces[0]["span_count"]
        # The demo agent's runs are there too, with every kind of finding it is built to produce.
        totals = httpx.get(f"http://127.0.0.1:{api_port}/findings/counts", timeout=30).json()["totals"]
        assert set(totals) == {"loop", "retry", "budget", "guardrail", "error", "readiness"}, totals
        # The API runs at nice 19, every thread of it; the collector (ingest) as it was started.
        api_pids = [pid for pid in _children(process.pid) if "collector.cli\0api" in _cmdline(pid)]
        assert len(api_pids) == 1
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert {_nice(task) for task in Path(f"/proc/{api_pids[0]}/task").iterdir()} == {max(own, 19)}
        assert _nice(Path(f"/proc/{process.pid}")) == own
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, "".join(output)
    con = connect(tmp_path / "data" / "lake")
    assert con.execute("SELECT count(*) FROM spans WHERE service_name <> 'travel-agent'").fetchone() == (13,)
    assert con.execute("SELECT count(DISTINCT trace_id) FROM spans WHERE service_name = 'travel-agent'").fetchone() == (
        len(scenarios()),
    )
    # The API and UI processes went down with it.
    try:
        httpx.get(f"http://127.0.0.1:{ui_port}/_stcore/health", timeout=2)
        raise AssertionError("the UI outlived `agentflight up`")
    except httpx.TransportError:
        pass
    try:
        httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=2)
        raise AssertionError("the API outlived `agentflight up`")
    except httpx.TransportError:
        pass


def test_ui_command_stops_with_sigterm(tmp_path: Path) -> None:
    """`agentflight ui` under a service manager: SIGTERM to the pid it was started as frees the port."""
    ui_port = free_port()
    command = [sys.executable, "-m", "collector.cli", "ui", "--data-dir", str(tmp_path / "data")]
    command += ["--ui-port", str(ui_port)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{ui_port}/_stcore/health", timeout=2).text == "ok":
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError("the UI did not answer within 60 s")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        process.kill()
    try:
        httpx.get(f"http://127.0.0.1:{ui_port}/_stcore/health", timeout=2)
        raise AssertionError("a UI process outlived SIGTERM to `agentflight ui`")
    except httpx.TransportError:
        pass
