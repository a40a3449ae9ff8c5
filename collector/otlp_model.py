"""Plain-Python shapes of decoded OTLP spans and log records: the contract between decode and normalise.

Attribute values are flattened OTLP AnyValues: str, int, float, bool, bytes (as lowercase hex str),
list (arrayValue) and dict (kvlistValue). Ids are lowercase hex; times are int nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPAN_KIND_NAMES = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_CODE_NAMES = ("UNSET", "OK", "ERROR")


@dataclass(slots=True)
class SpanEvent:
    name: str
    time_unix_nano: int
    attributes: dict[str, Any]


@dataclass(slots=True)
class SpanLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(slots=True)
class DecodedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # one of SPAN_KIND_NAMES
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: str  # one of STATUS_CODE_NAMES
    status_message: str
    attributes: dict[str, Any]
    events: list[SpanEvent] = field(default_factory=list)
    links: list[SpanLink] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""
    dropped_attributes_count: int = 0
    trace_state: str = ""
    flags: int = 0
    dropped_events_count: int = 0
    dropped_links_count: int = 0
    scope_attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class DecodedLog:
    trace_id: str | None
    span_id: str | None
    time_unix_nano: int  # time, else observed time
    event_name: str  # LogRecord.event_name, else the event.name attribute
    severity_number: int
    severity_text: str
    body: Any  # flattened AnyValue
    attributes: dict[str, Any]
    resource: dict[str, Any] = field(default_factory=dict)
    scope_name: str = ""
