"""Span normalisation (docs/conventions.md §1-§3): one DecodedSpan -> the canonical span columns (type, provider,
models, tokens, reported cost, user/session/agent/tool/prompt, finish reason, errors, environment, messages).

Pure and on the ingest hot path: what the attribute keys alone decide is worked out once per distinct key tuple
(``_Plan``), spans without any GenAI attribute take a short plain path, prefix families (indexed messages,
guardrail, retrieval keys) are looked for only when a rule needs them, JSON is parsed only for content that is
promoted, and message JSON already in canonical form is kept as sent (collector.messages, "canonical message
texts").
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import Any

from collector.messages import INDEXED_FAMILIES as _INDEXED_FAMILIES
from collector.messages import (
    SPAN_CONTENT_KEYS,
    as_text,
    dumps,
    messages_from_log,
    span_messages,
    try_json,
)
from collector.otlp_model import DecodedSpan
from collector.providers import normalise_provider, provider_from_host, provider_from_model
from collector.span_type import AGENT, EMBEDDING, GUARDRAIL, TOOL, KeyFlags, detect_span_type, plain_span_type

__all__ = ["OUTPUT_KEYS", "messages_from_log", "normalise_span"]

logger = logging.getLogger(__name__)

OUTPUT_KEYS: tuple[str, ...] = (
    "span_type",
    "provider",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "total_tokens",
    "reported_cost_usd",
    "reported_cost_source",
    "user_id",
    "session_id",
    "agent_name",
    "tool_name",
    "tool_call_id",
    "tool_arguments",
    "tool_result",
    "prompt_name",
    "prompt_version",
    "finish_reason",
    "response_id",
    "error_type",
    "error_message",
    "is_error",
    "environment",
    "input_messages",
    "output_messages",
    "server_address",
)

# ------------------------------------------------------------------------------------------------ key lists (§1)

_INPUT_TOKEN_KEYS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
    "ai.usage.inputTokens",
    "ai.usage.promptTokens",
    "llm.usage.prompt_tokens",
)
_OUTPUT_TOKEN_KEYS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
    "ai.usage.outputTokens",
    "ai.usage.completionTokens",
    "llm.usage.completion_tokens",
)
_TOTAL_TOKEN_KEYS = (
    "gen_ai.usage.total_tokens",
    "llm.usage.total_tokens",
    "llm.token_count.total",
    "ai.usage.totalTokens",
    "gen_ai.client.token.usage",
)
_CACHE_READ_KEYS = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
    "gen_ai.usage.prompt_tokens_details.cached_tokens",
    "gen_ai.usage.details.cache_read_tokens",
    "ai.usage.cachedInputTokens",
)
_CACHE_WRITE_KEYS = (
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
    "gen_ai.usage.prompt_tokens_details.cache_creation_tokens",
    "gen_ai.usage.details.cache_write_tokens",
)
_REASONING_KEYS = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "llm.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
    "gen_ai.usage.completion_tokens_details.reasoning_tokens",
    "gen_ai.usage.details.reasoning_tokens",
    "ai.usage.reasoningTokens",
)
_TOKEN_KEY_LISTS = (
    _INPUT_TOKEN_KEYS,
    _OUTPUT_TOKEN_KEYS,
    _CACHE_READ_KEYS,
    _CACHE_WRITE_KEYS,
    _REASONING_KEYS,
    _TOTAL_TOKEN_KEYS,
)
_COST_KEYS = ("llm.cost.total", "operation.cost", "gen_ai.usage.cost", "litellm.cost.total")
_LANGFUSE_COST = "langfuse.observation.cost_details"
_LANGFUSE_USAGE = "langfuse.observation.usage_details"
_VERCEL_PROVIDER_METADATA = "ai.response.providerMetadata"

_PROVIDER_KEYS = ("gen_ai.provider.name", "llm.provider", "gen_ai.system", "llm.system", "ai.model.provider")
_REQUEST_MODEL_KEYS = (
    "gen_ai.request.model",
    "llm.request.model_name",
    "ai.model.id",
    "embedding.model_name",
    "reranker.model_name",
    "langfuse.observation.model.name",
)
_RESPONSE_MODEL_KEYS = (
    "gen_ai.response.model",
    "llm.response.model_name",
    "llm.model_name",
    "ai.response.model",
    "langfuse.observation.model.name",
)
_USER_KEYS = (
    "user.id",
    "enduser.id",
    "langfuse.user.id",
    "traceloop.association.properties.user_id",
    "ai.telemetry.metadata.userId",
    "litellm.end_user.id",
    "gen_ai.user.id",
)
_REQUEST_USER_KEYS = ("gen_ai.request.user", "llm.user", "gen_ai.user")  # request `user` params: weakest
_SESSION_KEYS = (
    "session.id",
    "gen_ai.conversation.id",
    "langfuse.session.id",
    "traceloop.association.properties.session_id",
    "ai.telemetry.metadata.sessionId",
    "gen_ai.session.id",
)
_AGENT_KEYS = ("gen_ai.agent.name", "agent.name", "agent_name")
_TOOL_NAME_KEYS = ("gen_ai.tool.name", "tool.name", "ai.toolCall.name", "tool_name")
_TOOL_CALL_ID_KEYS = ("gen_ai.tool.call.id", "tool.id", "tool_call.id", "ai.toolCall.id", "tool_call_id")
_TOOL_ARGS_KEYS = (
    "gen_ai.tool.call.arguments",
    "tool_arguments",
    "ai.toolCall.args",
    "ai.toolCall.input",
    "gen_ai.tool.args",
    "gen_ai.tool.input",
    "gcp.vertex.agent.tool_call_args",
    "input.value",
)
_TOOL_RESULT_KEYS = (
    "gen_ai.tool.call.result",
    "tool_response",
    "ai.toolCall.result",
    "ai.toolCall.output",
    "gen_ai.tool.output",
    "gen_ai.tool.result",
    "gcp.vertex.agent.tool_response",
    "output.value",
)
_PROMPT_NAME_KEYS = ("gen_ai.prompt.name", "langfuse.observation.prompt.name", "traceloop.prompt.key")
_PROMPT_VERSION_KEYS = (
    "gen_ai.prompt.version",
    "langfuse.observation.prompt.version",
    "traceloop.prompt.version",
    "llm.prompt_template.version",
)
_RESPONSE_ID_KEYS = ("gen_ai.response.id", "ai.response.id")
_FINISH_REASON_KEYS = ("gen_ai.response.finish_reasons", "llm.finish_reason", "ai.response.finishReason")
_ENV_KEYS = ("deployment.environment.name", "deployment.environment", "langfuse.environment", "gen_ai.environment")
_ERROR_MESSAGE_KEYS = (
    "langfuse.observation.status_message",
    "gen_ai.guardrail.error.message",
    "gen_ai.framework.error.message",
)

_ERROR_SIGNAL_KEYS = (
    "error.type",
    "gen_ai.guardrail.error.type",
    "gen_ai.framework.error.type",
    "gen_ai.framework.error.class",
    "langfuse.observation.level",
    "logfire.level_num",
)
_FAMILY_PREFIXES = tuple(prefix for prefix, _ in _INDEXED_FAMILIES)
_FAMILY_BY_PREFIX = dict(_INDEXED_FAMILIES)
_FAMILY_MARKERS = tuple("\n" + prefix for prefix in _FAMILY_PREFIXES)  # a key starting with a family prefix
# A span with no key under these namespaces / named here (and no gen_ai.* event, scope not "ai") carries no
# GenAI signal: it takes the plain path (span name type, user/session, errors, environment only).
_SIGNAL_PREFIXES = (
    "gen_ai.",
    "llm.",
    "ai.",
    "langfuse.",
    "traceloop.",
    "litellm.",
    "openinference.",
    "embedding.",
    "reranker.",
    "retrieval.",
    "tool.",
    "tool_call.",
    "agent.",
    "input.",
    "output.",
    "operation.",
    "gcp.vertex.agent.",
    "pydantic_ai.",
    "logfire.",
    "db.vector.",
)
_SIGNAL_KEYS = (
    "request_data",
    "response_data",
    "agent_name",
    "model_name",
    "tool_name",
    "tool_call_id",
    "tool_arguments",
    "tool_response",
    "events",
    "all_messages_events",
    "final_result",
)
_GENERIC_AGENT_NAMES = frozenset({"agent run", "invoke_agent", "create_agent", "agent"})
_GENERIC_TOOL_NAMES = frozenset({"running tool", "execute_tool", "ai.toolCall", "tool"})


# ------------------------------------------------------------------------------------------------- coercion


def _to_int(value: Any) -> int | None:
    """OTLP int in any arrival form: int, integral float, decimal string, protobufjs Long {low, high, unsigned}."""
    kind = type(value)
    if kind is int:
        return value
    if kind is float:
        return int(value) if math.isfinite(value) else None
    if kind is str:
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return None
            return int(number) if math.isfinite(number) else None
    if kind is dict:
        low, high = value.get("low"), value.get("high")
        if type(low) is int and type(high) is int:
            combined = ((high & 0xFFFFFFFF) << 32) | (low & 0xFFFFFFFF)
            if not value.get("unsigned") and combined >= 1 << 63:
                combined -= 1 << 64
            return combined
    return None


def _to_count(value: Any) -> int | None:
    """A token count: a non-negative int (OpenLIT's -1 means unset)."""
    number = _to_int(value)
    return number if number is not None and number >= 0 else None


def _to_float(value: Any) -> float | None:
    kind = type(value)
    if kind is float or kind is int:
        number = float(value)
    elif kind is str:
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _to_str(value: Any) -> str | None:
    """A usable identifier string: non-blank str, or a number rendered as text; anything else None."""
    kind = type(value)
    if kind is str:
        return value if value and not value.isspace() else None
    if kind is int or kind is float:
        return str(value)
    return None


def _first_count(attrs: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    """The first usable count among ``keys`` (in practice a plan's present keys: none or one)."""
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            number = _to_count(value)
            if number is not None:
                return number
    return None


def _first_str(attrs: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """The first usable identifier among ``keys`` (in practice a plan's present keys: none or one)."""
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            text = _to_str(value)
            if text is not None:
                return text
    return None


def _json_object(value: Any) -> dict[str, Any] | None:
    """A dict attribute, or JSON text of an object; anything else None."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.lstrip()[:1] == "{":
        ok, parsed = try_json(value)
        if ok and isinstance(parsed, dict):
            return parsed
    return None


def _nested_count(obj: dict[str, Any], key: str, inner: str) -> int | None:
    sub = obj.get(key)
    return _to_count(sub.get(inner)) if isinstance(sub, dict) else None


def _first_of(*values: int | None) -> int | None:
    for value in values:
        if value is not None:
            return value
    return None


# -------------------------------------------------------------------------------------------------- key plan


def _keys_text(keys: tuple[Any, ...]) -> str:
    """The attribute keys as one newline-separated text: a prefix family's absence is then one C-level substring
    search instead of a Python loop over every key."""
    try:
        return "\n" + "\n".join(keys)
    except TypeError:  # a non-string key (never from the decoder): use the string ones
        return "\n" + "\n".join(k for k in keys if isinstance(k, str))


# The key lists a plan resolves: plan attribute -> candidate keys, highest priority first.
_FIELD_KEYS: dict[str, tuple[str, ...]] = {
    "input_tokens": _INPUT_TOKEN_KEYS,
    "output_tokens": _OUTPUT_TOKEN_KEYS,
    "cache_read_tokens": _CACHE_READ_KEYS,
    "cache_write_tokens": _CACHE_WRITE_KEYS,
    "reasoning_tokens": _REASONING_KEYS,
    "total_tokens": _TOTAL_TOKEN_KEYS,
    "cost": _COST_KEYS,
    "provider": _PROVIDER_KEYS,
    "request_model": _REQUEST_MODEL_KEYS,
    "response_model": _RESPONSE_MODEL_KEYS,
    "user": _USER_KEYS,
    "request_user": _REQUEST_USER_KEYS,
    "session": _SESSION_KEYS,
    "agent": _AGENT_KEYS,
    "tool_name": _TOOL_NAME_KEYS,
    "tool_call_id": _TOOL_CALL_ID_KEYS,
    "tool_args": _TOOL_ARGS_KEYS,
    "tool_result": _TOOL_RESULT_KEYS,
    "prompt_name": _PROMPT_NAME_KEYS,
    "prompt_version": _PROMPT_VERSION_KEYS,
    "response_id": _RESPONSE_ID_KEYS,
    "finish": _FINISH_REASON_KEYS,
    "env": _ENV_KEYS,
}
# key -> the plan attributes whose lists hold it
_KEY_FIELDS: dict[str, tuple[str, ...]] = {}
for _field, _candidates in _FIELD_KEYS.items():
    for _key in _candidates:
        _KEY_FIELDS[_key] = (*_KEY_FIELDS.get(_key, ()), _field)
_USAGE_KEYS = frozenset(
    {*(key for keys in _TOKEN_KEY_LISTS for key in keys), _LANGFUSE_USAGE, _VERCEL_PROVIDER_METADATA}
)
_LANGFUSE_USER_META = "langfuse.trace.metadata.langfuse_user_id"
_LANGFUSE_SESSION_META = "langfuse.trace.metadata.langfuse_session_id"
_INVOCATION_PARAMETER_KEYS = ("llm.invocation_parameters", "embedding.invocation_parameters")
# Every key some field helper reads: a span with none of them gets None without the call (~0.3 µs each).
_HELPER_KEYS: dict[str, frozenset[str]] = {
    "reads_user": frozenset({*_USER_KEYS, *_REQUEST_USER_KEYS, _LANGFUSE_USER_META}),
    "reads_session": frozenset({*_SESSION_KEYS, _LANGFUSE_SESSION_META}),
    "reads_request_model": frozenset({*_REQUEST_MODEL_KEYS, *_INVOCATION_PARAMETER_KEYS}),
    "reads_cost": frozenset({*_COST_KEYS, _LANGFUSE_COST}),
}
# Every key a plan looks at by name; the rest only matter by prefix.
_PLAN_KEYS = frozenset(
    {*_KEY_FIELDS, *_USAGE_KEYS, *SPAN_CONTENT_KEYS, *_ERROR_SIGNAL_KEYS, *_SIGNAL_KEYS}.union(*_HELPER_KEYS.values())
)


class _Plan:
    """What a span's attribute KEYS decide, worked out once per distinct key tuple (``_plan``): whether the span
    carries a GenAI signal, its key families, and for each key list (``_FIELD_KEYS``) the keys of it the span
    has, in priority order. The key set repeats across the spans of one instrumentation, so reading a field is
    a loop over its present keys (mostly none or one) instead of a scan of its whole list, and helpers none of
    whose keys is present are not called: an execute_tool span of the benchmark workload takes 5.5 instead of
    11 µs. Building a plan costs 2-4 µs, so the first span with a new key tuple pays ~3 µs more than before
    plans. A list none of whose keys is present keeps the class default ``()``. The prefix families are only
    looked for when first needed, as before plans: searching the keys text costs ~4 µs for a 40-key span."""

    input_tokens: tuple[str, ...] = ()
    output_tokens: tuple[str, ...] = ()
    cache_read_tokens: tuple[str, ...] = ()
    cache_write_tokens: tuple[str, ...] = ()
    reasoning_tokens: tuple[str, ...] = ()
    total_tokens: tuple[str, ...] = ()
    cost: tuple[str, ...] = ()
    provider: tuple[str, ...] = ()
    request_model: tuple[str, ...] = ()
    response_model: tuple[str, ...] = ()
    user: tuple[str, ...] = ()
    request_user: tuple[str, ...] = ()
    session: tuple[str, ...] = ()
    agent: tuple[str, ...] = ()
    tool_name: tuple[str, ...] = ()
    tool_call_id: tuple[str, ...] = ()
    tool_args: tuple[str, ...] = ()
    tool_result: tuple[str, ...] = ()
    prompt_name: tuple[str, ...] = ()
    prompt_version: tuple[str, ...] = ()
    response_id: tuple[str, ...] = ()
    finish: tuple[str, ...] = ()
    env: tuple[str, ...] = ()

    def __init__(self, keys: tuple[Any, ...]) -> None:
        present = _PLAN_KEYS.intersection(keys)  # one C-level pass over the keys
        fields = self.__dict__  # empty so far: it gets the fields with a present key
        several = False
        for key in present:
            for field in _KEY_FIELDS.get(key, ()):
                found = fields.get(field)
                fields[field] = (key,) if found is None else (*found, key)
                several = several or found is not None
        if several:  # put those fields' keys in priority order (mostly a field has one: 2.4 instead of 5.4 µs)
            for field, found in fields.items():
                if len(found) > 1:
                    fields[field] = tuple(key for key in _FIELD_KEYS[field] if key in present)
        self._keys = keys
        self._families: bool | None = None
        self._flags: KeyFlags | None = None
        self.genai: bool = not present.isdisjoint(_SIGNAL_KEYS) or _keys_carry_signal(keys)
        self.content: bool = not present.isdisjoint(SPAN_CONTENT_KEYS)  # besides the indexed families
        self.usage: bool = not present.isdisjoint(_USAGE_KEYS)
        self.error_signal: bool = not present.isdisjoint(_ERROR_SIGNAL_KEYS)
        self.reads_user: bool = not present.isdisjoint(_HELPER_KEYS["reads_user"])
        self.reads_session: bool = not present.isdisjoint(_HELPER_KEYS["reads_session"])
        self.reads_request_model: bool = not present.isdisjoint(_HELPER_KEYS["reads_request_model"])
        self.reads_cost: bool = not present.isdisjoint(_HELPER_KEYS["reads_cost"])

    def families(self) -> bool:
        """Some key starts with an indexed family prefix (gen_ai.prompt.N..., llm.input_messages.N..., ...)."""
        if self._families is None:
            text = _keys_text(self._keys)
            self._families = any(marker in text for marker in _FAMILY_MARKERS)
        return self._families

    def flags(self) -> KeyFlags:
        if self._flags is None:
            text = _keys_text(self._keys)
            self._flags = KeyFlags(
                guardrail="\ngen_ai.guardrail." in text or "\nlitellm.guardrail." in text,
                retrieval="\nretrieval.documents." in text or "\ngen_ai.retrieval." in text or "\ndb.vector." in text,
                embedding="\nembedding.embeddings." in text,
                indexed_content=self.families(),
            )
        return self._flags


def _keys_carry_signal(keys: tuple[Any, ...]) -> bool:
    """Some key is in a GenAI namespace (or is not a string)."""
    return any(type(key) is not str or key.startswith(_SIGNAL_PREFIXES) for key in keys)


_PLANS: dict[tuple[Any, ...], _Plan] = {}
# Distinct key tuples kept; past it the table starts over. An instrumentation uses a few; OpenInference's indexed
# message keys make most of its LLM spans' tuples new (each plan holds its span's key strings: ~10 KB for 128 keys).
_PLAN_LIMIT = 256


def _plan(attrs: dict[str, Any]) -> _Plan:
    keys = tuple(attrs)
    plan = _PLANS.get(keys)
    if plan is None:
        plan = _Plan(keys)
        if len(_PLANS) >= _PLAN_LIMIT:
            _PLANS.clear()
        _PLANS[keys] = plan
    return plan


def _families(attrs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Indexed family name -> {rest of key after the family prefix: value}. Indexes need not start at 0:
    OpenInference's Responses-API spans number input messages from 1 when there are no instructions, and the
    SDK's attribute limit evicts the oldest (lowest-index) keys first."""
    families: dict[str, dict[str, Any]] = {}
    for key, value in attrs.items():
        if type(key) is not str or not key.startswith(_FAMILY_PREFIXES):
            continue
        # every family prefix is "<a>.<b>.": cut at the second dot
        cut = key.find(".", key.find(".") + 1) + 1
        family = _FAMILY_BY_PREFIX.get(key[:cut])
        rest = key[cut:]
        if family is not None and rest[:1].isdecimal():
            bucket = families.get(family)
            if bucket is None:
                bucket = families[family] = {}
            bucket[rest] = value
    return families


def _no_families() -> dict[str, dict[str, Any]]:
    return {}


# ---------------------------------------------------------------------------------------------------- tokens


def _usage_from_details(details: dict[str, Any]) -> tuple[int | None, ...]:
    """Langfuse ``usage_details`` (free-form): Langfuse keys, raw OpenAI chat/responses or raw Anthropic usage.
    Returns (input, output, total, cache_read, cache_write, reasoning, exclusive_cache)."""
    get = details.get
    if "input" in details or "output" in details:  # Langfuse's own keys: "input" EXCLUDES cache
        cache_read = _first_of(_to_count(get("input_cached_tokens")), _to_count(get("input_cache_read")),
                               _to_count(get("cache_read_input_tokens")))
        cache_write = _first_of(_to_count(get("input_cache_creation")), _to_count(get("input_cache_write")),
                                _to_count(get("cache_creation_input_tokens")))
        reasoning = _first_of(_to_count(get("output_reasoning_tokens")), _to_count(get("output_reasoning")))
        return (_to_count(get("input")), _to_count(get("output")), _to_count(get("total")), cache_read,
                cache_write, reasoning, 1)
    if "prompt_tokens" in details or "completion_tokens" in details:  # raw OpenAI chat usage (inclusive)
        return (_to_count(get("prompt_tokens")), _to_count(get("completion_tokens")),
                _to_count(get("total_tokens")), _nested_count(details, "prompt_tokens_details", "cached_tokens"),
                None, _nested_count(details, "completion_tokens_details", "reasoning_tokens"), 0)
    # input_tokens/output_tokens: OpenAI Responses (inclusive) or Anthropic (exclusive, cache_*_input_tokens)
    anthropic_read = _to_count(get("cache_read_input_tokens"))
    anthropic_write = _to_count(get("cache_creation_input_tokens"))
    exclusive = 1 if ("cache_read_input_tokens" in details or "cache_creation_input_tokens" in details) else 0
    return (_to_count(get("input_tokens")), _to_count(get("output_tokens")), _to_count(get("total_tokens")),
            _first_of(anthropic_read, _nested_count(details, "input_tokens_details", "cached_tokens")),
            anthropic_write, _nested_count(details, "output_tokens_details", "reasoning_tokens"), exclusive)


def _vercel_cache(value: Any) -> tuple[int | None, int | None, bool]:
    """Cache counts from Vercel ``ai.response.providerMetadata`` (Anthropic / Bedrock: exclusive of input)."""
    meta = _json_object(value)
    if meta is None:
        return None, None, False
    anthropic = meta.get("anthropic")
    if isinstance(anthropic, dict):
        return (_to_count(anthropic.get("cacheReadInputTokens")),
                _to_count(anthropic.get("cacheCreationInputTokens")), True)
    bedrock = meta.get("bedrock")
    if isinstance(bedrock, dict):
        usage = bedrock.get("usage")
        if isinstance(usage, dict):
            return (_to_count(usage.get("cacheReadInputTokens")), _to_count(usage.get("cacheWriteInputTokens")),
                    True)
    openai = meta.get("openai")
    if isinstance(openai, dict):
        return _to_count(openai.get("cachedPromptTokens")), None, False
    return None, None, False


def _tokens(attrs: dict[str, Any], plan: _Plan) -> list[int | None]:
    """[input, output, cache_read, cache_write, reasoning, total] with §3 token semantics applied.
    ``gen_ai.aggregated_usage.*`` (run totals) is never read."""
    if not plan.usage:
        return [None, None, None, None, None, None]
    inp = _first_count(attrs, plan.input_tokens)
    out = _first_count(attrs, plan.output_tokens)
    cache_read = _first_count(attrs, plan.cache_read_tokens)
    cache_write = _first_count(attrs, plan.cache_write_tokens)
    reasoning = _first_count(attrs, plan.reasoning_tokens)
    total = None
    exclusive = False
    if inp is None and out is None:
        details_value = attrs.get(_LANGFUSE_USAGE)
        details = _json_object(details_value) if details_value is not None else None
        if details is not None:
            d_in, d_out, d_total, d_read, d_write, d_reason, d_excl = _usage_from_details(details)
            inp, out, total = d_in, d_out, d_total
            cache_read = cache_read if cache_read is not None else d_read
            cache_write = cache_write if cache_write is not None else d_write
            reasoning = reasoning if reasoning is not None else d_reason
            exclusive = bool(d_excl)
    if total is None:
        total = _first_count(attrs, plan.total_tokens)
    if cache_read is None and cache_write is None:
        meta = attrs.get(_VERCEL_PROVIDER_METADATA)
        if meta is not None:
            cache_read, cache_write, exclusive = _vercel_cache(meta)
    if inp is not None and (cache_read or cache_write):
        cached = (cache_read or 0) + (cache_write or 0)
        if exclusive or cached > inp:  # the emitter counted input exclusive of the cache
            inp += cached
    if out is not None and reasoning is not None and reasoning > out:
        out += reasoning  # reasoning is a subset of output
    if inp is not None and out is not None:
        total = inp + out
    return [inp, out, cache_read, cache_write, reasoning, total]


def _reported_cost(attrs: dict[str, Any], plan: _Plan) -> tuple[float | None, str | None]:
    for key in plan.cost:
        value = attrs.get(key)
        if value is not None:
            cost = _to_float(value)
            if cost is not None and cost >= 0:
                return cost, key
    value = attrs.get(_LANGFUSE_COST)
    if value is not None:
        details = _json_object(value)
        if details is not None:
            total = _to_float(details.get("total"))
            if total is not None and total >= 0:
                return total, _LANGFUSE_COST + ".total"
            parts = [_to_float(v) for v in details.values() if not isinstance(v, bool)]
            numbers = [p for p in parts if p is not None and p >= 0]
            if numbers:
                return math.fsum(numbers), _LANGFUSE_COST  # no total: Langfuse sums the parts
    return None, None


# ------------------------------------------------------------------------------------------- names and ids


def _provider(attrs: dict[str, Any], plan: _Plan, server_address: str | None, request_model: str | None,
              response_model: str | None) -> str | None:
    provider = normalise_provider(_first_str(attrs, plan.provider))
    api_base = attrs.get("gen_ai.openai.api_base")
    if provider is None:
        provider = (
            provider_from_host(server_address)
            or provider_from_host(api_base)
            or provider_from_model(request_model)
            or provider_from_model(response_model)
        )
    elif provider == "openai" and (server_address is not None or api_base is not None):
        host_provider = provider_from_host(server_address) or provider_from_host(api_base)
        if host_provider == "azure":  # OpenAI SDK pointed at Azure OpenAI
            provider = "azure"
    return provider


def _request_model(attrs: dict[str, Any], plan: _Plan) -> str | None:
    model = _first_str(attrs, plan.request_model)
    if model is None:
        # OpenInference: the request model lives in the invocation parameters (embedding spans have their own
        # key; a failed embedding call has no embedding.model_name, which OpenInference takes from the response)
        for key in _INVOCATION_PARAMETER_KEYS:
            params = attrs.get(key)
            if params is not None:
                obj = _json_object(params)
                if obj is not None:
                    model = _to_str(obj.get("model")) or _to_str(obj.get("model_name"))
                    if model is not None:
                        break
    return model


def _user_id(attrs: dict[str, Any], plan: _Plan) -> str | None:
    user = _first_str(attrs, plan.user)
    if user is None:
        meta = attrs.get(_LANGFUSE_USER_META)  # v5: the value is JSON-encoded
        if isinstance(meta, str):
            user = _to_str(_unquote(meta))
    return user if user is not None else _first_str(attrs, plan.request_user)


def _session_id(attrs: dict[str, Any], plan: _Plan) -> str | None:
    session = _first_str(attrs, plan.session)
    if session is None:
        meta = attrs.get(_LANGFUSE_SESSION_META)
        if isinstance(meta, str):
            session = _to_str(_unquote(meta))
    return session


def _unquote(text: str) -> Any:
    """A JSON-encoded string (``"\\"value\\""``) decoded; other text unchanged."""
    if text[:1] == '"':
        ok, value = try_json(text)
        if ok:
            return value
    return text


def _agent_name(attrs: dict[str, Any], plan: _Plan, name: str, span_type: str) -> str | None:
    agent = _first_str(attrs, plan.agent)
    if agent is not None or span_type != AGENT:
        return agent
    if attrs.get("traceloop.span.kind") == "agent":
        agent = _to_str(attrs.get("traceloop.entity.name"))
        if agent is not None:
            return agent
    for prefix in ("invoke_agent ", "create_agent "):
        if name.startswith(prefix):
            return name[len(prefix) :].strip() or None
    if name.endswith(".agent"):
        return name[:-6] or None
    return name if name and name not in _GENERIC_AGENT_NAMES else None


def _tool_name(attrs: dict[str, Any], plan: _Plan, name: str) -> str | None:
    tool = _first_str(attrs, plan.tool_name)
    if tool is not None:
        return tool
    tool = _to_str(attrs.get("traceloop.entity.name"))
    if tool is not None:
        return tool
    if name.startswith("execute_tool "):
        return name[13:].strip() or None
    if name.startswith("running tool:"):
        return name[13:].strip() or None
    if name.endswith(".tool"):
        return name[:-5] or None
    return name if name and name not in _GENERIC_TOOL_NAMES else None


def _first_text(attrs: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return as_text(value)
    return None


def _tool_arguments(attrs: dict[str, Any], plan: _Plan) -> str | None:
    args = _first_text(attrs, plan.tool_args)
    if args is not None:
        return args
    value = attrs.get("traceloop.entity.input")
    if value is not None and value != "":
        envelope = _json_object(value)
        # traceloop-sdk wraps the call as {"args": [...], "kwargs": {...}}; keyword-only calls -> the kwargs
        if envelope is not None and set(envelope) <= {"args", "kwargs"} and not envelope.get("args"):
            kwargs = envelope.get("kwargs")
            if isinstance(kwargs, dict):
                return dumps(kwargs)
        return as_text(value)
    return _first_text(attrs, ("langfuse.observation.input",))


def _tool_result(attrs: dict[str, Any], plan: _Plan) -> str | None:
    result = _first_text(attrs, plan.tool_result)
    if result is not None:
        return result
    value = attrs.get("traceloop.entity.output")
    if value is not None and value != "":
        if isinstance(value, str):
            decoded = _unquote(value)  # traceloop json.dumps every return value: a str result arrives quoted
            return decoded if isinstance(decoded, str) else value
        return as_text(value)
    return _first_text(attrs, ("langfuse.observation.output",))


def _reasons(value: Any) -> list[str]:
    if isinstance(value, str):
        if value[:1] == "[":
            ok, parsed = try_json(value)
            if ok and isinstance(parsed, list):
                value = parsed
            else:
                return [value]
        else:
            return [value] if value else []
    if isinstance(value, list):
        return [r for r in value if isinstance(r, str) and r]
    return []


def _finish_reasons(attrs: dict[str, Any], plan: _Plan, output_reasons: list[str]) -> list[str]:
    for key in plan.finish:
        value = attrs.get(key)
        if value is not None:
            reasons = _reasons(value)
            if reasons:
                return reasons
    return output_reasons


def _environment(attrs: dict[str, Any], plan: _Plan, resource: dict[str, Any]) -> str | None:
    if not plan.env and resource.keys().isdisjoint(_ENV_KEYS):
        return None
    for key in _ENV_KEYS:
        env = _to_str(attrs.get(key))
        if env is None:
            env = _to_str(resource.get(key))
        if env is not None:
            return env
    return None


# ---------------------------------------------------------------------------------------------------- errors


def _errors(span: DecodedSpan, attrs: dict[str, Any], plan: _Plan, span_type: str,
            reasons: list[str]) -> tuple[bool, str | None, str | None]:
    """(is_error, error_type, error_message) by the §3 rule; deferrals and guardrail tripwires are outcomes."""
    if span.status_code != "ERROR" and not span.events and not plan.error_signal and "error" not in reasons:
        return False, None, None  # the common case, decided without a closer look
    exception_seen = False
    exc_type = exc_message = None
    for event in span.events:
        if getattr(event, "name", None) == "exception":
            exception_seen = True
            ev_attrs = event.attributes if isinstance(event.attributes, dict) else {}
            exc_type = _to_str(ev_attrs.get("exception.type"))
            exc_message = _to_str(ev_attrs.get("exception.message"))
            break
    error_attr = _to_str(attrs.get("error.type"))
    guard_error = _to_str(attrs.get("gen_ai.guardrail.error.type"))
    framework_error = _to_str(attrs.get("gen_ai.framework.error.type")) or _to_str(
        attrs.get("gen_ai.framework.error.class")
    )
    level = attrs.get("langfuse.observation.level")
    level_num = attrs.get("logfire.level_num")
    explicit = error_attr is not None or exception_seen or guard_error is not None or framework_error is not None
    is_error = (
        span.status_code == "ERROR"
        or explicit
        or (isinstance(level, str) and level.upper() == "ERROR")
        or (level_num is not None and (_to_int(level_num) or 0) >= 17)
        or "error" in reasons
    )
    if not is_error:
        return False, None, None
    error_type = error_attr or exc_type or guard_error or framework_error
    if "pydantic_ai.tool.deferral.name" in attrs:
        return False, None, None  # a deferred tool call is an outcome, not a failure
    if error_type is not None and "Tripwire" in error_type:
        return False, None, None  # OpenAI Agents guardrail tripwire surfacing as an exception
    if span_type == GUARDRAIL and not explicit:
        return False, None, None  # a guardrail span with ERROR status = the guardrail tripped
    if error_type is None:
        status = _to_int(attrs.get("http.response.status_code", attrs.get("http.status_code")))
        if status is not None and status >= 400:
            error_type = f"{status // 100}xx"
    message = _to_str(span.status_message) or exc_message or _first_str(attrs, _ERROR_MESSAGE_KEYS)
    if message is not None and error_type is not None:
        for prefix in (error_type, error_type.rpartition(".")[2]):
            if message.startswith(prefix + ": "):
                message = message[len(prefix) + 2 :] or message
                break
    return True, error_type, message


# ------------------------------------------------------------------------------------------------ entry point


def _has_genai_signal(span: DecodedSpan, plan: _Plan) -> bool:
    if plan.genai or span.scope_name == "ai":
        return True
    for event in span.events:
        name = getattr(event, "name", None)
        if not isinstance(name, str) or name.startswith("gen_ai."):
            return True
    return False


def normalise_span(span: DecodedSpan) -> dict[str, Any]:
    """The canonical columns of one span (keys ``OUTPUT_KEYS``; None when unknown). Pure; never raises on odd
    attribute value types."""
    attrs = span.attributes if isinstance(span.attributes, dict) else {}
    plan = _plan(attrs)
    if _has_genai_signal(span, plan):
        return _normalise_genai(span, attrs, plan)
    return _normalise_plain(span, attrs, plan)


def _normalise_plain(span: DecodedSpan, attrs: dict[str, Any], plan: _Plan) -> dict[str, Any]:
    """Fast path for HTTP / DB / framework spans: the same result ``_normalise_genai`` would give them."""
    name = span.name if isinstance(span.name, str) else ""
    span_type = plain_span_type(name, attrs)
    is_error, error_type, error_message = _errors(span, attrs, plan, span_type, [])
    server_address = _to_str(attrs.get("server.address"))
    resource = span.resource if isinstance(span.resource, dict) else {}
    return {
        "span_type": span_type,
        "provider": provider_from_host(server_address) if server_address is not None else None,
        "request_model": None,
        "response_model": None,
        "input_tokens": None,
        "output_tokens": None,
        "cache_read_tokens": None,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
        "total_tokens": None,
        "reported_cost_usd": None,
        "reported_cost_source": None,
        "user_id": _user_id(attrs, plan) if plan.reads_user else None,
        "session_id": _session_id(attrs, plan) if plan.reads_session else None,
        "agent_name": _agent_name(attrs, plan, name, span_type) if span_type == AGENT else None,
        "tool_name": _tool_name(attrs, plan, name) if span_type == TOOL else None,
        "tool_call_id": None,
        "tool_arguments": None,
        "tool_result": None,
        "prompt_name": None,
        "prompt_version": None,
        "finish_reason": None,
        "response_id": None,
        "error_type": error_type,
        "error_message": error_message,
        "is_error": is_error,
        "environment": _environment(attrs, plan, resource),
        "input_messages": None,
        "output_messages": None,
        "server_address": server_address,
    }


def _normalise_genai(span: DecodedSpan, attrs: dict[str, Any], plan: _Plan) -> dict[str, Any]:
    name = span.name if isinstance(span.name, str) else ""

    inp, out, cache_read, cache_write, reasoning, total = _tokens(attrs, plan)
    span_type = detect_span_type(
        name, attrs, span.scope_name, inp is not None or out is not None or total is not None, plan.flags
    )
    if total is None and inp is not None and span_type == EMBEDDING:
        total = inp  # embeddings have no output tokens

    request_model = _request_model(attrs, plan) if plan.reads_request_model else None
    response_model = _first_str(attrs, plan.response_model) if plan.response_model else None
    server_address = _to_str(attrs.get("server.address"))
    cost, cost_source = _reported_cost(attrs, plan) if plan.reads_cost else (None, None)

    is_tool = span_type == TOOL
    inputs_json = outputs_json = None
    output_reasons: list[str] = []
    if plan.content or span.events or plan.families():  # else no message source can match: skip ~2 µs of lookups
        families = partial(_families, attrs) if plan.families() else _no_families
        try:
            inputs_json, outputs_json, output_reasons = span_messages(attrs, span.events, families, is_tool)
        except Exception:  # content shapes are unbounded; a bad one must never drop the span
            logger.debug("could not convert the content of span %s", getattr(span, "span_id", "?"), exc_info=True)
    reasons = _finish_reasons(attrs, plan, output_reasons)
    is_error, error_type, error_message = _errors(span, attrs, plan, span_type, reasons)
    resource = span.resource if isinstance(span.resource, dict) else {}

    return {
        "span_type": span_type,
        "provider": _provider(attrs, plan, server_address, request_model, response_model),
        "request_model": request_model,
        "response_model": response_model,
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "reasoning_tokens": reasoning,
        "total_tokens": total,
        "reported_cost_usd": cost,
        "reported_cost_source": cost_source,
        "user_id": _user_id(attrs, plan) if plan.reads_user else None,
        "session_id": _session_id(attrs, plan) if plan.reads_session else None,
        "agent_name": _agent_name(attrs, plan, name, span_type) if plan.agent or span_type == AGENT else None,
        "tool_name": _tool_name(attrs, plan, name) if is_tool else None,
        "tool_call_id": _first_str(attrs, plan.tool_call_id) if is_tool and plan.tool_call_id else None,
        "tool_arguments": _tool_arguments(attrs, plan) if is_tool else None,
        "tool_result": _tool_result(attrs, plan) if is_tool else None,
        # (most spans have no key of these lists: skipping the calls saves ~0.5 µs a span)
        "prompt_name": _first_str(attrs, plan.prompt_name) if plan.prompt_name else None,
        "prompt_version": _first_str(attrs, plan.prompt_version) if plan.prompt_version else None,
        "finish_reason": ",".join(reasons) if reasons else None,
        "response_id": _first_str(attrs, plan.response_id) if plan.response_id else None,
        "error_type": error_type,
        "error_message": error_message,
        "is_error": is_error,
        "environment": _environment(attrs, plan, resource),
        "input_messages": inputs_json,
        "output_messages": outputs_json,
        "server_address": server_address,
    }
