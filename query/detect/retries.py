"""Retry findings: a call made again after it failed, how many times, how long it waited, and how it ended.

Three signals (docs/conventions.md §3, Retries): structural (siblings of the same type and model or tool under one
parent, each after a failed one), `http.request.resend_count` > 0 on HTTP spans, and framework attributes
(`pydantic_ai.tool.retry.*`, `pydantic_ai.output.retry.*`, `agentflight.retry.attempt`, a Pydantic AI tool
result that asks the model to try again). Codes:

- `retry`: attempts were repeated; warning when every attempt failed (exhausted), info when one recovered.
- `non_retryable_retry` (error): a failure that no retry can fix (auth 401/403, bad request 400/404,
  validation) was tried again.
- `retry_without_backoff` (warning): an attempt began sooner than `retries.min_backoff_ms` after a transient
  failure (rate limit, server, timeout: the failures waiting helps); an agent calling a tool again after the
  tool reported an application error is not hammering anything.

`sdk_helpers.mark_retry` counts attempts from 1 (the first try), so `agentflight.retry.attempt` 1 is no retry.

Evidence: `attempts`, `span_ids`, `backoff_ms` (gap before each retry), `error_classes`, `http_statuses`,
`outcome` (recovered / exhausted / unknown), `signal` (structural / http_resend / framework).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import polars as pl

from query.detect.config import DetectorConfig
from query.detect.finding import Finding, frame
from query.detect.signals import NON_RETRYABLE, TRANSIENT, call_key, classify_error, json_object, number

NS_PER_MS = 1_000_000
_RETRY_PROMPT = "fix the errors and try again"  # Pydantic AI's RetryPromptPart text, sent back to the model
_SDK_ATTEMPT = "agentflight.retry.attempt"  # sdk_helpers.mark_retry: 1 is the first try
_ATTEMPT_KEYS = ("pydantic_ai.tool.retry.attempt", "pydantic_ai.output.retry.attempt", _SDK_ATTEMPT)


def detect(spans: pl.DataFrame, config: DetectorConfig) -> pl.DataFrame:
    min_gap_ns = config.retries.min_backoff_ms * NS_PER_MS
    structural = _structural(spans, min_gap_ns)
    # A framework's or HTTP client's retry of a call the structure already shows is the same retry, told once.
    covered = {(f.trace_id, s) for f in structural for s in f.span_ids}
    framework = [f for f in _framework(spans) if (f.trace_id, f.span_id) not in covered]
    resends = [f for f in _http_resends(spans) if not all((f.trace_id, s) in covered for s in f.span_ids)]
    return frame([*structural, *resends, *framework])


def _end(span: dict[str, Any]) -> int:
    return int(span["end_time_unix_nano"] or span["start_time_unix_nano"])


def _error_of(span: dict[str, Any]) -> tuple[str, int | None]:
    attributes = json_object(span["signal_attributes"])
    message = span["error_message"] or span["status_message"]
    return classify_error(span["span_type"], span["error_type"], message, attributes)


def _structural(spans: pl.DataFrame, min_gap_ns: float) -> list[Finding]:
    # Candidates: groups of 2+ same-type siblings of which at least one failed.
    key = call_key()
    candidates = spans.filter(pl.col("parent_span_id").is_not_null()).with_columns(key.alias("_key"))
    candidates = candidates.filter(
        (pl.len().over("trace_id", "parent_span_id", "span_type", "_key") >= 2)
        & pl.col("is_error").fill_null(False).any().over("trace_id", "parent_span_id", "span_type", "_key")
    )
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for span in candidates.sort("start_time_unix_nano", "span_id").iter_rows(named=True):
        groups[(span["trace_id"], span["parent_span_id"], span["span_type"], span["_key"])].append(span)
    findings: list[Finding] = []
    for siblings in groups.values():
        chain: list[dict[str, Any]] = []
        for span in siblings:
            # A retry starts after the failure ended; calls that overlap it ran in parallel (3 cities at once).
            if chain and chain[-1]["is_error"] and span["start_time_unix_nano"] >= _end(chain[-1]):
                chain.append(span)
                continue
            if len(chain) >= 2:
                findings.extend(_chain_findings(chain, min_gap_ns))
            chain = [span]
        if len(chain) >= 2:
            findings.extend(_chain_findings(chain, min_gap_ns))
    return findings


def _chain_findings(chain: list[dict[str, Any]], min_gap_ns: float) -> list[Finding]:
    """A first attempt and the attempts that followed a failure, as one retry finding (and its faults)."""
    trace_id = chain[0]["trace_id"]
    ids = [s["span_id"] for s in chain]
    failures = [s for s in chain if s["is_error"]]
    errors = [_error_of(s) for s in failures]
    classes = [c for c, _ in errors]
    statuses = [code for _, code in errors if code is not None]
    gaps_ns = [
        later["start_time_unix_nano"] - (earlier["end_time_unix_nano"] or earlier["start_time_unix_nano"])
        for earlier, later in itertools.pairwise(chain)
    ]
    backoff_ms = [round(g / NS_PER_MS, 3) for g in gaps_ns]
    recovered = not chain[-1]["is_error"]
    outcome = "recovered" if recovered else "exhausted"
    what = chain[0]["tool_name"] or chain[0]["request_model"] or chain[0]["response_model"] or chain[0]["name"]
    evidence = {
        "attempts": len(chain),
        "span_ids": ids,
        "target": what,
        "span_type": chain[0]["span_type"],
        "backoff_ms": backoff_ms,
        "error_classes": classes,
        "http_statuses": statuses,
        "outcome": outcome,
        "signal": "structural",
    }
    retry = chain[1]
    out = [
        Finding(
            trace_id=trace_id,
            span_id=retry["span_id"],
            span_ids=ids,
            kind="retry",
            code="retry",
            severity="info" if recovered else "warning",
            message=f"{what}: {len(chain)} attempts, {outcome}; failures: "
            + ", ".join(sorted({c.replace("_", " ") for c in classes})),
            start_ns=retry["start_time_unix_nano"],
            evidence=evidence,
        )
    ]
    for index, (failed, later) in enumerate(itertools.pairwise(chain)):
        error_class, code = _error_of(failed) if failed["is_error"] else ("", None)
        if error_class in NON_RETRYABLE:
            out.append(
                Finding(
                    trace_id=trace_id,
                    span_id=later["span_id"],
                    span_ids=[failed["span_id"], later["span_id"]],
                    kind="retry",
                    code="non_retryable_retry",
                    severity="error",
                    message=f"{what} retried after an error no retry can fix ({error_class.replace('_', ' ')}"
                    + (f", HTTP {code})" if code else ")"),
                    start_ns=later["start_time_unix_nano"],
                    evidence={**evidence, "failed_span_id": failed["span_id"], "error_class": error_class},
                )
            )
            break
        if gaps_ns[index] < min_gap_ns and error_class in TRANSIENT:
            out.append(
                Finding(
                    trace_id=trace_id,
                    span_id=later["span_id"],
                    span_ids=[failed["span_id"], later["span_id"]],
                    kind="retry",
                    code="retry_without_backoff",
                    severity="warning",
                    message=f"{what} retried {backoff_ms[index]:.0f} ms after a failure, without backoff",
                    start_ns=later["start_time_unix_nano"],
                    evidence={**evidence, "failed_span_id": failed["span_id"]},
                )
            )
            break
    return out


def _http_resends(spans: pl.DataFrame) -> list[Finding]:
    marked = spans.filter(pl.col("signal_attributes").str.contains("resend_count", literal=True))
    by_parent: dict[tuple[str, str | None], list[tuple[dict[str, Any], int]]] = defaultdict(list)
    for span in marked.sort("start_time_unix_nano").iter_rows(named=True):
        count = number(json_object(span["signal_attributes"]).get("http.request.resend_count"))
        if count is not None and count > 0:
            by_parent[(span["trace_id"], span["parent_span_id"])].append((span, int(count)))
    findings = []
    for (trace_id, _), resent in by_parent.items():
        last, count = resent[-1]
        attempts = max(c for _, c in resent) + 1
        statuses = [code for s, _ in resent for _, code in [_error_of(s)] if code is not None]
        findings.append(
            Finding(
                trace_id=trace_id,
                span_id=resent[0][0]["span_id"],
                span_ids=[s["span_id"] for s, _ in resent],
                kind="retry",
                code="retry",
                severity="warning" if last["is_error"] else "info",
                message=f"{last['name']}: HTTP request sent {attempts} times",
                start_ns=resent[0][0]["start_time_unix_nano"],
                evidence={
                    "attempts": attempts,
                    "span_ids": [s["span_id"] for s, _ in resent],
                    "target": last["name"],
                    "http_statuses": statuses,
                    "outcome": "exhausted" if last["is_error"] else "recovered",
                    "signal": "http_resend",
                },
            )
        )
    return findings


def _framework(spans: pl.DataFrame) -> list[Finding]:
    marked = spans.filter(
        pl.col("signal_attributes").str.contains("retry", literal=True)
        | pl.col("retry_result").str.to_lowercase().str.contains(_RETRY_PROMPT, literal=True)
    )
    findings = []
    for span in marked.iter_rows(named=True):
        attributes = json_object(span["signal_attributes"])
        attempt_key = next((k for k in _ATTEMPT_KEYS if k in attributes), None)
        attempt = number(attributes[attempt_key]) if attempt_key is not None else None
        if attempt_key == _SDK_ATTEMPT and attempt is not None and attempt <= 1:
            attempt = None  # mark_retry(1): the first try
        asks_again = _RETRY_PROMPT in (span["retry_result"] or "").lower()
        if attempt is None and not asks_again:
            continue
        maximum = number(
            attributes.get("pydantic_ai.tool.retry.max_retries")
            or attributes.get("pydantic_ai.output.retry.max_retries")
            or attributes.get("agentflight.retry.max_attempts")
        )
        cause = (
            attributes.get("pydantic_ai.tool.retry.cause")
            or attributes.get("pydantic_ai.output.retry.cause")
            or attributes.get("agentflight.retry.cause")
        )
        what = span["tool_name"] or span["name"]
        exhausted = maximum is not None and attempt is not None and attempt >= maximum and span["is_error"]
        findings.append(
            Finding(
                trace_id=span["trace_id"],
                span_id=span["span_id"],
                kind="retry",
                code="retry",
                severity="warning" if exhausted else "info",
                message=f"{what}: the framework asked for a retry"
                + (f" (attempt {attempt:.0f}" + (f" of {maximum:.0f})" if maximum else ")") if attempt else ""),
                start_ns=span["start_time_unix_nano"],
                evidence={
                    "attempts": int(attempt) if attempt is not None else None,
                    "max_retries": int(maximum) if maximum is not None else None,
                    "cause": cause,
                    "target": what,
                    "outcome": "exhausted" if exhausted else "unknown",
                    "signal": "framework",
                },
            )
        )
    return findings
