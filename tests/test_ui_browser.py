"""The UI in a real headless Chromium (Debian's package, driven by Playwright): the Streamlit server over a
real API over the demo agent's data. An engineer opens the flagged trace, steps to the finding, and a
hostile prompt stored in a trace shows as text and runs nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

import sdk_helpers as af
from tests.conftest import REPO, ApiServer, start_api, start_collector

CHROMIUM = "/usr/bin/chromium"  # Debian's chromium package (make test installs it)
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script> **not bold**'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, str]]:
    from examples.scenarios import run_demo

    collector = start_collector(tmp_path_factory.mktemp("browser") / "data")
    run_demo(f"http://127.0.0.1:{collector.grpc_port}", users=2)
    telemetry = af.configure(f"http://127.0.0.1:{collector.grpc_port}", service_name="hostile", set_global=False)
    with (
        af.user_session(user_id="hostile"),
        af.agent_run("hostile-agent"),
        af.llm_call("gpt-4o-mini", provider="openai", messages=HOSTILE) as llm,
    ):
        llm.record(output=HOSTILE, input_tokens=3, output_tokens=3)
    telemetry.shutdown()
    collector.flush()
    api = start_api(collector.settings)
    port = _free_port()
    env = {**os.environ, "AGENTFLIGHT_API_URL": api.url}
    ui = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "ui" / "app.py"), "--server.port", str(port),
         "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=1).text == "ok":
                break
        except httpx.TransportError:
            time.sleep(0.2)
    try:
        yield api, url
    finally:
        ui.terminate()
        ui.wait(timeout=20)
        api.stop()
        collector.stop()


@pytest.fixture(scope="module")
def browser_page() -> Iterator[Page]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed: apt-get install chromium (make test does it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        yield page
        browser.close()


def _trace_id(api: ApiServer, user: str) -> str:
    return str(httpx.get(f"{api.url}/traces", params={"user": user}, timeout=30).json()["traces"][0]["trace_id"])


def test_from_a_flagged_trace_to_the_failing_step(stack: tuple[ApiServer, str], browser_page: Page) -> None:
    api, url = stack
    page = browser_page
    started = time.monotonic()
    page.goto(f"{url}/traces?flag=loop")
    page.get_by_text("1 traces on this page").wait_for(timeout=30_000)
    page.goto(f"{url}/replay?trace_id={_trace_id(api, 'user-loop')}")
    page.get_by_text("search_flights called 4 times with the same arguments").first.wait_for(timeout=30_000)
    page.get_by_role("button", name="First finding").click()
    page.get_by_text("execute_tool search_flights").first.wait_for(timeout=30_000)
    page.get_by_text("Atlantis").first.wait_for(timeout=30_000)
    assert time.monotonic() - started < 30  # the 3 a.m. budget: from the list to the failing step


def test_stored_markup_is_shown_as_text_and_runs_nothing(stack: tuple[ApiServer, str], browser_page: Page) -> None:
    api, url = stack
    page = browser_page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{url}/replay?trace_id={_trace_id(api, 'hostile')}")
    page.get_by_role("button", name="Next ▶").click()
    page.get_by_text("window.__pwned=1</script>", exact=False).first.wait_for(timeout=30_000)
    assert page.evaluate("window.__pwned === undefined")
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("strong", has_text="not bold").count() == 0
    assert dialogs == []
