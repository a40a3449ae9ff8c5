"""Redaction hooks: content is passed through the caller's functions before it leaves the process.

A hook is `(key, text) -> text | None`: return the text to send (masked, hashed, unchanged) or None to drop
the attribute. It runs in the exporter (spans) and in a log processor (content events), so it also covers
spans and events made by other instrumentations (openai-v2, OpenInference, OpenLLMetry), not only ours.
Only content-bearing keys reach it (`is_content_key`): ids, models and token counts are never touched.
`mask_common_secrets` is a ready hook for API keys, bearer tokens, emails and card numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from sdk_helpers.conventions import CONTENT_KEYS

Redactor = Callable[[str, str], str | None]

# Content keys of every convention: OTel (current and indexed legacy), OpenInference, OpenLLMetry, Vercel AI.
_CONTENT_KEY = re.compile(
    r"(^|\.)(content|arguments|text|input\.value|output\.value|prompt|completion|messages|result)(\.|$)"
    r"|^(gen_ai\.(prompt|completion)\.|llm\.(input|output)_messages\.|traceloop\.entity\.(input|output))"
)


def is_content_key(key: str) -> bool:
    return key in CONTENT_KEYS or bool(_CONTENT_KEY.search(key))


def _redact_value(redactors: Sequence[Redactor], key: str, value: Any) -> Any:
    if isinstance(value, str):
        text: str | None = value
        for hook in redactors:
            if text is None:
                return None
            text = hook(key, text)
        return text
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        out = [_redact_value(redactors, key, v) for v in value]
        return tuple(v for v in out if v is not None)
    return value


def redact_attributes(redactors: Sequence[Redactor], attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        new = _redact_value(redactors, key, value) if is_content_key(key) else value
        if new is not None:
            out[key] = new
    return out


class RedactingSpanExporter(SpanExporter):
    """Wraps an exporter: each span's content attributes (and its events') go through the hooks first."""

    def __init__(self, inner: SpanExporter, redactors: Sequence[Redactor]) -> None:
        self.inner = inner
        self.redactors = tuple(redactors)

    def _redacted(self, span: ReadableSpan) -> ReadableSpan:
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=redact_attributes(self.redactors, span.attributes),
            events=[Event(e.name, redact_attributes(self.redactors, e.attributes), e.timestamp) for e in span.events],
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([self._redacted(s) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class RedactingLogProcessor(LogRecordProcessor):
    """Runs before the export processor: content events' bodies and attributes go through the hooks."""

    def __init__(self, redactors: Sequence[Redactor]) -> None:
        self.redactors = tuple(redactors)

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record
        if record.attributes:
            redacted = redact_attributes(self.redactors, record.attributes)
            for key in list(record.attributes):
                if key not in redacted:
                    del record.attributes[key]  # type: ignore[attr-defined]
                else:
                    record.attributes[key] = redacted[key]  # type: ignore[index]
        if record.body is not None:
            text = record.body if isinstance(record.body, str) else json.dumps(record.body, default=str)
            for hook in self.redactors:
                new = hook("body", text)
                text = new if new is not None else ""
            record.body = text if isinstance(record.body, str) else _json_or_text(text)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


_SECRETS = (
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{16,}\b"), "[api-key]"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "[aws-key]"),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}"), "Bearer [token]"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[email]"),
    (re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), "[card]"),
)


def mask_common_secrets(key: str, text: str) -> str:
    """A ready hook: masks API keys, AWS access keys, bearer tokens, emails and card-like numbers.

    >>> mask_common_secrets("gen_ai.input.messages", "mail bob@example.com, key sk-abcdefghijklmnop1234")
    'mail [email], key [api-key]'
    """
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text
