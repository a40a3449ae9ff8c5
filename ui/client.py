"""The UI's only way to data: the query API over HTTP (so the UI may run on another machine).

Settings come from the environment once: AGENTFLIGHT_API_URL (default http://127.0.0.1:8000) and
AGENTFLIGHT_API_KEY. Every failure becomes an ApiError with a sentence a person can act on, never a
traceback: the API is down, the key is refused, the request was bad (the API's own message).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_API_URL = "http://127.0.0.1:8000"
TIMEOUT_SECONDS = 30.0  # a cost breakdown over 10M spans answers in under a second; 30 s means it is stuck


class ApiError(Exception):
    """Something the user should read: what failed and what to do (`summary`, our words) and, when the API
    answered with a refusal, its message (`detail`: may quote stored data, so it is shown as code)."""

    def __init__(self, summary: str, detail: str | None = None) -> None:
        super().__init__(summary if detail is None else f"{summary} {detail}")
        self.summary = summary
        self.detail = detail


@dataclass(frozen=True)
class ApiClient:
    base_url: str
    api_key: str | None = None

    @classmethod
    def from_env(cls) -> ApiClient:
        return cls(
            os.environ.get("AGENTFLIGHT_API_URL", DEFAULT_API_URL).rstrip("/"), os.environ.get("AGENTFLIGHT_API_KEY")
        )

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> httpx.Response:
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "", [])}
        try:
            response = httpx.request(
                method,
                f"{self.base_url}{path}",
                params=clean,
                json=json,
                headers=self._headers(),
                timeout=TIMEOUT_SECONDS,
            )
        except httpx.TransportError as exc:
            raise ApiError(
                f"The agentflight API at {self.base_url} is not answering ({type(exc).__name__}). "
                "Start it with `agentflight up` (or `agentflight api`), or set AGENTFLIGHT_API_URL."
            ) from None
        if response.status_code == 401:
            raise ApiError("The API refused the key: set AGENTFLIGHT_API_KEY to a key of this project.")
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise ApiError(f"The API refused the request (HTTP {response.status_code}):", str(message))
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def sql(self, query: str, fmt: str = "json") -> httpx.Response:
        return self.request("POST", "/sql", json={"sql": query, "format": fmt})
