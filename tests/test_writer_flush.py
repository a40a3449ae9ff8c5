"""When a lake writer publishes what it has buffered: by size, by how long it has held it, and, once caught up
with the WAL, by how long ago its rows were received."""

from __future__ import annotations

import time
from pathlib import Path

from collector.config import WriterSettings
from collector.pricing import ProjectPricers
from collector.wal import SIGNAL_TRACES, WriteAheadLog
from collector.writer import LakeWriter
from store.lake import Lake
from tests.test_bad_input import _request

SETTINGS = WriterSettings(flush_rows=1_000, flush_interval_seconds=5.0, read_batch_records=4)


def _writer(
    tmp_path: Path, received_ago_seconds: float, requests: int = 1, settings: WriterSettings = SETTINGS
) -> LakeWriter:
    wal = WriteAheadLog(tmp_path / "wal")
    received = time.time_ns() - int(received_ago_seconds * 1e9)
    for index in range(requests):
        body = _request(["a", "b"], trace_byte=index + 1).SerializeToString()
        wal.append_and_wait(SIGNAL_TRACES, "default", received, body)
    wal.close()
    pricers = ProjectPricers(tmp_path / "prices").for_project
    return LakeWriter(tmp_path / "wal", Lake(tmp_path / "lake", writer_id="w0"), pricers, settings)


def test_a_caught_up_writer_publishes_at_once_rows_received_an_interval_ago(tmp_path: Path) -> None:
    writer = _writer(tmp_path, received_ago_seconds=6.0)
    assert writer.drain_once() == 1
    # behind (a full batch was read): size and holding time decide, and neither is reached
    assert not writer.publish_due(caught_up=False)
    # caught up: these rows have waited longer than the interval since they were received
    assert writer.publish_due(caught_up=True)
    writer.publish()
    assert writer.counters.spans_written == 2
    assert not writer.publish_due(caught_up=True)  # nothing left buffered


def test_fresh_rows_wait_for_the_interval_even_when_caught_up(tmp_path: Path) -> None:
    writer = _writer(tmp_path, received_ago_seconds=0.0)
    writer.drain_once()
    assert not writer.publish_due(caught_up=True)


def test_size_alone_publishes_a_writer_that_is_behind(tmp_path: Path) -> None:
    many = WriterSettings(flush_rows=4, flush_interval_seconds=5.0, read_batch_records=4)
    writer = _writer(tmp_path, received_ago_seconds=0.0, requests=2, settings=many)
    writer.drain_once()
    assert writer.publish_due(caught_up=False)
