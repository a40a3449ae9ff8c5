"""The readiness report as plain text, for `agentflight report` (a terminal, a CI log, a README).

Values that come from spans (model, tool and service names) are printed with control characters removed, so a
hostile name cannot move the cursor or recolour the terminal. Tables are cut to TABLE_ROWS rows.
"""

from __future__ import annotations

import re
from typing import Any

TABLE_ROWS = 8
TRACE_IDS = 3  # proving trace ids printed per check; the API answer has up to 20
WIDTH = 34  # widest cell of a table
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _clean(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.6f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.2f}"
    elif isinstance(value, list):
        text = ", ".join(_clean(v) for v in value)
    else:
        text = str(value)
    return _CONTROL.sub("", text)


def verdict(held: bool | None) -> str:
    return "n/a" if held is None else ("held" if held else "NOT HELD")


def _mark(held: bool | None) -> str:
    return "[ -- ]" if held is None else ("[ ok ]" if held else "[FAIL]")


def table(rows: list[dict[str, Any]], indent: str = "      ") -> list[str]:
    if not rows:
        return []
    columns = list(rows[0])
    cells = [[_clean(r.get(c))[:WIDTH] for c in columns] for r in rows[:TABLE_ROWS]]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = [indent + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += [indent + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    if len(rows) > TABLE_ROWS:
        lines.append(f"{indent}… {len(rows) - TABLE_ROWS} more row(s)")
    return lines


def render(report: dict[str, Any]) -> str:
    totals = report["totals"]
    lines = [
        f"agentflight readiness report: project {_clean(report['project'])}, "
        f"{_clean(report['service']) if report['service'] else 'all services'}",
        f"window {report['since']} .. {report['until']}: {totals.get('traces') or 0} traces, "
        f"{totals.get('sessions') or 0} sessions, {totals.get('users') or 0} users, {totals.get('spans') or 0} spans, "
        f"${totals.get('cost_usd') or 0:.6f}",
        f"overall: {verdict(report['held'])}",
    ]
    for service in report["services"]:
        marks = ", ".join(f"{name} {verdict(held)}" for name, held in service["sections"].items())
        lines.append(f"  {_clean(service['service'])}: {verdict(service['held'])} ({marks})")
    for section in report["sections"]:
        lines += ["", f"== {section['title']}: {verdict(section['held'])}"]
        for check in section["checks"]:
            lines.append(f"  {_mark(check['held'])} {_clean(check['check'])}: {_clean(check['summary'])}")
            if check["trace_ids"]:
                shown = ", ".join(check["trace_ids"][:TRACE_IDS])
                more = f" (+{len(check['trace_ids']) - TRACE_IDS})" if len(check["trace_ids"]) > TRACE_IDS else ""
                lines.append(f"         traces: {shown}{more}")
        for name, rows in section["tables"].items():
            if rows:
                lines.append(f"    {name.replace('_', ' ')}:")
                lines += table(rows)
    return "\n".join(lines) + "\n"
