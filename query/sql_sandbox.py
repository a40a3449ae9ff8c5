"""The read-only SQL sandbox: runs one untrusted SELECT over one project's spans and events, for `POST /sql`.

The route only parses the request and maps `SqlRejected.status` to its HTTP answer; everything that keeps the
SQL in its box is here, in layers (docs/design.md, Query API), because DuckDB has had holes in each one alone:
1. Parse, not match: DuckDB's own parser must find exactly one statement, of type SELECT.
2. Only the caller's project exists: a fresh in-memory DuckDB per call is handed that project's part files,
   listed by the server (store/layout.py) and opened by pyarrow datasets, so DuckDB needs no file access and no
   view text holds a path. The views are those of store/views.py, which also filter on the project.
3. Settings: no external access (files, URLs, extensions), no allowed paths or directories, no temp directory,
   no extension install or autoload, no Python replacement scans, a memory limit and a thread count, then the
   configuration locked. The settings are read back before any untrusted SQL runs; a mismatch is a server error.
4. A read-only transaction, so a writable CTE or anything else that parses as a SELECT cannot change state.
5. Limits: a statement timeout (the connection is interrupted), at most max_rows + 1 rows ever fetched.
6. Errors become one line without server paths; permission errors say only that the query was refused.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from store.keys import validate_project
from store.layout import LakeLayout
from store.schema import EVENT_SCHEMA, SPAN_SCHEMA
from store.views import create_views_over

log = logging.getLogger(__name__)

_SOURCES = {"spans": ("_lake_spans", SPAN_SCHEMA), "events": ("_lake_events", EVENT_SCHEMA)}
# Batches no bigger than this keep the memory held beyond the row cap small whatever max_rows is.
_MAX_BATCH_ROWS = 65_536
# An interrupt that lands between two steps of a streamed fetch is lost, so the watchdog repeats it.
_INTERRUPT_REPEAT_SECONDS = 0.05
# An absolute path not inside a URL (`https://host/x` stays): server paths never reach the caller.
_PATH_RE = re.compile(r"(?<![\w:/.])/[^\s\"'`]+")
_MAX_MESSAGE_CHARS = 300

# Given when the database starts. temp_directory must precede enable_external_access=false (DuckDB refuses to
# change it afterwards), and nothing can then spill to disk: a big query hits the memory limit instead.
_STARTUP_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "temp_directory": "",
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    # The Python client otherwise resolves an unknown table name to a variable in the caller's frames.
    "python_enable_replacements": False,
    "python_scan_all_frames": False,
    # No secret store is read from disk: duckdb_secrets() lists nothing instead of opening ~/.duckdb.
    "allow_persistent_secrets": False,
}
# Set once the project is loaded. Not given at start-up: an in-memory database started with external access
# off adds `<cwd>/:memory:` and its WAL names to allowed_paths (DuckDB 2.0), which would make those files
# readable; set afterwards, the lists stay empty. lock_configuration is last so nothing after it changes a setting.
_LOCK_DOWN = (
    "SET allowed_paths = []",
    "SET allowed_directories = []",
    "SET enable_external_access = false",
    "SET lock_configuration = true",
)
_REQUIRED_SETTINGS = {
    "enable_external_access": "false",
    "allowed_paths": "[]",
    "allowed_directories": "[]",
    "temp_directory": "",
    "autoinstall_known_extensions": "false",
    "autoload_known_extensions": "false",
    "allow_community_extensions": "false",
    "allow_unsigned_extensions": "false",
    "python_enable_replacements": "false",
    "allow_persistent_secrets": "false",
    "lock_configuration": "true",
}


@dataclass(frozen=True)
class SqlLimits:
    max_rows: int = 10_000
    timeout_seconds: float = 10.0
    memory_limit: str = "1GB"
    threads: int = 2

    def __post_init__(self) -> None:
        if self.max_rows < 1:
            raise ValueError(f"SqlLimits.max_rows must be at least 1, got {self.max_rows}")
        if self.timeout_seconds <= 0:
            raise ValueError(f"SqlLimits.timeout_seconds must be positive, got {self.timeout_seconds}")
        if self.threads < 1:
            raise ValueError(f"SqlLimits.threads must be at least 1, got {self.threads}")


class SqlRejected(Exception):
    """The query was not run, or was stopped; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def run_select(lake_root: Path, project: str, sql: str, limits: SqlLimits = SqlLimits()) -> pa.Table:
    """Run one SELECT for one project in a fresh locked-down DuckDB; its rows, or SqlRejected."""
    validate_project(project)
    con = _open(LakeLayout(lake_root.resolve()), project, limits)
    try:
        statement = _single_select(con, sql)
        return _run(con, statement, limits)
    finally:
        con.close()


# --- layer 1: one SELECT, parsed ------------------------------------------------------------------


def _single_select(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.Statement:
    """The one statement of the text if it is a SELECT. Parsed on the sandbox's own connection, not on the
    module-level default one, which is shared between threads and has none of the sandbox's settings."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlRejected(400, f"could not parse the SQL: {_one_line(exc)}") from None
    if len(statements) != 1:
        raise SqlRejected(400, f"expected exactly one SELECT statement, got {len(statements)} statements")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise SqlRejected(400, f"only a single SELECT is allowed, and this is a {kind.name} statement")
    return statements[0]


# --- layers 2 and 3: a database holding one project, locked down ------------------------------------


def _open(layout: LakeLayout, project: str, limits: SqlLimits) -> duckdb.DuckDBPyConnection:
    config = {**_STARTUP_CONFIG, "memory_limit": limits.memory_limit, "threads": limits.threads}
    con = duckdb.connect(":memory:", config=config)
    try:
        _load_project(con, layout, project)
        for statement in _LOCK_DOWN:
            con.execute(statement)
        _check_settings(con)
    except BaseException:
        con.close()
        raise
    return con


def _load_project(con: duckdb.DuckDBPyConnection, layout: LakeLayout, project: str) -> None:
    """Register the project's parts as datasets (pyarrow opens the files, DuckDB never does) and the views."""
    for table, (name, schema) in _SOURCES.items():
        files = [str(part.path) for part in layout.parts(table, project)]
        # The explicit schema reads older parts with fewer columns as NULLs, and gives an empty project
        # typed, empty views.
        con.register(name, ds.dataset(files, format="parquet", schema=schema))
    create_views_over(con, _SOURCES["spans"][0], _SOURCES["events"][0], project)


def _check_settings(con: duckdb.DuckDBPyConnection) -> None:
    """Refuse to run anything if a layer is not in force (a DuckDB upgrade renaming a setting, say)."""
    names = list(_REQUIRED_SETTINGS)
    rows = con.execute("SELECT name, value FROM duckdb_settings() WHERE list_contains(?, name)", [names]).fetchall()
    actual = {str(name): str(value) for name, value in rows}
    wrong = {name: actual.get(name) for name, value in _REQUIRED_SETTINGS.items() if actual.get(name) != value}
    if wrong:
        log.error("SQL sandbox settings not in force: %s", wrong)
        raise RuntimeError(f"SQL sandbox settings not in force: {sorted(wrong)}")


# --- layers 4 and 5: read-only, bounded in time and rows -------------------------------------------


class _Watchdog:
    """Interrupts the connection once the deadline passes, then again every few ms until the query is over."""

    def __init__(self, con: duckdb.DuckDBPyConnection, seconds: float) -> None:
        self._con = con
        self._done = threading.Event()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self.fired = False

    def _fire(self) -> None:
        self.fired = True
        while not self._done.is_set():
            self._con.interrupt()
            self._done.wait(_INTERRUPT_REPEAT_SECONDS)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._timer.cancel()
        self._timer.join()  # the connection must not be interrupted once the caller goes on to close it


def _run(con: duckdb.DuckDBPyConnection, statement: duckdb.Statement, limits: SqlLimits) -> pa.Table:
    con.execute("BEGIN TRANSACTION READ ONLY")
    watchdog = _Watchdog(con, limits.timeout_seconds)
    try:
        with watchdog:
            return _fetch_capped(con, statement, limits.max_rows)
    except SqlRejected:
        raise
    except duckdb.Error as exc:
        # The caller gets one sanitised line; the full error stays in the server's log.
        log.info("sandboxed SQL stopped: %s: %s", type(exc).__name__, exc)
        raise _rejection(exc, timed_out=watchdog.fired, limits=limits) from None


def _fetch_capped(con: duckdb.DuckDBPyConnection, statement: duckdb.Statement, max_rows: int) -> pa.Table:
    """Stream the result and stop at max_rows + 1 rows, so a huge result is never materialised."""
    reader = con.sql(statement).to_arrow_reader(min(max_rows + 1, _MAX_BATCH_ROWS))
    try:
        batches: list[pa.RecordBatch] = []
        rows = 0
        for batch in reader:
            rows += batch.num_rows
            if rows > max_rows:
                raise SqlRejected(
                    413, f"the result has more than {max_rows} rows: add a LIMIT or aggregate (GROUP BY, count, sum)"
                )
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=reader.schema)
    finally:
        reader.close()


# --- layer 6: what the caller is told ----------------------------------------------------------------


def _rejection(exc: duckdb.Error, *, timed_out: bool, limits: SqlLimits) -> SqlRejected:
    # Once the deadline has passed, whatever error the interrupted query ends with is the timeout.
    if isinstance(exc, duckdb.InterruptException) or timed_out:
        return SqlRejected(408, f"the query ran longer than {limits.timeout_seconds:g} s and was stopped")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return SqlRejected(
            413, f"the query needs more than {limits.memory_limit} of memory: add a LIMIT, filter or aggregate"
        )
    if isinstance(exc, duckdb.PermissionException):
        # DuckDB's message names the file or directory it would have opened (server paths included).
        return SqlRejected(400, "query refused: it uses a function, file or setting the SQL sandbox does not allow")
    return SqlRejected(400, f"query failed: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    """The first line of DuckDB's message (its error class and reason), server paths removed."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = _PATH_RE.sub("<path>", text)
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text
