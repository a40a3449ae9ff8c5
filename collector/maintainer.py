"""Lake maintenance off the ingest path: compaction of small parts, retention, deletion of retired parts and of
half-written ones, every maintenance interval, each round in a process of its own at the lowest CPU priority.

A merge costs CPU in proportion to what it rewrites (200k agent spans: ~6 s). In writer 0, where it ran before,
it stopped that shard's publishing for the length of the merge and took the cores the other writer needed: one
that started during bench.detect's ingest runs cut throughput to ~2.6k spans/s. At nice 19 a merge takes the
cores' spare time; while ingest leaves none it waits, and parts pile up meanwhile (readers merge them on read as
they always do).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from collector.config import WriterSettings
from collector.metrics import WriterCounters

if TYPE_CHECKING:  # the receiving process imports this module for the entry point and must not load pyarrow
    from store.lake import Lake

log = logging.getLogger(__name__)

MAINTAINER_NICE = 19
MAINTAINER_ID = "m0"  # in the names of the parts it writes, where writers put w<shard>


def run_maintainer(lake_dir: Path, settings: WriterSettings, conn: Connection, log_level: str) -> None:
    """Entry point of a maintenance process: one round, its counters sent back, then exit."""
    from collector.writer_pool import die_with_parent, name_process, without_pandas

    name_process("af-maintainer")
    without_pandas()
    die_with_parent()
    os.setpriority(os.PRIO_PROCESS, 0, max(MAINTAINER_NICE, os.getpriority(os.PRIO_PROCESS, 0)))
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s[m%(process)d]: %(message)s")
    import pyarrow

    from store.lake import Lake

    pyarrow.set_memory_pool(pyarrow.system_memory_pool())  # as the writers: freed merge buffers go back
    lake = Lake(lake_dir, writer_id=MAINTAINER_ID)
    # Spill files of a merge killed half-way (rounds never overlap: the pool starts one when the last has ended).
    shutil.rmtree(lake.compaction_tmp_dir, ignore_errors=True)
    counters = WriterCounters()
    try:
        maintain(lake, settings, counters)
    finally:  # what was merged before a failure is counted too
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(("progress", counters.as_dict()))


def maintain(lake: Lake, settings: WriterSettings, counters: WriterCounters) -> list[Path]:
    """One round: merge the small parts of every partition, drop partitions past retention, delete the inputs
    of earlier merges once their grace period is over, and part files a killed process left half-written.
    Returns the partitions retention dropped."""
    for table in ("spans", "events"):
        for group in list(lake.compaction_candidates(table, settings.compact_min_parts, settings.compact_small_bytes)):
            began, size_in = time.monotonic(), sum(part.size for part in group)
            merged, duplicates = lake.compact(group)
            log.info(
                "compacted %d %s parts (%.1f MB) into %s (%.1f MB) in %.2f s, %d duplicates removed",
                len(group), table, size_in / 1e6, merged.path.name, merged.size / 1e6, time.monotonic() - began,
                duplicates,
            )  # fmt: skip
            counters.parts_compacted += len(group)
            if table == "spans":
                counters.spans_deduplicated += duplicates
    dropped = lake.drop_older_than(settings.retention_days) if settings.retention_days is not None else []
    for partition in dropped:
        log.info("retention: dropped %s", partition)
    lake.purge_retired()
    if removed := lake.remove_unfinished():
        log.info("removed %d part files left half-written by a killed process", removed)
    return dropped
