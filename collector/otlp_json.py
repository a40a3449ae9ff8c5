"""OTLP/JSON request bodies → protobuf messages, so everything after the HTTP edge sees one wire format.

The protobuf library's own JSON parser cannot be used: OTLP/JSON encodes ids as hex (not base64),
allows `intValue` as a string, a number or a protobufjs Long, and enums as numbers or names. Bad
individual spans/records are counted by reason and left out; a body whose overall shape is wrong raises
OtlpJsonError (answered 400).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


class OtlpJsonError(ValueError):
    """The body is not OTLP/JSON at all (not JSON, or the top-level shape is wrong)."""


class _BadItem(ValueError):
    """One span or log record is malformed; it is rejected with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_SPAN_KINDS = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def _load(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OtlpJsonError(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise OtlpJsonError("body must be a JSON object")
    return doc


def _list(obj: dict[str, Any], *keys: str) -> list[Any]:
    """The first of `keys` present in obj (camelCase and snake_case spellings), which must be a list."""
    for key in keys:
        if key in obj:
            value = obj[key]
            if value is None:
                return []
            if not isinstance(value, list):
                raise _BadItem("bad_shape")
            return value
    return []


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    return obj[camel] if camel in obj else obj.get(snake)


def _int(value: Any, *, signed: bool = False) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise _BadItem("bad_shape")
    if isinstance(value, dict):  # protobufjs Long {low, high, unsigned}
        low, high = value.get("low", 0), value.get("high", 0)
        if not isinstance(low, int) or not isinstance(high, int):
            raise _BadItem("bad_shape")
        number = ((high & 0xFFFFFFFF) << 32) | (low & 0xFFFFFFFF)
        if signed and not value.get("unsigned") and number >= 2**63:
            number -= 2**64
        return number
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value, 10)
        except ValueError:
            raise _BadItem("bad_shape") from None
    else:
        raise _BadItem("bad_shape")
    low_bound = _INT64_MIN if signed else 0
    high_bound = 2**63 - 1 if signed else _UINT64_MAX
    if not low_bound <= number <= high_bound:
        raise _BadItem("bad_shape")
    return number


def _enum(value: Any, names: dict[str, int]) -> int:
    if isinstance(value, str) and value in names:
        return names[value]
    return _int(value)


def _id(value: Any, size: int, reason: str, *, optional: bool = False) -> bytes:
    """OTLP/JSON ids are hex; some exporters send base64. Anything else is a bad id."""
    if value is None or value == "":
        if optional:
            return b""
        raise _BadItem(reason)
    if not isinstance(value, str):
        raise _BadItem(reason)
    if len(value) == size * 2:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _BadItem(reason) from None
    if len(raw) != size:
        raise _BadItem(reason)
    return raw


def _any_value(target: AnyValue, value: Any) -> None:
    if value is None or value == {}:
        return
    if not isinstance(value, dict):
        raise _BadItem("bad_shape")
    if "stringValue" in value or "string_value" in value:
        text = _get(value, "stringValue", "string_value")
        if not isinstance(text, str):
            raise _BadItem("bad_shape")
        target.string_value = text
    elif "boolValue" in value or "bool_value" in value:
        flag = _get(value, "boolValue", "bool_value")
        if not isinstance(flag, bool):
            raise _BadItem("bad_shape")
        target.bool_value = flag
    elif "intValue" in value or "int_value" in value:
        target.int_value = _int(_get(value, "intValue", "int_value"), signed=True)
    elif "doubleValue" in value or "double_value" in value:
        number = _get(value, "doubleValue", "double_value")
        if isinstance(number, str) and number in ("NaN", "Infinity", "-Infinity"):
            number = float(number.replace("Infinity", "inf"))
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise _BadItem("bad_shape")
        target.double_value = float(number)
    elif "arrayValue" in value or "array_value" in value:
        array = _get(value, "arrayValue", "array_value") or {}
        if not isinstance(array, dict):
            raise _BadItem("bad_shape")
        target.array_value.SetInParent()
        for item in _list(array, "values"):
            _any_value(target.array_value.values.add(), item)
    elif "kvlistValue" in value or "kvlist_value" in value:
        kvlist = _get(value, "kvlistValue", "kvlist_value") or {}
        if not isinstance(kvlist, dict):
            raise _BadItem("bad_shape")
        target.kvlist_value.SetInParent()
        _key_values(target.kvlist_value.values, _list(kvlist, "values"))
    elif "bytesValue" in value or "bytes_value" in value:
        encoded = _get(value, "bytesValue", "bytes_value")
        try:
            target.bytes_value = base64.b64decode(encoded or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise _BadItem("bad_shape") from None
    else:
        raise _BadItem("bad_shape")


def _key_values(target: Any, items: list[Any]) -> None:
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise _BadItem("bad_shape")
        kv: KeyValue = target.add()
        kv.key = item["key"]
        _any_value(kv.value, item.get("value"))


def _resource(target: Resource, obj: Any) -> None:
    if obj is None:
        return
    if not isinstance(obj, dict):
        raise _BadItem("bad_shape")
    _key_values(target.attributes, _list(obj, "attributes"))
    target.dropped_attributes_count = _int(_get(obj, "droppedAttributesCount", "dropped_attributes_count"))


def _scope(target: InstrumentationScope, obj: Any) -> None:
    if obj is None:
        return
    if not isinstance(obj, dict):
        raise _BadItem("bad_shape")
    name, version = obj.get("name") or "", obj.get("version") or ""
    if not isinstance(name, str) or not isinstance(version, str):
        raise _BadItem("bad_shape")
    target.name, target.version = name, version
    _key_values(target.attributes, _list(obj, "attributes"))


def _span(obj: Any) -> Span:
    if not isinstance(obj, dict):
        raise _BadItem("bad_shape")
    span = Span()
    span.trace_id = _id(_get(obj, "traceId", "trace_id"), 16, "bad_trace_id")
    span.span_id = _id(_get(obj, "spanId", "span_id"), 8, "bad_span_id")
    span.parent_span_id = _id(_get(obj, "parentSpanId", "parent_span_id"), 8, "bad_parent_span_id", optional=True)
    name = obj.get("name") or ""
    trace_state = _get(obj, "traceState", "trace_state") or ""
    if not isinstance(name, str) or not isinstance(trace_state, str):
        raise _BadItem("bad_shape")
    span.name, span.trace_state = name, trace_state
    span.kind = _enum(obj.get("kind"), _SPAN_KINDS)  # type: ignore[assignment]
    span.start_time_unix_nano = _int(_get(obj, "startTimeUnixNano", "start_time_unix_nano"))
    span.end_time_unix_nano = _int(_get(obj, "endTimeUnixNano", "end_time_unix_nano"))
    span.flags = _int(obj.get("flags"))
    _key_values(span.attributes, _list(obj, "attributes"))
    span.dropped_attributes_count = _int(_get(obj, "droppedAttributesCount", "dropped_attributes_count"))
    for event_obj in _list(obj, "events"):
        if not isinstance(event_obj, dict) or not isinstance(event_obj.get("name", ""), str):
            raise _BadItem("bad_shape")
        event = span.events.add()
        event.name = event_obj.get("name", "")
        event.time_unix_nano = _int(_get(event_obj, "timeUnixNano", "time_unix_nano"))
        _key_values(event.attributes, _list(event_obj, "attributes"))
    for link_obj in _list(obj, "links"):
        if not isinstance(link_obj, dict):
            raise _BadItem("bad_shape")
        link = span.links.add()
        link.trace_id = _id(_get(link_obj, "traceId", "trace_id"), 16, "bad_shape")
        link.span_id = _id(_get(link_obj, "spanId", "span_id"), 8, "bad_shape")
        _key_values(link.attributes, _list(link_obj, "attributes"))
    status = obj.get("status")
    if status is not None:
        if not isinstance(status, dict) or not isinstance(status.get("message", ""), str):
            raise _BadItem("bad_shape")
        span.status.code = _enum(status.get("code"), _STATUS_CODES)  # type: ignore[assignment]
        span.status.message = status.get("message", "")
    if span.status.code not in (Status.STATUS_CODE_UNSET, Status.STATUS_CODE_OK, Status.STATUS_CODE_ERROR):
        raise _BadItem("bad_shape")
    return span


def _log_record(obj: Any) -> LogRecord:
    if not isinstance(obj, dict):
        raise _BadItem("bad_shape")
    record = LogRecord()
    record.trace_id = _id(_get(obj, "traceId", "trace_id"), 16, "bad_trace_id", optional=True)
    record.span_id = _id(_get(obj, "spanId", "span_id"), 8, "bad_span_id", optional=True)
    record.time_unix_nano = _int(_get(obj, "timeUnixNano", "time_unix_nano"))
    record.observed_time_unix_nano = _int(_get(obj, "observedTimeUnixNano", "observed_time_unix_nano"))
    record.severity_number = _int(_get(obj, "severityNumber", "severity_number"))  # type: ignore[assignment]
    severity_text = _get(obj, "severityText", "severity_text") or ""
    event_name = _get(obj, "eventName", "event_name") or ""
    if not isinstance(severity_text, str) or not isinstance(event_name, str):
        raise _BadItem("bad_shape")
    record.severity_text, record.event_name = severity_text, event_name
    _any_value(record.body, obj.get("body"))
    _key_values(record.attributes, _list(obj, "attributes"))
    record.flags = _int(obj.get("flags"))
    return record


def _groups(doc: dict[str, Any], outer: tuple[str, ...]) -> list[Any]:
    try:
        groups = _list(doc, *outer)
    except _BadItem:
        raise OtlpJsonError(f"'{outer[0]}' must be a list") from None
    for group in groups:
        if not isinstance(group, dict):
            raise OtlpJsonError(f"each entry of '{outer[0]}' must be an object")
    return groups


def traces_from_json(body: bytes) -> tuple[ExportTraceServiceRequest, Counter[str]]:
    """Convert an OTLP/JSON trace export; returns the good spans and the rejected count by reason."""
    doc = _load(body)
    request, rejected = ExportTraceServiceRequest(), Counter[str]()
    for group in _groups(doc, ("resourceSpans", "resource_spans")):
        out = request.resource_spans.add()
        try:
            _resource(out.resource, group.get("resource"))
            scopes = _list(group, "scopeSpans", "scope_spans", "instrumentationLibrarySpans")
        except _BadItem as bad:
            rejected[bad.reason] += _count_items(group, "spans")
            continue
        out.schema_url = str(_get(group, "schemaUrl", "schema_url") or "")
        for scope_group in scopes:
            if not isinstance(scope_group, dict):
                rejected["bad_shape"] += 1
                continue
            scope_out = out.scope_spans.add()
            try:
                _scope(scope_out.scope, scope_group.get("scope", scope_group.get("instrumentationLibrary")))
                spans = _list(scope_group, "spans")
            except _BadItem as bad:
                rejected[bad.reason] += max(1, len(scope_group.get("spans") or []))
                continue
            for span_obj in spans:
                try:
                    scope_out.spans.append(_span(span_obj))
                except _BadItem as bad:
                    rejected[bad.reason] += 1
    return request, rejected


def logs_from_json(body: bytes) -> tuple[ExportLogsServiceRequest, Counter[str]]:
    """Convert an OTLP/JSON logs export; returns the good records and the rejected count by reason."""
    doc = _load(body)
    request, rejected = ExportLogsServiceRequest(), Counter[str]()
    for group in _groups(doc, ("resourceLogs", "resource_logs")):
        out = request.resource_logs.add()
        try:
            _resource(out.resource, group.get("resource"))
            scopes = _list(group, "scopeLogs", "scope_logs")
        except _BadItem as bad:
            rejected[bad.reason] += _count_items(group, "logRecords")
            continue
        for scope_group in scopes:
            if not isinstance(scope_group, dict):
                rejected["bad_shape"] += 1
                continue
            scope_out = out.scope_logs.add()
            try:
                _scope(scope_out.scope, scope_group.get("scope"))
                records = _list(scope_group, "logRecords", "log_records")
            except _BadItem as bad:
                rejected[bad.reason] += max(1, len(scope_group.get("logRecords") or []))
                continue
            for record_obj in records:
                try:
                    scope_out.log_records.append(_log_record(record_obj))
                except _BadItem as bad:
                    rejected[bad.reason] += 1
    return request, rejected


def _count_items(group: dict[str, Any], key: str) -> int:
    """How many items a rejected resource group held, for the rejection count (at least 1)."""
    total = 0
    for scope_key in ("scopeSpans", "scope_spans", "scopeLogs", "scope_logs"):
        scopes = group.get(scope_key)
        if isinstance(scopes, list):
            for scope in scopes:
                if isinstance(scope, dict) and isinstance(scope.get(key), list):
                    total += len(scope[key])
    return max(total, 1)
