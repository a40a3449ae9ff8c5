"""Settings for every agentflight process, parsed once at the entry point from flags and AGENTFLIGHT_* env.

Precedence: command-line flag, then environment variable, then default. A bad value raises ConfigError
naming the setting and the variable it came from; nothing falls back silently.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
MIB = 1024 * 1024


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path("./agentflight-data")
    host: str = "127.0.0.1"
    grpc_port: int = 4317
    http_port: int = 4318
    api_port: int = 8000
    ui_port: int = 8501
    keys_file: Path | None = None  # default: <data_dir>/keys.json
    fsync: bool = True
    max_request_bytes: int = 64 * MIB
    max_inflight_bytes: int = 256 * MIB  # request bytes held in memory across all receivers at once
    max_wal_backlog_bytes: int = 1024 * MIB  # logged but not yet published; beyond it, clients are told to retry
    flush_interval_seconds: float = 1.0
    writer_processes: int = 2  # lake writer processes (decode, normalise, price, Parquet); one per core
    retention_days: int | None = None
    log_level: str = "INFO"
    sql_timeout_seconds: float = 10.0  # POST /sql: longest a query runs before 408
    sql_max_rows: int = 10_000  # POST /sql: largest result before 413 (aggregate or add a LIMIT)
    sql_memory_limit_mb: int = 1024  # POST /sql: DuckDB memory per query before 413
    tls_cert_file: Path | None = None  # with tls_key_file: both OTLP receivers speak TLS only
    tls_key_file: Path | None = None
    # The query API's CPU priority (nice 0-19; 0 leaves it as started). On a machine the API shares with the
    # collector, ingest is the work that must not fall behind. bench.detect's ingest part, 2 cores, 3 rounds: an
    # API keeping findings current cost 0 % of ingest throughput at 19, 19 % at 10, 28 % at 0; in exchange its
    # answers waited for spare CPU during the burst (slowest poll 6-9 s at 19, 1.0-1.3 s at 0).
    api_nice: int = 19

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "wal"

    @property
    def keys_path(self) -> Path:
        return self.keys_file or self.data_dir / "keys.json"

    @property
    def prices_dir(self) -> Path:
        """Per-project price overrides: <data-dir>/prices/<project>.toml."""
        return self.data_dir / "prices"

    @property
    def redaction_dir(self) -> Path:
        """Per-project redaction, applied before the WAL: <data-dir>/redaction/<project>.toml."""
        return self.data_dir / "redaction"

    @property
    def tls(self) -> tuple[bytes, bytes] | None:
        """(certificate chain, private key) as PEM bytes when TLS is configured."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return self.tls_cert_file.read_bytes(), self.tls_key_file.read_bytes()

    @property
    def detectors_dir(self) -> Path:
        """Per-project detector thresholds and budgets: <data-dir>/detectors/<project>.toml."""
        return self.data_dir / "detectors"


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError("must be between 0 and 65535")
    return port


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a positive number")
    return number


def _nice(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 19:
        raise ValueError("must be a nice value between 0 and 19")
    return number


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _readable_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise ValueError("no such file")
    try:
        path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror})") from None
    return path


def _log_level(value: str) -> str:
    upper = value.upper()
    if upper not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return upper


_PARSERS: dict[str, Callable[[str], Any]] = {
    "data_dir": Path,
    "host": str,
    "grpc_port": _port,
    "http_port": _port,
    "api_port": _port,
    "ui_port": _port,
    "keys_file": Path,
    "fsync": _bool,
    "max_request_bytes": _positive_int,
    "max_inflight_bytes": _positive_int,
    "max_wal_backlog_bytes": _positive_int,
    "flush_interval_seconds": _positive_float,
    "writer_processes": _positive_int,
    "retention_days": _positive_int,
    "log_level": _log_level,
    "sql_timeout_seconds": _positive_float,
    "sql_max_rows": _positive_int,
    "sql_memory_limit_mb": _positive_int,
    "tls_cert_file": _readable_file,
    "tls_key_file": _readable_file,
    "api_nice": _nice,
}


def env_name(setting: str) -> str:
    return "AGENTFLIGHT_" + setting.upper()


def load_settings(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from parsed flags (None = not given) and the environment."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, parse in _PARSERS.items():
        flag = flags.get(name)
        if flag is not None:
            raw, origin = str(flag), f"--{name.replace('_', '-')}"
        elif env_name(name) in environ:
            raw, origin = environ[env_name(name)], env_name(name)
        else:
            continue
        try:
            values[name] = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{origin}={raw!r}: {exc}") from None
    if ("tls_cert_file" in values) != ("tls_key_file" in values):
        missing = "tls_key_file" if "tls_cert_file" in values else "tls_cert_file"
        raise ConfigError(f"--{missing.replace('_', '-')} ({env_name(missing)}) is needed too: TLS takes both files")
    return Settings(**values)


@dataclass(frozen=True, slots=True)
class WriterSettings:
    # Publish when this many rows are buffered... 5k rows of ~2 KB spans keep the whole collector at 462 MB
    # PSS in bench/ingest.py (10k: 523 MB) at the same throughput; compaction merges the smaller parts.
    flush_rows: int = 5_000
    flush_interval_seconds: float = 1.0  # ...or when the oldest buffered row is this old
    # WAL records read between checks of flush_rows: a record is a whole export request (often 512 spans),
    # so reading 256 at once buffered up to 131k spans and 1.75 GB per writer in the benchmark.
    read_batch_records: int = 4
    compact_min_parts: int = 8
    compact_small_bytes: int = 64 * 1024 * 1024
    maintenance_interval_seconds: float = 30.0
    retention_days: int | None = None
    processes: int = 2  # one per core on the 2-core target machine; the receivers mostly wait on I/O
