"""What agent code imports to emit good spans to agentflight (OTel GenAI conventions, current spelling).

>>> import sdk_helpers as af
>>> telemetry = af.configure(service_name="travel-agent", set_global=False)   # OTLP gRPC to localhost:4317
>>> with af.user_session(user_id="u-42", session_id="chat-7"), af.agent_run("planner"):
...     af.declare_budget(cost_usd=0.10)
...     with af.tool_call("search_flights", arguments={"to": "FCO"}) as tool:
...         tool.record({"flights": 3})
>>> telemetry.shutdown()
"""

from sdk_helpers.context import BaggageAttributes, user_session
from sdk_helpers.redaction import mask_common_secrets
from sdk_helpers.setup import Telemetry, configure
from sdk_helpers.steps import (
    agent_run,
    declare_budget,
    guardrail_check,
    human_approval,
    llm_call,
    mark_retry,
    set_prompt,
    tool_call,
)

__all__ = [
    "BaggageAttributes",
    "Telemetry",
    "agent_run",
    "configure",
    "declare_budget",
    "guardrail_check",
    "human_approval",
    "llm_call",
    "mark_retry",
    "mask_common_secrets",
    "set_prompt",
    "tool_call",
    "user_session",
]
