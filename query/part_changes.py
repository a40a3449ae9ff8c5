"""Which of a partition's part files hold spans an index has not summarised yet (pure, but for reading the
compaction record of a part it has not seen).

A partition changes in three ways: the writer adds a part (new spans), compaction replaces parts by one that
records their names (the same spans), and re-pricing or an unknown tool replaces parts without a record. An
index that knows which part names its rows reflect can then tell an increment from a rename, and knows when
only a whole re-derive is sure to be right.
"""

from __future__ import annotations

from store.lake import compacted_sources
from store.layout import Part


def new_content(
    seen: frozenset[str], parts: list[Part], sources: dict[str, frozenset[str] | None]
) -> list[Part] | None:
    """The parts whose spans are not reflected in `seen` (the part names summarised), or None when a part
    vanished that no current part's compaction record accounts for. `sources` caches each part's record."""

    def merged_from(part: Part) -> frozenset[str] | None:
        name = part.path.name
        if name not in sources:
            sources[name] = compacted_sources(part)
        return sources[name]

    added = []
    for part in parts:
        if part.path.name in seen:
            continue
        merged = merged_from(part)
        if merged is None or not merged <= seen:
            added.append(part)  # a writer's part, or a merge holding parts never summarised
    vanished = seen - {p.path.name for p in parts}
    if vanished:
        accounted: set[str] = set()
        for part in parts:
            accounted |= merged_from(part) or frozenset()
        if not vanished <= accounted:
            return None
    return added
