"""Writer checkpoints: how far each lake writer has published the WAL, stored as one small JSON file per
writer beside the WAL, and where every writer resumes after a restart."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from collector.wal import WalPosition, list_segments

log = logging.getLogger(__name__)


def checkpoint_path(wal_dir: Path, writer_id: str) -> Path:
    return wal_dir / f"checkpoint-{writer_id}.json"


def load_checkpoint(path: Path) -> WalPosition:
    try:
        doc = json.loads(path.read_text())
        return WalPosition(int(doc["segment"]), int(doc["offset"]))
    except FileNotFoundError:
        return WalPosition(0, 0)
    except (ValueError, KeyError, TypeError):
        log.error("writer: checkpoint %s unreadable; replaying the whole WAL (duplicates are removed on read)", path)
        return WalPosition(0, 0)


def resume_position(wal_dir: Path) -> WalPosition:
    """Where every shard resumes: the lowest checkpoint of all. Resuming a shard from its own checkpoint
    would lose records if the number of shards changed between runs; the lowest one at worst replays
    a second's worth of records twice, which reads deduplicate."""
    positions = [load_checkpoint(path) for path in wal_dir.glob("checkpoint-*.json")]
    if not positions:
        first = list_segments(wal_dir)
        return WalPosition(first[0], 0) if first else WalPosition(0, 0)
    return min(positions)


def store_checkpoint(path: Path, position: WalPosition) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as handle:
        json.dump({"segment": position.segment, "offset": position.offset}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
