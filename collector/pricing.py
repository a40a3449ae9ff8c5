"""Cost of one span: per-project overrides, then the genai-prices table, then the span's reported cost.

``Pricer.price`` takes plain column values (the same ones the lake stores), so it serves both the ingest
hot path and re-pricing of stored parts. Invariant 5 ("no made-up cost"): a model neither the overrides
nor the table know gives ``cost_usd = None`` with ``cost_status = 'unknown_model'`` (or the span's own
reported cost, status ``reported``), never 0.

Precedence for a span with usage (input or output tokens > 0):

1. ``override``  - the first override entry matching the response model, else the request model.
2. ``computed``  - genai-prices, response model first, then request model, at the span's start time (so
   date-ranged prices apply). Provider: the normalised provider id when genai-prices knows it (its own
   fallbacks, e.g. azure -> openai, are used; no guessing beyond them); for a provider it does not know,
   ``server_address`` as the API URL, then the model id alone - except for self-hosted runtimes
   (``SELF_HOSTED_PROVIDERS``), whose models never take a public price.
3. ``reported``  - the cost the span reported itself, with the attribute key as provenance.
4. ``unknown_model`` - cost NULL.

Spans without usage: the reported cost if any (``reported``), else ``no_usage`` for llm/embedding spans
and spans naming a model, else ``not_applicable``.

Performance: model resolution (provider + pattern matching, including misses) is memoised per
(provider, model, server address) in a bounded LRU. The date-dependent price is then picked per call
(a few hundred ns), so day boundaries and time-of-day prices stay exact. For the usual token-only prices
the arithmetic is done here with genai-prices' own ``calc_unit_price`` (exactly the same Decimals;
tests compare against genai-prices on every model of the table; prices for units a span never reports
here, such as audio or web searches, count 0 as they do in genai-prices). Any other price key (today only
per-request fees) goes through genai-prices' generic ``ModelInfo.calc_price`` (~30 us).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import genai_prices
from genai_prices import Usage, data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices, calc_unit_price

from collector.price_overrides import PriceOverrides, load_overrides

__all__ = [
    "COST_STATUSES",
    "MODEL_SPAN_TYPES",
    "PRICE_SOURCE",
    "SELF_HOSTED_PROVIDERS",
    "CostResult",
    "Pricer",
    "clear_price_cache",
    "price_cache_info",
]

logger = logging.getLogger(__name__)

PRICE_SOURCE: str = f"genai-prices@{genai_prices.__version__}"

COST_STATUSES = ("computed", "override", "reported", "unknown_model", "no_usage", "not_applicable")

#: Span types that are model calls: without usage they are ``no_usage``, not ``not_applicable``.
MODEL_SPAN_TYPES = frozenset({"llm", "embedding"})

#: Providers that are self-hosted inference runtimes: their models are never priced from the public
#: table by model id (a local "mistral-large" is not billed at Mistral's API price). Use an override.
SELF_HOSTED_PROVIDERS = frozenset(
    {"ollama", "vllm", "lmstudio", "llama.cpp", "llamacpp", "localai", "tgi", "sglang", "triton", "test"}
)

_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class CostResult:
    cost_usd: float | None
    input_cost_usd: float | None
    output_cost_usd: float | None
    cost_status: str  # one of COST_STATUSES
    cost_source: str | None  # "genai-prices@0.2.3", "override:<file name>", "reported:<attribute key>"
    price_model: str | None  # model id the table (or override entry) matched, e.g. "gpt-4o-mini"

    def as_columns(self) -> dict[str, float | str | None]:
        """The lake's cost columns (store/schema.py names) this result fills."""
        return {
            "cost_usd": self.cost_usd,
            "input_cost_usd": self.input_cost_usd,
            "output_cost_usd": self.output_cost_usd,
            "cost_status": self.cost_status,
            "cost_source": self.cost_source,
            "price_model": self.price_model,
        }


_NOT_APPLICABLE = CostResult(None, None, None, "not_applicable", None, None)
_NO_USAGE = CostResult(None, None, None, "no_usage", None, None)
_UNKNOWN_MODEL = CostResult(None, None, None, "unknown_model", None, None)


# --- model resolution (memoised) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Resolved:
    provider: Provider
    model: ModelInfo


@lru_cache(maxsize=_CACHE_SIZE)
def _resolve(provider_id: str | None, model_ref: str, server_address: str | None) -> _Resolved | None:
    """The genai-prices (provider, model) for a span, or None. Arguments are already lower-cased.

    Follows ``DataSnapshot.find_provider``'s order (id, then API URL, then the providers' model patterns) but
    walks the public provider list itself: the snapshot's own lookup caches are unbounded and keyed by model
    string, which a stream of arbitrary model names would grow forever. This LRU is the only cache.
    """
    providers = data_snapshot.get_snapshot().providers
    if provider_id:
        provider = data_snapshot.find_provider_by_id(providers, provider_id)
        if provider is not None:
            # The provider is explicit and priced: its own models (and genai-prices' declared fallbacks,
            # e.g. azure -> openai) or nothing. Matching the id elsewhere would be a made-up price.
            return _in_provider(provider, model_ref, providers)
        if provider_id in SELF_HOSTED_PROVIDERS:
            return None
        if provider_id == "litellm" and "/" in model_ref:  # LiteLLM's "provider/model" refs
            prefix, rest = model_ref.split("/", 1)
            if prefix and (provider := data_snapshot.find_provider_by_id(providers, prefix)) is not None:
                return _in_provider(provider, rest, providers)
    if server_address:
        url = server_address if "://" in server_address else f"https://{server_address}"
        for provider in providers:
            if re.match(provider.api_pattern, url):
                return _in_provider(provider, model_ref, providers)
        # no match: a proxy, a private endpoint, ...: fall back on the model id
    for provider in providers:
        if provider.model_match is not None and provider.model_match.is_match(model_ref):
            return _in_provider(provider, model_ref, providers)
    return None


def _in_provider(provider: Provider, model_ref: str, providers: list[Provider]) -> _Resolved | None:
    model = provider.find_model(model_ref, all_providers=providers)
    return _Resolved(provider, model) if model is not None else None


def clear_price_cache() -> None:
    """Forget memoised model resolutions (e.g. after swapping the genai-prices snapshot)."""
    _resolve.cache_clear()
    _PLANS.clear()


def price_cache_info() -> tuple[int, int, int]:
    """(hits, misses, current size) of the model-resolution cache."""
    info = _resolve.cache_info()
    return info.hits, info.misses, info.currsize


# --- fast arithmetic for token-only prices ---------------------------------------------------------

# price key -> (usage slot, per, direction). Slots: 0 input, 1 output, 2 cache read, 3 cache write,
# 4 reasoning. Input and output are the totals; the more specific priced slots are subtracted from them.
_FAST_KEYS: dict[str, tuple[int, int, str]] = {
    "input_mtok": (0, 1_000_000, "input"),
    "output_mtok": (1, 1_000_000, "output"),
    "cache_read_mtok": (2, 1_000_000, "input"),
    "cache_write_mtok": (3, 1_000_000, "input"),
    "output_reasoning_mtok": (4, 1_000_000, "output"),
}
# Prices for units a span's usage never carries here: they contribute 0 in genai-prices too.
_ZERO_KEYS = frozenset(
    {
        "web_searches_kcount",
        "storage_searches_kcount",
        "social_searches_kcount",
        "code_executions_kcount",
        "rerank_searches_kcount",
        "cache_write_5m_mtok",
        "cache_write_1h_mtok",
        "input_audio_mtok",
        "output_audio_mtok",
        "cache_audio_read_mtok",
        "input_image_mtok",
        "output_image_mtok",
        "cache_image_read_mtok",
        "input_video_mtok",
        "output_video_mtok",
        "output_citation_mtok",
        "audio_hours",
        "input_audio_hours",
        "input_document_kpages",
        "input_annotated_document_kpages",
        "input_mchars",
        "input_text_messages_kcount",
    }
)

# (slot, price, per, is_input, subtract slots) per priced unit, in the ModelPrice's own key order.
_Plan = tuple[tuple[int, Decimal | TieredPrices, int, bool, tuple[int, ...]], ...]
_PLANS: dict[int, tuple[ModelPrice, _Plan | None]] = {}


def _plan_for(model_price: ModelPrice) -> _Plan | None:
    """Token-only arithmetic plan for a ModelPrice, or None when genai-prices' generic path is needed."""
    cached = _PLANS.get(id(model_price))
    if cached is not None and cached[0] is model_price:
        return cached[1]
    plan = _build_plan(model_price)
    if len(_PLANS) >= _CACHE_SIZE:
        _PLANS.clear()
    _PLANS[id(model_price)] = (model_price, plan)  # keeps the object alive, so the id stays unique
    return plan


def _build_plan(model_price: ModelPrice) -> _Plan | None:
    priced: list[tuple[str, Decimal | TieredPrices]] = []
    for key, value in vars(model_price).items():
        if key.startswith("_") or value is None or key in _ZERO_KEYS:
            continue
        if key not in _FAST_KEYS or not isinstance(value, Decimal | TieredPrices):
            return None
        priced.append((key, value))
    slots = {_FAST_KEYS[key][0] for key, _ in priced}
    plan = []
    for key, value in priced:
        slot, per, direction = _FAST_KEYS[key]
        subtract: tuple[int, ...]
        if slot == 0:
            subtract = tuple(s for s in (2, 3) if s in slots)
        elif slot == 1:
            subtract = (4,) if 4 in slots else ()
        else:
            subtract = ()
        plan.append((slot, value, per, direction == "input", subtract))
    return tuple(plan)


def _run_plan(plan: _Plan, counts: tuple[int, int, int, int, int]) -> tuple[Decimal, Decimal, Decimal]:
    input_price = Decimal(0)
    output_price = Decimal(0)
    total_input = counts[0]
    for slot, price, per, is_input, subtract in plan:
        count = counts[slot]
        for other in subtract:
            count -= counts[other]
        if count < 0:
            raise ValueError("more specific token counts exceed their total")
        unit_price = calc_unit_price(price, count, total_input, per)
        if is_input:
            input_price += unit_price
        else:
            output_price += unit_price
    return input_price, output_price, input_price + output_price


# --- the pricer ------------------------------------------------------------------------------------


def _count(value: int | None) -> int:
    return value if value is not None and value > 0 else 0


def _span_time(start_time_unix_nano: int) -> datetime:
    return datetime.fromtimestamp(start_time_unix_nano / 1e9, tz=UTC)


class Pricer:
    """Prices spans from plain column values. Holds one project's overrides; the table cache is shared."""

    __slots__ = ("_overrides",)

    def __init__(self, overrides: PriceOverrides | None = None) -> None:
        self._overrides = overrides if overrides is not None and len(overrides) else None

    @property
    def overrides(self) -> PriceOverrides | None:
        return self._overrides

    def price(
        self,
        *,
        span_type: str,
        provider: str | None,
        request_model: str | None,
        response_model: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        cache_read_tokens: int | None,
        cache_write_tokens: int | None,
        reasoning_tokens: int | None,
        start_time_unix_nano: int,
        reported_cost_usd: float | None,
        reported_cost_source: str | None,
        server_address: str | None = None,
    ) -> CostResult:
        reported = _reported(reported_cost_usd, reported_cost_source)
        response_model = response_model.strip() if response_model else None
        request_model = request_model.strip() if request_model else None
        n_input = _count(input_tokens)
        n_output = _count(output_tokens)

        if not n_input and not n_output:
            if reported is not None:
                return reported
            if span_type in MODEL_SPAN_TYPES or response_model or request_model:
                return _NO_USAGE
            return _NOT_APPLICABLE

        n_cache_read = _count(cache_read_tokens)
        n_cache_write = _count(cache_write_tokens)
        n_reasoning = _count(reasoning_tokens)
        # Totals include their parts; an emitter with exclusive semantics the normaliser missed would make
        # genai-prices reject the usage, so apply the same fix-up here (a no-op on consistent data).
        if n_cache_read + n_cache_write > n_input:
            n_input += n_cache_read + n_cache_write
        if n_reasoning > n_output:
            n_output += n_reasoning

        if self._overrides is not None:
            found = self._overrides.find(provider, response_model, request_model)
            if found is not None:
                entry, _ = found
                input_cost, output_cost = entry.cost(
                    input_tokens=n_input,
                    output_tokens=n_output,
                    cache_read_tokens=n_cache_read,
                    cache_write_tokens=n_cache_write,
                )
                return CostResult(
                    float(input_cost + output_cost),
                    float(input_cost),
                    float(output_cost),
                    "override",
                    self._overrides.cost_source,
                    entry.match,
                )

        provider_key = provider.strip().lower() if provider else None
        address_key = server_address.strip().lower() if server_address else None
        refs = [response_model] if response_model else []
        if request_model and (not response_model or request_model.lower() != response_model.lower()):
            refs.append(request_model)
        counts = (n_input, n_output, n_cache_read, n_cache_write, n_reasoning)
        for ref in refs:
            resolved = _resolve(provider_key, ref.lower(), address_key)
            if resolved is None:
                continue
            try:
                prices = _table_price(resolved, counts, _span_time(start_time_unix_nano))
            except (ValueError, ArithmeticError) as exc:
                logger.warning("genai-prices could not price %r (%s): %s", ref, resolved.model.id, exc)
                continue
            input_cost, output_cost, total_cost = prices
            return CostResult(
                float(total_cost),
                float(input_cost),
                float(output_cost),
                "computed",
                PRICE_SOURCE,
                resolved.model.id,
            )

        if reported is not None:
            return reported
        return _UNKNOWN_MODEL

    # The stored columns price_row reads (reprice selects just these from a part).
    ROW_COLUMNS = (
        "span_type", "provider", "request_model", "response_model", "input_tokens", "output_tokens",
        "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "start_time_unix_nano", "reported_cost_usd",
        "reported_cost_source",
    )  # fmt: skip

    def price_row(self, row: Mapping[str, Any], *, server_address: str | None = None) -> CostResult:
        """Price a stored span row (a mapping keyed by lake column names), e.g. when re-pricing parts."""
        return self.price(
            span_type=row.get("span_type") or "",
            provider=row.get("provider"),
            request_model=row.get("request_model"),
            response_model=row.get("response_model"),
            input_tokens=row.get("input_tokens"),
            output_tokens=row.get("output_tokens"),
            cache_read_tokens=row.get("cache_read_tokens"),
            cache_write_tokens=row.get("cache_write_tokens"),
            reasoning_tokens=row.get("reasoning_tokens"),
            start_time_unix_nano=row.get("start_time_unix_nano") or 0,
            reported_cost_usd=row.get("reported_cost_usd"),
            reported_cost_source=row.get("reported_cost_source"),
            server_address=server_address,
        )


def _table_price(
    resolved: _Resolved, counts: tuple[int, int, int, int, int], when: datetime
) -> tuple[Decimal, Decimal, Decimal]:
    model_price = resolved.model.get_prices(when)
    plan = _plan_for(model_price)
    if plan is not None:
        return _run_plan(plan, counts)
    n_input, n_output, n_cache_read, n_cache_write, n_reasoning = counts
    usage = Usage(
        input_tokens=n_input,
        output_tokens=n_output,
        cache_read_tokens=n_cache_read or None,
        cache_write_tokens=n_cache_write or None,
        output_reasoning_tokens=n_reasoning or None,
    )
    calc = resolved.model.calc_price(usage, resolved.provider, genai_request_timestamp=when)
    return calc.input_price, calc.output_price, calc.total_price


def _reported(cost: float | None, source: str | None) -> CostResult | None:
    if cost is None or isinstance(cost, bool):
        return None
    try:
        value = float(cost)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return CostResult(value, None, None, "reported", f"reported:{source}" if source else "reported", None)


class ProjectPricers:
    """One Pricer per project: <data-dir>/prices/<project>.toml holds that project's price overrides
    (self-hosted or negotiated prices). A bad file stops start-up with an error naming it."""

    def __init__(self, prices_dir: Path) -> None:
        self._default = Pricer()
        self._by_project: dict[str, Pricer] = {}
        if prices_dir.is_dir():
            for path in sorted(prices_dir.glob("*.toml")):
                self._by_project[path.stem] = Pricer(overrides=load_overrides(path))

    def for_project(self, project: str) -> Pricer:
        return self._by_project.get(project, self._default)
