"""The detector registry: every detector, run over a set of whole traces' spans, findings in one frame.

A detector is a pure function `(spans, config) -> findings` (finding.py). It receives the spans of any
number of traces at once (one date partition) and must judge each trace from that trace's spans alone, so
the answer for a trace is the same whatever else is in the batch; vectorising over traces is what keeps a
partition of a million spans to seconds. A detector that raises is logged and skipped, never taking the
others' findings with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import polars as pl

from query.detect import budgets, errors, guardrails, loops, readiness, retries
from query.detect.config import DetectorConfig
from query.detect.finding import FINDING_SCHEMA, empty

log = logging.getLogger(__name__)

Detector = Callable[[pl.DataFrame, DetectorConfig], pl.DataFrame]

# Bump when any detector's findings change shape or meaning: stored findings are then recomputed.
DETECTORS_VERSION = "4"  # 2: readiness checks; approval and MCP attributes read; 3: unpinned in the report;
# 4: injection pre-filter on the newest input only; marker keys hold no space

DETECTORS: dict[str, Detector] = {
    "error": errors.detect,
    "loop": loops.detect,
    "retry": retries.detect,
    "guardrail": guardrails.detect,
    "budget": budgets.detect,
    "readiness": readiness.detect,
}

_SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}


def run(spans: pl.DataFrame, config: DetectorConfig) -> pl.DataFrame:
    """All findings for the traces in `spans` (deduplicated, with lineage and the signal columns)."""
    if spans.height == 0:
        return empty()
    found = []
    for name, detector in DETECTORS.items():
        try:
            result = detector(spans, config)
        except Exception:
            log.exception("detector %s failed on a batch of %d spans; its findings are missing", name, spans.height)
            continue
        found.append(result.select(list(FINDING_SCHEMA)))
    if not found:
        return empty()
    return pl.concat(found).sort("trace_id", "start_ns", "kind", "code", "span_id")


def severity_rank(severity: str) -> int:
    return _SEVERITY_RANK.get(severity, 3)
