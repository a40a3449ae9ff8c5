"""Readiness findings: practices a production agent should hold, checked on each trace's own spans.

Kind `readiness`, one finding per trace and code (pointing at the first span concerned, listing them all):

- `prompt_injection` (warning): an injection phrasing ("ignore previous instructions", a role-play override, a
  base64-wrapped instruction) in a model's non-system input or in a tool's result (content.py).
- `pii_in_output` (warning): an email, phone number, Luhn-valid card number or national id (US SSN, UK NINO) in
  the text a model answered; evidence holds masked samples only.
- `context_overflow` (warning): a call's input tokens reached `readiness.context_window_ratio` (0.9) of the
  model's context window (genai-prices), or a call failed for exceeding it.
- `side_effect_repeated` (warning): a side-effecting tool (`readiness.side_effect_tools` globs) succeeded twice
  or more with the same arguments (compared by meaning) in one trace: a non-idempotent double execution.
- `side_effect_unapproved` (warning, when `readiness.require_approval`): a side-effecting tool ran with no
  approved human-approval step for it starting before it (sdk_helpers.human_approval: a span named
  `human_approval <action>` with `agentflight.approval.action` and `.decision`; a rejected one does not count).
- `tool_without_user` (info): the trace called tools (MCP `mcp.*` tool calls included) and no span carries a
  user identity, so the tools acted for nobody a scoped credential could name.

Unpinned model aliases are judged by the readiness report (query/readiness/models.py), not here: they are a
property of how an agent is configured, and as a finding they sat on every trace of an agent on an alias.
Readiness findings are not trace flags (query/summaries.py): they describe how an agent is built, and would
otherwise mark most traces of, say, an agent without approval steps. They are on the trace, in `GET /findings`
and in the readiness report (query/readiness/).
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from typing import Any

import polars as pl

from query.detect import content, models
from query.detect.config import DetectorConfig, ReadinessSettings
from query.detect.finding import Finding, frame
from query.detect.signals import json_object, normalised_arguments

KIND = "readiness"
ARGUMENT_CHARS = 500
_CONTEXT_ERROR = re.compile(r"context.?length|context.?window|maximum context|too many tokens|prompt is too long", re.I)
_REJECTED = {"rejected", "denied", "deny", "declined", "refused", "no", "false"}


def detect(spans: pl.DataFrame, config: DetectorConfig) -> pl.DataFrame:
    settings = config.readiness
    findings: list[Finding] = []
    frames: list[pl.DataFrame] = []
    checks: tuple[tuple[str, Any], ...] = (
        ("prompt_injection", _injection),
        ("pii_in_output", _pii),
        ("context_overflow", _context_overflow),
        ("tool_without_user", _tool_without_user),
    )
    for code, check in checks:
        if settings.enabled(code):
            found = check(spans, settings)
            if isinstance(found, pl.DataFrame):
                frames.append(found)
            else:
                findings.extend(found)
    findings.extend(_side_effects(spans, settings))
    return pl.concat([frame(findings), *frames])


def _finding(rows: list[dict[str, Any]], code: str, severity: str, message: str, **evidence: Any) -> Finding:
    """One finding over `rows` (spans of one trace, in time order), pointing at the first."""
    ids = [r["span_id"] for r in rows]
    return Finding(
        trace_id=rows[0]["trace_id"],
        span_id=ids[0],
        span_ids=ids,
        kind=KIND,
        code=code,
        severity=severity,
        message=message,
        start_ns=rows[0]["start_time_unix_nano"],
        evidence={**evidence, "span_ids": ids},
    )


def _by_trace(rows: pl.DataFrame, *keys: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows.sort("start_time_unix_nano", "span_id").iter_rows(named=True):
        grouped[(row["trace_id"], *(row[k] for k in keys))].append(row)
    return grouped


# --- model control ------------------------------------------------------------------------------------------


def _context_overflow(spans: pl.DataFrame, settings: ReadinessSettings) -> list[Finding]:
    calls = spans.filter(pl.col("span_type") == "llm").with_columns(
        pl.coalesce("response_model", "request_model").alias("_model")
    )
    measured = calls.filter(pl.col("_model").is_not_null() & (pl.col("input_tokens").fill_null(0) > 0))
    pairs = measured.select("provider", "_model").unique()
    windows = pairs.with_columns(
        pl.Series("_window", [models.context_window(p, m) for p, m in pairs.iter_rows()], dtype=pl.Int64)
    ).filter(pl.col("_window").is_not_null())
    near = (
        measured.join(windows, on=["provider", "_model"], how="inner", nulls_equal=True)
        .with_columns((pl.col("input_tokens") / pl.col("_window")).alias("_ratio"))
        .filter(pl.col("_ratio") >= settings.context_window_ratio)
    )
    failed = calls.filter(
        pl.col("is_error").fill_null(False)
        & pl.concat_str(
            pl.col("error_type").fill_null(""), pl.col("error_message").fill_null(""), separator=" "
        ).str.contains(_CONTEXT_ERROR.pattern)
    )
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in near.sort("start_time_unix_nano", "span_id").iter_rows(named=True):
        by_trace[row["trace_id"]].append(row)
    for row in failed.sort("start_time_unix_nano", "span_id").iter_rows(named=True):
        if all(r["span_id"] != row["span_id"] for r in by_trace[row["trace_id"]]):
            by_trace[row["trace_id"]].append({**row, "_window": None, "_ratio": None})
    out = []
    for rows in by_trace.values():
        rows.sort(key=lambda r: (r["start_time_unix_nano"], r["span_id"]))
        worst = max(rows, key=lambda r: r["_ratio"] if r["_ratio"] is not None else 2.0)
        if worst["_ratio"] is None:
            message = f"{worst['_model']} call failed for exceeding its context window"
        else:
            message = (
                f"{worst['_model']}: {worst['input_tokens']:,} input tokens, {worst['_ratio']:.0%} of its "
                f"{worst['_window']:,}-token context window"
            )
        out.append(
            _finding(
                rows,
                "context_overflow",
                "warning",
                message,
                model=worst["_model"],
                input_tokens=worst["input_tokens"],
                context_window=worst["_window"],
                ratio=round(worst["_ratio"], 4) if worst["_ratio"] is not None else None,
                threshold=settings.context_window_ratio,
                failed=bool(worst["is_error"]),
                error_message=(worst["error_message"] or "")[:500] or None,
            )
        )
    return out


# --- content ------------------------------------------------------------------------------------------------


def _injection(spans: pl.DataFrame, settings: ReadinessSettings) -> list[Finding]:
    candidates = spans.filter(pl.col("injection_text").is_not_null())
    hits: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in candidates.sort("start_time_unix_nano", "span_id").iter_rows(named=True):
        found = content.injection(row["injection_text"], messages=row["span_type"] == "llm")
        if found is not None:
            hits[row["trace_id"]].append({**row, "_found": found})
    out = []
    for rows in hits.values():
        first = rows[0]
        where = f"the result of tool {first['tool_name']}" if first["span_type"] == "tool" else "a model's input"
        out.append(
            _finding(
                rows,
                "prompt_injection",
                "warning",
                f"possible prompt injection in {where}: {first['_found']['phrase']!r}",
                source="tool_result" if first["span_type"] == "tool" else "model_input",
                tool=first["tool_name"] if first["span_type"] == "tool" else None,
                **first["_found"],
            )
        )
    return out


def _pii(spans: pl.DataFrame, settings: ReadinessSettings) -> list[Finding]:
    candidates = spans.filter(pl.col("pii_text").is_not_null())
    hits: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in candidates.sort("start_time_unix_nano", "span_id").iter_rows(named=True):
        found = content.pii(row["pii_text"])
        if found is not None:
            hits[row["trace_id"]].append({**row, "_found": found})
    out = []
    for rows in hits.values():
        kinds: dict[str, int] = defaultdict(int)
        samples: set[str] = set()
        for row in rows:
            for kind, count in row["_found"]["kinds"].items():
                kinds[kind] += count
            samples.update(row["_found"]["samples"])
        model = rows[0]["response_model"] or rows[0]["request_model"] or rows[0]["name"]
        out.append(
            _finding(
                rows,
                "pii_in_output",
                "warning",
                f"{model} answered with personal data: "
                + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(kinds.items())),
                kinds=dict(sorted(kinds.items())),
                samples=sorted(samples)[:10],
            )
        )
    return out


# --- tools --------------------------------------------------------------------------------------------------


def _tool_calls(spans: pl.DataFrame) -> pl.DataFrame:
    """Tool executions: tool spans, and MCP `tools/call` spans whatever type they were given."""
    mcp_call = pl.col("signal_attributes").str.contains('"mcp.method.name": ?"tools/call"')
    return spans.filter((pl.col("span_type") == "tool") | mcp_call.fill_null(False)).with_columns(
        pl.col("signal_attributes").str.contains('"mcp.', literal=True).fill_null(False).alias("_mcp"),
        pl.coalesce("tool_name", "name").alias("_tool"),
    )


def _tool_without_user(spans: pl.DataFrame, settings: ReadinessSettings) -> list[Finding]:
    anonymous = spans.filter(pl.col("user_id").is_null().all().over("trace_id"))
    tools = _tool_calls(anonymous)
    out = []
    for (_,), rows in _by_trace(tools).items():
        names = sorted({r["_tool"] for r in rows})
        mcp = [r for r in rows if r["_mcp"]]
        out.append(
            _finding(
                rows,
                "tool_without_user",
                "info",
                f"{len(rows)} tool call(s) ({', '.join(names)[:120]}) on a request with no user identity"
                + (f", {len(mcp)} of them MCP" if mcp else ""),
                tools=names,
                tool_calls=len(rows),
                mcp_tool_calls=len(mcp),
            )
        )
    return out


def _approvals(spans: pl.DataFrame) -> dict[str, list[tuple[int, str | None, bool]]]:
    """trace -> (start, action, approved) of each human-approval step."""
    marked = spans.filter(
        pl.col("name").str.to_lowercase().str.starts_with("human_approval")
        | pl.col("signal_attributes").str.contains("agentflight.approval.", literal=True).fill_null(False)
    )
    out: dict[str, list[tuple[int, str | None, bool]]] = defaultdict(list)
    for row in marked.iter_rows(named=True):
        attributes = json_object(row["signal_attributes"])
        action = attributes.get("agentflight.approval.action")
        if action is None and row["name"].lower().startswith("human_approval "):
            action = row["name"][len("human_approval ") :]
        decision = str(attributes.get("agentflight.approval.decision", "approved")).strip().lower()
        approved = decision not in _REJECTED and not row["is_error"]
        out[row["trace_id"]].append((row["start_time_unix_nano"], str(action) if action else None, approved))
    return out


def _side_effects(spans: pl.DataFrame, settings: ReadinessSettings) -> list[Finding]:
    if not settings.side_effect_tools:
        return []
    tools = _tool_calls(spans)
    names = tools.select("_tool").unique()["_tool"].drop_nulls().to_list()
    globs = [g.lower() for g in settings.side_effect_tools]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n.lower(), g) for g in globs)]
    effects = tools.filter(pl.col("_tool").is_in(chosen))
    if effects.height == 0:
        return []
    out: list[Finding] = []
    if settings.enabled("side_effect_repeated"):
        done = effects.filter(~pl.col("is_error").fill_null(False) & pl.col("tool_arguments").is_not_null())
        done = done.filter(pl.len().over("trace_id", "_tool") >= 2).with_columns(
            pl.col("tool_arguments").map_elements(normalised_arguments, return_dtype=pl.String).alias("_args")
        )
        for (_, tool, arguments), rows in _by_trace(done, "_tool", "_args").items():
            if len(rows) < 2:
                continue
            out.append(
                _finding(
                    rows,
                    "side_effect_repeated",
                    "warning",
                    f"side-effecting tool {tool} executed {len(rows)} times with the same arguments {arguments[:80]}",
                    tool=tool,
                    arguments=arguments[:ARGUMENT_CHARS],
                    executions=len(rows),
                )
            )
    if settings.require_approval and settings.enabled("side_effect_unapproved"):
        approvals = _approvals(spans)
        unapproved: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in effects.sort("start_time_unix_nano", "span_id").iter_rows(named=True):
            tool = row["_tool"].lower()
            if not any(
                approved
                and start <= row["start_time_unix_nano"]
                and (action is None or action.lower() == tool or fnmatch.fnmatchcase(tool, action.lower()))
                for start, action, approved in approvals.get(row["trace_id"], [])
            ):
                unapproved[row["trace_id"]].append(row)
        for rows in unapproved.values():
            names_run = sorted({r["_tool"] for r in rows})
            out.append(
                _finding(
                    rows,
                    "side_effect_unapproved",
                    "warning",
                    f"side-effecting tool {', '.join(names_run)} ran without a preceding human approval",
                    tools=names_run,
                    executions=len(rows),
                    rejected_approvals=sum(
                        1 for _, _, approved in approvals.get(rows[0]["trace_id"], []) if not approved
                    ),
                )
            )
    return out
