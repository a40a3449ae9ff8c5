"""POST /sql: runs the caller's SELECT in the sandbox (query/sql_sandbox.py) and encodes the result."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from fastapi.responses import Response

from collector.config import Settings
from query.errors import QueryError


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def table_json(table: pa.Table) -> dict[str, Any]:
    columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
    rows = [[_jsonable(v) for v in row.values()] for row in table.to_pylist()]
    return {"columns": columns, "rows": rows, "row_count": table.num_rows}


def run(settings: Settings, project: str, sql: str, fmt: str) -> Response:
    from query.app import SafeJSONResponse
    from query.sql_sandbox import SqlRejected, run_select

    try:
        table = run_select(settings.lake_dir, project, sql)
    except SqlRejected as exc:
        raise _as_query_error(exc) from None
    if fmt == "arrow":
        sink = io.BytesIO()
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return Response(
            sink.getvalue(),
            media_type="application/vnd.apache.arrow.stream",
            headers={"content-disposition": 'attachment; filename="result.arrow"'},
        )
    if fmt == "parquet":
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        return Response(
            sink.getvalue(),
            media_type="application/vnd.apache.parquet",
            headers={"content-disposition": 'attachment; filename="result.parquet"'},
        )
    return SafeJSONResponse(table_json(table))


def _as_query_error(exc: Any) -> QueryError:
    error = QueryError(str(getattr(exc, "message", exc)))
    error.status = int(getattr(exc, "status", 400))
    return error
