"""The query side's trace index: per-trace summaries and usage rows kept current with the lake.

Each (project, date) partition of spans is summarised once per state of its part files (store/derived.py
names the state by a fingerprint); the summaries are published as derived Parquet (so a restarted API or
another replica reuses them) and loaded into an in-memory DuckDB table, merged per trace. Every read calls
`refresh(project)` first, which lists the partitions (cheap), rebuilds only partitions whose parts changed,
and so includes a late span on the next read. Usage rows stay on disk and are scanned by cost queries.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from query.detect.budgets import detect_scopes
from query.detect.config import DetectorConfig, DetectorConfigs
from query.detect.finding import FINDING_SCHEMA
from query.detect.registry import DETECTORS_VERSION
from query.detect.signals import DETECT_COLUMNS, DETECT_SELECT
from query.lineage import EXACT_COST_SUM, TOKEN_COLUMNS
from query.part_changes import new_content
from query.part_traces import PartTraces
from query.summaries import LIGHT_COLUMNS, TRACE_ROW_SCHEMA, USAGE_SCHEMA, summarise
from store.derived import DerivedStore, fingerprint
from store.layout import Part
from store.trace_reader import TraceReader

log = logging.getLogger(__name__)

# Bump when summaries change shape or meaning (detectors have their own version): every partition's derived
# files are then rebuilt.
DERIVED_VERSION = f"findings-4/detectors-{DETECTORS_VERSION}"
_PRINTS_KEPT = 10_000  # fingerprints remembered (one per partition state; cleared whole when full)
_READ_RETRIES = 3  # compaction may retire a part between listing and reading it

_SQL_TYPES = {
    pl.String: "VARCHAR",
    pl.Int64: "BIGINT",
    pl.Float64: "DOUBLE",
    pl.Boolean: "BOOLEAN",
}


def _sql_type(dtype: object) -> str:
    if isinstance(dtype, pl.List):
        return "VARCHAR[]"
    for polars_type, sql in _SQL_TYPES.items():
        if dtype == polars_type:
            return sql
    raise TypeError(f"no SQL type for {dtype}")


_ROW_COLUMNS = ", ".join(f'"{c}" {_sql_type(t)}' for c, t in TRACE_ROW_SCHEMA.items())
_FINDING_COLUMNS = ", ".join(f'"{c}" {_sql_type(t)}' for c, t in FINDING_SCHEMA.items())
_FINDING_NAMES = ", ".join(f'"{c}"' for c in FINDING_SCHEMA)
_USAGE_COLUMNS = ", ".join(f'"{c}" {_sql_type(t)}' for c, t in USAGE_SCHEMA.items())
_USAGE_NAMES = ", ".join(f'"{c}"' for c in USAGE_SCHEMA)
# A pending partition's usage file without the rows of traces summarised since (params: the files).
_STALE_FILTERED_USAGE = f"""SELECT {_USAGE_NAMES} FROM read_parquet(?, hive_partitioning=false, filename=true) u
    WHERE NOT EXISTS (SELECT 1 FROM usage_stale s WHERE s.base = u.filename AND s.trace_id = u.trace_id)"""
# Derived files may lag memory by this long (a restart or another replica then re-summarises at most this
# much), or by this many usage rows held in memory (about 330 bytes each in Arrow: 30 MB).
PUBLISH_EVERY_SECONDS = 30.0
PUBLISH_AT_DELTA_ROWS = 100_000
_TRACES_ARROW = pl.DataFrame(schema=TRACE_ROW_SCHEMA).to_arrow().schema
_FINDINGS_ARROW = pl.DataFrame(schema=FINDING_SCHEMA).to_arrow().schema
_LIST_COLUMNS = ("services", "models", "providers", "agents", "tools", "span_types")
_LIST_MERGES = ", ".join(f"list_sort(list_distinct(flatten(list({c})))) AS {c}" for c in _LIST_COLUMNS)

# One row per trace, merged over its date partitions.
_MERGE_SELECT = f"""
SELECT project, trace_id,
       min(start_ns) AS start_ns, max(end_ns) AS end_ns,
       (max(end_ns) - min(start_ns)) AS duration_ns,
       coalesce(arg_min(root_span_id, start_ns) FILTER (WHERE has_root), arg_min(root_span_id, start_ns))
           AS root_span_id,
       coalesce(arg_min(root_name, start_ns) FILTER (WHERE has_root), arg_min(root_name, start_ns)) AS root_name,
       bool_or(has_root) AS has_root,
       coalesce(arg_min(service_name, start_ns) FILTER (WHERE has_root), arg_min(service_name, start_ns))
           AS service_name,
       sum(span_count)::BIGINT AS span_count, sum(llm_calls)::BIGINT AS llm_calls,
       sum(tool_calls)::BIGINT AS tool_calls, sum(error_count)::BIGINT AS error_count,
       arg_min(user_id, start_ns) FILTER (WHERE user_id IS NOT NULL) AS user_id,
       arg_min(session_id, start_ns) FILTER (WHERE session_id IS NOT NULL) AS session_id,
       {_LIST_MERGES},
       {", ".join(f"sum({c})::BIGINT AS {c}" for c in TOKEN_COLUMNS)},
       {EXACT_COST_SUM} AS cost_usd,
       sum(counted_spans)::BIGINT AS counted_spans, sum(unknown_cost_spans)::BIGINT AS unknown_cost_spans,
       list_sort(list(date)) AS dates,
       list_sort(list_distinct(flatten(list(flags)))) AS flags,
       sum(finding_count)::BIGINT AS finding_count
FROM trace_rows"""


# _MERGE_SELECT over a single row: the same values (costs rounded as the exact sum rounds them).
_SINGLE_ROW_MERGE = ", ".join(
    "TRY_CAST(cost_usd AS DECIMAL(38, 12))::DOUBLE AS cost_usd"
    if c == "cost_usd"
    else "end_ns - start_ns AS duration_ns, end_ns"
    if c == "end_ns"
    else f'"{c}"'
    for c in TRACE_ROW_SCHEMA
)


def _remerge_touched(con: duckdb.DuckDBPyConnection, project: str) -> None:
    """Rebuild the merged rows of the traces listed in the temp table `touched` from their partition rows."""
    con.execute("DELETE FROM traces WHERE project = ? AND trace_id IN (SELECT trace_id FROM touched)", [project])
    con.execute(
        f"""INSERT INTO traces {_MERGE_SELECT}
            WHERE project = ? AND trace_id IN (SELECT DISTINCT trace_id FROM touched)
            GROUP BY project, trace_id""",
        [project],
    )


@dataclass(slots=True)
class _DateState:
    """What the in-memory tables hold for one (project, date) partition, and how far its files lag."""

    print_: str  # fingerprint of `parts` under `version`
    version: str  # derived version and detector config digest the rows were computed under
    parts: frozenset[str]  # names of the part files whose spans the rows reflect
    usage_path: Path  # the partition's usage file (the base that usage_delta amends while pending)
    published_print: str  # fingerprint the derived files on disk are named by
    published_at: float = field(default_factory=time.monotonic)
    pending: bool = False  # memory is ahead of the files
    delta_rows: int = 0  # usage rows held in memory for this partition
    sources: dict[str, frozenset[str] | None] = field(default_factory=dict)  # part -> parts it merged (cache)


def _newest_copies(spans: pl.DataFrame) -> pl.DataFrame:
    """One row per span, the copy received last (a resent span is stored again). Copies are rare, so they are
    looked for first: DuckDB's QUALIFY row_number() over the read kept every wide row in a window and cost
    ~1 us a span on the ingest benchmark's spans with the signal columns, when there was nothing to drop."""
    if not spans.select(pl.struct("trace_id", "span_id").is_duplicated().any()).item():
        return spans
    return spans.sort("received_at_unix_nano", descending=True).unique(["trace_id", "span_id"], keep="first")


class TraceIndex:
    """Thread-safe; one per API process. Reads use `cursor()`; `refresh` serialises rebuilds."""

    def __init__(self, lake_root: Path, threads: int = 2, configs: DetectorConfigs | None = None) -> None:
        self.lake_root = lake_root
        self.derived = DerivedStore(lake_root)
        self.configs = configs or DetectorConfigs(None)
        # The metadata cache keeps part footers parsed between lookups (24 -> 18 ms for a trace over 3 parts).
        self.db = duckdb.connect(config={"threads": threads})
        self.db.execute("SET parquet_metadata_cache = true")  # needs the (built-in) parquet extension loaded
        self.trace_reader = TraceReader(self.db)
        self.db.execute(f"CREATE TABLE trace_rows (project VARCHAR, date VARCHAR, {_ROW_COLUMNS})")
        self.db.execute(f"CREATE TABLE traces AS {_MERGE_SELECT} WHERE false GROUP BY project, trace_id")
        # Trace-by-id looks a trace up among a million summaries: an index turns a 30 ms scan into a probe.
        self.db.execute("CREATE INDEX traces_by_id ON traces (trace_id)")
        self.db.execute("CREATE INDEX trace_rows_by_id ON trace_rows (trace_id)")
        # Findings of one trace (per date partition), and of budgets spanning traces (session, user, project).
        self.db.execute(f"CREATE TABLE trace_findings (project VARCHAR, date VARCHAR, {_FINDING_COLUMNS})")
        self.db.execute("CREATE INDEX trace_findings_by_id ON trace_findings (trace_id)")
        self.db.execute(f"CREATE TABLE scope_findings (project VARCHAR, {_FINDING_COLUMNS})")
        # Usage rows of traces summarised since their partition's usage file was written (see usage_source).
        self.db.execute(f"CREATE TABLE usage_delta (base VARCHAR, {_USAGE_COLUMNS})")
        self.db.execute("CREATE TABLE usage_stale (base VARCHAR, trace_id VARCHAR)")
        self.db.execute(
            f"""CREATE VIEW findings AS SELECT project, {_FINDING_NAMES} FROM trace_findings
                UNION ALL SELECT project, {_FINDING_NAMES} FROM scope_findings"""
        )
        self._states: dict[str, dict[str, _DateState]] = {}  # project -> date -> what the tables reflect
        # project -> the scopes its cross-trace budget findings were computed for (empty: none configured)
        self._scoped: dict[str, frozenset[str]] = {}
        # The span parts the latest refresh listed: every read refreshes first, so this listing is at least as
        # new as the reader's own, and reading it saves listing the lake a second time (2.5 ms at 10M spans).
        self._listing: dict[str, dict[str, list[Part]]] = {}
        self._prints: dict[tuple[str, tuple[str, ...]], str] = {}  # (version, part names) -> fingerprint
        self.part_traces = PartTraces()  # which parts hold a trace seen before (read only those for it)
        self._lock = threading.Lock()
        self.last_refresh_seconds = 0.0

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.db.cursor()

    def rows(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        """A query's rows as dicts, on a cursor of its own (safe from any thread)."""
        con = self.db.cursor()
        try:
            result = con.execute(sql, params)
            names = [d[0] for d in result.description or []]
            return [dict(zip(names, row, strict=True)) for row in result.fetchall()]
        finally:
            con.close()

    def rows_table(self, sql: str, params: list[Any]) -> pa.Table:
        """A query's result as Arrow, on a cursor of its own."""
        con = self.db.cursor()
        try:
            return con.sql(sql, params=params).to_arrow_table()
        finally:
            con.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own in one transaction: committed when the block ends, rolled back if it raises."""
        con = self.db.cursor()
        try:
            con.execute("BEGIN")
            yield con
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    # --- keeping current --------------------------------------------------------------------------

    def refresh(self, project: str) -> None:
        with self._lock:
            began = time.perf_counter()
            config = self.configs.get(project)
            version = f"{DERIVED_VERSION}/{config.digest}"
            by_date = self.derived.spans_by_date(project)
            self._listing[project] = by_date
            self.part_traces.keep_only(project, {part.path for parts in by_date.values() for part in parts})
            states = self._states.setdefault(project, {})
            changed = False
            for date in sorted(set(states) - set(by_date)):  # dropped by retention
                gone = states.pop(date)
                self._replace(project, date, None, None)
                self._drop_delta(gone)
                for kind in ("traces", "usage", "findings"):
                    self.derived.drop(kind, project, date)
                changed = True
            for date, parts in sorted(by_date.items()):
                state = states.get(date)
                # Parts are immutable and uniquely named: the same names need no stat of every part again.
                key = (version, tuple(p.path.name for p in parts))
                print_ = self._prints.get(key) or fingerprint(parts, version)
                if len(self._prints) > _PRINTS_KEPT:
                    self._prints.clear()
                self._prints[key] = print_
                if state is not None and state.version == version:
                    try:
                        if state.print_ == print_:
                            self._publish_if_due(project, date, state)
                            continue
                        added = new_content(state.parts, parts, state.sources)
                        if added is not None:
                            changed = self._increment(project, date, state, parts, added, print_, config) or changed
                            self._publish_if_due(project, date, state)
                            continue
                    except (duckdb.IOException, FileNotFoundError) as exc:
                        # Compaction retired a part since the listing, or the derived files went (another
                        # replica replaced them, someone deleted them): the whole derive below starts afresh.
                        log.info("keeping %s/%s current failed (%s); deriving the partition whole", project, date, exc)
                rows, findings, fresh = self._derive(project, date, parts, print_, config, version)
                self._replace(project, date, rows, findings)
                states[date] = fresh
                self._drop_delta(state)  # after the switch: a reader sees the old state whole or the new one
                changed = True
            if changed or project not in self._scoped:
                self._scope_budgets(project, config)
            self.last_refresh_seconds = time.perf_counter() - began

    def publish(self, project: str) -> None:
        """Write the derived files of every partition whose files lag memory (at shutdown, so a restart
        reuses them instead of summarising again)."""
        with self._lock:
            for date, state in sorted(self._states.get(project, {}).items()):
                self._publish_if_due(project, date, state, force=True)

    def projects(self) -> list[str]:
        return sorted(self._states)

    # A partition's summaries change by increments: a part from the writer adds spans to some traces, and only
    # those traces are summarised again. Before, every new part re-derived the whole day (1.5-3 s per part at
    # 400k spans a day), which cost an API refreshing once a second 45 % of ingest throughput on two cores
    # (bench/README.md, detectors). The derived files follow at most every PUBLISH_EVERY_SECONDS: meanwhile the
    # usage rows of the traces summarised again live in memory (usage_delta) and override the file's
    # (usage_stale), so cost queries are current without rewriting a day's usage file on every part.

    def _increment(
        self,
        project: str,
        date: str,
        state: _DateState,
        parts: list[Part],
        added: list[Part],
        print_: str,
        config: DetectorConfig,
    ) -> bool:
        """Summarise again the traces that `added` touches and swap their rows; True when anything changed."""
        began = time.perf_counter()
        current = frozenset(p.path.name for p in parts)
        state.sources = {name: merged for name, merged in state.sources.items() if name in current}
        touched, spans = self._touched_spans(project, date, parts, added) if added else (None, None)
        if touched is None or spans is None or touched.num_rows == 0:
            # Only merges of parts already summarised: the same content under another set of parts.
            if not state.pending:
                state.usage_path = self.derived.rename(project, date, state.published_print, print_)
                state.published_print = print_
            state.print_, state.parts = print_, current
            return False
        trace_rows, usage_rows, findings = summarise(spans, config)
        self._swap_traces(project, date, state, touched, trace_rows.to_arrow(), findings.to_arrow(), usage_rows)
        state.print_, state.parts, state.pending = print_, current, True
        log.debug(
            "indexed %s/%s by increment: %d new parts, %d traces, %d spans in %.3f s",
            project,
            date,
            len(added),
            touched.num_rows,
            spans.height,
            time.perf_counter() - began,
        )
        return True

    def _touched_spans(
        self, project: str, date: str, parts: list[Part], added: list[Part]
    ) -> tuple[pa.Table, pl.DataFrame]:
        """The traces the added parts touch, and all their spans in the partition. A trace the partition has
        not seen yet can only have spans in the added parts; one seen before is read from the parts that hold
        it (part_traces.py)."""
        added_files = [str(p.path) for p in added]
        con = self.db.cursor()
        try:
            con.register(
                "added_traces",
                con.sql(
                    "SELECT DISTINCT trace_id FROM read_parquet(?, hive_partitioning=false)", params=[added_files]
                ).to_arrow_table(),
            )
            touched = con.sql("SELECT trace_id FROM added_traces").to_arrow_table()
            seen = con.sql(
                """SELECT DISTINCT a.trace_id FROM added_traces a
                   JOIN trace_rows r ON r.trace_id = a.trace_id AND r.project = ? AND r.date = ?""",
                params=[project, date],
            ).to_arrow_table()
        finally:
            con.close()
        if seen.num_rows == 0:
            return touched, self._light_spans(added_files)  # every span there is of a touched trace
        fresh_ids = touched.filter(pc.invert(pc.is_in(touched["trace_id"], seen["trace_id"])))
        holders = self.part_traces.holding(parts, seen["trace_id"])
        log.debug("%s/%s: %d traces seen before, read from %d of %d parts", project, date, seen.num_rows,
                  len(holders), len(parts))  # fmt: skip
        spans = self._light_spans([str(p.path) for p in holders], seen)
        if fresh_ids.num_rows:
            spans = pl.concat([spans, self._light_spans(added_files, fresh_ids)], how="vertical_relaxed")
        return touched, spans

    def _publish_if_due(self, project: str, date: str, state: _DateState, force: bool = False) -> None:
        """Write the partition's derived files from memory when they lag and are old enough (or `force`)."""
        if not state.pending:
            return
        due = time.monotonic() - state.published_at >= PUBLISH_EVERY_SECONDS
        if not (force or due or state.delta_rows >= PUBLISH_AT_DELTA_ROWS):
            return
        began = time.perf_counter()
        usage = self.rows_table(
            f"""{_STALE_FILTERED_USAGE} UNION ALL SELECT {_USAGE_NAMES} FROM usage_delta WHERE base = ?""",
            [[str(state.usage_path)], str(state.usage_path)],
        )
        traces, findings = self._partition_tables(project, date)
        # Traces last: a reader that finds it finds the others. The previous generation stays one more round,
        # for a cost query that listed it a moment ago.
        old = state.published_print
        usage_path = self.derived.publish("usage", project, date, state.print_, usage, keep=old)
        self.derived.publish("findings", project, date, state.print_, findings, keep=old)
        self.derived.publish("traces", project, date, state.print_, traces, keep=old)
        # Switch readers to the new file first, then forget the rows it now holds (a reader that took the old
        # state keeps its snapshot of them).
        written = _DateState(state.print_, state.version, state.parts, state.usage_path, state.published_print)
        written.pending = True
        state.usage_path, state.published_print = usage_path, state.print_
        state.published_at, state.pending, state.delta_rows = time.monotonic(), False, 0
        self._drop_delta(written)
        log.debug("published %s/%s in %.3f s", project, date, time.perf_counter() - began)

    def _drop_delta(self, state: _DateState | None) -> None:
        if state is None or not state.pending:
            return
        base = str(state.usage_path)
        with self._transaction() as con:
            con.execute("DELETE FROM usage_delta WHERE base = ?", [base])
            con.execute("DELETE FROM usage_stale WHERE base = ?", [base])

    def _partition_tables(self, project: str, date: str) -> tuple[pa.Table, pa.Table]:
        """One partition's trace rows and findings as they stand in memory (the derived files' content)."""
        row_names = ", ".join(f'"{c}"' for c in TRACE_ROW_SCHEMA)
        traces = self.rows_table(
            f"SELECT {row_names} FROM trace_rows WHERE project = ? AND date = ? ORDER BY trace_id", [project, date]
        )
        findings = self.rows_table(
            f"""SELECT {_FINDING_NAMES} FROM trace_findings WHERE project = ? AND date = ?
                ORDER BY trace_id, start_ns, kind, code, span_id""",
            [project, date],
        )
        return traces.cast(_TRACES_ARROW), findings.cast(_FINDINGS_ARROW)

    def _derive(
        self, project: str, date: str, parts: list[Part], print_: str, config: DetectorConfig, version: str
    ) -> tuple[pa.Table, pa.Table, _DateState]:
        """The partition's trace rows and findings (from derived files when current, else computed and published)."""
        for attempt in range(_READ_RETRIES):
            traces_path = self.derived.path("traces", project, date, print_)
            usage_path = self.derived.path("usage", project, date, print_)
            findings_path = self.derived.path("findings", project, date, print_)
            names = frozenset(p.path.name for p in parts)
            state = _DateState(print_, version, names, usage_path, published_print=print_)
            if traces_path.exists() and usage_path.exists() and findings_path.exists():
                try:
                    return pq.read_table(traces_path), pq.read_table(findings_path), state
                except FileNotFoundError:
                    pass  # another replica replaced it a moment ago; compute it ourselves
            try:
                spans = self._light_spans([str(p.path) for p in parts])
            except duckdb.IOException:
                if attempt == _READ_RETRIES - 1:
                    raise
                parts = self.derived.spans_by_date(project).get(date, [])
                print_ = fingerprint(parts, version)
                continue
            began = time.perf_counter()
            trace_rows, usage_rows, findings = summarise(spans, config)
            traces_table, usage_table = trace_rows.to_arrow(), usage_rows.to_arrow()
            findings_table = findings.to_arrow()
            # Traces last: a reader that finds the traces file finds the other two.
            self.derived.publish("usage", project, date, print_, usage_table)
            self.derived.publish("findings", project, date, print_, findings_table)
            self.derived.publish("traces", project, date, print_, traces_table)
            log.info(
                "indexed %s/%s: %d spans, %d traces, %d findings in %.2f s",
                project,
                date,
                spans.height,
                trace_rows.height,
                findings.height,
                time.perf_counter() - began,
            )
            return traces_table, findings_table, state
        raise AssertionError("unreachable")

    def _light_spans(self, files: list[str], traces: pa.Table | None = None) -> pl.DataFrame:
        """Deduplicated spans (of the given traces only, when `traces` is given): the light columns, and the
        heavy ones only where a detector will read them."""
        if not files:
            return pl.DataFrame(schema={c: pl.String for c in (*LIGHT_COLUMNS, *DETECT_COLUMNS)})
        columns = ", ".join(f'"{c}"' for c in LIGHT_COLUMNS) + ", " + DETECT_SELECT
        where = "WHERE trace_id IN (SELECT trace_id FROM wanted_traces)" if traces is not None else ""
        con = self.db.cursor()
        try:
            if traces is not None:
                con.register("wanted_traces", traces)
            read = con.sql(
                f"""SELECT {columns}, received_at_unix_nano
                FROM read_parquet(?, hive_partitioning=false, union_by_name=true) {where}""",
                params=[files],
            ).to_arrow_table()
        finally:
            con.close()
        return _newest_copies(pl.from_arrow(read)).drop("received_at_unix_nano")  # type: ignore[arg-type]

    def _swap_traces(
        self,
        project: str,
        date: str,
        state: _DateState,
        touched: pa.Table,
        rows: pa.Table,
        findings: pa.Table,
        usage: pl.DataFrame,
    ) -> None:
        """Replace the partition rows, findings and usage rows of the touched traces and re-merge them, in one
        transaction."""
        base = str(state.usage_path)
        with self._transaction() as con:
            con.register("touched_traces", touched)
            con.execute("CREATE OR REPLACE TEMP TABLE touched AS SELECT DISTINCT trace_id FROM touched_traces")
            for table in ("trace_rows", "trace_findings"):
                con.execute(
                    f"""DELETE FROM {table} WHERE project = ? AND date = ?
                        AND trace_id IN (SELECT trace_id FROM touched)""",
                    [project, date],
                )
            if findings.num_rows:
                con.register("incoming_findings", findings)
                con.execute(
                    f"INSERT INTO trace_findings SELECT ?, ?, {_FINDING_NAMES} FROM incoming_findings", [project, date]
                )
            if rows.num_rows:
                con.register("incoming", rows)
                names = ", ".join(f'"{c}"' for c in TRACE_ROW_SCHEMA)
                con.execute(f"INSERT INTO trace_rows SELECT ?, ?, {names} FROM incoming", [project, date])
            con.execute("DELETE FROM usage_delta WHERE base = ? AND trace_id IN (SELECT trace_id FROM touched)", [base])
            con.execute(
                """INSERT INTO usage_stale SELECT ?, trace_id FROM touched
                   WHERE trace_id NOT IN (SELECT trace_id FROM usage_stale WHERE base = ?)""",
                [base, base],
            )
            if usage.height:
                con.register("incoming_usage", usage.to_arrow())
                con.execute(f"INSERT INTO usage_delta SELECT ?, {_USAGE_NAMES} FROM incoming_usage", [base])
            # A trace with rows in this partition only (nearly all) is its own merged row: inserted as it is,
            # the merge's GROUP BY is left to the few that span midnight (163 -> ~15 ms for 1,700 traces).
            con.execute(
                """CREATE OR REPLACE TEMP TABLE spread AS SELECT DISTINCT trace_id FROM trace_rows
                   WHERE project = ? AND date <> ? AND trace_id IN (SELECT trace_id FROM touched)""",
                [project, date],
            )
            con.execute(
                "DELETE FROM traces WHERE project = ? AND trace_id IN (SELECT trace_id FROM touched)", [project]
            )
            if rows.num_rows:
                con.execute(
                    f"""INSERT INTO traces BY NAME SELECT ? AS project, {_SINGLE_ROW_MERGE}, [?] AS dates
                        FROM incoming WHERE trace_id NOT IN (SELECT trace_id FROM spread)""",
                    [project, date],
                )
            spread = con.execute("SELECT count(*) FROM spread").fetchone()
            if spread and spread[0]:
                con.execute(
                    f"""INSERT INTO traces {_MERGE_SELECT}
                        WHERE project = ? AND trace_id IN (SELECT trace_id FROM spread) GROUP BY project, trace_id""",
                    [project],
                )
        state.delta_rows += usage.height

    def _replace(self, project: str, date: str, rows: pa.Table | None, findings: pa.Table | None) -> None:
        """Swap one partition's rows and re-merge the traces they touch, in one transaction."""
        with self._transaction() as con:
            con.execute(
                """CREATE OR REPLACE TEMP TABLE touched AS
                   SELECT DISTINCT trace_id FROM trace_rows WHERE project = ? AND date = ?""",
                [project, date],
            )
            con.execute("DELETE FROM trace_rows WHERE project = ? AND date = ?", [project, date])
            con.execute("DELETE FROM trace_findings WHERE project = ? AND date = ?", [project, date])
            if findings is not None and findings.num_rows:
                con.register("incoming_findings", findings)
                con.execute(
                    f"INSERT INTO trace_findings SELECT ?, ?, {_FINDING_NAMES} FROM incoming_findings", [project, date]
                )
                con.unregister("incoming_findings")
            if rows is not None and rows.num_rows:
                con.register("incoming", rows)
                names = ", ".join(f'"{c}"' for c in TRACE_ROW_SCHEMA)
                con.execute(f"INSERT INTO trace_rows SELECT ?, ?, {names} FROM incoming", [project, date])
                con.execute("INSERT INTO touched SELECT trace_id FROM incoming")
                con.unregister("incoming")
            _remerge_touched(con, project)

    def _scope_budgets(self, project: str, config: DetectorConfig) -> None:
        """Recompute the session, user and project budget findings and flag the traces they point at."""
        scoped = frozenset(config.budgets.limits.keys() - {"trace"})
        if not scoped and self._scoped.get(project) == scoped:
            return  # no session, user or project budget, before or now: nothing to recompute (15 ms a refresh)
        usage = self.usage_source(project)
        found = None
        if scoped and usage is not None:
            rows = pl.from_arrow(self.rows_table(f"SELECT * FROM {usage[0]}", usage[1]))
            found = detect_scopes(rows, config.budgets).to_arrow()  # type: ignore[arg-type]
        with self._transaction() as con:
            con.execute(
                """CREATE OR REPLACE TEMP TABLE touched AS
                   SELECT DISTINCT trace_id FROM scope_findings WHERE project = ?""",
                [project],
            )
            con.execute("DELETE FROM scope_findings WHERE project = ?", [project])
            if found is not None and found.num_rows:
                con.register("incoming_findings", found)
                con.execute(f"INSERT INTO scope_findings SELECT ?, {_FINDING_NAMES} FROM incoming_findings", [project])
                con.execute("INSERT INTO touched SELECT trace_id FROM incoming_findings")
                con.unregister("incoming_findings")
            # Re-merge the traces that gained or lost a scope finding, then add the budget flag where due.
            _remerge_touched(con, project)
            con.execute(
                """UPDATE traces SET flags = list_sort(list_distinct(list_append(flags, 'budget'))),
                          finding_count = finding_count + s.n
                   FROM (SELECT trace_id, count(*) AS n FROM scope_findings WHERE project = ? GROUP BY trace_id) s
                   WHERE traces.project = ? AND traces.trace_id = s.trace_id""",
                [project, project],
            )
        self._scoped[project] = scoped

    # --- what readers need ------------------------------------------------------------------------

    def usage_source(self, project: str) -> tuple[str, list[Any]] | None:
        """The project's counted usage rows (query/summaries.py USAGE_SCHEMA) as a parenthesised FROM item and
        its parameters, or None when there are none: the derived files, with the rows of traces summarised
        since a file was written replaced by their in-memory rows."""
        states = list(self._states.get(project, {}).values())
        if not states:
            return None
        clean = [str(s.usage_path) for s in states if not s.pending]
        dirty = [str(s.usage_path) for s in states if s.pending]
        selects, params = [], []
        if clean:
            selects.append(f"SELECT {_USAGE_NAMES} FROM read_parquet(?, hive_partitioning=false)")
            params.append(clean)
        if dirty:
            selects.append(_STALE_FILTERED_USAGE)
            selects.append(f"SELECT {_USAGE_NAMES} FROM usage_delta WHERE list_contains(?, base)")
            params += [dirty, dirty]
        return f"({' UNION ALL '.join(selects)}) AS usage", params

    def span_files(self, project: str, dates: list[str] | None = None) -> list[str]:
        by_date = self._listing.get(project)
        if by_date is None:
            by_date = self.derived.spans_by_date(project)
        wanted = by_date if dates is None else {d: by_date.get(d, []) for d in dates}
        return [str(p.path) for d in sorted(wanted, reverse=True) for p in wanted[d]]

    def event_files(self, project: str, dates: list[str] | None = None) -> list[str]:
        by_date = self.derived.events_by_date(project)
        wanted = by_date if dates is None else {d: by_date.get(d, []) for d in dates}
        return [str(p.path) for d in sorted(wanted, reverse=True) for p in wanted[d]]

    def dates(self, project: str) -> list[str]:
        return sorted(self._states.get(project, {}))
