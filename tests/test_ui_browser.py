"""The UI in a real headless Chromium (Debian's package, driven by Playwright) against a running
`agentflight up` with its first-run demo data: every page loads, an engineer gets from the trace list to
the failing step, and an injection corpus stored in spans runs nothing and fetches nothing.

Screenshots go to a temporary folder; with AGENTFLIGHT_UPDATE_SCREENSHOTS=1 to docs/screenshots/ (the
README shows them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

import sdk_helpers as af
from tests.conftest import REPO, free_port

CHROMIUM = "/usr/bin/chromium"  # Debian's chromium package (make test installs it)
PAGES = ("traces", "replay", "flags", "readiness", "costs", "sessions", "users", "sql")
PATHS = {"traces": ""}  # the default page lives at the root



class Listener:
    """A local HTTP server that records every request: the corpus points its images and links here."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def corpus(listener: str) -> list[str]:
    return [
        "<script>window.__pwned=1</script>",
        f'<img src="{listener}/img-html" onerror="window.__pwned=1">',
        f"![pixel]({listener}/img-markdown)",
        f"[click]({listener}/link) **bold** <iframe src='{listener}/iframe'></iframe>",
        "\x1b[31mred\x1b[0m \u202eevil\u202c",
        f"<svg onload=\"fetch('{listener}/svg')\"></svg>",
    ]


@dataclass
class Stack:
    ui: str
    api: str
    listener: Listener
    shots: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("up") / "data"
    ports = {name: free_port() for name in ("grpc", "http", "api", "ui")}
    command = [sys.executable, "-m", "collector.cli", "up", "--data-dir", str(data)]
    for name, port in ports.items():
        command += [f"--{name}-port", str(port)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    log: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        log.append(line)
        if not line or line.startswith("Press Ctrl-C"):
            break
    assert "UI:" in "".join(log), "".join(log)
    threading.Thread(target=lambda: [None for _ in process.stdout or []], daemon=True).start()  # drain
    listener = Listener()
    telemetry = af.configure(f"http://127.0.0.1:{ports['grpc']}", service_name="hostile-agent", set_global=False)
    texts = corpus(listener.url)
    hostile = " ".join(texts)
    with af.user_session(user_id=texts[2], session_id=texts[3]), af.agent_run(texts[1]):
        af.set_prompt(texts[0], texts[4])
        with af.llm_call("gpt-4o-mini", provider="openai", messages=hostile) as llm:
            llm.record(output=hostile, input_tokens=3, output_tokens=3)
        with pytest.raises(RuntimeError), af.tool_call(texts[5], arguments={"q": hostile}):
            raise RuntimeError(hostile)
    telemetry.shutdown()
    shots = REPO / "docs" / "screenshots" if os.environ.get("AGENTFLIGHT_UPDATE_SCREENSHOTS") else data / "shots"
    shots.mkdir(parents=True, exist_ok=True)
    api = f"http://127.0.0.1:{ports['api']}"
    deadline = time.monotonic() + 30  # the collector publishes within its flush interval
    while (
        time.monotonic() < deadline
        and not httpx.get(f"{api}/traces", params={"service": "hostile-agent"}).json()["traces"]
    ):
        time.sleep(0.3)
    try:
        yield Stack(f"http://127.0.0.1:{ports['ui']}", api, listener, shots)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        listener.server.shutdown()


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed: apt-get install chromium (make test does it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1600, "height": 1000})
        yield tab
        browser.close()


def _trace_id(stack: Stack, **params: str) -> str:
    return str(httpx.get(f"{stack.api}/traces", params=params, timeout=30).json()["traces"][0]["trace_id"])


def _settled(page: Page) -> None:
    """Streamlit shows a running indicator while the script runs; wait until it has gone."""
    page.wait_for_load_state("networkidle")
    page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden", timeout=60_000)


def test_every_page_loads_with_the_demo_data(stack: Stack, page: Page) -> None:
    expected = {
        "traces": "Open a trace", "replay": "Open a trace from the Traces or Flags page", "flags": "search_flights",
        "readiness": "Model control", "costs": "gpt-4o-mini",
        # sessions newest first: the demo's last scenario; users by cost: the loop's
        "sessions": "session-anonymous", "users": "user-loop", "sql": "Run",
    }  # fmt: skip
    for name in PAGES:
        page.goto(f"{stack.ui}/{PATHS.get(name, name)}")
        _settled(page)
        # attached, not visible: the data grid keeps its cells in the DOM for assistive technology only
        page.get_by_text(expected[name], exact=False).first.wait_for(state="attached", timeout=60_000)
        assert page.locator("[data-testid='stException']").count() == 0, name
        assert page.get_by_text("Page not found").count() == 0, name
        page.screenshot(path=str(stack.shots / f"{name}.png"), full_page=True)


def test_from_the_trace_list_to_the_failing_step(stack: Stack, page: Page) -> None:
    started = time.monotonic()
    page.goto(f"{stack.ui}/?user=user-lima")
    _settled(page)
    page.get_by_role("button", name="Open replay").click()
    page.get_by_role("button", name="First error").wait_for(timeout=60_000)
    _settled(page)
    page.get_by_role("button", name="First error").click()
    page.get_by_text("This step failed.").wait_for(timeout=60_000)
    page.get_by_text("503 Service Unavailable", exact=False).first.wait_for(timeout=60_000)
    assert time.monotonic() - started < 30  # the 3 a.m. budget: from the list to the failing step
    _settled(page)
    page.screenshot(path=str(stack.shots / "replay-first-error.png"), full_page=True)


def test_an_injection_corpus_runs_nothing_and_fetches_nothing(stack: Stack, page: Page) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    trace_id = _trace_id(stack, service="hostile-agent")
    visits = [
        "", "?q=script", f"replay?trace_id={trace_id}", "flags", "costs?by=user", "costs?by=prompt_version",
        "sessions", "users",
    ]  # fmt: skip
    for path in visits:
        page.goto(f"{stack.ui}/{path}")
        _settled(page)
        if path.startswith("replay"):
            for _ in range(2):  # from the hostile agent step to its model call and its tool (3 steps)
                page.get_by_role("button", name="Next ▶").click()
                _settled(page)
            page.get_by_text("window.__pwned=1", exact=False).first.wait_for(timeout=60_000)
        assert page.evaluate("window.__pwned === undefined"), path
        assert page.locator("iframe[src*='127.0.0.1'], img[src*='img-'], svg[onload]").count() == 0, path
    time.sleep(1)  # a lazy image would have been requested by now
    assert stack.listener.hits == [] and dialogs == []
