"""Loop findings: the same tool with the same arguments, the same model input, or a cycle of steps, repeated.

Failed attempts are left to the retry detector: a loop is work that succeeded and was done again; tool calls
whose arguments were not recorded cannot be shown to repeat and are left out of repeated_tool_call. Wasted
usage is what the repeats after the first cost: for a repeated tool call, the model call that asked for each
repeat (the latest counted model call ending before it started); for a repeated model input, the repeated
calls themselves; for a cycle, every counted model call from the second turn of the cycle to its end.

Evidence: `tool`/`arguments` or `input_hash`, or `cycle` (the steps of one turn) and `period`; always
`repeats`, `span_ids` in order, `wasted_tokens`, `wasted_cost_usd`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import polars as pl

from query.detect.config import DetectorConfig, LoopSettings
from query.detect.finding import Finding, frame
from query.detect.signals import normalised_arguments

ARGUMENT_CHARS = 500  # evidence shows the arguments, cut to what a reader needs to recognise them


ModelCalls = dict[str, list[tuple[int, int, str, int, float | None]]]


def detect(spans: pl.DataFrame, config: DetectorConfig) -> pl.DataFrame:
    settings = config.loops
    ok = spans.filter(~pl.col("is_error").fill_null(False))
    findings = [*_tool_repeats(ok, spans, settings), *_input_repeats(ok, settings)]
    covered = {(f.trace_id, s) for f in findings if f.code == "repeated_tool_call" for s in f.span_ids}
    findings.extend(_cycles(ok, spans, settings, covered))
    return frame(findings)


def _model_calls(spans: pl.DataFrame, traces: set[str]) -> ModelCalls:
    """trace -> counted model calls as (start, end, span_id, tokens, cost), by end time, for `traces` only
    (the few with a repeat: building them for every trace of a poll's batch was a quarter of this detector)."""
    if not traces:
        return {}
    calls = spans.filter(pl.col("counted") & pl.col("trace_id").is_in(list(traces))).select(
        "trace_id",
        "start_time_unix_nano",
        "end_time_unix_nano",
        "span_id",
        (pl.col("input_tokens").fill_null(0) + pl.col("output_tokens").fill_null(0)).alias("tokens"),
        "cost_usd",
    )
    by_trace: dict[str, list[tuple[int, int, str, int, float | None]]] = defaultdict(list)
    for trace_id, start, end, span_id, tokens, cost in calls.iter_rows():
        by_trace[trace_id].append((start, end if end is not None else start, span_id, tokens, cost))
    for rows in by_trace.values():
        rows.sort(key=lambda r: r[1])
    return by_trace


def _usage(calls: list[tuple[int, int, str, int, float | None]]) -> tuple[int, float | None]:
    tokens = sum(c[3] for c in calls)
    costs = [c[4] for c in calls if c[4] is not None]
    return tokens, (round(sum(costs), 12) if costs else None)


def _tool_repeats(ok: pl.DataFrame, spans: pl.DataFrame, settings: LoopSettings) -> list[Finding]:
    # Arguments the instrumentation did not record are unknown, not equal: a lookup of seven different
    # reservations without recorded arguments is no loop.
    tools = ok.filter(
        (pl.col("span_type") == "tool") & pl.col("tool_name").is_not_null() & pl.col("tool_arguments").is_not_null()
    )
    # Cheap filter first: only (trace, tool) pairs called often enough can hold a repeat.
    candidates = tools.filter(pl.len().over("trace_id", "tool_name") >= settings.min_repeats).select(
        "trace_id", "tool_name", "tool_arguments", "span_id", "start_time_unix_nano"
    )
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for span in candidates.sort("start_time_unix_nano", "span_id").iter_rows(named=True):
        key = (span["trace_id"], span["tool_name"], normalised_arguments(span["tool_arguments"]))
        groups[key].append(span)
    repeated = {key: repeats for key, repeats in groups.items() if len(repeats) >= settings.min_repeats}
    model_calls = _model_calls(spans, {trace_id for trace_id, _, _ in repeated})
    findings = []
    for (trace_id, tool, arguments), repeats in repeated.items():
        calls = model_calls.get(trace_id, [])
        wasted: dict[str, tuple[int, int, str, int, float | None]] = {}
        for span in repeats[1:]:
            before = [c for c in calls if c[1] <= span["start_time_unix_nano"]]
            if before:
                wasted[before[-1][2]] = before[-1]
        tokens, cost = _usage(list(wasted.values()))
        ids = [s["span_id"] for s in repeats]
        findings.append(
            Finding(
                trace_id=trace_id,
                span_id=ids[1],
                span_ids=ids,
                kind="loop",
                code="repeated_tool_call",
                severity="warning",
                message=f"{tool} called {len(repeats)} times with the same arguments {arguments[:80]}",
                start_ns=repeats[1]["start_time_unix_nano"],
                evidence={
                    "tool": tool,
                    "arguments": arguments[:ARGUMENT_CHARS],
                    "repeats": len(repeats),
                    "span_ids": ids,
                    "wasted_model_calls": list(wasted),
                    "wasted_tokens": tokens,
                    "wasted_cost_usd": cost,
                },
                wasted_tokens=tokens,
                wasted_cost_usd=cost,
            )
        )
    return findings


def _input_repeats(ok: pl.DataFrame, settings: LoopSettings) -> list[Finding]:
    calls = ok.filter(pl.col("counted") & pl.col("input_hash").is_not_null())
    repeated = calls.filter(pl.len().over("trace_id", "input_hash") >= settings.min_repeats)
    findings = []
    for (trace_id, input_hash), group in repeated.sort("start_time_unix_nano", "span_id").group_by(
        "trace_id", "input_hash", maintain_order=True
    ):
        rows = group.to_dicts()
        later = rows[1:]
        tokens = sum((r["input_tokens"] or 0) + (r["output_tokens"] or 0) for r in later)
        costs = [r["cost_usd"] for r in later if r["cost_usd"] is not None]
        cost = round(sum(costs), 12) if costs else None
        model = rows[0]["response_model"] or rows[0]["request_model"] or "model"
        ids = [r["span_id"] for r in rows]
        findings.append(
            Finding(
                trace_id=str(trace_id),
                span_id=ids[1],
                span_ids=ids,
                kind="loop",
                code="repeated_model_input",
                severity="warning",
                message=f"{model} sent the same input {len(rows)} times",
                start_ns=rows[1]["start_time_unix_nano"],
                evidence={
                    "model": model,
                    "input_hash": input_hash,
                    "repeats": len(rows),
                    "span_ids": ids,
                    "wasted_tokens": tokens,
                    "wasted_cost_usd": cost,
                },
                wasted_tokens=tokens,
                wasted_cost_usd=cost,
            )
        )
    return findings


def find_cycles(labels: list[str], max_period: int, min_repeats: int) -> list[tuple[int, int, int]]:
    """(start, period, repeats) of each maximal run where `labels` repeats a unit of 2+ distinct steps."""
    found: list[tuple[int, int, int]] = []
    claimed_until = 0
    n = len(labels)
    i = 0
    while i < n:
        best: tuple[int, int, int] | None = None
        for period in range(2, max_period + 1):
            if i + period * min_repeats > n or len(set(labels[i : i + period])) < 2:
                continue
            end = i + period
            while end < n and labels[end] == labels[end - period]:
                end += 1
            repeats = (end - i) // period
            if repeats >= min_repeats:
                best = (i, period, repeats)
                break  # the shortest period explains the run
        if best is not None and best[0] >= claimed_until:
            found.append(best)
            claimed_until = best[0] + best[1] * best[2]
            i = claimed_until
        else:
            i += 1
    return found


def _cycle_candidates(steps: pl.DataFrame, settings: LoopSettings) -> pl.DataFrame:
    """The steps of traces that can hold a cycle, found in polars so Python walks only those: a run of
    `period * (repeats - 1)` consecutive steps each equal to the step `period` before it, for some period.
    (On a 440k-span partition the Python walk over every trace with 6+ steps took 2.6 s and found none.)"""
    if steps.height == 0:
        return steps
    label = pl.when(pl.col("span_type") == "tool").then(pl.lit("tool:") + pl.col("tool_name"))
    ordered = steps.sort("trace_id", "start_time_unix_nano", "span_id").with_columns(
        label.otherwise(pl.lit("agent:") + pl.col("agent_name")).alias("_label")
    )
    candidates = []
    for period in range(2, settings.cycle_max_period + 1):
        same = (pl.col("_label") == pl.col("_label").shift(period).over("trace_id")).fill_null(False)
        runs = (
            ordered.select("trace_id", same.alias("_same"))
            .with_columns((pl.col("_same") != pl.col("_same").shift(1).over("trace_id")).cum_sum().alias("_run"))
            .filter(pl.col("_same"))
            .group_by("trace_id", "_run")
            .agg(pl.len().alias("_length"))
            .filter(pl.col("_length") >= period * (settings.cycle_min_repeats - 1))
        )
        candidates.append(runs.select("trace_id"))
    wanted = pl.concat(candidates).unique()
    return ordered.drop("_label").join(wanted, on="trace_id", how="semi")


def _cycles(
    ok: pl.DataFrame, spans: pl.DataFrame, settings: LoopSettings, covered: set[tuple[str, str]]
) -> list[Finding]:
    steps = ok.filter(
        (pl.col("span_type") == "tool") & pl.col("tool_name").is_not_null()
        | (pl.col("span_type") == "agent") & pl.col("agent_name").is_not_null()
    ).filter(pl.len().over("trace_id") >= 2 * settings.cycle_min_repeats)
    steps = _cycle_candidates(steps, settings)
    model_calls = _model_calls(spans, set(steps["trace_id"].unique().to_list()))
    findings: list[Finding] = []
    for (trace_id,), group in steps.sort("start_time_unix_nano", "span_id").group_by("trace_id", maintain_order=True):
        rows = group.to_dicts()
        labels = [f"tool:{r['tool_name']}" if r["span_type"] == "tool" else f"agent:{r['agent_name']}" for r in rows]
        for start, period, repeats in find_cycles(labels, settings.cycle_max_period, settings.cycle_min_repeats):
            turn = rows[start : start + period * repeats]
            ids = [r["span_id"] for r in turn]
            if all((str(trace_id), s) in covered for s in ids):
                continue
            second = turn[period]["start_time_unix_nano"]
            last_end = max((r["end_time_unix_nano"] or r["start_time_unix_nano"]) for r in turn)
            wasted = [c for c in model_calls.get(str(trace_id), []) if second <= c[0] <= last_end]
            tokens, cost = _usage(wasted)
            unit = labels[start : start + period]
            findings.append(
                Finding(
                    trace_id=str(trace_id),
                    span_id=turn[period]["span_id"],
                    span_ids=ids,
                    kind="loop",
                    code="step_cycle",
                    severity="warning",
                    message=f"steps {' → '.join(unit)} repeated {repeats} times",
                    start_ns=second,
                    evidence={
                        "cycle": unit,
                        "period": period,
                        "repeats": repeats,
                        "span_ids": ids,
                        "wasted_model_calls": [c[2] for c in wasted],
                        "wasted_tokens": tokens,
                        "wasted_cost_usd": cost,
                    },
                    wasted_tokens=tokens,
                    wasted_cost_usd=cost,
                )
            )
    return findings
