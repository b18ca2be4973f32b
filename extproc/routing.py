"""Which provider serves a model, and which provider a path prefix names.

Rules are glob patterns tried in order; the first match wins. Operators prepend their own with
``llmproxy up --model-route 'llama*=openai'`` (or LLMPROXY_MODEL_ROUTES='llama*=openai,mistral*=openrouter').
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from .providers.registry import PROVIDER_NAMES as PROVIDERS

DEFAULT_MODEL_ROUTES: tuple[tuple[str, str], ...] = (
    ("gpt-*", "openai"),
    ("chatgpt-*", "openai"),
    ("o1*", "openai"),
    ("o3*", "openai"),
    ("o4*", "openai"),
    ("text-embedding-*", "openai"),
    ("omni-moderation-*", "openai"),
    ("claude-*", "anthropic"),
    ("*/*", "openrouter"),  # vendor/model is OpenRouter's naming
)

# Paths the unified routes accept (the sidecar picks the provider from the body's model).
UNIFIED_PATHS = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/messages"})


def parse_route_specs(specs: list[str] | tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Parse 'GLOB=PROVIDER' items; raise ValueError naming a bad one."""
    out: list[tuple[str, str]] = []
    for spec in specs:
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            glob, sep, provider = item.partition("=")
            if not sep or not glob or provider not in PROVIDERS:
                raise ValueError(f"bad model route {item!r}: expected GLOB=PROVIDER with PROVIDER in {', '.join(PROVIDERS)}")
            out.append((glob, provider))
    return tuple(out)


@dataclass(frozen=True)
class ModelRouter:
    rules: tuple[tuple[str, str], ...] = DEFAULT_MODEL_ROUTES

    def provider_for(self, model: str | None) -> str | None:
        if not model or not isinstance(model, str):
            return None
        for glob, provider in self.rules:
            if fnmatchcase(model, glob):
                return provider
        return None


def split_provider_prefix(path: str) -> tuple[str | None, str]:
    """'/openai/v1/chat/completions?x=1' -> ('openai', '/v1/chat/completions')."""
    bare = path.split("?", 1)[0]
    for provider in PROVIDERS:
        prefix = f"/{provider}/"
        if bare.startswith(prefix):
            rest = "/" + bare[len(prefix) :]
            if provider == "openrouter" and rest.startswith("/api/"):
                rest = rest[4:]  # tolerate clients whose base_url already carries OpenRouter's /api
            return provider, rest
    return None, bare
