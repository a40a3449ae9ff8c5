"""The public lake schema (spans and log events): defined once here, imported by every reader and writer.

This is a contract with users who query the lake directly, so columns are only ever added, and every
change bumps SCHEMA_VERSION, which each Parquet part carries in its file metadata.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1
SCHEMA_VERSION_KEY = b"agentflight.schema_version"
TABLE_KEY = b"agentflight.table"

_str = pa.string()
_i64 = pa.int64()
_f64 = pa.float64()

# (name, type, description) — the description is what the README documents.
SPAN_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("project", _str, "Project the span belongs to, decided by the API key (never by a span attribute)."),
    ("trace_id", _str, "Trace id, 32 lowercase hex characters."),
    ("span_id", _str, "Span id, 16 lowercase hex characters."),
    ("parent_span_id", _str, "Parent span id (16 hex) or NULL for a root span."),
    ("name", _str, "Span name."),
    ("kind", _str, "OTLP span kind: INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER or UNSPECIFIED."),
    (
        "span_type",
        _str,
        "llm, embedding, tool, agent, chain, retriever, reranker, guardrail, evaluator or other.",
    ),
    ("service_name", _str, "Resource attribute service.name."),
    ("scope_name", _str, "Instrumentation scope name (identifies the emitting library)."),
    ("scope_version", _str, "Instrumentation scope version."),
    ("start_time_unix_nano", _i64, "Start time, integer nanoseconds since the Unix epoch."),
    ("end_time_unix_nano", _i64, "End time, integer nanoseconds since the Unix epoch."),
    ("status_code", _str, "UNSET, OK or ERROR."),
    ("status_message", _str, "Span status message."),
    ("provider", _str, "Normalised provider id (openai, anthropic, google, aws, azure, ...)."),
    ("request_model", _str, "Model the caller asked for."),
    ("response_model", _str, "Model that answered (usually the dated version)."),
    ("input_tokens", _i64, "Input tokens, including cache reads and writes."),
    ("output_tokens", _i64, "Output tokens, including reasoning tokens."),
    ("cache_read_tokens", _i64, "Input tokens read from the prompt cache (subset of input_tokens)."),
    ("cache_write_tokens", _i64, "Input tokens written to the prompt cache (subset of input_tokens)."),
    ("reasoning_tokens", _i64, "Reasoning tokens (subset of output_tokens)."),
    ("total_tokens", _i64, "input_tokens + output_tokens."),
    (
        "cost_usd",
        _f64,
        "Cost in USD: computed from the price table, else the span's reported cost; NULL if unknown.",
    ),
    ("input_cost_usd", _f64, "Input part of the computed cost."),
    ("output_cost_usd", _f64, "Output part of the computed cost."),
    (
        "cost_status",
        _str,
        "computed, override, reported, unknown_model, no_usage or not_applicable (non-model span).",
    ),
    (
        "cost_source",
        _str,
        "Where cost_usd came from, with version: genai-prices@X, override:<file>, reported:<key>.",
    ),
    ("price_model", _str, "Model id the price table matched."),
    ("reported_cost_usd", _f64, "Cost the span reported itself (llm.cost.total, gen_ai.usage.cost, ...)."),
    ("reported_cost_source", _str, "Attribute key reported_cost_usd was read from."),
    ("user_id", _str, "End-user id."),
    ("session_id", _str, "Session / conversation id."),
    ("agent_name", _str, "Agent name."),
    ("tool_name", _str, "Tool name (tool spans)."),
    ("tool_call_id", _str, "Tool call id (tool spans)."),
    ("tool_arguments", _str, "Tool call arguments (JSON text when the emitter sent JSON)."),
    ("tool_result", _str, "Tool call result (JSON text when the emitter sent JSON)."),
    ("prompt_name", _str, "Prompt template name."),
    ("prompt_version", _str, "Prompt template version."),
    (
        "finish_reason",
        _str,
        "Finish reasons, comma-separated (stop, length, tool_calls, content_filter, ...).",
    ),
    (
        "response_id",
        _str,
        "Provider response id (gen_ai.response.id); joins log events emitted outside the span.",
    ),
    ("error_type", _str, "Error class (error.type, exception.type) when the span failed."),
    ("error_message", _str, "Error message (status message, exception.message)."),
    ("is_error", pa.bool_(), "True if the span failed by any convention's rule."),
    ("environment", _str, "Deployment environment."),
    ("input_messages", _str, "Input messages as JSON in OTel GenAI part form [{role, parts:[...]}]."),
    ("output_messages", _str, "Output messages as JSON in OTel GenAI part form."),
    ("attributes", _str, "Every span attribute, losslessly, as a JSON object."),
    ("events", _str, "Every span event as a JSON array [{name, time_unix_nano, attributes}]."),
    ("links", _str, "Every span link as a JSON array [{trace_id, span_id, attributes}]."),
    ("resource", _str, "Every resource attribute as a JSON object."),
    ("dropped_attributes_count", _i64, "Attributes the client dropped before export."),
    ("received_at_unix_nano", _i64, "When the collector received the span (newest copy wins on read)."),
    ("trace_state", _str, "W3C trace state of the span."),
    ("flags", _i64, "OTLP span flags (W3C trace flags and the parent-is-remote bits)."),
    ("dropped_events_count", _i64, "Events the client dropped before export."),
    ("dropped_links_count", _i64, "Links the client dropped before export."),
    ("scope_attributes", _str, "Instrumentation scope attributes as a JSON object."),
]

EVENT_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("project", _str, "Project, decided by the API key."),
    ("event_id", _str, "Content hash of the log record; the dedup key with project."),
    ("trace_id", _str, "Trace id of the span the record belongs to (may be NULL)."),
    ("span_id", _str, "Span id of the span the record belongs to (may be NULL)."),
    ("time_unix_nano", _i64, "Record time, else its observed time, integer nanoseconds."),
    ("event_name", _str, "LogRecord.event_name (or the event.name attribute of older SDKs)."),
    ("severity_number", _i64, "OTLP severity number."),
    ("severity_text", _str, "OTLP severity text."),
    ("service_name", _str, "Resource attribute service.name."),
    ("scope_name", _str, "Instrumentation scope name."),
    ("response_id", _str, "gen_ai.response.id, used to join records emitted outside their span."),
    ("input_messages", _str, "Input messages this record contributes, JSON in OTel GenAI part form."),
    ("output_messages", _str, "Output messages this record contributes, JSON in OTel GenAI part form."),
    ("body", _str, "The record body as JSON."),
    ("attributes", _str, "Every record attribute as a JSON object."),
    ("resource", _str, "Every resource attribute as a JSON object."),
    ("received_at_unix_nano", _i64, "When the collector received the record."),
]


def _schema(table: str, columns: list[tuple[str, pa.DataType, str]]) -> pa.Schema:
    fields = [pa.field(name, dtype, nullable=True) for name, dtype, _ in columns]
    return pa.schema(fields, metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(), TABLE_KEY: table})


SPAN_SCHEMA = _schema("spans", SPAN_COLUMNS)
EVENT_SCHEMA = _schema("events", EVENT_COLUMNS)
SPAN_COLUMN_NAMES = [name for name, _, _ in SPAN_COLUMNS]
EVENT_COLUMN_NAMES = [name for name, _, _ in EVENT_COLUMNS]

SPAN_TYPES = (
    "llm",
    "embedding",
    "tool",
    "agent",
    "chain",
    "retriever",
    "reranker",
    "guardrail",
    "evaluator",
    "other",
)


def markdown_table(columns: list[tuple[str, pa.DataType, str]]) -> str:
    """The README's schema table, generated so the docs cannot drift from the code."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    for name, dtype, doc in columns:
        lines.append(f"| `{name}` | {dtype} | {doc} |")
    return "\n".join(lines)


if __name__ == "__main__":  # regenerates the README's schema section
    print("#### `spans`\n")
    print(markdown_table(SPAN_COLUMNS))
    print("\n#### `events`\n")
    print(markdown_table(EVENT_COLUMNS))
