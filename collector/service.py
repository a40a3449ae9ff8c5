"""The collector process assembled: WAL, lake writer, ingest path, gRPC and HTTP receivers; start and stop.

Used by `agentflight collector` / `agentflight up` and by the tests (which bind port 0 and call flush()).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from dataclasses import dataclass, field

import uvicorn

from collector.config import Settings, WriterSettings
from collector.grpc_server import start_grpc_server
from collector.http_server import build_http_app
from collector.ingest import Ingestor
from collector.metrics import IngestMetrics
from collector.price_overrides import load_overrides
from collector.redaction import load_redaction_dir
from collector.wal import WriteAheadLog
from collector.writer_pool import WriterPool
from store.keys import KeyRing
from store.layout import LakeLayout, WriterLock

log = logging.getLogger(__name__)


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


@dataclass
class Collector:
    settings: Settings
    writer_settings: WriterSettings | None = None  # default: from settings
    metrics: IngestMetrics = field(default_factory=IngestMetrics)
    grpc_port: int = 0
    http_port: int = 0

    def start(self) -> Collector:
        s = self.settings
        self.lake = LakeLayout(s.lake_dir)
        self._writer_lock = WriterLock(s.lake_dir).acquire()
        self.wal = WriteAheadLog(s.wal_dir, fsync=s.fsync)
        self.metrics.wal_quarantined_records = self.wal.quarantined_records
        self.keys = KeyRing(s.keys_path)
        for path in sorted(s.prices_dir.glob("*.toml")):
            load_overrides(path)  # a bad price-override file stops start-up here, naming the file
        redactors = load_redaction_dir(s.redaction_dir)  # likewise a bad redaction file
        if redactors:
            log.info("redaction before the WAL for project(s): %s", ", ".join(sorted(redactors)))
        writer_settings = self.writer_settings or WriterSettings(
            flush_interval_seconds=s.flush_interval_seconds,
            retention_days=s.retention_days,
            processes=s.writer_processes,
        )
        self.writer = WriterPool(self.wal, s.lake_dir, s.prices_dir, writer_settings, self.metrics, s.log_level)
        self.ingestor = Ingestor(
            self.wal,
            self.keys,
            self.metrics,
            max_request_bytes=s.max_request_bytes,
            max_inflight_bytes=s.max_inflight_bytes,
            max_wal_backlog_bytes=s.max_wal_backlog_bytes,
            backlog_bytes=self.writer.backlog_bytes,
            redactors=redactors,
        )
        self.writer.start()
        self._grpc, self.grpc_port = start_grpc_server(
            self.ingestor, s.host, s.grpc_port, max_request_bytes=s.max_request_bytes, tls=s.tls
        )
        sock = bind_socket(s.host, s.http_port)
        self.http_port = sock.getsockname()[1]
        app = build_http_app(self.ingestor, self.metrics.snapshot)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
            ssl_certfile=str(s.tls_cert_file) if s.tls_cert_file else None,
            ssl_keyfile=str(s.tls_key_file) if s.tls_key_file else None,
        )
        self._http = uvicorn.Server(config)
        self._http_thread = threading.Thread(
            target=lambda: asyncio.run(self._http.serve(sockets=[sock])), name="otlp-http", daemon=True
        )
        self._http_thread.start()
        log.info(
            "OTLP HTTP receiver on %s:%d%s; lake at %s", s.host, self.http_port, " (TLS)" if s.tls else "", s.lake_dir
        )
        self._stop_reporting = threading.Event()
        threading.Thread(target=self._report, name="ingest-report", daemon=True).start()
        return self

    def _report(self, every_seconds: float = 60.0) -> None:
        """The ingest counters in the log once a minute, when anything changed (rejections are also logged
        as they happen)."""
        last: dict[str, object] = {}
        while not self._stop_reporting.wait(every_seconds):
            snap = self.metrics.snapshot()
            counts = {k: v for k, v in snap.items() if k not in ("uptime_seconds", "flush_lag_seconds")}
            if counts != last:
                log.info("ingest: %s", " ".join(f"{k}={v}" for k, v in snap.items()))
                last = counts

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every acknowledged export so far is published and queryable."""
        self.writer.flush(timeout)

    def stop(self, grace: float = 5.0) -> None:
        self._stop_reporting.set()
        self._http.should_exit = True
        event: threading.Event = self._grpc.stop(grace)
        event.wait(grace + 1)
        self._http_thread.join(timeout=grace + 5)
        self.writer.stop()
        self.wal.close()
        self._writer_lock.release()
