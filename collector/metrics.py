"""Ingest counters (accepted, rejected by reason, deduplicated, dropped, data quality, WAL depth, flush lag)
and their Prometheus text rendering. Shared by the receivers, the writer, /health and /metrics."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields


@dataclass
class WriterCounters:
    """Cumulative counts of one writer process, sent to the collector after every publish."""

    spans_written: int = 0
    logs_written: int = 0
    spans_dropped: int = 0
    wal_records_failed: int = 0
    parts_published: int = 0
    parts_compacted: int = 0
    spans_deduplicated: int = 0
    model_spans_without_model: int = 0
    model_spans_without_tokens: int = 0
    spans_without_user: int = 0
    unknown_price_models: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in WRITER_COUNTER_NAMES}


WRITER_COUNTER_NAMES = tuple(f.name for f in fields(WriterCounters))


@dataclass
class IngestMetrics(WriterCounters):
    """The collector's counters: its own (admission, requests) plus the sum of its writers' counters."""

    spans_accepted: int = 0
    logs_accepted: int = 0
    spans_rejected: Counter[str] = field(default_factory=Counter)
    logs_rejected: Counter[str] = field(default_factory=Counter)
    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (transport, signal, outcome)
    wal_quarantined_records: int = 0
    redactions: Counter[str] = field(default_factory=Counter)  # values masked by rule name, plus drop_keys
    started_unix: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Gauges read live when rendered: WAL depth in bytes, and the age of the oldest unpublished record.
    wal_depth_bytes: Callable[[], int] = field(default=lambda: 0, repr=False)
    flush_lag_seconds: Callable[[], float] = field(default=lambda: 0.0, repr=False)

    def count_request(self, transport: str, signal: str, outcome: str) -> None:
        with self.lock:
            self.requests[(transport, signal, outcome)] += 1

    def count_admitted(self, signal: str, accepted: int, rejected: Counter[str]) -> None:
        with self.lock:
            if signal == "traces":
                self.spans_accepted += accepted
                self.spans_rejected.update(rejected)
            else:
                self.logs_accepted += accepted
                self.logs_rejected.update(rejected)

    def count_redactions(self, counts: Counter[str]) -> None:
        with self.lock:
            self.redactions.update(counts)

    def snapshot(self) -> dict[str, object]:
        with self.lock:
            return {
                "spans_accepted": self.spans_accepted,
                "spans_rejected": dict(self.spans_rejected),
                "spans_written": self.spans_written,
                "spans_deduplicated": self.spans_deduplicated,
                "spans_dropped": self.spans_dropped,
                "wal_records_failed": self.wal_records_failed,
                "logs_accepted": self.logs_accepted,
                "logs_rejected": dict(self.logs_rejected),
                "logs_written": self.logs_written,
                "unknown_price_models": dict(self.unknown_price_models),
                "model_spans_without_model": self.model_spans_without_model,
                "model_spans_without_tokens": self.model_spans_without_tokens,
                "spans_without_user": self.spans_without_user,
                "parts_published": self.parts_published,
                "parts_compacted": self.parts_compacted,
                "wal_quarantined_records": self.wal_quarantined_records,
                "redactions": dict(self.redactions),
                "wal_depth_bytes": self.wal_depth_bytes(),
                "flush_lag_seconds": round(self.flush_lag_seconds(), 3),
                "uptime_seconds": round(time.time() - self.started_unix, 1),
            }

    def prometheus(self) -> str:
        with self.lock:
            scalars = [
                (
                    "spans_accepted_total",
                    "counter",
                    "Spans admitted to the WAL and acknowledged.",
                    self.spans_accepted,
                ),
                ("spans_written_total", "counter", "Spans published to the lake.", self.spans_written),
                (
                    "spans_deduplicated_total",
                    "counter",
                    "Duplicate span copies removed by compaction.",
                    self.spans_deduplicated,
                ),
                (
                    "spans_dropped_total",
                    "counter",
                    "Acknowledged spans that could not be stored.",
                    self.spans_dropped,
                ),
                (
                    "wal_records_failed_total",
                    "counter",
                    "WAL records the writer could not decode (a bug).",
                    self.wal_records_failed,
                ),
                ("logs_accepted_total", "counter", "Log records admitted.", self.logs_accepted),
                ("logs_written_total", "counter", "Log records published to the lake.", self.logs_written),
                (
                    "model_spans_without_model_total",
                    "counter",
                    "LLM/embedding spans with no model name.",
                    self.model_spans_without_model,
                ),
                (
                    "model_spans_without_tokens_total",
                    "counter",
                    "LLM/embedding spans with no token counts.",
                    self.model_spans_without_tokens,
                ),
                ("spans_without_user_total", "counter", "Spans with no user id.", self.spans_without_user),
                ("parts_published_total", "counter", "Parquet parts published.", self.parts_published),
                (
                    "parts_compacted_total",
                    "counter",
                    "Parquet parts merged by compaction.",
                    self.parts_compacted,
                ),
                (
                    "wal_quarantined_records_total",
                    "counter",
                    "WAL records that failed their checksum.",
                    self.wal_quarantined_records,
                ),
            ]
            labelled = [
                ("spans_rejected_total", "Spans refused, by reason.", "reason", dict(self.spans_rejected)),
                (
                    "logs_rejected_total",
                    "Log records refused, by reason.",
                    "reason",
                    dict(self.logs_rejected),
                ),
                (
                    "unknown_price_model_spans_total",
                    "Model spans whose model has no price.",
                    "model",
                    dict(self.unknown_price_models),
                ),
                (
                    "redactions_total",
                    "Values masked or hashed before the WAL, by rule; dropped attributes as drop_keys.",
                    "rule",
                    dict(self.redactions),
                ),
            ]
            requests = dict(self.requests)
        gauges = [
            ("wal_depth_bytes", "gauge", "WAL bytes not yet published to the lake.", self.wal_depth_bytes()),
            (
                "flush_lag_seconds",
                "gauge",
                "Age of the oldest acknowledged record not yet queryable.",
                self.flush_lag_seconds(),
            ),
        ]
        lines: list[str] = []
        for name, kind, help_text, value in [*scalars, *gauges]:
            lines += [
                f"# HELP agentflight_{name} {help_text}",
                f"# TYPE agentflight_{name} {kind}",
                f"agentflight_{name} {float(value)}",
            ]
        for name, help_text, label, mapping in labelled:
            lines += [f"# HELP agentflight_{name} {help_text}", f"# TYPE agentflight_{name} counter"]
            lines += [
                f'agentflight_{name}{{{label}="{_escape(str(k))}"}} {float(v)}' for k, v in sorted(mapping.items())
            ]
        lines += [
            "# HELP agentflight_export_requests_total Export requests by transport, signal and outcome.",
            "# TYPE agentflight_export_requests_total counter",
        ]
        lines += [
            f'agentflight_export_requests_total{{transport="{t}",signal="{s}",outcome="{o}"}} {float(v)}'
            for (t, s, o), v in sorted(requests.items())
        ]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
