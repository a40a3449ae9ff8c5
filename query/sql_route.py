"""POST /sql: runs the caller's SELECT in the sandbox (query/sql_sandbox.py) and encodes the result."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import threading
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


def _as_text_type(kind: pa.DataType) -> pa.DataType:
    """The type with every date, time and timestamp inside it made a string (Arrow formats those itself)."""
    if pa.types.is_temporal(kind) and not pa.types.is_interval(kind):
        return pa.string()
    if pa.types.is_list(kind):
        return pa.list_(_as_text_type(kind.value_type))
    if pa.types.is_large_list(kind):
        return pa.large_list(_as_text_type(kind.value_type))
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(_as_text_type(kind.value_type), kind.list_size)
    if pa.types.is_struct(kind):
        return pa.struct([kind.field(i).with_type(_as_text_type(kind.field(i).type)) for i in range(kind.num_fields)])
    if pa.types.is_map(kind):
        return pa.map_(_as_text_type(kind.key_type), _as_text_type(kind.item_type))
    return kind


def _column_values(column: pa.ChunkedArray, name: str) -> list[Any]:
    """Python values of a column. A date or timestamp Python cannot hold (year 0 or past 9999, DuckDB's
    'infinity') arrives as Arrow's text for it, so a valid SELECT answers instead of failing in conversion."""
    try:
        return column.to_pylist()
    except (OverflowError, ValueError):
        pass
    try:
        return column.cast(_as_text_type(column.type)).to_pylist()
    except (OverflowError, ValueError, pa.ArrowException):
        raise QueryError(
            f"column {name!r} holds a value JSON rows cannot carry; ask for format arrow or parquet, "
            "or cast the column to VARCHAR"
        ) from None


def table_json(table: pa.Table) -> dict[str, Any]:
    columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
    values = [_column_values(table.column(i), f.name) for i, f in enumerate(table.schema)]
    rows = [[_jsonable(v) for v in row] for row in zip(*values, strict=True)] if values else []
    return {"columns": columns, "rows": rows, "row_count": table.num_rows}


# Each sandboxed query may use its whole memory limit (1 GB): two at once fit the 2-core, small-memory
# machines we target; a third caller is told to retry instead of pushing the server into swap.
_CONCURRENT = threading.BoundedSemaphore(2)
_QUEUE_SECONDS = 5.0


def run(settings: Settings, project: str, sql: str, fmt: str) -> Response:
    from query.app import SafeJSONResponse
    from query.sql_sandbox import SqlLimits, SqlRejected, run_select

    if not _CONCURRENT.acquire(timeout=_QUEUE_SECONDS):
        busy = QueryError("two SQL queries are already running; retry in a few seconds")
        busy.status = 429
        raise busy
    try:
        limits = SqlLimits(
            max_rows=settings.sql_max_rows,
            timeout_seconds=settings.sql_timeout_seconds,
            memory_limit=f"{settings.sql_memory_limit_mb}MB",
        )
        table = run_select(settings.lake_dir, project, sql, limits)
    except SqlRejected as exc:
        raise _as_query_error(exc) from None
    finally:
        _CONCURRENT.release()
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
