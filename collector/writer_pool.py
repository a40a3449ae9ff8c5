"""The writer processes of a collector: starts one LakeWriter per WAL shard in its own process, relays
their progress and counters, answers flush(), restarts a writer that dies, and trims consumed WAL segments.

Protocol over one duplex pipe per writer:
    collector → writer: ("flush", segment, offset) | ("stop",)
    writer → collector: ("progress", segment, offset, counters)   after every publish
Processes come from a forkserver with the writer's imports preloaded, so starting one takes milliseconds
and never forks the collector's gRPC threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.abc
import logging
import multiprocessing
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from collector.checkpoints import resume_position
from collector.config import WriterSettings
from collector.maintainer import run_maintainer
from collector.metrics import IngestMetrics
from collector.wal import WalPosition, WriteAheadLog

log = logging.getLogger(__name__)

# A maintenance round waits while the writers are this far behind (a few seconds of a burst: the benchmark's
# 200k spans are ~380 MiB of WAL), for at most this many intervals (30 s -> 5 min).
MAINTENANCE_MAX_BACKLOG_BYTES = 16 * 1024 * 1024
MAINTENANCE_MAX_SKIPS = 10
_IDLE_POLL_SECONDS = 0.02  # how often an idle writer looks for new WAL records (latency to queryable)
_RESTART_DELAY_SECONDS = 1.0
_PR_SET_NAME = 15  # linux/prctl.h
_PR_SET_PDEATHSIG = 1


def _context() -> multiprocessing.context.ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    assert isinstance(ctx, multiprocessing.context.ForkServerContext)
    # genai_prices.data is imported by the first price a writer computes (12 ms and 3 MB each, unshared).
    preload = ["collector.writer", "collector.maintainer", "collector.pricing", "store.lake", "genai_prices.data"]
    ctx.set_forkserver_preload(preload)
    return ctx


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent (the forkserver, which exits with the collector) dies:
    a merge left running by a killed collector would race the restarted collector's own."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("pandas is kept out of agentflight's writer processes", name=name)


def without_pandas() -> None:
    """Keep pandas out of this process. pyarrow imports it on the first ``pa.array`` of a Python list (to ask
    whether the list is a pandas object), although nothing here uses pandas: 107 ms and 36 MB of RSS in every
    writer and maintenance process. An import of pandas now raises ImportError, which pyarrow takes as "pandas
    not installed". (A None in sys.modules would not do: pyarrow's compiled import returns the None.) Left alone
    where pandas is already imported."""
    if "pandas" not in sys.modules and not any(isinstance(f, _NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())


def name_process(name: str) -> None:
    """Set the kernel's name of this process (/proc/<pid>/comm, ps, top), so memory and CPU can be told apart
    per writer: every forkserver child otherwise shows the forkserver's command line."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def run_writer(
    lake_dir: Path, wal_dir: Path, prices_dir: Path, settings: WriterSettings, shard: int, start: WalPosition,
    conn: Connection, log_level: str,
) -> None:  # fmt: skip
    """Entry point of a writer process."""
    name_process(f"af-writer-{shard}")
    without_pandas()
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s[w%(process)d]: %(message)s")
    import pyarrow

    from collector.writer import LakeWriter  # imported here: the collector process never needs it

    # Arrow's default pool (mimalloc) keeps freed part buffers mapped; the system allocator returns them,
    # which keeps an idle writer's RSS near its baseline between publishes.
    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    from collector.pricing import ProjectPricers
    from store.lake import Lake

    writer = LakeWriter(
        wal_dir,
        Lake(lake_dir, writer_id=f"w{shard}"),
        ProjectPricers(prices_dir).for_project,
        settings,
        shard=shard,
        shards=settings.processes,
        start=start,
    )
    # The imported modules and the price tables (loaded by ProjectPricers) live as long as the process: frozen,
    # the cyclic collector stops walking them on every collection (1.43 -> 0.87 of a writer's 17.4 CPU-seconds
    # over the ingest benchmark's 100k spans: `bench/ingest.py --profile --gc-freeze`).
    gc.freeze()
    # A batch's objects die by reference count, not by the cyclic collector; a young collection every 700
    # allocations only moved them between generations. At 20,000 (a middle collection every 10 young ones, a
    # full one every 10 middle ones): GC 0.13 -> 0.02 s and the writer 51.9 -> 50.0 us/span over 100k spans
    # (bench/ingest.py --profile --spans 100000, two runs each, 2026-12-04).
    gc.set_threshold(20_000, 10, 10)
    flush_target: WalPosition | None = None
    stopping = False
    while True:
        while conn.poll(0):
            message = conn.recv()
            if message[0] == "flush":
                target = WalPosition(message[1], message[2])
                flush_target = target if flush_target is None else max(flush_target, target)
            elif message[0] == "stop":
                stopping = True
        try:
            read = writer.drain_once()
            caught_up = flush_target is not None and writer.read_position >= flush_target and read == 0
            behind = read >= settings.read_batch_records  # a full batch read: more may be waiting
            if writer.publish_due(caught_up=not behind) or caught_up or (stopping and read == 0):
                writer.publish()
                conn.send(("progress", writer.published_position.segment, writer.published_position.offset,
                           writer.counters.as_dict()))  # fmt: skip
                if caught_up:
                    flush_target = None
            if stopping and read == 0:
                return
            if read == 0:
                conn.poll(_IDLE_POLL_SECONDS)
        except (BrokenPipeError, EOFError):
            log.warning("writer %d: collector went away; stopping", shard)
            return
        except Exception:  # a failing batch must never stop the writer: log, back off, retry
            log.exception("writer %d: batch failed; retrying", shard)
            time.sleep(0.5)


@dataclass
class _Writer:
    shard: int
    process: BaseProcess | None = None
    conn: Connection | None = None
    position: WalPosition = field(default_factory=lambda: WalPosition(0, 0))
    counters: dict[str, Any] = field(default_factory=dict)
    send_lock: threading.Lock = field(default_factory=threading.Lock)


class WriterPool:
    def __init__(
        self,
        wal: WriteAheadLog,
        lake_dir: Path,
        prices_dir: Path,
        settings: WriterSettings,
        metrics: IngestMetrics,
        log_level: str = "INFO",
    ) -> None:
        self.wal = wal
        self.lake_dir, self.prices_dir = lake_dir, prices_dir
        self.settings = settings
        self.metrics = metrics
        self.log_level = log_level
        self._ctx = _context()
        self._writers = [_Writer(shard) for shard in range(settings.processes)]
        self._maintainer = _Writer(shard=-1)  # one maintenance round at a time (maintainer.py); position unused
        self._stopped = threading.Event()
        self._maintenance_lock = threading.Lock()
        self._progress = threading.Condition()
        self._stopping = False
        self._backlog_cache = (0.0, 0)
        start = resume_position(wal.directory)
        for writer in self._writers:
            writer.position = start
        metrics.wal_depth_bytes = lambda: self.wal.depth_bytes(self.published_position)
        metrics.flush_lag_seconds = self._flush_lag

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> WriterPool:
        for writer in self._writers:
            self._spawn(writer)
        threading.Thread(target=self._maintain_periodically, name="maintenance-timer", daemon=True).start()
        return self

    def _maintain_periodically(self) -> None:
        """Start a maintenance round every interval, unless the last one is still merging or the writers are
        behind. A process per round, not one kept waiting: an idle one held ~80 MB of the collector's PSS
        (bench/ingest.py, 462 -> 546 MB). While more than MAINTENANCE_MAX_BACKLOG_BYTES of the WAL waits for the
        writers (a burst), a round would take a merge's memory (~220 MB for 200k agent spans) on top of theirs
        and CPU from them, so it waits, for at most MAINTENANCE_MAX_SKIPS intervals."""
        skipped = 0
        while not self._stopped.wait(self.settings.maintenance_interval_seconds):
            running = self._maintainer.process
            if running is not None and running.is_alive():
                continue
            if self.backlog_bytes() > MAINTENANCE_MAX_BACKLOG_BYTES and skipped < MAINTENANCE_MAX_SKIPS:
                skipped += 1
                continue
            skipped = 0
            with self._maintenance_lock:  # stop() kills the round under way: none may start after it
                if self._stopping:
                    return
                self._spawn(self._maintainer)

    def _spawn(self, writer: _Writer) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        if writer is self._maintainer:
            target: Any = run_maintainer
            args: tuple[Any, ...] = (self.lake_dir, self.settings, child, self.log_level)
        else:
            # The start is fixed by the pool, never read by the process itself: another shard may already
            # have checkpointed past records this one has not published yet.
            target = run_writer
            args = (self.lake_dir, self.wal.directory, self.prices_dir, self.settings, writer.shard, writer.position,
                    child, self.log_level)  # fmt: skip
        name = "maintainer" if writer is self._maintainer else f"writer-{writer.shard}"
        process = self._ctx.Process(target=target, args=args, name=f"agentflight-{name}", daemon=True)
        process.start()
        child.close()
        writer.process, writer.conn = process, parent
        writer.counters = {}  # a new process counts from zero
        threading.Thread(target=self._listen, args=(writer, parent), name=f"{name}-pipe", daemon=True).start()

    def _listen(self, writer: _Writer, conn: Connection) -> None:
        process = writer.process  # this listener's process: a later maintenance round replaces writer.process
        round_counters: dict[str, Any] = {}  # a maintenance round's own, whatever round runs next
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "progress" and writer is self._maintainer:
                self._add_counters(round_counters, message[1])
                round_counters = message[1]
            elif message[0] == "progress":
                self._absorb(writer, WalPosition(message[1], message[2]), message[3])
        if self._stopping:
            return
        if writer is self._maintainer:
            assert process is not None
            process.join()
            if process.exitcode:  # the next round starts an interval later, as usual
                log.error("a maintenance round failed (exit code %s)", process.exitcode)
            return
        log.error("writer %d exited unexpectedly; restarting it (its records are still in the WAL)", writer.shard)
        time.sleep(_RESTART_DELAY_SECONDS)
        if not self._stopping:
            self._spawn(writer)

    def _absorb(self, writer: _Writer, position: WalPosition, counters: dict[str, Any]) -> None:
        self._add_counters(writer.counters, counters)
        writer.counters = counters
        with self._progress:
            writer.position = max(writer.position, position)
            self._progress.notify_all()
        self.wal.remove_segments_before(self.published_position)

    def _add_counters(self, previous: dict[str, Any], counters: dict[str, Any]) -> None:
        """Add what a process counted since its last report (`previous`) to the collector's metrics."""
        with self.metrics.lock:
            m = self.metrics
            for name, value in counters.items():
                if name == "unknown_price_models":
                    for model, count in value.items():
                        m.unknown_price_models[model] += count - previous.get(name, {}).get(model, 0)
                else:
                    setattr(m, name, getattr(m, name) + value - previous.get(name, 0))

    def stop(self, timeout: float = 60.0) -> None:
        with self._maintenance_lock:
            self._stopping = True
            self._stopped.set()
            # A merge under way is not waited for: its inputs stay in place until it has written its output.
            maintainer = self._maintainer.process
            if maintainer is not None and maintainer.is_alive():
                maintainer.kill()
        for writer in self._writers:
            self._send(writer, ("stop",))
        deadline = time.monotonic() + timeout
        for writer in self._writers:
            if writer.process is not None:
                writer.process.join(max(0.1, deadline - time.monotonic()))
                if writer.process.is_alive():
                    log.error("writer %d did not stop in time; killing it (the WAL keeps its records)", writer.shard)
                    writer.process.kill()
                    writer.process.join(5)
        if maintainer is not None:
            maintainer.join(5)

    def _send(self, writer: _Writer, message: tuple[Any, ...]) -> None:
        if writer.conn is None:
            return
        # A dead writer is restarted by its listener; a send to it is simply lost.
        with writer.send_lock, contextlib.suppress(BrokenPipeError, OSError):
            writer.conn.send(message)

    # --- progress ---------------------------------------------------------------------------------

    @property
    def published_position(self) -> WalPosition:
        with self._progress:
            return min(w.position for w in self._writers)

    def flush(self, timeout: float = 60.0) -> None:
        """Block until every record durable in the WAL when called is published and queryable."""
        target = self.wal.durable_position
        deadline = time.monotonic() + timeout
        with self._progress:
            while min(w.position for w in self._writers) < target:
                for writer in self._writers:
                    if writer.position < target:
                        self._send(writer, ("flush", target.segment, target.offset))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"writers did not reach {target} within {timeout}s")
                self._progress.wait(min(remaining, 0.25))

    def backlog_bytes(self) -> int:
        """WAL bytes not yet published, re-measured at most every 100 ms (it is asked on every export)."""
        measured_at, value = self._backlog_cache
        now = time.monotonic()
        if now - measured_at > 0.1:
            value = self.wal.depth_bytes(self.published_position)
            self._backlog_cache = (now, value)
        return value

    def _flush_lag(self) -> float:
        """Seconds the oldest acknowledged, not yet queryable record has waited; 0 when caught up."""
        return self.wal.unpublished_age_seconds(self.published_position)
