"""`agentflight sql`: a DuckDB shell on the lake views (interactive, or one query with -c).

Example queries (also in the README):
    SELECT user_id, date_trunc('day', to_timestamp(start_time_unix_nano / 1e9)) AS day, sum(cost_usd)
    FROM spans GROUP BY ALL ORDER BY day;
    SELECT tool_name, count(*) AS calls FROM spans WHERE span_type = 'tool' GROUP BY ALL ORDER BY calls DESC;
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb

from store.views import connect

_HELP = (
    "Views: spans, events, spans_with_content, span_content, spans_raw, events_raw. "
    "End a statement with ';'. Ctrl-D quits."
)


def _run(con: duckdb.DuckDBPyConnection, sql: str) -> bool:
    try:
        relation = con.sql(sql)
    except duckdb.Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    if relation is not None:
        relation.show(max_width=200, max_rows=200)
    return True


def run_shell(lake_dir: Path, project: str | None, query: str | None) -> int:
    con = connect(lake_dir, project)
    if query is not None:
        return 0 if _run(con, query) else 1
    print(_HELP)
    buffer: list[str] = []
    while True:
        try:
            line = input("agentflight> " if not buffer else "        ...> ")
        except EOFError:
            print()
            return 0
        buffer.append(line)
        if line.rstrip().endswith(";"):
            _run(con, "\n".join(buffer))
            buffer = []
