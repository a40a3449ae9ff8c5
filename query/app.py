"""The query API (FastAPI): the one way in for the UI, scripts and tools. Routes parse and delegate.

Every route but /health needs a key when keys are configured and sees only its project (docs/design.md invariant
6): another project's trace ids answer 404. Errors are JSON `{"error": message}` with a 4xx status.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from collector.config import Settings
from query import costs, findings, people, trace_view
from query.detect.config import DetectorConfigs
from query.errors import BadRequest, QueryError
from query.index import TraceIndex
from query.traces import TraceFilter, list_traces, parse_time
from store.keys import KeyRing, key_from_headers

log = logging.getLogger(__name__)
KIND_HELP = "loop, retry, budget, guardrail, error (comma-separated)"


class SafeJSONResponse(JSONResponse):
    """JSON that stays valid when stored data holds NaN or infinity (a span attribute can): such values
    become the strings "NaN", "Infinity", "-Infinity" instead of invalid JSON or a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        except ValueError:
            return json.dumps(_finite(content), ensure_ascii=False, separators=(",", ":")).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


@dataclass
class ApiState:
    settings: Settings
    keys: KeyRing
    index: TraceIndex
    requests: Counter[tuple[str, int]]


class _Unauthorized(Exception):
    pass


def caller_project(request: Request) -> str:
    """The project of the presented key (docs/design.md invariant 6: the server decides the tenant)."""
    state: ApiState = request.app.state.api
    presented = key_from_headers(request.headers.get("authorization"), request.headers.get("x-api-key"))
    found = state.keys.project_for(presented)
    if found is None:
        raise _Unauthorized()
    return found


# Module level: with postponed annotations FastAPI resolves these names in the module's globals.
Caller = Annotated[str, Depends(caller_project)]
From = Annotated[str | None, Query(alias="from", description="ISO 8601 time or unix nanoseconds (inclusive)")]
To = Annotated[str | None, Query(alias="to", description="ISO 8601 time or unix nanoseconds (exclusive)")]


class SqlRequest(BaseModel):
    sql: str = Field(description="One read-only SELECT over the views spans, events, spans_with_content, ...")
    format: Literal["json", "arrow", "parquet"] = Field("json", description="json rows, or an Arrow/Parquet file")


def create_app(settings: Settings, index: TraceIndex | None = None) -> FastAPI:
    configs = DetectorConfigs(settings.detectors_dir)
    configs.check_all()  # a bad detector config stops the API at start, naming the file and the setting
    index = index or TraceIndex(settings.lake_dir, configs=configs)
    state = ApiState(settings, KeyRing(settings.keys_path), index, Counter())

    @contextlib.asynccontextmanager
    async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # The index's memory may be up to 30 s ahead of its derived files: write them, so a restart reads them
        # instead of summarising those partitions again.
        for project in index.projects():
            index.publish(project)

    app = FastAPI(
        lifespan=_lifespan,
        title="agentflight query API",
        version="1",
        description="Traces, sessions, users, costs and read-only SQL over the agentflight lake. "
        "Send the API key as `authorization: Bearer <key>` or `x-api-key`.",
        default_response_class=SafeJSONResponse,
    )
    app.state.api = state

    @app.exception_handler(QueryError)
    async def _query_error(_: Request, exc: QueryError) -> Response:
        return SafeJSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths (404) and methods (405) answer in the API's error shape too, not {"detail": ...}.
        return SafeJSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body", "path"))
            problems.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
        return SafeJSONResponse({"error": "; ".join(problems) or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("query API error")
        return SafeJSONResponse({"error": "internal error; the server log has the details"}, status_code=500)

    @app.middleware("http")
    async def _count(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        state.requests[(getattr(route, "path", "unmatched"), response.status_code)] += 1
        return response

    @app.exception_handler(_Unauthorized)
    async def _unauthorized(_: Request, exc: _Unauthorized) -> Response:
        return SafeJSONResponse(
            {"error": "missing, unknown or revoked API key"}, status_code=401, headers={"www-authenticate": "Bearer"}
        )

    @app.get("/health", tags=["ops"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics(_: Caller) -> str:
        lines = [
            "# HELP agentflight_api_requests_total Requests answered, by route and status.",
            "# TYPE agentflight_api_requests_total counter",
        ]
        for (route, status), count in sorted(state.requests.items()):
            lines.append(f'agentflight_api_requests_total{{route="{route}",status="{status}"}} {count}')
        lines += [
            "# HELP agentflight_api_index_refresh_seconds Duration of the last trace index refresh.",
            "# TYPE agentflight_api_index_refresh_seconds gauge",
            f"agentflight_api_index_refresh_seconds {state.index.last_refresh_seconds:.6f}",
        ]
        return "\n".join(lines) + "\n"

    @app.get("/traces", tags=["traces"])
    def traces(
        caller: Caller,
        from_: From = None,
        to: To = None,
        service: str | None = None,
        user: str | None = None,
        session: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        agent: str | None = None,
        tool: str | None = None,
        span_type: str | None = None,
        status: Annotated[Literal["error", "ok"] | None, Query()] = None,
        flag: Annotated[Literal["loop", "retry", "budget", "guardrail", "error"] | None, Query()] = None,
        min_cost: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
        min_duration_ms: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
        q: Annotated[str | None, Query(max_length=200, description="text in span names and content")] = None,
        sort: Annotated[Literal["start", "duration", "cost", "tokens", "spans"], Query()] = "start",
        order: Annotated[Literal["desc", "asc"], Query()] = "desc",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(max_length=500)] = None,
    ) -> dict[str, Any]:
        """Traces newest first (or by `sort`), one summary per trace, `next_cursor` for the next page."""
        flt = TraceFilter(
            from_ns=parse_time(from_, "from"),
            to_ns=parse_time(to, "to"),
            service=service,
            user=user,
            session=session,
            model=model,
            provider=provider,
            agent=agent,
            tool=tool,
            span_type=span_type,
            status=status,
            flag=flag,
            min_cost=min_cost,
            min_duration_ms=min_duration_ms,
            text=q or None,
        )
        return list_traces(state.index, caller, flt, sort=sort, descending=order == "desc", limit=limit, cursor=cursor)

    @app.get("/traces/{trace_id}", tags=["traces"])
    def trace(
        caller: Caller,
        trace_id: str,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
        max_depth: Annotated[int | None, Query(ge=0, le=1000)] = None,
        content: Annotated[bool | None, Query(description="inline message content (default: small traces)")] = None,
    ) -> dict[str, Any]:
        """The trace as a tree in depth-first order (paged), with usage per node, content and findings."""
        return trace_view.get_trace(
            state.index, caller, trace_id, offset=offset, limit=limit, max_depth=max_depth, content=content
        )

    @app.get("/traces/{trace_id}/spans/{span_id}", tags=["traces"])
    def span(caller: Caller, trace_id: str, span_id: str) -> dict[str, Any]:
        """Everything stored for one span: whole content, raw attributes, events, links, resource."""
        return trace_view.get_span(state.index, caller, trace_id, span_id)

    @app.get("/findings", tags=["findings"])
    def finding_list(
        caller: Caller,
        from_: From = None,
        to: To = None,
        kind: Annotated[str | None, Query(description=KIND_HELP)] = None,
        severity: Annotated[str | None, Query(description="info, warning, error (comma-separated)")] = None,
        code: Annotated[str | None, Query(max_length=100, description="e.g. repeated_tool_call, rate_limit")] = None,
        trace_id: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: Annotated[str | None, Query(max_length=500)] = None,
    ) -> dict[str, Any]:
        """Findings newest first, each with its trace, span(s), message and evidence; `next_cursor` pages on."""
        flt = findings.parse_filter(kind, severity, code, trace_id, parse_time(from_, "from"), parse_time(to, "to"))
        state.index.refresh(caller)
        return findings.list_findings(state.index, caller, flt, limit, cursor)

    @app.get("/findings/counts", tags=["findings"])
    def finding_counts(
        caller: Caller,
        from_: From = None,
        to: To = None,
        kind: Annotated[str | None, Query(description=KIND_HELP)] = None,
        severity: Annotated[str | None, Query(description="info, warning, error (comma-separated)")] = None,
        bucket: Annotated[Literal["day", "hour"], Query()] = "day",
    ) -> dict[str, Any]:
        """Findings and flagged traces per kind per day (or hour), with totals per kind."""
        flt = findings.parse_filter(kind, severity, None, None, parse_time(from_, "from"), parse_time(to, "to"))
        state.index.refresh(caller)
        return findings.counts(state.index, caller, flt, bucket)

    @app.get("/traces/{trace_id}/export", tags=["traces"])
    def export(
        caller: Caller,
        trace_id: str,
        format: Annotated[Literal["otlp", "otlp_logs", "eval"], Query()] = "otlp",
    ) -> Response:
        """OTLP/JSON (re-importable at /v1/traces; `otlp_logs` at /v1/logs) or an eval case as JSONL."""
        from query import exports

        return exports.export_trace(state.index, caller, trace_id, format)

    @app.get("/sessions", tags=["sessions and users"])
    def sessions(
        caller: Caller,
        user: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Sessions, most recently active first, with totals."""
        return people.list_sessions(state.index, caller, user=user, limit=limit, offset=offset)

    @app.get("/sessions/{session_id:path}", tags=["sessions and users"])
    def session(caller: Caller, session_id: str) -> dict[str, Any]:
        """A session's traces in start order, with totals."""
        return people.get_session(state.index, caller, session_id)

    @app.get("/users", tags=["sessions and users"])
    def users(
        caller: Caller,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Users by cost, with totals."""
        return people.list_users(state.index, caller, limit=limit, offset=offset)

    @app.get("/users/{user_id:path}", tags=["sessions and users"])
    def user(
        caller: Caller,
        user_id: str,
        from_: From = None,
        to: To = None,
        bucket: Annotated[Literal["day", "hour"], Query()] = "day",
    ) -> dict[str, Any]:
        """A user's totals, cost and tokens over time, and sessions."""
        return people.get_user(
            state.index, caller, user_id, bucket=bucket, from_ns=parse_time(from_, "from"), to_ns=parse_time(to, "to")
        )

    @app.get("/costs", tags=["costs"])
    def cost_breakdown(
        caller: Caller,
        group_by: Annotated[str, Query(description=f"comma-separated: {', '.join(costs.DIMENSIONS)}")] = "model",
        from_: From = None,
        to: To = None,
        limit: Annotated[int, Query(ge=1, le=costs.MAX_GROUPS)] = 1000,
        count_traces: Annotated[bool, Query(description="distinct traces per group (slower)")] = False,
    ) -> dict[str, Any]:
        """Cost and tokens by kind, grouped; leaf model spans only; unknown-cost share per group."""
        dims = [g.strip() for g in group_by.split(",") if g.strip()]
        return costs.cost_breakdown(
            state.index,
            caller,
            dims,
            from_ns=parse_time(from_, "from"),
            to_ns=parse_time(to, "to"),
            limit=limit,
            count_traces=count_traces,
        )

    @app.get("/costs/unit-economics", tags=["costs"])
    def unit_economics(
        caller: Caller,
        from_: From = None,
        to: To = None,
        sessions_per_day: Annotated[float | None, Query(ge=0, le=1e12, allow_inf_nan=False)] = None,
    ) -> dict[str, Any]:
        """Average cost per trace and per session, and a projection at a number of sessions per day."""
        return costs.unit_economics(
            state.index,
            caller,
            from_ns=parse_time(from_, "from"),
            to_ns=parse_time(to, "to"),
            sessions_per_day=sessions_per_day,
        )

    from query.readiness.route import router as readiness_router  # imports this module: after it has loaded

    app.include_router(readiness_router)

    @app.post("/sql", tags=["sql"])
    def sql(caller: Caller, body: SqlRequest) -> Response:
        """One read-only SELECT over the caller's project (views: spans, events, spans_with_content, ...)."""
        from query import sql_route

        return sql_route.run(state.settings, caller, body.sql, body.format)

    return app


def started(app: FastAPI) -> float:
    """Warm the index for the default project so the first page view does not pay for it."""
    began = time.perf_counter()
    state: ApiState = app.state.api
    if not state.keys.enabled:
        state.index.refresh("default")
    return time.perf_counter() - began


__all__ = ["BadRequest", "create_app", "started"]
