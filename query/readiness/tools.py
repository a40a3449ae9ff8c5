"""Readiness section "tools and credentials": who tools act for, which services share them, side effects.

- Tool calls (MCP `mcp.*` ones counted apart) on requests with no user identity: `tool_without_user` findings.
- Tools called by more than one service: one credential serving several services cannot be scoped to one
  (per tool, the services that called it, from the tool spans' own `service.name`).
- Side-effecting tools executed twice with the same arguments, or without a preceding approval:
  `side_effect_repeated` and `side_effect_unapproved` findings (query/detect/readiness.py).
"""

from __future__ import annotations

from typing import Any

from query.readiness.scope import Scope
from query.readiness.verdict import check, section


def _codes(scope: Scope, code: str) -> tuple[dict[str, Any], list[str]]:
    row = scope.one(f"SELECT count(*) AS n, count(DISTINCT trace_id) AS traces FROM fi WHERE code = '{code}'")
    return row, scope.ids(f"SELECT trace_id FROM fi WHERE code = '{code}' GROUP BY trace_id ORDER BY min(start_ns)")


def build(scope: Scope) -> dict[str, Any]:
    tools = scope.one(
        """SELECT count(*) AS calls, count(*) FILTER (WHERE is_mcp) AS mcp_calls FROM sp WHERE span_type = 'tool'"""
    )
    anonymous = scope.one(
        """SELECT count(*) AS traces,
                  sum(TRY_CAST(json_extract(evidence, '$.tool_calls') AS BIGINT))::BIGINT AS calls,
                  sum(TRY_CAST(json_extract(evidence, '$.mcp_tool_calls') AS BIGINT))::BIGINT AS mcp_calls
           FROM fi WHERE code = 'tool_without_user'"""
    )
    anonymous_ids = scope.ids(
        "SELECT trace_id FROM fi WHERE code = 'tool_without_user' GROUP BY trace_id ORDER BY min(start_ns)"
    )
    shared = scope.rows(
        """SELECT tool_name AS tool, list(DISTINCT service_name ORDER BY service_name) AS services, count(*) AS calls,
                  list(DISTINCT trace_id)[1:5] AS trace_ids
           FROM sp WHERE span_type = 'tool' AND tool_name IS NOT NULL AND service_name IS NOT NULL
           GROUP BY tool_name HAVING count(DISTINCT service_name) > 1 ORDER BY calls DESC"""
    )
    by_tool = scope.rows(
        """SELECT tool_name AS tool, count(*) AS calls, count(*) FILTER (WHERE is_mcp) AS mcp_calls,
                  count(DISTINCT trace_id) AS traces
           FROM sp WHERE span_type = 'tool' GROUP BY ALL ORDER BY calls DESC LIMIT 100"""
    )
    repeated, repeated_ids = _codes(scope, "side_effect_repeated")
    unapproved, unapproved_ids = _codes(scope, "side_effect_unapproved")
    any_tools = bool(tools.get("calls"))
    checks = [
        check(
            "every tool call acts for a user",
            None if not any_tools else not anonymous.get("traces"),
            f"{anonymous.get('calls') or 0} tool call(s) ({anonymous.get('mcp_calls') or 0} MCP) in "
            f"{anonymous.get('traces') or 0} request(s) with no user identity",
            anonymous_ids,
        ),
        check(
            "each tool is used by one service",
            None if not any_tools else not shared,
            f"{len(shared)} tool(s) called by more than one service"
            + (": " + "; ".join(f"{s['tool']} by {', '.join(s['services'])}" for s in shared[:5]) if shared else ""),
            [t for s in shared for t in s["trace_ids"]][:20],
        ),
        check(
            "no side effect executed twice",
            None if not any_tools else not repeated.get("n"),
            f"{repeated.get('traces') or 0} request(s) executed a side-effecting tool twice with the same arguments",
            repeated_ids,
        ),
        check(
            "side effects approved first",
            None if not any_tools else not unapproved.get("n"),
            f"{unapproved.get('traces') or 0} request(s) ran a side-effecting tool without a preceding approval",
            unapproved_ids,
        ),
    ]
    return section("tools", "Tools and credentials", checks, shared_tools=shared, tools=by_tool)
