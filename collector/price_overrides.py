"""Per-project price overrides: loading, validating and matching the TOML override file.

A project can price models the public price table does not know (fine-tunes, self-hosted models) or
override a table price (enterprise discounts). Overrides win over the table: see ``collector.pricing``.

File format (TOML, prices in USD per million tokens)::

    # prices per million tokens, USD
    [[model]]
    match = "my-llama-70b"          # exact model id, or a glob like "ft:gpt-4o-mini:acme:*"
    provider = "vllm"               # optional: only when the span's provider equals this
    input_mtok = 0.50
    output_mtok = 1.00
    cache_read_mtok = 0.05          # optional, defaults to input_mtok
    cache_write_mtok = 0.60         # optional, defaults to input_mtok

    [[model]]
    match = "ft:gpt-4o-mini:acme:*"
    input_mtok = 0.30
    output_mtok = 1.20

Rules:

- ``match`` (required) is compared case-insensitively with the span's model id. It is a glob when it
  contains ``*``, ``?`` or ``[`` (``fnmatch`` syntax, whole-id match), otherwise an exact id.
- ``provider`` (optional) restricts the entry to spans whose normalised provider equals it
  (case-insensitive). Without it the entry applies whatever the provider.
- ``input_mtok`` and ``output_mtok`` are required; ``cache_read_mtok`` and ``cache_write_mtok`` default to
  ``input_mtok``. Prices are non-negative finite numbers; they are read as exact decimals.
- Entries are tried in file order against the span's response model first, then its request model;
  the first matching entry wins.
- Any other key, a missing ``match``, a negative or non-numeric price raises ``PriceOverrideError`` whose
  message names the file, the entry (1-based, as counted in the file) and the field.

Token semantics match the lake: ``input_tokens`` includes cache reads and writes, ``output_tokens``
includes reasoning tokens (reasoning is billed at the output price).
"""

from __future__ import annotations

import fnmatch
import pathlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["PriceOverride", "PriceOverrideError", "PriceOverrides", "load_overrides", "parse_overrides"]

_MTOK = Decimal(1_000_000)
_GLOB_CHARS = frozenset("*?[")
_PRICE_FIELDS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
_REQUIRED_PRICE_FIELDS = ("input_mtok", "output_mtok")
_ALLOWED_FIELDS = frozenset({"match", "provider", *_PRICE_FIELDS})


class PriceOverrideError(ValueError):
    """A price-override file could not be read or has an invalid value.

    ``entry`` is the 1-based position of the ``[[model]]`` entry (None for file-level errors) and
    ``field`` the offending key (None when the problem is not tied to one key).
    """

    def __init__(self, source: str, message: str, *, entry: int | None = None, field: str | None = None) -> None:
        where = source
        if entry is not None:
            where += f": [[model]] entry {entry}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")
        self.source = source
        self.entry = entry
        self.field = field


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """One ``[[model]]`` entry; prices are USD per million tokens."""

    match: str
    provider: str | None
    input_mtok: Decimal
    output_mtok: Decimal
    cache_read_mtok: Decimal
    cache_write_mtok: Decimal
    _pattern: re.Pattern[str] | None  # compiled glob, None for an exact id

    def matches(self, provider: str | None, model: str) -> bool:
        """True if this entry applies to ``model`` (already lower-cased) served by ``provider``."""
        if self.provider is not None and (provider is None or provider.lower() != self.provider):
            return False
        if self._pattern is None:
            return model == self.match
        return self._pattern.fullmatch(model) is not None

    def cost(
        self, *, input_tokens: int, output_tokens: int, cache_read_tokens: int, cache_write_tokens: int
    ) -> tuple[Decimal, Decimal]:
        """(input cost, output cost) in USD. ``input_tokens`` includes cache reads and writes."""
        uncached = max(input_tokens - cache_read_tokens - cache_write_tokens, 0)
        input_cost = (
            uncached * self.input_mtok
            + cache_read_tokens * self.cache_read_mtok
            + cache_write_tokens * self.cache_write_mtok
        ) / _MTOK
        output_cost = output_tokens * self.output_mtok / _MTOK
        return input_cost, output_cost


@dataclass(frozen=True, slots=True)
class PriceOverrides:
    """The validated entries of one override file. ``source`` is the file name used in ``cost_source``."""

    source: str
    entries: tuple[PriceOverride, ...]

    @property
    def cost_source(self) -> str:
        return f"override:{self.source}"

    def find(
        self, provider: str | None, response_model: str | None, request_model: str | None
    ) -> tuple[PriceOverride, str] | None:
        """First entry matching the response model, else the request model: (entry, model id matched)."""
        for model in (response_model, request_model):
            if not model:
                continue
            lowered = model.lower()
            for entry in self.entries:
                if entry.matches(provider, lowered):
                    return entry, model
        return None

    def __len__(self) -> int:
        return len(self.entries)


def load_overrides(path: pathlib.Path) -> PriceOverrides:
    """Read and validate an override file; errors raise ``PriceOverrideError`` naming the file."""
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PriceOverrideError(str(path), f"cannot read file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PriceOverrideError(str(path), f"not UTF-8 text: {exc}") from exc
    return parse_overrides(text, source=path.name, location=str(path))


def parse_overrides(text: str, *, source: str, location: str | None = None) -> PriceOverrides:
    """Validate override TOML text. ``source`` names it in ``cost_source``; ``location`` in error messages."""
    where = location or source
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise PriceOverrideError(where, f"invalid TOML: {exc}") from exc

    unknown_top = sorted(set(data) - {"model"})
    if unknown_top:
        raise PriceOverrideError(
            where, "unknown top-level key (only [[model]] entries are allowed)", field=unknown_top[0]
        )
    models = data.get("model", [])
    if not isinstance(models, list):
        raise PriceOverrideError(where, "must be an array of tables, written [[model]]", field="model")

    entries = tuple(_parse_entry(where, number, raw) for number, raw in enumerate(models, start=1))
    return PriceOverrides(source=source, entries=entries)


def _parse_entry(where: str, number: int, raw: Any) -> PriceOverride:
    if not isinstance(raw, Mapping):
        raise PriceOverrideError(where, "must be a table", entry=number)

    unknown = sorted(set(raw) - _ALLOWED_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(_ALLOWED_FIELDS))
        raise PriceOverrideError(where, f"unknown key (allowed: {allowed})", entry=number, field=unknown[0])

    match = raw.get("match")
    if match is None:
        raise PriceOverrideError(where, "is required", entry=number, field="match")
    if not isinstance(match, str) or not match.strip():
        raise PriceOverrideError(where, "must be a non-empty string", entry=number, field="match")
    match = match.strip().lower()

    provider = raw.get("provider")
    if provider is not None and (not isinstance(provider, str) or not provider.strip()):
        raise PriceOverrideError(where, "must be a non-empty string", entry=number, field="provider")

    for name in _REQUIRED_PRICE_FIELDS:
        if name not in raw:
            raise PriceOverrideError(where, "is required", entry=number, field=name)
    prices = {name: _price(where, number, name, raw[name]) for name in _PRICE_FIELDS if name in raw}

    pattern = re.compile(fnmatch.translate(match)) if _GLOB_CHARS & set(match) else None
    return PriceOverride(
        match=match,
        provider=provider.strip().lower() if provider is not None else None,
        input_mtok=prices["input_mtok"],
        output_mtok=prices["output_mtok"],
        cache_read_mtok=prices.get("cache_read_mtok", prices["input_mtok"]),
        cache_write_mtok=prices.get("cache_write_mtok", prices["input_mtok"]),
        _pattern=pattern,
    )


def _price(where: str, number: int, name: str, value: object) -> Decimal:
    # bool is an int subclass: reject it explicitly. Floats arrive as Decimal (parse_float=Decimal).
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise PriceOverrideError(
            where, f"must be a number (USD per million tokens), got {value!r}", entry=number, field=name
        )
    price = Decimal(value)
    if not price.is_finite():
        raise PriceOverrideError(where, f"must be finite, got {value}", entry=number, field=name)
    if price < 0:
        raise PriceOverrideError(where, f"must not be negative, got {value}", entry=number, field=name)
    return price
