"""Overload: offer a collector 3x the rate it sustains and check that memory stays bounded, that clients are
told to retry (gRPC UNAVAILABLE with RetryInfo), and that every refused span is stored once the retries land.

    .venv/bin/python -m bench.overload                 # ~2 minutes: calibrate 10 s, overload 20 s, drain

The sustainable rate is measured first (closed loop, 4 senders, 10 s); then an open-loop client offers 3x
that for --seconds, retrying each refused request after the delay the collector asked for. Requests are
512 small spans with unique ids (pre-built), so counting the lake at the end proves nothing was lost.
"""

from __future__ import annotations

import argparse
import queue
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

try:
    from bench.ingest import ProcessSampler, start_collector
except ImportError:  # run as `python bench/overload.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.ingest import ProcessSampler, start_collector

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SPANS_PER_REQUEST = 512
NOW = 1_790_000_000_000_000_000


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build(index: int) -> bytes:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    kv = resource.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "overload"
    scope = resource.scope_spans.add()
    for i in range(SPANS_PER_REQUEST):
        span = scope.spans.add()
        span.trace_id = index.to_bytes(12, "big") + (i // 8).to_bytes(4, "big")
        span.span_id = (index * SPANS_PER_REQUEST + i + 1).to_bytes(8, "big")
        span.name = f"step {i % 17}"
        span.start_time_unix_nano = NOW + i
        span.end_time_unix_nano = NOW + i + 1_000_000
    return request.SerializeToString()


def _retry_delay(error: grpc.RpcError) -> float:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            from google.rpc import error_details_pb2, status_pb2

            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return 1.0


def calibrate(port: int, bodies: list[bytes], seconds: float) -> float:
    """Closed loop with 4 senders: spans acknowledged per second."""
    done = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    counter = iter(range(len(bodies)))

    def sender() -> None:
        nonlocal done
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            export = channel.unary_unary(TRACE_METHOD)
            while time.monotonic() < deadline:
                try:
                    export(bodies[next(counter)], timeout=60)
                except (grpc.RpcError, StopIteration):
                    continue
                with lock:
                    done += SPANS_PER_REQUEST

    threads = [threading.Thread(target=sender) for _ in range(4)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done / (time.monotonic() - began)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to offer 3x (default 20)")
    parser.add_argument("--factor", type=float, default=3.0, help="offered / sustainable (default 3)")
    parser.add_argument(
        "--collector-args",
        default="--max-wal-backlog-bytes 67108864 --max-inflight-bytes 67108864",
        help="flags for the collector (default: 64 MiB WAL backlog and in-flight limits, to refuse early)",
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="agentflight-overload-"))
    grpc_port, http_port = _port(), _port()
    collector = start_collector(folder / "data", grpc_port, http_port, True, args.collector_args.split())
    sampler = ProcessSampler(collector.process.pid)
    sampler.start()
    try:
        calibration_bodies = [build(i) for i in range(1, 1201)]
        sustainable = calibrate(grpc_port, calibration_bodies, 10.0)
        offered = sustainable * args.factor
        requests = int(offered * args.seconds / SPANS_PER_REQUEST)
        first = len(calibration_bodies) + 1
        print(f"sustainable {sustainable:,.0f} spans/s; offering {offered:,.0f} spans/s for {args.seconds:.0f} s "
              f"({requests} requests)", flush=True)  # fmt: skip
        bodies = [build(first + i) for i in range(requests)]
        baseline_rss = sampler.last_kb / 1024
        retries: queue.Queue[tuple[float, int]] = queue.Queue()
        refused = accepted = 0
        lock = threading.Lock()
        work: queue.Queue[int] = queue.Queue()

        def worker() -> None:
            nonlocal refused, accepted
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                export = channel.unary_unary(TRACE_METHOD)
                while True:
                    index = work.get()
                    if index < 0:
                        return
                    try:
                        export(bodies[index], timeout=60)
                        with lock:
                            accepted += 1
                    except grpc.RpcError as error:
                        if error.code() != grpc.StatusCode.UNAVAILABLE:
                            raise
                        with lock:
                            refused += 1
                        retries.put((time.monotonic() + _retry_delay(error), index))

        workers = [threading.Thread(target=worker, daemon=True) for _ in range(16)]
        for w in workers:
            w.start()
        interval = SPANS_PER_REQUEST / offered
        began = time.monotonic()
        for index in range(requests):  # open loop: the offer does not wait for answers
            while time.monotonic() < began + index * interval:
                time.sleep(0.001)
            work.put(index)
        offer_seconds = time.monotonic() - began
        while accepted < requests:  # the client's retries, each after the delay the collector asked for
            try:
                due, index = retries.get(timeout=1)
            except queue.Empty:
                continue
            time.sleep(max(0.0, due - time.monotonic()))
            work.put(index)
        for _ in workers:
            work.put(-1)
        drained = time.monotonic() - began
        peak_rss = sampler.peak_kb / 1024
    finally:
        sampler.stop()
        stop_seconds = collector.stop()
    parts = str(folder / "data" / "lake" / "spans" / "**" / "*.parquet")
    first_overload_id = (first * SPANS_PER_REQUEST + 1).to_bytes(8, "big").hex()  # fixed-width hex sorts as numbers
    expected = requests * SPANS_PER_REQUEST
    row = (
        duckdb.connect()
        .execute(
            "SELECT count(DISTINCT span_id) FILTER (WHERE span_id >= ?), count(DISTINCT span_id) FROM read_parquet(?)",
            [first_overload_id, parts],
        )
        .fetchone()
    )
    got, stored = (row[0], row[1]) if row else (0, 0)
    print(f"offered {requests} requests in {offer_seconds:.1f} s; refused {refused} times (UNAVAILABLE, "
          f"RetryInfo); all accepted after {drained:.1f} s; collector stopped in {stop_seconds:.1f} s")  # fmt: skip
    print(f"collector RSS (process tree): {baseline_rss:,.0f} MB before the overload, peak {peak_rss:,.0f} MB")
    print(f"stored: {got:,} of {expected:,} offered spans ({'all' if got == expected else 'MISSING SOME'}); "
          f"{stored:,} spans in the lake in all")  # fmt: skip
    return 0 if got == expected and refused > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
