"""The ack-path check of an export request: parse, drop bad spans/records, count them, return WAL bytes.

Runs before the write-ahead log, so it stays cheap: one upb parse and a look at ids and times; the full
decode happens later in the writer. A request with no bad items is logged to the WAL byte-for-byte.
Invalid UTF-8 makes the strict parser refuse the whole request, so we re-parse it with a mirror of the
OTLP messages whose strings are bytes, keep the spans that are valid on their own, and reject the rest.
"""

from __future__ import annotations

from collections import Counter
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


def admit_traces(body: bytes) -> Admitted:
    try:
        request = ExportTraceServiceRequest.FromString(body)
    except DecodeError:
        request, rejected = _salvage_traces(body)
        return _filter_traces(request, rejected, original=None)
    return _filter_traces(request, Counter(), original=body)


def admit_trace_message(request: ExportTraceServiceRequest, rejected: Counter[str]) -> Admitted:
    """For requests that arrived as JSON and were already converted to protobuf."""
    return _filter_traces(request, rejected, original=None)


def admit_logs(body: bytes) -> Admitted:
    try:
        request = ExportLogsServiceRequest.FromString(body)
    except DecodeError:
        request, rejected = _salvage_logs(body)
        return _filter_logs(request, rejected, original=None)
    return _filter_logs(request, Counter(), original=body)


def admit_log_message(request: ExportLogsServiceRequest, rejected: Counter[str]) -> Admitted:
    return _filter_logs(request, rejected, original=None)


def _filter_traces(request: ExportTraceServiceRequest, rejected: Counter[str], original: bytes | None) -> Admitted:
    accepted = 0
    changed = original is None
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            keep = []
            for span in spans:
                reason = span_rejection(span)
                if reason is None:
                    keep.append(span)
                else:
                    rejected[reason] += 1
            if len(keep) != len(spans):
                changed = True
                kept = [Span.FromString(s.SerializeToString()) for s in keep]
                del spans[:]
                spans.extend(kept)
            accepted += len(keep)
    wal_bytes = request.SerializeToString() if changed else original
    assert wal_bytes is not None
    return Admitted(wal_bytes, accepted, rejected)


def _filter_logs(request: ExportLogsServiceRequest, rejected: Counter[str], original: bytes | None) -> Admitted:
    accepted = 0
    changed = original is None
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            records = scope_logs.log_records
            keep = []
            for record in records:
                reason = log_rejection(record)
                if reason is None:
                    keep.append(record)
                else:
                    rejected[reason] += 1
            if len(keep) != len(records):
                changed = True
                kept = [LogRecord.FromString(r.SerializeToString()) for r in keep]
                del records[:]
                records.extend(kept)
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


def _salvage_traces(body: bytes) -> tuple[ExportTraceServiceRequest, Counter[str]]:
    try:
        lenient: Any = _lenient_classes()["traces"].FromString(body)
    except DecodeError:
        raise UndecodableRequest("request body is not a valid OTLP ExportTraceServiceRequest") from None
    request, rejected = ExportTraceServiceRequest(), Counter[str]()
    for lenient_rs in lenient.resource_spans:
        span_count = sum(len(ss.spans) for ss in lenient_rs.scope_spans)
        try:
            resource = _strict(Resource, lenient_rs.resource)
        except DecodeError:
            rejected["invalid_utf8"] += span_count
            continue
        out = request.resource_spans.add()
        out.resource.CopyFrom(resource)
        for lenient_ss in lenient_rs.scope_spans:
            try:
                scope = _strict(InstrumentationScope, lenient_ss.scope)
            except DecodeError:
                rejected["invalid_utf8"] += len(lenient_ss.spans)
                continue
            scope_out = out.scope_spans.add()
            scope_out.scope.CopyFrom(scope)
            for lenient_span in lenient_ss.spans:
                try:
                    scope_out.spans.append(_strict(Span, lenient_span))
                except DecodeError:
                    rejected["invalid_utf8"] += 1
    return request, rejected


def _salvage_logs(body: bytes) -> tuple[ExportLogsServiceRequest, Counter[str]]:
    try:
        lenient: Any = _lenient_classes()["logs"].FromString(body)
    except DecodeError:
        raise UndecodableRequest("request body is not a valid OTLP ExportLogsServiceRequest") from None
    request, rejected = ExportLogsServiceRequest(), Counter[str]()
    for lenient_rl in lenient.resource_logs:
        record_count = sum(len(sl.log_records) for sl in lenient_rl.scope_logs)
        try:
            resource = _strict(Resource, lenient_rl.resource)
        except DecodeError:
            rejected["invalid_utf8"] += record_count
            continue
        out = request.resource_logs.add()
        out.resource.CopyFrom(resource)
        for lenient_sl in lenient_rl.scope_logs:
            try:
                scope = _strict(InstrumentationScope, lenient_sl.scope)
            except DecodeError:
                rejected["invalid_utf8"] += len(lenient_sl.log_records)
                continue
            scope_out = out.scope_logs.add()
            scope_out.scope.CopyFrom(scope)
            for lenient_record in lenient_sl.log_records:
                try:
                    scope_out.log_records.append(_strict(LogRecord, lenient_record))
                except DecodeError:
                    rejected["invalid_utf8"] += 1
    return request, rejected
