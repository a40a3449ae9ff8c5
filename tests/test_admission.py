"""Admission of log exports: the same rules as spans, one bad record among good ones."""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from collector.admission import admit_logs


def _logs(bodies: list[str]) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    for index, text in enumerate(bodies):
        record = scope.log_records.add()
        record.trace_id, record.span_id = b"\x01" * 16, (index + 1).to_bytes(8, "big")
        record.body.string_value = text
    return request


def test_log_with_invalid_utf8_is_rejected_alone() -> None:
    body = _logs(["fine", "BADXX", "also fine"]).SerializeToString().replace(b"BADXX", b"B\xc3\x28XX")
    admitted = admit_logs(body)
    assert admitted.accepted == 2 and admitted.rejected == {"invalid_utf8": 1}
    kept = ExportLogsServiceRequest.FromString(admitted.wal_bytes)
    assert [r.body.string_value for r in kept.resource_logs[0].scope_logs[0].log_records] == ["fine", "also fine"]


def test_log_with_a_bad_span_id_is_rejected_and_clean_requests_pass_byte_for_byte() -> None:
    request = _logs(["a", "b"])
    request.resource_logs[0].scope_logs[0].log_records[1].span_id = b"\x02" * 3
    admitted = admit_logs(request.SerializeToString())
    assert admitted.accepted == 1 and admitted.rejected == {"bad_span_id": 1}
    clean = _logs(["a"]).SerializeToString()
    assert admit_logs(clean).wal_bytes is clean
