"""Derived data files (trace summaries, counted usage rows, findings): where they live and how they are swapped.

Derived data is recomputable from the spans at any time (docs/design.md, Storage); it is kept only to make listing
fast. Each file is computed from one (project, date) partition of the span lake and named by a fingerprint
of that partition's part files, so a reader knows at a glance whether it is current:
    <lake>/_derived/<kind>/project=<p>/date=<YYYY-MM-DD>/<fingerprint>.parquet
Files are written as `.tmp` and renamed, like parts. Any process may (re)build one: the same inputs give
the same file, so two API replicas racing on a rebuild both publish identical content.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from store.layout import LakeLayout, Part, fsync_dir

DERIVED_KINDS = ("traces", "usage", "findings")


def fingerprint(parts: list[Part], version: str) -> str:
    """Names a partition's state: its part files (names and sizes) and the code version that derived it."""
    digest = hashlib.sha256(version.encode())
    for part in sorted(parts, key=lambda p: p.path.name):
        digest.update(f"\0{part.path.name}:{part.size}".encode())
    return digest.hexdigest()[:24]


class DerivedStore:
    def __init__(self, lake_root: Path) -> None:
        self.layout = LakeLayout(lake_root)
        self.root = lake_root / "_derived"
        # partition directory -> (its mtime when listed, its parts then)
        self._listings: dict[str, tuple[int, list[Part]]] = {}

    def partition_dir(self, kind: str, project: str, date: str) -> Path:
        if kind not in DERIVED_KINDS:
            raise ValueError(f"unknown derived kind {kind!r}")
        # The layout validates the segments; the derived tree mirrors the lake's partitioning.
        relative = self.layout.partition_dir("spans", project, date).relative_to(self.layout.table_dir("spans"))
        return self.root / kind / relative

    def path(self, kind: str, project: str, date: str, print_: str) -> Path:
        return self.partition_dir(kind, project, date) / f"{print_}.parquet"

    def publish(
        self, kind: str, project: str, date: str, print_: str, table: pa.Table, keep: str | None = None
    ) -> Path:
        """Write one derived file and remove the partition's others (but the one named by `keep`)."""
        final = self.path(kind, project, date, print_)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
        pq.write_table(table, tmp, compression="zstd", compression_level=1)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        kept = {final, self.path(kind, project, date, keep) if keep else final}
        for stale in final.parent.glob("*.parquet"):
            if stale not in kept:
                stale.unlink(missing_ok=True)
        return final

    def rename(self, project: str, date: str, old: str, new: str) -> Path:
        """Name a partition's files by another fingerprint (the same content under a new set of parts, e.g.
        after compaction); traces last, as in publish. The old names stay one more round, like a published
        file's previous generation, for a reader that listed them a moment ago. Returns the usage file's path."""
        for kind in ("usage", "findings", "traces"):
            target = self.path(kind, project, date, new)
            if not target.exists():
                os.link(self.path(kind, project, date, old), target)
            fsync_dir(target.parent)
            for stale in target.parent.glob("*.parquet"):
                if stale.name not in (target.name, f"{old}.parquet"):
                    stale.unlink(missing_ok=True)
        return self.path("usage", project, date, new)

    def dates(self, kind: str, project: str) -> list[str]:
        base = self.root / kind / self.partition_dir(kind, project, "x").parent.name
        if not base.exists():
            return []
        return sorted(d.name.split("=", 1)[1] for d in base.glob("date=*"))

    def drop(self, kind: str, project: str, date: str) -> None:
        shutil.rmtree(self.partition_dir(kind, project, date), ignore_errors=True)

    def spans_by_date(self, project: str) -> dict[str, list[Part]]:
        return self._by_date("spans", project)

    def events_by_date(self, project: str) -> dict[str, list[Part]]:
        return self._by_date("events", project)

    def _by_date(self, table: str, project: str) -> dict[str, list[Part]]:
        """A table's parts per date partition. A partition directory is listed again only when its mtime has
        changed (a part renamed in or out): parts are immutable, so the last listing still holds otherwise.
        Every API read lists the lake first; globbing a 10M-span lake's 600 parts took 2.5 ms of it."""
        base = self.layout.partition_dir(table, project, "x").parent
        by_date: dict[str, list[Part]] = {}
        try:
            entries = list(os.scandir(base))
        except FileNotFoundError:
            return by_date
        for entry in sorted(entries, key=lambda e: e.name):
            if not entry.name.startswith("date=") or not entry.is_dir():
                continue
            try:
                mtime = entry.stat().st_mtime_ns
            except FileNotFoundError:
                continue  # dropped by retention a moment ago
            cached = self._listings.get(entry.path)
            if cached is None or cached[0] != mtime:
                date = entry.name.split("=", 1)[1]
                paths = sorted(Path(entry.path).glob("*.parquet"))
                cached = (mtime, [Part(table, project, date, path) for path in paths])
                self._listings[entry.path] = cached
            if cached[1]:
                by_date[cached[1][0].date] = cached[1]
        listed = {entry.path for entry in entries}
        for path in [p for p in self._listings if p.startswith(str(base) + os.sep) and p not in listed]:
            del self._listings[path]  # a partition retention dropped
        return by_date
