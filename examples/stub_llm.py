"""A local OpenAI-compatible chat completions server that plays the travel agent's model (no network).

It answers `POST /v1/chat/completions` like a model would: first it asks for the weather and flights
for the city in the request, then hotels or an email when the request asks for them, then a final answer.
It is deliberately naive in the ways real models fail: when a search finds nothing it searches again with
the same arguments (a loop), it claims a booking succeeded even when the tool failed, it "confirms" a booking
by booking again, it puts the traveller's personal data in an answer asked for booking details, and a
request about weapons ends with `finish_reason="content_filter"`. Faults are planned through `POST /_stub/faults`
(`{"contains": "Lisbon", "status": 429, "times": 4}`): the next matching requests get that HTTP error.
Usage is reported as about one token per four characters, so costs are realistic for the model named.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CITIES = ("Rome", "Paris", "Lisbon", "Tokyo", "Oslo", "Atlantis", "Kyoto", "Lima", "Cairo", "Denver", "Nairobi")
MAX_SAME_SEARCH = 4  # how often the naive model repeats a search that found nothing before giving up
_ERRORS = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("invalid_api_key", "Incorrect API key provided"),
    429: ("rate_limit_exceeded", "Rate limit reached for requests"),
    500: ("server_error", "The server had an error while processing your request"),
    503: ("service_unavailable", "The engine is currently overloaded"),
}


@dataclass
class Fault:
    contains: str
    status: int
    times: int


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _request_text(messages: list[dict[str, Any]]) -> str:
    users = [m for m in messages if m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    return content if isinstance(content, str) else json.dumps(content)


def _tool_results(messages: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], str]]:
    """(tool name, arguments, result) of each tool call answered so far."""
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    out = []
    for message in messages:
        for call in message.get("tool_calls") or []:
            function = call.get("function", {})
            try:
                arguments = json.loads(function.get("arguments") or "{}")
            except ValueError:
                arguments = {}
            calls[call.get("id", "")] = (function.get("name", ""), arguments)
        if message.get("role") == "tool":
            name, arguments = calls.get(message.get("tool_call_id", ""), ("", {}))
            out.append((name, arguments, str(message.get("content") or "")))
    return out


def decide(messages: list[dict[str, Any]], turn: int) -> dict[str, Any]:
    """The model's next message: tool calls, or the final answer (pure: same conversation, same answer)."""
    request = _request_text(messages)
    lower = request.lower()
    city = next((c for c in CITIES if c.lower() in lower), "Rome")
    results = _tool_results(messages)
    called = [name for name, _, _ in results]

    def call(name: str, arguments: dict[str, Any], index: int = 0) -> dict[str, Any]:
        return {
            "id": f"call_{turn}_{index}_{name}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }

    if "weapon" in lower:
        return {"message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"}
    if not results:
        calls = [call("get_weather", {"city": city}, 0), call("search_flights", {"destination": city}, 1)]
        return {"message": {"role": "assistant", "content": None, "tool_calls": calls}, "finish_reason": "tool_calls"}
    searches = [r for r in results if r[0] == "search_flights"]
    if searches and "no flights" in searches[-1][2].lower() and len(searches) < MAX_SAME_SEARCH:
        # The naive model tries the identical search again instead of changing its plan.
        again = call("search_flights", {"destination": city})
        return {"message": {"role": "assistant", "content": None, "tool_calls": [again]}, "finish_reason": "tool_calls"}
    if ("hotel" in lower or "book" in lower) and "book_hotel" not in called:
        booking = call("book_hotel", {"city": city, "nights": 3})
        return {
            "message": {"role": "assistant", "content": None, "tool_calls": [booking]},
            "finish_reason": "tool_calls",
        }
    if "confirm the booking" in lower and called.count("book_hotel") == 1:
        # The naive model "confirms" a booking by making it again, with the same arguments.
        booking = call("book_hotel", {"city": city, "nights": 3})
        return {
            "message": {"role": "assistant", "content": None, "tool_calls": [booking]},
            "finish_reason": "tool_calls",
        }
    if "email" in lower and "send_email" not in called:
        mail = call("send_email", {"to": "traveller@example.com", "subject": f"Your {city} trip"})
        return {"message": {"role": "assistant", "content": None, "tool_calls": [mail]}, "finish_reason": "tool_calls"}
    weather = next((r[2] for r in results if r[0] == "get_weather"), "unknown")
    flights = searches[-1][2] if searches else "none"
    answer = f"Your trip to {city}: weather {weather}; flights: {flights}."
    if "book_hotel" in called:
        answer += " Your hotel is booked for 3 nights."  # said even when the booking failed
    if "booking details" in lower:
        # It repeats the traveller's personal data from its context into the answer.
        answer += " Booking holder: Jane Roe, jane.roe@example.org, +1 415 555 0132, card 4111 1111 1111 1111."
    return {"message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}


class StubLLM:
    """The server; `start()` binds a free port (or the given one) and serves on a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.faults: list[Fault] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._turns: dict[str, int] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
                    return
                if self.path == "/_stub/faults":
                    with stub._lock:
                        stub.faults.append(Fault(str(body["contains"]), int(body["status"]), int(body["times"])))
                    self._send(200, {"ok": True})
                elif re.fullmatch(r"(/v1)?/chat/completions", self.path):
                    status, answer, headers = stub.complete(body)
                    self._send(status, answer, headers)
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = int(self.server.server_address[1])
        self.base_url = f"http://{host}:{self.port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, name="stub-llm", daemon=True)

    def start(self) -> StubLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def complete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        messages = body.get("messages") or []
        request = _request_text(messages)
        with self._lock:
            self.requests += 1
            fault = next((f for f in self.faults if f.times > 0 and f.contains.lower() in request.lower()), None)
            if fault is not None:
                fault.times -= 1
            key = request
            turn = self._turns.get(key, 0) + 1
            self._turns[key] = turn
        if fault is not None:
            kind, text = _ERRORS.get(fault.status, ("error", "Error"))
            return fault.status, {"error": {"message": text, "type": kind, "code": kind}}, {"retry-after-ms": "10"}
        choice = decide(messages, turn)
        prompt = json.dumps(messages) + json.dumps(body.get("tools") or [])
        completion = json.dumps(choice["message"])
        model = str(body.get("model") or "gpt-4o-mini")
        answer = {
            "id": f"chatcmpl-stub-{self.requests}",
            "object": "chat.completion",
            "created": 1_790_000_000,
            "model": _dated(model),
            "choices": [{"index": 0, **choice, "logprobs": None}],
            "usage": {
                "prompt_tokens": _tokens(prompt),
                "completion_tokens": _tokens(completion),
                "total_tokens": _tokens(prompt) + _tokens(completion),
            },
        }
        return 200, answer, {}


def _dated(model: str) -> str:
    """The dated version a provider reports behind an alias (gpt-4o-mini -> gpt-4o-mini-2024-07-18)."""
    return {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}.get(model, model)
