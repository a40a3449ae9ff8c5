"""Decoded spans/log records → canonical lake rows, built column by column (pure; no I/O).

Building column lists and serialising attributes to one JSON string measured about twice as fast as
per-span dicts into Arrow (29.7k vs 13.7k spans/s), so batches are accumulated as columns.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from collector.normalise import messages_from_log, normalise_span
from collector.otlp_model import DecodedLog, DecodedSpan
from collector.pricing import CostResult, Pricer
from store.lake import partition_date
from store.schema import EVENT_COLUMN_NAMES, EVENT_SCHEMA, SPAN_COLUMN_NAMES, SPAN_SCHEMA

log = logging.getLogger(__name__)
_JSON_SEPARATORS = (",", ":")
_MODEL_TYPES = frozenset(("llm", "embedding"))


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=_JSON_SEPARATORS, default=str)


def _event_json(span: DecodedSpan) -> str:
    return to_json(
        [{"name": e.name, "time_unix_nano": e.time_unix_nano, "attributes": e.attributes} for e in span.events]
    )


def _link_json(span: DecodedSpan) -> str:
    return to_json([{"trace_id": ln.trace_id, "span_id": ln.span_id, "attributes": ln.attributes} for ln in span.links])


@dataclass
class IngestStats:
    """What a batch told us about data quality; merged into the collector's counters."""

    spans: int = 0
    events: int = 0
    unknown_price_models: Counter[str] = field(default_factory=Counter)
    model_spans_without_model: int = 0
    model_spans_without_tokens: int = 0
    spans_without_user: int = 0
    failed_spans: int = 0


class PartitionBuffer:
    """Rows waiting to be published, one column-list set per (table, project, date) partition."""

    def __init__(self) -> None:
        self._columns: dict[tuple[str, str, str], dict[str, list[Any]]] = {}
        self.rows = 0

    def _target(self, table: str, project: str, date: str) -> dict[str, list[Any]]:
        key = (table, project, date)
        columns = self._columns.get(key)
        if columns is None:
            names = SPAN_COLUMN_NAMES if table == "spans" else EVENT_COLUMN_NAMES
            columns = {name: [] for name in names}
            self._columns[key] = columns
        return columns

    def add_spans(
        self, project: str, received_at: int, spans: list[DecodedSpan], pricer: Pricer, stats: IngestStats
    ) -> None:
        for span in spans:
            try:
                fields, cost = self._enrich(span, pricer)
            except Exception:  # one span our code cannot handle must not cost its neighbours
                log.exception("normalise/price failed for span %s/%s; span dropped", span.trace_id, span.span_id)
                stats.failed_spans += 1
                continue
            _count_quality(fields, cost.cost_status, stats)
            columns = self._target("spans", project, partition_date(span.start_time_unix_nano))
            row: dict[str, Any] = {
                "project": project,
                "trace_id": span.trace_id,
                "span_id": span.span_id,
                "parent_span_id": span.parent_span_id,
                "name": span.name,
                "kind": span.kind,
                "service_name": _service_name(span.resource),
                "scope_name": span.scope_name,
                "scope_version": span.scope_version,
                "start_time_unix_nano": span.start_time_unix_nano,
                "end_time_unix_nano": span.end_time_unix_nano,
                "status_code": span.status_code,
                "status_message": span.status_message,
                "cost_usd": cost.cost_usd,
                "input_cost_usd": cost.input_cost_usd,
                "output_cost_usd": cost.output_cost_usd,
                "cost_status": cost.cost_status,
                "cost_source": cost.cost_source,
                "price_model": cost.price_model,
                "attributes": to_json(span.attributes),
                "events": _event_json(span),
                "links": _link_json(span),
                "resource": to_json(span.resource),
                "dropped_attributes_count": span.dropped_attributes_count,
                "received_at_unix_nano": received_at,
            }
            for name, values in columns.items():
                values.append(row[name] if name in row else fields.get(name))
            stats.spans += 1
            self.rows += 1

    @staticmethod
    def _enrich(span: DecodedSpan, pricer: Pricer) -> tuple[dict[str, Any], CostResult]:
        fields = normalise_span(span)
        cost = pricer.price(
            span_type=fields["span_type"],
            provider=fields["provider"],
            request_model=fields["request_model"],
            response_model=fields["response_model"],
            input_tokens=fields["input_tokens"],
            output_tokens=fields["output_tokens"],
            cache_read_tokens=fields["cache_read_tokens"],
            cache_write_tokens=fields["cache_write_tokens"],
            reasoning_tokens=fields["reasoning_tokens"],
            start_time_unix_nano=span.start_time_unix_nano,
            reported_cost_usd=fields["reported_cost_usd"],
            reported_cost_source=fields["reported_cost_source"],
            server_address=fields.get("server_address"),
        )
        return fields, cost

    def add_logs(self, project: str, received_at: int, records: list[DecodedLog], stats: IngestStats) -> None:
        for record in records:
            try:
                input_messages, output_messages, response_id = messages_from_log(record)
            except Exception:  # keep the raw record even if its content cannot be interpreted
                log.exception("could not read GenAI messages from a log record; stored without them")
                input_messages = output_messages = response_id = None
            body = to_json(record.body)
            attributes = to_json(record.attributes)
            identity = "\x1f".join(
                (
                    record.trace_id or "",
                    record.span_id or "",
                    str(record.time_unix_nano),
                    record.event_name,
                    body,
                    attributes,
                )
            )
            columns = self._target("events", project, partition_date(record.time_unix_nano))
            row: dict[str, Any] = {
                "project": project,
                "event_id": hashlib.blake2b(identity.encode(), digest_size=16).hexdigest(),
                "trace_id": record.trace_id,
                "span_id": record.span_id,
                "time_unix_nano": record.time_unix_nano,
                "event_name": record.event_name,
                "severity_number": record.severity_number,
                "severity_text": record.severity_text,
                "service_name": _service_name(record.resource),
                "scope_name": record.scope_name,
                "response_id": response_id,
                "input_messages": to_json(input_messages) if input_messages is not None else None,
                "output_messages": to_json(output_messages) if output_messages is not None else None,
                "body": body,
                "attributes": attributes,
                "resource": to_json(record.resource),
                "received_at_unix_nano": received_at,
            }
            for name, values in columns.items():
                values.append(row[name])
            stats.events += 1
            self.rows += 1

    def drain(self) -> list[tuple[str, str, str, pa.Table]]:
        """Every buffered partition as an Arrow table; the buffer is empty afterwards."""
        out = []
        for (table, project, date), columns in self._columns.items():
            schema = SPAN_SCHEMA if table == "spans" else EVENT_SCHEMA
            out.append((table, project, date, pa.Table.from_pydict(columns, schema=schema)))
        self._columns = {}
        self.rows = 0
        return out


def _service_name(resource: dict[str, Any]) -> str | None:
    value = resource.get("service.name")
    return value if isinstance(value, str) else None


def _count_quality(fields: dict[str, Any], cost_status: str, stats: IngestStats) -> None:
    if fields["user_id"] is None:
        stats.spans_without_user += 1
    if fields["span_type"] in _MODEL_TYPES:
        model = fields["response_model"] or fields["request_model"]
        if model is None:
            stats.model_spans_without_model += 1
        if fields["input_tokens"] is None and fields["output_tokens"] is None:
            stats.model_spans_without_tokens += 1
    if cost_status == "unknown_model":
        model = fields["response_model"] or fields["request_model"] or "?"
        stats.unknown_price_models[f"{fields['provider'] or '?'}/{model}"] += 1
