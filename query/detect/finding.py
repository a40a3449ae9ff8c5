"""The finding: what a detector returns (one row per problem found), its schema and its severities.

Every detector returns a polars frame with exactly FINDING_SCHEMA. `finding_id` is a content hash (stable
across rebuilds, unique within a trace). `span_id` is the span the finding points
at (the first repeat, the failed attempt, the span where a budget line was crossed); `span_ids` lists every
span concerned. `evidence` is a JSON object whose keys depend on the kind (documented per detector).
`wasted_tokens`/`wasted_cost_usd` are filled by loop findings: the usage of every repeat after the first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

KINDS = ("loop", "retry", "budget", "guardrail", "error", "readiness")
SEVERITIES = ("info", "warning", "error")

FINDING_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "finding_id": pl.String,
    "trace_id": pl.String,
    "span_id": pl.String,
    "span_ids": pl.List(pl.String),
    "kind": pl.String,
    "code": pl.String,
    "severity": pl.String,
    "message": pl.String,
    "evidence": pl.String,
    "start_ns": pl.Int64,
    "wasted_tokens": pl.Int64,
    "wasted_cost_usd": pl.Float64,
}


@dataclass(slots=True)
class Finding:
    trace_id: str
    span_id: str
    kind: str
    code: str
    severity: str
    message: str
    start_ns: int
    span_ids: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    wasted_tokens: int | None = None
    wasted_cost_usd: float | None = None

    def row(self) -> dict[str, Any]:
        if self.kind not in KINDS or self.severity not in SEVERITIES:
            raise ValueError(f"bad finding {self.kind}/{self.severity}")
        evidence = json.dumps(self.evidence, sort_keys=True, default=str)
        return {
            "finding_id": finding_id(self.trace_id, self.span_id, self.kind, self.code, evidence),
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "span_ids": self.span_ids or [self.span_id],
            "kind": self.kind,
            "code": self.code,
            "severity": self.severity,
            "message": one_line(self.message),
            "evidence": evidence,
            "start_ns": self.start_ns,
            "wasted_tokens": self.wasted_tokens,
            "wasted_cost_usd": self.wasted_cost_usd,
        }


def finding_id(trace_id: str, span_id: str, kind: str, code: str, evidence: str) -> str:
    """Names a finding by what it says: the same spans judged the same way give the same id on every rebuild."""
    digest = hashlib.sha256("\0".join((trace_id, span_id, kind, code, evidence)).encode())
    return digest.hexdigest()[:20]


def frame(findings: Iterable[Finding]) -> pl.DataFrame:
    rows = [f.row() for f in findings]
    return pl.DataFrame(rows, schema=FINDING_SCHEMA) if rows else empty()


def empty() -> pl.DataFrame:
    return pl.DataFrame(schema=FINDING_SCHEMA)


# A message is one line for a list view; the full text stays in the evidence.
MESSAGE_CHARS = 300


def one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MESSAGE_CHARS else flat[: MESSAGE_CHARS - 1] + "…"
