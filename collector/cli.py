"""The `agentflight` command: up, collector, sql, keys, reprice, maintain, report (and api/ui/demo as they land).

Settings are parsed once here (flags, then AGENTFLIGHT_* environment, then defaults) and handed down.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from collector.config import ConfigError, Settings, env_name, load_settings

log = logging.getLogger("agentflight")

_COMMON_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("--data-dir", {"help": "data directory (default ./agentflight-data)"}),
    ("--host", {"help": "address the servers bind (default 127.0.0.1)"}),
    ("--grpc-port", {"help": "OTLP gRPC port (default 4317)"}),
    ("--http-port", {"help": "OTLP HTTP port (default 4318)"}),
    ("--api-port", {"help": "query API port (default 8000)"}),
    ("--ui-port", {"help": "UI port (default 8501)"}),
    ("--keys-file", {"help": "API keys file (default <data-dir>/keys.json)"}),
    ("--fsync", {"help": "fsync the WAL before acknowledging (default true)"}),
    ("--max-request-bytes", {"help": "largest accepted export request (default 64 MiB)"}),
    ("--max-inflight-bytes", {"help": "request bytes held in memory at once before refusing (default 256 MiB)"}),
    ("--max-wal-backlog-bytes", {"help": "unpublished WAL bytes before refusing with retry (default 1 GiB)"}),
    ("--flush-interval-seconds", {"help": "longest a span waits before it is queryable (default 1.0)"}),
    ("--writer-processes", {"help": "lake writer processes (default 2, one per core)"}),
    ("--retention-days", {"help": "drop date partitions older than this (default: keep forever)"}),
    ("--log-level", {"help": "DEBUG, INFO, WARNING or ERROR (default INFO)"}),
    ("--sql-timeout-seconds", {"help": "POST /sql: longest a query runs (default 10)"}),
    ("--sql-max-rows", {"help": "POST /sql: most rows a result may have (default 10000)"}),
    ("--sql-memory-limit-mb", {"help": "POST /sql: DuckDB memory per query in MiB (default 1024)"}),
    ("--tls-cert-file", {"help": "PEM certificate chain: the OTLP receivers accept TLS only (with --tls-key-file)"}),
    ("--tls-key-file", {"help": "PEM private key of --tls-cert-file"}),
    ("--api-nice", {"help": "the query API's CPU priority, nice 0-19 (default 19: ingest comes first)"}),
]


def _add_common(parser: argparse.ArgumentParser) -> None:
    for flag, options in _COMMON_FLAGS:
        dest = flag[2:].replace("-", "_")
        parser.add_argument(flag, dest=dest, default=None, **options)


def _stop_on_signal() -> threading.Event:
    """Installed before anything starts, so a Ctrl-C during start-up still stops cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_collector(settings: Settings, args: argparse.Namespace) -> int:
    from collector.service import Collector

    stop = _stop_on_signal()
    collector = Collector(settings).start()
    log.info(
        "agentflight collector ready: OTLP gRPC %s:%d, OTLP HTTP %s:%d (health: /health, metrics: /metrics)",
        settings.host,
        collector.grpc_port,
        settings.host,
        collector.http_port,
    )
    stop.wait()
    log.info("shutting down: publishing what is buffered")
    collector.stop()
    return 0


def _start_api_process(settings: Settings) -> subprocess.Popen[bytes]:
    """The query API in its own process: the receiving process keeps DuckDB and the index out of its memory."""
    env = dict(os.environ)
    env.update(
        {
            env_name("data_dir"): str(settings.data_dir),
            env_name("host"): settings.host,
            env_name("api_port"): str(settings.api_port),
            env_name("keys_file"): str(settings.keys_path),
            env_name("log_level"): settings.log_level,
        }
    )
    return subprocess.Popen([sys.executable, "-m", "collector.cli", "api"], env=env)


def _ui_process_args(settings: Settings) -> list[str]:
    import ui

    app = Path(ui.__file__).parent / "app.py"
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.port", str(settings.ui_port), "--server.address", settings.host,
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip


def _start_ui_process(settings: Settings, api_url: str) -> subprocess.Popen[bytes]:
    """The Streamlit UI in its own process, talking to the API over HTTP only."""
    env = dict(os.environ)
    env.setdefault("AGENTFLIGHT_API_URL", api_url)
    return subprocess.Popen(_ui_process_args(settings), env=env, stdout=subprocess.DEVNULL)


def _wait_for_api(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0, path: str = "/health") -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}{path}", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _print_welcome(
    settings: Settings, grpc_port: int, http_port: int, api_url: str | None, ui_url: str | None = None
) -> None:
    import httpx

    if api_url is not None and not settings.keys_path.exists():
        traces = httpx.get(f"{api_url}/traces", params={"limit": 12}, timeout=30).json().get("traces", [])
        print("\nLatest traces:", flush=True)
        columns = ("start (UTC)", "service", "user", "spans", "tokens", "cost USD", "flags")
        row = "  {:<20} {:<22} {:<12} {:>5} {:>7} {:>10}  {}"
        print(row.format(*columns), flush=True)
        for t in traces:
            cost = "unknown" if t["cost_usd"] is None else f"{t['cost_usd']:.6f}"
            cells = (t["start_time"][:19], (t["service_name"] or "")[:22], (t["user_id"] or "")[:12], t["span_count"])
            print(row.format(*cells, t["tokens"]["total_tokens"], cost, ",".join(t["flags"])), flush=True)
        totals = httpx.get(f"{api_url}/findings/counts", timeout=30).json().get("totals", {})
        if totals:
            found = ", ".join(f"{count} {kind}" for kind, count in sorted(totals.items()))
            print(f"\nFindings: {found}   (GET {api_url}/findings)", flush=True)
    host, data = settings.host, settings.data_dir
    lines = [
        f"\nagentflight is running; data in {data.resolve()}",
        f"  Point an agent at it:  OTEL_EXPORTER_OTLP_ENDPOINT=http://{host}:{http_port}  (gRPC: {host}:{grpc_port})",
        f"  UI:                    {ui_url or 'not running (see the log above)'}",
        f"  Query API:             {api_url or 'not running (see the log above)'}  (OpenAPI docs: /docs)",
        f"  Query the lake:        .venv/bin/agentflight sql --data-dir {data}",
        f"  Ingest health:         http://{host}:{http_port}/health   (Prometheus: /metrics)",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), flush=True)


def _run_demo(settings: Settings, grpc_port: int) -> None:
    """The demo agent's scenarios, exported over OTLP gRPC to the running collector (examples/)."""
    import os

    from examples.scenarios import run_demo

    result = run_demo(f"http://{settings.host}:{grpc_port}", api_key=os.environ.get("AGENTFLIGHT_API_KEY"))
    log.info(
        "demo: %d agent runs of the travel agent exported (loops, retries, budgets, guardrails, errors)", result.traces
    )


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """Everything on the embedded default: the collector and the query API; on a first run, sample
    captures and the demo agent's traces; with `demo`, the demo agent's traces every time."""
    from collector.seed import send_samples
    from collector.service import Collector

    stop = _stop_on_signal()
    collector = Collector(settings).start()
    api = _start_api_process(settings)
    ui: subprocess.Popen[bytes] | None = None
    try:
        fresh = not collector.lake.parts("spans")
        first_run = fresh and not args.no_samples and not collector.keys.enabled
        if first_run:
            sent = send_samples(settings.host, collector.http_port)
            log.info("first run: loaded %d sample export(s) through the OTLP receiver", sent)
        if first_run or args.command == "demo":
            _run_demo(settings, collector.grpc_port)
        collector.flush()
        api_url: str | None = f"http://{settings.host}:{settings.api_port}"
        if not _wait_for_api(f"http://{settings.host}:{settings.api_port}", api):
            log.error("the query API did not start (exit code %s); the collector keeps running", api.poll())
            api_url = None
        ui = _start_ui_process(settings, f"http://{settings.host}:{settings.api_port}")
        ui_url: str | None = f"http://{settings.host}:{settings.ui_port}"
        if not _wait_for_api(f"http://{settings.host}:{settings.ui_port}", ui, path="/_stcore/health"):
            log.error("the UI did not start (exit code %s)", ui.poll())
            ui_url = None
        _print_welcome(settings, collector.grpc_port, collector.http_port, api_url, ui_url)
        stop.wait()
    finally:
        log.info("shutting down: publishing what is buffered")
        children = [api] + ([ui] if ui is not None else [])
        for child in children:
            child.terminate()
        collector.stop()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def cmd_ui(settings: Settings, args: argparse.Namespace) -> int:
    """The Streamlit UI on --ui-port, reading from the API at AGENTFLIGHT_API_URL (default: --api-port here)."""
    env = dict(os.environ)
    env.setdefault("AGENTFLIGHT_API_URL", f"http://{settings.host}:{settings.api_port}")
    log.info("agentflight UI on http://%s:%d (API: %s)", settings.host, settings.ui_port, env["AGENTFLIGHT_API_URL"])
    # Streamlit replaces this process, so a service manager's SIGTERM reaches it: a child left behind
    # kept the port after its parent was stopped.
    command = _ui_process_args(settings)
    os.execve(command[0], command, env)


def _lower_priority(nice: int) -> None:
    """Run this process at `nice` (never raising its priority, which needs privileges). Called before any
    thread starts: Linux keeps a nice value per thread, and threads (uvicorn's, DuckDB's, polars') inherit it."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        log.info("API process at nice %d: on a shared machine the collector's ingest comes first", nice)


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    """The query API on --api-port (uvicorn, one process; DuckDB uses both cores per query)."""
    _lower_priority(settings.api_nice)
    import uvicorn

    from query.app import create_app, started

    app = create_app(settings)
    warm = started(app)
    log.info(
        "agentflight API ready on http://%s:%d (docs: /docs, index warmed in %.2f s)",
        settings.host,
        settings.api_port,
        warm,
    )
    uvicorn.run(app, host=settings.host, port=settings.api_port, log_level="warning", access_log=False)
    return 0


def cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    from store.sql_shell import run_shell

    return run_shell(settings.lake_dir, args.project, args.query)


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    from store.keys import create_key, load_keys, revoke_key

    path = settings.keys_path
    if args.keys_action == "create":
        key, record = create_key(path, args.project)
        print(f"created key {record.key_id} for project {record.project!r} (stored as a SHA-256 digest in {path})")
        print(f"  {key}")
        print("This is the only time the key is shown. Send it as 'authorization: Bearer <key>' or 'x-api-key'.")
        return 0
    if args.keys_action == "list":
        for k in load_keys(path):
            state = "revoked" if k.revoked else "active"
            print(f"{k.key_id}\t{k.project}\t{state}\t{k.created_at}")
        return 0
    if revoke_key(path, args.key_id):
        print(f"revoked {args.key_id}")
        return 0
    print(f"no key with id {args.key_id!r} in {path}", file=sys.stderr)
    return 1


def cmd_reprice(settings: Settings, args: argparse.Namespace) -> int:
    from collector.pricing import ProjectPricers
    from collector.reprice import reprice_lake

    report = reprice_lake(settings.lake_dir, ProjectPricers(settings.prices_dir).for_project, project=args.project)
    print(
        f"re-priced {report.parts} part(s), {report.spans} span(s): {report.changed} cost(s) changed, "
        f"{report.unknown} span(s) with an unknown model"
    )
    return 0


def cmd_maintain(settings: Settings, args: argparse.Namespace) -> int:
    """Compaction and retention on demand (a running collector's maintenance process does both periodically):
    one round of what it does, merging any two or more small parts."""
    from collector.config import WriterSettings
    from collector.maintainer import maintain
    from collector.metrics import WriterCounters
    from store.lake import Lake, WriterLock

    lake = Lake(settings.lake_dir, writer_id="maintain")
    lock = WriterLock(settings.lake_dir).acquire()
    counters = WriterCounters()
    try:
        dropped = maintain(lake, WriterSettings(compact_min_parts=2, retention_days=settings.retention_days), counters)
    finally:
        lock.release()
    print(
        f"compacted {counters.parts_compacted} part(s), removed {counters.spans_deduplicated} duplicate row(s), "
        f"dropped {len(dropped)} partition(s)"
    )
    return 0


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    """The readiness report, read from the lake in this process (no server needed: the index the API would
    build is built here, reusing the derived files an API left in the lake), printed as text or JSON."""
    import json

    from query.detect.config import DetectorConfigs
    from query.errors import QueryError
    from query.index import TraceIndex
    from query.readiness import report, text
    from query.readiness.scope import window
    from query.traces import parse_time

    configs = DetectorConfigs(settings.detectors_dir)
    configs.check_all()
    index = TraceIndex(settings.lake_dir, configs=configs)
    try:
        win = window(parse_time(args.since, "--since"), parse_time(args.until, "--until"), args.service)
        found = report.build(index, args.project, win, configs.get(args.project))
    except QueryError as exc:
        print(f"agentflight report: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps(found, indent=1, default=str) if args.json else text.render(found), end="")
    return 0 if found["held"] is not False or not args.fail_when_not_held else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentflight",
        description="The flight recorder for AI agents: OTLP in, a Parquet lake out, queried with DuckDB.",
        epilog="Every flag also reads an environment variable: --data-dir is AGENTFLIGHT_DATA_DIR, and so on.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, tuple[str, Callable[[Settings, argparse.Namespace], int]]] = {
        "up": ("run everything on the embedded default (data directory, no other server)", cmd_up),
        "demo": ("run everything and fill it with the demo travel agent's traces", cmd_up),
        "collector": ("run the OTLP receiver and lake writer", cmd_collector),
        "api": ("run the query API (traces, sessions, users, costs, read-only SQL, export)", cmd_api),
        "ui": ("run the UI (Streamlit) against the query API", cmd_ui),
        "sql": ("DuckDB SQL over the lake (interactive, or one query with -c)", cmd_sql),
        "keys": ("create, list or revoke API keys", cmd_keys),
        "reprice": ("recompute costs of stored spans with the current price table and overrides", cmd_reprice),
        "maintain": ("compact small parts and apply retention now", cmd_maintain),
        "report": ("print the production-readiness report (per service, last 7 days by default)", cmd_report),
    }
    for name, (help_text, handler) in commands.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        _add_common(command)
        command.set_defaults(handler=handler)
        if name == "sql":
            command.add_argument("--project", default=None, help="see only this project's data")
            command.add_argument("-c", "--query", default=None, help="run one query and exit")
        if name in ("up", "demo"):
            command.add_argument("--no-samples", action="store_true", help="do not load sample traces on a first run")
        if name == "report":
            command.add_argument("--project", default="default", help="the project (default: default)")
            command.add_argument("--service", default=None, help="one service (default: all)")
            command.add_argument("--since", default=None, help="ISO 8601 or unix ns (default: 7 days before --until)")
            command.add_argument("--until", default=None, help="ISO 8601 or unix ns (default: now)")
            command.add_argument("--json", action="store_true", help="the report as JSON (as GET /readiness)")
            command.add_argument(
                "--fail-when-not-held", action="store_true", help="exit 1 when a section does not hold (for CI)"
            )
        if name == "reprice":
            command.add_argument("--project", default=None, help="only this project")
        if name == "keys":
            actions = command.add_subparsers(dest="keys_action", required=True)
            create = actions.add_parser("create", help="create a key for a project (printed once)")
            create.add_argument("--project", required=True)
            actions.add_parser("list", help="list keys (ids, projects, state)")
            revoke = actions.add_parser("revoke", help="revoke a key by id")
            revoke.add_argument("key_id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = {name.replace("-", "_")[2:]: getattr(args, name.replace("-", "_")[2:], None) for name, _ in _COMMON_FLAGS}
    try:
        settings = load_settings(flags)
    except ConfigError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per sample export is noise
    try:
        return int(args.handler(settings, args))
    except (ValueError, OSError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
