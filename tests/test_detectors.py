"""Detector building blocks on hand-made frames: cycles, error classes, argument normalisation, budget
crossings, config validation and the registry's isolation of a failing detector. End-to-end cases through
the collector and the API are in test_detectors_e2e.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from query.detect import registry
from query.detect.budgets import crossings, detect_scopes
from query.detect.config import DEFAULT, DetectorConfigError, DetectorConfigs, load, parse
from query.detect.finding import FINDING_SCHEMA
from query.detect.loops import find_cycles
from query.detect.signals import DETECT_COLUMNS, classify_error, normalised_arguments
from query.summaries import LIGHT_COLUMNS


def test_cycles_need_two_distinct_steps_and_enough_turns() -> None:
    assert find_cycles(list("ABABAB"), 4, 3) == [(0, 2, 3)]
    assert find_cycles(list("ABABA"), 4, 3) == []  # two and a half turns
    assert find_cycles(list("AAAAAA"), 4, 3) == []  # one step repeated is not a cycle (exact repeats cover it)
    assert find_cycles(list("xABCABCABCy"), 4, 3) == [(1, 3, 3)]
    assert find_cycles(list("ABCDABCDABCD"), 3, 3) == []  # period 4 is beyond the configured 3
    assert find_cycles(list("ABABABCDCDCD"), 4, 3) == [(0, 2, 3), (6, 2, 3)]


@pytest.mark.parametrize(
    ("span_type", "error_type", "message", "attributes", "expected"),
    [
        ("llm", "openai.RateLimitError", "Error code: 429 - slow down", {}, ("rate_limit", 429)),
        ("llm", "APIStatusError", "boom", {"http.response.status_code": 503}, ("server", 503)),
        ("llm", "openai.AuthenticationError", "Error code: 401 - invalid api key", {}, ("auth", 401)),
        ("llm", "openai.NotFoundError", "Error code: 404 - model not found", {}, ("validation", 404)),
        ("llm", "httpx.ReadTimeout", "timed out", {}, ("timeout", None)),
        ("tool", "ValueError", "city not known", {}, ("tool_error", None)),
        ("tool", None, "bad args", {"pydantic_ai.tool.failure_stage": "validation"}, ("validation", None)),
        ("other", "KeyError", "x", {}, ("other", None)),
    ],
)
def test_errors_are_classified(
    span_type: str, error_type: str | None, message: str, attributes: dict[str, Any], expected: tuple[str, int | None]
) -> None:
    assert classify_error(span_type, error_type, message, attributes) == expected


def test_arguments_compare_by_meaning() -> None:
    assert normalised_arguments('{"b": 1, "a": [1, 2]}') == normalised_arguments('{"a":[1,2],"b":1}')
    assert normalised_arguments("search  cats\n") == normalised_arguments("search cats")
    assert normalised_arguments('{"a": 1}') != normalised_arguments('{"a": 2}')


def test_crossing_points_at_the_span_that_crossed_each_line() -> None:
    events = pl.DataFrame(
        {
            "trace_id": ["t"] * 4,
            "span_id": ["a", "b", "c", "d"],
            "at": [1, 2, 3, 4],
            "amount": [3.0, 4.0, 2.0, 5.0],
            "k": ["x"] * 4,
        }
    )
    limits = pl.DataFrame({"k": ["x"], "limit": [10.0]})
    (row,) = crossings(events, limits, ["k"], 0.8).to_dicts()
    # running totals 3, 7, 9, 14: 80 % (8) is crossed at c, 100 % at d
    assert (row["warning_span_id"], row["breach_span_id"], row["total"]) == ("c", "d", 14.0)
    assert crossings(events, limits.with_columns(pl.lit(100.0).alias("limit")), ["k"], 0.8).height == 0


def _usage(rows: list[tuple[str, str, int, str | None, str | None, int, float | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "trace_id": t,
                "span_id": s,
                "start_ns": ns,
                "user_id": u,
                "session_id": sess,
                "input_tokens": tok,
                "output_tokens": 0,
                "cost_usd": cost,
            }
            for t, s, ns, u, sess, tok, cost in rows
        ],
        schema={
            "trace_id": pl.String,
            "span_id": pl.String,
            "start_ns": pl.Int64,
            "user_id": pl.String,
            "session_id": pl.String,
            "input_tokens": pl.Int64,
            "output_tokens": pl.Int64,
            "cost_usd": pl.Float64,
        },
    )


def test_scope_budgets_follow_sessions_users_and_days() -> None:
    day = 86_400 * 10**9
    usage = _usage(
        [
            ("t1", "a", 1, "u1", "s1", 100, 0.40),
            ("t2", "b", 2, "u1", "s1", 100, 0.70),  # session s1 reaches 1.10 of 1.00 here
            ("t3", "c", 3, "u2", "s2", 100, 0.50),
            ("t4", "d", day + 1, "u1", "s3", 100, 0.10),  # the next day starts from zero
        ]
    )
    config = parse({"budgets": {"session": {"cost_usd": 1.0}, "user_day": {"cost_usd": 1.0}}}, "test")
    found = detect_scopes(usage, config.budgets).to_dicts()
    got = sorted((f["code"], f["trace_id"], f["span_id"]) for f in found)
    assert got == [("budget_breach", "t2", "b"), ("budget_breach", "t2", "b")]
    assert {f["message"].split(" ")[0] for f in found} == {"session", "user-day"}


def test_config_values_name_themselves(tmp_path: Path) -> None:
    assert load(tmp_path / "absent.toml") is DEFAULT
    cases = {
        "[loops]\nmin_repeats = 1\n": "loops.min_repeats",
        "[budgets.trace]\ncost_usd = -1\n": "budgets.trace.cost_usd",
        "[budgets.session]\nsteps = 3\n": "budgets.session.steps",
        "[budgets]\nwarning_at = 1.5\n": "budgets.warning_at",
        "[retries]\nmin_backoff_ms = 'soon'\n": "retries.min_backoff_ms",
        "[loop]\n": "loop",
        "not toml [": "not valid TOML",
    }
    for text, named in cases.items():
        path = tmp_path / "p.toml"
        path.write_text(text)
        with pytest.raises(DetectorConfigError, match=named.replace(".", r"\.")):
            load(path)


def test_a_bad_edit_keeps_the_last_good_config(tmp_path: Path) -> None:
    configs = DetectorConfigs(tmp_path)
    (tmp_path / "p.toml").write_text("[budgets.trace]\ntokens = 10\n")
    good = configs.get("p")
    assert good.budgets.for_scope("trace") == {"tokens": 10.0}
    (tmp_path / "p.toml").write_text("[budgets.trace]\ntokens = 'lots'\n")
    assert configs.get("p") is good and "budgets.trace.tokens" in configs.errors["p"]
    with pytest.raises(DetectorConfigError):
        configs.check_all()


def test_a_failing_detector_loses_only_its_own_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(spans: pl.DataFrame, config: object) -> pl.DataFrame:
        raise RuntimeError("bug")

    spans = pl.DataFrame(
        [
            {
                "trace_id": "t",
                "span_id": "s",
                "parent_span_id": None,
                "name": "execute_tool x",
                "span_type": "tool",
                "start_time_unix_nano": 1,
                "end_time_unix_nano": 2,
                "is_error": True,
                "tool_name": "x",
                "error_type": "ValueError",
                "error_message": "nope",
                "counted": False,
            }
        ]
    )
    columns = {c: pl.lit(None, pl.String) for c in (*LIGHT_COLUMNS, *DETECT_COLUMNS) if c not in spans.columns}
    spans = (
        spans.with_columns(**columns)
        .with_columns(
            pl.col(c).cast(pl.Int64)
            for c in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
        )
        .with_columns(pl.col("cost_usd").cast(pl.Float64))
    )
    monkeypatch.setitem(registry.DETECTORS, "loop", broken)
    found = registry.run(spans, DEFAULT)
    assert found.schema == pl.Schema(FINDING_SCHEMA)
    # The tool ran on a request with no user: the readiness check says so too (test_readiness.py).
    assert found.select("kind", "code").rows() == [("error", "tool_error"), ("readiness", "tool_without_user")]


def test_the_api_refuses_to_start_on_a_bad_detector_config(tmp_path: Path) -> None:
    from collector.config import Settings
    from query.app import create_app

    settings = Settings(data_dir=tmp_path)
    settings.detectors_dir.mkdir(parents=True)
    (settings.detectors_dir / "default.toml").write_text("[budgets.user_day]\ncost_usd = 0\n")
    with pytest.raises(DetectorConfigError, match=r"default\.toml: budgets\.user_day\.cost_usd: must be a positive"):
        create_app(settings)
