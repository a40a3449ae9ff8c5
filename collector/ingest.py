"""The transport-independent export path: authenticate, check load, admit, log to the WAL, answer.

Both receivers (gRPC and HTTP) call `Ingestor.export`; they only translate its Outcome into their
protocol's status codes. The answer is sent only after the WAL fsync (docs/design.md invariant 1).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.admission import (
    Admitted,
    UndecodableRequest,
    admit_log_message,
    admit_logs,
    admit_trace_message,
    admit_traces,
)
from collector.metrics import IngestMetrics
from collector.otlp_json import OtlpJsonError, logs_from_json, traces_from_json
from collector.redaction import Redactor
from collector.wal import SIGNAL_LOGS, SIGNAL_TRACES, WalPosition, WriteAheadLog
from store.keys import KeyRing

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1.0  # ≤ 2 s: the Python exporter drops a batch whose retry delay exceeds its timeout


class Status(enum.Enum):
    OK = "ok"
    UNAUTHENTICATED = "unauthenticated"
    INVALID = "invalid"
    TOO_LARGE = "too_large"
    OVERLOADED = "overloaded"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    message: str = ""
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    retry_after_seconds: float = 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def rejection_message(self) -> str:
        if not self.rejected:
            return ""
        reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(self.rejected.items()))
        return f"rejected {self.rejected_total} item(s): {reasons}"


class Ingestor:
    def __init__(
        self,
        wal: WriteAheadLog,
        keys: KeyRing,
        metrics: IngestMetrics,
        *,
        max_request_bytes: int,
        max_inflight_bytes: int,
        max_wal_backlog_bytes: int,
        backlog_bytes: Callable[[], int] | None = None,
        redactors: Mapping[str, Redactor] | None = None,
    ) -> None:
        self.wal = wal
        self.keys = keys
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes
        self.max_inflight_bytes = max_inflight_bytes
        self.max_wal_backlog_bytes = max_wal_backlog_bytes
        self._backlog_bytes = backlog_bytes or (lambda: 0)
        self.redactors: Mapping[str, Redactor] = redactors or {}  # by project; others take the fast path
        self._inflight = 0
        self._lock = threading.Lock()

    def authenticate(self, presented_key: str | None) -> str | None:
        return self.keys.project_for(presented_key)

    def reserve(self, size: int) -> Outcome | None:
        """Admission control before the body is even read: refuse instead of queueing without bound."""
        if size > self.max_request_bytes:
            return Outcome(Status.TOO_LARGE, f"request of {size} bytes exceeds the {self.max_request_bytes}-byte limit")
        if self._backlog_bytes() > self.max_wal_backlog_bytes:
            return Outcome(
                Status.OVERLOADED, "writer backlog is full; retry later", retry_after_seconds=RETRY_AFTER_SECONDS
            )
        with self._lock:
            if self._inflight + size > self.max_inflight_bytes and self._inflight > 0:
                return Outcome(
                    Status.OVERLOADED, "too many bytes in flight; retry later", retry_after_seconds=RETRY_AFTER_SECONDS
                )
            self._inflight += size
        return None

    def release(self, size: int) -> None:
        with self._lock:
            self._inflight -= size

    def admit(self, signal: str, body: bytes, content_type: str, project: str | None = None) -> Admitted:
        """Parse, check and, when ``project`` has a redaction config, redact: the WAL never sees the originals.

        Raises UndecodableRequest / OtlpJsonError for a body that is not OTLP."""
        admitted = self._admit(signal, body, content_type)
        redactor = self.redactors.get(project) if project is not None else None
        if redactor is None or admitted.accepted == 0:
            return admitted
        wal_bytes, counts = redactor.redact(signal, admitted.wal_bytes)
        if counts:
            self.metrics.count_redactions(counts)
        return Admitted(wal_bytes, admitted.accepted, admitted.rejected)

    def _admit(self, signal: str, body: bytes, content_type: str) -> Admitted:
        if content_type == "json":
            if signal == "traces":
                trace_request: ExportTraceServiceRequest
                trace_request, rejected = traces_from_json(body)
                return admit_trace_message(trace_request, rejected)
            log_request: ExportLogsServiceRequest
            log_request, rejected = logs_from_json(body)
            return admit_log_message(log_request, rejected)
        return admit_traces(body) if signal == "traces" else admit_logs(body)

    def log_admitted(self, signal: str, project: str, admitted: Admitted) -> Future[WalPosition] | None:
        if admitted.accepted == 0:
            return None
        kind = SIGNAL_TRACES if signal == "traces" else SIGNAL_LOGS
        return self.wal.append(kind, project, time.time_ns(), admitted.wal_bytes)

    def export(self, transport: str, signal: str, project: str, body: bytes, content_type: str) -> Outcome:
        """The whole synchronous path after authentication and reservation (used by gRPC threads)."""
        try:
            admitted = self.admit(signal, body, content_type, project)
        except (UndecodableRequest, OtlpJsonError) as exc:
            return self.finish(transport, signal, Outcome(Status.INVALID, str(exc)))
        future = self.log_admitted(signal, project, admitted)
        if future is not None:
            try:
                future.result(timeout=60)
            except Exception as exc:
                log.error("export not acknowledged: WAL write failed: %s", exc)
                return self.finish(
                    transport, signal, Outcome(Status.UNAVAILABLE, "write-ahead log unavailable", retry_after_seconds=2)
                )
        return self.finish(transport, signal, self.accepted(signal, admitted))

    def accepted(self, signal: str, admitted: Admitted) -> Outcome:
        self.metrics.count_admitted(signal, admitted.accepted, admitted.rejected)
        if admitted.rejected:
            log.info("%s export: %d accepted, rejected %s", signal, admitted.accepted, dict(admitted.rejected))
        return Outcome(Status.OK, accepted=admitted.accepted, rejected=admitted.rejected)

    def finish(self, transport: str, signal: str, outcome: Outcome) -> Outcome:
        self.metrics.count_request(transport, signal, outcome.status.value)
        if outcome.status not in (Status.OK, Status.OVERLOADED):
            log.warning("%s %s export refused (%s): %s", transport, signal, outcome.status.value, outcome.message)
        return outcome
