"""Per-project redaction: drop attributes by key and mask or hash secrets and PII, before the WAL write.

A project that has ``<data-dir>/redaction/<project>.toml`` gets every export request parsed, redacted
and re-serialised on the ack path, so the original values never reach the write-ahead log, the lake,
the API or the logs. A project without a file keeps the byte-for-byte fast path (no decode).
Files are read and validated when the collector starts; a bad file stops start-up. Restart the
collector to apply a changed file.

File format (TOML)::

    # attribute keys to remove (fnmatch globs, case-insensitive). A nested key inside a kvlist value is
    # matched as its dotted path ("headers.authorization") and as its bare key.
    drop_keys = ["*.password", "http.request.header.authorization"]

    # built-in value patterns, masked: api_key, aws_key, bearer, card, email, jwt, phone
    builtin = ["api_key", "bearer", "aws_key", "card"]

    # optional: secret mixed into hashes, so a hashed email cannot be found by hashing guesses
    hash_salt = "change-me"

    [[mask]]                      # a custom pattern
    name = "customer_id"          # shown in the replacement; letters, digits, _ . -
    pattern = "CUST-[0-9]{6}"     # Python regular expression, searched in every string value
    action = "hash"               # "mask" (default) or "hash"

    [[mask]]                      # a built-in pattern with a non-default action
    builtin = "email"
    action = "hash"

Replacements: ``mask`` writes ``[REDACTED:<name>]``; ``hash`` writes ``[<name>:<12 hex>]``, the first 12
hex digits of sha256(hash_salt + value): the same value always gives the same hash (joins and counts
still work), different values almost surely differ.

What is rewritten: every string in every AnyValue (recursively through arrays and kvlists, and bytes
values that are UTF-8 text) of resource, scope, span, event, link and log-record attributes, log bodies,
span names, event names, status messages and log event names. Dropped attributes are counted in the
holder's ``dropped_attributes_count``. Ids, times and attribute keys are never changed.

Errors (unknown key, bad regular expression, unknown action or built-in, a pattern that matches the empty
string) raise ``RedactionConfigError`` whose message names the file and the setting.
"""

from __future__ import annotations

import fnmatch
import hashlib
import pathlib
import re
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = [
    "BUILTINS",
    "RedactionConfigError",
    "Redactor",
    "load_redaction_dir",
    "load_redactor",
    "parse_redactor",
]


def _luhn_ok(text: str) -> bool:
    digits = [int(ch) for ch in text if ch.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _phone_ok(text: str) -> bool:
    return 7 <= sum(ch.isdigit() for ch in text) <= 15


def _contains(*literals: str) -> Callable[[str], bool]:
    return lambda text: any(literal in text for literal in literals)


_has_digit = _contains(*"0123456789")  # ten substring scans are much faster than re.search(r"\d")


@dataclass(frozen=True, slots=True)
class _Builtin:
    pattern: str
    check: Callable[[str], bool] | None = None  # a match is only redacted when this accepts it
    hint: Callable[[str], bool] | None = None  # cheap necessary condition: False → the pattern cannot match


# Order matters only when two patterns match at the same position: the earlier one wins.
BUILTINS: dict[str, _Builtin] = {
    "bearer": _Builtin(r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}", hint=lambda t: "earer" in t or "EARER" in t),
    "jwt": _Builtin(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", hint=_contains("eyJ")),
    "api_key": _Builtin(
        r"\b(?:(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
        r"|gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})",
        hint=lambda t: "k-" in t or "k_" in t or "xox" in t or "AIza" in t or ("gh" in t and "_" in t),
    ),
    "aws_key": _Builtin(
        r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b",
        hint=_contains("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA"),
    ),
    "email": _Builtin(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", hint=_contains("@")),
    "card": _Builtin(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?!\d)", _luhn_ok, _has_digit),
    "phone": _Builtin(
        r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
        r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?!\w)",
        _phone_ok,
        _has_digit,
    ),
}

_ACTIONS = ("mask", "hash")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TOP_KEYS = frozenset({"drop_keys", "builtin", "hash_salt", "mask"})
_MASK_KEYS = frozenset({"name", "pattern", "builtin", "action"})


class RedactionConfigError(ValueError):
    """A redaction file could not be read or has an invalid setting (the message names file and setting)."""

    def __init__(self, source: str, message: str, *, entry: int | None = None, setting: str | None = None) -> None:
        where = source
        if entry is not None:
            where += f": [[mask]] entry {entry}"
        if setting is not None:
            where += f", setting {setting!r}"
        super().__init__(f"{where}: {message}")
        self.source = source
        self.entry = entry
        self.setting = setting


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    action: str
    check: Callable[[str], bool] | None
    hint: Callable[[str], bool] | None


@dataclass(slots=True)
class Redactor:
    """The validated redaction of one project; ``redact_*`` are pure (bytes in, bytes out)."""

    source: str
    drop_keys: tuple[str, ...]
    rules: tuple[_Rule, ...]
    patterns: tuple[str, ...]  # one per rule, same order
    hash_salt: str = ""
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, default=())
    _drop: re.Pattern[str] | None = field(init=False, default=None)
    _drop_cache: dict[str, bool] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._compiled = tuple(re.compile(p) for p in self.patterns)
        if self.drop_keys:
            self._drop = re.compile("|".join(fnmatch.translate(k.lower()) for k in self.drop_keys))

    # --- public, pure --------------------------------------------------------------------------

    def redact_traces(self, body: bytes) -> tuple[bytes, Counter[str]]:
        """A serialised ExportTraceServiceRequest, redacted and re-serialised, and what was redacted."""
        request = _parse(ExportTraceServiceRequest, body)
        counts = self.redact_trace_message(request)
        return (request.SerializeToString() if counts else body), counts

    def redact_logs(self, body: bytes) -> tuple[bytes, Counter[str]]:
        request = _parse(ExportLogsServiceRequest, body)
        counts = self.redact_log_message(request)
        return (request.SerializeToString() if counts else body), counts

    def redact(self, signal: str, body: bytes) -> tuple[bytes, Counter[str]]:
        return self.redact_traces(body) if signal == "traces" else self.redact_logs(body)

    def redact_text(self, text: str, counts: Counter[str] | None = None) -> str:
        """``text`` with every rule's matches replaced."""
        if not text:
            return text
        counter = counts if counts is not None else Counter()
        # Rules run in order (built-ins, then [[mask]] entries); a cheap hint skips a rule that cannot match.
        for rule, compiled in zip(self.rules, self._compiled, strict=True):
            if rule.hint is not None and not rule.hint(text):
                continue

            def replace(match: re.Match[str], rule: _Rule = rule) -> str:
                value = match.group(0)
                if rule.check is not None and not rule.check(value):
                    return value
                counter[rule.name] += 1
                if rule.action == "hash":
                    digest = hashlib.sha256((self.hash_salt + value).encode("utf-8", "surrogatepass")).hexdigest()
                    return f"[{rule.name}:{digest[:12]}]"
                return f"[REDACTED:{rule.name}]"

            text = compiled.sub(replace, text)
        return text

    def drops(self, key: str) -> bool:
        if self._drop is None:
            return False
        hit = self._drop_cache.get(key)
        if hit is None:
            hit = self._drop.match(key.lower()) is not None
            if len(self._drop_cache) < 10_000:
                self._drop_cache[key] = hit
        return hit

    # --- message walking -----------------------------------------------------------------------

    def redact_trace_message(self, request: ExportTraceServiceRequest) -> Counter[str]:
        counts: Counter[str] = Counter()
        text = self.redact_text
        for group in request.resource_spans:
            self._holder(group.resource, counts)
            for scope in group.scope_spans:
                self._holder(scope.scope, counts)
                for span in scope.spans:
                    if span.name:
                        span.name = text(span.name, counts)
                    if span.status.message:
                        span.status.message = text(span.status.message, counts)
                    self._holder(span, counts)
                    for event in span.events:
                        if event.name:
                            event.name = text(event.name, counts)
                        self._holder(event, counts)
                    for link in span.links:
                        self._holder(link, counts)
        return counts

    def redact_log_message(self, request: ExportLogsServiceRequest) -> Counter[str]:
        counts: Counter[str] = Counter()
        for group in request.resource_logs:
            self._holder(group.resource, counts)
            for scope in group.scope_logs:
                self._holder(scope.scope, counts)
                for record in scope.log_records:
                    if record.event_name:
                        record.event_name = self.redact_text(record.event_name, counts)
                    if record.HasField("body"):
                        self._value(record.body, "", counts)
                    self._holder(record, counts)
        return counts

    def _holder(self, holder: Any, counts: Counter[str]) -> None:
        """Redact ``holder.attributes``; drops are added to ``holder.dropped_attributes_count``."""
        attributes = holder.attributes
        if not attributes:
            return
        dropped = self._attributes(attributes, "", counts)
        if dropped:
            holder.dropped_attributes_count += dropped

    def _attributes(self, attributes: Any, prefix: str, counts: Counter[str]) -> int:
        dropped = 0
        if self._drop is not None:
            for index in range(len(attributes) - 1, -1, -1):
                key = attributes[index].key
                if self.drops(key) or (prefix and self.drops(prefix + key)):
                    del attributes[index]
                    dropped += 1
            if dropped:
                counts["drop_keys"] += dropped
        for kv in attributes:
            self._value(kv.value, prefix + kv.key + ".", counts)
        return dropped

    def _value(self, value: Any, prefix: str, counts: Counter[str]) -> None:
        kind = value.WhichOneof("value")
        if kind == "string_value":
            if self._compiled and value.string_value:
                new = self.redact_text(value.string_value, counts)
                if new != value.string_value:
                    value.string_value = new
        elif kind == "kvlist_value":
            self._attributes(value.kvlist_value.values, prefix, counts)
        elif kind == "array_value":
            for item in value.array_value.values:
                self._value(item, prefix, counts)
        elif kind == "bytes_value" and self._compiled:
            try:
                decoded = value.bytes_value.decode("utf-8")
            except UnicodeDecodeError:
                return
            new = self.redact_text(decoded, counts)
            if new != decoded:
                value.bytes_value = new.encode("utf-8")


def _parse(cls: Any, body: bytes) -> Any:
    try:
        return cls.FromString(body)
    except DecodeError:
        # The ack path hands us only bytes it produced or parsed strictly, so this is a bug, never a client error.
        raise ValueError(f"redaction: not a valid {cls.__name__}") from None


# --- loading and validation ----------------------------------------------------------------------


def load_redactor(path: pathlib.Path) -> Redactor:
    """Read and validate one redaction file; errors raise ``RedactionConfigError`` naming the file."""
    path = pathlib.Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise RedactionConfigError(str(path), f"cannot read file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise RedactionConfigError(str(path), f"not UTF-8 text: {exc}") from exc
    return parse_redactor(text, source=str(path))


def load_redaction_dir(directory: pathlib.Path) -> dict[str, Redactor]:
    """Every ``<project>.toml`` in ``directory`` (absent directory: none), validated, by project."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return {}
    return {path.stem: load_redactor(path) for path in sorted(directory.glob("*.toml"))}


def parse_redactor(text: str, *, source: str) -> Redactor:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RedactionConfigError(source, f"invalid TOML: {exc}") from exc
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_TOP_KEYS))
        raise RedactionConfigError(source, f"unknown setting (allowed: {allowed})", setting=unknown[0])

    drop_keys = _strings(source, "drop_keys", data.get("drop_keys", []))
    salt = data.get("hash_salt", "")
    if not isinstance(salt, str):
        raise RedactionConfigError(source, "must be a string", setting="hash_salt")

    rules: list[_Rule] = []
    patterns: list[str] = []
    for name in _strings(source, "builtin", data.get("builtin", [])):
        builtin = BUILTINS.get(name)
        if builtin is None:
            raise RedactionConfigError(
                source, f"unknown built-in {name!r} (known: {', '.join(sorted(BUILTINS))})", setting="builtin"
            )
        rules.append(_Rule(name, "mask", builtin.check, builtin.hint))
        patterns.append(builtin.pattern)

    masks = data.get("mask", [])
    if not isinstance(masks, list):
        raise RedactionConfigError(source, "must be an array of tables, written [[mask]]", setting="mask")
    for number, raw in enumerate(masks, start=1):
        rule, pattern = _parse_mask(source, number, raw)
        rules.append(rule)
        patterns.append(pattern)

    if not rules and not drop_keys:
        raise RedactionConfigError(source, "redacts nothing: set drop_keys, builtin or [[mask]] entries")
    return Redactor(source, tuple(drop_keys), tuple(rules), tuple(patterns), salt)


def _strings(source: str, setting: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise RedactionConfigError(source, "must be a list of non-empty strings", setting=setting)
    return list(value)


def _parse_mask(source: str, number: int, raw: object) -> tuple[_Rule, str]:
    if not isinstance(raw, Mapping):
        raise RedactionConfigError(source, "must be a table", entry=number)
    unknown = sorted(set(raw) - _MASK_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_MASK_KEYS))
        raise RedactionConfigError(source, f"unknown key (allowed: {allowed})", entry=number, setting=unknown[0])
    action = raw.get("action", "mask")
    if action not in _ACTIONS:
        raise RedactionConfigError(
            source, f"unknown action {action!r} (use 'mask' or 'hash')", entry=number, setting="action"
        )
    check: Callable[[str], bool] | None = None
    hint: Callable[[str], bool] | None = None
    name: object
    if "builtin" in raw:
        if "pattern" in raw:
            raise RedactionConfigError(
                source, "give either builtin or pattern, not both", entry=number, setting="pattern"
            )
        builtin_name = raw["builtin"]
        builtin = BUILTINS.get(builtin_name) if isinstance(builtin_name, str) else None
        if builtin is None:
            raise RedactionConfigError(
                source,
                f"unknown built-in {builtin_name!r} (known: {', '.join(sorted(BUILTINS))})",
                entry=number,
                setting="builtin",
            )
        name = raw.get("name", builtin_name)
        pattern = builtin.pattern
        check = builtin.check
        hint = builtin.hint
    else:
        given = raw.get("pattern")
        if not isinstance(given, str) or not given:
            raise RedactionConfigError(source, "is required (a regular expression)", entry=number, setting="pattern")
        pattern = given
        name = raw.get("name")
        if name is None:
            raise RedactionConfigError(source, "is required with pattern", entry=number, setting="name")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            advice = " (write flags scoped, like (?i:...))" if "global flags" in str(exc) else ""
            raise RedactionConfigError(
                source, f"invalid regular expression: {exc}{advice}", entry=number, setting="pattern"
            ) from None
        if compiled.search("") is not None:
            raise RedactionConfigError(source, "matches the empty string", entry=number, setting="pattern")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RedactionConfigError(
            source, "must be 1-64 letters, digits, '_', '.' or '-'", entry=number, setting="name"
        )
    return _Rule(name, str(action), check, hint), pattern
