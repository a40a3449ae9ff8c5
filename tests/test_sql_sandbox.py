"""The read-only SQL sandbox (query/sql_sandbox.py): escapes refused and without effect, bombs stopped, one project.

Data arrives through a real collector with API keys on (OTLP/HTTP protobuf), so the parts are the real ones.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from collector.service import Collector
from query import sql_sandbox
from query.sql_sandbox import SqlLimits, SqlRejected, run_select
from store.keys import create_key
from store.layout import LakeLayout
from store.schema import SPAN_SCHEMA
from tests.conftest import start_collector

NOW = 1_790_000_000_000_000_000
BETA_CANARY = "beta-canary-5d1e0c"
OUTSIDE_SECRET = "outside-secret-93ab17"
VARIABLE_SECRET = "python-variable-secret-4c2f"
ALPHA_TRACES = [bytes([0xA1]) * 16, bytes([0xA2]) * 16]
BETA_TRACE = bytes([0xB1]) * 16
ALPHA_INPUT_TOKENS = [10, 20, 30, 40]
ALPHA_SPANS = 6  # per trace: one agent span and two model spans

# A module-level Python object a replacement scan would find: `SELECT * FROM secret_table` must not read it.
secret_table = pa.table({"secret": [VARIABLE_SECRET]})


# --- data through the real collector ------------------------------------------------------------


def _attr(attributes: object, key: str, value: str | int) -> None:
    kv: KeyValue = attributes.add()  # type: ignore[attr-defined]
    if isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.string_value = value
    kv.key = key


def _traces(project_tag: str, spans: list[tuple[bytes, int, str, dict[str, str | int]]]) -> bytes:
    """One request: spans given as (trace id, span number, name, attributes); span 1 of a trace is its root."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    _attr(resource_spans.resource.attributes, "service.name", f"{project_tag}-service")
    scope_spans = resource_spans.scope_spans.add()
    for trace_id, number, name, attributes in spans:
        span = scope_spans.spans.add()
        span.trace_id, span.span_id = trace_id, number.to_bytes(8, "big")
        if number > 1:
            span.parent_span_id = (1).to_bytes(8, "big")
        span.name = name
        span.start_time_unix_nano, span.end_time_unix_nano = NOW + number, NOW + number + 1_000_000
        for key, value in attributes.items():
            _attr(span.attributes, key, value)
    return request.SerializeToString()


def _content_log(trace_id: bytes, text: str) -> bytes:
    """A GenAI user-message log record tied to span 2 of the trace (its content joins in span_content)."""
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.time_unix_nano = NOW + 2
    record.event_name = "gen_ai.user.message"
    record.trace_id, record.span_id = trace_id, (2).to_bytes(8, "big")
    record.body.kvlist_value.values.add(key="content").value.string_value = text
    return request.SerializeToString()


def _model_span(tokens: int) -> dict[str, str | int]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": tokens,
        "gen_ai.usage.output_tokens": 1,
    }


def _alpha_spans() -> bytes:
    spans: list[tuple[bytes, int, str, dict[str, str | int]]] = []
    tokens = iter(ALPHA_INPUT_TOKENS)
    for trace_id in ALPHA_TRACES:
        spans.append((trace_id, 1, "invoke_agent helper", {"gen_ai.operation.name": "invoke_agent"}))
        spans += [(trace_id, n, "chat gpt-4o-mini", _model_span(next(tokens))) for n in (2, 3)]
    return _traces("alpha", spans)


def _beta_spans() -> bytes:
    attributes = {**_model_span(1000), "note": BETA_CANARY}
    return _traces("beta", [(BETA_TRACE, 1, f"agent {BETA_CANARY}", {}), (BETA_TRACE, 2, "chat", attributes)])


def _post(collector: Collector, path: str, key: str, body: bytes) -> None:
    response = httpx.post(
        f"http://127.0.0.1:{collector.http_port}{path}",
        content=body,
        headers={"content-type": "application/x-protobuf", "authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text


@dataclass(frozen=True)
class Env:
    lake: Path
    outside: Path  # a directory outside the lake, holding secret files
    beta_part: Path
    out: Path  # where a COPY TO or EXPORT would write; must never exist

    def sql(self, template: str) -> str:
        return template.format(
            lake=self.lake, beta_part=self.beta_part, out=self.out, outside=self.outside, passwd="/etc/passwd"
        )

    def run(self, sql: str, limits: SqlLimits | None = None) -> pa.Table:
        return run_select(self.lake, "alpha", self.sql(sql), limits or SqlLimits())


def _lake_files(lake: Path) -> dict[str, int]:
    return {str(p): p.lstat().st_size for p in sorted(lake.rglob("*"))}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("sandbox")
    data = root / "data"
    alpha_key, _ = create_key(data / "keys.json", "alpha")
    beta_key, _ = create_key(data / "keys.json", "beta")
    collector = start_collector(data)
    try:
        for _ in range(2):  # at-least-once delivery: alpha's batch arrives twice
            _post(collector, "/v1/traces", alpha_key, _alpha_spans())
            _post(collector, "/v1/logs", alpha_key, _content_log(ALPHA_TRACES[0], "alpha asks"))
        _post(collector, "/v1/traces", beta_key, _beta_spans())
        _post(collector, "/v1/logs", beta_key, _content_log(BETA_TRACE, f"beta asks {BETA_CANARY}"))
        collector.flush()
        lake = collector.settings.lake_dir.resolve()
        outside = root / "outside"
        outside.mkdir()
        (outside / "secret.csv").write_text(f"name,value\n{OUTSIDE_SECRET},1\n")
        (outside / "secret.json").write_text(f'{{"secret": "{OUTSIDE_SECRET}"}}\n')
        with duckdb.connect(str(outside / "secret.duckdb")) as con:
            con.execute(f"CREATE TABLE s AS SELECT '{OUTSIDE_SECRET}' AS secret")
        # A link inside the caller's own partition directory pointing outside: DuckDB >= 1.4 follows symlinks
        # in an allowed directory, so the sandbox must allow none.
        (lake / "spans" / "project=alpha" / "escape-link.csv").symlink_to(outside / "secret.csv")
        beta_part = LakeLayout(lake).parts("spans", "beta")[0].path
        yield Env(lake, outside, beta_part, root / "written-by-sql")
    finally:
        collector.stop()


# --- escapes: each refused with 400, and without effect -------------------------------------------

ESCAPES = [
    # File readers, on files outside the lake, the lake's own absolute paths, and a symlink inside it.
    pytest.param("SELECT * FROM read_csv('{passwd}')", id="read_csv-passwd"),
    pytest.param("SELECT * FROM read_csv_auto('{passwd}')", id="read_csv_auto-passwd"),
    pytest.param("SELECT * FROM read_csv(['{passwd}'])", id="read_csv-list"),
    pytest.param("SELECT * FROM read_csv('{outside}/secret.csv')", id="read_csv-outside"),
    pytest.param("SELECT * FROM read_text('{passwd}')", id="read_text-passwd"),
    pytest.param("SELECT * FROM read_blob('{passwd}')", id="read_blob-passwd"),
    pytest.param("SELECT * FROM read_json('{outside}/secret.json')", id="read_json-outside"),
    pytest.param("SELECT * FROM read_json_auto('{outside}/secret.json')", id="read_json_auto-outside"),
    pytest.param("SELECT * FROM read_parquet('{beta_part}')", id="read_parquet-beta-part"),
    pytest.param("SELECT * FROM parquet_scan('{beta_part}')", id="parquet_scan-beta-part"),
    pytest.param("SELECT * FROM read_parquet('{lake}/spans/*/*/*.parquet')", id="read_parquet-lake-glob"),
    pytest.param(
        "SELECT * FROM read_parquet('{lake}/spans/**/*.parquet', hive_partitioning=true)", id="read_parquet-hive"
    ),
    pytest.param("SELECT * FROM read_parquet('file://{beta_part}')", id="read_parquet-file-url"),
    pytest.param("SELECT * FROM parquet_metadata('{beta_part}')", id="parquet_metadata"),
    pytest.param("SELECT * FROM glob('{lake}/**')", id="glob-lake"),
    pytest.param("SELECT * FROM glob('/etc/*')", id="glob-etc"),
    pytest.param("SELECT * FROM sniff_csv('{passwd}')", id="sniff_csv"),
    pytest.param("SELECT * FROM read_duckdb('{outside}/secret.duckdb')", id="read_duckdb"),
    pytest.param("SELECT * FROM '{passwd}'", id="quoted-path-passwd"),
    pytest.param("SELECT * FROM '{beta_part}'", id="quoted-path-beta-part"),
    pytest.param("SELECT * FROM read_csv('{lake}/spans/project=alpha/escape-link.csv')", id="symlink-in-lake"),
    pytest.param("SELECT * FROM read_text('{lake}/spans/project=alpha/escape-link.csv')", id="symlink-read_text"),
    pytest.param("SELECT * FROM read_csv(’{passwd}’)", id="unicode-quotes"),
    # The network and extensions.
    pytest.param("SELECT * FROM read_parquet('https://example.com/x.parquet')", id="https"),
    pytest.param("SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')", id="http"),
    pytest.param("SELECT * FROM read_parquet('s3://bucket/x.parquet')", id="s3"),
    pytest.param("INSTALL httpfs", id="install"),
    pytest.param("LOAD httpfs", id="load"),
    pytest.param("LOAD '{outside}/evil.duckdb_extension'", id="load-path"),
    # Other databases and writing files.
    pytest.param("ATTACH '{outside}/secret.duckdb' AS s (READ_ONLY)", id="attach"),
    pytest.param("ATTACH ':memory:' AS scratch", id="attach-memory"),
    pytest.param("DETACH memory", id="detach"),
    pytest.param("USE system", id="use"),
    pytest.param("COPY (SELECT * FROM spans) TO '{out}'", id="copy-to"),
    pytest.param("COPY spans FROM '{outside}/secret.csv'", id="copy-from"),
    pytest.param("EXPORT DATABASE '{out}'", id="export-database"),
    pytest.param("CHECKPOINT", id="checkpoint"),
    pytest.param("CREATE SECRET s (TYPE s3, KEY_ID 'x', SECRET 'y')", id="create-secret"),
    # Settings.
    pytest.param("SET enable_external_access = true", id="set-external-access"),
    pytest.param("SET memory_limit = '100GB'", id="set-memory"),
    pytest.param("SET lock_configuration = false", id="set-lock"),
    pytest.param("RESET lock_configuration", id="reset-lock"),
    pytest.param("SET GLOBAL enable_external_access = true", id="set-global"),
    pytest.param("PRAGMA enable_profiling", id="pragma"),
    pytest.param("CALL pragma_version()", id="call"),
    pytest.param("SELECT * FROM enable_logging(storage='file', storage_path='{out}')", id="enable_logging-file"),
    pytest.param("EXPLAIN SELECT * FROM read_csv('{passwd}')", id="explain"),
    # More than one statement, however hidden.
    pytest.param("SELECT 1; DROP VIEW spans", id="two-statements"),
    pytest.param("SELECT 1; SELECT * FROM read_csv('{passwd}')", id="select-then-read"),
    pytest.param("SELECT 1 -- comment\n; COPY spans TO '{out}'", id="comment-hides-second"),
    pytest.param("SELECT 1 /* ; */; COPY spans TO '{out}'", id="block-comment-hides-second"),
    pytest.param("SELECT 1\u200b; COPY spans TO '{out}'", id="zero-width-space"),
    pytest.param("SELECT 1；DROP VIEW spans", id="fullwidth-semicolon"),
    # Writes and DDL, directly or inside a SELECT.
    pytest.param("WITH x AS (SELECT 1) SELECT * FROM read_csv('{passwd}'), x", id="cte-read"),
    pytest.param("WITH x AS (DELETE FROM spans RETURNING *) SELECT * FROM x", id="writable-cte"),
    pytest.param("CREATE TABLE t AS SELECT * FROM spans", id="ctas"),
    pytest.param("INSERT INTO spans_raw SELECT * FROM spans_raw", id="insert"),
    pytest.param("UPDATE spans SET name = 'x'", id="update"),
    pytest.param("DELETE FROM spans", id="delete"),
    pytest.param("DROP VIEW spans", id="drop"),
    pytest.param("CREATE MACRO leak(x) AS x", id="create-macro"),
    pytest.param("SELECT * FROM query('SELECT * FROM read_csv(''{passwd}'')')", id="query-read"),
    pytest.param("SELECT * FROM query('COPY (SELECT 1) TO ''{out}''')", id="query-copy"),
    pytest.param("SELECT * FROM query_table('{passwd}')", id="query_table-path"),
    pytest.param("SELECT * FROM query_table('{beta_part}')", id="query_table-beta-part"),
    # The Python client's replacement scans, functions only the CLI has, and extensions' catalogs.
    pytest.param("SELECT * FROM secret_table", id="python-replacement-scan"),
    pytest.param("SELECT getenv('HOME')", id="getenv"),
    pytest.param("SELECT * FROM duckdb_extensions()", id="duckdb_extensions"),
]

_LEAKS = (OUTSIDE_SECRET, VARIABLE_SECRET, BETA_CANARY, "root:x:0")
# An absolute path anywhere in a message (not the `//` of a URL).
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.])/[\w.]")


def test_there_are_at_least_40_escape_attempts() -> None:
    assert len(ESCAPES) >= 40


@pytest.mark.parametrize("template", ESCAPES)
def test_escape_is_refused_without_effect(env: Env, template: str) -> None:
    before = _lake_files(env.lake)
    with pytest.raises(SqlRejected) as info:
        env.run(template)
    rejected = info.value
    assert rejected.status == 400, rejected.message
    assert "\n" not in rejected.message and "Traceback" not in rejected.message
    assert not _ABSOLUTE_PATH.search(rejected.message), rejected.message
    assert not any(leak in rejected.message for leak in _LEAKS), rejected.message
    assert not env.out.exists(), "a refused statement wrote a file"
    assert _lake_files(env.lake) == before, "a refused statement changed the lake"


def test_permission_errors_say_refused_and_name_no_file(env: Env) -> None:
    with pytest.raises(SqlRejected) as info:
        env.run("SELECT * FROM read_csv('{outside}/secret.csv')")
    assert info.value.message.startswith("query refused")
    assert str(env.outside) not in info.value.message


def test_a_local_python_variable_is_not_a_table(env: Env) -> None:
    local_secret = pa.table({"secret": [VARIABLE_SECRET]})
    assert local_secret.num_rows == 1  # in the caller's frame, where a replacement scan would look
    with pytest.raises(SqlRejected) as info:
        env.run("SELECT * FROM local_secret")
    assert info.value.status == 400 and VARIABLE_SECRET not in info.value.message


def test_harmless_introspection_returns_safe_values(env: Env) -> None:
    """These parse as SELECTs and run; what they show must not help an attacker."""
    settings = env.run(
        """SELECT current_setting('temp_directory') AS temp_dir,
                  current_setting('enable_external_access') AS external,
                  current_setting('lock_configuration') AS locked"""
    ).to_pylist()
    assert settings == [{"temp_dir": "", "external": False, "locked": True}]
    allowed = env.run("SELECT name, value FROM duckdb_settings() WHERE name LIKE 'allowed_%' ORDER BY name")
    assert allowed.to_pylist() == [
        {"name": "allowed_configs", "value": "[]"},
        {"name": "allowed_directories", "value": "[]"},
        {"name": "allowed_paths", "value": "[]"},
    ]
    # No setting and no view definition names the lake or the server's working directory. (secret_directory
    # does show DuckDB's default under $HOME; persistent secrets are off, so nothing is read from there.)
    text = str(env.run("SELECT value FROM duckdb_settings()").to_pylist())
    text += str(env.run("SELECT sql FROM duckdb_views()").to_pylist())
    assert str(env.lake) not in text and os.getcwd() not in text
    # Persistent secrets are off, so the secret functions find nothing instead of opening ~/.duckdb.
    assert env.run("SELECT * FROM duckdb_secrets()").num_rows == 0
    assert env.run("SELECT * FROM which_secret('s3://bucket/x', 's3')").num_rows == 0


def test_read_only_transaction_stops_a_writable_cte() -> None:
    """The sandbox has no base table to write to; this layer is for the day it has one. A writable CTE
    parses as a SELECT, so only the read-only transaction stops it."""
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE t AS SELECT 1 AS a")
        (statement,) = con.extract_statements("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x")
        assert statement.type == duckdb.StatementType.SELECT
        with pytest.raises(SqlRejected) as info:
            sql_sandbox._run(con, statement, SqlLimits())
        assert info.value.status == 400 and "read-only" in info.value.message
        con.execute("ROLLBACK")
        assert con.execute("SELECT count(*) FROM t").fetchall() == [(1,)]
    finally:
        con.close()


def test_settings_not_in_force_refuse_to_run(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The read-back of the settings is a layer of its own: without the lock nothing runs."""
    monkeypatch.setattr(sql_sandbox, "_LOCK_DOWN", sql_sandbox._LOCK_DOWN[:-1])
    with pytest.raises(RuntimeError, match="lock_configuration"):
        env.run("SELECT 1")


def test_project_name_is_validated(env: Env) -> None:
    for bad in ("../beta", "alpha/../beta", "", "a'b"):
        with pytest.raises(ValueError):
            run_select(env.lake, bad, "SELECT 1")


# --- bombs and limits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("SELECT count(*) FROM range(1000000000000)", id="aggregate"),
        pytest.param("SELECT * FROM range(1000000000000) WHERE range < 0", id="stream-no-rows"),
        pytest.param("SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b", id="cross-join"),
    ],
)
def test_cpu_bomb_times_out(env: Env, sql: str) -> None:
    started = time.monotonic()
    with pytest.raises(SqlRejected) as info:
        env.run(sql, SqlLimits(timeout_seconds=1))
    assert info.value.status == 408, info.value.message
    assert time.monotonic() - started < 4


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("SELECT list(range) FROM range(1000000000)", id="list"),
        pytest.param("SELECT string_agg(range::VARCHAR, ',') FROM range(1000000000)", id="string_agg"),
        # A sort this big would spill to disk; with no temp directory it stops at the memory limit instead.
        pytest.param("SELECT * FROM range(1000000000) ORDER BY range DESC", id="sort"),
    ],
)
def test_memory_bomb_hits_the_memory_limit(env: Env, sql: str) -> None:
    with pytest.raises(SqlRejected) as info:
        env.run(sql, SqlLimits(memory_limit="100MB", timeout_seconds=10))
    assert info.value.status == 413, info.value.message
    assert "memory" in info.value.message


def test_row_cap(env: Env) -> None:
    limits = SqlLimits(max_rows=5)
    assert env.run("SELECT * FROM range(5)", limits).num_rows == 5
    for sql in ("SELECT * FROM spans", "SELECT * FROM range(6)"):
        with pytest.raises(SqlRejected) as info:
            env.run(sql, limits)
        assert info.value.status == 413 and "LIMIT" in info.value.message
    # Streamed: an endless result is cut at the cap, not materialised first.
    started = time.monotonic()
    with pytest.raises(SqlRejected) as info:
        env.run("SELECT * FROM range(1000000000000)", SqlLimits(max_rows=5, timeout_seconds=5))
    assert info.value.status == 413 and time.monotonic() - started < 2


def test_bad_sql_is_400_with_one_line(env: Env) -> None:
    for sql, expected in (
        ("SELEC 1", "could not parse"),
        ("", "got 0 statements"),
        ("SELECT no_such_column FROM spans", "no_such_column"),
        ("SELECT * FROM no_such_table", "no_such_table"),
    ):
        with pytest.raises(SqlRejected) as info:
            env.run(sql)
        assert info.value.status == 400 and expected in info.value.message and "\n" not in info.value.message


# --- one project, correct numbers -------------------------------------------------------------------


def test_queries_see_only_the_callers_project(env: Env) -> None:
    beta_trace = BETA_TRACE.hex()
    for view in ("spans", "spans_raw", "events", "events_raw", "span_content", "spans_with_content"):
        rows = env.run(f"SELECT * FROM {view}")
        text = str(rows.to_pylist())
        assert BETA_CANARY not in text and beta_trace not in text, view
        assert set(rows["project"].to_pylist()) == {"alpha"}, view
    # The canary is really stored, so its absence above means something.
    beta = str(run_select(env.lake, "beta", "SELECT * FROM spans_with_content").to_pylist())
    assert BETA_CANARY in beta and beta_trace in beta


def test_counts_sums_and_dedup(env: Env) -> None:
    row = env.run(
        """SELECT (SELECT count(*) FROM spans) AS spans, (SELECT count(*) FROM spans_raw) AS spans_raw,
                  (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM events_raw) AS events_raw,
                  (SELECT sum(input_tokens) FROM spans) AS input_tokens,
                  (SELECT count(DISTINCT trace_id) FROM spans) AS traces"""
    ).to_pylist()
    assert row == [
        {
            "spans": ALPHA_SPANS,
            "spans_raw": 2 * ALPHA_SPANS,  # the batch arrived twice; the views count it once
            "events": 1,
            "events_raw": 2,
            "input_tokens": sum(ALPHA_INPUT_TOKENS),
            "traces": len(ALPHA_TRACES),
        }
    ]
    content = env.run("SELECT input_messages FROM spans_with_content WHERE input_messages IS NOT NULL")
    assert content.num_rows == 1 and "alpha asks" in content["input_messages"][0].as_py()


def test_result_keeps_arrow_types(env: Env) -> None:
    table = env.run("SELECT * FROM spans LIMIT 1")
    assert table.schema.field("start_time_unix_nano").type == pa.int64()
    assert table.column_names == SPAN_SCHEMA.names


def test_empty_project_has_empty_typed_views(env: Env) -> None:
    for view in ("spans", "spans_raw", "events", "events_raw", "span_content", "spans_with_content"):
        assert run_select(env.lake, "gamma", f"SELECT * FROM {view}").num_rows == 0, view
    assert run_select(env.lake, "gamma", "SELECT * FROM spans").column_names == SPAN_SCHEMA.names


def test_a_foreign_part_in_the_callers_directory_shows_nothing(env: Env, tmp_path: Path) -> None:
    """The views also filter on the project column: a beta part that somehow sits in alpha's partition
    (a bad copy, a symlinked directory) adds no row to alpha's answers."""
    lake = tmp_path / "lake"
    partition = lake / "spans" / "project=alpha" / "date=2026-01-01"
    partition.mkdir(parents=True)
    (partition / "part-1-w0-x.parquet").write_bytes(env.beta_part.read_bytes())
    assert run_select(lake, "alpha", "SELECT count(*) AS n FROM spans_raw")["n"].to_pylist() == [0]
