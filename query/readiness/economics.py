"""Readiness section "unit economics": cost per session and per user (p50, p95) and the monthly projection.

A session's (a user's) cost is the sum of its requests' costs in the window; requests with no session (no
user) are left out of that line and counted. The projection multiplies the average cost of one user's day
(total cost over distinct user-days with any cost) by N daily users and 30 days, at N = 100, 1,000, 10,000
and 100,000. Costs of unpriced models are missing from every figure (see attribution coverage). No verdict:
these are numbers to plan with.
"""

from __future__ import annotations

from typing import Any

from query.readiness.scope import Scope
from query.readiness.verdict import check, section

DAILY_USERS = (100, 1_000, 10_000, 100_000)
MONTH_DAYS = 30


def _quantiles(scope: Scope, key: str) -> dict[str, Any]:
    return scope.one(
        f"""SELECT count(*) AS count, quantile_cont(cost, 0.5) AS p50_usd, quantile_cont(cost, 0.95) AS p95_usd,
                   avg(cost) AS mean_usd
            FROM (SELECT {key}, sum(cost_usd) AS cost FROM sel WHERE {key} IS NOT NULL AND cost_usd IS NOT NULL
                  GROUP BY {key})"""
    )


def build(scope: Scope) -> dict[str, Any]:
    sessions, users = _quantiles(scope, "session_id"), _quantiles(scope, "user_id")
    day = scope.one(
        """SELECT count(*) AS user_days, avg(cost) AS per_user_day FROM (
               SELECT user_id, start_ns // 86400000000000 AS day, sum(cost_usd) AS cost FROM sel
               WHERE user_id IS NOT NULL AND cost_usd IS NOT NULL GROUP BY ALL)"""
    )
    loose = scope.one(
        """SELECT count(*) FILTER (WHERE session_id IS NULL) AS without_session,
                  count(*) FILTER (WHERE user_id IS NULL) AS without_user, sum(cost_usd) AS cost_usd FROM sel"""
    )
    per_user_day = day.get("per_user_day")
    projection = [
        {
            "daily_users": n,
            "monthly_cost_usd": round(per_user_day * n * MONTH_DAYS, 2) if per_user_day is not None else None,
        }
        for n in DAILY_USERS
    ]
    summary = (
        f"per session p50 ${sessions.get('p50_usd') or 0:.6f}, p95 ${sessions.get('p95_usd') or 0:.6f} "
        f"({sessions.get('count')} sessions); per user p50 ${users.get('p50_usd') or 0:.6f}, "
        f"p95 ${users.get('p95_usd') or 0:.6f} ({users.get('count')} users); "
        f"a user's day costs ${per_user_day or 0:.6f} on average ({day.get('user_days')} user-days)"
    )
    return section(
        "economics",
        "Unit economics",
        [check("cost per session and per user", None, summary)],
        per_session=[sessions],
        per_user=[users],
        projection=projection,
        basis=[
            {**loose, "per_user_day_usd": per_user_day, "user_days": day.get("user_days"), "month_days": MONTH_DAYS}
        ],
    )
