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

    [readiness]              # production-readiness checks (readiness.py)
    side_effect_tools = ["send_*", "book_*", "delete_*"]   # fnmatch globs on tool names, case-insensitive
    require_approval = true  # a side-effecting tool needs a human approval step before it runs
    context_window_ratio = 0.9   # input tokens at this share of the model's context window is an overflow risk
    pinned_models = []       # model ids (globs) to treat as pinned, e.g. self-hosted names without a date
    disabled = []            # readiness codes not to report, e.g. ["tool_without_user"]

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
READINESS_CODES = (
    "unpinned_model",
    "prompt_injection",
    "pii_in_output",
    "context_overflow",
    "side_effect_repeated",
    "side_effect_unapproved",
    "tool_without_user",
)
# Tools whose effect outlives the request (a mail sent, a booking made, a row deleted, money moved): executing
# one twice is a double effect, and executing one without a person's approval is an unreviewed effect.
DEFAULT_SIDE_EFFECT_TOOLS = (
    "send_*",
    "book_*",
    "delete_*",
    "cancel_*",
    "charge_*",
    "pay_*",
    "refund_*",
    "transfer_funds*",
    "wire_*",
    "purchase_*",
    "place_order*",
)


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
class ReadinessSettings:
    side_effect_tools: tuple[str, ...] = DEFAULT_SIDE_EFFECT_TOOLS
    require_approval: bool = True
    context_window_ratio: float = 0.9
    pinned_models: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()

    def enabled(self, code: str) -> bool:
        return code not in self.disabled


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    loops: LoopSettings = LoopSettings()
    retries: RetrySettings = RetrySettings()
    budgets: BudgetSettings = BudgetSettings()
    readiness: ReadinessSettings = ReadinessSettings()
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


def _strings(where: str, value: Any, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise DetectorConfigError(f"{where}: must be a list of non-empty strings, got {value!r}")
    if allowed is not None:
        bad = [v for v in value if v not in allowed]
        if bad:
            raise DetectorConfigError(f"{where}: {bad[0]!r} is not one of {', '.join(allowed)}")
    return tuple(v.strip() for v in value)


def _readiness(source: str, value: Any) -> ReadinessSettings:
    doc = _table(
        f"{source}: readiness",
        value,
        ("side_effect_tools", "require_approval", "context_window_ratio", "pinned_models", "disabled"),
    )
    approval = doc.get("require_approval", True)
    if not isinstance(approval, bool):
        raise DetectorConfigError(f"{source}: readiness.require_approval: must be true or false, got {approval!r}")
    ratio = doc.get("context_window_ratio", 0.9)
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
        raise DetectorConfigError(
            f"{source}: readiness.context_window_ratio: must be a fraction above 0, at most 1, got {ratio!r}"
        )
    return ReadinessSettings(
        side_effect_tools=_strings(
            f"{source}: readiness.side_effect_tools", doc.get("side_effect_tools", list(DEFAULT_SIDE_EFFECT_TOOLS))
        ),
        require_approval=approval,
        context_window_ratio=float(ratio),
        pinned_models=_strings(f"{source}: readiness.pinned_models", doc.get("pinned_models", [])),
        disabled=_strings(f"{source}: readiness.disabled", doc.get("disabled", []), READINESS_CODES),
    )


def parse(doc: dict[str, Any], source: str) -> DetectorConfig:
    top = _table(source, doc, ("loops", "retries", "budgets", "readiness"))
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
    readiness = _readiness(source, top.get("readiness", {}))
    # The readiness settings join the digest only when set, so files written before them keep their digest.
    named = (loops, backoff, warning_at, sorted(limits.items())) + ((readiness,) if "readiness" in top else ())
    return DetectorConfig(
        loops=loops,
        retries=RetrySettings(min_backoff_ms=float(backoff)),
        budgets=BudgetSettings(warning_at=float(warning_at), limits=limits),
        readiness=readiness,
        digest=hashlib.sha256(repr(named).encode()).hexdigest()[:12],
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
