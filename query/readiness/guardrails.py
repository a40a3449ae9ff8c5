"""Readiness section "guardrails coverage": input and output guardrail steps, hit rates, and the obvious misses.

- Coverage: of the traces that called a model, the share with a guardrail step on the input and one on the
  output (`gen_ai.guardrail.source` INPUT / OUTPUT, OpenLIT `guard.phase` pre/postflight; a guardrail span
  that names neither counts as input). Held at 100 %; per day in the `by_day` table.
- Hit rate per guardrail: its checks, and the guardrail findings (block, flag) on them.
- Misses found in stored content: `prompt_injection` and `pii_in_output` findings, `context_overflow`
  findings, and token flooding: a trace whose input tokens are over FLOOD_FACTOR times its service's median
  in the window (and over FLOOD_MIN_TOKENS, so a service of tiny requests is not judged on noise).
"""

from __future__ import annotations

from typing import Any

from query.readiness.scope import Scope
from query.readiness.verdict import check, pct, section, share

FLOOD_FACTOR = 10  # an input ten times the service's usual size is a flood, not a long question
FLOOD_MIN_TOKENS = 2000
_INPUT = "guard_source IS NULL OR guard_source IN ('INPUT', 'PREFLIGHT', 'PRE', 'PRE_CALL')"
_OUTPUT = "guard_source IN ('OUTPUT', 'POSTFLIGHT', 'POST', 'POST_CALL')"
_DAY = "strftime(make_timestamp(start_ns // 1000), '%Y-%m-%d')"


def _finding_check(scope: Scope, name: str, code: str, what: str, judged: bool) -> dict[str, Any]:
    row = scope.one(f"SELECT count(*) AS n, count(DISTINCT trace_id) AS traces FROM fi WHERE code = '{code}'")
    ids = scope.ids(f"SELECT trace_id FROM fi WHERE code = '{code}' GROUP BY trace_id ORDER BY min(start_ns)")
    return check(name, row["n"] == 0 if judged else None, f"{row['traces']} trace(s) with {what}", ids)


def build(scope: Scope) -> dict[str, Any]:
    coverage_sql = f"""
        WITH model_traces AS (SELECT DISTINCT trace_id FROM sp WHERE span_type IN ('llm', 'embedding')),
             guarded AS (
                 SELECT trace_id, bool_or({_INPUT}) AS has_input, bool_or({_OUTPUT}) AS has_output
                 FROM sp WHERE guard_source IS NOT NULL OR span_type = 'guardrail' GROUP BY trace_id)
        SELECT s.trace_id, s.start_ns, coalesce(g.has_input, false) AS has_input,
               coalesce(g.has_output, false) AS has_output
        FROM sel s JOIN model_traces m USING (trace_id) LEFT JOIN guarded g USING (trace_id)"""
    totals = scope.one(
        f"""SELECT count(*) AS traces, count(*) FILTER (WHERE has_input) AS with_input,
                   count(*) FILTER (WHERE has_output) AS with_output FROM ({coverage_sql})"""
    )
    by_day = scope.rows(
        f"""SELECT {_DAY} AS day, count(*) AS traces,
                   round(avg(has_input::INT), 4) AS input_share, round(avg(has_output::INT), 4) AS output_share
            FROM ({coverage_sql}) GROUP BY ALL ORDER BY day"""
    )
    traces = totals.get("traces") or 0
    input_share, output_share = share(totals.get("with_input"), traces), share(totals.get("with_output"), traces)
    hit_rate = scope.rows(
        """SELECT g.guard_name AS guardrail, coalesce(g.guard_source, 'INPUT') AS phase, count(*) AS checks,
                  count(f.span_id) AS hits, round(count(f.span_id) / count(*), 4) AS hit_rate
           FROM sp g LEFT JOIN (SELECT DISTINCT trace_id, span_id FROM fi WHERE kind = 'guardrail') f
                ON f.trace_id = g.trace_id AND f.span_id = g.span_id
           WHERE g.span_type = 'guardrail' OR g.guard_source IS NOT NULL
           GROUP BY ALL ORDER BY checks DESC"""
    )
    flood = scope.rows(
        f"""WITH usual AS (SELECT service_name, median(input_tokens) AS median_input FROM sel
                           WHERE input_tokens > 0 GROUP BY service_name)
            SELECT s.trace_id, s.service_name, s.input_tokens, u.median_input
            FROM sel s JOIN usual u USING (service_name)
            WHERE s.input_tokens > {FLOOD_FACTOR} * u.median_input AND s.input_tokens > {FLOOD_MIN_TOKENS}
            ORDER BY s.input_tokens DESC"""
    )
    checks = [
        check(
            "input guardrail on every request",
            None if not traces else input_share == 1.0,
            f"{pct(input_share)} of {traces} request(s) that called a model had an input guardrail step",
            scope.ids(f"SELECT trace_id FROM ({coverage_sql}) WHERE NOT has_input ORDER BY start_ns"),
            share=input_share,
        ),
        check(
            "output guardrail on every request",
            None if not traces else output_share == 1.0,
            f"{pct(output_share)} of {traces} request(s) that called a model had an output guardrail step",
            scope.ids(f"SELECT trace_id FROM ({coverage_sql}) WHERE NOT has_output ORDER BY start_ns"),
            share=output_share,
        ),
        _finding_check(
            scope, "no prompt injection got through", "prompt_injection", "an injection phrasing", bool(traces)
        ),
        _finding_check(
            scope, "no personal data in answers", "pii_in_output", "personal data in an answer", bool(traces)
        ),
        check(
            "no token flooding",
            None if not traces else not flood,
            f"{len(flood)} request(s) with over {FLOOD_FACTOR}x their service's median input tokens",
            [r["trace_id"] for r in flood][:20],
        ),
        _finding_check(
            scope, "no context window overflow", "context_overflow", "input near the context window", bool(traces)
        ),
    ]
    return section("guardrails", "Guardrails coverage", checks, by_day=by_day, hit_rate=hit_rate, flooding=flood[:20])
