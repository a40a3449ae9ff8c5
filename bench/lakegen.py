"""Synthetic lake generator for the query benchmark: N realistic agent-trace spans straight to Parquet parts.

Run from the repository root:  .venv/bin/python -m bench.lakegen --spans 1000000 --out /tmp/agentflight-bench/1m

Writes `<out>/lake/spans/project=default/date=YYYY-MM-DD/part-*.parquet` in the lake's public schema
(`store.schema.SPAN_SCHEMA`, published with `store.lake.Lake.publish`, so every part carries the schema version).
Nothing goes through the collector: a day of spans is built column by column with numpy and pyarrow compute (no
Python loop per span or per trace), then written as compacted parts (sorted by trace_id, then start) of at most
`--part-spans` rows; the last day also gets a few small unsorted "fresh" parts in arrival order, as the live writer
leaves them before compaction. One day is in memory at a time.

The workload, per trace: an `invoke_agent` root (span_type agent, agent_name, user and session), an optional
retriever, 1–18 turns (each an llm span, 5 % of them wrapped in a LangChain-style llm span reporting the same usage,
then 1–3 tool spans after every turn but the last), an optional guardrail; runs of more than 8 turns are split into
sub-agent spans. A few traces have 2,000+ spans and one has 10,000. Models come from OpenAI, Anthropic and Google
(dated response models), plus an unpriced `orbit-large-2` (cost NULL, `unknown_model`); costs are computed from the
collector's own price table (`collector.pricing.Pricer`, probed once per model). ~1.2 % of llm calls fail with a
RateLimitError ("Error code: 429 - ..."; the next turn's call to the same model under the same parent reads as a
retry to the detectors), ~1.5 % of tool calls with a TimeoutError. For the detectors (query/detect/), 3 % of traces
are drawn to loop and those with 3+ tool calls (~2 % of all traces) do: their first 3–5 tool calls (across turns)
are one tool called with identical arguments (and the same result).
Spans of a trace that starts before midnight and ends after it go to the next day's partition, as the collector
partitions by span start.

The loop pattern draws from a random stream of its own (`Context.patterns`), so everything else a seed produces is as
in generator version 1 (the query benchmark's figures up to 2026-11-21 were measured on version-1 lakes).

A `lakegen.json` marker in `<out>` records what was generated; a second run with the same arguments reuses the lake.
"""

from __future__ import annotations

import argparse
import binascii
import datetime as dt
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

try:
    from store.lake import COMPACTED_ROW_GROUP_ROWS, Lake
    from store.schema import SPAN_SCHEMA
except ImportError:  # run as `python bench/lakegen.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from store.lake import COMPACTED_ROW_GROUP_ROWS, Lake
    from store.schema import SPAN_SCHEMA

MARKER = "lakegen.json"
GENERATOR_VERSION = 3  # 2: loop traces and "Error code: 429" errors; 3: compacted parts in 4,096-row groups
PROJECT = "default"
MS = 1_000_000  # ns
NS_PER_DAY = 86_400 * 1_000_000_000
BIG_TRACE_SPANS = (2_000, 2_300, 2_800, 3_500, 10_000)  # only in lakes of >= BIG_TRACES_FROM spans
BIG_TRACES_FROM = 200_000
FRESH_SPANS = 12_000  # the newest spans of the last day stay in small unsorted parts
FRESH_PART_ROWS = 5_000
N_USERS = 2_000
MAX_TURNS = 18
GROUP_TURNS = 6  # turns per sub-agent when a run has more than 8 turns
LOOP_TRACE_SHARE = 0.03  # traces whose first 3-5 tool calls repeat one tool with identical arguments
LOOP_CALLS = (3, 5)  # identical calls in a loop trace (inclusive; fewer if the trace has fewer tool calls)
RATE_LIMIT_MESSAGE = "Error code: 429 - Rate limit reached; please retry after 20s"  # the OpenAI SDK's wording

# (provider, request model, response model, weight, scope of the provider's instrumentation, server.address)
MODELS: list[tuple[str, str, str, float]] = [
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 0.24),
    ("openai", "gpt-4o", "gpt-4o-2024-08-06", 0.14),
    ("openai", "gpt-4.1", "gpt-4.1-2025-04-14", 0.08),
    ("openai", "o4-mini", "o4-mini-2025-04-16", 0.05),
    ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", 0.20),
    ("anthropic", "claude-haiku-4-5", "claude-haiku-4-5-20251001", 0.10),
    ("google", "gemini-2.5-flash", "gemini-2.5-flash", 0.10),
    ("google", "gemini-2.5-pro", "gemini-2.5-pro", 0.05),
    ("openai", "orbit-large-2", "orbit-large-2", 0.04),  # not in the price table: cost NULL, unknown_model
]
PROVIDER_INFO = {  # provider -> (llm scope, wrapper span name, server.address, response id prefix)
    "openai": ("opentelemetry.instrumentation.openai_v2", "ChatOpenAI", "api.openai.com", "chatcmpl-"),
    "anthropic": ("opentelemetry.instrumentation.anthropic", "ChatAnthropic", "api.anthropic.com", "msg_"),
    "google": (
        "opentelemetry.instrumentation.google_genai",
        "ChatGoogleGenerativeAI",
        "generativelanguage.googleapis.com",
        "",
    ),
}
# (agent name, service index, weight)
AGENTS: list[tuple[str, int, float]] = [
    ("support-triage", 0, 0.22),
    ("refund-assistant", 0, 0.10),
    ("research-assistant", 1, 0.18),
    ("web-researcher", 1, 0.08),
    ("code-reviewer", 2, 0.14),
    ("test-writer", 2, 0.07),
    ("invoice-extractor", 3, 0.12),
    ("sql-analyst", 3, 0.09),
]
SUB_AGENTS = ("planner", "researcher", "executor", "critic", "summariser")
SERVICES = ("support-bot", "research-agent", "code-agent", "finance-copilot")
SERVICE_VERSIONS = ("3.2.0", "2.14.1", "0.9.7", "1.4.2")
TOOLS: list[tuple[str, str]] = [  # (tool name, its main argument)
    ("search_docs", "query"),
    ("web_search", "query"),
    ("fetch_url", "url"),
    ("read_file", "path"),
    ("write_file", "path"),
    ("run_tests", "target"),
    ("run_sql", "sql"),
    ("get_order_status", "order_id"),
    ("lookup_customer", "customer_id"),
    ("issue_refund", "order_id"),
    ("send_email", "to"),
    ("create_ticket", "title"),
    ("calculator", "expression"),
    ("get_weather", "city"),
    ("translate", "text"),
    ("summarise_pdf", "document_id"),
    ("list_invoices", "account_id"),
    ("git_diff", "ref"),
    ("python_exec", "code"),
    ("vector_search", "query"),
]
_WORDS_TEXT = (
    "the a of to and in is for on that with as by at from or an be this which are was it not have can will your "
    "order refund invoice customer account payment shipment delivery ticket report query table column revenue cost "
    "margin forecast churn subscription plan upgrade discount price total amount tax region quarter month week "
    "today yesterday monday friday latest previous original missing empty late early failed pending confirmed "
    "shipped returned cancelled approved declined error warning retry timeout limit index file section document "
    "page summary detail record item list value field status update request response policy contract clause "
    "term renewal notice user team manager analyst engineer support agent model prompt tool result source "
    "citation paper study dataset benchmark metric accuracy latency throughput memory cache database schema "
    "migration deploy release branch commit test coverage function class module service endpoint header token "
    "please check find compare explain summarise list show verify confirm calculate estimate draft review update "
    "because however although since while unless after before during within across between against about "
    "quickly carefully exactly roughly only also still already never always usually often sometimes maybe "
    "three four five ten twelve fifty hundred thousand percent dollars euros hours minutes days weeks"
)
WORDS = _WORDS_TEXT.split()
SYSTEM_PROMPT_SENTENCES = 8  # per agent; the system prompt repeats in every call of that agent
TOKENS_CAP = 150_000  # stay below the 200k-token tier of tiered prices

DIURNAL = np.array(  # relative traffic per UTC hour (EU and US business hours)
    [
        0.35,
        0.3,
        0.28,
        0.28,
        0.3,
        0.4,
        0.6,
        0.8,
        1.0,
        1.15,
        1.25,
        1.3,
        1.35,
        1.45,
        1.55,
        1.6,
        1.55,
        1.4,
        1.2,
        1.0,
        0.8,
        0.65,
        0.5,
        0.42,
    ]
)
DIURNAL = DIURNAL / DIURNAL.sum()


# --- small vectorised helpers ---------------------------------------------------------------------------------------


def cat(*parts: Any) -> pa.Array:
    """Element-wise string concatenation of arrays and scalars (NULL if any array element is NULL)."""
    return pc.binary_join_element_wise(*parts, "")


def hex_ids(ids: np.ndarray) -> pa.StringArray:
    """uint64 ids (one column: 16 hex characters; two columns: 32) as lowercase big-endian hex, no Python loop."""
    n = ids.shape[0]
    width = 16 * (ids.shape[1] if ids.ndim == 2 else 1)
    data = binascii.hexlify(np.ascontiguousarray(ids.astype(">u8")).tobytes())
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))


def as_str(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def take(values: list[str] | tuple[str, ...] | pa.Array, index: np.ndarray) -> pa.Array:
    source = values if isinstance(values, pa.Array) else pa.array(list(values), pa.string())
    return source.take(pa.array(index, pa.int64()))


def nonzero_ids(rng: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
    ids = rng.integers(1, np.iinfo(np.uint64).max, size=shape, dtype=np.uint64, endpoint=True)
    return ids


def segment_exclusive_cumsum(values: np.ndarray, segment_starts: np.ndarray, segment_of: np.ndarray) -> np.ndarray:
    """Per element, the sum of the preceding elements of its segment (segments are contiguous)."""
    total = np.cumsum(values) - values
    return total - total[segment_starts[segment_of]]


def group_starts(segment_of: np.ndarray, n_segments: int) -> np.ndarray:
    counts = np.bincount(segment_of, minlength=n_segments)
    starts = np.zeros(n_segments, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts


@dataclass(frozen=True)
class Rates:
    """Per-token USD rates per model (index into MODELS), probed from the collector's price table."""

    input: np.ndarray
    cache_read: np.ndarray
    cache_write: np.ndarray
    output: np.ndarray
    reasoning: np.ndarray
    priced: np.ndarray  # bool
    price_model: list[str | None]
    source: str


def probe_rates() -> Rates:
    from collector.pricing import PRICE_SOURCE, Pricer

    pricer = Pricer()
    n = 100_000
    now = time.time_ns()
    out: dict[str, list[float]] = {k: [] for k in ("input", "cache_read", "cache_write", "output", "reasoning")}
    priced, names = [], []
    probes = {
        "input": (n, 0, 0, 0, 0),
        "cache_read": (n, 0, n, 0, 0),
        "cache_write": (n, 0, 0, n, 0),
        "output": (0, n, 0, 0, 0),
        "reasoning": (0, n, 0, 0, n),
    }
    for provider, request_model, response_model, _ in MODELS:
        result = None
        for key, (i, o, cr, cw, r) in probes.items():
            result = pricer.price(
                span_type="llm",
                provider=provider,
                request_model=request_model,
                response_model=response_model,
                input_tokens=i,
                output_tokens=o,
                cache_read_tokens=cr,
                cache_write_tokens=cw,
                reasoning_tokens=r,
                start_time_unix_nano=now,
                reported_cost_usd=None,
                reported_cost_source=None,
            )
            out[key].append((result.cost_usd or 0.0) / n)
        assert result is not None
        priced.append(result.cost_status == "computed")
        names.append(result.price_model)
    return Rates(**{k: np.array(v) for k, v in out.items()}, priced=np.array(priced), price_model=names,
                 source=PRICE_SOURCE)  # fmt: skip


class Text:
    """A pool of random sentences; span texts are random runs of them (JSON-safe: letters, digits, '(). ')."""

    def __init__(self, rng: np.random.Generator, n_sentences: int = 131_072) -> None:
        self.rng = rng
        words = pa.array(WORDS, pa.string())
        lengths = rng.integers(5, 21, n_sentences)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        word_idx = rng.integers(0, len(WORDS), int(offsets[-1]))
        sentences = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), words.take(pa.array(word_idx))), " ")
        refs = as_str(rng.integers(1000, 10000, n_sentences))
        self.pool = pc.utf8_capitalize(cat(sentences, " (ref ", refs, ")."))
        self.mean_len = float(np.mean(pc.utf8_length(self.pool).to_numpy()))

    def runs(self, n_sentences: np.ndarray) -> pa.Array:
        """One text per row, of n_sentences[i] random sentences."""
        offsets = np.concatenate([[0], np.cumsum(n_sentences)]).astype(np.int32)
        idx = self.rng.integers(0, len(self.pool), int(offsets[-1]))
        return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), self.pool.take(pa.array(idx))), " ")

    def words(self, n_words: np.ndarray) -> pa.Array:
        offsets = np.concatenate([[0], np.cumsum(n_words)]).astype(np.int32)
        idx = self.rng.integers(0, len(WORDS), int(offsets[-1]))
        return pc.binary_join(
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(WORDS, pa.string()).take(pa.array(idx))), " "
        )


@dataclass
class Context:
    rng: np.random.Generator
    text: Text
    rates: Rates
    system_prompts: pa.Array  # one per agent
    resources: pa.Array  # one per (service, environment)
    received_base_ns: int
    patterns: np.random.Generator  # detector patterns (loops) draw here, leaving `rng`'s stream as in version 1


def make_context(seed: int) -> Context:
    rng = np.random.default_rng(seed)
    text = Text(rng)
    system_prompts = cat(
        "You are ",
        pa.array([a[0] for a in AGENTS]),
        ", a careful assistant for Acme Corp. ",
        text.runs(np.full(len(AGENTS), SYSTEM_PROMPT_SENTENCES)),
    )
    resources = []
    for environment in ("production", "staging"):
        for i, service in enumerate(SERVICES):
            resources.append(
                json.dumps(
                    {
                        "service.name": service,
                        "service.version": SERVICE_VERSIONS[i],
                        "service.namespace": "acme",
                        "deployment.environment.name": environment,
                        "telemetry.sdk.language": "python",
                        "telemetry.sdk.name": "opentelemetry",
                        "telemetry.sdk.version": "1.38.0",
                        "host.name": f"{service}-{environment[:4]}-7c9f6d-{i}x2k",
                        "process.runtime.name": "cpython",
                        "process.runtime.version": "3.12.7",
                        "process.pid": 4000 + i,
                        "k8s.namespace.name": f"agents-{environment}",
                    },
                    separators=(",", ":"),
                )
            )
    patterns = np.random.default_rng([seed, 0x100B])
    return Context(rng, text, probe_rates(), system_prompts, pa.array(resources), time.time_ns(), patterns)


# --- one batch of traces ----------------------------------------------------------------------------------------------


def _trace_shapes(rng: np.random.Generator, n: int, forced_turns: np.ndarray | None) -> dict[str, np.ndarray]:
    """Trace- and turn-level structure (no strings yet) and the span count of every trace."""
    turns = forced_turns if forced_turns is not None else np.minimum(1 + rng.geometric(0.3, n), MAX_TURNS)
    retr = rng.random(n) < 0.4
    guard = (rng.random(n) < 0.3) | (turns == 1)
    sub = turns > 8
    # turn level
    t_trace = np.repeat(np.arange(n), turns)
    t_first = group_starts(t_trace, n)
    j = np.arange(len(t_trace)) - t_first[t_trace]
    last = j == turns[t_trace] - 1
    wrap = rng.random(len(t_trace)) < 0.05
    tools = np.where(last, 0, rng.choice([1, 1, 1, 2, 2, 3], len(t_trace)))
    gstart = sub[t_trace] & (j % GROUP_TURNS == 0)
    per_turn = gstart.astype(np.int64) + wrap + 1 + tools
    spans = 1 + retr + guard + np.bincount(t_trace, weights=per_turn, minlength=n).astype(np.int64)
    return {
        "turns": turns, "retr": retr, "guard": guard, "sub": sub, "spans": spans,
        "t_trace": t_trace, "j": j, "last": last, "wrap": wrap, "tools": tools, "gstart": gstart, "per_turn": per_turn,
    }  # fmt: skip


def build_batch(
    ctx: Context,
    quota: int,
    day_start: int,
    day_span: int,
    *,
    forced_turns: np.ndarray | None = None,
    caps: np.ndarray | None = None,
    starts: np.ndarray | None = None,
    last_day: bool = False,
) -> pa.Table:
    """Exactly `quota` spans of whole traces (the last one cut short), or the forced traces cut at `caps`."""
    rng = ctx.rng
    if forced_turns is None:
        n_guess = int(quota / 9.0 * 1.3) + 16
        shape = _trace_shapes(rng, n_guess, None)
        cum = np.cumsum(shape["spans"])
        while cum[-1] < quota:  # pragma: no cover - the guess is generous
            n_guess *= 2
            shape = _trace_shapes(rng, n_guess, None)
            cum = np.cumsum(shape["spans"])
        n = int(np.searchsorted(cum, quota)) + 1
        caps = shape["spans"][:n].copy()
        caps[-1] = quota - (cum[n - 2] if n > 1 else 0)
        keep_turns = shape["t_trace"] < n
        for key in ("turns", "retr", "guard", "sub", "spans"):
            shape[key] = shape[key][:n]
        for key in ("t_trace", "j", "last", "wrap", "tools", "gstart", "per_turn"):
            shape[key] = shape[key][keep_turns]
    else:
        n = len(forced_turns)
        shape = _trace_shapes(rng, n, forced_turns)
        assert caps is not None
    assert caps is not None
    turns, retr, guard, sub = shape["turns"], shape["retr"], shape["guard"], shape["sub"]
    t_trace, j, last, wrap, tools, gstart = (shape[k] for k in ("t_trace", "j", "last", "wrap", "tools", "gstart"))
    n_turns = len(t_trace)

    # --- trace level: who, what, when -------------------------------------------------------------------------------
    agent_w = np.array([a[2] for a in AGENTS])
    agent = rng.choice(len(AGENTS), n, p=agent_w / agent_w.sum())
    service = np.array([a[1] for a in AGENTS])[agent]
    env = (rng.random(n) < 0.06).astype(np.int64)  # 6 % staging
    model_w = np.array([m[3] for m in MODELS])
    model = rng.choice(len(MODELS), n, p=model_w / model_w.sum())  # the run's main model
    # sessions of 1-10 consecutive traces of one user, minutes apart
    sess_len = np.minimum(rng.geometric(0.35, n), 10)
    sess_of = np.repeat(np.arange(n), sess_len)[:n]
    sess_first = group_starts(sess_of, n)
    pos_in_sess = np.arange(n) - sess_first[sess_of]
    heavy = (np.minimum(rng.zipf(1.3, n), N_USERS) - 1) * 7919 % N_USERS  # a few heavy users, scattered ids
    user = np.where(rng.random(n) < 0.5, heavy, rng.integers(0, N_USERS, n))[sess_of]
    session_ids = nonzero_ids(rng, n)[sess_of]
    if starts is None:
        hour = rng.choice(24, n, p=DIURNAL)
        sess_start = day_start + hour * 3_600_000_000_000 + rng.integers(0, 3_600_000_000_000, n)
        sess_start = np.minimum(sess_start, day_start + day_span - 600_000_000_000)
        gap = rng.integers(30_000, 400_000, n) * MS
        starts = sess_start[sess_of] + pos_in_sess * gap[sess_of]
        if last_day:  # nothing starts after the end of the data (spills past other midnights are real)
            starts = np.minimum(starts, day_start + day_span - rng.integers(1, 300_000, n) * MS)
    trace_hi, trace_lo = nonzero_ids(rng, n), nonzero_ids(rng, n)
    root_id = nonzero_ids(rng, n)

    # --- turn level: model calls ------------------------------------------------------------------------------------
    model_p = model_w / model_w.sum()
    llm_model = np.where(rng.random(n_turns) < 0.8, model[t_trace], rng.choice(len(MODELS), n_turns, p=model_p))
    provider_of = np.array([m[0] for m in MODELS])
    llm_error = rng.random(n_turns) < 0.012
    sys_tokens = rng.integers(350, 1800, n)[t_trace]
    input_tokens = np.minimum(
        (sys_tokens + j * rng.integers(400, 2500, n_turns) + rng.integers(30, 600, n_turns)).astype(np.int64),
        TOKENS_CAP,
    )
    cache_read = np.where((j > 0) & (rng.random(n_turns) < 0.7), (input_tokens * rng.uniform(0.3, 0.9, n_turns)), 0)
    cache_read = cache_read.astype(np.int64)
    is_anthropic = provider_of[llm_model] == "anthropic"
    cache_write = np.where(is_anthropic & (j == 0) & (rng.random(n_turns) < 0.5), sys_tokens, 0).astype(np.int64)
    output_tokens = np.where(last, rng.integers(120, 1800, n_turns), rng.integers(18, 320, n_turns)).astype(np.int64)
    model_name = np.array([m[1] for m in MODELS])[llm_model]
    reasoning_share = np.select(
        [
            model_name == "o4-mini",
            np.char.startswith(model_name.astype(str), "gemini-2.5"),
            model_name == "claude-sonnet-4-5",
        ],
        [0.6, 0.3, 0.25],
        0.0,
    )  # fmt: skip
    thinks = (reasoning_share > 0) & ((model_name == "o4-mini") | (rng.random(n_turns) < 0.5))
    reasoning = np.where(thinks, (output_tokens * reasoning_share * 1.5).astype(np.int64), 0)
    output_tokens = output_tokens + reasoning
    r = ctx.rates
    input_cost = (
        (input_tokens - cache_read - cache_write) * r.input[llm_model]
        + cache_read * r.cache_read[llm_model]
        + cache_write * r.cache_write[llm_model]
    )
    output_cost = (output_tokens - reasoning) * r.output[llm_model] + reasoning * r.reasoning[llm_model]
    priced = r.priced[llm_model] & ~llm_error
    llm_dur = (rng.integers(180, 900, n_turns) + output_tokens * rng.uniform(6, 22, n_turns)).astype(np.int64) * MS
    llm_dur = np.where(llm_error, rng.integers(40, 400, n_turns) * MS, llm_dur)

    # --- tool level -------------------------------------------------------------------------------------------------
    v_turn = np.repeat(np.arange(n_turns), tools)
    v_first = group_starts(v_turn, n_turns)
    v_k = np.arange(len(v_turn)) - v_first[v_turn]
    v_tool = (rng.integers(0, len(TOOLS), len(v_turn)) + agent[t_trace][v_turn] * 3) % len(TOOLS)
    v_error = rng.random(len(v_turn)) < 0.015
    # loop traces: the first few tool calls of the trace (across turns) become copies of its first one
    v_trace = t_trace[v_turn]
    v_trace_first = group_starts(v_trace, n)[v_trace]
    v_in_trace = np.arange(len(v_turn)) - v_trace_first
    looping = ctx.patterns.random(n) < LOOP_TRACE_SHARE
    loop_calls = ctx.patterns.integers(LOOP_CALLS[0], LOOP_CALLS[1] + 1, n)
    enough = np.bincount(v_trace, minlength=n) >= LOOP_CALLS[0]
    looped = (looping & enough)[v_trace] & (v_in_trace < loop_calls[v_trace])
    v_tool = np.where(looped, v_tool[v_trace_first], v_tool)
    loop_source = pa.array(np.where(looped, v_trace_first, np.arange(len(v_turn))))
    v_dur = np.where(v_error, rng.integers(5000, 30000, len(v_turn)), rng.lognormal(5.3, 1.0, len(v_turn)))
    v_dur = (np.minimum(v_dur, 60_000) * MS).astype(np.int64)
    tools_block = np.bincount(v_turn, weights=v_dur + 3 * MS, minlength=n_turns).astype(np.int64)

    # --- times ------------------------------------------------------------------------------------------------------
    retr_dur = rng.integers(40, 450, n) * MS
    guard_dur = rng.integers(60, 350, n) * MS
    trace_base = 10 * MS + retr * retr_dur
    llm_block = llm_dur + wrap * 4 * MS
    turn_total = gstart * 2 * MS + llm_block + 3 * MS + tools_block + 2 * MS
    t_first = group_starts(t_trace, n)
    turn_off = trace_base[t_trace] + segment_exclusive_cumsum(turn_total, t_first, t_trace)
    ts = starts[t_trace] + turn_off + gstart * MS  # where the turn's first span starts
    turn_end = ts + llm_block + 3 * MS + tools_block
    turns_end = starts + trace_base + np.bincount(t_trace, weights=turn_total, minlength=n).astype(np.int64)
    guard_start = turns_end + 2 * MS
    root_end = np.where(guard, guard_start + guard_dur, turns_end) + rng.integers(3, 40, n) * MS
    v_start = ts[v_turn] + llm_block[v_turn] + 3 * MS + segment_exclusive_cumsum(v_dur + 3 * MS, v_first, v_turn)

    # sub-agent groups: one per GROUP_TURNS turns of a long run
    g_turn = np.flatnonzero(gstart)
    g_of_turn = np.cumsum(gstart) - 1  # valid only where sub[t_trace]
    g_last_turn = np.append(g_turn[1:] - 1, n_turns - 1)
    # a group ends at its trace's last turn at the latest
    trace_last_turn = t_first + turns - 1
    g_last_turn = np.minimum(g_last_turn, trace_last_turn[t_trace[g_turn]])
    g_id = nonzero_ids(rng, len(g_turn))
    wrap_id = nonzero_ids(rng, n_turns)  # used only where wrap
    llm_id = nonzero_ids(rng, n_turns)
    turn_parent = np.where(sub[t_trace], g_id[np.maximum(g_of_turn, 0)] if len(g_id) else 0, root_id[t_trace])

    # --- order within the trace, for cutting the last trace short -----------------------------------------------------
    turn_seq0 = 1 + retr[t_trace] + segment_exclusive_cumsum(shape["per_turn"], t_first, t_trace)
    seq_llm = turn_seq0 + gstart + wrap

    # --- errors that reach the root -----------------------------------------------------------------------------------
    trace_llm_err = np.bincount(t_trace, weights=llm_error.astype(np.float64), minlength=n) > 0
    trace_tool_err = np.bincount(t_trace[v_turn], weights=v_error.astype(np.float64), minlength=n) > 0
    root_err = (trace_llm_err | trace_tool_err) & (rng.random(n) < 0.5)
    root_err_type = np.where(trace_llm_err, 0, 1)

    text = ctx.text
    tables: list[pa.Table] = []

    def emit(rows_trace: np.ndarray, seq: np.ndarray, columns: dict[str, Any]) -> None:
        keep = seq < caps[rows_trace]
        if not keep.all():
            idx = pa.array(np.flatnonzero(keep))
            columns = {
                k: v.take(idx) if isinstance(v, pa.Array) else v[keep] if isinstance(v, np.ndarray) else v
                for k, v in columns.items()
            }
            rows_trace = rows_trace[keep]
        n_rows = len(rows_trace)
        if n_rows == 0:
            return
        columns["trace_id"] = trace_hex.take(pa.array(rows_trace))
        columns["service_name"] = take(SERVICES, service[rows_trace])
        columns["environment"] = take(("production", "staging"), env[rows_trace])
        columns["resource"] = ctx.resources.take(pa.array(service[rows_trace] + env[rows_trace] * len(SERVICES)))
        end = columns["end_time_unix_nano"]
        columns["received_at_unix_nano"] = end + rng.integers(50, 5000, n_rows) * MS
        arrays = []
        for field in SPAN_SCHEMA:
            value = columns.get(field.name)
            if value is None:
                arrays.append(pa.nulls(n_rows, field.type))
            elif isinstance(value, str | int | bool):
                arrays.append(pa.repeat(pa.scalar(value, field.type), n_rows))
            elif isinstance(value, np.ndarray):
                arrays.append(pa.array(value, field.type))
            else:
                arrays.append(value.cast(field.type) if value.type != field.type else value)
        tables.append(pa.Table.from_arrays(arrays, schema=SPAN_SCHEMA))

    trace_hex = hex_ids(np.stack([trace_hi, trace_lo], axis=1))
    user_str = cat("user-", pc.utf8_lpad(as_str(user), 5, "0"))
    session_str = cat("sess-", hex_ids(session_ids))
    agent_names = take([a[0] for a in AGENTS], agent)
    first_user_msg = text.runs(rng.integers(1, 5, n))

    # --- root (agent) spans -------------------------------------------------------------------------------------------
    root_model = model
    root_attrs = cat(
        '{"gen_ai.operation.name":"invoke_agent","gen_ai.agent.name":"', agent_names,
        '","gen_ai.agent.id":"agent-', as_str(agent), '","gen_ai.agent.description":"',
        take([f"{a[0].replace('-', ' ')} for the Acme {SERVICES[a[1]]}" for a in AGENTS], agent),
        '","gen_ai.provider.name":"', take(provider_of, root_model),
        '","gen_ai.request.model":"', take([m[1] for m in MODELS], root_model),
        '","gen_ai.conversation.id":"', session_str, '","user.id":"', user_str, '","session.id":"', session_str,
        '","app.request_id":"req-', hex_ids(nonzero_ids(rng, n)),
        '","app.tenant":"tenant-', as_str(user % 97), '","app.plan":"', take(("free", "pro", "enterprise"), user % 3),
        '","http.route":"/v1/agents/', agent_names, '/run","gen_ai.aggregated_usage.input_tokens":',
        as_str(np.bincount(t_trace, weights=input_tokens, minlength=n).astype(np.int64)),
        ',"gen_ai.aggregated_usage.output_tokens":',
        as_str(np.bincount(t_trace, weights=output_tokens, minlength=n).astype(np.int64)), "}",
    )  # fmt: skip
    err_types = ("RateLimitError", "TimeoutError")
    err_msgs = (
        RATE_LIMIT_MESSAGE,
        "Tool call exceeded its 30 s deadline",
    )
    root_err_type_str = pc.if_else(pa.array(root_err), take(err_types, root_err_type), pa.nulls(n, pa.string()))
    root_err_msg = pc.if_else(pa.array(root_err), take(err_msgs, root_err_type), pa.nulls(n, pa.string()))
    emit(
        np.arange(n),
        np.zeros(n, np.int64),
        {
            "project": PROJECT,
            "span_id": hex_ids(root_id),
            "name": cat("invoke_agent ", agent_names),
            "kind": "INTERNAL",
            "span_type": "agent",
            "scope_name": "opentelemetry.instrumentation.openai_agents",
            "scope_version": "0.4.1",
            "start_time_unix_nano": starts,
            "end_time_unix_nano": root_end,
            "status_code": take(("UNSET", "ERROR"), root_err.astype(np.int64)),
            "status_message": pc.if_else(pa.array(root_err), root_err_msg, ""),
            "provider": take(provider_of, root_model),
            "request_model": take([m[1] for m in MODELS], root_model),
            "cost_status": "no_usage",
            "user_id": user_str,
            "session_id": session_str,
            "agent_name": agent_names,
            "error_type": root_err_type_str,
            "error_message": root_err_msg,
            "is_error": root_err,
            "input_messages": cat('[{"role":"user","parts":[{"type":"text","content":"', first_user_msg, '"}]}]'),
            "attributes": root_attrs,
            "events": "[]",
            "links": "[]",
            "dropped_attributes_count": 0,
            "flags": 1,
            "dropped_events_count": 0,
            "dropped_links_count": 0,
            "scope_attributes": "{}",
        },
    )

    # --- retriever and guardrail spans --------------------------------------------------------------------------------
    r_tr = np.flatnonzero(retr)
    if len(r_tr):
        r_start = starts[r_tr] + 5 * MS
        k = rng.integers(3, 9, len(r_tr))
        emit(
            r_tr,
            np.ones(len(r_tr), np.int64),
            {
                "project": PROJECT,
                "span_id": hex_ids(nonzero_ids(rng, len(r_tr))),
                "parent_span_id": hex_ids(root_id[r_tr]),
                "name": "retrieve knowledge_base",
                "kind": "INTERNAL",
                "span_type": "retriever",
                "scope_name": "openinference.instrumentation.llama_index",
                "scope_version": "4.3.0",
                "start_time_unix_nano": r_start,
                "end_time_unix_nano": r_start + retr_dur[r_tr],
                "status_code": "OK",
                "status_message": "",
                "cost_status": "not_applicable",
                "is_error": False,
                "attributes": cat(
                    '{"openinference.span.kind":"RETRIEVER","input.value":"',
                    text.words(rng.integers(4, 12, len(r_tr))),
                    '","retrieval.top_k":',
                    as_str(k),
                    ',"retrieval.documents.count":',
                    as_str(k),
                    ',"db.system":"qdrant","db.collection.name":"kb-',
                    take(SERVICES, service[r_tr]),
                    '","retrieval.documents.0.document.id":"doc-',
                    as_str(rng.integers(1000, 999999, len(r_tr))),
                    '","retrieval.documents.0.document.content":"',
                    text.runs(rng.integers(2, 6, len(r_tr))),
                    '","retrieval.documents.0.document.score":0.8',
                    as_str(rng.integers(10, 99, len(r_tr))),
                    "}",
                ),
                "events": "[]",
                "links": "[]",
                "dropped_attributes_count": 0,
                "flags": 1,
                "dropped_events_count": 0,
                "dropped_links_count": 0,
                "scope_attributes": "{}",
            },
        )
    g_tr = np.flatnonzero(guard)
    if len(g_tr):
        blocked = rng.random(len(g_tr)) < 0.03
        emit(
            g_tr,
            shape["spans"][g_tr] - 1,
            {
                "project": PROJECT,
                "span_id": hex_ids(nonzero_ids(rng, len(g_tr))),
                "parent_span_id": hex_ids(root_id[g_tr]),
                "name": "guardrail output_policy",
                "kind": "INTERNAL",
                "span_type": "guardrail",
                "scope_name": "guardrails.telemetry",
                "scope_version": "0.6.2",
                "start_time_unix_nano": guard_start[g_tr],
                "end_time_unix_nano": guard_start[g_tr] + guard_dur[g_tr],
                "status_code": "OK",
                "status_message": "",
                "cost_status": "not_applicable",
                "is_error": False,
                "attributes": cat(
                    '{"guardrail.name":"output_policy","guardrail.validators":["toxic_language","pii","competitor_check"]'
                    ',"guardrail.action":"',
                    take(("pass", "block"), blocked.astype(np.int64)),
                    '","guardrail.score":0.',
                    as_str(rng.integers(100, 999, len(g_tr))),
                    ',"guardrail.reason":"',
                    pc.if_else(pa.array(blocked), "pii detected in output", ""),
                    '","guardrail.on":"output","guardrail.latency_ms":',
                    as_str(guard_dur[g_tr] // MS),
                    "}",
                ),
                "events": "[]",
                "links": "[]",
                "dropped_attributes_count": 0,
                "flags": 1,
                "dropped_events_count": 0,
                "dropped_links_count": 0,
                "scope_attributes": "{}",
            },
        )

    # --- sub-agent spans ----------------------------------------------------------------------------------------------
    if len(g_turn):
        sa_tr = t_trace[g_turn]
        g_agent = take(SUB_AGENTS, (np.arange(len(g_turn)) + agent[sa_tr]) % len(SUB_AGENTS))
        emit(
            sa_tr,
            turn_seq0[g_turn],
            {
                "project": PROJECT,
                "span_id": hex_ids(g_id),
                "parent_span_id": hex_ids(root_id[sa_tr]),
                "name": cat("invoke_agent ", g_agent),
                "kind": "INTERNAL",
                "span_type": "agent",
                "scope_name": "opentelemetry.instrumentation.openai_agents",
                "scope_version": "0.4.1",
                "start_time_unix_nano": ts[g_turn] - MS,
                "end_time_unix_nano": turn_end[g_last_turn] + MS,
                "status_code": "UNSET",
                "status_message": "",
                "cost_status": "no_usage",
                "session_id": session_str.take(pa.array(sa_tr)),
                "agent_name": g_agent,
                "is_error": False,
                "attributes": cat(
                    '{"gen_ai.operation.name":"invoke_agent","gen_ai.agent.name":"',
                    g_agent,
                    '","gen_ai.agent.id":"sub-',
                    as_str(np.arange(len(g_turn)) % 97),
                    '","gen_ai.conversation.id":"',
                    session_str.take(pa.array(sa_tr)),
                    '","agent.handoff.from":"',
                    agent_names.take(pa.array(sa_tr)),
                    '","agent.max_turns":',
                    str(GROUP_TURNS),
                    "}",
                ),
                "events": "[]",
                "links": "[]",
                "dropped_attributes_count": 0,
                "flags": 1,
                "dropped_events_count": 0,
                "dropped_links_count": 0,
                "scope_attributes": "{}",
            },
        )

    # --- llm spans (and their LangChain-style wrappers) ---------------------------------------------------------------
    provider = take(provider_of, llm_model)
    req_model = take([m[1] for m in MODELS], llm_model)
    resp_model = take([m[2] for m in MODELS], llm_model)
    prov_idx = np.searchsorted(np.array(sorted(PROVIDER_INFO)), provider_of[llm_model])
    pinfo = [PROVIDER_INFO[p] for p in sorted(PROVIDER_INFO)]
    response_id = cat(take([p[3] for p in pinfo], prov_idx), hex_ids(nonzero_ids(rng, n_turns))[:])
    first_tool = np.where(tools > 0, v_tool[np.minimum(v_first, max(len(v_tool) - 1, 0))] if len(v_tool) else 0, 0)
    tool_name_first = take([t[0] for t in TOOLS], first_tool)
    llm_id_hex = hex_ids(llm_id)
    n_hist = np.minimum(1 + 2 * j, 18) + rng.integers(0, 3, n_turns)
    history = text.runs(n_hist)
    call_ids = hex_ids(nonzero_ids(rng, n_turns))
    sys_msg = ctx.system_prompts.take(pa.array(agent[t_trace]))
    user_msg = first_user_msg.take(pa.array(t_trace))
    input_messages = cat(
        '[{"role":"system","parts":[{"type":"text","content":"', sys_msg,
        '"}]},{"role":"user","parts":[{"type":"text","content":"', user_msg, '"}]}',
        pc.if_else(
            pa.array(j > 0),
            cat(
                ',{"role":"assistant","parts":[{"type":"tool_call","id":"call_', call_ids,
                '","name":"', tool_name_first,
                '","arguments":{"query":"', text.words(rng.integers(3, 8, n_turns)),
                '"}}]},{"role":"tool","parts":[{"type":"tool_call_response","id":"call_', call_ids,
                '","response":"', history, '"}]}',
            ),
            "",
        ),
        "]",
    )  # fmt: skip
    content_filter = last & (rng.random(n_turns) < 0.004)
    finish = np.where(last, np.where(content_filter, 2, 0), 1)
    finish_str = take(("stop", "tool_calls", "content_filter"), finish)
    answer = text.runs(np.where(last, rng.integers(2, 9, n_turns), 1))
    output_messages = pc.if_else(
        pa.array(last),
        cat('[{"role":"assistant","parts":[{"type":"text","content":"', answer, '"}],"finish_reason":"', finish_str,
            '"}]'),
        cat('[{"role":"assistant","parts":[{"type":"tool_call","id":"call_', llm_id_hex,
            '0","name":"', tool_name_first, '","arguments":{"query":"', text.words(rng.integers(3, 8, n_turns)),
            '"}}],"finish_reason":"tool_calls"}]'),
    )  # fmt: skip
    temp = take(("0", "0.2", "0.7", "1"), rng.integers(0, 4, n_turns))
    prompt_versioned = rng.random(n) < 0.35
    prompt_name = pc.if_else(
        pa.array(prompt_versioned[t_trace]), cat(take([a[0] for a in AGENTS], agent[t_trace]), "-system"), None
    )
    prompt_version = pc.if_else(
        pa.array(prompt_versioned[t_trace]), cat("v", as_str(3 + (starts[t_trace] // (7 * NS_PER_DAY)) % 9)), None
    )
    tok_in, tok_out = as_str(input_tokens), as_str(output_tokens)
    llm_attrs = cat(
        '{"gen_ai.operation.name":"chat","gen_ai.provider.name":"', provider, '","gen_ai.request.model":"', req_model,
        '","gen_ai.response.model":"', resp_model, '","gen_ai.response.id":"', response_id,
        '","gen_ai.request.temperature":', temp, ',"gen_ai.request.max_tokens":4096,"gen_ai.request.top_p":1.0',
        ',"gen_ai.usage.input_tokens":', tok_in, ',"gen_ai.usage.output_tokens":', tok_out,
        ',"gen_ai.usage.cache_read.input_tokens":', as_str(cache_read),
        ',"gen_ai.usage.cache_creation.input_tokens":', as_str(cache_write),
        ',"gen_ai.usage.reasoning.output_tokens":', as_str(reasoning),
        ',"gen_ai.response.finish_reasons":["', finish_str, '"],"gen_ai.conversation.id":"',
        session_str.take(pa.array(t_trace)), '","gen_ai.output.type":"text","server.address":"',
        take([p[2] for p in pinfo], prov_idx), '","server.port":443,"http.request.method":"POST"',
        ',"gen_ai.request.stream":false,"gen_ai.openai.request.service_tier":"auto","app.step":', as_str(j),
        ',"app.run_id":"', hex_ids(nonzero_ids(rng, n_turns)), '"}',
    )  # fmt: skip
    llm_seq = seq_llm
    err_mask = pa.array(llm_error)
    nul_i = pa.nulls(n_turns, pa.int64())

    def tokens(v: np.ndarray) -> pa.Array:
        return pc.if_else(err_mask, nul_i, pa.array(v))

    cost_cols = {
        "cost_usd": pc.if_else(pa.array(priced), pa.array(input_cost + output_cost), None),
        "input_cost_usd": pc.if_else(pa.array(priced), pa.array(input_cost), None),
        "output_cost_usd": pc.if_else(pa.array(priced), pa.array(output_cost), None),
        "cost_status": take(("computed", "unknown_model", "no_usage"), np.where(llm_error, 2, np.where(priced, 0, 1))),
        "cost_source": pc.if_else(pa.array(priced), r.source, None),
        "price_model": pc.if_else(pa.array(priced), take([p or "" for p in r.price_model], llm_model), None),
    }
    exc_event = cat(
        '[{"name":"exception","time_unix_nano":', as_str(ts + llm_dur), ',"attributes":{"exception.type":'
        '"RateLimitError","exception.message":"Error code: 429 - Rate limit reached for ', req_model,
        ' in organization org-acme on tokens per min (TPM): Limit 800000, Used 799412","exception.escaped":"False"}}]',
    )  # fmt: skip
    llm_common = {
        "project": PROJECT,
        "span_type": "llm",
        "provider": provider,
        "request_model": req_model,
        "response_model": pc.if_else(err_mask, None, resp_model),
        "input_tokens": tokens(input_tokens),
        "output_tokens": tokens(output_tokens),
        "cache_read_tokens": tokens(cache_read),
        "cache_write_tokens": tokens(cache_write),
        "reasoning_tokens": tokens(reasoning),
        "total_tokens": tokens(input_tokens + output_tokens),
        **cost_cols,
        "session_id": session_str.take(pa.array(t_trace)),
        "prompt_name": prompt_name,
        "prompt_version": prompt_version,
        "finish_reason": pc.if_else(err_mask, None, finish_str),
        "response_id": pc.if_else(err_mask, None, response_id),
        "error_type": pc.if_else(err_mask, "RateLimitError", None),
        "error_message": pc.if_else(err_mask, RATE_LIMIT_MESSAGE, None),
        "is_error": llm_error,
        "status_code": take(("UNSET", "ERROR"), llm_error.astype(np.int64)),
        "status_message": pc.if_else(err_mask, RATE_LIMIT_MESSAGE, ""),
        "input_messages": input_messages,
        "output_messages": pc.if_else(err_mask, None, output_messages),
        "events": pc.if_else(err_mask, exc_event, "[]"),
        "links": "[]",
        "dropped_attributes_count": 0,
        "flags": 1,
        "dropped_events_count": 0,
        "dropped_links_count": 0,
        "scope_attributes": "{}",
    }
    emit(
        t_trace,
        llm_seq,
        {
            **llm_common,
            "span_id": llm_id_hex,
            "parent_span_id": hex_ids(np.where(wrap, wrap_id, turn_parent)),
            "name": cat("chat ", req_model),
            "kind": "CLIENT",
            "scope_name": take([p[0] for p in pinfo], prov_idx),
            "scope_version": "2.2b0",
            "start_time_unix_nano": ts + wrap * 2 * MS,
            "end_time_unix_nano": ts + wrap * 2 * MS + llm_dur,
            "attributes": llm_attrs,
        },
    )
    w = np.flatnonzero(wrap)
    if len(w):
        wi = pa.array(w)
        wrapped = {k: (v.take(wi) if isinstance(v, pa.Array) else v[w] if isinstance(v, np.ndarray) else v)
                   for k, v in llm_common.items()}  # fmt: skip
        emit(
            t_trace[w],
            llm_seq[w] - 1,
            {
                **wrapped,
                "span_id": hex_ids(wrap_id[w]),
                "parent_span_id": hex_ids(turn_parent[w]),
                "name": take([p[1] for p in pinfo], prov_idx[w]),
                "kind": "INTERNAL",
                "scope_name": "openinference.instrumentation.langchain",
                "scope_version": "0.1.50",
                "start_time_unix_nano": ts[w],
                "end_time_unix_nano": ts[w] + llm_block[w],
                "attributes": cat(
                    '{"openinference.span.kind":"LLM","llm.provider":"',
                    provider.take(wi),
                    '","llm.model_name":"',
                    resp_model.take(wi),
                    '","llm.token_count.prompt":',
                    tok_in.take(wi),
                    ',"llm.token_count.completion":',
                    tok_out.take(wi),
                    ',"llm.token_count.total":',
                    as_str(input_tokens[w] + output_tokens[w]),
                    ',"llm.invocation_parameters":"{\\"temperature\\": ',
                    temp.take(wi),
                    ', \\"max_tokens\\": 4096}","metadata":"{\\"ls_provider\\": \\"',
                    provider.take(wi),
                    '\\", \\"ls_model_type\\": \\"chat\\"}","session.id":"',
                    session_str.take(pa.array(t_trace[w])),
                    '"}',
                ),
            },
        )

    # --- tool spans ---------------------------------------------------------------------------------------------------
    n_v = len(v_turn)
    if n_v:
        v_tr = t_trace[v_turn]
        v_name = take([t[0] for t in TOOLS], v_tool)
        v_arg_key = take([t[1] for t in TOOLS], v_tool)
        v_call = cat("call_", llm_id_hex.take(pa.array(v_turn)), as_str(v_k))
        args = cat(
            '{"',
            v_arg_key,
            '":"',
            text.words(rng.integers(2, 9, n_v)),
            '","limit":',
            as_str(rng.integers(1, 21, n_v)),
            "}",
        )
        n_items = rng.integers(1, 6, n_v)
        items_n = int(n_items.sum())
        items = cat(
            '{"id":"doc-', as_str(rng.integers(100000, 999999, items_n)), '","score":0.',
            as_str(rng.integers(100, 999, items_n)), ',"text":"', text.runs(rng.integers(1, 3, items_n)), '"}',
        )  # fmt: skip
        item_offsets = pa.array(np.concatenate([[0], np.cumsum(n_items)]).astype(np.int32))
        result = cat(
            '{"status":"ok","items":[', pc.binary_join(pa.ListArray.from_arrays(item_offsets, items), ","), "]}"
        )
        if looped.any():  # the same call again: same arguments, same answer
            args, result = args.take(loop_source), result.take(loop_source)
        v_err = pa.array(v_error)
        v_seq = turn_seq0[v_turn] + gstart[v_turn] + wrap[v_turn] + 1 + v_k
        emit(
            v_tr,
            v_seq,
            {
                "project": PROJECT,
                "span_id": hex_ids(nonzero_ids(rng, n_v)),
                "parent_span_id": hex_ids(turn_parent[v_turn]),
                "name": cat("execute_tool ", v_name),
                "kind": "INTERNAL",
                "span_type": "tool",
                "scope_name": "opentelemetry.instrumentation.openai_agents",
                "scope_version": "0.4.1",
                "start_time_unix_nano": v_start,
                "end_time_unix_nano": v_start + v_dur,
                "status_code": take(("UNSET", "ERROR"), v_error.astype(np.int64)),
                "status_message": pc.if_else(v_err, "Tool call exceeded its 30 s deadline", ""),
                "cost_status": "not_applicable",
                "tool_name": v_name,
                "tool_call_id": v_call,
                "tool_arguments": args,
                "tool_result": pc.if_else(v_err, None, result),
                "error_type": pc.if_else(v_err, "TimeoutError", None),
                "error_message": pc.if_else(v_err, "Tool call exceeded its 30 s deadline", None),
                "is_error": v_error,
                "attributes": cat(
                    '{"gen_ai.operation.name":"execute_tool","gen_ai.tool.name":"',
                    v_name,
                    '","gen_ai.tool.call.id":"',
                    v_call,
                    '","gen_ai.tool.type":"function","gen_ai.tool.description":"',
                    text.runs(np.ones(n_v, np.int64)),
                    '","app.tool.timeout_s":30,"app.tool.attempt":1,"code.function.name":"tools.',
                    v_name,
                    '","code.namespace":"acme.agents.tools"}',
                ),
                "events": pc.if_else(
                    v_err,
                    cat(
                        '[{"name":"exception","time_unix_nano":',
                        as_str(v_start + v_dur),
                        ',"attributes":{"exception.type":"TimeoutError","exception.message":"',
                        v_name,
                        ' exceeded its 30 s deadline","exception.escaped":"False"}}]',
                    ),
                    "[]",
                ),
                "links": "[]",
                "dropped_attributes_count": 0,
                "flags": 1,
                "dropped_events_count": 0,
                "dropped_links_count": 0,
                "scope_attributes": "{}",
            },
        )
    return pa.concat_tables(tables)


# --- days, parts, the whole lake ------------------------------------------------------------------------------------


def sort_compacted(table: pa.Table) -> pa.Table:
    order = pc.sort_indices(
        table.select(["trace_id", "start_time_unix_nano"]),
        sort_keys=[("trace_id", "ascending"), ("start_time_unix_nano", "ascending")],
    )
    return table.take(order)


def day_quotas(total: int, dates: list[dt.date], rng: np.random.Generator) -> np.ndarray:
    weights = np.array([(0.6 if d.weekday() >= 5 else 1.0) * (1 + 0.01 * i) for i, d in enumerate(dates)])
    weights *= rng.uniform(0.92, 1.08, len(dates))
    quotas = np.floor(total * weights / weights.sum()).astype(np.int64)
    quotas[-1] += total - quotas.sum()
    return quotas


def generate(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    lake_root = out / "lake"
    marker = out / MARKER
    wanted = {"spans": args.spans, "days": args.days, "seed": args.seed, "version": GENERATOR_VERSION}
    if marker.exists() and not args.force:
        info = json.loads(marker.read_text())
        if all(info.get(k) == v for k, v in wanted.items()):
            print(f"reusing {lake_root} ({info['spans']:,} spans, generated {info['generated_at']})")
            return info
    if lake_root.exists():
        shutil.rmtree(lake_root)
    marker.unlink(missing_ok=True)
    started = time.monotonic()
    ctx = make_context(args.seed)
    lake = Lake(lake_root, writer_id="lakegen")
    end = dt.date.fromisoformat(args.end_date) if args.end_date else dt.datetime.now(dt.UTC).date()
    dates = [end - dt.timedelta(days=args.days - 1 - i) for i in range(args.days)]
    big = list(BIG_TRACE_SPANS) if args.spans >= BIG_TRACES_FROM else []
    quotas = day_quotas(args.spans - sum(big), dates, ctx.rng)
    big_day = {len(dates) // 6 * (i + 1) % len(dates): size for i, size in enumerate(big)}
    now_ns = time.time_ns()
    spill: pa.Table | None = None
    parts = fresh_parts = 0
    written = 0
    for di, day in enumerate(dates):
        day_start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1_000_000_000
        day_span = NS_PER_DAY
        if di == len(dates) - 1 and day_start <= now_ns < day_start + NS_PER_DAY:
            day_span = max(now_ns - day_start, 2 * 3_600_000_000_000)
        quota = int(quotas[di])
        n_chunks = max(1, -(-quota // args.part_spans))
        chunks: list[pa.Table] = []
        for ci in range(n_chunks):
            q = quota // n_chunks + (1 if ci < quota % n_chunks else 0)
            chunks.append(build_batch(ctx, q, day_start, day_span, last_day=di == len(dates) - 1))
        if di in big_day:
            size = big_day[di]
            turns = np.array([size // 2 + 20])  # ~2.9 spans per turn: enough to cut at exactly `size`
            chunks[0] = pa.concat_tables(
                [chunks[0], build_batch(ctx, size, day_start, day_span, forced_turns=turns, caps=np.array([size]),
                                        starts=np.array([day_start + 2 * 3_600_000_000_000 + di * 60_000_000_000]))]
            )  # fmt: skip
        if spill is not None:
            chunks[0] = pa.concat_tables([spill, chunks[0]])
            spill = None
        next_day = day_start + NS_PER_DAY
        fresh: pa.Table | None = None
        for ci, chunk in enumerate(chunks):
            starts = chunk.column("start_time_unix_nano")
            late = pc.greater_equal(starts, next_day)
            if pc.any(late).as_py():
                moved = chunk.filter(late)
                spill = moved if spill is None else pa.concat_tables([spill, moved])
                chunk = chunk.filter(pc.invert(late))
            if di == len(dates) - 1 and ci == len(chunks) - 1 and chunk.num_rows > FRESH_SPANS * 2:
                # the newest spans by arrival have not been compacted yet: small parts in arrival order
                by_arrival = pc.sort_indices(chunk, sort_keys=[("received_at_unix_nano", "ascending")])
                chunk_sorted = chunk.take(by_arrival)
                fresh = chunk_sorted.slice(chunk.num_rows - FRESH_SPANS)
                chunk = chunk_sorted.slice(0, chunk.num_rows - FRESH_SPANS)
            lake.publish(
                "spans",
                PROJECT,
                day.isoformat(),
                sort_compacted(chunk),
                {"generator": "bench.lakegen"},
                row_group_rows=COMPACTED_ROW_GROUP_ROWS,
            )
            parts += 1
            written += chunk.num_rows
        if fresh is not None:
            for offset in range(0, fresh.num_rows, FRESH_PART_ROWS):
                lake.publish("spans", PROJECT, day.isoformat(), fresh.slice(offset, FRESH_PART_ROWS), {})
                fresh_parts += 1
            written += fresh.num_rows
        print(
            f"  {day.isoformat()}: {written:>11,} spans so far, {parts + fresh_parts} parts, "
            f"{time.monotonic() - started:6.1f} s",
            flush=True,
        )
    if spill is not None and spill.num_rows:
        day_numbers = spill.column("start_time_unix_nano").to_numpy() // NS_PER_DAY
        for day_number in np.unique(day_numbers).tolist():
            part = spill.filter(pa.array(day_numbers == day_number))
            date = (dt.date(1970, 1, 1) + dt.timedelta(days=day_number)).isoformat()
            lake.publish(
                "spans",
                PROJECT,
                date,
                sort_compacted(part),
                {"generator": "bench.lakegen"},
                row_group_rows=COMPACTED_ROW_GROUP_ROWS,
            )
            parts += 1
            written += part.num_rows
    seconds = time.monotonic() - started
    assert written == args.spans, (written, args.spans)
    info = {
        **wanted,
        "first_date": dates[0].isoformat(),
        "last_date": dates[-1].isoformat(),
        "compacted_parts": parts,
        "fresh_parts": fresh_parts,
        "generate_seconds": round(seconds, 1),
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "big_traces": big,
    }
    marker.write_text(json.dumps(info, indent=2) + "\n")
    return info


def sanity_check(out: Path) -> dict[str, Any]:
    import duckdb

    lake_root = out / "lake"
    files = sorted(lake_root.glob("spans/*/*/*.parquet"))
    size = sum(f.stat().st_size for f in files)
    con = duckdb.connect(config={"threads": 2})
    con.execute("SET enable_progress_bar = false")
    started = time.monotonic()
    glob = str(lake_root / "spans" / "*" / "*" / "*.parquet")
    row = con.execute(
        f"""SELECT count(*), count(DISTINCT trace_id), count(DISTINCT user_id), count(DISTINCT session_id),
                   min(date), max(date), count(DISTINCT date), sum(cost_usd),
                   avg(length(input_messages)) FILTER (WHERE span_type = 'llm'),
                   avg(length(attributes)), count(*) FILTER (WHERE parent_span_id IS NULL)
            FROM read_parquet('{glob}', hive_partitioning = true)"""
    ).fetchone()
    assert row is not None
    types = con.execute(f"SELECT span_type, count(*) FROM read_parquet('{glob}') GROUP BY 1 ORDER BY 2 DESC").fetchall()
    statuses = con.execute(
        f"SELECT cost_status, count(*) FROM read_parquet('{glob}') GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall()
    biggest = con.execute(
        f"SELECT count(*) AS n FROM read_parquet('{glob}') GROUP BY trace_id ORDER BY n DESC LIMIT 6"
    ).fetchall()
    raw = con.execute(
        f"""SELECT sum(total_uncompressed_size), sum(total_compressed_size)
            FROM parquet_metadata('{glob}')"""
    ).fetchone()
    check_seconds = time.monotonic() - started
    con.close()
    return {
        "files": len(files),
        "bytes": size,
        "spans": row[0],
        "traces": row[1],
        "users": row[2],
        "sessions": row[3],
        "dates": f"{row[4]} .. {row[5]} ({row[6]} partitions)",
        "cost_usd": row[7],
        "avg_llm_input_messages_bytes": row[8],
        "avg_attributes_bytes": row[9],
        "roots": row[10],
        "span_types": dict(types),
        "cost_status": dict(statuses),
        "biggest_traces": [b[0] for b in biggest],
        "uncompressed_bytes": raw[0] if raw else None,
        "check_seconds": check_seconds,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans in all (default 1000000)")
    parser.add_argument("--out", default="/tmp/agentflight-bench/1m", help="data directory; the lake is <out>/lake")
    parser.add_argument("--days", type=int, default=30, help="days of data, ending --end-date (default 30)")
    parser.add_argument("--end-date", default=None, help="last day, YYYY-MM-DD (default today, UTC)")
    parser.add_argument("--part-spans", type=int, default=150_000, help="max spans per compacted part (150000)")
    parser.add_argument("--seed", type=int, default=11, help="random seed (default 11)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the marker matches")
    parser.add_argument("--no-check", action="store_true", help="skip the DuckDB sanity check")
    args = parser.parse_args(argv)
    if args.spans < 1_000 or args.days < 1 or args.part_spans < 10_000:
        parser.error("--spans must be >= 1000, --days >= 1, --part-spans >= 10000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = generate(args)
    print(
        f"lake: {args.out}/lake — {info['spans']:,} spans, {info['first_date']} .. {info['last_date']}, "
        f"{info['compacted_parts']} compacted + {info['fresh_parts']} fresh parts, "
        f"generated in {info['generate_seconds']:.1f} s"
    )
    if not args.no_check:
        check = sanity_check(Path(args.out))
        mib = 1024 * 1024
        print(f"  DuckDB check ({check['check_seconds']:.1f} s): {check['spans']:,} spans, {check['traces']:,} traces,")
        print(f"    {check['users']:,} users, {check['sessions']:,} sessions, dates {check['dates']}")
        print(
            f"    on disk {check['bytes'] / mib:,.0f} MiB in {check['files']} files "
            f"({check['bytes'] / check['spans']:,.0f} B/span; uncompressed pages "
            f"{(check['uncompressed_bytes'] or 0) / mib:,.0f} MiB)"
        )
        print(
            f"    avg llm input_messages {check['avg_llm_input_messages_bytes']:,.0f} B, "
            f"avg attributes {check['avg_attributes_bytes']:,.0f} B, total cost ${check['cost_usd']:,.2f}"
        )
        print(f"    span types {check['span_types']}")
        print(f"    cost status {check['cost_status']}")
        print(f"    biggest traces (spans) {check['biggest_traces']}, roots {check['roots']:,}")
        if check["spans"] != info["spans"]:
            print(f"  MISMATCH: {check['spans']:,} spans in the lake, {info['spans']:,} expected")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
