"""Readiness section "resilience": how retries, fallbacks and error rates look per provider and per tool.

- Retries without backoff and retries of non-retryable errors: the retry detector's findings.
- Fallback: a request whose model call failed (rate limit, server error, timeout: the failures a fallback
  model exists for) and that never called another model afterwards. Held when no request did.
- Error rate per provider (model calls) and per tool, and the 429 share per provider. A provider with more
  than MAX_ERROR_RATE of its calls failing, or more than MAX_429_RATE answering 429, is not held.
"""

from __future__ import annotations

from typing import Any

from query.readiness.scope import Scope
from query.readiness.verdict import check, pct, section

MAX_ERROR_RATE = 0.05  # one model call in twenty failing is an outage in slow motion
MAX_429_RATE = 0.01  # sustained 429s above 1 % mean the quota or the concurrency is wrong
_ERROR_TEXT = "coalesce(error_type, '') || ' ' || coalesce(error_message, '')"
_RATE_LIMITED = f"(http_status = 429 OR regexp_matches({_ERROR_TEXT}, '(?i)429|rate.?limit|too many requests'))"
_TRANSIENT = (
    f"({_RATE_LIMITED} OR http_status >= 500"
    f" OR regexp_matches({_ERROR_TEXT}, '(?i)time.?out|timed out|overloaded|unavailable|server'))"
)


def _codes(scope: Scope, code: str) -> tuple[int, list[str]]:
    row = scope.one(f"SELECT count(DISTINCT trace_id) AS traces FROM fi WHERE code = '{code}'")
    return row.get("traces") or 0, scope.ids(
        f"SELECT trace_id FROM fi WHERE code = '{code}' GROUP BY trace_id ORDER BY min(start_ns)"
    )


def build(scope: Scope) -> dict[str, Any]:
    no_backoff, no_backoff_ids = _codes(scope, "retry_without_backoff")
    non_retryable, non_retryable_ids = _codes(scope, "non_retryable_retry")
    no_fallback = scope.rows(
        f"""WITH calls AS (SELECT trace_id, start_ns, coalesce(request_model, response_model) AS model, is_error,
                                  is_error AND {_TRANSIENT} AS transient
                           FROM sp WHERE span_type = 'llm'),
                 failed AS (SELECT trace_id, min(start_ns) AS failed_ns, arg_min(model, start_ns) AS model
                            FROM calls WHERE transient GROUP BY trace_id)
            SELECT f.trace_id, f.model, f.failed_ns FROM failed f
            WHERE NOT EXISTS (SELECT 1 FROM calls c WHERE c.trace_id = f.trace_id AND c.start_ns > f.failed_ns
                              AND c.model IS DISTINCT FROM f.model)
            ORDER BY f.failed_ns"""
    )
    failing = scope.one(
        f"SELECT count(DISTINCT trace_id) AS n FROM sp WHERE span_type = 'llm' AND is_error AND {_TRANSIENT}"
    )
    providers = scope.rows(
        f"""SELECT coalesce(provider, '(unknown)') AS provider, count(*) AS calls,
                   count(*) FILTER (WHERE is_error) AS errors, round(avg(is_error::INT), 4) AS error_rate,
                   count(*) FILTER (WHERE is_error AND {_RATE_LIMITED}) AS rate_limited,
                   round(avg((is_error AND {_RATE_LIMITED})::INT), 4) AS rate_limited_rate
            FROM sp WHERE span_type IN ('llm', 'embedding') GROUP BY ALL ORDER BY calls DESC"""
    )
    tools = scope.rows(
        """SELECT coalesce(tool_name, name) AS tool, count(*) AS calls, count(*) FILTER (WHERE is_error) AS errors,
                  round(avg(is_error::INT), 4) AS error_rate
           FROM sp WHERE span_type = 'tool' GROUP BY ALL ORDER BY errors DESC, calls DESC LIMIT 100"""
    )
    bad_errors = [p for p in providers if p["error_rate"] > MAX_ERROR_RATE]
    bad_429 = [p for p in providers if p["rate_limited_rate"] > MAX_429_RATE]
    judged = bool(providers)
    checks = [
        check(
            "retries back off",
            None if not judged else not no_backoff,
            f"{no_backoff} request(s) retried a transient failure without waiting",
            no_backoff_ids,
        ),
        check(
            "non-retryable errors are not retried",
            None if not judged else not non_retryable,
            f"{non_retryable} request(s) retried an error no retry can fix (401/403/400/404)",
            non_retryable_ids,
        ),
        check(
            "a fallback model is used when the primary fails",
            None if not failing.get("n") else not no_fallback,
            f"{len(no_fallback)} of {failing.get('n') or 0} request(s) whose model call failed (429, 5xx, timeout) "
            "never tried another model",
            [r["trace_id"] for r in no_fallback][:20],
        ),
        check(
            f"error rate per provider at most {MAX_ERROR_RATE:.0%}",
            None if not judged else not bad_errors,
            "; ".join(f"{p['provider']} {pct(p['error_rate'])} of {p['calls']}" for p in providers) or "no model calls",
            scope.ids("SELECT trace_id FROM sp WHERE span_type = 'llm' AND is_error GROUP BY 1 ORDER BY min(start_ns)"),
        ),
        check(
            f"429 rate per provider at most {MAX_429_RATE:.0%}",
            None if not judged else not bad_429,
            "; ".join(f"{p['provider']} {pct(p['rate_limited_rate'])}" for p in providers) or "no model calls",
            scope.ids(
                f"""SELECT trace_id FROM sp WHERE span_type = 'llm' AND is_error AND {_RATE_LIMITED}
                    GROUP BY 1 ORDER BY min(start_ns)"""
            ),
        ),
    ]
    return section("resilience", "Resilience", checks, providers=providers, tools=tools)
