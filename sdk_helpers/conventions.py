"""Attribute names sdk_helpers writes: OTel GenAI (current spelling) and agentflight's own few extensions.

Our own keys cover what no convention has yet (budgets an agent declares, human approval, retry attempts);
they live under `agentflight.` so they never collide with a standard key. The detectors read the same names.
"""

from __future__ import annotations

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
REASONING_TOKENS = "gen_ai.usage.reasoning.output_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
AGENT_NAME = "gen_ai.agent.name"
AGENT_ID = "gen_ai.agent.id"
CONVERSATION_ID = "gen_ai.conversation.id"
TOOL_NAME = "gen_ai.tool.name"
TOOL_TYPE = "gen_ai.tool.type"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_RESULT = "gen_ai.tool.call.result"
PROMPT_NAME = "gen_ai.prompt.name"
PROMPT_VERSION = "gen_ai.prompt.version"
GUARDRAIL_NAME = "gen_ai.guardrail.component.name"
GUARDRAIL_POLICY = "gen_ai.guardrail.policy.id"
GUARDRAIL_SOURCE = "gen_ai.guardrail.source"
GUARDRAIL_RESULT_TYPE = "gen_ai.guardrail.result.type"
GUARDRAIL_RESULT_VALUE = "gen_ai.guardrail.result.value"
GUARDRAIL_REASON = "gen_ai.guardrail.result.reason"
GUARDRAIL_RISK_CATEGORY = "gen_ai.guardrail.risk.category"
GUARDRAIL_RISK_SCORE = "gen_ai.guardrail.risk.score"
GUARDRAIL_INPUT = "gen_ai.guardrail.content.input.value"
GUARDRAIL_OUTPUT = "gen_ai.guardrail.content.output.value"
ERROR_TYPE = "error.type"
USER_ID = "user.id"
SESSION_ID = "session.id"

BUDGET_PREFIX = "agentflight.budget."
BUDGET_METRICS = ("tokens", "cost_usd", "steps", "tool_calls", "duration_ms")
RETRY_ATTEMPT = "agentflight.retry.attempt"
RETRY_MAX_ATTEMPTS = "agentflight.retry.max_attempts"
RETRY_CAUSE = "agentflight.retry.cause"
APPROVAL_ACTION = "agentflight.approval.action"
APPROVAL_DECISION = "agentflight.approval.decision"
APPROVAL_APPROVER = "agentflight.approval.approver"

# Attributes holding content a redaction hook sees before export.
CONTENT_KEYS = frozenset(
    {
        INPUT_MESSAGES,
        OUTPUT_MESSAGES,
        SYSTEM_INSTRUCTIONS,
        TOOL_ARGUMENTS,
        TOOL_RESULT,
        GUARDRAIL_INPUT,
        GUARDRAIL_OUTPUT,
    }
)
