"""Guardrail findings: a guardrail that blocked, redacted or flagged content, a content filter, a refusal.

Every convention's signal (docs/conventions.md §1b and §3, Guardrail hits): OTel `gen_ai.guardrail.*` (span attributes
and the `gen_ai.guardrail.result` event), `agent.threat.detection.*`, OpenLIT `guard.evaluation` events and
`gen_ai.agent.threat_detected`, Traceloop `gen_ai.guardrail.status=FAILED`, LiteLLM `litellm.guardrail.*`,
`prompt_injection.blocked`, an OpenInference GUARDRAIL span that failed, an agent framework's tripwire
exception, finish reason `content_filter`, and `refusal` output parts or finish reasons. A guardrail that
passed is not a finding. Codes: `guardrail_block` (warning), `guardrail_flag` (info: warned or asked),
`content_filter` (warning), `refusal` (info).

Evidence: `guardrail`, `action`, `phase` (input / output when known), `policy`, `reason`, `risk`, `content`
(what it acted on, cut to 2,000 characters), `signal` (the attribute or event that said so).
"""

from __future__ import annotations

import re
from typing import Any

import polars as pl

from query.detect.config import DetectorConfig
from query.detect.errors import is_tripwire
from query.detect.finding import Finding, frame
from query.detect.signals import EVIDENCE_CHARS, exception_details, json_list, json_object

# Provider verdicts that mean the guardrail acted (OTel leaves values to providers: Bedrock, Azure, OpenAI).
_BLOCKING = {
    "guardrail_intervened",
    "intervened",
    "blocked",
    "block",
    "deny",
    "denied",
    "failed",
    "fail",
    "match_found",
    "flagged",
    "rejected",
    "true",
    "tripwire_triggered",
    "violation",
}
_REDACTING = {"redact", "redacted", "masked", "mask", "anonymized", "anonymised", "sanitized", "modified"}
_FLAGGING = {"warn", "warning", "ask"}
_PHASES = {
    "input": "input",
    "preflight": "input",
    "pre_call": "input",
    "pre": "input",
    "output": "output",
    "postflight": "output",
    "post_call": "output",
    "post": "output",
    "during_call": "input",
}


def _action(value: Any) -> str | None:
    word = str(value).strip().lower() if value is not None else ""
    if word in _REDACTING:
        return "redact"
    if word in _BLOCKING:
        return "block"
    if word in _FLAGGING:
        return "warn" if word != "ask" else "ask"
    return None


def _phase(value: Any) -> str | None:
    return _PHASES.get(str(value).strip().lower()) if value is not None else None


def _first(attributes: dict[str, Any], *keys: str) -> Any:
    return next((attributes[k] for k in keys if attributes.get(k) not in (None, "")), None)


def _verdicts(span: dict[str, Any]) -> list[dict[str, Any]]:
    """Each guardrail verdict on the span that says it acted: (guardrail, action, phase, signal, ...)."""
    a = json_object(span["signal_attributes"])
    found: list[dict[str, Any]] = []

    def add(action: str | None, signal: str, source: dict[str, Any], **extra: Any) -> None:
        if action is not None:
            found.append({"action": action, "signal": signal, **extra, "_source": source})

    result = _first(a, "gen_ai.guardrail.result.value")
    if result is not None:
        add(_action(result), "gen_ai.guardrail.result.value", a, verdict=result)
    if str(a.get("gen_ai.guardrail.status", "")).upper() == "FAILED":
        add("block", "gen_ai.guardrail.status", a)
    litellm = _first(a, "litellm.guardrail.action", "litellm.guardrail.status")
    if litellm is not None:
        word = str(litellm).lower()
        add(
            "block" if ("intervened" in word or "block" in word or "fail" in word) else _action(litellm),
            "litellm.guardrail",
            a,
            verdict=litellm,
        )
    threat = a.get("agent.threat.detection.action")
    if threat is not None:
        add(_action(threat), "agent.threat.detection.action", a, verdict=threat)
    if a.get("prompt_injection.blocked") in (True, "true", "True"):
        add("block", "prompt_injection.blocked", a)
    if a.get("gen_ai.agent.threat_detected") in (True, "true", "True"):
        add("warn", "gen_ai.agent.threat_detected", a)
    for event in json_list(span["signal_events"]):
        if not isinstance(event, dict):
            continue
        attrs = event.get("attributes") or {}
        if event.get("name") == "guard.evaluation":
            add(_action(attrs.get("guard.action")), "guard.evaluation", attrs, verdict=attrs.get("guard.action"))
        elif event.get("name") == "gen_ai.guardrail.result":
            add(
                _action(attrs.get("gen_ai.guardrail.result.value")),
                "gen_ai.guardrail.result",
                attrs,
                verdict=attrs.get("gen_ai.guardrail.result.value"),
            )
    if not found and span["span_type"] == "guardrail" and span["is_error"]:
        add("block", "guardrail span failed", a, verdict=span["status_message"] or span["error_message"])
    return found


def _describe(span: dict[str, Any], verdict: dict[str, Any]) -> dict[str, Any]:
    src = verdict.pop("_source")
    guardrail = (
        _first(
            src,
            "gen_ai.guardrail.component.name",
            "gen_ai.guardrail.name",
            "litellm.guardrail.name",
            "guard.name",
            "agent.threat.detection.ruleset",
            "agent.threat.detection.rule_id",
        )
        or span["name"]
    )
    phase = _phase(_first(src, "gen_ai.guardrail.source", "guard.phase", "litellm.guardrail.mode"))
    content = _first(
        src,
        "gen_ai.guardrail.content.input.value",
        "gen_ai.guardrail.content.output.value",
        "gen_ai.guardrail.input",
        "gen_ai.guardrail.output",
    )
    if content is None:
        content = span["guarded_output"] if phase == "output" else span["guarded_input"] or span["guarded_output"]
    return {
        "guardrail": str(guardrail),
        "phase": phase,
        "policy": _first(src, "gen_ai.guardrail.policy.id", "agent.threat.detection.rule_id", "guard.classification"),
        "reason": _first(
            src,
            "gen_ai.guardrail.result.reason",
            "guard.explanation",
            "gen_ai.guardrail.error.message",
            "litellm.guardrail.violation_categories",
        ),
        "risk": _first(
            src,
            "gen_ai.guardrail.risk.category",
            "gen_ai.guardrail.risk.score",
            "guard.score",
            "agent.threat.detection.severity",
            "litellm.guardrail.risk_score",
            "prompt_injection.risk_level",
        ),
        "content": str(content)[:EVIDENCE_CHARS] if content is not None else None,
        **verdict,
    }


def detect(spans: pl.DataFrame, config: DetectorConfig) -> pl.DataFrame:
    candidates = spans.filter(
        pl.col("signal_attributes").is_not_null()
        | pl.col("signal_events").is_not_null()
        | pl.col("guarded_output").is_not_null()
        | (pl.col("span_type") == "guardrail")
    )
    findings: list[Finding] = []
    for span in candidates.iter_rows(named=True):
        findings.extend(_span_findings(span))
    return frame(findings)


def _span_findings(span: dict[str, Any]) -> list[Finding]:
    out = []
    base = {
        "trace_id": span["trace_id"],
        "span_id": span["span_id"],
        "kind": "guardrail",
        "start_ns": span["start_time_unix_nano"],
    }
    for verdict in _verdicts(span):
        evidence = _describe(span, verdict)
        blocked = evidence["action"] in ("block", "redact")
        where = f" on {evidence['phase']}" if evidence["phase"] else ""
        out.append(
            Finding(
                **base,
                code="guardrail_block" if blocked else "guardrail_flag",
                severity="warning" if blocked else "info",
                message=f"guardrail {evidence['guardrail']}: {evidence['action']}{where}"
                + (f" ({evidence['reason']})" if evidence["reason"] else ""),
                evidence=evidence,
            )
        )
    tripwire = _tripwire(span)
    if span["span_type"] != "guardrail" and tripwire is not None:
        error_type, reason = tripwire
        out.append(
            Finding(
                **base,
                code="guardrail_block",
                severity="warning",
                message=f"guardrail tripwire: {error_type or ''} {reason or ''}".strip(),
                evidence={
                    "guardrail": error_type,
                    "action": "block",
                    "phase": None,
                    "signal": "tripwire exception",
                    "reason": reason,
                    "content": span["guarded_input"],
                },
            )
        )
    model = span["response_model"] or span["request_model"] or span["name"]
    reasons = (span["finish_reason"] or "").lower()
    output = span["guarded_output"] or ""
    if "content_filter" in reasons:
        out.append(
            Finding(
                **base,
                code="content_filter",
                severity="warning",
                message=f"{model}: answer stopped by the content filter",
                evidence={
                    "guardrail": "content_filter",
                    "action": "block",
                    "phase": "output",
                    "signal": "finish_reason",
                    "finish_reason": span["finish_reason"],
                    "content": output or None,
                },
            )
        )
    if "refusal" in reasons or _has_refusal_part(output):
        out.append(
            Finding(
                **base,
                code="refusal",
                severity="info",
                message=f"{model} refused: {_refusal_text(output)[:120]}",
                evidence={
                    "guardrail": "model refusal",
                    "action": "refuse",
                    "phase": "output",
                    "signal": "refusal",
                    "content": _refusal_text(output) or None,
                },
            )
        )
    return out


def _tripwire(span: dict[str, Any]) -> tuple[str | None, str | None] | None:
    """(exception type, message) when the span ended on a guardrail tripwire. The collector does not count a
    tripwire as a failure (an outcome, docs/conventions.md §3), so the exception event and the status say so."""
    if not (span["is_error"] or span["status_code"] == "ERROR"):
        return None
    exception = exception_details(span["signal_events"])
    error_type = span["error_type"] or exception.get("exception_type")
    message = span["error_message"] or exception.get("exception_message") or span["status_message"]
    return (error_type, message) if is_tripwire(error_type, message) else None


def _parts(output: str) -> list[dict[str, Any]]:
    return [p for m in json_list(output) if isinstance(m, dict) for p in (m.get("parts") or []) if isinstance(p, dict)]


_REFUSAL_PART = re.compile(r'"type"\s*:\s*"refusal"')


def _has_refusal_part(output: str) -> bool:
    # The output is cut to EVIDENCE_CHARS, so it may not parse: the part's type is enough to know.
    return bool(_REFUSAL_PART.search(output))


def _refusal_text(output: str) -> str:
    for part in _parts(output):
        if part.get("type") == "refusal":
            return str(part.get("content") or part.get("refusal") or "")
    return ""
