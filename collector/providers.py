"""Provider normalisation (docs/conventions.md §1d): an emitted provider/system spelling, API host or model prefix ->
the genai-prices provider id."""

from __future__ import annotations

from typing import Any

# Seen value (lower-cased) -> genai-prices provider id. Values not listed are lower-cased and passed through.
_PROVIDER_IDS: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    # AWS
    "aws.bedrock": "aws",
    "bedrock": "aws",
    "aws": "aws",
    "amazon-bedrock": "aws",
    "amazon_bedrock": "aws",
    "aws_bedrock": "aws",
    # Azure OpenAI (the raw value would resolve to openai by substring match in genai-prices)
    "azure.ai.openai": "azure",
    "az.ai.openai": "azure",
    "azure": "azure",
    "azure_openai": "azure",
    "azure-openai": "azure",
    "azure.openai": "azure",
    # Google
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "vertex_ai": "google",
    "vertexai": "google",
    "vertex": "google",
    "gemini": "google",
    "google": "google",
    "google_genai": "google",
    "google.generative-ai": "google",
    "google-generative-ai": "google",
    "google.vertex": "google",
    # the rest
    "x_ai": "x-ai",
    "xai": "x-ai",
    "x-ai": "x-ai",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "mistral": "mistral",
    "moonshot_ai": "moonshotai",
    "moonshot": "moonshotai",
    "moonshotai": "moonshotai",
    "together_ai": "together",
    "togetherai": "together",
    "together": "together",
    "fireworks_ai": "fireworks",
    "fireworksai": "fireworks",
    "fireworks": "fireworks",
    "groq": "groq",
    "deepseek": "deepseek",
    "cohere": "cohere",
    "cohere_ai": "cohere",
    "perplexity": "perplexity",
    "cerebras": "cerebras",
    "openrouter": "openrouter",
}

# API host (exact) -> provider id.
_HOSTS: dict[str, str] = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "google",
    "aiplatform.googleapis.com": "google",
    "api.mistral.ai": "mistral",
    "api.x.ai": "x-ai",
    "api.groq.com": "groq",
    "api.deepseek.com": "deepseek",
    "api.together.xyz": "together",
    "api.together.ai": "together",
    "api.fireworks.ai": "fireworks",
    "api.cohere.ai": "cohere",
    "api.cohere.com": "cohere",
    "api.perplexity.ai": "perplexity",
    "api.moonshot.ai": "moonshotai",
    "api.moonshot.cn": "moonshotai",
    "openrouter.ai": "openrouter",
    "api.cerebras.ai": "cerebras",
}

# API host suffix -> provider id (regional / per-resource hosts).
_HOST_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".openai.azure.com", "azure"),
    (".aiplatform.googleapis.com", "google"),
    (".amazonaws.com", "aws"),  # bedrock-runtime.<region>.amazonaws.com
)


def normalise_provider(value: Any) -> str | None:
    """The genai-prices provider id for an emitted provider/system value; unknown values lower-cased."""
    if not isinstance(value, str):
        return None
    raw = value.strip().lower()
    if not raw:
        return None
    known = _PROVIDER_IDS.get(raw)
    if known is not None:
        return known
    # Vercel AI SDK style "openai.chat", "anthropic.messages", "azure-openai.chat".
    head, dot, _ = raw.partition(".")
    if dot:
        known = _PROVIDER_IDS.get(head)
        if known is not None:
            return known
    return raw


def provider_from_host(address: Any) -> str | None:
    """Provider id for an API host name or URL (``api.openai.com``, ``https://api.openai.com/v1/``)."""
    if not isinstance(address, str) or not address:
        return None
    host = address.strip().lower()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].split(":", 1)[0]
    known = _HOSTS.get(host)
    if known is not None:
        return known
    for suffix, provider in _HOST_SUFFIXES:
        if host.endswith(suffix):
            if provider == "aws" and "bedrock" not in host:
                continue
            return provider
    return None


def provider_from_model(model: Any) -> str | None:
    """Provider id from a ``provider/model`` model id, only when the prefix is a known provider."""
    if not isinstance(model, str) or "/" not in model:
        return None
    return _PROVIDER_IDS.get(model.split("/", 1)[0].strip().lower())
