"""DuckDB views over the lake: the one read path for the API and `agentflight sql`.

Views (all deduplicated: one row per key, the newest received copy wins, docs/design.md invariant 2):
- `spans`: one row per (project, trace_id, span_id).
- `events`: OTLP log records (GenAI content events), one row per (project, event_id).
- `span_content`: per span, the input/output messages its log events carry (joined by span id, or by
  gen_ai.response.id for records emitted outside the span), for spans that had no content inline.
- `spans_raw`, `events_raw`: every stored row, duplicates included.
A connection opened for one project sees only that project's partitions.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from store.lake import Lake
from store.schema import EVENT_SCHEMA, SPAN_SCHEMA

_SCHEMAS = {"spans": SPAN_SCHEMA, "events": EVENT_SCHEMA}


def _source(con: duckdb.DuckDBPyConnection, lake: Lake, table: str, project: str | None) -> str:
    """A FROM clause for the table's parts; an empty typed table when there are none yet."""
    if lake.parts(table, project):
        glob = lake.glob(table, project).replace("'", "''")
        return f"read_parquet('{glob}', hive_partitioning=false, union_by_name=true)"
    empty = f"_empty_{table}"
    con.register(empty, pa.Table.from_batches([], schema=_SCHEMAS[table]))
    return empty


def create_views(con: duckdb.DuckDBPyConnection, lake: Lake, project: str | None = None) -> None:
    """(Re)create the views; call again to pick up parts published since."""
    create_views_over(con, _source(con, lake, "spans", project), _source(con, lake, "events", project), project)


def create_views_over(
    con: duckdb.DuckDBPyConnection, spans_source: str, events_source: str, project: str | None = None
) -> None:
    """The views over two relations holding stored rows: a Parquet scan, or a table or dataset registered on the
    connection (query/sql_sandbox.py registers pyarrow datasets so its DuckDB never opens a file itself).
    With a project, rows of any other project are filtered out even if a source holds some."""
    where = ""
    if project is not None:
        where = "WHERE project = '" + project.replace("'", "''") + "'"
    con.execute(f"CREATE OR REPLACE VIEW spans_raw AS SELECT * FROM {spans_source} {where}")
    con.execute(f"CREATE OR REPLACE VIEW events_raw AS SELECT * FROM {events_source} {where}")
    con.execute(
        """CREATE OR REPLACE VIEW spans AS
           SELECT * FROM spans_raw
           QUALIFY row_number() OVER (
               PARTITION BY project, trace_id, span_id ORDER BY received_at_unix_nano DESC) = 1"""
    )
    con.execute(
        """CREATE OR REPLACE VIEW events AS
           SELECT * FROM events_raw
           QUALIFY row_number() OVER (PARTITION BY project, event_id ORDER BY received_at_unix_nano DESC) = 1"""
    )
    # Records that name their span join on it; records emitted outside any span context join on the
    # provider response id instead (docs/design.md, Protocol facts). Messages keep record time order.
    con.execute(
        """CREATE OR REPLACE VIEW span_content AS
           WITH linked AS (
               SELECT s.project, s.trace_id, s.span_id, e.time_unix_nano, e.event_id,
                      e.input_messages, e.output_messages
               FROM spans s JOIN events e
                 ON e.project = s.project AND e.trace_id = s.trace_id AND e.span_id = s.span_id
               UNION ALL
               SELECT s.project, s.trace_id, s.span_id, e.time_unix_nano, e.event_id,
                      e.input_messages, e.output_messages
               FROM spans s JOIN events e
                 ON e.project = s.project AND e.span_id IS NULL AND e.response_id IS NOT NULL
                    AND e.response_id = s.response_id
           )
           SELECT project, trace_id, span_id,
                  to_json(flatten(list(CAST(input_messages AS JSON[]) ORDER BY time_unix_nano, event_id)
                      FILTER (WHERE input_messages IS NOT NULL))) AS input_messages,
                  to_json(flatten(list(CAST(output_messages AS JSON[]) ORDER BY time_unix_nano, event_id)
                      FILTER (WHERE output_messages IS NOT NULL))) AS output_messages
           FROM linked GROUP BY ALL"""
    )
    con.execute(
        """CREATE OR REPLACE VIEW spans_with_content AS
           SELECT s.* REPLACE (
                      coalesce(s.input_messages, CAST(c.input_messages AS VARCHAR)) AS input_messages,
                      coalesce(s.output_messages, CAST(c.output_messages AS VARCHAR)) AS output_messages)
           FROM spans s LEFT JOIN span_content c USING (project, trace_id, span_id)"""
    )


def connect(
    lake_root: Path,
    project: str | None = None,
    *,
    read_only_config: dict[str, str | bool | int | float | list[str]] | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake views; project=None sees every project (operator use)."""
    con = duckdb.connect(config=read_only_config or {})
    create_views(con, Lake(lake_root), project)
    return con
