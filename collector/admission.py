"""The ack-path check of an export request: parse, drop bad spans/records, count them, return WAL bytes.

Runs before the write-ahead log, so it stays cheap: one upb parse and a look at ids and times; the full
decode happens later in the writer. A request with no bad items is logged to the WAL byte-for-byte.
Invalid UTF-8 makes the strict parser refuse the whole request, so we re-parse it with a mirror of the
OTLP messages whose strings are bytes, keep the spans that are valid on their own, and reject the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import Span

_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


class UndecodableRequest(ValueError):
    """The body is not an OTLP protobuf message at all."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """What the ack path decided about one export request."""

    wal_bytes: bytes  # the request to log: the original, or a rebuilt one without the rejected items
    accepted: int
    rejected: Counter[str]


def span_rejection(span: Span) -> str | None:
    """Why a span cannot be stored, or None. Shared with the writer so both always agree."""
    if len(span.trace_id) != 16 or span.trace_id == _ZERO_TRACE_ID:
        return "bad_trace_id"
    if len(span.span_id) != 8 or span.span_id == _ZERO_SPAN_ID:
        return "bad_span_id"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return "bad_parent_span_id"
    if span.end_time_unix_nano < span.start_time_unix_nano:
        return "end_before_start"
    if span.start_time_unix_nano == 0:
        return "missing_start_time"
    return None


def log_rejection(record: LogRecord) -> str | None:
    if record.trace_id and len(record.trace_id) != 16:
        return "bad_trace_id"
    if record.span_id and len(record.span_id) != 8:
        return "bad_span_id"
    return None


@dataclass(frozen=True, slots=True)
class _Signal:
    """Where the items of one OTLP signal sit in its export request, and how one is judged."""

    request: Any  # ExportTraceServiceRequest | ExportLogsServiceRequest
    groups: str  # resource_spans | resource_logs
    scopes: str  # scope_spans | scope_logs
    items: str  # spans | log_records
    item: Any  # Span | LogRecord
    rejection: Callable[[Any], str | None]
    mirror: str  # key of the lenient mirror class


_TRACES = _Signal(ExportTraceServiceRequest, "resource_spans", "scope_spans", "spans", Span, span_rejection, "traces")
_LOGS = _Signal(
    ExportLogsServiceRequest, "resource_logs", "scope_logs", "log_records", LogRecord, log_rejection, "logs"
)


def admit_traces(body: bytes) -> Admitted:
    return _admit(_TRACES, body)


def admit_logs(body: bytes) -> Admitted:
    return _admit(_LOGS, body)


def admit_trace_message(request: ExportTraceServiceRequest, rejected: Counter[str]) -> Admitted:
    """For requests that arrived as JSON and were already converted to protobuf."""
    return _filter(_TRACES, request, rejected, original=None)


def admit_log_message(request: ExportLogsServiceRequest, rejected: Counter[str]) -> Admitted:
    return _filter(_LOGS, request, rejected, original=None)


def _admit(signal: _Signal, body: bytes) -> Admitted:
    try:
        request = signal.request.FromString(body)
    except DecodeError:
        request, rejected = _salvage(signal, body)
        return _filter(signal, request, rejected, original=None)
    return _filter(signal, request, Counter(), original=body)


def _filter(signal: _Signal, request: Message, rejected: Counter[str], original: bytes | None) -> Admitted:
    """Drop the items that cannot be stored, counting why; the WAL gets the original bytes when none was."""
    accepted = 0
    changed = original is None
    for group in getattr(request, signal.groups):
        for scope in getattr(group, signal.scopes):
            items = getattr(scope, signal.items)
            keep = []
            for item in items:
                reason = signal.rejection(item)
                if reason is None:
                    keep.append(item)
                else:
                    rejected[reason] += 1
            if len(keep) != len(items):
                changed = True
                kept = [signal.item.FromString(item.SerializeToString()) for item in keep]
                del items[:]
                items.extend(kept)
            accepted += len(keep)
    wal_bytes = request.SerializeToString() if changed else original
    assert wal_bytes is not None
    return Admitted(wal_bytes, accepted, rejected)


# --- salvaging requests with invalid UTF-8 -------------------------------------------------------

_MIRROR_PREFIX = "agentflight.lenient."


@cache
def _lenient_classes() -> dict[str, Any]:
    """Message classes identical to OTLP's but with every string field typed as bytes."""
    pool = descriptor_pool.DescriptorPool()
    modules = (common_pb2, resource_pb2, trace_pb2, logs_pb2, trace_service_pb2, logs_service_pb2)
    for module in modules:
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        proto.name = _MIRROR_PREFIX + proto.name
        proto.package = _MIRROR_PREFIX + proto.package
        deps = [_MIRROR_PREFIX + dep for dep in proto.dependency]
        del proto.dependency[:]
        proto.dependency.extend(deps)
        del proto.service[:]
        for message in proto.message_type:
            _retype_message(message)
        pool.Add(proto)
    names = {
        "traces": "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest",
        "logs": "opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest",
    }
    return {
        key: message_factory.GetMessageClass(pool.FindMessageTypeByName(_MIRROR_PREFIX + name))
        for key, name in names.items()
    }


def _retype_message(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
        if field.type_name.startswith(".opentelemetry."):
            field.type_name = "." + _MIRROR_PREFIX + field.type_name[1:]
    for nested in message.nested_type:
        _retype_message(nested)


def _strict(cls: Any, lenient: Message) -> Any:
    """Re-parse one lenient sub-message strictly; raises DecodeError if it holds invalid UTF-8."""
    return cls.FromString(lenient.SerializeToString())


def _salvage(signal: _Signal, body: bytes) -> tuple[Any, Counter[str]]:
    """Keep every item that is valid on its own; items, scopes or resources with invalid UTF-8 are rejected."""
    try:
        lenient: Any = _lenient_classes()[signal.mirror].FromString(body)
    except DecodeError:
        raise UndecodableRequest(f"request body is not a valid OTLP {signal.request.__name__}") from None
    request, rejected = signal.request(), Counter[str]()
    for lenient_group in getattr(lenient, signal.groups):
        item_count = sum(len(getattr(scope, signal.items)) for scope in getattr(lenient_group, signal.scopes))
        try:
            resource = _strict(Resource, lenient_group.resource)
        except DecodeError:
            rejected["invalid_utf8"] += item_count
            continue
        group = getattr(request, signal.groups).add()
        group.resource.CopyFrom(resource)
        for lenient_scope in getattr(lenient_group, signal.scopes):
            lenient_items = getattr(lenient_scope, signal.items)
            try:
                scope_info = _strict(InstrumentationScope, lenient_scope.scope)
            except DecodeError:
                rejected["invalid_utf8"] += len(lenient_items)
                continue
            scope = getattr(group, signal.scopes).add()
            scope.scope.CopyFrom(scope_info)
            items = getattr(scope, signal.items)
            for lenient_item in lenient_items:
                try:
                    items.append(_strict(signal.item, lenient_item))
                except DecodeError:
                    rejected["invalid_utf8"] += 1
    return request, rejected
