"""The lake's layout on disk: table and partition paths, part listing, and the one-writer lock.

The only code that knows where lake files live (store/lake.py builds on it for Parquet I/O). It imports
neither pyarrow nor DuckDB, so the collector's receiving process stays small. Layout (public):
    <lake>/spans/project=<p>/date=<YYYY-MM-DD>/part-<ns>-<writer>-<uuid>.parquet
    <lake>/events/project=<p>/date=<YYYY-MM-DD>/part-<ns>-<writer>-<uuid>.parquet
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

TABLES = ("spans", "events")


@dataclass(frozen=True, slots=True)
class Part:
    table: str
    project: str
    date: str
    path: Path

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0


def partition_date(unix_nano: int) -> str:
    return dt.datetime.fromtimestamp(unix_nano / 1e9, tz=dt.UTC).strftime("%Y-%m-%d")


def _valid_segment(value: str) -> str:
    """Project names become directory names: refuse anything that could escape the lake."""
    if not value or "/" in value or "\\" in value or value in (".", "..") or "\x00" in value:
        raise ValueError(f"invalid partition value {value!r}")
    return value


class LakeLayout:
    def __init__(self, root: Path, writer_id: str = "w0") -> None:
        self.root = root
        self.writer_id = writer_id
        self.retired_dir = root / "_retired"
        # Where a compaction's sort may spill (DuckDB's default is ./.tmp, wherever the collector was started).
        self.compaction_tmp_dir = root / "_compaction_tmp"

    # --- paths ------------------------------------------------------------------------------------

    def table_dir(self, table: str) -> Path:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        return self.root / table

    def partition_dir(self, table: str, project: str, date: str) -> Path:
        return self.table_dir(table) / f"project={_valid_segment(project)}" / f"date={_valid_segment(date)}"

    def glob(self, table: str, project: str | None = None) -> str:
        """The DuckDB glob for one table, optionally narrowed to one project's partitions."""
        base = self.table_dir(table)
        if project is not None:
            return str(base / f"project={_valid_segment(project)}" / "*" / "*.parquet")
        return str(base / "*" / "*" / "*.parquet")

    def parts(self, table: str, project: str | None = None) -> list[Part]:
        pattern = self.glob(table, project)
        base = self.table_dir(table)
        found = []
        for path in sorted(base.glob(str(Path(pattern).relative_to(base)))):
            project_dir, date_dir = path.parent.parent.name, path.parent.name
            found.append(Part(table, project_dir.split("=", 1)[1], date_dir.split("=", 1)[1], path))
        return found


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriterLock:
    """An exclusive lock on the lake for its one writer (docs/design.md invariant 3): a second collector on the
    same data directory, or `reprice` while a collector runs, is refused instead of corrupting state."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / ".writer.lock"
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(
                f"another agentflight writer holds {self.path}; stop the running collector first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
