"""The providers and their adapters: one table of provider facts, and which adapter reads which path.

Provider facts (where the operator's key comes from, which header carries it, the default upstream,
what the operator's credential may be used for, how errors look) live here and in the adapters,
nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from extproc.providers.anthropic_messages import MessagesEndpoint
from extproc.providers.base import Endpoint
from extproc.providers.ollama import OllamaChatEndpoint, OllamaGenerateEndpoint
from extproc.providers.openai_chat import ChatEndpoint
from extproc.providers.openai_completions import CompletionsEndpoint
from extproc.providers.openai_embeddings import EmbeddingsEndpoint
from extproc.providers.openai_responses import ResponsesEndpoint


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    key_env: str  # the operator's key for injection (deliberately not the SDKs' own variable names)
    auth_header: str  # where the provider reads the key
    bearer: bool  # `Authorization: Bearer KEY` rather than the bare key
    default_base_url: str  # a client path /v1/x goes to BASE/v1/x
    # What the operator's credential may be used for (gateway-key traffic, or passthrough with an
    # injected key): model calls and model listing. Files, batches, stored completions, fine-tuning,
    # assistants and the rest are refused, so a key scoped to one model cannot reach them.
    operations: frozenset[tuple[str, str]]

    def credential(self, key: str) -> tuple[str, str]:
        """(header, value) that carries ``key`` upstream."""
        return self.auth_header, f"Bearer {key}" if self.bearer else key


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider(
            "openai", "LLMPROXY_OPENAI_API_KEY", "authorization", True, "https://api.openai.com",
            frozenset({("POST", "/v1/chat/completions"), ("POST", "/v1/responses"), ("POST", "/v1/embeddings"),
                       ("POST", "/v1/completions"), ("GET", "/v1/models")}),
        ),
        Provider(
            "anthropic", "LLMPROXY_ANTHROPIC_API_KEY", "x-api-key", False, "https://api.anthropic.com",
            frozenset({("POST", "/v1/messages"), ("POST", "/v1/messages/count_tokens"), ("GET", "/v1/models")}),
        ),
        Provider(
            "openrouter", "LLMPROXY_OPENROUTER_API_KEY", "authorization", True, "https://openrouter.ai/api",
            frozenset({("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
                       ("GET", "/v1/models")}),
        ),
    )
}  # fmt: skip
PROVIDER_NAMES = tuple(PROVIDERS)


def operation_allowed(provider: str | None, method: str, rel_path: str) -> bool:
    """May the operator's credential be used for ``method rel_path`` on ``provider``?"""
    info = PROVIDERS.get(provider or "")
    if info is None:
        return False
    path = rel_path.split("?", 1)[0].rstrip("/") or "/"
    if path.startswith(_OPENROUTER_PREFIX + "/v1/"):
        path = path[len(_OPENROUTER_PREFIX) :]
    return (method.upper(), path) in info.operations


# Adapters are stateless, so one instance each serves every request.
_BY_PATH: dict[str, Endpoint] = {
    "/v1/chat/completions": ChatEndpoint(),
    "/v1/responses": ResponsesEndpoint(),
    "/v1/embeddings": EmbeddingsEndpoint(),
    "/v1/messages": MessagesEndpoint(),
    "/v1/completions": CompletionsEndpoint(),
    "/api/chat": OllamaChatEndpoint(),
    "/api/generate": OllamaGenerateEndpoint(),
}

_OPENROUTER_PREFIX = "/api"


def endpoint_for(path: str, method: str = "POST") -> Endpoint | None:
    """The adapter for a provider-relative path (e.g. ``/v1/chat/completions``).

    Only POSTs carry model calls; ``/api/v1/...`` (OpenRouter) is treated as ``/v1/...``.
    """
    if method.upper() != "POST":
        return None
    path = path.split("?", 1)[0]
    if len(path) > 1:
        path = path.rstrip("/")
    if path.startswith(_OPENROUTER_PREFIX + "/v1/"):
        path = path[len(_OPENROUTER_PREFIX) :]
    return _BY_PATH.get(path)


# The API a provider-relative path speaks: the shape of the gateway's own errors on it, and the
# api recorded for requests that never reached an adapter (refused at the headers).
_API_BY_PATH = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
    "/v1/messages": "messages",
    "/v1/completions": "completions",
    "/api/chat": "ollama_chat",
    "/api/generate": "ollama_generate",
}


def api_of(rel_path: str) -> str | None:
    return _API_BY_PATH.get(rel_path.removeprefix("/api") if rel_path.startswith("/api/v1/") else rel_path)


# The two error formats the gateway's own answers take: Anthropic's on the Messages API, OpenAI's
# (which OpenRouter and OpenAI-compatible servers share) everywhere else. SDKs parse these like any
# provider error.
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error"}  # fmt: skip
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}  # fmt: skip


def error_body(api: str | None, status: int, message: str, code: str | None) -> bytes:
    if api == "messages":
        doc: dict = {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    else:
        doc = {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "api_error"), "param": None, "code": code}}
    return json.dumps(doc).encode()
