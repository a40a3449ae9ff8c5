"""What readiness checks need to know about a model id: is it pinned to a version, and how large is its context.

Pinning rule (a model id names a fixed version, or a moving alias that the provider may re-point any day):

- an id holding `latest` (`claude-3-5-sonnet-latest`, `chatgpt-4o-latest`, `llama3:latest`) is an alias;
- an id holding a date (`gpt-4o-2024-08-06`, `claude-3-5-sonnet-20241022`, OpenAI's `-0613`), a numbered
  version suffix (Gemini `-002`, Bedrock `-v2:0`, Vertex `@001`), or a fine-tune (`ft:`) is pinned;
- otherwise, when the provider answered with a different, pinned id that extends the requested one
  (`gpt-4o-mini` answered by `gpt-4o-mini-2024-07-18`), the trace itself proves the request used an alias;
- otherwise the id is not judged from one trace: an undated `gpt-4o` whose answer names no model may be an
  alias or a deployment name (Azure, a gateway, a self-hosted server). The readiness report lists such ids
  separately (query/readiness/models.py), as undated names at providers known to alias them.

Context windows come from genai-prices' model table (`context_window`, known for ~1,400 of its ~2,300 models);
a model it does not know has no window and is not judged. Lookups are memoised per distinct id.
"""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache

from genai_prices import data_snapshot
from genai_prices.types import ModelInfo

# Providers (as the collector normalises them) whose undated model names are documented aliases of snapshots;
# the readiness report names their undated ids as likely aliases.
ALIASING_PROVIDERS = frozenset({"openai", "anthropic", "google", "mistral", "xai"})

_LATEST = re.compile(r"latest", re.IGNORECASE)
_PINNED = re.compile(
    r"(?:19|20)\d{2}-?(?:0[1-9]|1[0-2])-?(?:0[1-9]|[12]\d|3[01])"  # 2024-08-06, 20241022
    r"|-(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?=$|[-:@.])"  # gpt-4-0613, gpt-3.5-turbo-1106
    r"|-\d{3}$|@\d{3}$"  # gemini-1.5-pro-002, gemini-1.0-pro@001
    r"|-v\d+(?::\d+)?$"  # anthropic.claude-...-v2:0, amazon.titan-text-express-v1
    r"|^ft:",
    re.IGNORECASE,
)


def pinned_id(model: str) -> bool:
    """The id itself names a fixed version (a date, a numbered version, a fine-tune) and no `latest`."""
    return not _LATEST.search(model) and bool(_PINNED.search(model))


def unpinned_reason(
    provider: str | None, request_model: str, response_model: str | None, pinned_globs: tuple[str, ...] = ()
) -> str | None:
    """Why `request_model` is a moving alias (a short reason for the evidence), or None if it is pinned or
    cannot be judged."""
    lowered = request_model.lower()
    if any(fnmatch.fnmatchcase(lowered, g.lower()) for g in pinned_globs):
        return None
    if _LATEST.search(request_model):
        return "the id names the latest version"
    if pinned_id(request_model):
        return None
    if (
        response_model
        and response_model.lower() != lowered
        and response_model.lower().startswith(lowered)
        and pinned_id(response_model)
    ):
        return f"the provider resolved it to {response_model}"
    return None


@lru_cache(maxsize=4096)
def _info(provider: str | None, model: str) -> ModelInfo | None:
    snapshot = data_snapshot.get_snapshot()
    try:
        _, info = snapshot.find_provider_model(model, None, provider or None, None)
    except LookupError:
        if not provider:
            return None
        try:  # the provider id may be ours, not the table's (e.g. a gateway): match on the model alone
            _, info = snapshot.find_provider_model(model, None, None, None)
        except LookupError:
            return None
    return info


def known(provider: str | None, model: str) -> bool:
    """The price table knows the model (a made-up or misspelt id is not judged an alias)."""
    return _info(provider, model) is not None


def context_window(provider: str | None, model: str) -> int | None:
    """Input tokens the model accepts, from genai-prices, or None when the table does not know the model."""
    info = _info(provider, model)
    return info.context_window or None if info is not None else None
