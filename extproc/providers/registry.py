"""Which adapter handles a request, by provider-relative path."""

from __future__ import annotations

from extproc.providers.anthropic_messages import MessagesEndpoint
from extproc.providers.base import Endpoint
from extproc.providers.ollama import OllamaChatEndpoint, OllamaGenerateEndpoint
from extproc.providers.openai_chat import ChatEndpoint
from extproc.providers.openai_completions import CompletionsEndpoint
from extproc.providers.openai_embeddings import EmbeddingsEndpoint
from extproc.providers.openai_responses import ResponsesEndpoint

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
