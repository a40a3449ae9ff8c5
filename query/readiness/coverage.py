"""Readiness section "attribution coverage": can every cost and every action be put on a user, session and model.

Shares: requests with a user and with a session (a trace's user is the first span's that carries one), spans
carrying a user id themselves, model calls with a model name and with token counts; and the models whose price
is unknown (counted calls with `cost_status = 'unknown_model'`: their cost is missing from every total).
Held when every share is 100 % and no model is unpriced; `by_service` has the shares per service.
"""

from __future__ import annotations

from typing import Any

from query.readiness.scope import Scope
from query.readiness.verdict import check, pct, section, share


def build(scope: Scope) -> dict[str, Any]:
    traces = scope.one(
        """SELECT count(*) AS traces, count(user_id) AS with_user, count(session_id) AS with_session FROM sel"""
    )
    spans = scope.one(
        """SELECT count(*) AS spans, count(user_id) AS with_user, count(session_id) AS with_session,
                  count(*) FILTER (WHERE span_type IN ('llm', 'embedding')) AS model_calls,
                  count(*) FILTER (WHERE span_type IN ('llm', 'embedding')
                                   AND coalesce(request_model, response_model) IS NOT NULL) AS with_model,
                  count(*) FILTER (WHERE span_type IN ('llm', 'embedding') AND NOT is_error
                                   AND (coalesce(input_tokens, 0) + coalesce(output_tokens, 0)) > 0) AS with_tokens,
                  count(*) FILTER (WHERE span_type IN ('llm', 'embedding') AND NOT is_error) AS ok_calls
           FROM sp"""
    )
    by_service = scope.rows(
        """SELECT service_name AS service, count(*) AS traces, round(avg((user_id IS NOT NULL)::INT), 4) AS user_share,
                  round(avg((session_id IS NOT NULL)::INT), 4) AS session_share
           FROM sel GROUP BY ALL ORDER BY traces DESC"""
    )
    unknown = scope.rows(
        """SELECT provider, model, count(*) AS calls, list(DISTINCT trace_id)[1:5] AS trace_ids FROM us
           WHERE cost_status = 'unknown_model' GROUP BY ALL ORDER BY calls DESC"""
    )
    n = traces.get("traces") or 0
    user_share, session_share = share(traces.get("with_user"), n), share(traces.get("with_session"), n)
    model_share = share(spans.get("with_model"), spans.get("model_calls"))
    token_share = share(spans.get("with_tokens"), spans.get("ok_calls"))
    checks = [
        check(
            "every request names its user",
            None if not n else user_share == 1.0,
            f"{pct(user_share)} of {n} request(s) have a user; "
            f"{pct(share(spans.get('with_user'), spans.get('spans')))} of {spans.get('spans') or 0} span(s) "
            "carry one themselves",
            scope.ids("SELECT trace_id FROM sel WHERE user_id IS NULL ORDER BY start_ns"),
        ),
        check(
            "every request names its session",
            None if not n else session_share == 1.0,
            f"{pct(session_share)} of {n} request(s) have a session",
            scope.ids("SELECT trace_id FROM sel WHERE session_id IS NULL ORDER BY start_ns"),
        ),
        check(
            "every model call names its model and tokens",
            None if not spans.get("model_calls") else model_share == 1.0 and token_share == 1.0,
            f"{pct(model_share)} of {spans.get('model_calls') or 0} model call(s) name a model; {pct(token_share)} of "
            f"{spans.get('ok_calls') or 0} that succeeded report tokens",
            scope.ids(
                """SELECT trace_id FROM sp WHERE span_type IN ('llm', 'embedding') AND (
                       coalesce(request_model, response_model) IS NULL
                       OR (NOT is_error AND coalesce(input_tokens, 0) + coalesce(output_tokens, 0) = 0))
                   GROUP BY trace_id ORDER BY min(start_ns)"""
            ),
        ),
        check(
            "every model has a price",
            None if not spans.get("model_calls") else not unknown,
            f"{len(unknown)} model(s) without a price: "
            + (", ".join(f"{u['provider']}/{u['model']} ({u['calls']} calls)" for u in unknown[:10]) or "none"),
            [t for u in unknown for t in u["trace_ids"]][:20],
        ),
    ]
    return section("attribution", "Attribution coverage", checks, by_service=by_service, unknown_price=unknown)
