"""Tests for collector.pricing (cost of one span) and collector.price_overrides (the override file)."""

from __future__ import annotations

import importlib.metadata
import pathlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price, data_snapshot
from genai_prices.types import ModelPrice

from collector import pricing
from collector.price_overrides import PriceOverrideError, PriceOverrides, load_overrides, parse_overrides
from collector.pricing import PRICE_SOURCE, CostResult, Pricer, clear_price_cache, price_cache_info

# A fixed span time, so date-ranged prices cannot drift with the wall clock.
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def ns(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000_000


def price(pricer: Pricer | None = None, **kw: Any) -> CostResult:
    args: dict[str, Any] = {
        "span_type": "llm",
        "provider": None,
        "request_model": None,
        "response_model": None,
        "input_tokens": None,
        "output_tokens": None,
        "cache_read_tokens": None,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
        "start_time_unix_nano": ns(T0),
        "reported_cost_usd": None,
        "reported_cost_source": None,
    }
    args.update(kw)
    return (pricer or Pricer()).price(**args)


def overrides(text: str, name: str = "prices.toml") -> PriceOverrides:
    return parse_overrides(text, source=name)


# --- docs/conventions.md §4.2 verified calls --------------------------------------------------------------------

VERIFIED = [
    # (id, kwargs, expected cost, expected matched model)
    (
        "gpt-4o-mini cached",
        dict(
            provider="openai",
            response_model="gpt-4o-mini-2024-07-18",
            input_tokens=1200,
            cache_read_tokens=1024,
            output_tokens=300,
        ),
        0.0002832,
        "gpt-4o-mini",
    ),
    (
        "claude sonnet 4 cache write",
        dict(
            provider="anthropic",
            response_model="claude-sonnet-4-20250514",
            input_tokens=4740,
            cache_write_tokens=4735,
            output_tokens=255,
        ),
        0.02159625,
        "claude-sonnet-4-0",
    ),
    (
        "gemini-2.5-pro >200k tier",
        dict(provider="google", response_model="gemini-2.5-pro", input_tokens=250_000, output_tokens=1000),
        0.640,
        "gemini-2.5-pro",
    ),
    (
        "o3 reasoning",
        dict(provider="openai", response_model="o3", input_tokens=1000, output_tokens=5000, reasoning_tokens=4000),
        0.042,
        "o3",
    ),
    (
        "bedrock claude 3.7",
        dict(
            provider="aws",
            response_model="us.anthropic.claude-3-7-sonnet-20250219-v1:0",
            input_tokens=1000,
            output_tokens=100,
        ),
        0.0045,
        "regional.anthropic.claude-3-7-sonnet-20250219-v1:0",
    ),
    (
        "gpt-4o via server address",
        dict(
            provider=None,
            server_address="api.openai.com",
            response_model="gpt-4o",
            input_tokens=1000,
            output_tokens=100,
        ),
        0.0035,
        "gpt-4o",
    ),
    (
        "gpt-3.5-turbo (OpenLIT fixture olit-01)",
        dict(provider="openai", response_model="gpt-3.5-turbo", input_tokens=14, output_tokens=96),
        0.000151,
        "gpt-3.5-turbo",
    ),
    (
        "gpt-3.5-turbo-0125 (Langfuse fixture lf-04)",
        dict(provider="openai", response_model="gpt-3.5-turbo-0125", input_tokens=1957, output_tokens=80),
        0.0010985,
        "gpt-3.5-turbo",
    ),
]


@pytest.mark.parametrize(("kw", "expected", "model"), [v[1:] for v in VERIFIED], ids=[v[0] for v in VERIFIED])
def test_verified_calls(kw: dict[str, Any], expected: float, model: str) -> None:
    result = price(**kw)
    assert result.cost_status == "computed"
    assert result.cost_usd == expected  # exact: float(Decimal) of the table's own arithmetic, nothing rounded
    assert result.cost_source == PRICE_SOURCE
    assert result.price_model == model
    assert result.input_cost_usd is not None and result.output_cost_usd is not None
    assert result.input_cost_usd + result.output_cost_usd == pytest.approx(expected, rel=1e-12)


def test_verified_split_input_output() -> None:
    result = price(
        provider="openai",
        response_model="gpt-4o-mini-2024-07-18",
        input_tokens=1200,
        cache_read_tokens=1024,
        output_tokens=300,
    )
    # 176 uncached x $0.15 + 1024 cached x $0.075, 300 out x $0.60 (per million)
    assert result.input_cost_usd == 0.0001032
    assert result.output_cost_usd == 0.00018


def test_reasoning_is_billed_as_output_not_extra() -> None:
    with_reasoning = price(
        provider="openai", response_model="o3", input_tokens=1000, output_tokens=5000, reasoning_tokens=4000
    )
    without = price(provider="openai", response_model="o3", input_tokens=1000, output_tokens=5000)
    assert with_reasoning.cost_usd == without.cost_usd == 0.042


def test_request_model_used_when_no_response_model() -> None:
    result = price(provider="openai", request_model="gpt-4o", input_tokens=1000, output_tokens=100)
    assert (result.cost_status, result.cost_usd, result.price_model) == ("computed", 0.0035, "gpt-4o")


def test_response_model_wins_over_request_model() -> None:
    result = price(
        provider="openai",
        request_model="gpt-4o",
        response_model="gpt-4o-mini-2024-07-18",
        input_tokens=1000,
        output_tokens=100,
    )
    assert result.price_model == "gpt-4o-mini"


def test_request_model_fallback_when_response_model_unknown() -> None:
    result = price(
        provider="openai",
        request_model="gpt-4o",
        response_model="gpt-4o-some-proxy-alias-xyz",
        input_tokens=1000,
        output_tokens=100,
    )
    assert (result.cost_status, result.price_model, result.cost_usd) == ("computed", "gpt-4o", 0.0035)


def test_azure_uses_openai_prices_through_declared_fallback() -> None:
    result = price(provider="azure", response_model="gpt-4o", input_tokens=1000, output_tokens=100)
    assert (result.cost_status, result.cost_usd) == ("computed", 0.0035)


def test_litellm_provider_prefix() -> None:
    result = price(provider="litellm", response_model="openai/gpt-4o", input_tokens=1000, output_tokens=100)
    assert (result.cost_status, result.cost_usd, result.price_model) == ("computed", 0.0035, "gpt-4o")


def test_unmapped_provider_falls_back_on_model_id() -> None:
    # semconv §1d: azure.ai.inference has no genai-prices provider -> fall back on the model id
    result = price(provider="azure.ai.inference", response_model="gpt-4o", input_tokens=1000, output_tokens=100)
    assert (result.cost_status, result.cost_usd) == ("computed", 0.0035)


def test_exclusive_cache_semantics_are_repaired() -> None:
    # cache reads larger than input: the emitter counted them separately; genai-prices would reject this
    fixed = price(
        provider="openai", response_model="gpt-4o-mini", input_tokens=176, cache_read_tokens=1024, output_tokens=300
    )
    assert fixed.cost_status == "computed"
    assert fixed.cost_usd == 0.0002832


# --- date-ranged and time-of-day prices ---------------------------------------------------------------


def test_date_ranged_price_uses_span_start_time() -> None:
    model = data_snapshot.find_provider_by_id(data_snapshot.get_snapshot().providers, "anthropic")
    assert model is not None and model.find_model("claude-opus-4-6") is not None, "installed data lacks the model"
    kw: dict[str, Any] = dict(
        provider="anthropic", response_model="claude-opus-4-6", input_tokens=300_000, output_tokens=1000
    )
    before = price(start_time_unix_nano=ns(datetime(2026, 3, 12, 23, 59, 59, tzinfo=UTC)), **kw)
    after = price(start_time_unix_nano=ns(datetime(2026, 3, 13, 0, 0, 0, tzinfo=UTC)), **kw)
    assert before.cost_usd == 3.0375  # semconv §4.1: $3.04 before 2026-03-13
    assert after.cost_usd == 1.525  # $1.53 after
    for result, when in ((before, datetime(2026, 3, 12, 12, tzinfo=UTC)), (after, datetime(2026, 3, 14, tzinfo=UTC))):
        expected = calc_price(
            Usage(input_tokens=300_000, output_tokens=1000),
            "claude-opus-4-6",
            provider_id="anthropic",
            genai_request_timestamp=when,
        )
        assert result.cost_usd == float(expected.total_price)


def test_time_of_day_price_is_not_cached_per_day() -> None:
    # DeepSeek off-peak prices depend on the time of day: two spans on the same day must differ
    kw: dict[str, Any] = dict(
        provider="deepseek", response_model="deepseek-chat", input_tokens=10_000, output_tokens=2_000
    )
    results = {}
    for hour in (2, 20):
        when = datetime(2025, 6, 1, hour, tzinfo=UTC)
        results[hour] = price(start_time_unix_nano=ns(when), **kw).cost_usd
        expected = calc_price(
            Usage(input_tokens=10_000, output_tokens=2_000),
            "deepseek-chat",
            provider_id="deepseek",
            genai_request_timestamp=when,
        )
        assert results[hour] == float(expected.total_price)
    assert results[2] != results[20]


# --- no made-up cost --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        dict(provider="openai", response_model="my-secret-model-9000"),
        dict(provider=None, response_model="my-secret-model-9000"),
        dict(provider="totally-unknown-cloud", response_model="my-secret-model-9000"),
        dict(provider=None, server_address="api.openai.com", response_model="claude-3-5-sonnet-20241022"),
        # a self-hosted runtime never takes a public price, even for a model id the table knows
        dict(provider="vllm", response_model="mistral-large-latest"),
        dict(provider="ollama", request_model="gpt-4o"),
        # usage but no model at all
        dict(provider="openai"),
    ],
)
def test_unknown_model_is_null_never_zero(kw: dict[str, Any]) -> None:
    result = price(input_tokens=1000, output_tokens=100, **kw)
    assert result.cost_status == "unknown_model"
    assert result.cost_usd is None
    assert result.input_cost_usd is None and result.output_cost_usd is None
    assert result.cost_source is None and result.price_model is None


def test_known_provider_does_not_borrow_other_providers_prices() -> None:
    # a claude model under openai: genai-prices knows it under anthropic, but the span says openai
    result = price(provider="openai", response_model="claude-3-5-sonnet-20241022", input_tokens=10, output_tokens=10)
    assert result.cost_status == "unknown_model"
    assert (
        price(
            provider="anthropic", response_model="claude-3-5-sonnet-20241022", input_tokens=10, output_tokens=10
        ).cost_status
        == "computed"
    )


def test_reported_cost_used_for_unknown_model() -> None:
    result = price(
        provider="openai",
        response_model="my-secret-model-9000",
        input_tokens=1000,
        output_tokens=100,
        reported_cost_usd=0.0123,
        reported_cost_source="llm.cost.total",
    )
    assert result == CostResult(0.0123, None, None, "reported", "reported:llm.cost.total", None)


def test_table_wins_over_reported_cost() -> None:
    result = price(
        provider="openai",
        response_model="gpt-3.5-turbo",
        input_tokens=14,
        output_tokens=96,
        reported_cost_usd=99.0,
        reported_cost_source="gen_ai.usage.cost",
    )
    assert (result.cost_status, result.cost_usd) == ("computed", 0.000151)


def test_reported_cost_without_usage() -> None:
    result = price(response_model="gpt-4o", reported_cost_usd=0.5, reported_cost_source="operation.cost")
    assert result == CostResult(0.5, None, None, "reported", "reported:operation.cost", None)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.01])
def test_invalid_reported_cost_is_ignored(bad: float) -> None:
    result = price(
        provider="openai",
        response_model="my-secret-model-9000",
        input_tokens=5,
        output_tokens=5,
        reported_cost_usd=bad,
        reported_cost_source="llm.cost.total",
    )
    assert (result.cost_status, result.cost_usd) == ("unknown_model", None)


def test_llm_span_without_usage_is_no_usage() -> None:
    cases: list[dict[str, Any]] = [dict(response_model="gpt-4o"), dict(), dict(input_tokens=0, output_tokens=0)]
    for kw in cases:
        result = price(provider="openai", **kw)
        assert result == CostResult(None, None, None, "no_usage", None, None)


def test_embedding_span_without_usage_is_no_usage() -> None:
    assert price(span_type="embedding").cost_status == "no_usage"


def test_non_model_span_is_not_applicable() -> None:
    result = price(span_type="tool")
    assert result == CostResult(None, None, None, "not_applicable", None, None)


def test_non_model_span_naming_a_model_without_usage_is_no_usage() -> None:
    assert price(span_type="agent", request_model="gpt-4o").cost_status == "no_usage"


def test_embedding_span_with_usage_is_computed() -> None:
    result = price(
        span_type="embedding", provider="openai", response_model="text-embedding-3-small", input_tokens=1_000_000
    )
    assert result.cost_status == "computed"
    assert result.cost_usd is not None and result.cost_usd > 0
    assert result.output_cost_usd == 0.0


# --- overrides ----------------------------------------------------------------------------------------

OVERRIDES = """
# prices per million tokens, USD
[[model]]
match = "my-llama-70b"
provider = "vllm"
input_mtok = 0.50
output_mtok = 1.00
cache_read_mtok = 0.05
cache_write_mtok = 0.60

[[model]]
match = "ft:gpt-4o-mini:acme:*"
input_mtok = 0.30
output_mtok = 1.20

[[model]]
match = "gpt-4o-mini"
input_mtok = 1
output_mtok = 2

[[model]]
match = "gpt-4o-*"
input_mtok = 100
output_mtok = 100
"""


def test_override_cost_arithmetic_and_source() -> None:
    pricer = Pricer(overrides(OVERRIDES, "acme-prices.toml"))
    result = price(
        pricer,
        provider="vllm",
        response_model="my-llama-70b",
        input_tokens=1000,
        cache_read_tokens=200,
        cache_write_tokens=100,
        output_tokens=500,
        reasoning_tokens=100,
    )
    # input: 700 x 0.50 + 200 x 0.05 + 100 x 0.60 = 420 -> $0.00042; output: 500 x 1.00 -> $0.0005
    assert result == CostResult(0.00092, 0.00042, 0.0005, "override", "override:acme-prices.toml", "my-llama-70b")


def test_override_wins_over_table() -> None:
    pricer = Pricer(overrides(OVERRIDES))
    result = price(
        pricer, provider="openai", response_model="gpt-4o-mini", input_tokens=1_000_000, output_tokens=1_000_000
    )
    assert (result.cost_status, result.cost_usd, result.price_model) == ("override", 3.0, "gpt-4o-mini")
    assert (
        price(provider="openai", response_model="gpt-4o-mini", input_tokens=1_000_000, output_tokens=1_000_000).cost_usd
        == 0.75
    )  # table price without the override


def test_override_glob_match() -> None:
    pricer = Pricer(overrides(OVERRIDES))
    result = price(
        pricer,
        provider="openai",
        response_model="ft:gpt-4o-mini:acme:custom:abc123",
        input_tokens=1_000_000,
        output_tokens=1_000_000,
    )
    assert (result.cost_status, result.cost_usd, result.price_model) == ("override", 1.5, "ft:gpt-4o-mini:acme:*")
    other_org = price(
        pricer, provider="openai", response_model="ft:gpt-4o-mini:other:x", input_tokens=10, output_tokens=10
    )
    assert other_org.cost_status != "override"


def test_override_cache_prices_default_to_input() -> None:
    pricer = Pricer(overrides(OVERRIDES))
    result = price(
        pricer,
        response_model="ft:gpt-4o-mini:acme:x",
        input_tokens=1_000_000,
        cache_read_tokens=400_000,
        cache_write_tokens=100_000,
        output_tokens=0,
    )
    assert result.input_cost_usd == 0.3


def test_override_provider_restriction() -> None:
    pricer = Pricer(overrides(OVERRIDES))
    kw: dict[str, Any] = dict(response_model="my-llama-70b", input_tokens=10, output_tokens=10)
    assert price(pricer, provider="vllm", **kw).cost_status == "override"
    assert price(pricer, provider="VLLM", **kw).cost_status == "override"
    assert price(pricer, provider="ollama", **kw).cost_status == "unknown_model"
    assert price(pricer, provider=None, **kw).cost_status == "unknown_model"


def test_override_first_entry_wins_and_response_model_first() -> None:
    pricer = Pricer(overrides(OVERRIDES))
    # "gpt-4o-mini" matches entries 3 and 4: entry 3 (first) wins
    assert price(pricer, response_model="gpt-4o-mini", input_tokens=1_000_000).cost_usd == 1.0
    # the response model is tried against every entry before the request model
    result = price(pricer, request_model="gpt-4o-mini", response_model="gpt-4o-2024-08-06", input_tokens=1_000_000)
    assert (result.cost_usd, result.price_model) == (100.0, "gpt-4o-*")
    # request model matched when the response model matches nothing
    result = price(
        pricer, request_model="my-llama-70b", response_model="something-else", provider="vllm", input_tokens=1_000_000
    )
    assert (result.cost_status, result.cost_usd) == ("override", 0.5)


def test_override_match_is_case_insensitive() -> None:
    pricer = Pricer(overrides(OVERRIDES))
    assert price(pricer, response_model="FT:GPT-4o-mini:ACME:x", input_tokens=10).cost_status == "override"


def test_override_not_used_without_usage() -> None:
    pricer = Pricer(overrides(OVERRIDES))
    assert price(pricer, provider="vllm", response_model="my-llama-70b").cost_status == "no_usage"


def test_empty_override_file_is_valid(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("# nothing yet\n")
    loaded = load_overrides(path)
    assert len(loaded) == 0 and loaded.source == "empty.toml"


def test_load_overrides_from_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "team.toml"
    path.write_text(OVERRIDES)
    loaded = load_overrides(path)
    assert len(loaded) == 4
    assert loaded.entries[0].cache_read_mtok == Decimal("0.05")  # exact decimal, not a binary float
    result = price(Pricer(loaded), provider="vllm", response_model="my-llama-70b", input_tokens=10)
    assert result.cost_source == "override:team.toml"


BAD_FILES = [
    # (id, text, entry, field)
    ("unknown key", '[[model]]\nmatch = "x"\ninput_mtok = 1\noutput_mtok = 1\ninput_price = 2\n', 1, "input_price"),
    ("missing match", "[[model]]\ninput_mtok = 1\noutput_mtok = 1\n", 1, "match"),
    ("empty match", '[[model]]\nmatch = " "\ninput_mtok = 1\noutput_mtok = 1\n', 1, "match"),
    ("match not a string", "[[model]]\nmatch = 3\ninput_mtok = 1\noutput_mtok = 1\n", 1, "match"),
    ("negative price", '[[model]]\nmatch = "x"\ninput_mtok = 1\noutput_mtok = -0.5\n', 1, "output_mtok"),
    ("string price", '[[model]]\nmatch = "x"\ninput_mtok = "0.5"\noutput_mtok = 1\n', 1, "input_mtok"),
    ("bool price", '[[model]]\nmatch = "x"\ninput_mtok = true\noutput_mtok = 1\n', 1, "input_mtok"),
    (
        "nan price",
        '[[model]]\nmatch = "x"\ninput_mtok = 1\noutput_mtok = 1\ncache_read_mtok = nan\n',
        1,
        "cache_read_mtok",
    ),
    (
        "inf price",
        '[[model]]\nmatch = "x"\ninput_mtok = 1\noutput_mtok = 1\ncache_write_mtok = inf\n',
        1,
        "cache_write_mtok",
    ),
    ("missing input price", '[[model]]\nmatch = "x"\noutput_mtok = 1\n', 1, "input_mtok"),
    ("missing output price", '[[model]]\nmatch = "x"\ninput_mtok = 1\n', 1, "output_mtok"),
    ("bad provider", '[[model]]\nmatch = "x"\nprovider = 1\ninput_mtok = 1\noutput_mtok = 1\n', 1, "provider"),
    (
        "error in third entry",
        '[[model]]\nmatch = "a"\ninput_mtok = 1\noutput_mtok = 1\n'
        '[[model]]\nmatch = "b"\ninput_mtok = 1\noutput_mtok = 1\n'
        '[[model]]\nmatch = "c"\ninput_mtok = -1\noutput_mtok = 1\n',
        3,
        "input_mtok",
    ),
    ("unknown top-level key", "[pricing]\nx = 1\n", None, "pricing"),
    ("model not an array of tables", 'model = "gpt-4o"\n', None, "model"),
]


@pytest.mark.parametrize(("text", "entry", "field"), [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_override_file_errors_name_file_entry_and_field(
    tmp_path: pathlib.Path, text: str, entry: int | None, field: str
) -> None:
    path = tmp_path / "bad-prices.toml"
    path.write_text(text)
    with pytest.raises(PriceOverrideError) as info:
        load_overrides(path)
    message = str(info.value)
    assert "bad-prices.toml" in message
    assert repr(field) in message
    assert (info.value.entry, info.value.field) == (entry, field)
    if entry is not None:
        assert f"entry {entry}" in message


def test_override_file_invalid_toml_names_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[[model]\nmatch = \n")
    with pytest.raises(PriceOverrideError, match=r"broken\.toml.*invalid TOML"):
        load_overrides(path)


def test_override_file_missing_names_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(PriceOverrideError, match=r"nope\.toml"):
        load_overrides(tmp_path / "nope.toml")


# --- source, memoisation, fidelity to genai-prices ---------------------------------------------------------


def test_price_source_names_installed_version() -> None:
    version = importlib.metadata.version("genai-prices")
    assert f"genai-prices@{version}" == PRICE_SOURCE
    result = price(provider="openai", response_model="gpt-4o", input_tokens=1, output_tokens=1)
    assert result.cost_source == f"genai-prices@{version}"


def test_memoisation_returns_identical_results_without_rematching(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_price_cache()
    kw: dict[str, Any] = dict(
        provider="openai",
        response_model="gpt-4o-mini-2024-07-18",
        input_tokens=1200,
        cache_read_tokens=1024,
        output_tokens=300,
    )
    first = price(**kw)
    assert price_cache_info()[:2] == (0, 1)

    def no_matching(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("model matching ran again for a memoised model")

    monkeypatch.setattr(data_snapshot, "find_provider_by_id", no_matching)
    second = price(**kw)
    third = price(**{**kw, "start_time_unix_nano": ns(datetime(2025, 1, 1, tzinfo=UTC))})
    assert second == first == CostResult(0.0002832, 0.0001032, 0.00018, "computed", PRICE_SOURCE, "gpt-4o-mini")
    assert third.cost_usd == first.cost_usd
    assert price_cache_info()[:2] == (2, 1)


def test_unknown_models_are_memoised_too() -> None:
    clear_price_cache()
    for _ in range(3):
        assert price(provider="openai", response_model="nope-1", input_tokens=1).cost_status == "unknown_model"
    assert price_cache_info()[:2] == (2, 1)


def test_resolution_cache_is_bounded() -> None:
    clear_price_cache()
    for i in range(pricing._CACHE_SIZE + 50):
        price(provider="openai", response_model=f"made-up-model-{i}", input_tokens=1)
    assert price_cache_info()[2] == pricing._CACHE_SIZE


def _all_model_prices() -> list[tuple[str, str, ModelPrice]]:
    out: list[tuple[str, str, ModelPrice]] = []
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            prices = [model.prices] if isinstance(model.prices, ModelPrice) else [c.prices for c in model.prices]
            out.extend((provider.id, model.id, mp) for mp in prices)
    return out


USAGES = [
    (1000, 100, 0, 0, 0),
    (1200, 300, 1024, 0, 0),
    (4740, 255, 0, 4735, 0),
    (1000, 5000, 0, 0, 4000),
    (300_000, 1000, 0, 0, 0),
    (250_000, 2000, 100_000, 50_000, 1000),
    (7, 0, 0, 0, 0),
]


def test_fast_arithmetic_equals_genai_prices_on_every_model() -> None:
    fast = mismatches = 0
    all_prices = _all_model_prices()
    for provider_id, model_id, model_price in all_prices:
        plan = pricing._build_plan(model_price)
        if plan is None:
            continue
        fast += 1
        for counts in USAGES:
            n_in, n_out, n_cr, n_cw, n_rs = counts
            usage = Usage(
                input_tokens=n_in,
                output_tokens=n_out,
                cache_read_tokens=n_cr or None,
                cache_write_tokens=n_cw or None,
                output_reasoning_tokens=n_rs or None,
            )
            expected = model_price.calc_price(usage)
            got = pricing._run_plan(plan, counts)
            if got != (expected["input_price"], expected["output_price"], expected["total_price"]):
                mismatches += 1
                print("mismatch", provider_id, model_id, counts, got, expected)
    assert mismatches == 0
    assert fast > 0.95 * len(all_prices)  # the fast path covers the table, or the timing target is off


def test_generic_path_for_per_request_prices() -> None:
    # perplexity sonar charges per request too: priced through genai-prices' generic arithmetic
    model_price = data_snapshot.find_provider_by_id(data_snapshot.get_snapshot().providers, "perplexity")
    assert model_price is not None
    sonar = model_price.find_model("sonar")
    assert sonar is not None and pricing._build_plan(sonar.get_prices(T0)) is None
    result = price(provider="perplexity", response_model="sonar", input_tokens=1000, output_tokens=100)
    expected = calc_price(
        Usage(input_tokens=1000, output_tokens=100), "sonar", provider_id="perplexity", genai_request_timestamp=T0
    )
    assert result.cost_status == "computed"
    assert result.cost_usd == float(expected.total_price)
    assert result.cost_usd > (result.input_cost_usd or 0) + (result.output_cost_usd or 0)  # the request fee


@pytest.mark.parametrize(
    ("provider", "model", "counts"),
    [
        ("openai", "gpt-4o-2024-08-06", (5000, 700, 2048, 0, 0)),
        ("anthropic", "claude-3-5-haiku-20241022", (3000, 300, 1000, 500, 0)),
        ("google", "gemini-2.5-flash", (120_000, 4000, 60_000, 0, 2000)),
        ("aws", "anthropic.claude-3-haiku-20240307-v1:0", (800, 80, 0, 0, 0)),
        ("x-ai", "grok-3", (900, 90, 0, 0, 0)),
        ("mistral", "mistral-large-latest", (2500, 250, 0, 0, 0)),
    ],
)
def test_pricer_agrees_with_calc_price(provider: str, model: str, counts: tuple[int, int, int, int, int]) -> None:
    n_in, n_out, n_cr, n_cw, n_rs = counts
    result = price(
        provider=provider,
        response_model=model,
        input_tokens=n_in,
        output_tokens=n_out,
        cache_read_tokens=n_cr,
        cache_write_tokens=n_cw,
        reasoning_tokens=n_rs,
    )
    expected = calc_price(
        Usage(
            input_tokens=n_in,
            output_tokens=n_out,
            cache_read_tokens=n_cr or None,
            cache_write_tokens=n_cw or None,
            output_reasoning_tokens=n_rs or None,
        ),
        model,
        provider_id=provider,
        genai_request_timestamp=T0,
    )
    assert result.cost_status == "computed"
    assert (result.cost_usd, result.input_cost_usd, result.output_cost_usd) == (
        float(expected.total_price),
        float(expected.input_price),
        float(expected.output_price),
    )
    assert result.price_model == expected.model.id


def test_price_row_and_as_columns() -> None:
    row = {
        "span_type": "llm",
        "provider": "openai",
        "request_model": "gpt-3.5-turbo",
        "response_model": None,
        "input_tokens": 14,
        "output_tokens": 96,
        "cache_read_tokens": None,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
        "start_time_unix_nano": ns(T0),
        "reported_cost_usd": None,
        "reported_cost_source": None,
    }
    columns = Pricer().price_row(row).as_columns()
    assert columns == {
        "cost_usd": 0.000151,
        "input_cost_usd": 0.000007,
        "output_cost_usd": 0.000144,
        "cost_status": "computed",
        "cost_source": PRICE_SOURCE,
        "price_model": "gpt-3.5-turbo",
    }


def test_exclusive_reasoning_semantics_are_repaired() -> None:
    # reasoning larger than output: the emitter counted it separately -> output total is 1000 + 4000
    result = price(provider="openai", response_model="o3", input_tokens=1000, output_tokens=1000, reasoning_tokens=4000)
    assert (result.cost_status, result.cost_usd) == ("computed", 0.042)


def test_override_exact_match_is_whole_id() -> None:
    pricer = Pricer(overrides(OVERRIDES))
    kw: dict[str, Any] = dict(provider="vllm", input_tokens=10, output_tokens=10)
    assert price(pricer, response_model="my-llama-70b-v2", **kw).cost_status == "unknown_model"
    assert price(pricer, response_model="my-llama-7", **kw).cost_status == "unknown_model"
