"""One trace as a tree: parent links, depth, start order, orphans, own and inclusive usage (pure functions).

Children are ordered by start time. A span whose parent never arrived (or whose parent chain loops) is an
orphan: it is attached under the root and marked, so nothing the agent sent is hidden. When the root itself
never arrived, the earliest span stands in for it. Own usage is the span's counted usage (leaf model spans
only, docs/design.md invariant 4); inclusive usage sums own usage over the subtree, so the root's inclusive numbers
are the trace's totals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from query.lineage import TOKEN_COLUMNS


@dataclass
class Node:
    span: dict[str, Any]
    depth: int = 0
    orphan: bool = False
    children: list[Node] = field(default_factory=list)
    descendants: int = 0
    own: dict[str, Any] = field(default_factory=dict)
    inclusive: dict[str, Any] = field(default_factory=dict)


def _order(span: dict[str, Any]) -> tuple[int, str]:
    return (span["start_time_unix_nano"] or 0, span["span_id"])


def _own_usage(span: dict[str, Any]) -> dict[str, Any]:
    counted = bool(span.get("counted"))
    usage: dict[str, Any] = {c: (span.get(c) or 0) if counted else 0 for c in TOKEN_COLUMNS}
    usage["cost_usd"] = span.get("cost_usd") if counted else None
    return usage


def _add(total: dict[str, Any], part: dict[str, Any]) -> None:
    for column in TOKEN_COLUMNS:
        total[column] += part[column]
    if part["cost_usd"] is not None:
        total["cost_usd"] = (total["cost_usd"] or 0.0) + part["cost_usd"]


def build_tree(spans: list[dict[str, Any]]) -> list[Node]:
    """The tree's nodes in depth-first order (a parent before its children, siblings by start time)."""
    if not spans:
        return []
    ordered = sorted(spans, key=_order)
    nodes = {s["span_id"]: Node(span=s) for s in ordered}
    roots = [nodes[s["span_id"]] for s in ordered if s.get("parent_span_id") is None]
    main = roots[0] if roots else nodes[ordered[0]["span_id"]]
    if not roots:
        main.orphan = True
        roots = [main]
    for span in ordered:
        node, parent_id = nodes[span["span_id"]], span.get("parent_span_id")
        if node is main or parent_id is None:
            continue
        parent = nodes.get(parent_id)
        if parent is None:
            node.orphan = True
            main.children.append(node)
        else:
            parent.children.append(node)
    visited: set[str] = set()
    out: list[Node] = []
    for root in roots:
        _walk(root, 0, visited, out)
    # Spans on a parent cycle are unreachable from any root: attach them to the main root, marked.
    strays = [nodes[s["span_id"]] for s in ordered if s["span_id"] not in visited]
    if strays:
        for stray in strays:
            stray.orphan = True
            main.children.append(stray)
        visited.clear()
        out = []
        for root in roots:
            _walk(root, 0, visited, out)
    for node in reversed(out):
        node.own = _own_usage(node.span)
        node.inclusive = dict(node.own)
        node.inclusive["cost_usd"] = node.own["cost_usd"]
        node.descendants = 0
        for child in node.children:
            _add(node.inclusive, child.inclusive)
            node.descendants += 1 + child.descendants
    return out


def _walk(root: Node, depth: int, visited: set[str], out: list[Node]) -> None:
    """Pre-order walk; a node is claimed when first reached, so each span appears exactly once."""
    if root.span["span_id"] in visited:
        return
    visited.add(root.span["span_id"])
    stack = [(root, depth)]
    while stack:
        node, level = stack.pop()
        node.depth = level
        out.append(node)
        kept = []
        for child in sorted(node.children, key=lambda n: _order(n.span)):
            if child.span["span_id"] not in visited:
                visited.add(child.span["span_id"])
                kept.append(child)
        node.children = kept
        stack.extend((child, level + 1) for child in reversed(kept))
