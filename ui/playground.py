"""Playground re-run: send one recorded model call again (messages, model and parameters, editable) to an
OpenAI-compatible endpoint the user configures, to compare the new answer with the recorded one.

The endpoint comes from the environment of the UI process: AGENTFLIGHT_PLAYGROUND_BASE_URL (else
OPENAI_BASE_URL, else https://api.openai.com/v1) and AGENTFLIGHT_PLAYGROUND_API_KEY (else OPENAI_API_KEY).
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

TIMEOUT_SECONDS = 120.0  # a long completion from a slow model


class PlaygroundError(Exception):
    pass


def endpoint() -> tuple[str, str | None]:
    base = (
        os.environ.get("AGENTFLIGHT_PLAYGROUND_BASE_URL")
        or os.environ.get("OPENAI_BASE_URL")
        or "https://api.openai.com/v1"
    )
    key = os.environ.get("AGENTFLIGHT_PLAYGROUND_API_KEY") or os.environ.get("OPENAI_API_KEY")
    return base.rstrip("/"), key


def to_openai(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OTel GenAI parts-form messages back to the chat completions shape."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role", "user")
        texts, calls = [], []
        for part in message.get("parts") or []:
            kind = part.get("type")
            if kind == "text":
                texts.append(str(part.get("content", "")))
            elif kind == "tool_call":
                arguments = part.get("arguments")
                calls.append(
                    {
                        "id": part.get("id"),
                        "type": "function",
                        "function": {
                            "name": part.get("name"),
                            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                        },
                    }
                )
            elif kind == "tool_call_response":
                response = part.get("response")
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": part.get("id"),
                        "content": response if isinstance(response, str) else json.dumps(response),
                    }
                )
        if texts or calls:
            entry: dict[str, Any] = {"role": role, "content": "\n".join(texts) if texts else None}
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
    return out


def rerun(model: str, messages: list[dict[str, Any]], temperature: float | None = None) -> dict[str, Any]:
    """The new answer: {'text', 'tool_calls', 'finish_reason', 'usage', 'model'}."""
    base, key = endpoint()
    body: dict[str, Any] = {"model": model, "messages": messages}
    if temperature is not None:
        body["temperature"] = temperature
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.post(f"{base}/chat/completions", json=body, headers=headers, timeout=TIMEOUT_SECONDS)
    except httpx.TransportError as exc:
        raise PlaygroundError(
            f"{base} is not answering ({type(exc).__name__}); set AGENTFLIGHT_PLAYGROUND_BASE_URL"
        ) from None
    if response.status_code >= 400:
        raise PlaygroundError(f"{base} answered HTTP {response.status_code}: {response.text[:500]}")
    data = response.json()
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    return {
        "text": message.get("content") or "",
        "tool_calls": message.get("tool_calls") or [],
        "finish_reason": choice.get("finish_reason"),
        "usage": data.get("usage") or {},
        "model": data.get("model"),
    }
