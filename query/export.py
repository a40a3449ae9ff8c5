"""Export of one stored trace (pure, no I/O): OTLP/JSON spans and log records that re-import to the same rows, and
an eval case (input, final answer, tool calls, messages, metadata); called by `GET /traces/{id}/export`.

Re-import contract: POSTing `trace_to_otlp_json(rows)` to `/v1/traces` (and `logs_to_otlp_json(rows)` to
`/v1/logs`) stores every column of every row again unchanged, `received_at_unix_nano` (and `project`, which comes
from the key) aside. The lake keeps attribute values as flattened AnyValues in JSON (collector/decode.py):
str, int, float, bool, list (arrayValue), dict (kvlistValue), null (an empty AnyValue). JSON text keeps int and
float apart (`42` vs `42.0`), so those types come back exactly. Two types were folded into strings on ingest and
are exported as stringValue: bytes (stored as lowercase hex) and non-finite doubles (stored as "nan", "inf",
"-inf"); re-importing them stores the same text, but their original type cannot be told from the lake.
Known collector gaps (tests/test_export.py): its OTLP/JSON parser ignores droppedEventsCount/droppedLinksCount, and
refuses a span whose link ids are malformed while the protobuf path stores it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from query.lineage import MODEL_SPAN_TYPES, ancestors, counted_spans

SPAN_KINDS = {"UNSPECIFIED": 0, "INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
STATUS_CODES = {"UNSET": 0, "OK": 1, "ERROR": 2}
TOKEN_KEYS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("total", "total_tokens"),
    ("cache_read", "cache_read_tokens"),
    ("cache_write", "cache_write_tokens"),
    ("reasoning", "reasoning_tokens"),
)

# ------------------------------------------------------------------------------------------------ AnyValues


def _json_column(value: Any, empty: Any) -> Any:
    """A JSON text column as Python values (already-parsed values pass through); NULL -> `empty`."""
    if value is None:
        return empty
    if isinstance(value, str | bytes):
        return json.loads(value)
    return value


def any_value(value: Any) -> dict[str, Any]:
    """One flattened value as an OTLP/JSON AnyValue (int64 as a decimal string, the proto3 JSON rule)."""
    if value is None:
        return {}
    if isinstance(value, bool):  # before int: bool is an int subclass
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"doubleValue": value}
        return {"doubleValue": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(item) for item in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": key_values(value)}}
    return {"stringValue": str(value)}


def key_values(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    """A flattened attribute object as an OTLP/JSON KeyValue list, in stored key order."""
    return [{"key": key, "value": any_value(value)} for key, value in attributes.items()]


# ------------------------------------------------------------------------------------------------ OTLP spans


def _sorted_spans(spans: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(spans, key=lambda s: (s.get("start_time_unix_nano") or 0, s.get("span_id") or ""))


def _otlp_span(row: dict[str, Any]) -> dict[str, Any]:
    span: dict[str, Any] = {"traceId": row["trace_id"], "spanId": row["span_id"]}
    if row.get("trace_state"):
        span["traceState"] = row["trace_state"]
    if row.get("parent_span_id"):
        span["parentSpanId"] = row["parent_span_id"]
    span["flags"] = int(row.get("flags") or 0)
    span["name"] = row.get("name") or ""
    span["kind"] = SPAN_KINDS.get(row.get("kind") or "", 0)
    span["startTimeUnixNano"] = str(int(row["start_time_unix_nano"]))
    span["endTimeUnixNano"] = str(int(row["end_time_unix_nano"]))
    span["attributes"] = key_values(_json_column(row.get("attributes"), {}))
    span["droppedAttributesCount"] = int(row.get("dropped_attributes_count") or 0)
    span["events"] = [
        {
            "timeUnixNano": str(int(event.get("time_unix_nano") or 0)),
            "name": event.get("name") or "",
            "attributes": key_values(event.get("attributes") or {}),
        }
        for event in _json_column(row.get("events"), [])
    ]
    span["droppedEventsCount"] = int(row.get("dropped_events_count") or 0)
    span["links"] = [
        {"traceId": link.get("trace_id") or "", "spanId": link.get("span_id") or "",
         "attributes": key_values(link.get("attributes") or {})}
        for link in _json_column(row.get("links"), [])
    ]  # fmt: skip
    span["droppedLinksCount"] = int(row.get("dropped_links_count") or 0)
    span["status"] = {
        "code": STATUS_CODES.get(row.get("status_code") or "", 0),
        "message": row.get("status_message") or "",
    }
    return span


def _text(value: Any) -> str:
    """A JSON column's stored text, the grouping key (parsed values are dumped canonically)."""
    if value is None:
        return "{}"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def trace_to_otlp_json(spans: list[dict[str, Any]]) -> dict[str, Any]:
    """Span rows (as the `spans` view returns them) -> an OTLP/JSON ExportTraceServiceRequest.

    Spans are grouped by resource, then by scope (name, version, attributes); groups and spans are in start
    order. Ids are lowercase hex, times decimal strings, kind and status code enum integers."""
    resources: dict[str, dict[str, Any]] = {}
    scopes: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for row in _sorted_spans(spans):
        resource_key = _text(row.get("resource"))
        resource_spans = resources.get(resource_key)
        if resource_spans is None:
            resource = {"attributes": key_values(_json_column(row.get("resource"), {}))}
            resource_spans = resources[resource_key] = {"resource": resource, "scopeSpans": []}
        scope_key = (
            resource_key,
            row.get("scope_name") or "",
            row.get("scope_version") or "",
            _text(row.get("scope_attributes")),
        )
        scope_list = scopes.get(scope_key)
        if scope_list is None:
            scope = {
                "name": scope_key[1],
                "version": scope_key[2],
                "attributes": key_values(_json_column(row.get("scope_attributes"), {})),
            }
            scope_list = scopes[scope_key] = []
            resource_spans["scopeSpans"].append({"scope": scope, "spans": scope_list})
        scope_list.append(_otlp_span(row))
    return {"resourceSpans": list(resources.values())}


# ------------------------------------------------------------------------------------------------- OTLP logs


def _log_record(row: dict[str, Any]) -> dict[str, Any]:
    # The stored time is the record's time, else its observed time: sent back as the time, it is stored again as
    # is, and so is event_id (a hash of trace/span id, time, event name, body and attribute JSON, collector/rows.py).
    record: dict[str, Any] = {"timeUnixNano": str(int(row["time_unix_nano"]))}
    record["severityNumber"] = int(row.get("severity_number") or 0)
    if row.get("severity_text"):
        record["severityText"] = row["severity_text"]
    if row.get("event_name"):
        record["eventName"] = row["event_name"]
    if row.get("trace_id"):
        record["traceId"] = row["trace_id"]
    if row.get("span_id"):
        record["spanId"] = row["span_id"]
    record["body"] = any_value(_json_column(row.get("body"), None))
    record["attributes"] = key_values(_json_column(row.get("attributes"), {}))
    return record


def logs_to_otlp_json(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Event rows (OTLP log records as the `events` view returns them) -> an OTLP/JSON ExportLogsServiceRequest,
    grouped by resource and scope name, records in time order."""
    resources: dict[str, dict[str, Any]] = {}
    scopes: dict[tuple[str, str], list[dict[str, Any]]] = {}
    ordered = sorted(events, key=lambda e: (e.get("time_unix_nano") or 0, e.get("event_id") or ""))
    for row in ordered:
        resource_key = _text(row.get("resource"))
        resource_logs = resources.get(resource_key)
        if resource_logs is None:
            resource = {"attributes": key_values(_json_column(row.get("resource"), {}))}
            resource_logs = resources[resource_key] = {"resource": resource, "scopeLogs": []}
        scope_key = (resource_key, row.get("scope_name") or "")
        records = scopes.get(scope_key)
        if records is None:
            records = scopes[scope_key] = []
            resource_logs["scopeLogs"].append({"scope": {"name": scope_key[1]}, "logRecords": records})
        records.append(_log_record(row))
    return {"resourceLogs": list(resources.values())}


# ------------------------------------------------------------------------------------------------- eval case

Message = dict[str, Any]
_LlmCall = tuple[dict[str, Any], list[Message] | None, list[Message] | None]  # (span, inputs, outputs)


def _messages(text: Any) -> list[Message] | None:
    """A messages column (JSON text in OTel GenAI part form) as a list; None when absent or not a list."""
    if text is None:
        return None
    try:
        value = _json_column(text, None)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    return [m for m in value if isinstance(m, dict)] or None


def _parts(message: Message) -> list[dict[str, Any]]:
    parts = message.get("parts")
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _message_text(messages: Iterable[Message]) -> str | None:
    texts = [
        p["content"]
        for m in messages
        for p in _parts(m)
        if p.get("type") == "text" and isinstance(p.get("content"), str) and p["content"]
    ]
    return "\n".join(texts) if texts else None


def _user_input(messages: list[Message]) -> str | None:
    """The user's turn: the user messages after the last assistant message (a history-carrying first call ends
    with the new question), else every user message, else any text."""
    last_assistant = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
    tail = [m for m in messages[last_assistant + 1 :] if m.get("role") == "user"]
    if tail:
        text = _message_text(tail)
        if text is not None:
            return text
    users = [m for m in messages if m.get("role") == "user"]
    return _message_text(users) if users else _message_text(messages)


def _maybe_json(text: Any) -> Any:
    """Tool arguments stored as JSON text -> the object; anything else unchanged."""
    if isinstance(text, str) and text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _error_text(row: dict[str, Any]) -> str | None:
    if not row.get("is_error"):  # the normaliser's verdict: a deferred call or a tripped guardrail is no error
        return None
    kind, message = row.get("error_type"), row.get("error_message") or row.get("status_message") or None
    if kind and message:
        return f"{kind}: {message}"
    return kind or message or "error"


def _root(ordered: list[dict[str, Any]]) -> dict[str, Any] | None:
    ids = {s.get("span_id") for s in ordered}
    for span in ordered:
        if not span.get("parent_span_id"):
            return span
    for span in ordered:  # no true root in the set: the earliest orphan stands in
        if span.get("parent_span_id") not in ids:
            return span
    return ordered[0] if ordered else None


def _usage(counted: list[dict[str, Any]]) -> tuple[dict[str, int | None], float | None, int]:
    tokens: dict[str, int | None] = {}
    for key, column in TOKEN_KEYS:
        values = [s[column] for s in counted if s.get(column) is not None]
        tokens[key] = sum(values) if values else None
    costs = [s["cost_usd"] for s in counted if s.get("cost_usd") is not None]
    unpriced = sum(1 for s in counted if s.get("cost_usd") is None)
    return tokens, (sum(costs) if costs else None), unpriced


def _first(ordered: list[dict[str, Any]], root: dict[str, Any] | None, column: str) -> Any:
    if root is not None and root.get(column) is not None:
        return root[column]
    return next((s[column] for s in ordered if s.get(column) is not None), None)


class _Requests:
    """The tool calls the model asked for (tool_call parts of model outputs) and the results it was sent back
    (tool_call_response parts of later model inputs), each with the time of its model call: call ids are only
    unique within a conversation, so a lookup takes the nearest call in time."""

    def __init__(self, llm_calls: list[_LlmCall], by_id: dict[str, dict[str, Any]]) -> None:
        llm_ids = {span.get("span_id") for span, _, _ in llm_calls}
        wrappers = {a for span, _, _ in llm_calls for a in ancestors(span, by_id) if a in llm_ids}
        self.requested: list[tuple[int, str, dict[str, Any]]] = []  # (model call end, its span id, part)
        self.responses: list[tuple[int, str, Any]] = []  # (model call start, call id, response)
        for span, inputs, outputs in llm_calls:
            start, end = span.get("start_time_unix_nano") or 0, span.get("end_time_unix_nano") or 0
            for message in inputs or []:
                for part in _parts(message):
                    if part.get("type") == "tool_call_response" and isinstance(part.get("id"), str):
                        self.responses.append((start, part["id"], part.get("response", part.get("result"))))
            if span.get("span_id") in wrappers:  # a wrapper span repeats its inner call's output
                continue
            for message in outputs or []:
                for part in _parts(message):
                    if part.get("type") == "tool_call":
                        self.requested.append((end, span.get("span_id") or "", part))
        self.requested.sort(key=lambda r: (r[0], r[1]))
        self.responses.sort(key=lambda r: r[0])

    def request(self, call_id: str | None, name: str | None, before: int) -> dict[str, Any] | None:
        """The tool_call part with this id (and name; by name alone when the span has no id) from the last model
        call that ended by `before`, else the first later one."""
        if call_id is None and name is None:
            return None
        matches = [
            (end, part)
            for end, _, part in self.requested
            if (call_id is None or part.get("id") == call_id)
            and (part.get("name") == name if call_id is None else name is None or part.get("name") in (None, name))
        ]
        earlier = [part for end, part in matches if end <= before]
        if earlier:
            return earlier[-1]
        return matches[0][1] if matches and call_id is not None else None

    def response(self, call_id: str, after: int) -> Any:
        """The result sent back under this id to the first model call that started at or after `after`."""
        return next((value for start, cid, value in self.responses if cid == call_id and start >= after), None)


def _tool_calls(ordered: list[dict[str, Any]], requests: _Requests) -> list[dict[str, Any]]:
    """The tool spans in start order, arguments and results the span lacks taken from the model messages; a
    trace without tool spans gets the calls its model calls requested instead, in request order."""
    calls: list[dict[str, Any]] = []
    for span in ordered:
        if span.get("span_type") != "tool":
            continue
        call_id = span.get("tool_call_id") if isinstance(span.get("tool_call_id"), str) else None
        name = span.get("tool_name")
        start = span.get("start_time_unix_nano") or 0
        part = requests.request(call_id, name, start)
        arguments, result = span.get("tool_arguments"), span.get("tool_result")
        if result is None and call_id is not None:
            result = requests.response(call_id, start)
        calls.append(
            {
                "id": call_id,
                "name": name or (part or {}).get("name") or span.get("name"),
                "arguments": _maybe_json(arguments) if arguments is not None else (part or {}).get("arguments"),
                "result": result,
                "error": _error_text(span),
            }
        )
    if calls:
        return calls
    for end, _, part in requests.requested:
        call_id = part.get("id") if isinstance(part.get("id"), str) else None
        calls.append(
            {
                "id": call_id,
                "name": part.get("name"),
                "arguments": part.get("arguments"),
                "result": requests.response(call_id, end) if call_id is not None else None,
                "error": None,
            }
        )
    return calls


def _end_order(call: _LlmCall) -> tuple[int, int]:
    return call[0].get("end_time_unix_nano") or 0, call[0].get("start_time_unix_nano") or 0


def trace_to_eval_case(
    spans: list[dict[str, Any]], content: dict[str, tuple[str | None, str | None]] | None = None
) -> dict[str, Any]:
    """One trace as an eval case (one JSONL line): the user input, the final answer, the tool calls in start
    order, the first model call's full input messages and metadata.

    `content` maps span_id -> (input_messages, output_messages) JSON text from the `span_content` view, used for
    spans that carry no content inline. Model calls are `llm` spans: the input is the user's turn of the first
    one (else the root span's input), the answer the text of the last one to end (else the root's output)."""
    content = content or {}
    ordered = _sorted_spans(spans)
    by_id = {s["span_id"]: s for s in ordered if s.get("span_id")}
    root = _root(ordered)

    def side(span: dict[str, Any], index: int) -> list[Message] | None:
        inline = _messages(span.get("input_messages" if index == 0 else "output_messages"))
        if inline is not None:
            return inline
        joined = content.get(span.get("span_id") or "")
        return _messages(joined[index]) if joined is not None else None

    llm_calls: list[_LlmCall] = [(s, side(s, 0), side(s, 1)) for s in ordered if s.get("span_type") == "llm"]
    first = next(((s, i) for s, i, _ in llm_calls if i), None)
    last = max(llm_calls, key=_end_order, default=None)

    root_in = side(root, 0) if root is not None else None
    root_out = side(root, 1) if root is not None else None
    user_input = _user_input(first[1]) if first is not None else None
    if user_input is None and root_in:
        user_input = _user_input(root_in)
    answer = _message_text(m for m in last[2] or [] if m.get("role") in (None, "assistant")) if last else None
    if answer is None and root_out:
        answer = _message_text(root_out)

    counted = counted_spans(ordered, by_id)
    tokens, cost, unpriced = _usage(counted)
    models: list[str] = []
    for span in ordered:
        model = span.get("response_model") or span.get("request_model")
        if span.get("span_type") in MODEL_SPAN_TYPES and model and model not in models:
            models.append(model)
    failed = next((s for s in ordered if s.get("is_error")), None)
    error = None
    if failed is not None:
        error = {
            "span_id": failed.get("span_id"),
            "span_name": failed.get("name"),
            "type": failed.get("error_type"),
            "message": failed.get("error_message"),
        }
    return {
        "trace_id": root.get("trace_id") if root is not None else None,
        "input": user_input,
        "expected_output": None,
        "actual_output": answer,
        "tool_calls": _tool_calls(ordered, _Requests(llm_calls, by_id)),
        "messages": first[1] if first is not None else None,
        "metadata": {
            "service": root.get("service_name") if root is not None else None,
            "services": sorted({s["service_name"] for s in ordered if s.get("service_name")}),
            "models": models,
            "user_id": _first(ordered, root, "user_id"),
            "session_id": _first(ordered, root, "session_id"),
            "tokens": tokens,
            "cost_usd": cost,
            "unpriced_model_calls": unpriced,
            "span_count": len(ordered),
            "error": error,
        },
    }
