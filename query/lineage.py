"""Which spans' usage is counted, and what each model span inherits from its ancestors (pure polars for many
traces at once; plain Python for one trace's span dicts, where polars' per-call cost dominates: 7 ms a trace).

docs/design.md invariant 4: tokens and cost are summed only over leaf model spans. A model span whose subtree holds
another model span reporting usage (LangChain's ChatOpenAI span around the OpenAI instrumentation's span,
an agent framework's aggregated "llm" span) is shown with its own numbers but never added. Cost breakdowns
by agent, tool or prompt attribute a model call to the nearest enclosing span that names one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import polars as pl

MODEL_SPAN_TYPES = ("llm", "embedding")
TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
INHERITED = ("agent_name", "tool_name", "prompt_name", "prompt_version")
# Agent hierarchies are a few levels deep; the bound only stops a hostile parent cycle from looping.
MAX_DEPTH = 256
# Costs are summed as DECIMAL(38, 12): a float sum depends on the order in which parallel threads combine,
# and sending everything twice must change no number, to the last digit. 1e26 USD is beyond any real cost.
EXACT_COST_SUM = "sum(TRY_CAST(cost_usd AS DECIMAL(38, 12)))::DOUBLE"


def ancestors(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> Iterator[str]:
    """The ids of a span's ancestors that are in `by_id`, nearest first (a parent cycle stops the walk)."""
    seen: set[str] = set()
    parent = span.get("parent_span_id")
    while parent and parent in by_id and parent not in seen:
        seen.add(parent)
        yield parent
        parent = by_id[parent].get("parent_span_id")


def span_has_usage(span: dict[str, Any]) -> bool:
    """has_usage() for one span dict."""
    tokens = abs(span.get("input_tokens") or 0) + abs(span.get("output_tokens") or 0)
    return span.get("span_type") in MODEL_SPAN_TYPES and (tokens > 0 or span.get("cost_usd") is not None)


def counted_spans(spans: Iterable[dict[str, Any]], by_id: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """with_lineage()'s `counted` for one trace's span dicts: the model spans with usage and no model span with
    usage below them."""
    with_usage = [s for s in spans if span_has_usage(s)]
    covered = {a for s in with_usage for a in ancestors(s, by_id) if span_has_usage(by_id[a])}
    return [s for s in with_usage if s.get("span_id") not in covered]


def has_usage() -> pl.Expr:
    tokens = pl.sum_horizontal(pl.col("input_tokens").fill_null(0).abs(), pl.col("output_tokens").fill_null(0).abs())
    return pl.col("span_type").is_in(MODEL_SPAN_TYPES) & ((tokens > 0) | pl.col("cost_usd").is_not_null())


def with_lineage(spans: pl.DataFrame) -> pl.DataFrame:
    """Adds `counted` (a leaf model span with usage) and `inherited_<agent_name|tool_name|prompt_*>`.

    `spans` holds one row per (trace_id, span_id) with at least trace_id, span_id, parent_span_id,
    span_type, the token columns, cost_usd and the INHERITED columns."""
    base = spans.with_columns(has_usage().alias("_usage"))
    lookup = base.select(
        pl.col("trace_id"),
        pl.col("span_id").alias("_cur"),
        pl.col("parent_span_id").alias("_next"),
        pl.col("_usage").alias("_anc_usage"),
        *[pl.col(c).alias(f"_anc_{c}") for c in INHERITED],
    )
    # Walk up from every model span with usage: mark model ancestors with usage as not counted, and take
    # the nearest ancestor's agent/tool/prompt where the span names none itself.
    walk = base.filter(pl.col("_usage")).select(
        "trace_id",
        "span_id",
        pl.col("parent_span_id").alias("_cur"),
        *[pl.col(c).alias(f"inherited_{c}") for c in INHERITED],
    )
    done: list[pl.DataFrame] = []
    not_leaf: list[pl.DataFrame] = []
    for _ in range(MAX_DEPTH):
        finished = walk.filter(pl.col("_cur").is_null())
        if finished.height:
            done.append(finished.drop("_cur"))
        walk = walk.filter(pl.col("_cur").is_not_null())
        if walk.height == 0:
            break
        step = walk.join(lookup, on=["trace_id", "_cur"], how="left")
        not_leaf.append(
            step.filter(pl.col("_anc_usage").fill_null(False)).select("trace_id", pl.col("_cur").alias("span_id"))
        )
        walk = step.select(
            "trace_id",
            "span_id",
            pl.col("_next").alias("_cur"),
            *[pl.coalesce(f"inherited_{c}", f"_anc_{c}").alias(f"inherited_{c}") for c in INHERITED],
        )
    if walk.height:  # a parent cycle: stop where we are
        done.append(walk.drop("_cur"))
    inherited = pl.concat(done) if done else pl.DataFrame(schema={"trace_id": pl.String, "span_id": pl.String})
    ancestors = (
        pl.concat(not_leaf).unique().with_columns(pl.lit(True).alias("_not_leaf"))
        if not_leaf
        else pl.DataFrame(schema={"trace_id": pl.String, "span_id": pl.String, "_not_leaf": pl.Boolean})
    )
    out = base.join(ancestors, on=["trace_id", "span_id"], how="left")
    if inherited.width > 2:
        out = out.join(inherited, on=["trace_id", "span_id"], how="left")
    else:
        out = out.with_columns(*[pl.lit(None, pl.String).alias(f"inherited_{c}") for c in INHERITED])
    return out.with_columns(
        (pl.col("_usage") & ~pl.col("_not_leaf").fill_null(False)).alias("counted"),
        *[pl.coalesce(f"inherited_{c}", c).alias(f"inherited_{c}") for c in INHERITED],
    ).drop("_usage", "_not_leaf")
