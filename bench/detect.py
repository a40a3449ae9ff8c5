"""Detector benchmark: detector throughput, flagged-trace and findings latency, what findings kept current cost ingest.

Run from the repository root:  .venv/bin/python -m bench.detect [--spans 1000000 10000000] [--lake DIR]
[--parts detect,api,ingest] [--json]

1. **detect** (in this process, per lake): for every (project, date) partition of the lake, the index's own
   `TraceIndex._derive` is run twice on the partition's part files, into a scratch derived store (the lake's own
   `_derived` is never touched): once as shipped, and once with the detectors switched off (no signal columns read,
   `DETECT_SELECT` replaced by NULLs, and an empty detector registry, i.e. the index as it was before detectors).
   Every step is timed by wrapping the real functions: the read (`TraceIndex._light_spans`, with `DETECT_SELECT`),
   `with_lineage`, `query.detect.registry.run` and each detector inside it, `trace_rows`, `usage_rows`; the rest of
   `_derive` is Arrow conversion and publishing the three derived files. Detector throughput is spans /
   `registry.run` seconds. The page cache is warmed before each partition and the two runs alternate which goes first.
2. **api** (per lake): `agentflight api` over the lake as bench/query.py starts it (the index is built or loaded before
   /health answers), then each operation once ("first"), then `--repeats` times interleaved over HTTP:
   `GET /traces?limit=50` (the baseline: the unfiltered first page), `?flag=loop`, `?flag=error`,
   `GET /findings?kind=loop`, `GET /findings/counts`. p50 / p95 / max, and the ratio to the baseline and to the
   200 ms trace-list target.
3. **ingest** (once, independent of the lake): bench/ingest.py's run (collector in its own process, pre-serialized
   requests from K sender processes, fsync on, clock from first send to every span queryable) in three modes,
   interleaved over `--ingest-rounds` rounds: the collector alone; with an API process on the same data directory
   polling `GET /traces?flag=loop` every `--poll-every` seconds (each poll refreshes the index, which summarises
   again, detectors included, the traces that the parts published since the last poll touch); and the
   same with the detectors switched off in the API (as in 1). The ratios to "alone" show what keeping the index and
   findings current costs ingest on this machine, and the difference between the two API modes is the detectors' own
   share. The API competes with the collector for the same two cores: that is the cost measured.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

try:
    from bench import lakegen
    from bench import query as query_bench
except ImportError:  # run as `python bench/detect.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import lakegen
    from bench import query as query_bench

# bench/ingest.py imports its workload as `workload` or `bench.workload`, which mypy refuses to follow from here, and
# `query` is bench/query.py to mypy when it checks a file under bench/: both are imported at run time.
ingest: Any = importlib.import_module("bench.ingest")

REPO = Path(__file__).resolve().parents[1]
SIZES = query_bench.SIZES
PROJECT = "default"
LIST_TARGET_MS = query_bench.TARGET_MS["list"]  # first page of the trace list, p50 at 10M spans
INGEST_TARGET = ingest.TARGET_SPANS_PER_SECOND
MAX_INGEST_LOSS = 0.10  # "keeping findings current must not cut ingest throughput by more than 10 %"
STEPS = ("read", "lineage", "detect", "trace_rows", "usage_rows", "publish")
STEP_LABELS = {
    "read": "read (light + signal columns, dedup)",
    "lineage": "with_lineage",
    "detect": "registry.run (all detectors)",
    "trace_rows": "trace_rows",
    "usage_rows": "usage_rows",
    "publish": "to Arrow + publish 3 files",
}
INGEST_MODES = ("alone", "api", "api-nice0", "api-no-detectors")
INGEST_LABELS = {
    "alone": "collector alone",
    "api": "+ API polling ?flag=loop",
    "api-nice0": "+ API polling, API at nice 0",
    "api-no-detectors": "+ API polling, detectors off",
}
MIB = 1024 * 1024

# Started as the API process by the ingest part: `python -c LAUNCHER on|off agentflight-args...`. "off" is the index
# without detectors (as `detectors_off` does in process), under a derived version of its own so no file is shared.
LAUNCHER = """
import sys
if sys.argv[1] == "off":
    import query.detect.registry as registry
    import query.index as index
    from query.detect.signals import DETECT_COLUMNS
    index.DETECT_SELECT = ", ".join(f'NULL::VARCHAR AS "{c}"' for c in DETECT_COLUMNS)
    index.DERIVED_VERSION += "-no-detectors"
    registry.DETECTORS.clear()
from collector.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


# --- 1. the detectors inside the index's derive step ------------------------------------------------------------------


def query_module(name: str) -> Any:
    return importlib.import_module(f"query.{name}")


class StepClock:
    """Seconds per named step, accumulated by wrapping the functions that do the steps."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.rows: dict[str, int] = {}  # rows of the last result, where it is a frame

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - began
            if hasattr(result, "height"):
                self.rows[name] = int(result.height)
            return result

        return timed


@contextlib.contextmanager
def instrumented(index: Any, clock: StepClock) -> Iterator[None]:
    """Time the real steps of `TraceIndex._derive` (the functions are wrapped, not copied)."""
    summaries, registry = query_module("summaries"), query_module("detect.registry")
    saved = (summaries.with_lineage, summaries.trace_rows, summaries.usage_rows, registry.run)
    detectors = dict(registry.DETECTORS)
    summaries.with_lineage = clock.wrap("lineage", saved[0])
    summaries.trace_rows = clock.wrap("trace_rows", saved[1])
    summaries.usage_rows = clock.wrap("usage_rows", saved[2])
    registry.run = clock.wrap("detect", saved[3])
    for name, detector in detectors.items():
        registry.DETECTORS[name] = clock.wrap(f"detector:{name}", detector)
    index._light_spans = clock.wrap("read", type(index)._light_spans.__get__(index))
    try:
        yield
    finally:
        summaries.with_lineage, summaries.trace_rows, summaries.usage_rows, registry.run = saved
        registry.DETECTORS.clear()
        registry.DETECTORS.update(detectors)
        del index._light_spans


@contextlib.contextmanager
def detectors_off() -> Iterator[None]:
    """The index without detectors: no signal columns read (NULLs instead) and no detector run."""
    index_module, registry = query_module("index"), query_module("detect.registry")
    columns = query_module("detect.signals").DETECT_COLUMNS
    saved_select, saved_version = index_module.DETECT_SELECT, index_module.DERIVED_VERSION
    detectors = dict(registry.DETECTORS)
    index_module.DETECT_SELECT = ", ".join(f'NULL::VARCHAR AS "{c}"' for c in columns)
    index_module.DERIVED_VERSION = saved_version + "-no-detectors"
    registry.DETECTORS.clear()
    try:
        yield
    finally:
        index_module.DETECT_SELECT, index_module.DERIVED_VERSION = saved_select, saved_version
        registry.DETECTORS.clear()
        registry.DETECTORS.update(detectors)


def warm_page_cache(paths: list[Path]) -> None:
    for path in paths:
        with path.open("rb") as handle:
            while handle.read(8 * MIB):
                pass


@dataclass
class PartitionRun:
    date: str
    files: int
    bytes: int
    spans: int
    traces: int
    findings: dict[str, int]
    with_detectors: dict[str, float]
    without_detectors: dict[str, float]


def derive_partition(index: Any, date: str, parts: list[Any], tag: str, off: bool) -> tuple[dict[str, float], Any]:
    """One `_derive` of the partition (into the index's scratch store); seconds per step, and the findings table."""
    clock = StepClock()
    config = index.configs.get(PROJECT)
    with instrumented(index, clock), detectors_off() if off else contextlib.nullcontext():
        began = time.perf_counter()
        rows, findings, _ = index._derive(PROJECT, date, parts, tag, config, "bench")
        total = time.perf_counter() - began
    seconds = dict(clock.seconds)
    seconds["derive"] = total
    seconds["publish"] = total - sum(seconds.get(s, 0.0) for s in STEPS if s != "publish")
    seconds["traces"] = rows.num_rows
    seconds["spans"] = clock.rows["read"]
    return seconds, findings


def measure_detect(lake_root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Both derives of every partition (or of the --max-partitions largest), with and without detectors."""
    from store.derived import DerivedStore

    index = query_module("index").TraceIndex(lake_root)
    by_date = index.derived.spans_by_date(PROJECT)
    dates = sorted(by_date)
    if args.max_partitions:
        biggest = sorted(dates, key=lambda d: -sum(p.size for p in by_date[d]))[: args.max_partitions]
        dates = sorted(biggest)
    scratch = Path(tempfile.mkdtemp(prefix="agentflight-detect-"))
    index.derived = DerivedStore(scratch)  # derived files go to the scratch store, never to the lake's _derived
    runs: list[PartitionRun] = []
    began = time.monotonic()
    try:
        for i, date in enumerate(dates):
            parts = by_date[date]
            warm_page_cache([p.path for p in parts])
            results: dict[bool, dict[str, float]] = {}
            findings: Any = None
            for off in (False, True) if i % 2 == 0 else (True, False):
                seconds, found = derive_partition(index, date, parts, f"bench-{i}-{'off' if off else 'on'}", off)
                results[off] = seconds
                if not off:
                    findings = found
            spans = int(results[False].pop("spans"))
            results[True].pop("spans")
            kinds: dict[str, int] = defaultdict(int)
            for kind in findings.column("kind").to_pylist():
                kinds[kind] += 1
            traces = int(results[False].pop("traces"))
            results[True].pop("traces")
            runs.append(
                PartitionRun(
                    date, len(parts), sum(p.size for p in parts), spans, traces, dict(kinds), results[False],
                    results[True],
                )
            )  # fmt: skip
            on, off_ = results[False], results[True]
            print(
                f"   {date}: {spans:>9,} spans  derive {on['derive']:6.2f} s with detectors, {off_['derive']:6.2f} s "
                f"without; registry.run {on['detect']:5.2f} s ({spans / max(on['detect'], 1e-9):>9,.0f} spans/s); "
                f"{sum(kinds.values()):,} findings  [{time.monotonic() - began:5.0f} s]",
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        index.db.close()
    return summarise_detect(runs)


def summarise_detect(runs: list[PartitionRun]) -> dict[str, Any]:
    spans = sum(r.spans for r in runs)
    totals_on: dict[str, float] = defaultdict(float)
    totals_off: dict[str, float] = defaultdict(float)
    findings: dict[str, int] = defaultdict(int)
    for run in runs:
        for step, seconds in run.with_detectors.items():
            totals_on[step] += seconds
        for step, seconds in run.without_detectors.items():
            totals_off[step] += seconds
        for kind, count in run.findings.items():
            findings[kind] += count
    biggest = max(runs, key=lambda r: r.spans)
    return {
        "partitions": len(runs),
        "spans": spans,
        "traces": sum(r.traces for r in runs),
        "findings": dict(sorted(findings.items())),
        "with_detectors": {k: round(v, 3) for k, v in totals_on.items()},
        "without_detectors": {k: round(v, 3) for k, v in totals_off.items()},
        "detector_spans_per_second": round(spans / max(totals_on["detect"], 1e-9)),
        "derive_spans_per_second_with": round(spans / max(totals_on["derive"], 1e-9)),
        "derive_spans_per_second_without": round(spans / max(totals_off["derive"], 1e-9)),
        "biggest_partition": {
            "date": biggest.date,
            "spans": biggest.spans,
            "derive_with_s": round(biggest.with_detectors["derive"], 3),
            "derive_without_s": round(biggest.without_detectors["derive"], 3),
            "detect_s": round(biggest.with_detectors["detect"], 3),
        },
        "per_partition": [asdict(r) for r in runs],
    }


# --- 2. flagged traces and findings over HTTP ---------------------------------------------------------------------


def measure_api(data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    derived = data_dir / "lake" / "_derived"
    had_derived = derived.exists()
    if args.cold and had_derived:
        shutil.rmtree(derived)
    log_path = data_dir / "api-detect.log"
    log_path.unlink(missing_ok=True)
    api = query_bench.Api(data_dir, log_path)
    out: dict[str, Any] = {"derived_present": had_derived and not args.cold, "load_before": os.getloadavg()[0]}
    base = api.base
    ops = {
        "": query_bench.OpResult("trace list, first page (baseline)", "list", f"{base}/traces?limit=50"),
        "loop": query_bench.OpResult("traces ?flag=loop", "list", f"{base}/traces?limit=50&flag=loop"),
        "error": query_bench.OpResult("traces ?flag=error", "list", f"{base}/traces?limit=50&flag=error"),
        "findings": query_bench.OpResult("findings ?kind=loop (limit 100)", "list", f"{base}/findings?kind=loop"),
        "counts": query_bench.OpResult("findings/counts (per kind per day)", "list", f"{base}/findings/counts"),
    }
    try:
        out["startup_s"] = api.start(args.startup_timeout)
        out["index_s"] = api.index_seconds()
        print(
            f"   API healthy after {out['startup_s']:.1f} s (index warmed in {out['index_s']} s)",
            file=sys.stderr,
            flush=True,
        )
        firsts: dict[str, dict[str, Any] | None] = {}
        with httpx.Client(timeout=300.0) as client:
            for key, op in ops.items():
                firsts[key] = query_bench.timed_get(client, op.url_example, op, record=False)
            for _ in range(args.repeats):
                for op in ops.values():
                    query_bench.timed_get(client, op.url_example, op)
        out["rss_mb"], out["peak_rss_mb"] = api.memory_mb()
        counts = firsts.get("counts") or {}
        out["finding_totals"] = counts.get("totals", {})
        out["flagged_page"] = {k: len((firsts.get(k) or {}).get("traces", [])) for k in ("", "loop", "error")}
        loop_findings = (firsts.get("findings") or {}).get("findings", [])
        out["loop_findings_page"] = len(loop_findings)
        out["loop_example"] = loop_findings[0]["message"] if loop_findings else None
        baseline = ops[""].pct(0.5)
        for op in ops.values():
            op.note = f"p50 {op.pct(0.5) / baseline:.2f}x the unfiltered list" if baseline else ""
    except RuntimeError as exc:
        out["error"] = str(exc)
        print(f"   API failed: {exc}", file=sys.stderr, flush=True)
    finally:
        api.stop()
    out["ops"] = [op.summary() for op in ops.values()]
    out["load_after"] = os.getloadavg()[0]
    return out


# --- 3. ingest throughput while an API keeps the findings current ----------------------------------------------------


class Poller(threading.Thread):
    """GET url every `period` seconds (or back to back when a call takes longer), one call at a time."""

    def __init__(self, url: str, period: float) -> None:
        super().__init__(name="flag-poller", daemon=True)
        self.url = url
        self.period = period
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.last_body: dict[str, Any] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=300.0) as client:
            while not self._stop_event.is_set():
                began = time.perf_counter()
                try:
                    response = client.get(self.url)
                    if response.status_code == 200:
                        self.last_body = response.json()
                    else:
                        self.errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                elapsed = time.perf_counter() - began
                self.latencies.append(elapsed)
                self._stop_event.wait(max(0.0, self.period - elapsed))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=330)


def start_api_process(
    data_dir: Path, detectors: bool, log_path: Path, nice: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`agentflight api` (at its default --api-nice unless `nice` is given)."""
    port = query_bench.free_port()
    command = [
        sys.executable, "-c", LAUNCHER, "on" if detectors else "off",
        "api", "--data-dir", str(data_dir), "--api-port", str(port), "--log-level", "WARNING",
        *(["--api-nice", str(nice)] if nice is not None else []),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("AGENTFLIGHT_KEYS_FILE", None)
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"API exited with {process.returncode}: {log_path.read_text(errors='replace')}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{base}/health").status_code == 200:
                    return process, base
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("API not healthy after 120 s")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def ingest_once(iargs: argparse.Namespace, mode: str, poll_every: float) -> dict[str, Any]:
    """bench/ingest.py's run (same senders, collector, clock and lake check), with an API process beside it."""
    client = httpx.Client()
    api: subprocess.Popen[bytes] | None = None
    poller: Poller | None = None
    sampler: Any = None
    with ingest.temp_dir(False) as root:
        data_dir = root / "data"
        grpc_port, http_port = ingest.free_port(), ingest.free_port()
        senders = ingest.start_senders(iargs, lambda: f"127.0.0.1:{grpc_port}")
        collector = ingest.start_collector(data_dir, grpc_port, http_port, iargs.fsync, [])
        try:
            ingest.wait_healthy(collector, client)
            base = ""
            if mode != "alone":
                nice = 0 if mode == "api-nice0" else None
                api, base = start_api_process(data_dir, mode != "api-no-detectors", root / "api.log", nice)
            workload, _ = ingest.wait_ready(senders, timeout=max(600.0, iargs.spans / 500))
            total = int(workload["spans"])
            sampler = ingest.ProcessSampler(collector.process.pid)
            sampler.start()
            sampler.mark()
            api_cpu0 = ingest.cpu_seconds(api.pid) if api else 0.0
            machine0 = ingest.machine_busy_seconds()
            load_before = os.getloadavg()[0]
            if api is not None:
                poller = Poller(f"{base}/traces?limit=50&flag=loop", poll_every)
                poller.start()
            go = time.monotonic()
            senders.go.set()
            figures, results = ingest.watch(iargs, senders, collector, client, sampler, total, go)
            machine_busy = ingest.machine_busy_seconds() - machine0
            api_cpu = (ingest.cpu_seconds(api.pid) or 0.0) - (api_cpu0 or 0.0) if api else 0.0
            polls = list(poller.latencies) if poller else []
            if poller is not None:
                poller.stop()
            sampler.stop()
            verification = ingest.verify_lake(data_dir / "lake")
        finally:
            if poller is not None:
                poller.stop()
            if sampler is not None:
                sampler.stop()
            stop_process(api)
            collector.stop(timeout=10)
            for process in senders.processes:
                if process.is_alive():
                    process.terminate()
    sender_cpu = sum(r["send_cpu_seconds"] for r in results)
    return {
        "mode": mode,
        "spans": total,
        "queryable_spans_per_second": figures["acked_and_queryable_spans_per_second"],
        "acked_spans_per_second": figures["acked_spans_per_second"],
        "queryable_seconds": figures["queryable_seconds"],
        "collector_cpu_seconds": figures["collector_cpu_seconds"],
        "api_cpu_seconds": round(api_cpu, 2),
        "api_cores_busy": round(api_cpu / max(figures["queryable_seconds"], 1e-9), 2),
        "sender_cpu_seconds": round(sender_cpu, 2),
        "other_cpu_seconds": round(machine_busy - figures["collector_cpu_seconds"] - sender_cpu - api_cpu, 1),
        "load_before": round(load_before, 2),
        "polls": len(polls),
        "poll_p50_ms": round(1000 * statistics.median(polls), 1) if polls else None,
        "poll_max_ms": round(1000 * max(polls), 1) if polls else None,
        "poll_errors": poller.errors[:3] if poller else [],
        "lake_spans": verification["spans"],
        "failed_requests": figures["failed_requests"],
    }


def measure_ingest(args: argparse.Namespace) -> dict[str, Any]:
    iargs = ingest.parse_args(["--spans", str(args.ingest_spans), "--senders", str(args.ingest_senders)])
    modes = [m for m in args.ingest_modes.split(",") if m]
    runs: list[dict[str, Any]] = []
    for round_ in range(args.ingest_rounds):
        order = modes if round_ % 2 == 0 else list(reversed(modes))
        for mode in order:
            print(
                f"   ingest round {round_ + 1}/{args.ingest_rounds}: {INGEST_LABELS[mode]} ...",
                file=sys.stderr,
                flush=True,
            )
            run = ingest_once(iargs, mode, args.poll_every)
            runs.append(run)
            print(
                f"     {run['queryable_spans_per_second']:>9,.0f} spans/s acked+queryable, collector CPU "
                f"{run['collector_cpu_seconds']:.1f} s, API CPU {run['api_cpu_seconds']:.1f} s, "
                f"{run['polls']} polls (p50 {run['poll_p50_ms']} ms, max {run['poll_max_ms']} ms), "
                f"other CPU {run['other_cpu_seconds']:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    medians = {
        mode: statistics.median(r["queryable_spans_per_second"] for r in runs if r["mode"] == mode) for mode in modes
    }
    return {
        "spans": args.ingest_spans,
        "senders": args.ingest_senders,
        "poll_every_s": args.poll_every,
        "rounds": args.ingest_rounds,
        "runs": runs,
        "median_spans_per_second": medians,
    }


# --- report ---------------------------------------------------------------------------------------------------------


def source_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted([*REPO.glob("query/*.py"), *REPO.glob("query/detect/*.py"), REPO / "bench" / "lakegen.py"]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def render_detect(label: str, d: dict[str, Any]) -> list[str]:
    spans = d["spans"]
    on, off = d["with_detectors"], d["without_detectors"]
    lines = [
        f"  1. detectors in the index's derive step — {label}: {d['partitions']} partitions, {spans:,} spans, "
        f"{d['traces']:,} trace rows; findings {d['findings']}",
        f"  {'step (sum over partitions)':<40}{'with det.':>11}{'without':>11}{'µs/span':>9}{'spans/s':>12}"
        f"{'share':>8}",
        f"  {'-' * 89}",
    ]
    for step in STEPS:
        with_s, without_s = on.get(step, 0.0), off.get(step, 0.0)
        lines.append(
            f"  {STEP_LABELS[step]:<40}{with_s:>10.2f}s{without_s:>10.2f}s{1e6 * with_s / spans:>9.2f}"
            f"{spans / max(with_s, 1e-9):>12,.0f}{100 * with_s / on['derive']:>7.1f}%"
        )
        if step == "detect":
            for name in sorted(k for k in on if k.startswith("detector:")):
                s = on[name]
                lines.append(
                    f"  {'  ' + name.split(':', 1)[1]:<40}{s:>10.2f}s{'':>11}{1e6 * s / spans:>9.2f}"
                    f"{spans / max(s, 1e-9):>12,.0f}{100 * s / on['derive']:>7.1f}%"
                )
    lines.append(
        f"  {'derive, whole partition':<40}{on['derive']:>10.2f}s{off['derive']:>10.2f}s"
        f"{1e6 * on['derive'] / spans:>9.2f}{spans / on['derive']:>12,.0f}{100.0:>7.1f}%"
    )
    added = on["derive"] - off["derive"]
    read_added = on.get("read", 0.0) - off.get("read", 0.0)
    big = d["biggest_partition"]
    lines += [
        f"  detectors add {added:.2f} s to {off['derive']:.2f} s of derive ({on['derive'] / off['derive']:.2f}x; "
        f"+{100 * added / off['derive']:.0f} %): registry.run {on['detect']:.2f} s, reading the signal columns "
        f"{read_added:+.2f} s, the rest (flags in trace_rows, the findings file) "
        f"{added - on['detect'] - read_added:+.2f} s",
        f"  detector throughput {d['detector_spans_per_second']:,} spans/s = "
        f"{d['detector_spans_per_second'] / INGEST_TARGET:.1f}x the {INGEST_TARGET:,} spans/s ingest target; whole "
        f"derive {d['derive_spans_per_second_with']:,} spans/s with detectors, {d['derive_spans_per_second_without']:,}"
        f" without",
        f"  largest partition {big['date']} ({big['spans']:,} spans): derive {big['derive_with_s']:.2f} s with "
        f"detectors, {big['derive_without_s']:.2f} s without, registry.run {big['detect_s']:.2f} s — what a cold "
        f"start or a repricing costs it; a new part costs only the traces it touches",
    ]
    return lines


def render_api(label: str, a: dict[str, Any]) -> list[str]:
    lines = [
        f"  2. flagged traces and findings over HTTP — {label}: API healthy after "
        f"{a.get('startup_s', float('nan')):.1f} s (index {a.get('index_s')} s; derived files "
        f"{'present' if a['derived_present'] else 'rebuilt'}); {a.get('repeats', '')}",
    ]
    if a.get("error"):
        lines.append(f"  API ERROR: {a['error']}")
    ops = a["ops"]
    if not ops or not ops[0]["n"]:
        return lines
    baseline = ops[0]["p50_ms"]
    header = (
        f"  {'operation':<38}{'first':>8}{'p50':>8}{'p95':>8}{'max':>8}{'KB':>7}{'/ list':>8}{'/ 200ms':>8}{'err':>5}"
    )
    lines += [header, f"  {'-' * (len(header) - 2)}"]
    for op in ops:
        lines.append(
            f"  {op['name']:<38}{op['first_ms']:>8.0f}{op['p50_ms']:>8.1f}{op['p95_ms']:>8.1f}"
            f"{(op['max_ms'] or float('nan')):>8.0f}{(op['response_kb_p50'] or 0):>7.1f}"
            f"{op['p50_ms'] / baseline:>7.2f}x{op['p50_ms'] / LIST_TARGET_MS:>7.2f}x{op['errors']:>5}"
        )
        if op["first_error"]:
            lines.append(f"    first error: {op['first_error']}")
    lines += [
        f"  findings in the lake (from /findings/counts): {a.get('finding_totals')}; traces on the first page: "
        f"{a.get('flagged_page')}; e.g. {a.get('loop_example')!r}",
        f"  API RSS after {a.get('rss_mb', 0):,.0f} MB (peak {a.get('peak_rss_mb', 0):,.0f} MB); 1-min load "
        f"before/after {a['load_before']:.1f}/{a['load_after']:.1f}",
    ]
    return lines


def render_ingest(i: dict[str, Any]) -> list[str]:
    medians = i["median_spans_per_second"]
    alone = medians.get("alone")
    lines = [
        f"  3. ingest while an API keeps findings current — {i['spans']:,} spans per run, {i['senders']} gRPC "
        f"senders, fsync on, API polling every {i['poll_every_s']:g} s, {i['rounds']} round(s), modes interleaved",
        f"  {'run':<34}{'spans/s':>10}{'vs alone':>10}{'coll. CPU':>11}{'API CPU':>9}{'cores':>7}{'polls':>7}"
        f"{'CPU/poll':>10}{'poll p50':>10}{'poll max':>10}{'other CPU':>11}",
        f"  {'-' * 127}",
    ]
    for run in i["runs"]:
        ratio = f"{run['queryable_spans_per_second'] / alone:.2f}x" if alone else "—"
        lines.append(
            f"  {INGEST_LABELS[run['mode']]:<34}{run['queryable_spans_per_second']:>10,.0f}{ratio:>10}"
            f"{run['collector_cpu_seconds']:>10.1f}s{run['api_cpu_seconds']:>8.1f}s{run['api_cores_busy']:>7.2f}"
            f"{run['polls']:>7}{run['api_cpu_seconds'] / max(run['polls'], 1):>9.2f}s"
            f"{(run['poll_p50_ms'] or 0):>8.0f}ms{(run['poll_max_ms'] or 0):>8.0f}ms{run['other_cpu_seconds']:>10.1f}s"
        )
        if run["poll_errors"] or run["lake_spans"] != run["spans"] or run["failed_requests"]:
            lines.append(
                f"    problems: poll errors {run['poll_errors']}, lake {run['lake_spans']:,} of {run['spans']:,}, "
                f"failed requests {run['failed_requests']}"
            )
    if alone:
        lines.append("  medians (acked-and-queryable spans/s): " + "; ".join(
            f"{INGEST_LABELS[m].lstrip('+ ')} {v:,.0f} ({v / alone:.2f}x)" for m, v in medians.items()
        ))  # fmt: skip
        if "api" in medians:
            loss = 1 - medians["api"] / alone
            verdict = "met" if loss <= MAX_INGEST_LOSS else "NOT met"
            lines.append(
                f"  an API keeping the index and findings current on the same cores costs {100 * loss:.0f} % of "
                f"ingest throughput (limit {100 * MAX_INGEST_LOSS:.0f} %: {verdict})"
            )
            if "api-nice0" in medians:
                equal = 1 - medians["api-nice0"] / alone
                lines.append(
                    f"  at nice 0 (the API sharing the cores equally with ingest instead of taking their spare time) "
                    f"it costs {100 * equal:.0f} %"
                )
            if "api-no-detectors" in medians:
                plain = 1 - medians["api-no-detectors"] / alone
                lines.append(
                    f"  the same API without detectors costs {100 * plain:.0f} %: the detectors' own share is "
                    f"{100 * (loss - plain):+.0f} points (when the API refreshes back to back in both modes, the "
                    "detectors show as slower polls, i.e. staler findings, more than as lost throughput)"
                )
    return lines


def render(result: dict[str, Any]) -> str:
    lines = [
        f"agentflight detector benchmark — {result['date']}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, query+detect+lakegen sources {result['sources']}",
    ]
    for lake in result["lakes"]:
        label = f"{lake['spans']:,}-span lake {lake['data_dir']}"
        if "detect" in lake:
            lines += ["", *render_detect(label, lake["detect"])]
        if "api" in lake:
            lines += ["", *render_api(label, lake["api"])]
    if "ingest" in result:
        lines += ["", *render_ingest(result["ingest"])]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------------------------


def resolve_lake(path: str) -> Path:
    """A data directory holding lake/ (as `bench.lakegen --out` makes), or such a lake/ itself."""
    given = Path(path).resolve()
    if (given / "lake" / "spans").is_dir():
        return given
    if given.name == "lake" and (given / "spans").is_dir():
        return given.parent
    raise SystemExit(f"--lake {path}: no lake/spans under it (give the directory `bench.lakegen --out` wrote)")


def lake_spans(data_dir: Path) -> int:
    marker = data_dir / lakegen.MARKER
    if marker.exists():
        return int(json.loads(marker.read_text())["spans"])
    import duckdb

    glob = str(data_dir / "lake" / "spans" / "*" / "*" / "*.parquet")
    row = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()
    return int(row[0]) if row else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--spans", type=int, nargs="+", choices=sorted(SIZES), default=sorted(SIZES),
        help="lake sizes (default both: 1000000 10000000); a missing lake is generated with bench.lakegen",
    )  # fmt: skip
    parser.add_argument("--lake", action="append", default=[], help="an existing lake (data dir) instead of --spans")
    parser.add_argument("--data-root", default="/tmp/agentflight-bench", help="lakes live in <data-root>/<1m|10m>")
    parser.add_argument("--seed", type=int, default=11, help="lake seed (default 11, as bench.query)")
    parser.add_argument("--parts", default="detect,api,ingest", help="which measurements (default detect,api,ingest)")
    parser.add_argument("--max-partitions", type=int, default=0, help="detect: only the N largest partitions")
    parser.add_argument("--repeats", type=int, default=50, help="api: timed calls per operation (default 50)")
    parser.add_argument("--cold", action="store_true", help="api: remove <lake>/_derived first (full index build)")
    parser.add_argument("--startup-timeout", type=float, default=1800.0, help="api: seconds to wait for /health")
    parser.add_argument("--ingest-spans", type=int, default=200_000, help="ingest: spans per run (default 200000)")
    parser.add_argument("--ingest-senders", type=int, default=4, help="ingest: sender processes (default 4)")
    parser.add_argument("--ingest-rounds", type=int, default=2, help="ingest: rounds of all modes (default 2)")
    parser.add_argument("--ingest-modes", default=",".join(INGEST_MODES), help=f"ingest: {', '.join(INGEST_MODES)}")
    parser.add_argument("--poll-every", type=float, default=1.0, help="ingest: API poll period, s (default 1)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout (table to stderr)")
    args = parser.parse_args(argv)
    parts = {p for p in args.parts.split(",") if p}
    if not parts <= {"detect", "api", "ingest"}:
        parser.error("--parts: choose from detect, api, ingest")
    if not {m for m in args.ingest_modes.split(",") if m} <= set(INGEST_MODES):
        parser.error(f"--ingest-modes: choose from {', '.join(INGEST_MODES)}")
    if args.repeats < 1 or args.ingest_rounds < 1 or args.poll_every <= 0:
        parser.error("--repeats and --ingest-rounds must be positive, --poll-every > 0")
    args.part_set = parts
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result: dict[str, Any] = {
        "date": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "sources": source_fingerprint(),
        "lakes": [],
    }
    lakes: list[tuple[int, Path]] = []
    if args.lake:
        lakes = [(lake_spans(d), d) for d in map(resolve_lake, args.lake)]
    elif args.part_set & {"detect", "api"}:
        for spans in args.spans:
            out = Path(args.data_root) / SIZES[spans]
            with contextlib.redirect_stdout(sys.stderr):  # stdout is for --json
                lakegen.generate(
                    lakegen.parse_args(["--spans", str(spans), "--out", str(out), "--seed", str(args.seed)])
                )
            lakes.append((spans, out))
    failed = False
    for spans, data_dir in lakes:
        entry: dict[str, Any] = {"spans": spans, "data_dir": str(data_dir)}
        if "detect" in args.part_set:
            print(f"\n== detect: {spans:,} spans, {data_dir / 'lake'}", file=sys.stderr, flush=True)
            entry["detect"] = measure_detect(data_dir / "lake", args)
        if "api" in args.part_set:
            print(f"\n== api: {spans:,} spans, {data_dir / 'lake'}", file=sys.stderr, flush=True)
            entry["api"] = measure_api(data_dir, args)
            entry["api"]["repeats"] = f"{args.repeats} timed calls per operation after one first call"
            failed |= bool(entry["api"].get("error")) or any(op["errors"] for op in entry["api"]["ops"])
        result["lakes"].append(entry)
    if "ingest" in args.part_set:
        print("\n== ingest", file=sys.stderr, flush=True)
        result["ingest"] = measure_ingest(args)
        failed |= any(r["lake_spans"] != r["spans"] or r["poll_errors"] for r in result["ingest"]["runs"])
    table = render(result)
    print("\n" + table, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
