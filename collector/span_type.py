"""Span-type detection: the docs/conventions.md §3 decision list (first match wins) -> llm, embedding, tool, agent,
chain, retriever, reranker, guardrail, evaluator or other."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LLM = "llm"
EMBEDDING = "embedding"
TOOL = "tool"
AGENT = "agent"
CHAIN = "chain"
RETRIEVER = "retriever"
RERANKER = "reranker"
GUARDRAIL = "guardrail"
EVALUATOR = "evaluator"
OTHER = "other"


@dataclass(slots=True)
class KeyFlags:
    """What one pass over the attribute keys found (prefix families the decision list looks at)."""

    guardrail: bool = False  # gen_ai.guardrail.* / litellm.guardrail.*
    retrieval: bool = False  # retrieval.documents.* / gen_ai.retrieval.* / db.vector.*
    embedding: bool = False  # embedding.embeddings.*
    indexed_content: bool = False  # gen_ai.prompt.N.* / llm.input_messages.N.* / ... (message content)


# Rule 1: langfuse.observation.type (lower-cased).
_LANGFUSE_TYPES: dict[str, str] = {
    "generation": LLM,
    "embedding": EMBEDDING,
    "agent": AGENT,
    "tool": TOOL,
    "chain": CHAIN,
    "retriever": RETRIEVER,
    "evaluator": EVALUATOR,
    "guardrail": GUARDRAIL,
    "event": OTHER,
    "span": OTHER,
}

# Rule 2: openinference.span.kind (upper-cased); UNKNOWN -> continue.
_OPENINFERENCE_KINDS: dict[str, str] = {
    "LLM": LLM,
    "EMBEDDING": EMBEDDING,
    "RETRIEVER": RETRIEVER,
    "RERANKER": RERANKER,
    "TOOL": TOOL,
    "AGENT": AGENT,
    "CHAIN": CHAIN,
    "GUARDRAIL": GUARDRAIL,
    "EVALUATOR": EVALUATOR,
    "PROMPT": CHAIN,
    "DECISION": LLM,
}

# Rule 3: gen_ai.operation.name (§1c, plus the custom values emitters are known to use); unknown -> continue.
_OPERATIONS: dict[str, str] = {
    "chat": LLM,
    "text_completion": LLM,
    "generate_content": LLM,
    "completion": LLM,
    "generate": LLM,
    "fetch_response": LLM,
    "llm_request": LLM,
    "model_request": LLM,
    "image": LLM,
    "audio": LLM,
    "speech": LLM,
    "transcription": LLM,
    "translate": LLM,
    "embeddings": EMBEDDING,
    "embedding": EMBEDDING,
    "retrieval": RETRIEVER,
    "vector_db_retrieve": RETRIEVER,
    "vectordb": RETRIEVER,
    "create_memory": RETRIEVER,
    "search_memory": RETRIEVER,
    "update_memory": RETRIEVER,
    "upsert_memory": RETRIEVER,
    "delete_memory": RETRIEVER,
    "create_memory_store": RETRIEVER,
    "delete_memory_store": RETRIEVER,
    "memory": RETRIEVER,
    "rerank": RERANKER,
    "execute_tool": TOOL,
    "handoff": TOOL,
    "invoke_agent": AGENT,
    "create_agent": AGENT,
    "invoke_workflow": CHAIN,
    "plan": CHAIN,
    "execute_task": CHAIN,
    "apply_guardrail": GUARDRAIL,
    "evaluate": EVALUATOR,
    "evaluation": EVALUATOR,
}

# Rule 4: traceloop.span.kind, then llm.request.type.
_TRACELOOP_KINDS: dict[str, str] = {
    "workflow": CHAIN,
    "task": CHAIN,
    "agent": AGENT,
    "tool": TOOL,
    "handoff": TOOL,
}
_LLM_REQUEST_TYPES: dict[str, str] = {
    "chat": LLM,
    "completion": LLM,
    "embedding": EMBEDDING,
    "rerank": RERANKER,
}

# Rule 7: span names.
_NAME_PREFIXES: tuple[tuple[str, str], ...] = (
    ("chat ", LLM),
    ("text_completion ", LLM),
    ("generate_content ", LLM),
    ("embeddings ", EMBEDDING),
    ("execute_tool ", TOOL),
    ("invoke_workflow", CHAIN),
    ("apply_guardrail", GUARDRAIL),
    ("running tool", TOOL),
    ("running output function", TOOL),
)
_NAME_PREFIX_TUPLE = tuple(prefix for prefix, _ in _NAME_PREFIXES)
_NAME_EXACT: dict[str, str] = {
    "agent run": AGENT,
    "invoke_agent": AGENT,
    "create_agent": AGENT,
    "ChatCompletion": LLM,
    "Completion": LLM,
    "CreateEmbeddings": EMBEDDING,
}
_OPENLLMETRY_MODEL_NAME = re.compile(r"[a-z_]+\.(chat|completion|embeddings|generate_content)")
_NAME_SUFFIXES: dict[str, str] = {"workflow": CHAIN, "task": CHAIN, "agent": AGENT, "tool": TOOL}

# Rule 8.
MODEL_KEYS: tuple[str, ...] = (
    "gen_ai.request.model",
    "gen_ai.response.model",
    "llm.model_name",
    "llm.request.model_name",
    "llm.response.model_name",
    "ai.model.id",
    "langfuse.observation.model.name",
)
_TOOL_IO_KEYS: tuple[str, ...] = (
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "tool_arguments",
    "tool_response",
)
_CONTENT_KEYS: tuple[str, ...] = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "ai.prompt.messages",
    "ai.prompt",
    "ai.response.text",
    "events",
    "request_data",
    "pydantic_ai.all_messages",
    "langfuse.observation.input",
    "langfuse.observation.output",
)
_VECTOR_DBS = frozenset(
    {
        "chroma",
        "chromadb",
        "pinecone",
        "qdrant",
        "weaviate",
        "milvus",
        "lancedb",
        "marqo",
        "pgvector",
        "vespa",
        "faiss",
        "astradb",
    }
)


def _lower(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) else None


def _has_any(attrs: dict[str, Any], keys: tuple[str, ...]) -> bool:
    return not attrs.keys().isdisjoint(keys)


def _by_name(name: str, attrs: dict[str, Any]) -> str | None:
    """Rule 7: OTel-recommended and well-known legacy span names."""
    exact = _NAME_EXACT.get(name)
    if exact is not None:
        return exact
    if name.startswith(_NAME_PREFIX_TUPLE):
        for prefix, kind in _NAME_PREFIXES:
            if name.startswith(prefix):
                return kind
    if name.startswith(("invoke_agent ", "create_agent ")):
        return AGENT
    if "." in name:
        match = _OPENLLMETRY_MODEL_NAME.fullmatch(name)
        if match is not None:
            return EMBEDDING if match.group(1) == "embeddings" else LLM
        suffix = name.rpartition(".")[2]
        return _NAME_SUFFIXES.get(suffix)
    return None


def _vercel(attrs: dict[str, Any], name: str) -> str:
    """Rule 5: Vercel AI SDK operation ids."""
    op_id = attrs.get("ai.operationId")
    op_name = attrs.get("operation.name")
    if isinstance(op_id, str) and op_id:
        op = op_id
    elif isinstance(op_name, str) and op_name:
        op = op_name.split(" ", 1)[0]
    else:
        op = name
    if op.endswith((".doGenerate", ".doStream")):
        return LLM if ("ai.model.id" in attrs or "gen_ai.request.model" in attrs) else CHAIN
    if op.startswith("ai.embed") and op.endswith(".doEmbed"):
        return EMBEDDING
    if op == "ai.toolCall":
        return TOOL
    return CHAIN


def plain_span_type(name: str, attrs: dict[str, Any]) -> str:
    """The decision list for a span without any GenAI attribute: only the span-name rule (7) and the
    vector-DB rule (8d) can match."""
    kind = _by_name(name, attrs)
    if kind is not None:
        return kind
    if _lower(attrs.get("db.system")) in _VECTOR_DBS or _lower(attrs.get("db.system.name")) in _VECTOR_DBS:
        return RETRIEVER
    return OTHER


def detect_span_type(
    name: str,
    attrs: dict[str, Any],
    scope_name: str,
    has_usage: bool,
    flags: Callable[[], KeyFlags],
) -> str:
    """The canonical span type; ``flags`` is only called (once) when a rule needs the key families."""
    # 1. Langfuse observation type.
    lf_type = _lower(attrs.get("langfuse.observation.type"))
    if lf_type is not None:
        kind = _LANGFUSE_TYPES.get(lf_type)
        if kind is not None:
            if (
                kind == OTHER
                and lf_type == "span"
                and ("langfuse.observation.model.name" in attrs or "langfuse.observation.usage_details" in attrs)
            ):
                return LLM  # Langfuse Python SDK <= 3.3: type=span with generation attributes
            return kind
    # 2. OpenInference span kind.
    oi_kind = attrs.get("openinference.span.kind")
    if isinstance(oi_kind, str):
        kind = _OPENINFERENCE_KINDS.get(oi_kind.upper())
        if kind is not None:
            return kind
    # 3. gen_ai.operation.name.
    op = _lower(attrs.get("gen_ai.operation.name"))
    if op is not None:
        kind = _OPERATIONS.get(op)
        if kind is not None:
            return kind
    # 4. Traceloop span kind, then llm.request.type.
    tl_kind = _lower(attrs.get("traceloop.span.kind"))
    if tl_kind is not None:
        kind = _TRACELOOP_KINDS.get(tl_kind)
        if kind is not None:
            return kind
    req_type = _lower(attrs.get("llm.request.type"))
    if req_type is not None:
        kind = _LLM_REQUEST_TYPES.get(req_type)
        if kind is not None:
            return kind
    # 5. Vercel AI SDK.
    if scope_name == "ai" or "ai.operationId" in attrs:
        return _vercel(attrs, name)
    # 6. Guardrail markers.
    found = flags()
    if found.guardrail:
        return GUARDRAIL
    # 7. Span names.
    kind = _by_name(name, attrs) if isinstance(name, str) else None
    if kind is not None:
        return kind
    # 8. Attribute-presence fallbacks (weakest).
    has_model = _has_any(attrs, MODEL_KEYS)
    has_content = found.indexed_content or _has_any(attrs, _CONTENT_KEYS)
    if _has_any(attrs, _TOOL_IO_KEYS) or (
        "gen_ai.tool.name" in attrs and not has_model and not has_usage and not has_content
    ):
        return TOOL
    if has_model and (has_usage or has_content):
        return LLM
    if found.embedding or "embedding.model_name" in attrs:
        return EMBEDDING
    if (
        found.retrieval
        or _lower(attrs.get("db.system")) in _VECTOR_DBS
        or _lower(attrs.get("db.system.name")) in _VECTOR_DBS
    ):
        return RETRIEVER
    if not has_model and isinstance(name, str):
        for key in ("agent_name", "agent.name", "gen_ai.agent.name"):
            agent = attrs.get(key)
            if isinstance(agent, str) and agent and agent in name:
                return AGENT
    return OTHER
