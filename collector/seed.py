"""First-run sample data: sends the bundled OTLP/JSON exports to a running collector's HTTP receiver.

They go through the real ingest path (auth, WAL, normalisation, pricing), exactly like an agent's export.
"""

from __future__ import annotations

import logging
from importlib import resources

import httpx

log = logging.getLogger(__name__)


def sample_files() -> list[tuple[str, bytes]]:
    folder = resources.files("collector") / "samples"
    return sorted((entry.name, entry.read_bytes()) for entry in folder.iterdir() if entry.name.endswith(".json"))


def send_samples(host: str, http_port: int, api_key: str | None = None) -> int:
    """Export every sample file; returns how many files were accepted."""
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    accepted = 0
    with httpx.Client(base_url=f"http://{host}:{http_port}", timeout=30) as client:
        for name, body in sample_files():
            response = client.post("/v1/traces", content=body, headers=headers)
            if response.status_code == 200:
                accepted += 1
            else:
                log.warning("sample %s refused: %d %s", name, response.status_code, response.text[:200])
    return accepted
