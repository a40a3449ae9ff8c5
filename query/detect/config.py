"""Per-project detector settings: the thresholds and budgets file, parsed once into frozen dataclasses.

File: ``<data-dir>/detectors/<project>.toml`` (absent means the defaults below and no budgets)::

    [loops]
    min_repeats = 3          # same tool + arguments, or the same model input, this many times
    cycle_min_repeats = 3    # a cycle of steps (A→B→A→B…) repeating this many times
    cycle_max_period = 4     # longest cycle looked for, in steps

    [retries]
    min_backoff_ms = 100     # a retry sooner than this after the failure is a retry without backoff

    [budgets]
    warning_at = 0.8         # share of a budget that raises a warning; 1.0 of it is a breach

    [budgets.trace]          # per request: tokens, cost_usd, steps (model calls), tool_calls, duration_ms
    cost_usd = 0.50
    tokens = 200000

    [budgets.session]        # tokens, cost_usd over a session's requests
    [budgets.user_day]       # tokens, cost_usd per user per UTC day
    [budgets.user_month]     # tokens, cost_usd per user per UTC month
    [budgets.project_day]    # tokens, cost_usd per project per UTC day

A bad value is an error naming the file and the setting. Budgets an agent declares on its own spans
(``agentflight.budget.<metric>``, see sdk_helpers) apply to that trace on top of the file's.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRACE_METRICS = ("tokens", "cost_usd", "steps", "tool_calls", "duration_ms")
SCOPE_METRICS = ("tokens", "cost_usd")
log = logging.getLogger(__name__)

SCOPES = ("trace", "session", "user_day", "user_month", "project_day")


class DetectorConfigError(ValueError):
    """A detector config file that cannot be used; the message names the file and the setting."""


@dataclass(frozen=True, slots=True)
class LoopSettings:
    min_repeats: int = 3
    cycle_min_repeats: int = 3
    cycle_max_period: int = 4


@dataclass(frozen=True, slots=True)
class RetrySettings:
    min_backoff_ms: float = 100.0


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    warning_at: float = 0.8
    # scope -> metric -> limit; only configured limits are present
    limits: dict[str, dict[str, float]] = field(default_factory=dict)

    def for_scope(self, scope: str) -> dict[str, float]:
        return self.limits.get(scope, {})


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    loops: LoopSettings = LoopSettings()
    retries: RetrySettings = RetrySettings()
    budgets: BudgetSettings = BudgetSettings()
    digest: str = "defaults"  # names the settings in derived-data fingerprints

    @property
    def needs_cross_trace(self) -> bool:
        return any(self.budgets.for_scope(s) for s in ("session", "user_month"))


DEFAULT = DetectorConfig()


def _int(where: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DetectorConfigError(f"{where}: must be a whole number from {low} to {high}, got {value!r}")
    return value


def _positive(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise DetectorConfigError(f"{where}: must be a positive number, got {value!r}")
    return float(value)


def _table(where: str, value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DetectorConfigError(f"{where}: must be a table")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise DetectorConfigError(f"{where}.{unknown[0]}: unknown setting (expected one of {', '.join(allowed)})")
    return value


def parse(doc: dict[str, Any], source: str) -> DetectorConfig:
    top = _table(source, doc, ("loops", "retries", "budgets"))
    loops_doc = _table(
        f"{source}: loops", top.get("loops", {}), ("min_repeats", "cycle_min_repeats", "cycle_max_period")
    )
    loops = LoopSettings(
        min_repeats=_int(f"{source}: loops.min_repeats", loops_doc.get("min_repeats", 3), 2, 1000),
        cycle_min_repeats=_int(f"{source}: loops.cycle_min_repeats", loops_doc.get("cycle_min_repeats", 3), 2, 1000),
        cycle_max_period=_int(f"{source}: loops.cycle_max_period", loops_doc.get("cycle_max_period", 4), 2, 8),
    )
    retries_doc = _table(f"{source}: retries", top.get("retries", {}), ("min_backoff_ms",))
    backoff = retries_doc.get("min_backoff_ms", 100)
    if isinstance(backoff, bool) or not isinstance(backoff, int | float) or not 0 <= backoff <= 3_600_000:
        raise DetectorConfigError(
            f"{source}: retries.min_backoff_ms: must be a number from 0 to 3600000, got {backoff!r}"
        )
    budgets_doc = _table(f"{source}: budgets", top.get("budgets", {}), ("warning_at", *SCOPES))
    warning_at = budgets_doc.get("warning_at", 0.8)
    if isinstance(warning_at, bool) or not isinstance(warning_at, int | float) or not 0 < warning_at < 1:
        raise DetectorConfigError(
            f"{source}: budgets.warning_at: must be a fraction between 0 and 1, got {warning_at!r}"
        )
    limits: dict[str, dict[str, float]] = {}
    for scope in SCOPES:
        if scope not in budgets_doc:
            continue
        metrics = TRACE_METRICS if scope == "trace" else SCOPE_METRICS
        scope_doc = _table(f"{source}: budgets.{scope}", budgets_doc[scope], metrics)
        limits[scope] = {m: _positive(f"{source}: budgets.{scope}.{m}", v) for m, v in scope_doc.items()}
    return DetectorConfig(
        loops=loops,
        retries=RetrySettings(min_backoff_ms=float(backoff)),
        budgets=BudgetSettings(warning_at=float(warning_at), limits=limits),
        digest=hashlib.sha256(repr((loops, backoff, warning_at, sorted(limits.items()))).encode()).hexdigest()[:12],
    )


def load(path: Path) -> DetectorConfig:
    """The file's settings, or the defaults when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return DEFAULT
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DetectorConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse(doc, str(path))


class DetectorConfigs:
    """Per-project configs from a directory, re-read when a file changes; a bad edit keeps the last good one."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._cache: dict[str, tuple[tuple[float, int] | None, DetectorConfig]] = {}
        self.errors: dict[str, str] = {}

    def path(self, project: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{project}.toml"

    def check_all(self) -> None:
        """Raises on the first unusable file: the API refuses to start on a bad config."""
        if self.directory is None or not self.directory.exists():
            return
        for file in sorted(self.directory.glob("*.toml")):
            load(file)

    def get(self, project: str) -> DetectorConfig:
        path = self.path(project)
        if path is None:
            return DEFAULT
        try:
            stat = path.stat()
            stamp: tuple[float, int] | None = (stat.st_mtime, stat.st_size)
        except FileNotFoundError:
            stamp = None
        cached = self._cache.get(project)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            config = load(path)
            self.errors.pop(project, None)
        except DetectorConfigError as exc:
            log.error("detector config ignored, keeping the last good one: %s", exc)
            self.errors[project] = str(exc)
            config = cached[1] if cached is not None else DEFAULT
        self._cache[project] = (stamp, config)
        return config
