"""Readiness section "model control": unpinned aliases, silent drift behind an alias, and the routing table.

- Unpinned: model calls that asked for a moving alias (query/detect/models.py has the rule), judged here per
  distinct (provider, requested, answered) triple of the window's calls rather than stored as a finding on
  every trace (an agent on an alias would put one on each: 1.1M of a 10M-span lake's 1.5M findings); and
  undated ids at providers that alias them (`gpt-4o` whose answers name no version) listed as likely aliases.
- Silent drift: one requested model answered by a different response model on a later day than before
  (`gpt-4o` served by `gpt-4o-2024-08-06`, then by `gpt-4o-2024-11-20`): the proof is the first trace of the
  day the new version appeared.
- Routing: which model serves which agent (or prompt, else span name) with its calls and share of the cost,
  from the counted model calls.
"""

from __future__ import annotations

from typing import Any

from query.detect.config import ReadinessSettings
from query.detect.models import ALIASING_PROVIDERS, known, pinned_id, unpinned_reason
from query.readiness.scope import EXAMPLES, Scope
from query.readiness.verdict import check, section

_DAY = "strftime(make_timestamp(start_ns // 1000), '%Y-%m-%d')"


def build(scope: Scope, settings: ReadinessSettings) -> dict[str, Any]:
    unpinned = _unpinned(scope, settings)
    undated = [
        r
        for r in scope.rows(
            """SELECT provider, request_model AS model, count(*) AS calls, min(trace_id) AS trace_id FROM sp
               WHERE span_type = 'llm' AND request_model IS NOT NULL AND response_model IS NULL AND NOT is_error
               GROUP BY ALL ORDER BY calls DESC"""
        )
        if (r["provider"] or "") in ALIASING_PROVIDERS
        and not pinned_id(r["model"])
        and known(r["provider"], r["model"])
        and r["model"] not in {a["model"] for a in unpinned}
    ]
    drift = _drift(scope)
    routing = scope.rows(
        """WITH total AS (SELECT sum(cost_usd) AS cost FROM us)
           SELECT coalesce(agent_name, prompt_name, '(no agent)') AS step, model, provider, count(*) AS calls,
                  sum(cost_usd) AS cost_usd, round(sum(cost_usd) / nullif((SELECT cost FROM total), 0), 4) AS cost_share
           FROM us GROUP BY ALL ORDER BY cost_usd DESC NULLS LAST, calls DESC LIMIT 100"""
    )
    calls = scope.one("SELECT count(*) AS n FROM sp WHERE span_type = 'llm'")["n"]
    pinned_ids = [t for r in unpinned for t in r["trace_ids"]][:EXAMPLES]
    checks = [
        check(
            "pinned model versions",
            None if not calls else not unpinned,
            f"{sum(r['calls'] or 0 for r in unpinned)} call(s) in {sum(r['traces'] for r in unpinned)} trace(s) "
            f"asked for a moving alias: {', '.join(r['model'] for r in unpinned) or 'none'}"
            + (
                f"; undated names whose answers name no version (likely aliases): "
                f"{', '.join(sorted({r['model'] for r in undated}))}"
                if undated
                else ""
            ),
            pinned_ids or [r["trace_id"] for r in undated][:EXAMPLES],
            aliases=unpinned,
            likely_aliases=undated,
        ),
        check(
            "no silent model drift",
            None if not calls else not drift,
            f"{len(drift)} requested model(s) answered by a new version on a later day"
            + (
                ": " + "; ".join(f"{d['requested']} {d['before']} -> {d['after']} on {d['day']}" for d in drift)
                if drift
                else ""
            ),
            [d["trace_id"] for d in drift][:EXAMPLES],
            drift=drift,
        ),
    ]
    return section("model_control", "Model control", checks, routing=routing)


def _unpinned(scope: Scope, settings: ReadinessSettings) -> list[dict[str, Any]]:
    """Per requested alias: calls, traces, the models that answered, and the first traces (as proof)."""
    if not settings.enabled("unpinned_model"):
        return []
    triples = scope.rows(
        """SELECT provider, request_model, response_model, count(*) AS calls,
                  list(DISTINCT trace_id) AS trace_ids, min(start_ns) AS first_ns
           FROM sp WHERE span_type = 'llm' AND request_model IS NOT NULL GROUP BY ALL"""
    )
    by_alias: dict[str, dict[str, Any]] = {}
    for row in sorted(triples, key=lambda r: r["first_ns"]):
        reason = unpinned_reason(row["provider"], row["request_model"], row["response_model"], settings.pinned_models)
        if reason is None:
            continue
        alias = by_alias.setdefault(
            row["request_model"],
            {"model": row["request_model"], "provider": row["provider"], "reason": reason, "calls": 0,
             "response_models": [], "trace_ids": []},
        )  # fmt: skip
        alias["calls"] += row["calls"]
        if row["response_model"] and row["response_model"] not in alias["response_models"]:
            alias["response_models"].append(row["response_model"])
        alias["trace_ids"] += [t for t in sorted(row["trace_ids"]) if t not in alias["trace_ids"]]
    out = sorted(by_alias.values(), key=lambda a: -a["calls"])
    for alias in out:
        alias["traces"] = len(alias["trace_ids"])
        alias["trace_ids"] = alias["trace_ids"][:EXAMPLES]
    return out


def _drift(scope: Scope) -> list[dict[str, Any]]:
    """Per requested model, each day whose response models include one no earlier day of the window had."""
    days = scope.rows(
        f"""SELECT request_model, response_model, {_DAY} AS day, min(start_ns) AS first_ns,
                   arg_min(trace_id, start_ns) AS trace_id
            FROM sp WHERE span_type = 'llm' AND request_model IS NOT NULL AND response_model IS NOT NULL
            GROUP BY ALL ORDER BY request_model, day, first_ns"""
    )
    seen: dict[str, set[str]] = {}
    first_day: dict[str, str] = {}
    out = []
    for row in days:
        requested, answered = row["request_model"], row["response_model"]
        known_versions = seen.setdefault(requested, set())
        first_day.setdefault(requested, row["day"])
        if answered not in known_versions and row["day"] != first_day[requested]:
            out.append(
                {
                    "requested": requested,
                    "before": ", ".join(sorted(known_versions)),
                    "after": answered,
                    "day": row["day"],
                    "trace_id": row["trace_id"],
                }
            )
        known_versions.add(answered)
    return out
