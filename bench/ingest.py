"""Ingest benchmark: pre-serialized agent traces → a collector in its own process → acked, then queryable in the lake.

Run from the repository root:  .venv/bin/python bench/ingest.py [--spans N] [--senders K] [--spans-per-request R]
[--fsync/--no-fsync] [--transport grpc|http] [--json] [--keep] [--py-spy] [--profile]

The workload (bench/workload.py) is generated once, before the clock starts, inside the K sender processes (each
builds its share of the requests; the bytes do not depend on K). The collector runs as `python -m collector.cli
collector` in a temporary data directory. The clock starts with the first send and stops twice: when every request
has been acknowledged, and when /health reports every span written; a DuckDB count over the lake then has to equal
the number sent. `--py-spy` samples every thread of every collector process with py-spy during the run. `--profile`
instead fills a WAL with the same workload and runs the lake writer's process entry point in this process, once plain
(one writer's throughput on one core) and once under cProfile, and prints where the writer spends its time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import hashlib
import inspect
import io
import json
import logging
import math
import multiprocessing as mp
import os
import pstats
import queue
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx

try:
    from workload import build_request, plan_requests
except ImportError:  # run as `python -m bench.ingest`
    from bench.workload import build_request, plan_requests  # type: ignore[no-redef]

log = logging.getLogger("bench.ingest")

REPO = Path(__file__).resolve().parents[1]
TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TARGET_SPANS_PER_SECOND = 30_000
TARGET_RSS_MB = 500
BASELINE_WAL_SPANS_PER_SECOND = 170_000  # docs/design.md: raw bytes to a WAL with group fsync, ack after fsync
BASELINE_SDK_SPANS_PER_SECOND = 8_300  # docs/design.md: OTel Python SDK exporter as a client, per process
RPC_TIMEOUT_SECONDS = 120.0
PROGRESS_EVERY_SECONDS = 3.0
MIB = 1024 * 1024


# --- sender processes ----------------------------------------------------------------------------------------------


def _retry_delay_grpc(error: Any) -> float | None:
    """The RetryInfo delay from the `google.rpc.retryinfo-bin` trailer, if the server sent one."""
    from google.rpc import error_details_pb2

    for key, value in error.trailing_metadata() or ():
        if key == "google.rpc.retryinfo-bin":
            info = error_details_pb2.RetryInfo.FromString(value)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def _grpc_exporter(address: str) -> Callable[[bytes], tuple[bool, float | None, str]]:
    import grpc

    channel = grpc.insecure_channel(
        address,
        options=[("grpc.max_send_message_length", 256 * MIB), ("grpc.max_receive_message_length", 16 * MIB)],
    )
    call = channel.unary_unary(TRACE_METHOD, request_serializer=None, response_deserializer=None)
    retryable = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}

    def export(body: bytes) -> tuple[bool, float | None, str]:
        """(acknowledged, retry after seconds or None when final, error text)."""
        try:
            call(body, timeout=RPC_TIMEOUT_SECONDS)
            return True, None, ""
        except grpc.RpcError as error:
            code = error.code()
            delay = _retry_delay_grpc(error)
            if code == grpc.StatusCode.UNAVAILABLE or (code in retryable and delay is not None):
                return False, delay if delay is not None else -1.0, code.name
            return False, None, f"{code.name}: {error.details()}"

    return export


def _http_exporter(address: str) -> Callable[[bytes], tuple[bool, float | None, str]]:
    client = httpx.Client(timeout=RPC_TIMEOUT_SECONDS)
    url = f"http://{address}/v1/traces"
    headers = {"content-type": "application/x-protobuf"}

    def export(body: bytes) -> tuple[bool, float | None, str]:
        try:
            response = client.post(url, content=body, headers=headers)
        except httpx.TransportError as exc:
            return False, -1.0, type(exc).__name__
        if response.status_code == 200:
            return True, None, ""
        if response.status_code in (429, 502, 503, 504):
            retry_after = response.headers.get("retry-after")
            try:
                return False, float(retry_after) if retry_after else -1.0, f"HTTP {response.status_code}"
            except ValueError:
                return False, -1.0, f"HTTP {response.status_code}"
        return False, None, f"HTTP {response.status_code}: {response.text[:200]}"

    return export


def sender_main(
    sender: int,
    indices: list[int],
    sizes: list[int],
    seed: int,
    transport: str,
    address: str,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """One client process: build its requests, wait for the start signal, send them one at a time with retries."""
    started = time.monotonic()
    cpu0 = sum(os.times()[:2])
    bodies: list[bytes] = []
    workload: Counter[str] = Counter()
    for index, size in zip(indices, sizes, strict=True):
        body, stats = build_request(seed, index, size)
        bodies.append(body)
        workload.update(asdict(stats))
    ready.put({"sender": sender, "workload": dict(workload), "generate_seconds": time.monotonic() - started})
    export = _grpc_exporter(address) if transport == "grpc" else _http_exporter(address)
    go.wait()
    cpu1 = sum(os.times()[:2])
    latencies: list[float] = []
    with_retries: list[float] = []
    retries: Counter[str] = Counter()
    errors: list[str] = []
    acked_spans = 0
    first_send = time.monotonic()
    last_ack = first_send
    for body, size in zip(bodies, sizes, strict=True):
        request_started = time.monotonic()
        backoff = 0.05
        while True:
            attempt = time.monotonic()
            ok, retry_after, error = export(body)
            now = time.monotonic()
            if ok:
                latencies.append(now - attempt)
                with_retries.append(now - request_started)
                acked_spans += size
                last_ack = now
                break
            if retry_after is None or now - request_started > 10 * RPC_TIMEOUT_SECONDS:
                errors.append(error)
                break
            retries[error] += 1
            time.sleep(retry_after if retry_after >= 0 else backoff)
            backoff = min(backoff * 2, 2.0)
    results.put(
        {
            "sender": sender,
            "first_send": first_send,
            "last_ack": last_ack,
            "latencies": latencies,
            "latencies_with_retries": with_retries,
            "retries": dict(retries),
            "errors": errors,
            "acked_spans": acked_spans,
            "send_cpu_seconds": sum(os.times()[:2]) - cpu1,
            "generate_cpu_seconds": cpu1 - cpu0,
        }
    )


@dataclass
class Senders:
    processes: list[Any]
    ready: Any
    go: Any
    results: Any
    plan: list[int]


def start_senders(args: argparse.Namespace, address_for: Callable[[], str]) -> Senders:
    """Fork-free (spawn) sender processes: grpc must not be initialised before a fork."""
    ctx = mp.get_context("spawn")
    plan = plan_requests(args.spans, args.spans_per_request)
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    processes = []
    address = address_for()
    for sender in range(args.senders):
        indices = list(range(sender, len(plan), args.senders))
        process = ctx.Process(
            target=sender_main,
            args=(sender, indices, [plan[i] for i in indices], args.seed, args.transport, address, ready, go, results),
            name=f"sender-{sender}",
            daemon=True,
        )
        process.start()
        processes.append(process)
    return Senders(processes, ready, go, results, plan)


def wait_ready(senders: Senders, timeout: float) -> tuple[Counter[str], float]:
    workload: Counter[str] = Counter()
    slowest = 0.0
    deadline = time.monotonic() + timeout
    waiting = len(senders.processes)
    while waiting:
        try:
            message = senders.ready.get(timeout=1.0)
        except queue.Empty:
            if time.monotonic() > deadline or not all(p.is_alive() for p in senders.processes):
                raise RuntimeError("a sender process died or stalled while generating its requests") from None
            continue
        waiting -= 1
        workload.update(message["workload"])
        slowest = max(slowest, message["generate_seconds"])
    return workload, slowest


# --- the collector process, its memory and CPU ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_tree(pid: int) -> dict[int, int]:
    """pid and all its descendants (via /proc/<pid>/task/<tid>/children), each with its depth below pid."""
    out: dict[int, int] = {}
    todo = [(pid, 0)]
    while todo:
        current, depth = todo.pop()
        out[current] = depth
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                todo.extend((int(child), depth + 1) for child in (task / "children").read_text().split())
    return out


def status_kb(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process (all its threads), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (stat fields 14, 15)


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine have spent busy since boot (/proc/stat), to spot other load."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


ROLE_LABELS = {"main": "main process", "forkserver": "forkserver", "workers": "child processes (writers)"}


def process_role(pid: int, depth: int) -> str:
    """'main' (the collector), 'forkserver', 'writer <n>' (a lake writer, by the name it gives itself in
    /proc/<pid>/comm) or 'workers' (any other descendant, or a writer before it has named itself)."""
    if depth == 0:
        return "main"
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        name = command = ""
    if name.startswith("af-writer-"):
        return f"writer {name.removeprefix('af-writer-')}"
    return "forkserver" if depth == 1 and "forkserver" in command else "workers"


def pss_kb_of(pid: int) -> int:
    """Pss from /proc/<pid>/smaps_rollup (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class ProcessSampler(threading.Thread):
    """Every 50 ms: VmRSS of the collector's process tree (peak of the sum, and per role) and CPU per process."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self.last_kb = 0
        self.peak_kb_by_role: Counter[str] = Counter()
        self.last_kb_by_role: Counter[str] = Counter()
        self.peak_pss_kb = 0  # proportional set size: pages shared by the forkserver and writers counted once
        self.samples = 0
        self.roles: dict[int, str] = {}
        self.cpu_last: dict[int, float] = {}
        self.cpu_base: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self.sample()

    def sample(self) -> None:
        tree = process_tree(self.pid)
        by_role: Counter[str] = Counter()
        pss_kb = 0
        with self._lock:
            for pid, depth in tree.items():
                if self.roles.get(pid, "workers") == "workers":  # a new writer names itself a moment after start
                    self.roles[pid] = process_role(pid, depth)
                by_role[self.roles[pid]] += status_kb(pid, "VmRSS")
                pss_kb += pss_kb_of(pid)
                cpu = cpu_seconds(pid)
                if cpu is not None:
                    self.cpu_last[pid] = cpu
            self.peak_pss_kb = max(self.peak_pss_kb, pss_kb)
            self.last_kb = sum(by_role.values())
            self.last_kb_by_role = by_role
            self.peak_kb = max(self.peak_kb, self.last_kb)
            for role, kb in by_role.items():
                self.peak_kb_by_role[role] = max(self.peak_kb_by_role[role], kb)
            self.samples += 1

    def mark(self) -> None:
        """Start counting CPU from now (processes born later count from zero)."""
        self.sample()
        with self._lock:
            self.cpu_base = dict(self.cpu_last)

    def cpu_by_role(self) -> dict[str, float]:
        self.sample()
        out: dict[str, float] = {}
        with self._lock:
            for pid, cpu in self.cpu_last.items():
                out.setdefault(self.roles[pid], 0.0)
                out[self.roles[pid]] += cpu - self.cpu_base.get(pid, 0.0)
        return {role: round(seconds, 2) for role, seconds in out.items()}

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(0.05)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=2)


@dataclass
class CollectorProcess:
    process: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    log_path: Path

    def health(self, client: httpx.Client) -> dict[str, Any]:
        response = client.get(f"http://127.0.0.1:{self.http_port}/health", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> float:
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("collector did not stop within %.0fs; killing it", timeout)
                self.process.kill()
                self.process.wait(10)
        return time.monotonic() - started


def start_collector(data_dir: Path, grpc_port: int, http_port: int, fsync: bool, extra: list[str]) -> CollectorProcess:
    log_path = data_dir.parent / "collector.log"
    command = [
        sys.executable,
        "-m",
        "collector.cli",
        "collector",
        "--data-dir",
        str(data_dir),
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        "--log-level",
        "WARNING",
        "--fsync",
        "true" if fsync else "false",
        *extra,
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    return CollectorProcess(process, grpc_port, http_port, log_path)


def wait_healthy(collector: CollectorProcess, client: httpx.Client, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if collector.process.poll() is not None:
            raise RuntimeError(f"collector exited with {collector.process.returncode}:\n{collector.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            collector.health(client)
            return
        time.sleep(0.1)
    raise RuntimeError(f"collector not healthy after {timeout:.0f}s:\n{collector.log_tail()}")


# --- py-spy ---------------------------------------------------------------------------------------------------------


@dataclass
class PySpy:
    process: subprocess.Popen[bytes]
    output: Path

    @classmethod
    def attach(cls, pid: int, output: Path, rate: int) -> PySpy | None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            log.warning("py-spy not found (pip install py-spy); running without it")
            return None
        command = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--threads"]
        command += ["--function", "--subprocesses", "--output", str(output)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # let it attach before the clock starts
        return cls(process, output)

    def finish(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


WRITER_GROUP = "lake writer (decode, normalise, price, Parquet)"


def sample_group(processes: list[str], thread: str, functions: list[str]) -> str:
    """Which part of the collector a py-spy sample belongs to."""
    if any(f.startswith("run_writer ") for f in functions) or thread.startswith("lake-writer"):
        return WRITER_GROUP + (" processes" if len(processes) > 1 else " thread")
    if len(processes) > 1:
        return "other child processes"
    for prefix, group in (
        ("wal-group-commit", "wal-group-commit thread (write + fsync)"),
        ("otlp-grpc", "otlp-grpc handler threads (admission parse, wait for fsync)"),
        ("otlp-http", "otlp-http thread (uvicorn, the /health polls)"),
        ("writer-", "writer pipe listener threads"),
        ("MainThread", "main thread"),
    ):
        if thread.startswith(prefix):
            return group
    return f"other thread ({thread})"


def summarise_py_spy(path: Path, top: int = 25) -> dict[str, Any]:
    """Sample shares per part of the collector, and the writer's top functions (inclusive and self)."""
    groups: Counter[str] = Counter()
    self_all: Counter[str] = Counter()
    writer_inclusive: Counter[str] = Counter()
    writer_self: Counter[str] = Counter()
    total = writer_total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        processes = [f for f in frames if f.startswith("process ")]
        threads = [f for f in frames if f.startswith("thread (")]
        thread = threads[0].split(": ", 1)[-1] if threads else ""
        functions = [f for f in frames if not f.startswith(("process ", "thread ("))]
        group = sample_group(processes, thread, functions)
        groups[group] += count
        total += count
        if functions:
            self_all[f"{functions[-1]}  [{group.split(' (')[0]}]"] += count
        if group.startswith(WRITER_GROUP):
            entry = next((i for i, f in enumerate(functions) if f.startswith(("run_writer ", "LakeWriter._run "))), 0)
            functions = functions[entry:]
            writer_total += count
            for function in set(functions):
                writer_inclusive[function] += count
            if functions:
                writer_self[functions[-1]] += count

    def shares(counter: Counter[str], of: int) -> list[tuple[str, float]]:
        return [(f, round(100 * c / of, 1)) for f, c in counter.most_common(top)] if of else []

    return {
        "samples": total,
        "groups": {g: round(100 * c / total, 1) for g, c in groups.most_common()} if total else {},
        "writer_samples": writer_total,
        "writer_inclusive_pct": shares(writer_inclusive, writer_total),
        "writer_self_pct": shares(writer_self, writer_total),
        "self_pct_all": shares(self_all, total),
    }


def print_py_spy(summary: dict[str, Any], out: Any) -> None:
    print(f"\npy-spy: {summary['samples']} samples of busy threads, all collector processes", file=out)
    print("  share of busy samples:", file=out)
    for group, pct in summary["groups"].items():
        print(f"    {pct:5.1f} %  {group}", file=out)
    print(f"  lake writer: top functions, inclusive % of its {summary['writer_samples']} samples:", file=out)
    for function, pct in summary["writer_inclusive_pct"]:
        print(f"    {pct:5.1f} %  {function}", file=out)
    print("  lake writer: top functions by self time:", file=out)
    for function, pct in summary["writer_self_pct"][:15]:
        print(f"    {pct:5.1f} %  {function}", file=out)
    print("  everything: top functions by self time (% of all busy samples):", file=out)
    for function, pct in summary["self_pct_all"][:15]:
        print(f"    {pct:5.1f} %  {function}", file=out)


# --- the run --------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    config: dict[str, Any]
    workload: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    py_spy: dict[str, Any] | None = None


def source_fingerprint() -> str:
    """A short hash of the collector and store sources, to tell which code a figure was measured on."""
    digest = hashlib.sha256()
    for path in sorted([*REPO.glob("collector/*.py"), *REPO.glob("store/*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[max(0, min(998, round(q * 1000) - 1))]


def collect_results(senders: Senders, timeout: float) -> list[dict[str, Any]]:
    return [senders.results.get(timeout=timeout) for _ in senders.processes]


@contextlib.contextmanager
def temp_dir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="agentflight-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def verify_lake(lake: Path) -> dict[str, Any]:
    from store.views import connect

    started = time.monotonic()
    con = connect(lake)
    try:
        count = con.execute("SELECT count(*) FROM spans").fetchone()
        count_seconds = time.monotonic() - started
        raw = con.execute("SELECT count(*) FROM spans_raw").fetchone()
        by_type = con.execute("SELECT span_type, count(*) FROM spans GROUP BY ALL ORDER BY 2 DESC").fetchall()
        by_cost = con.execute("SELECT cost_status, count(*) FROM spans GROUP BY ALL ORDER BY 2 DESC").fetchall()
        users = con.execute("SELECT count(*) FROM spans WHERE user_id IS NOT NULL").fetchone()
    finally:
        con.close()
    return {
        "spans": int(count[0]) if count else 0,
        "spans_raw": int(raw[0]) if raw else 0,
        "count_seconds": round(count_seconds, 3),
        "span_types": {str(k): int(v) for k, v in by_type},
        "cost_status": {str(k): int(v) for k, v in by_cost},
        "spans_with_user": int(users[0]) if users else 0,
    }


def run(args: argparse.Namespace) -> Result:
    client = httpx.Client()
    with temp_dir(args.keep) as root:
        data_dir = root / "data"
        grpc_port, http_port = free_port(), free_port()
        port = grpc_port if args.transport == "grpc" else http_port
        senders = start_senders(args, lambda: f"127.0.0.1:{port}")
        collector = start_collector(data_dir, grpc_port, http_port, args.fsync, shlex.split(args.collector_args))
        spy: PySpy | None = None
        sampler: ProcessSampler | None = None
        try:
            wait_healthy(collector, client)
            pid = collector.process.pid
            workload, generate_seconds = wait_ready(senders, timeout=max(600.0, args.spans / 500))
            total = int(workload["spans"])
            sampler = ProcessSampler(pid)
            sampler.start()
            idle_rss_kb = sampler.last_kb
            if args.py_spy:
                spy = PySpy.attach(pid, root / "py-spy.txt", args.py_spy_rate)
            sampler.mark()
            load_before = os.getloadavg()[0]
            machine_before = machine_busy_seconds()
            go_time = time.monotonic()
            senders.go.set()
            figures, sender_results = watch(args, senders, collector, client, sampler, total, go_time)
            machine_busy = machine_busy_seconds() - machine_before
            hwm_kb = sum(status_kb(p, "VmHWM") for p in process_tree(pid))
            if spy is not None:
                spy.finish()
            sampler.stop()
            verification = verify_lake(data_dir / "lake")
            health = collector.health(client)
            stop_seconds = collector.stop()
        except BaseException:
            sys.stderr.write(f"collector log tail:\n{collector.log_tail()}\n")
            raise
        finally:
            if sampler is not None:
                sampler.stop()
            if spy is not None:
                spy.finish()
            collector.stop(timeout=10)
            for process in senders.processes:
                if process.is_alive():
                    process.terminate()
        start = min(r["first_send"] for r in sender_results)
        figures.update(
            {
                "collector_cores_busy": round(
                    figures["collector_cpu_seconds"] / max(figures["queryable_seconds"], 1e-9), 2
                ),
                "sender_cpu_seconds": round(sum(r["send_cpu_seconds"] for r in sender_results), 2),
                "collector_idle_rss_mb": round(idle_rss_kb / 1024, 1),
                "collector_peak_rss_mb": round(sampler.peak_kb / 1024, 1),
                "collector_peak_pss_mb": round(sampler.peak_pss_kb / 1024, 1),
                "collector_peak_rss_mb_by_role": {r: round(kb / 1024, 1) for r, kb in sampler.peak_kb_by_role.items()},
                "collector_vmhwm_mb": round(hwm_kb / 1024, 1),
                "rss_samples": sampler.samples,
                "collector_stop_seconds": round(stop_seconds, 2),
                "parts_published": health.get("parts_published"),
                "spans_dropped": health.get("spans_dropped"),
                "wal_records_failed": health.get("wal_records_failed"),
                "start_skew_seconds": round(start - go_time, 3),
                "load_average_before": round(load_before, 2),
                # Busy CPU of the whole machine from go to the end of verification, less collector and senders.
                "other_cpu_seconds": round(
                    machine_busy
                    - figures["collector_cpu_seconds"]
                    - sum(r["send_cpu_seconds"] for r in sender_results),
                    1,
                ),
            }
        )
        result = Result(
            config={
                "spans": args.spans,
                "senders": args.senders,
                "spans_per_request": args.spans_per_request,
                "transport": args.transport,
                "fsync": args.fsync,
                "seed": args.seed,
                "collector_args": args.collector_args,
                "cpus": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                "python": sys.version.split()[0],
                "source_fingerprint": source_fingerprint(),
            },
            workload={
                "requests": len(senders.plan),
                "spans": total,
                "traces": int(workload["traces"]),
                "llm_spans": int(workload["llm_spans"]),
                "tool_spans": int(workload["tool_spans"]),
                "bytes": int(workload["bytes"]),
                "avg_bytes_per_span": round(workload["bytes"] / max(total, 1), 1),
                "generate_seconds": round(generate_seconds, 2),
            },
            figures=figures,
            verification=verification,
        )
        if spy is not None and spy.output.exists():
            result.py_spy = summarise_py_spy(spy.output)
        return result


def watch(
    args: argparse.Namespace,
    senders: Senders,
    collector: CollectorProcess,
    client: httpx.Client,
    sampler: ProcessSampler,
    total: int,
    go_time: float,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll /health until every span is written; gather the senders' reports as they finish."""
    deadline = go_time + max(900.0, total / 200)
    results: list[dict[str, Any]] = []
    queryable_at: float | None = None
    last_progress = go_time
    last_cpu = sampler.cpu_by_role()
    cpu_at_queryable: dict[str, float] = {}
    health: dict[str, Any] = {}
    while queryable_at is None:
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"not every span queryable after {now - go_time:.0f}s; last health: {health}")
        if collector.process.poll() is not None:
            raise RuntimeError(f"collector exited with {collector.process.returncode}")
        while len(results) < len(senders.processes):
            try:
                results.append(senders.results.get_nowait())
            except queue.Empty:
                break
        if len(results) < len(senders.processes) and not any(p.is_alive() for p in senders.processes):
            time.sleep(0.5)
            with contextlib.suppress(Exception):
                while len(results) < len(senders.processes):
                    results.append(senders.results.get(timeout=1))
            if len(results) < len(senders.processes):
                raise RuntimeError("a sender process died without reporting")
        with contextlib.suppress(httpx.HTTPError):
            health = collector.health(client)
        all_acked = len(results) == len(senders.processes)
        expected = sum(r["acked_spans"] for r in results) if all_acked else total
        if all_acked and health.get("spans_written", 0) >= expected:
            queryable_at = time.monotonic()
            cpu_at_queryable = sampler.cpu_by_role()
            break
        if now - last_progress >= PROGRESS_EVERY_SECONDS:
            cpu = sampler.cpu_by_role()
            busy = "  ".join(
                f"{role} {100 * (cpu[role] - last_cpu.get(role, 0.0)) / (now - last_progress):3.0f}%"
                for role in sorted(cpu)
            )
            last_progress, last_cpu = now, cpu
            print(
                f"[{now - go_time:6.1f}s] accepted {health.get('spans_accepted', 0):>9,} / {total:,}  "
                f"written {health.get('spans_written', 0):>9,}  wal depth {health.get('wal_depth_bytes', 0) / MIB:7.1f}"
                f" MiB  flush lag {health.get('flush_lag_seconds', 0):5.1f}s  rss {sampler.last_kb / 1024:6.0f} MB"
                f"  senders done {len(results)}/{len(senders.processes)}  cpu: {busy}",
                file=sys.stderr,
            )
        time.sleep(0.05 if all_acked else 0.1)
    start = min(r["first_send"] for r in results)
    acked_at = max(r["last_ack"] for r in results)
    acked_spans = sum(r["acked_spans"] for r in results)
    latencies = [x for r in results for x in r["latencies"]]
    with_retries = [x for r in results for x in r["latencies_with_retries"]]
    retries: Counter[str] = Counter()
    errors: list[str] = []
    for r in results:
        retries.update(r["retries"])
        errors.extend(r["errors"])
    acked_seconds = acked_at - start
    queryable_seconds = queryable_at - start
    return (
        {
            "spans_sent": total,
            "collector_cpu_seconds": round(sum(cpu_at_queryable.values()), 2),
            "collector_cpu_seconds_by_role": cpu_at_queryable,
            "spans_acked": acked_spans,
            "acked_seconds": round(acked_seconds, 3),
            "acked_spans_per_second": round(acked_spans / acked_seconds, 1),
            "queryable_seconds": round(queryable_seconds, 3),
            "acked_and_queryable_spans_per_second": round(acked_spans / queryable_seconds, 1),
            "ack_to_queryable_seconds": round(queryable_seconds - acked_seconds, 3),
            "export_latency_p50_ms": round(1000 * percentile(latencies, 0.50), 1),
            "export_latency_p99_ms": round(1000 * percentile(latencies, 0.99), 1),
            "export_latency_max_ms": round(1000 * max(latencies, default=float("nan")), 1),
            "export_latency_with_retries_p99_ms": round(1000 * percentile(with_retries, 0.99), 1),
            "retries": sum(retries.values()),
            "retries_by_reason": dict(retries),
            "failed_requests": len(errors),
            "errors": errors[:10],
        },
        results,
    )


# --- in-process profile of the lake writer -------------------------------------------------------------------------


def _generate_all(args: argparse.Namespace) -> tuple[list[bytes], int]:
    plan = plan_requests(args.spans, args.spans_per_request)
    with mp.get_context("spawn").Pool(os.cpu_count() or 2) as pool:
        built = pool.starmap(build_request, [(args.seed, index, size) for index, size in enumerate(plan)])
    return [body for body, _ in built], sum(stats.spans for _, stats in built)


class WriterPass(NamedTuple):
    seconds: float  # wall time until the whole WAL was published
    spans: int  # spans written
    rss_mb: float  # peak RSS growth of this process
    cpu_seconds: float  # CPU time of the writer thread: the figure to compare on a shared machine
    gc_seconds: float  # of which in the cyclic garbage collector (collections the writer thread triggered)


def _writer_pass(lake_dir: Path, wal_dir: Path, prices_dir: Path, profiler: cProfile.Profile | None) -> WriterPass:
    """Run the writer process's entry point in a thread of this process until it has published the whole WAL."""
    from collector.config import WriterSettings
    from collector.wal import WalPosition, list_segments
    from collector.writer_pool import run_writer

    for checkpoint in wal_dir.glob("checkpoint-*.json"):
        checkpoint.unlink()  # every pass reads the whole WAL
    last_segment = list_segments(wal_dir)[-1]
    target = WalPosition(last_segment, (wal_dir / f"segment-{last_segment:020d}.wal").stat().st_size)
    parent, child = mp.Pipe(duplex=True)
    settings = WriterSettings(processes=1)

    known: dict[str, Any] = {
        "lake_dir": lake_dir,
        "wal_dir": wal_dir,
        "prices_dir": prices_dir,
        "settings": settings,
        "shard": 0,
        "start": WalPosition(list_segments(wal_dir)[0], 0),
        "conn": child,
        "log_level": "WARNING",
    }
    parameters = inspect.signature(run_writer).parameters
    unknown = [name for name, p in parameters.items() if name not in known and p.default is inspect.Parameter.empty]
    if unknown:
        raise TypeError(f"run_writer wants {unknown}, which this benchmark does not know how to provide")
    kwargs = {name: value for name, value in known.items() if name in parameters}
    failure: list[BaseException] = []
    cpu_seconds: list[float] = []
    gc_seconds = [0.0, 0.0]  # total, start of the current collection
    writer_ident: list[int] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if writer_ident and threading.get_ident() == writer_ident[0]:
            if phase == "start":
                gc_seconds[1] = time.thread_time()
            else:
                gc_seconds[0] += time.thread_time() - gc_seconds[1]

    def entry() -> None:
        writer_ident.append(threading.get_ident())
        started_cpu = time.thread_time()
        try:
            run_writer(**kwargs)
        except BaseException as exc:
            failure.append(exc)
            raise
        finally:
            cpu_seconds.append(time.thread_time() - started_cpu)

    sampler = ProcessSampler(os.getpid())
    sampler.start()
    baseline_kb = sampler.last_kb
    gc.callbacks.append(on_gc)
    thread = threading.Thread(
        target=(lambda: profiler.runcall(entry)) if profiler is not None else entry, name="lake-writer", daemon=True
    )
    started = time.monotonic()
    thread.start()
    parent.send(("flush", target.segment, target.offset))
    written = 0
    last_report = started
    while True:
        if not parent.poll(1.0):
            if not thread.is_alive():
                raise RuntimeError(f"the writer stopped before publishing the whole WAL: {failure!r}")
            continue
        message = parent.recv()
        if message[0] != "progress":
            continue
        written = int(message[3].get("spans_written", 0))
        if WalPosition(message[1], message[2]) >= target:
            break
        if time.monotonic() - last_report >= PROGRESS_EVERY_SECONDS:
            last_report = time.monotonic()
            print(f"[{last_report - started:6.1f}s] writer published {written:,} spans", file=sys.stderr)
    seconds = time.monotonic() - started
    parent.send(("stop",))
    thread.join(timeout=60)
    gc.callbacks.remove(on_gc)
    sampler.stop()
    return WriterPass(
        seconds,
        written,
        (sampler.peak_kb - baseline_kb) / 1024,
        cpu_seconds[0] if cpu_seconds else math.nan,
        gc_seconds[0],
    )


def _freeze_writer_heap() -> None:
    """What ``gc.freeze()`` in a writer process after its imports would save: import what run_writer imports and
    load the price table, then move every object so far out of the collector's reach (its full collections walk
    the whole heap: pyarrow, protobuf, the price table)."""
    import pyarrow  # noqa: F401

    import collector.writer  # noqa: F401
    import store.lake  # noqa: F401
    from collector.pricing import Pricer

    Pricer().price(
        span_type="llm", provider="openai", request_model="gpt-4o", response_model=None, input_tokens=1,
        output_tokens=1, cache_read_tokens=None, cache_write_tokens=None, reasoning_tokens=None,
        start_time_unix_nano=time.time_ns(), reported_cost_usd=None, reported_cost_source=None,
    )  # fmt: skip
    gc.collect()
    gc.freeze()


def run_profile(args: argparse.Namespace) -> None:
    """Where the lake writer spends its time: cProfile of one writer, in this process, over a pre-filled WAL.

    The writer runs in its own process in the collector (collector/writer_pool.py), so instead of profiling a
    Collector this fills a WAL with the workload exactly as the ack path logs it (the admitted request bytes),
    then runs the writer process's entry point, run_writer, in a thread here: once plain (the writer's own
    throughput on one core) and once under cProfile (the profile). Timings under cProfile are inflated.
    """
    from collector.wal import SIGNAL_TRACES, WriteAheadLog

    with temp_dir(args.keep) as root:
        data_dir = root / "data"
        started = time.monotonic()
        bodies, total = _generate_all(args)
        print(
            f"generated {total:,} spans in {len(bodies)} requests in {time.monotonic() - started:.1f}s", file=sys.stderr
        )
        wal = WriteAheadLog(data_dir / "wal", fsync=args.fsync)
        started = time.monotonic()
        futures = [wal.append(SIGNAL_TRACES, "default", time.time_ns(), body) for body in bodies]
        for future in futures:
            future.result(timeout=600)
        wal_seconds = time.monotonic() - started
        wal.close()
        wal_bytes = sum(len(body) for body in bodies)
        del bodies, futures
        print(
            f"WAL append (one thread queueing, group commit, fsync {'on' if args.fsync else 'off'}): {total:,} spans "
            f"in {wal_seconds:.2f}s = {total / wal_seconds:,.0f} spans/s ({wal_bytes / MIB / wal_seconds:,.0f} MiB/s)"
        )
        if args.gc_freeze:
            _freeze_writer_heap()
        try:
            plain = _writer_pass(data_dir / "lake-plain", data_dir / "wal", data_dir / "prices", None)
            profiler = cProfile.Profile()
            profiled = _writer_pass(data_dir / "lake-profiled", data_dir / "wal", data_dir / "prices", profiler)
        except (ImportError, TypeError) as exc:
            raise SystemExit(
                f"--profile drives collector.writer_pool.run_writer directly and its interface changed ({exc}); "
                "update _writer_pass in bench/ingest.py"
            ) from exc
        print(
            f"one writer, plain: {plain.spans:,} spans published in {plain.seconds:.2f}s = "
            f"{plain.spans / plain.seconds:,.0f} spans/s on one core; peak RSS growth of this process "
            f"{plain.rss_mb:,.0f} MB"
        )
        print(
            f"one writer, plain: {plain.cpu_seconds:.2f} CPU-seconds of the writer thread = "
            f"{plain.spans / plain.cpu_seconds:,.0f} spans per CPU-second ({plain.cpu_seconds / plain.spans * 1e6:.1f} "
            f"µs/span), of which {plain.gc_seconds:.2f} s in the garbage collector"
            + (" (objects before the pass frozen: --gc-freeze)" if args.gc_freeze else "")
        )
        print(
            f"one writer, under cProfile: {profiled.spans:,} spans in {profiled.seconds:.2f}s = "
            f"{profiled.spans / profiled.seconds:,.0f} spans/s (collector+store sources {source_fingerprint()})"
        )
        stream = io.StringIO()
        stats = pstats.Stats(profiler, stream=stream)
        stats.sort_stats("cumulative").print_stats(args.profile_top)
        stats.sort_stats("tottime").print_stats(args.profile_top)
        print(f"\nlake writer, top {args.profile_top} functions by cumulative time, then by own time:")
        print(stream.getvalue())
        if args.profile_out:
            profiler.dump_stats(args.profile_out)
            print(f"profile saved to {args.profile_out} (python -m pstats {args.profile_out})")


# --- report ---------------------------------------------------------------------------------------------------------


def render(result: Result) -> str:
    c, w, f, v = result.config, result.workload, result.figures, result.verification
    e2e = f["acked_and_queryable_spans_per_second"]
    acked = f["acked_spans_per_second"]
    ok = v["spans"] == f["spans_sent"] and not f["failed_requests"]
    lines = [
        f"agentflight ingest benchmark — {c['date']}, {c['cpus']} CPUs, Python {c['python']}, "
        f"collector+store sources {c['source_fingerprint']}",
        f"  {w['spans']:,} spans in {w['requests']:,} requests of {c['spans_per_request']} spans, {w['traces']:,} "
        f"agent runs ({w['llm_spans']:,} chat, {w['tool_spans']:,} tool spans), avg {w['avg_bytes_per_span']:,.0f}"
        f" B/span on the wire ({w['bytes'] / MIB:,.1f} MiB); generated up front in {w['generate_seconds']:.1f}s",
        f"  {c['senders']} sender processes over {c['transport']}, fsync {'on' if c['fsync'] else 'off'}"
        + (f", collector args {c['collector_args']!r}" if c["collector_args"] else ""),
        "",
        f"  {'figure':<44}{'value':>14}",
        f"  {'-' * 58}",
    ]
    rows: list[tuple[str, str]] = [
        ("time until every request acked", f"{f['acked_seconds']:.2f} s"),
        ("time until every span queryable", f"{f['queryable_seconds']:.2f} s"),
        ("  of which ack → queryable lag", f"{f['ack_to_queryable_seconds']:.2f} s"),
        ("acked spans/s", f"{acked:,.0f}"),
        ("acknowledged-and-queryable spans/s", f"{e2e:,.0f}"),
        ("acked MiB/s on the wire", f"{w['bytes'] / MIB / f['acked_seconds']:,.1f}"),
        ("export latency p50 / p99", f"{f['export_latency_p50_ms']:,.0f} / {f['export_latency_p99_ms']:,.0f} ms"),
        ("export latency max", f"{f['export_latency_max_ms']:,.0f} ms"),
        ("retries (overload) / failed requests", f"{f['retries']} / {f['failed_requests']}"),
        ("collector peak RSS (sampled, 50 ms)", f"{f['collector_peak_rss_mb']:,.0f} MB"),
        ("collector peak PSS (shared pages once)", f"{f['collector_peak_pss_mb']:,.0f} MB"),
        *(
            (f"  of which {ROLE_LABELS.get(role, role)}", f"{mb:,.0f} MB")
            for role, mb in sorted(f["collector_peak_rss_mb_by_role"].items())
        ),
        ("collector VmHWM (sum) / idle RSS", f"{f['collector_vmhwm_mb']:,.0f} / {f['collector_idle_rss_mb']:,.0f} MB"),
        ("collector CPU (cores busy, avg)", f"{f['collector_cpu_seconds']:.1f} s ({f['collector_cores_busy']:.2f})"),
        *(
            (f"  of which {ROLE_LABELS.get(role, role)}", f"{seconds:.1f} s")
            for role, seconds in sorted(f["collector_cpu_seconds_by_role"].items())
        ),
        ("sender CPU while sending (all senders)", f"{f['sender_cpu_seconds']:.2f} s"),
        (
            "other CPU on the machine; loadavg before",
            f"{f['other_cpu_seconds']:.1f} s; {f['load_average_before']:.1f}",
        ),
        ("parts published", f"{f['parts_published']}"),
        ("DuckDB count(*) FROM spans", f"{v['spans']:,} ({v['count_seconds']:.2f} s)"),
    ]
    lines += [f"  {label:<44}{value:>14}" for label, value in rows]
    lines += [
        "",
        f"  {'compared with':<44}{'reference':>14}{'ratio':>9}",
        f"  {'-' * 67}",
        f"  {'target: acked-and-queryable spans/s':<44}{TARGET_SPANS_PER_SECOND:>14,}"
        f"{e2e / TARGET_SPANS_PER_SECOND:>8.2f}x",
        f"  {'target: collector RSS MB (lower is better)':<44}{TARGET_RSS_MB:>14,}"
        f"{f['collector_peak_rss_mb'] / TARGET_RSS_MB:>8.2f}x",
        f"  {'target: collector PSS MB (lower is better)':<44}{TARGET_RSS_MB:>14,}"
        f"{f['collector_peak_pss_mb'] / TARGET_RSS_MB:>8.2f}x",
        f"  {'baseline: raw WAL + group fsync (acked)':<44}{BASELINE_WAL_SPANS_PER_SECOND:>14,}"
        f"{acked / BASELINE_WAL_SPANS_PER_SECOND:>8.2f}x",
        f"  {'baseline: raw WAL + group fsync (e2e)':<44}{BASELINE_WAL_SPANS_PER_SECOND:>14,}"
        f"{e2e / BASELINE_WAL_SPANS_PER_SECOND:>8.2f}x",
        f"  {'baseline: OTel SDK exporter, 1 process':<44}{BASELINE_SDK_SPANS_PER_SECOND:>14,}"
        f"{e2e / BASELINE_SDK_SPANS_PER_SECOND:>8.2f}x",
        "",
        f"  target met: {'yes' if e2e >= TARGET_SPANS_PER_SECOND else 'NO'} (throughput), "
        f"{'yes' if f['collector_peak_rss_mb'] < TARGET_RSS_MB else 'NO'} (memory, RSS sum), "
        f"{'yes' if f['collector_peak_pss_mb'] < TARGET_RSS_MB else 'NO'} (memory, PSS sum); "
        f"lake check: {'OK' if ok else 'MISMATCH'} ({v['spans']:,} queryable of {f['spans_sent']:,} sent, "
        f"{v['spans_raw']:,} rows incl. duplicates, {f['spans_dropped']} dropped)",
        f"  span types {v['span_types']}; cost status {v['cost_status']}",
    ]
    if f["errors"]:
        lines.append(f"  first errors: {f['errors']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--spans", type=int, default=200_000, help="spans to send in all (default 200000)")
    parser.add_argument("--senders", type=int, default=4, help="concurrent sender processes (default 4)")
    parser.add_argument("--spans-per-request", type=int, default=512, help="spans per export request (default 512)")
    parser.add_argument(
        "--fsync", action=argparse.BooleanOptionalAction, default=True, help="collector fsyncs its WAL (default on)"
    )
    parser.add_argument("--transport", choices=("grpc", "http"), default="grpc", help="OTLP transport (default grpc)")
    parser.add_argument("--seed", type=int, default=7, help="workload seed (default 7)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout (table to stderr)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    parser.add_argument(
        "--collector-args", default="", help="extra flags for the collector, e.g. '--writer-processes 1'"
    )
    parser.add_argument("--py-spy", action="store_true", help="sample the collector with py-spy during the run")
    parser.add_argument("--py-spy-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    parser.add_argument(
        "--profile", action="store_true", help="profile one lake writer (cProfile, in this process) instead"
    )
    parser.add_argument("--profile-top", type=int, default=25, help="functions to list in --profile (default 25)")
    parser.add_argument("--profile-out", default=None, help="also save the --profile stats to this file")
    parser.add_argument(
        "--gc-freeze", action="store_true", help="--profile with gc.freeze() after the writer's imports (what it saves)"
    )
    args = parser.parse_args(argv)
    if args.spans <= 0 or args.senders <= 0 or args.spans_per_request <= 0:
        parser.error("--spans, --senders and --spans-per-request must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.profile:
        run_profile(args)
        return 0
    result = run(args)
    table = render(result)
    print(table, file=sys.stderr if args.json else sys.stdout)
    if result.py_spy is not None:
        print_py_spy(result.py_spy, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(asdict(result), indent=2, default=str))
    lake_ok = result.verification["spans"] == result.figures["spans_sent"] and not result.figures["failed_requests"]
    return 0 if lake_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
