"""Readiness section "budgets": requests, sessions and users that ran with no budget, and the breaches.

A request has a budget when the project's detector config sets a trace budget, or when one of its spans
declared one (`agentflight.budget.*`, sdk_helpers.declare_budget). A session has one when the config sets a
session budget; a user when it sets a user-day or user-month budget (declared budgets cover one request
only). Breaches are the budget detector's `budget_breach` findings.
"""

from __future__ import annotations

from typing import Any

from query.detect.config import DetectorConfig
from query.readiness.scope import Scope
from query.readiness.verdict import check, pct, section, share


def build(scope: Scope, config: DetectorConfig) -> dict[str, Any]:
    limits = config.budgets.limits
    counts = scope.one(
        """WITH declared AS (SELECT DISTINCT trace_id FROM sp WHERE declares_budget)
           SELECT count(*) AS traces, count(*) FILTER (WHERE trace_id IN (SELECT trace_id FROM declared)) AS declared,
                  count(DISTINCT session_id) AS sessions, count(DISTINCT user_id) AS users FROM sel"""
    )
    traces = counts.get("traces") or 0
    covered = traces if limits.get("trace") else counts.get("declared") or 0
    unbudgeted = (
        []
        if limits.get("trace")
        else scope.ids(
            """SELECT trace_id FROM sel WHERE trace_id NOT IN (SELECT trace_id FROM sp WHERE declares_budget)
               ORDER BY start_ns"""
        )
    )
    sessions, users = counts.get("sessions") or 0, counts.get("users") or 0
    session_budget = bool(limits.get("session"))
    user_budget = bool(limits.get("user_day") or limits.get("user_month"))
    breaches = scope.rows(
        """SELECT json_extract_string(evidence, '$.scope') AS scope,
                  json_extract_string(evidence, '$.metric') AS metric,
                  count(*) AS breaches, list(DISTINCT trace_id)[1:20] AS trace_ids
           FROM fi WHERE code = 'budget_breach' GROUP BY ALL ORDER BY breaches DESC"""
    )
    checks = [
        check(
            "every request has a budget",
            None if not traces else covered == traces,
            f"{pct(share(covered, traces))} of {traces} request(s) ran under a budget"
            + (" (trace budget in the detector config)" if limits.get("trace") else " (declared by the agent)"),
            unbudgeted,
        ),
        check(
            "every session has a budget",
            None if not sessions else session_budget,
            f"{sessions} session(s); "
            + ("a session budget is configured" if session_budget else "no session budget is configured"),
            []
            if session_budget
            else scope.ids("SELECT trace_id FROM sel WHERE session_id IS NOT NULL ORDER BY start_ns"),
        ),
        check(
            "every user has a budget",
            None if not users else user_budget,
            f"{users} user(s); " + ("a user budget is configured" if user_budget else "no user budget is configured"),
            [] if user_budget else scope.ids("SELECT trace_id FROM sel WHERE user_id IS NOT NULL ORDER BY start_ns"),
        ),
        check(
            "no budget breached",
            None if not traces else not breaches,
            f"{sum(b['breaches'] for b in breaches)} breach(es)"
            + (": " + ", ".join(f"{b['scope']} {b['metric']} x{b['breaches']}" for b in breaches) if breaches else ""),
            list(dict.fromkeys(t for b in breaches for t in b["trace_ids"]))[:20],
        ),
    ]
    return section("budgets", "Budgets", checks, breaches=breaches)
