"""What one readiness report reads: the time window and service, and the temp tables every section queries.

`Scope.open` refreshes the index, then builds three temp tables on a cursor of the index's DuckDB, so each
section is plain SQL over small tables and the lake is scanned once per report:

- `sel`: the index's per-trace summaries (`traces`) of the project whose start is in the window, of one
  service when one is asked for (a trace's service is its root span's);
- `sp`: those traces' spans in the window, deduplicated, light columns only, plus a few facts that need the
  raw attributes (guardrail phase and name, a declared budget, evaluation results, MCP calls), extracted in
  the same scan; heavy content columns are never read;
- `us`: their counted model calls (the index's usage rows, `TraceIndex.usage_source`: leaf model spans with
  agent, prompt, cost).

Findings are the index's `findings` view joined to `sel`. Nothing is written anywhere.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb

from query.errors import BadRequest
from query.index import TraceIndex

DAY_NS = 86_400 * 1_000_000_000
DEFAULT_DAYS = 7
MAX_DAYS = 366  # a report reads every span of its window once; a year is the most one request may ask for
EXAMPLES = 20  # trace ids shown as proof per check

# A span that may hold an evaluation result (query/readiness/evals.py reads its attributes and events).
_EVAL = """(span_type = 'evaluator' OR contains(attributes, 'gen_ai.eval') OR contains(attributes, '"eval.')
           OR contains(attributes, '"evaluations.') OR contains(events, 'gen_ai.evaluation'))"""
# Facts the report needs from the raw attributes/events, read only where the span could hold them.
_SPAN_FACTS = f"""
    trace_id, span_id, parent_span_id, name, span_type, service_name, start_time_unix_nano AS start_ns,
    end_time_unix_nano AS end_ns, coalesce(is_error, false) AS is_error, error_type, error_message,
    provider, request_model, response_model, input_tokens, output_tokens, user_id, session_id,
    tool_name, agent_name, prompt_name, prompt_version, cost_usd, cost_status,
    CASE WHEN span_type = 'guardrail' OR contains(attributes, 'gen_ai.guardrail.')
         THEN upper(coalesce(json_extract_string(attributes, '$."gen_ai.guardrail.source"'),
                             json_extract_string(attributes, '$."guard.phase"'))) END AS guard_source,
    CASE WHEN span_type = 'guardrail' OR contains(attributes, 'gen_ai.guardrail.')
         THEN coalesce(json_extract_string(attributes, '$."gen_ai.guardrail.component.name"'),
                       json_extract_string(attributes, '$."gen_ai.guardrail.name"'), name) END AS guard_name,
    contains(attributes, '"agentflight.budget.') AS declares_budget,
    contains(attributes, '"mcp.') AS is_mcp,
    CASE WHEN {_EVAL} THEN attributes END AS eval_attributes,
    CASE WHEN {_EVAL} THEN events END AS eval_events,
    CASE WHEN is_error THEN coalesce(
         TRY_CAST(json_extract_string(attributes, '$."http.response.status_code"') AS INTEGER),
         TRY_CAST(json_extract_string(attributes, '$."http.status_code"') AS INTEGER),
         TRY_CAST(regexp_extract(coalesce(error_message, '') || ' ' || coalesce(status_message, ''),
                                 '(?i)(?:error code|status(?: code)?|http)[:= ]+([1-5][0-9][0-9])', 1) AS INTEGER))
         END AS http_status"""


# The lake columns _SPAN_FACTS reads, typed, with no row: the shape of `sp` when the window has no span files.
_NO_SPANS = "SELECT " + ", ".join(
    f"NULL::{kind} AS {name}"
    for name, kind in (
        *((c, "VARCHAR") for c in ("trace_id", "span_id", "parent_span_id", "name", "span_type", "service_name")),
        ("start_time_unix_nano", "BIGINT"), ("end_time_unix_nano", "BIGINT"), ("is_error", "BOOLEAN"),
        *((c, "VARCHAR") for c in ("error_type", "error_message", "status_message", "provider", "request_model",
                                    "response_model")),
        ("input_tokens", "BIGINT"), ("output_tokens", "BIGINT"),
        *((c, "VARCHAR") for c in ("user_id", "session_id", "tool_name", "agent_name", "prompt_name",
                                    "prompt_version")),
        ("cost_usd", "DOUBLE"), ("cost_status", "VARCHAR"), ("attributes", "VARCHAR"), ("events", "VARCHAR"),
    )
) + " WHERE false"  # fmt: skip


@dataclass(frozen=True, slots=True)
class Window:
    from_ns: int
    to_ns: int
    service: str | None

    @property
    def dates(self) -> list[str]:
        first = dt.datetime.fromtimestamp(self.from_ns // 1_000_000_000, tz=dt.UTC).date()
        last = dt.datetime.fromtimestamp(max(self.from_ns, self.to_ns - 1) // 1_000_000_000, tz=dt.UTC).date()
        return [(first + dt.timedelta(days=d)).isoformat() for d in range((last - first).days + 1)]


def window(from_ns: int | None, to_ns: int | None, service: str | None, now_ns: int | None = None) -> Window:
    """The report's window: `until` (default now) and `since` (default 7 days before it), checked."""
    now = now_ns if now_ns is not None else dt.datetime.now(dt.UTC).timestamp() * 1e9
    end = to_ns if to_ns is not None else int(now)
    start = from_ns if from_ns is not None else end - DEFAULT_DAYS * DAY_NS
    if start >= end:
        raise BadRequest("since: must be before until")
    if end - start > MAX_DAYS * DAY_NS:
        raise BadRequest(f"since/until: a report covers at most {MAX_DAYS} days")
    if service is not None and (not service.strip() or len(service) > 200):
        raise BadRequest("service: must be a service name of 1 to 200 characters")
    return Window(max(start, 0), end, service.strip() if service else None)


class Scope:
    """A cursor holding `sel`, `sp` and `us` for one project and window; use as a context manager."""

    def __init__(self, index: TraceIndex, project: str, win: Window) -> None:
        self.index, self.project, self.window = index, project, win
        self.con: duckdb.DuckDBPyConnection = index.cursor()

    def __enter__(self) -> Scope:
        self.index.refresh(self.project)
        w = self.window
        service = "AND service_name = ?" if w.service else ""
        params: list[Any] = [self.project, w.from_ns, w.to_ns, *([w.service] if w.service else [])]
        self.con.execute(
            f"""CREATE TEMP TABLE sel AS SELECT * FROM traces
                WHERE project = ? AND start_ns >= ? AND start_ns < ? {service}""",
            params,
        )
        span_files = self.index.span_files(self.project, w.dates)
        if span_files:
            # A trace's spans may start on the day after its root (a trace over midnight): the window's dates
            # plus one more day are read, the spans kept by trace, not by time.
            later = self.index.span_files(self.project, [_next_day(w.dates[-1])])
            self.con.execute(
                f"""CREATE TEMP TABLE sp AS SELECT {_SPAN_FACTS}
                    FROM read_parquet(?, hive_partitioning=false, union_by_name=true)
                    WHERE trace_id IN (SELECT trace_id FROM sel)
                    QUALIFY row_number() OVER (PARTITION BY trace_id, span_id
                                               ORDER BY received_at_unix_nano DESC) = 1""",
                [span_files + later],
            )
        else:
            self.con.execute(f"CREATE TEMP TABLE sp AS SELECT {_SPAN_FACTS} FROM ({_NO_SPANS})")
        usage = self.index.usage_source(self.project)  # the derived files and the rows held in memory
        if usage is not None:
            source, usage_params = usage
            self.con.execute(
                f"CREATE TEMP TABLE us AS SELECT * FROM {source} WHERE trace_id IN (SELECT trace_id FROM sel)",
                usage_params,
            )
        else:
            self.con.execute(
                """CREATE TEMP TABLE us (trace_id VARCHAR, span_id VARCHAR, start_ns BIGINT, provider VARCHAR,
                   model VARCHAR, request_model VARCHAR, span_type VARCHAR, service_name VARCHAR, user_id VARCHAR,
                   session_id VARCHAR, agent_name VARCHAR, tool_name VARCHAR, prompt_name VARCHAR,
                   prompt_version VARCHAR, input_tokens BIGINT, output_tokens BIGINT, cache_read_tokens BIGINT,
                   cache_write_tokens BIGINT, reasoning_tokens BIGINT, cost_usd DOUBLE, cost_status VARCHAR)"""
            )
        self.con.execute(
            """CREATE TEMP TABLE fi AS SELECT f.* FROM findings f
               WHERE f.project = ? AND f.trace_id IN (SELECT trace_id FROM sel)""",
            [self.project],
        )
        return self

    def __exit__(self, *_: object) -> None:
        self.con.close()

    @contextlib.contextmanager
    def narrowed(self, service: str) -> Iterator[Scope]:
        """The same scope cut to one service's traces, from the tables already built (the lake is not read
        again: a report over N services costs one scan, not N + 1)."""
        tables = ("sel", "sp", "us", "fi")
        for table in tables:
            self.con.execute(f"ALTER TABLE {table} RENAME TO all_{table}")
        try:
            self.con.execute("CREATE TEMP TABLE sel AS SELECT * FROM all_sel WHERE service_name = ?", [service])
            for table in tables[1:]:
                keep = "trace_id IN (SELECT trace_id FROM sel)"
                self.con.execute(f"CREATE TEMP TABLE {table} AS SELECT * FROM all_{table} WHERE {keep}")
            yield self
        finally:
            for table in tables:
                self.con.execute(f"DROP TABLE IF EXISTS {table}")
                self.con.execute(f"ALTER TABLE all_{table} RENAME TO {table}")

    def rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        result = self.con.execute(sql, params or [])
        names = [d[0] for d in result.description or []]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]

    def one(self, sql: str, params: list[Any] | None = None) -> dict[str, Any]:
        found = self.rows(sql, params)
        return found[0] if found else {}

    def ids(self, sql: str, params: list[Any] | None = None) -> list[str]:
        """Up to EXAMPLES trace ids from a query whose first column is a trace id."""
        result = self.con.execute(f"SELECT * FROM ({sql}) LIMIT {EXAMPLES}", params or [])
        return [str(r[0]) for r in result.fetchall()]


def _next_day(date: str) -> str:
    return (dt.date.fromisoformat(date) + dt.timedelta(days=1)).isoformat()
