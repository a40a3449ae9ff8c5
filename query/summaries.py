"""Per-trace summary rows and counted usage rows from deduplicated spans (pure polars; the index stores them).

A summary row covers one trace's spans within one date partition; a trace that crosses midnight has one
row per date and readers merge them (min start, max end, sums). Usage rows are the leaf model spans
(query/lineage.py) with what a cost breakdown groups by.
"""

from __future__ import annotations

import polars as pl

from query.detect import registry as detect
from query.detect.config import DetectorConfig
from query.lineage import INHERITED, TOKEN_COLUMNS, with_lineage

# The span columns the index reads; heavy content (messages, raw attributes) is never loaded for it.
LIGHT_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "span_type",
    "service_name",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "is_error",
    "provider",
    "request_model",
    "response_model",
    *TOKEN_COLUMNS,
    "cost_usd",
    "cost_status",
    "user_id",
    "session_id",
    *INHERITED,
)

TRACE_ROW_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "trace_id": pl.String,
    "start_ns": pl.Int64,
    "end_ns": pl.Int64,
    "root_span_id": pl.String,
    "root_name": pl.String,
    "has_root": pl.Boolean,
    "service_name": pl.String,
    "span_count": pl.Int64,
    "llm_calls": pl.Int64,
    "tool_calls": pl.Int64,
    "error_count": pl.Int64,
    "user_id": pl.String,
    "session_id": pl.String,
    "services": pl.List(pl.String),
    "models": pl.List(pl.String),
    "providers": pl.List(pl.String),
    "agents": pl.List(pl.String),
    "tools": pl.List(pl.String),
    "span_types": pl.List(pl.String),
    **{c: pl.Int64 for c in TOKEN_COLUMNS},
    "cost_usd": pl.Float64,
    "counted_spans": pl.Int64,
    "unknown_cost_spans": pl.Int64,
    "flags": pl.List(pl.String),
    "finding_count": pl.Int64,
}


def _distinct(column: str | pl.Expr) -> pl.Expr:
    expr = pl.col(column) if isinstance(column, str) else column
    return expr.drop_nulls().unique().sort()


def trace_rows(spans: pl.DataFrame, findings: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per trace from deduplicated light spans that already carry lineage (`counted`), with the
    kinds of the trace's findings as its flags."""
    if spans.height == 0:
        return pl.DataFrame(schema=TRACE_ROW_SCHEMA)
    ordered = spans.sort("start_time_unix_nano", "span_id")
    model = pl.coalesce("response_model", "request_model")
    counted = pl.col("counted")
    # The root: the earliest span without a parent; when the root never arrived, the earliest span.
    is_root = pl.col("parent_span_id").is_null()
    rows = ordered.group_by("trace_id").agg(
        pl.col("start_time_unix_nano").min().alias("start_ns"),
        pl.col("end_time_unix_nano").max().alias("end_ns"),
        pl.coalesce(pl.col("span_id").filter(is_root).first(), pl.col("span_id").first()).alias("root_span_id"),
        pl.coalesce(pl.col("name").filter(is_root).first(), pl.col("name").first()).alias("root_name"),
        is_root.any().alias("has_root"),
        pl.coalesce(pl.col("service_name").filter(is_root).first(), pl.col("service_name").drop_nulls().first()).alias(
            "service_name"
        ),
        pl.len().cast(pl.Int64).alias("span_count"),
        (pl.col("span_type") == "llm").sum().cast(pl.Int64).alias("llm_calls"),
        (pl.col("span_type") == "tool").sum().cast(pl.Int64).alias("tool_calls"),
        pl.col("is_error").fill_null(False).sum().cast(pl.Int64).alias("error_count"),
        pl.col("user_id").drop_nulls().first().alias("user_id"),
        pl.col("session_id").drop_nulls().first().alias("session_id"),
        _distinct("service_name").alias("services"),
        _distinct(model.filter(pl.col("span_type").is_in(["llm", "embedding"]))).alias("models"),
        _distinct("provider").alias("providers"),
        _distinct("agent_name").alias("agents"),
        _distinct("tool_name").alias("tools"),
        _distinct("span_type").alias("span_types"),
        *[pl.col(c).filter(counted).sum().cast(pl.Int64).alias(c) for c in TOKEN_COLUMNS],
        pl.when(pl.col("cost_usd").filter(counted).is_not_null().any())
        .then(pl.col("cost_usd").filter(counted).sum())
        .otherwise(None)
        .alias("cost_usd"),
        counted.sum().cast(pl.Int64).alias("counted_spans"),
        (counted & pl.col("cost_usd").is_null()).sum().cast(pl.Int64).alias("unknown_cost_spans"),
    )
    if findings is not None and findings.height:
        flagging = findings.filter(pl.col("kind") != "readiness")  # not flags: see query/detect/readiness.py
        flags = flagging.group_by("trace_id").agg(
            pl.col("kind").unique().sort().alias("flags"), pl.len().cast(pl.Int64).alias("finding_count")
        )
        rows = rows.join(flags, on="trace_id", how="left")
    else:
        rows = rows.with_columns(pl.lit(None, pl.List(pl.String)).alias("flags"), pl.lit(0).alias("finding_count"))
    rows = rows.with_columns(
        pl.col("flags").fill_null(pl.lit([], pl.List(pl.String))), pl.col("finding_count").fill_null(0)
    )
    return rows.select([pl.col(c).cast(t) for c, t in TRACE_ROW_SCHEMA.items()])


USAGE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "trace_id": pl.String,
    "span_id": pl.String,
    "start_ns": pl.Int64,
    "provider": pl.String,
    "model": pl.String,
    "request_model": pl.String,
    "span_type": pl.String,
    "service_name": pl.String,
    "user_id": pl.String,
    "session_id": pl.String,
    "agent_name": pl.String,
    "tool_name": pl.String,
    "prompt_name": pl.String,
    "prompt_version": pl.String,
    **{c: pl.Int64 for c in TOKEN_COLUMNS},
    "cost_usd": pl.Float64,
    "cost_status": pl.String,
}


def usage_rows(spans: pl.DataFrame) -> pl.DataFrame:
    """The counted model spans, each with its trace's user and session and its inherited agent/tool/prompt."""
    if spans.height == 0:
        return pl.DataFrame(schema=USAGE_SCHEMA)
    # User and session are properties of the request: most instrumentations set them on one span only.
    per_trace = (
        spans.sort("start_time_unix_nano")
        .group_by("trace_id")
        .agg(
            pl.col("user_id").drop_nulls().first().alias("_trace_user"),
            pl.col("session_id").drop_nulls().first().alias("_trace_session"),
        )
    )
    used = spans.filter(pl.col("counted")).join(per_trace, on="trace_id", how="left")
    return used.select(
        "trace_id",
        "span_id",
        pl.col("start_time_unix_nano").alias("start_ns"),
        "provider",
        pl.coalesce("response_model", "request_model").alias("model"),
        "request_model",
        "span_type",
        "service_name",
        pl.coalesce("user_id", "_trace_user").alias("user_id"),
        pl.coalesce("session_id", "_trace_session").alias("session_id"),
        *[pl.col(f"inherited_{c}").alias(c) for c in INHERITED],
        *TOKEN_COLUMNS,
        "cost_usd",
        "cost_status",
    ).select([pl.col(c).cast(t) for c, t in USAGE_SCHEMA.items()])


def summarise(spans: pl.DataFrame, config: DetectorConfig) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(trace rows, usage rows, findings) for one partition's deduplicated spans (LIGHT_COLUMNS + signals)."""
    lined = with_lineage(spans)
    findings = detect.run(lined, config)
    return trace_rows(lined, findings), usage_rows(lined), findings
