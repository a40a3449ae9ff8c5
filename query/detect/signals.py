"""What detectors read from a span beyond its promoted columns: raw attributes, events, error classes.

The index reads heavy columns only for spans that can matter (errors, guardrails, spans whose attributes name
a retry, guardrail or budget): `DETECT_SELECT` is the SQL that does that filtering inside DuckDB, so a
partition of a million spans costs no JSON parsing in Python for the 95 % that are plain.
"""

from __future__ import annotations

import json
import re
from typing import Any

import polars as pl

from query.detect.content import INJECTION_PREFILTER, PII_PREFILTER

# Attribute keys whose presence makes a span's raw attributes worth reading (retry, guardrail, budget signals).
# Matched against keys only ("key": in the attributes JSON): the words in free-text values let 2.4x more spans
# through to JSON parsing for nothing (measured on a 148k-span part: 8,271 vs 3,454).
# Readiness adds human approval steps and MCP (`mcp.*`) attributes. A key is taken to hold no space: with `[^"]*`
# around the words RE2 took 5.8 us a span over the ingest benchmark's 3.8 KB attributes, with `[^" ]*` 3.4.
_MARKERS = (
    r'"[^" ]*(retry|resend_count|guard|threat|prompt_injection|tripwire|agentflight\.budget|approval|mcp\.)[^" ]*":'
)
# Content acted on by a guardrail, or a refusal, is shown as evidence; a few KB is enough to recognise it.
EVIDENCE_CHARS = 2000
# Content handed to the readiness scanners (query/detect/content.py) when DuckDB's loose pre-filter matched: 64 KB
# holds a long conversation; a longer one is scanned as cut, as raw text.
SCAN_CHARS = 65536

# What a model call's input holds that no earlier call saw: the messages after its last assistant message (the
# tool results and user turn it answers). Everything before that was the input of an earlier call, where it was
# scanned as new, so the injection pre-filter runs on this tail only (2.6 instead of 4.6 us a span on the ingest
# benchmark's six-message inputs); a span that passes is still scanned whole in Python. Without an assistant
# message (a first call) the tail is the whole input.
_NEWEST_INPUT = """string_split(input_messages, '"assistant"')[-1]"""

DETECT_SELECT = f"""
    status_code, status_message, error_type, error_message, finish_reason, tool_arguments,
    CASE WHEN span_type IN ('llm', 'embedding') AND input_messages IS NOT NULL
              AND input_messages NOT IN ('', '[]') THEN hash(input_messages)::VARCHAR END AS input_hash,
    CASE WHEN is_error OR span_type = 'guardrail' OR regexp_matches(attributes, '{_MARKERS}')
         THEN attributes END AS signal_attributes,
    CASE WHEN is_error OR status_code = 'ERROR' OR span_type = 'guardrail' OR contains(events, 'guard')
         THEN events END AS signal_events,
    CASE WHEN span_type = 'guardrail' THEN left(input_messages, {EVIDENCE_CHARS}) END AS guarded_input,
    CASE WHEN span_type = 'guardrail' OR contains(output_messages, '"refusal"')
              OR contains(finish_reason, 'content_filter') THEN left(output_messages, {EVIDENCE_CHARS})
         END AS guarded_output,
    CASE WHEN span_type = 'tool' AND (contains(tool_result, 'try again') OR contains(tool_result, 'Try again'))
         THEN left(tool_result, {EVIDENCE_CHARS}) END AS retry_result,
    CASE WHEN span_type = 'llm' AND regexp_matches({_NEWEST_INPUT}, '{INJECTION_PREFILTER}', 'i')
              THEN left(input_messages, {SCAN_CHARS})
         WHEN span_type = 'tool' AND regexp_matches(tool_result, '{INJECTION_PREFILTER}', 'i')
              THEN left(tool_result, {SCAN_CHARS}) END AS injection_text,
    CASE WHEN span_type = 'llm' AND regexp_matches(output_messages, '{PII_PREFILTER}')
         THEN left(output_messages, {SCAN_CHARS}) END AS pii_text"""

DETECT_COLUMNS = (
    "status_code",
    "status_message",
    "error_type",
    "error_message",
    "finish_reason",
    "tool_arguments",
    "input_hash",
    "signal_attributes",
    "signal_events",
    "guarded_input",
    "guarded_output",
    "retry_result",
    "injection_text",
    "pii_text",
)


def call_key() -> pl.Expr:
    """What makes two sibling spans the same call for retry purposes: the model asked for, else the tool, else
    the span name (used with the trace, the parent and the span type)."""
    return pl.coalesce("request_model", "response_model", "tool_name", "name")


def json_object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def json_list(text: str | None) -> list[Any]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def normalised_arguments(text: str | None) -> str:
    """Tool arguments compared by meaning: JSON re-serialised with sorted keys, other text with whitespace folded."""
    if text is None:
        return ""
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        return " ".join(text.split())


# --- errors -------------------------------------------------------------------------------------------

ERROR_CLASSES = ("rate_limit", "auth", "server", "timeout", "validation", "tool_error", "other")
# Retrying these cannot succeed without a change to the request (docs/design.md, Detectors).
NON_RETRYABLE = frozenset({"auth", "validation"})
# Failures that can pass by themselves, so a retry should wait first (retry_without_backoff).
TRANSIENT = frozenset({"rate_limit", "server", "timeout"})

_STATUS_KEYS = ("http.response.status_code", "http.status_code", "error.status_code", "gen_ai.response.status_code")
_STATUS_IN_TEXT = re.compile(r"(?:error code|status(?: code)?|http)[:= ]+([1-5]\d\d)\b", re.IGNORECASE)
_TEXT_CLASSES = (
    ("rate_limit", re.compile(r"rate.?limit|too many requests|resource.?exhausted|quota|throttl", re.IGNORECASE)),
    (
        "auth",
        re.compile(
            r"\bauth|unauthori|permission.?denied|forbidden|invalid.{0,10}api.?key|access.?denied", re.IGNORECASE
        ),
    ),
    ("timeout", re.compile(r"time.?out|timed out|deadline.?exceeded", re.IGNORECASE)),
    (
        "server",
        re.compile(
            r"internal.?server|service.?unavailable|bad.?gateway|overloaded|server.?error|connection.?(error|reset|refused)",
            re.IGNORECASE,
        ),
    ),
    (
        "validation",
        re.compile(
            r"bad.?request|not.?found|validation|invalid|unprocessable|schema|malformed|context.?length",
            re.IGNORECASE,
        ),
    ),
)


def status_code(attributes: dict[str, Any], *texts: str | None) -> int | None:
    for key in _STATUS_KEYS:
        code = number(attributes.get(key))
        if code is not None and 100 <= code <= 599:
            return int(code)
    for text in texts:
        if text:
            match = _STATUS_IN_TEXT.search(text)
            if match:
                return int(match.group(1))
    return None


def classify_status(code: int | None) -> str | None:
    if code is None or code < 400:
        return None
    if code == 429:
        return "rate_limit"
    if code in (401, 403, 407):
        return "auth"
    if code in (408, 504):
        return "timeout"
    if code >= 500:
        return "server"
    return "validation"


def classify_error(
    span_type: str | None,
    error_type: str | None,
    message: str | None,
    attributes: dict[str, Any],
) -> tuple[str, int | None]:
    """(error class, HTTP status if one is known) for a failed span."""
    code = status_code(attributes, message, error_type)
    by_status = classify_status(code)
    if by_status is not None:
        return by_status, code
    if attributes.get("pydantic_ai.tool.failure_stage") == "validation":
        return "validation", code
    text = " ".join(t for t in (error_type, message) if t)
    for name, pattern in _TEXT_CLASSES:
        if pattern.search(text):
            return name, code
    return ("tool_error" if span_type == "tool" else "other"), code


def exception_details(events_json: str | None) -> dict[str, Any]:
    """The first `exception` event's type, message and stack (OTel exception semantic conventions)."""
    for event in json_list(events_json):
        if isinstance(event, dict) and event.get("name") == "exception":
            attrs = event.get("attributes") or {}
            return {
                "exception_type": attrs.get("exception.type"),
                "exception_message": attrs.get("exception.message"),
                "stacktrace": attrs.get("exception.stacktrace"),
            }
    return {}
