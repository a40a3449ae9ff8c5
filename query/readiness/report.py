"""The readiness report for one project, window and (optionally) service: every section, in reading order.

Computed at request time from the index (query/readiness/scope.py); nothing is stored. The top-level `held`
is true only when every judged section holds; `services` lists the services in the window, each with its own
section verdicts, so one report shows which service falls short where.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from query.detect.config import DetectorConfig
from query.index import TraceIndex
from query.readiness import budgets, coverage, economics, evals, guardrails, models, resilience, tools
from query.readiness.scope import Scope, Window
from query.traces import iso

log = logging.getLogger(__name__)


def sections(scope: Scope, config: DetectorConfig) -> list[dict[str, Any]]:
    return [
        models.build(scope, config.readiness),
        guardrails.build(scope),
        budgets.build(scope, config),
        tools.build(scope),
        resilience.build(scope),
        evals.build(scope),
        coverage.build(scope),
        economics.build(scope),
    ]


def _held(found: list[dict[str, Any]]) -> bool | None:
    judged = [s["held"] for s in found if s["held"] is not None]
    return None if not judged else all(judged)


def build(index: TraceIndex, project: str, window: Window, config: DetectorConfig) -> dict[str, Any]:
    began = time.perf_counter()
    with Scope(index, project, window) as scope:
        totals = scope.one(
            """SELECT count(*) AS traces, count(DISTINCT session_id) AS sessions, count(DISTINCT user_id) AS users,
                      sum(span_count)::BIGINT AS spans, sum(cost_usd) AS cost_usd FROM sel"""
        )
        found = sections(scope, config)
        services = [r["service"] for r in scope.rows("SELECT DISTINCT service_name AS service FROM sel ORDER BY 1")]
        per_service = []
        if window.service is None and len(services) > 1:
            for service in services:
                with scope.narrowed(service) as inner:
                    parts = sections(inner, config)
                per_service.append(
                    {"service": service, "held": _held(parts), "sections": {s["section"]: s["held"] for s in parts}}
                )
        elif services:
            per_service.append(
                {"service": services[0], "held": _held(found), "sections": {s["section"]: s["held"] for s in found}}
            )
    seconds = time.perf_counter() - began
    log.info("readiness report for %s (%s): %d traces in %.2f s", project, window.service or "all services",
             totals.get("traces") or 0, seconds)  # fmt: skip
    return {
        "project": project,
        "service": window.service,
        "since": iso(window.from_ns),
        "until": iso(window.to_ns),
        "totals": totals,
        "held": _held(found),
        "services": per_service,
        "sections": found,
        "seconds": round(seconds, 3),
    }
