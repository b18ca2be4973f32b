"""The record stage: one record per exchange, and the log never keeps a secret, whatever happened."""

from __future__ import annotations

import json
from types import SimpleNamespace

from extproc.screening import Guard
from extproc.testing.guard import fixed_policy
from extproc.testing.pipeline import Driver, context, json_chunk, request_headers, response_headers
from extproc.toolnames import ToolNameCodec
from extproc.wire import Immediate
from intelligence.detectors.secrets import shared_secret_detector

# Vendor key formats, made up for this test (never real credentials).
AWS = "AKIA" + "Z7QW3ERTY5UIOP2A"
GH = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"

BLOCK_ON_SECRETS = """
version: 1
name: t
rules:
  - id: no-secrets
    match: {secrets: any}
    actions: {block: true}
"""
MONITOR_SECRETS = """
version: 1
name: t
rules:
  - id: watch
    mode: monitor
    match: {secrets: any}
    actions: {block: true}
"""
NO_DETECTORS = """
version: 1
name: t
rules:
  - id: tag
    match: {apis: [chat]}
    actions: {tag: seen}
"""


class Quiet:
    def scan(self, segs, budget_ms=None):
        return SimpleNamespace(score=0.0, layers=(), flags=())


def guarded(policy: str) -> Driver:
    c = context()
    watcher = fixed_policy(policy)
    c.guard = Guard(watcher, secrets=shared_secret_detector(), pii=None, injection=Quiet())
    return Driver(c)


def chat(text: str) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}


def logged(d: Driver) -> str:
    (rec,) = d.ctx.recorder.records  # type: ignore[attr-defined]
    return json.dumps([rec.request_client.to_dict() if rec.request_client else None,
                       rec.request_forwarded.to_dict() if rec.request_forwarded else None])  # fmt: skip


async def test_a_blocked_request_is_logged_with_its_secrets_masked() -> None:
    d = guarded(BLOCK_ON_SECRETS)
    r = await d.round(request_headers("/openai/v1/chat/completions"), json_chunk(chat(f"deploy with {AWS} and {GH}")))
    assert isinstance(r.answer, Immediate) and r.answer.status == 403
    text = logged(d)
    assert AWS not in text and GH not in text and "deploy with" in text


async def test_a_request_forwarded_in_monitor_mode_is_logged_masked() -> None:
    d = guarded(MONITOR_SECRETS)
    r = await d.round(request_headers("/openai/v1/chat/completions"), json_chunk(chat(f"key {AWS}")),
                      response=response_headers(), chunks=[b"{}"])  # fmt: skip
    assert r.answer is None and r.ex.request.forwarded is None  # forwarded as the client sent it (monitor)
    assert AWS not in logged(d)


async def test_a_request_the_guard_never_read_is_masked_before_it_is_stored() -> None:
    # a policy that runs no secret detector, a legacy body, a body that is not JSON, a refusal at the access stage
    d = guarded(NO_DETECTORS)
    await d.round(
        request_headers("/openai/v1/chat/completions"),
        json_chunk(chat(f"key {AWS}")),
        response=response_headers(),
        chunks=[b"{}"],
    )
    assert AWS not in logged(d)
    d = guarded(NO_DETECTORS)
    await d.round(
        request_headers("/openai/v1/files"),
        json_chunk(f"raw upload with {GH}".encode()),
        response=response_headers(),
        chunks=[b"{}"],
    )
    assert GH not in logged(d)
    d = guarded(NO_DETECTORS)
    r = await d.round(request_headers("/openai/v1/chat/completions"), json_chunk(f"broken json {GH}".encode()))
    assert isinstance(r.answer, Immediate) and GH not in logged(d)


async def test_the_record_carries_a_provider_neutral_summary_of_the_response() -> None:
    alias = ToolNameCodec().encode("fs.read")  # what the provider sees for the client's "fs.read"
    call = {"id": "t1", "type": "function", "function": {"name": alias, "arguments": '{"p": 1}'}}
    message = {"role": "assistant", "content": "calling", "tool_calls": [call]}
    resp = {
        "id": "c",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
    }
    body = {"model": "gpt-4o", "messages": [], "tools": [{"type": "function", "function": {"name": "fs.read", "parameters": {}}}]}
    d = Driver(context())
    r = await d.round(
        request_headers("/openai/v1/chat/completions"),
        json_chunk(body),
        response=response_headers(),
        chunks=[json.dumps(resp).encode()],
    )
    assert r.answer is None
    (rec,) = d.ctx.recorder.records  # type: ignore[attr-defined]
    assert rec.response_text == "calling" and rec.tool_aliases == {alias: "fs.read"}
    assert rec.tool_calls == ({"name": "fs.read", "upstream_name": alias, "arguments": '{"p": 1}'},)


async def test_feedback_posts_are_not_exchanges() -> None:
    d = Driver(context())
    await d.round(request_headers("/v1/feedback", method="GET", eos=True))
    assert d.ctx.recorder.records == []  # type: ignore[attr-defined]


async def test_credentials_in_the_path_never_reach_the_log() -> None:
    d = Driver(context())
    path = "/openai/v1/models?key=AIzaSy-not-a-real-key&api_key=sk-abc&x=1"
    await d.round(request_headers(path, method="GET", eos=True), response=response_headers(eos=True))
    (rec,) = d.ctx.recorder.records  # type: ignore[attr-defined]
    assert "AIzaSy" not in rec.path and "sk-abc" not in rec.path and "x=1" in rec.path
