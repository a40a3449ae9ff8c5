"""Soak: a steady export rate for --minutes (default 10) against one collector: RSS growth, p99 export latency,
open file descriptors and part files, sampled every few seconds.

    .venv/bin/python -m bench.soak                      # 10 minutes at 5,000 spans/s
    .venv/bin/python -m bench.soak --minutes 1          # a quick look

Targets (issue 7): RSS growth at most 10 % (the last minute's mean against the second minute's, after the
start-up), p99 export latency reported, file descriptors and part files not growing beyond what compaction
bounds them to. The RSS of every process role (main, forkserver, each writer) is printed minute by minute, its
mean, and its floor (the minute's lowest sample: a leak raises the floor, a merge running raises only the mean).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

try:
    from bench.ingest import ProcessSampler, process_tree, start_collector
    from bench.overload import SPANS_PER_REQUEST, TRACE_METHOD, _port, build
except ImportError:  # run as `python bench/soak.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.ingest import ProcessSampler, process_tree, start_collector
    from bench.overload import SPANS_PER_REQUEST, TRACE_METHOD, _port, build

SAMPLE_SECONDS = 5.0
RSS_GROWTH_LIMIT = 0.10


def _fds(root: int) -> int:
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in process_tree(root) if os.path.isdir(f"/proc/{pid}/fd"))


def series(by_role: list[tuple[float, dict[str, float]]]) -> list[str]:
    """Per minute and per process role: the mean RSS of the samples, and in brackets their lowest."""
    roles = sorted({role for _, sample in by_role for role in sample})
    lines = ["collector RSS per minute, MB: mean [lowest sample] per process role, and the tree's total"]
    lines.append("minute  " + "".join(f"{role:>16}" for role in roles) + f"{'total':>16}")
    for minute in range(int(by_role[-1][0] // 60) + 1 if by_role else 0):
        rows = [sample for elapsed, sample in by_role if minute * 60 <= elapsed < (minute + 1) * 60]
        if not rows:
            continue
        cells = []
        for role in [*roles, None]:
            values = [sum(r.values()) if role is None else r.get(role, 0.0) for r in rows]
            cells.append(f"{statistics.mean(values):>8,.0f} [{min(values):>4,.0f}]")
        lines.append(f"{minute + 1:>6}  " + "".join(f"{cell:>16}" for cell in cells))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=5000.0, help="spans per second (default 5,000)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="agentflight-soak-"))
    grpc_port, http_port = _port(), _port()
    # INFO: the collector's log (kept in the folder) then has a line per compaction, with its size and seconds.
    collector = start_collector(folder / "data", grpc_port, http_port, True, ["--log-level", "INFO"])
    sampler = ProcessSampler(collector.process.pid)
    sampler.start()
    lake = folder / "data" / "lake" / "spans"
    latencies: list[float] = []
    samples: list[tuple[float, float, int, int]] = []  # (elapsed s, RSS MB, fds, part files)
    by_role: list[tuple[float, dict[str, float]]] = []  # (elapsed s, RSS MB per process role)
    failures = 0
    codes: dict[str, int] = {}
    stop = threading.Event()
    began = time.monotonic()

    def watch() -> None:
        while not stop.wait(SAMPLE_SECONDS):
            parts = sum(1 for _ in lake.rglob("*.parquet")) if lake.exists() else 0
            elapsed = time.monotonic() - began
            samples.append((elapsed, sampler.last_kb / 1024, _fds(collector.process.pid), parts))
            by_role.append((elapsed, {role: kb / 1024 for role, kb in sampler.last_kb_by_role.items()}))

    interval = SPANS_PER_REQUEST / args.rate
    index = 0
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)  # the HTTP health answers a moment earlier
            export = channel.unary_unary(TRACE_METHOD)
            began = time.monotonic()
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            while time.monotonic() - began < args.minutes * 60:
                index += 1
                body = build(index)
                due = began + index * interval
                time.sleep(max(0.0, due - time.monotonic()))
                sent = time.perf_counter()
                try:
                    export(body, timeout=60)
                    latencies.append((time.perf_counter() - sent) * 1000)
                except grpc.RpcError as error:
                    failures += 1
                    why = f"{error.code().name}: {error.details()}"
                    codes[why] = codes.get(why, 0) + 1
    finally:
        stop.set()
        sampler.stop()
        collector.stop()
    minute = [s for s in samples if 60 <= s[0] < 120] or samples[: max(1, len(samples) // 4)]
    last = [s for s in samples if s[0] >= samples[-1][0] - 60] if samples else []
    early_rss = statistics.mean(s[1] for s in minute)
    late_rss = statistics.mean(s[1] for s in last)
    growth = late_rss / early_rss - 1
    p50, p99 = statistics.median(latencies), statistics.quantiles(latencies, n=100)[98]
    fds, parts = [s[2] for s in samples], [s[3] for s in samples]
    achieved = len(latencies) * SPANS_PER_REQUEST / (time.monotonic() - began)
    report = [
        *series(by_role),
        f"soak: {args.minutes:g} min at {args.rate:,.0f} spans/s offered; {len(latencies):,} exports acknowledged "
        f"({achieved:,.0f} spans/s), {failures} failed {codes or ''}",
        f"export latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms",
        f"collector RSS (process tree): {early_rss:,.0f} MB in the second minute, {late_rss:,.0f} MB in the last "
        f"({growth:+.1%}; limit +{RSS_GROWTH_LIMIT:.0%}); peak {sampler.peak_kb / 1024:,.0f} MB",
        f"file descriptors: {min(fds)}..{max(fds)} (last {fds[-1]}); part files: {min(parts)}..{max(parts)} "
        f"(last {parts[-1]})",
    ]
    print("\n".join(report))
    # Kept with the data and the collector's log, for a run whose stdout was captured (bench.reliability).
    (folder / "soak-report.txt").write_text("\n".join(report) + "\n")
    print(f"soak: report, data and collector log kept in {folder}", file=sys.stderr)
    return 0 if growth <= RSS_GROWTH_LIMIT and failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
