"""Policy `route: {provider}` on the unified routes: the upstream changes and the credential follows."""

from __future__ import annotations

import json

from extproc.context import Context
from extproc.screening import Guard
from extproc.settings import SidecarSettings
from extproc.testing.guard import fixed_policy
from extproc.testing.pipeline import Bound
from extproc.wire import BodyChunk, Headers, Phase

from .test_response_exchange import EMAIL, KEY, Finder, Quiet, Recorder

POLICY = """
version: 1
name: r
rules:
  - id: to-openrouter
    match: {headers: [x-cheap]}
    actions: {route: {provider: openrouter}}
  - id: to-anthropic
    match: {headers: [x-claude]}
    actions: {route: {provider: anthropic, model: claude-haiku-4-5}}
  - id: to-nowhere
    match: {headers: [x-nowhere]}
    actions: {route: {provider: mars}}
"""


def context() -> Context:
    watcher = fixed_policy(POLICY)
    guard = Guard(watcher, secrets=Finder("OPENAI_API_KEY", KEY), pii=Finder("EMAIL_ADDRESS", EMAIL), injection=Quiet())
    keys = {"openai": "sk-op", "openrouter": "sk-or", "anthropic": "sk-ant-op"}
    return Context(settings=SidecarSettings(provider_keys=keys), recorder=Recorder(), guard=guard)


async def send(c: Context, path: str, **headers: str):
    ex = Bound(c)
    await ex.handle(
        Phase.REQUEST_HEADERS,
        Headers({":method": "POST", ":path": path, "x-request-id": "r", "content-type": "application/json", **headers}, False),
    )
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    return ex, await ex.handle(Phase.REQUEST_BODY, BodyChunk(json.dumps(body).encode(), True))


async def test_route_to_another_provider_moves_the_credential() -> None:
    ex, r = await send(context(), "/v1/chat/completions", **{"x-cheap": "1"})
    assert r.set_headers["x-llmproxy-provider"] == "openrouter" and r.clear_route_cache
    assert r.set_headers["authorization"] == "Bearer sk-or"
    assert ex.provider == "openrouter" and ex.flags["policy_route"] == {"from": "openai", "to": "openrouter"}

    ex, r = await send(context(), "/v1/chat/completions", **{"x-claude": "1"})
    assert r.set_headers["x-llmproxy-provider"] == "anthropic" and r.set_headers["x-api-key"] == "sk-ant-op"
    assert "authorization" not in r.set_headers  # the OpenAI credential does not travel to Anthropic
    assert json.loads(r.body)["model"] == "claude-haiku-4-5"


async def test_route_without_rule_or_to_unknown_provider_keeps_the_upstream() -> None:
    ex, r = await send(context(), "/v1/chat/completions")
    assert r.set_headers["x-llmproxy-provider"] == "openai" and "policy_route" not in ex.flags
    ex, r = await send(context(), "/v1/chat/completions", **{"x-nowhere": "1"})
    assert r.set_headers["x-llmproxy-provider"] == "openai" and "unknown provider" in ex.flags["policy_route"]["skipped"]


async def test_prefix_route_keeps_its_provider_and_says_so() -> None:
    ex, r = await send(context(), "/openai/v1/chat/completions", **{"x-cheap": "1"})
    assert "x-llmproxy-provider" not in r.set_headers and ex.provider == "openai"
    assert "prefix route" in ex.flags["policy_route"]["skipped"]
