"""Readiness section "evals and prompts": evaluation scores in the lake, and prompt and model versions compared.

Evaluation results come from OTel `gen_ai.evaluation.result` events and `gen_ai.evaluation.*` / `gen_ai.eval.*`
span attributes (name, score value, label), OpenInference `eval.*`/`evaluations.N.*` attributes, and evaluator
spans (span type `evaluator`): per trace and aggregated per evaluation name. The prompt and model tables
answer "did v7 make it worse": traces, cost per trace, error rate and flag rate per prompt version and per
model version, from the counted model calls and the trace summaries.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from query.detect.signals import json_list, json_object, number
from query.readiness.scope import Scope
from query.readiness.verdict import check, pct, section, share

_NAME_KEYS = ("gen_ai.evaluation.name", "gen_ai.eval.name", "eval.name", "evaluation.name")
_SCORE_KEYS = ("gen_ai.evaluation.score.value", "gen_ai.evaluation.score", "gen_ai.eval.score", "eval.score")
_LABEL_KEYS = ("gen_ai.evaluation.score.label", "gen_ai.eval.label", "eval.label")


def _results(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluation results in one attribute map (a span's or an event's), flat or indexed (`evaluations.N.*`)."""
    out = []
    score = next((number(attributes[k]) for k in _SCORE_KEYS if k in attributes), None)
    label = next((attributes[k] for k in _LABEL_KEYS if k in attributes), None)
    if score is not None or label is not None:
        name = next((attributes[k] for k in _NAME_KEYS if k in attributes), None)
        out.append({"name": str(name or "evaluation"), "score": score, "label": label})
    indexed: dict[str, dict[str, Any]] = defaultdict(dict)
    for key, value in attributes.items():
        parts = key.split(".")
        if len(parts) >= 4 and parts[0] in ("evaluations", "annotations") and parts[1].isdigit():
            indexed[f"{parts[0]}.{parts[1]}"][parts[-1]] = value
    for values in indexed.values():
        if "score" in values or "label" in values:
            out.append({"name": str(values.get("name") or "evaluation"), "score": number(values.get("score")),
                        "label": values.get("label")})  # fmt: skip
    return out


def scores(scope: Scope) -> list[dict[str, Any]]:
    """Every evaluation result of the window: trace, span, name, score, label."""
    found = []
    for row in scope.rows(
        """SELECT trace_id, span_id, name, span_type, eval_attributes, eval_events FROM sp
           WHERE eval_attributes IS NOT NULL OR eval_events IS NOT NULL ORDER BY start_ns"""
    ):
        results = _results(json_object(row["eval_attributes"]))
        for event in json_list(row["eval_events"]):
            if isinstance(event, dict) and str(event.get("name", "")).startswith("gen_ai.evaluation"):
                results += _results(event.get("attributes") or {})
        if not results and row["span_type"] == "evaluator":
            results = [{"name": row["name"], "score": None, "label": None}]
        found += [{"trace_id": row["trace_id"], "span_id": row["span_id"], **r} for r in results]
    return found


def _compare(scope: Scope, key: str) -> list[dict[str, Any]]:
    return scope.rows(
        f"""WITH per_trace AS (SELECT DISTINCT trace_id, {key} AS version FROM us)
            SELECT p.version, count(*) AS traces, round(sum(t.cost_usd) / count(*), 8) AS cost_per_trace,
                   round(avg((t.error_count > 0)::INT), 4) AS error_rate,
                   round(avg((len(t.flags) > 0)::INT), 4) AS flag_rate
            FROM per_trace p JOIN sel t USING (trace_id) GROUP BY ALL ORDER BY p.version"""
    )


def build(scope: Scope) -> dict[str, Any]:
    results = scores(scope)
    aggregated: dict[str, list[float]] = defaultdict(list)
    labels: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in results:
        if r["score"] is not None:
            aggregated[r["name"]].append(r["score"])
        if r["label"] is not None:
            labels[r["name"]][str(r["label"])] += 1
    per_eval = [
        {
            "evaluation": name,
            "results": len([r for r in results if r["name"] == name]),
            "mean_score": round(sum(aggregated[name]) / len(aggregated[name]), 4) if aggregated[name] else None,
            "min_score": min(aggregated[name]) if aggregated[name] else None,
            "labels": json.dumps(dict(labels[name])) if labels[name] else None,
        }
        for name in sorted({r["name"] for r in results})
    ]
    calls = scope.one(
        "SELECT count(*) AS calls, count(*) FILTER (WHERE prompt_version IS NOT NULL) AS versioned FROM us"
    )
    versioned = share(calls.get("versioned"), calls.get("calls"))
    traces = scope.one("SELECT count(*) AS n FROM sel")["n"]
    checks = [
        check(
            "evaluations run in production",
            None if not traces else bool(results),
            f"{len(results)} evaluation result(s) in {len({r['trace_id'] for r in results})} trace(s)",
            sorted({r["trace_id"] for r in results})[:20],
        ),
        check(
            "prompts are versioned",
            None if not calls.get("calls") else versioned == 1.0,
            f"{pct(versioned)} of {calls.get('calls') or 0} model call(s) name a prompt version",
            scope.ids("SELECT trace_id FROM us WHERE prompt_version IS NULL GROUP BY trace_id ORDER BY min(start_ns)"),
        ),
    ]
    return section(
        "evals",
        "Evals and prompts",
        checks,
        evaluations=per_eval,
        scores=results[:200],
        prompt_versions=_compare(scope, "concat_ws(' v', prompt_name, prompt_version)"),
        model_versions=_compare(scope, "model"),
    )
