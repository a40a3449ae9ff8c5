"""The shape every readiness section answers in: checks with a held / not held verdict and the proving traces.

A check is `held` (True), `not held` (False) or `None` when the window has nothing to judge it on (no model
call, no side-effecting tool...). A section is held when all its judged checks are; tables carry the numbers
behind it (per service, per day, per model...) and hold no verdict.
"""

from __future__ import annotations

from typing import Any


def check(
    name: str, held: bool | None, summary: str, trace_ids: list[str] | None = None, **detail: Any
) -> dict[str, Any]:
    return {"check": name, "held": held, "summary": summary, "trace_ids": trace_ids or [], **detail}


def section(key: str, title: str, checks: list[dict[str, Any]], **tables: list[dict[str, Any]]) -> dict[str, Any]:
    judged = [c["held"] for c in checks if c["held"] is not None]
    held = None if not judged else all(judged)
    return {"section": key, "title": title, "held": held, "checks": checks, "tables": tables}


def share(part: int | None, whole: int | None) -> float | None:
    return round((part or 0) / whole, 4) if whole else None


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
