"""`GET /readiness`: the readiness report over the API (query/app.py includes this router). Parses, delegates.

Scoping is the API's own: the caller's key decides the project (query.app.caller_project), exactly as for
every other route; `service`, `since` and `until` are checked (query/readiness/scope.py) and a bad one is a
400 naming it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from query.app import ApiState, caller_project
from query.readiness import report
from query.readiness.scope import window
from query.traces import parse_time

router = APIRouter(tags=["readiness"])
TIME_HELP = "ISO 8601 time or unix nanoseconds"


@router.get("/readiness")
def readiness(
    request: Request,
    caller: Annotated[str, Depends(caller_project)],
    service: Annotated[str | None, Query(max_length=200, description="one service (default: all)")] = None,
    since: Annotated[str | None, Query(description=f"{TIME_HELP} (default: 7 days before until)")] = None,
    until: Annotated[str | None, Query(description=f"{TIME_HELP} (default: now)")] = None,
) -> dict[str, Any]:
    """Which production practices hold, per section (model control, guardrails, budgets, tools, resilience,
    evals and prompts, attribution, unit economics), each check with the trace ids that prove it."""
    state: ApiState = request.app.state.api
    win = window(parse_time(since, "since"), parse_time(until, "until"), service)
    config = state.index.configs.get(caller)
    return report.build(state.index, caller, win, config)
