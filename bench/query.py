"""Query benchmark: the query API over lakes of 1M and 10M realistic spans — trace by id, trace list, cost breakdown.

Run from the repository root:  .venv/bin/python -m bench.query [--spans 1000000 10000000] [--repeats 50] [--json]

For each lake size: `bench/lakegen.py` builds (or reuses) `<data-root>/<1m|10m>/lake`; DuckDB samples trace ids
(random roots, plus the few 2,000–10,000-span traces) and filter values from it; the derived index files
(`<lake>/_derived`) are removed so the first start pays the full index build; `agentflight api` starts as a
subprocess and the time until `GET /health` answers is the index build (the API warms its trace index before it
listens). Each operation is then called once untimed-as-steady ("first call", reported on its own) and `--repeats`
times over HTTP with httpx, one request at a time: p50 / p95 / max latency, response size, the ratio to the target.
Trace-by-id picks a random sampled trace per call and a big trace every `--big-every` calls (their figures are
reported apart). Afterwards: the API's RSS (and peak), then a restart that reuses the derived files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

try:
    from bench import lakegen
except ImportError:  # run as `python bench/query.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import lakegen

REPO = Path(__file__).resolve().parents[1]
SIZES = {1_000_000: "1m", 10_000_000: "10m"}
TARGET_MS = {"trace": 50.0, "list": 200.0, "costs": 1000.0}  # at 10M spans, p50 (the targets of issue 3)
BIG_TRACE_SPANS = 1_000  # a sampled trace at least this big counts as "big"
MIB = 1024 * 1024


@dataclass
class OpResult:
    name: str
    target_kind: str
    url_example: str
    n: int = 0
    first_ms: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    note: str = ""

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": len(self.latencies_ms),
            "first_ms": round(self.first_ms, 1),
            "p50_ms": round(self.pct(0.5), 1),
            "p95_ms": round(self.pct(0.95), 1),
            "max_ms": round(max(self.latencies_ms), 1) if self.latencies_ms else None,
            "mean_ms": round(statistics.fmean(self.latencies_ms), 1) if self.latencies_ms else None,
            "response_kb_p50": round(statistics.median(self.sizes) / 1024, 1) if self.sizes else None,
            "response_kb_max": round(max(self.sizes) / 1024, 1) if self.sizes else None,
            "target_ms": TARGET_MS[self.target_kind],
            "errors": len(self.errors),
            "first_error": self.errors[0] if self.errors else None,
            "url_example": self.url_example,
            "note": self.note,
        }


@dataclass
class LakeRun:
    spans: int
    label: str
    lake: dict[str, Any]
    sample: dict[str, Any]
    startup_cold_s: float | None = None
    startup_warm_s: float | None = None
    index_cold_s: float | None = None
    index_warm_s: float | None = None
    rss_mb: float | None = None
    peak_rss_mb: float | None = None
    rss_after_startup_mb: float | None = None
    ops: list[dict[str, Any]] = field(default_factory=list)
    api_error: str | None = None
    load_before: float = 0.0
    load_after: float = 0.0


# --- the lake and what to ask of it -----------------------------------------------------------------------------------


def ensure_lake(spans: int, out: Path, seed: int) -> dict[str, Any]:
    args = lakegen.parse_args(["--spans", str(spans), "--out", str(out), "--seed", str(seed)])
    info = lakegen.generate(args)
    files = sorted((out / "lake").glob("spans/*/*/*.parquet"))
    info["files"] = len(files)
    info["bytes"] = sum(f.stat().st_size for f in files)
    return info


def sample_lake(lake_root: Path, n_traces: int, seed: int) -> dict[str, Any]:
    """Trace ids to fetch and filter values to list by, chosen with DuckDB before the API starts."""
    import duckdb

    glob = str(lake_root / "spans" / "*" / "*" / "*.parquet")
    con = duckdb.connect(config={"threads": 2})
    con.execute("SET enable_progress_bar = false")
    started = time.monotonic()
    con.execute(f"CREATE VIEW s AS SELECT * FROM read_parquet('{glob}', hive_partitioning = false)")
    traces = con.execute(
        f"""SELECT trace_id FROM (SELECT trace_id FROM s WHERE parent_span_id IS NULL)
            USING SAMPLE {n_traces} ROWS (reservoir, {seed})"""
    ).fetchall()
    big = con.execute(
        f"SELECT trace_id, count(*) AS n FROM s GROUP BY trace_id HAVING count(*) >= {BIG_TRACE_SPANS} ORDER BY n"
    ).fetchall()
    service = con.execute("SELECT service_name FROM s GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchone()
    model = con.execute(
        "SELECT request_model FROM s WHERE span_type = 'llm' GROUP BY 1 ORDER BY count(*) DESC LIMIT 1 OFFSET 1"
    ).fetchone()
    user = con.execute(
        f"""SELECT user_id FROM (SELECT user_id FROM s WHERE parent_span_id IS NULL AND user_id IS NOT NULL)
            USING SAMPLE 1 ROWS (reservoir, {seed})"""
    ).fetchone()
    ids = [t[0] for t in traces]
    sizes = dict(
        con.execute("SELECT trace_id, count(*) FROM s WHERE list_contains(?, trace_id) GROUP BY 1", [ids]).fetchall()
    )
    con.close()
    return {
        "traces": ids,
        "trace_spans": sizes,
        "big_traces": [b[0] for b in big],
        "big_trace_spans": [b[1] for b in big],
        "service": service[0] if service else None,
        "model": model[0] if model else None,
        "user": user[0] if user else None,
        "seconds": round(time.monotonic() - started, 1),
    }


# --- the API process --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Api:
    """`agentflight api` in its own process; `start()` returns the seconds until /health answered 200."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float) -> float:
        exe = REPO / ".venv" / "bin" / "agentflight"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "collector.cli"]
        cmd += ["api", "--data-dir", str(self.data_dir), "--api-port", str(self.port)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("AGENTFLIGHT_KEYS_FILE", None)
        began = time.monotonic()
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() - began < timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"agentflight api exited with {self.proc.returncode}; log: {self.tail()}")
                try:
                    if client.get(f"{self.base}/health").status_code == 200:
                        return time.monotonic() - began
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"agentflight api not healthy after {timeout:.0f} s; log: {self.tail()}")

    def index_seconds(self) -> float | None:
        """The API's own log line 'index warmed in X s' (the part of the startup spent building the index)."""
        try:
            found = re.findall(r"index warmed in ([0-9.]+) s", self.log_path.read_text(errors="replace"))
        except FileNotFoundError:
            return None
        return float(found[-1]) if found else None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def memory_mb(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the API process, MB."""
        assert self.proc is not None
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- measuring --------------------------------------------------------------------------------------------------------


def timed_get(client: httpx.Client, url: str, op: OpResult, record: bool = True) -> dict[str, Any] | None:
    began = time.perf_counter()
    try:
        response = client.get(url)
        body = response.content
    except httpx.HTTPError as exc:
        op.errors.append(f"GET {url}: {type(exc).__name__}: {exc}")
        return None
    elapsed = (time.perf_counter() - began) * 1000
    if response.status_code != 200:
        op.errors.append(f"GET {url}: HTTP {response.status_code}: {body[:300]!r}")
        return None
    if record:
        op.latencies_ms.append(elapsed)
        op.sizes.append(len(body))
    else:
        op.first_ms = elapsed
    try:
        parsed = json.loads(body)
    except ValueError:
        op.errors.append(f"GET {url}: not JSON: {body[:200]!r}")
        return None
    return parsed if isinstance(parsed, dict) else {"_": parsed}


def measure(api: Api, sample: dict[str, Any], repeats: int, big_every: int, seed: int) -> list[OpResult]:
    rng = random.Random(seed)
    base = api.base
    small = sample["traces"]
    big = sample["big_traces"]
    trace_small = OpResult("trace by id (sampled traces)", "trace", f"{base}/traces/<id>")
    trace_big = OpResult("trace by id (2k-10k-span traces)", "trace", f"{base}/traces/<id>")
    filters = {"": "trace list, first page (limit 50)"}
    if sample["service"]:
        filters[f"&service={sample['service']}"] = "  … service filter"
    if sample["model"]:
        filters[f"&model={sample['model']}"] = "  … model filter"
    if sample["user"]:
        filters[f"&user={sample['user']}"] = "  … user filter"
    filters["&status=error"] = "  … status=error"
    lists = {q: OpResult(label, "list", f"{base}/traces?limit=50{q}") for q, label in filters.items()}
    costs = OpResult("cost by model × day, all data", "costs", f"{base}/costs?group_by=model,day")
    with httpx.Client(timeout=300.0) as client:
        # first calls, one per operation, reported on their own (caches, lazy imports, the first refresh)
        timed_get(client, f"{base}/traces?limit=50", lists[""], record=False)
        for q, op in lists.items():
            if q:
                timed_get(client, f"{base}/traces?limit=50{q}", op, record=False)
        first = timed_get(client, f"{base}/traces/{small[0]}", trace_small, record=False)
        if first is not None:
            trace_small.note = f"first response: {first.get('total_spans')} spans"
        if big:
            timed_get(client, f"{base}/traces/{big[0]}", trace_big, record=False)
        timed_get(client, costs.url_example, costs, record=False)
        # steady state, interleaved so a background refresh or a noisy neighbour hits every operation alike
        for i in range(repeats):
            timed_get(client, f"{base}/traces/{rng.choice(small)}", trace_small)
            if big and i % big_every == big_every - 1:
                timed_get(client, f"{base}/traces/{big[(i // big_every) % len(big)]}", trace_big)
            for q, op in lists.items():
                timed_get(client, f"{base}/traces?limit=50{q}", op)
            timed_get(client, costs.url_example, costs)
    spans = [sample["trace_spans"].get(t, 0) for t in small]
    trace_small.note = (
        f"{len(small)} sampled traces of {min(spans)}–{max(spans)} spans (median {statistics.median(spans):.0f})"
    )
    if big:
        trace_big.note = f"{len(big)} traces of {', '.join(f'{n:,}' for n in sample['big_trace_spans'])} spans"
    return [trace_small, *([trace_big] if big else []), *lists.values(), costs]


def loadavg() -> float:
    return os.getloadavg()[0]


def source_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted([*REPO.glob("query/*.py"), *REPO.glob("store/*.py"), REPO / "bench" / "lakegen.py"]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def run_size(args: argparse.Namespace, spans: int) -> LakeRun:
    label = SIZES.get(spans, f"{spans}")
    out = Path(args.data_root) / label
    print(f"\n== {spans:,} spans: lake {out / 'lake'}", flush=True)
    lake = ensure_lake(spans, out, args.seed)
    sample = sample_lake(out / "lake", args.traces, args.seed)
    print(
        f"   sampled {len(sample['traces'])} trace ids and {len(sample['big_traces'])} big traces "
        f"in {sample['seconds']} s; filters: service={sample['service']} model={sample['model']} "
        f"user={sample['user']}",
        flush=True,
    )
    result = LakeRun(spans, label, lake, {k: v for k, v in sample.items() if k not in ("traces", "trace_spans")})
    derived = out / "lake" / "_derived"
    if derived.exists() and not args.keep_derived:
        shutil.rmtree(derived)
    log_path = out / "api.log"
    log_path.unlink(missing_ok=True)
    api = Api(out, log_path)
    result.load_before = loadavg()
    try:
        result.startup_cold_s = api.start(args.startup_timeout)
        result.rss_after_startup_mb = api.memory_mb()[0]
        result.index_cold_s = api.index_seconds()
        print(f"   API healthy after {result.startup_cold_s:.1f} s (index build incl.)", flush=True)
        ops = measure(api, sample, args.repeats, args.big_every, args.seed)
        result.rss_mb, result.peak_rss_mb = api.memory_mb()
        result.ops = [op.summary() for op in ops]
    except RuntimeError as exc:
        result.api_error = str(exc)
        print(f"   API failed: {exc}", flush=True)
    finally:
        api.stop()
    if result.api_error is None and not args.no_restart:
        api = Api(out, log_path)
        try:
            result.startup_warm_s = api.start(args.startup_timeout)
            result.index_warm_s = api.index_seconds()
        except RuntimeError as exc:
            result.api_error = f"restart: {exc}"
        finally:
            api.stop()
    result.load_after = loadavg()
    return result


# --- report -----------------------------------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def render(runs: list[LakeRun], args: argparse.Namespace) -> str:
    lines = [
        f"agentflight query benchmark — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, query+store+lakegen sources {source_fingerprint()}",
        f"  {args.repeats} timed calls per operation after one first call, sequential, over HTTP (httpx); "
        f"targets are p50 at 10M spans",
    ]
    for run in runs:
        lk = run.lake
        lines += [
            "",
            f"  lake {run.spans:,} spans ({run.label}): {lk['bytes'] / MIB:,.0f} MiB in {lk['files']} files, "
            f"{lk['first_date']} .. {lk['last_date']}, {lk['compacted_parts']} compacted + {lk['fresh_parts']} "
            f"fresh parts; generated in {lk['generate_seconds']:.0f} s",
            f"  index build (API start until /health; of which the API's own 'index warmed'): cold "
            f"{_seconds(run.startup_cold_s)} ({_seconds(run.index_cold_s)}); restart reusing derived files "
            f"{_seconds(run.startup_warm_s)} ({_seconds(run.index_warm_s)})",
        ]
        if run.api_error:
            lines.append(f"  API ERROR: {run.api_error}")
        if not run.ops:
            continue
        header = (
            f"  {'operation':<36}{'first':>8}{'p50':>8}{'p95':>8}{'max':>8}{'KB p50':>9}{'KB max':>9}"
            f"{'target':>8}{'p50/t':>7}{'p95/t':>7}{'err':>5}"
        )
        lines += [header, f"  {'-' * (len(header) - 2)}"]
        for op in run.ops:
            target = op["target_ms"]
            lines.append(
                f"  {op['name']:<36}{op['first_ms']:>8.0f}{op['p50_ms']:>8.1f}{op['p95_ms']:>8.1f}"
                f"{(op['max_ms'] or float('nan')):>8.0f}{(op['response_kb_p50'] or 0):>9.1f}"
                f"{(op['response_kb_max'] or 0):>9.1f}{target:>8.0f}{op['p50_ms'] / target:>6.2f}x"
                f"{op['p95_ms'] / target:>6.2f}x{op['errors']:>5}"
            )
        for op in run.ops:
            if op["note"]:
                lines.append(f"    {op['name'].strip(' …')}: {op['note']}")
            if op["first_error"]:
                lines.append(f"    first error: {op['first_error']}")
        lines.append(
            f"  API RSS after the run {run.rss_mb:,.0f} MB (peak {run.peak_rss_mb:,.0f} MB; after startup "
            f"{run.rss_after_startup_mb:,.0f} MB); 1-min load average before/after {run.load_before:.1f}/"
            f"{run.load_after:.1f}"
        )
    biggest = max(runs, key=lambda r: r.spans)
    if biggest.ops:
        verdicts = []
        for op in biggest.ops:
            ok = op["p50_ms"] <= op["target_ms"] and not op["errors"]
            verdicts.append(f"{op['name'].strip(' …')}: {'met' if ok else 'NOT met'}")
        lines += ["", f"  targets at {biggest.spans:,} spans (p50): " + "; ".join(verdicts)]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--spans",
        type=int,
        nargs="+",
        choices=sorted(SIZES),
        default=sorted(SIZES),
        help="lake sizes to measure (default both: 1000000 10000000)",
    )
    parser.add_argument("--data-root", default="/tmp/agentflight-bench", help="lakes live in <data-root>/<1m|10m>")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per operation (default 50)")
    parser.add_argument("--traces", type=int, default=200, help="random trace ids to sample (default 200)")
    parser.add_argument("--big-every", type=int, default=5, help="fetch a 2k-10k-span trace every N rounds (5)")
    parser.add_argument("--seed", type=int, default=11, help="lake and sampling seed (default 11)")
    parser.add_argument("--keep-derived", action="store_true", help="keep <lake>/_derived (no cold index build)")
    parser.add_argument("--no-restart", action="store_true", help="skip the restart with derived files")
    parser.add_argument("--startup-timeout", type=float, default=1800.0, help="seconds to wait for /health (1800)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout (table to stderr)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.traces < 1 or args.big_every < 1:
        parser.error("--repeats, --traces and --big-every must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [run_size(args, spans) for spans in args.spans]
    table = render(runs, args)
    print("\n" + table, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps([asdict(r) for r in runs], indent=2, default=str))
    failed = any(r.api_error or any(op["errors"] for op in r.ops) for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
