"""The access stage: routing never trusts the client, unreadable model calls are refused, gateway keys
and the operator's credential reach only the operations they may."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from extproc.testing.pipeline import Driver, ListRecorder, context, json_chunk, request_headers, response_headers
from extproc.wire import Immediate, Reply
from intelligence.keys.cache import KeyInfo, KeySnapshot
from intelligence.keys.material import generate_key, hash_key

KEY = generate_key()


def with_key(**settings) -> Driver:
    c = context(**settings)
    info = KeyInfo(id="k1", name="team", prefix=KEY[:12], models=("gpt-*",))
    c.keys = SimpleNamespace(snapshot=KeySnapshot.build([(hash_key(KEY), info)], datetime.now(UTC)))
    return Driver(c)


async def test_the_open_proxy_exploit_is_a_400_and_no_routing_header_survives() -> None:
    """Confirmed end to end before: a parse error let the client's x-llmproxy-* headers route anywhere."""
    spoof = {"x-llmproxy-legacy": "http", "x-llmproxy-target-host": "127.0.0.1:1"}
    path = "/?target_url=http%3A%2F%2Fx%3A99999%2F"
    r = await Driver(context(auth_mode="required")).round(request_headers(path, **spoof), json_chunk({}))
    assert isinstance(r.request_headers, Immediate) and r.request_headers.status == 401  # no key: refused first
    r = await Driver(context()).round(request_headers(path, **spoof), json_chunk({}))
    assert isinstance(r.request_headers, Immediate) and r.request_headers.status == 400  # answered, never forwarded


async def test_client_routing_headers_are_removed_on_every_route() -> None:
    d = Driver(context())
    spoof = {"x-llmproxy-provider": "anthropic", "x-llmproxy-target-host": "evil:1"}
    r = await d.round(request_headers("/openai/v1/chat/completions", **spoof), json_chunk({"model": "gpt-4o", "messages": []}))
    assert isinstance(r.request_headers, Reply)
    assert {"x-llmproxy-provider", "x-llmproxy-target-host"} <= set(r.request_headers.remove_headers)
    assert r.request_headers.clear_route_cache


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"model": "gpt-4o", "messages": [], "messages": [{"role": "user", "content": "hidden"}]}',  # duplicate keys
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "\xff\xfe"}]}',  # invalid UTF-8
        b'["a", "list"]',
        b"[" * 100_000 + b"]" * 100_000,  # nesting bomb
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "call \\ud800 +1 415-555-0100"}]}',  # lone surrogate
    ],
)
async def test_a_model_call_the_gateway_cannot_read_is_refused(raw: bytes) -> None:
    c = context()
    r = await Driver(c).round(request_headers("/openai/v1/chat/completions"), json_chunk(raw))
    assert isinstance(r.answer, Immediate) and r.answer.status == 400
    assert json.loads(r.answer.body)["error"]["code"] == "invalid_json"
    (rec,) = c.recorder.records
    assert rec.status == 400


async def test_a_byte_order_mark_is_read_like_a_provider_would() -> None:
    c = context()
    body = b"\xef\xbb\xbf" + json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
    r = await Driver(c).round(
        request_headers("/openai/v1/chat/completions"), json_chunk(body), response=response_headers(), chunks=[b"{}"]
    )
    assert r.answer is None and r.ex.request.view is not None and r.ex.request.view.last_user == "hi"


async def test_a_body_on_a_path_that_is_not_a_model_call_is_forwarded_and_noted() -> None:
    c = context()
    r = await Driver(c).round(
        request_headers("/openai/v1/files"), json_chunk(b"--multipart--"), response=response_headers(), chunks=[b"{}"]
    )
    assert r.answer is None
    assert c.recorder.records[0].flags["request_not_json"] is True


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/openai/v1/files"),
        ("GET", "/openai/v1/files/file-abc/content"),
        ("GET", "/openai/v1/chat/completions"),  # stored completions
        ("GET", "/openai/v1/chat/completions/chatcmpl-1/messages"),
        ("POST", "/openai/v1/batches"),
        ("POST", "/openai/v1/fine_tuning/jobs"),
        ("DELETE", "/openai/v1/models/ft-x"),
        ("POST", "/anthropic/v1/messages/batches"),
    ],
)
async def test_a_gateway_key_reaches_only_model_calls(method: str, path: str) -> None:
    d = with_key(auth_mode="required", provider_keys={"openai": "sk-op", "anthropic": "sk-ant"})
    r = await d.round(request_headers(path, method=method, eos=True, authorization=f"Bearer {KEY}"))
    assert isinstance(r.answer, Immediate) and r.answer.status == 403
    assert json.loads(r.answer.body)["error"]["code"] == "operation_not_allowed"


async def test_an_injected_operator_key_reaches_only_model_calls_in_passthrough_too() -> None:
    d = Driver(context(provider_keys={"openai": "sk-op"}))
    r = await d.round(request_headers("/openai/v1/files", method="GET", eos=True))
    assert isinstance(r.answer, Immediate) and r.answer.status == 403
    # with the client's own key (nothing injected) the gateway is a pass-through for any endpoint
    r = await Driver(context()).round(request_headers("/openai/v1/files", method="GET", eos=True, authorization="Bearer sk-own"))
    assert r.answer is None


async def test_model_calls_and_model_listing_pass_with_a_gateway_key() -> None:
    d = with_key(auth_mode="required", provider_keys={"openai": "sk-op"})
    r = await d.round(request_headers("/openai/v1/models", method="GET", eos=True, authorization=f"Bearer {KEY}"))
    assert isinstance(r.request_headers, Reply) and r.request_headers.set_headers["authorization"] == "Bearer sk-op"
    body = json_chunk({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    r = await d.round(request_headers("/openai/v1/chat/completions", authorization=f"Bearer {KEY}"), body)
    assert isinstance(r.request_body, Reply) and r.answer is None


async def test_fallback_models_are_inside_the_key_scope_too() -> None:
    d = with_key(auth_mode="required", provider_keys={"openrouter": "sk-or"})
    body = {"model": "gpt-4o", "models": ["gpt-4o-mini", "anthropic/claude-3-opus"], "messages": []}
    r = await d.round(request_headers("/openrouter/v1/chat/completions", authorization=f"Bearer {KEY}"), json_chunk(body))
    assert isinstance(r.answer, Immediate) and r.answer.status == 403
    assert "anthropic/claude-3-opus" in json.loads(r.answer.body)["error"]["message"]
    ok = {"model": "gpt-4o", "models": ["gpt-4o-mini"], "messages": []}
    r = await d.round(request_headers("/openrouter/v1/chat/completions", authorization=f"Bearer {KEY}"), json_chunk(ok))
    assert r.answer is None


async def test_without_a_key_required_mode_refuses_before_the_body() -> None:
    recorder = ListRecorder()
    d = Driver(context(recorder, auth_mode="required"))
    r = await d.round(request_headers("/?target_url=http%3A%2F%2F127.0.0.1%3A9%2F"), json_chunk({}))
    assert isinstance(r.answer, Immediate) and r.answer.status == 401  # before anything about the allowlist


async def test_a_stale_key_snapshot_fails_closed() -> None:
    from datetime import timedelta

    c = context(auth_mode="required", provider_keys={"openai": "sk-op"}, key_max_staleness_s=60)
    info = KeyInfo(id="k1", name="team", prefix=KEY[:12])
    loaded = datetime.now(UTC) - timedelta(minutes=10)  # the database has been away for ten minutes
    c.keys = SimpleNamespace(snapshot=KeySnapshot.build([(hash_key(KEY), info)], loaded))
    r = await Driver(c).round(request_headers("/openai/v1/models", method="GET", eos=True, authorization=f"Bearer {KEY}"))
    assert isinstance(r.answer, Immediate) and r.answer.status == 503
    assert json.loads(r.answer.body)["error"]["code"] == "key_store_stale" and r.answer.headers["retry-after"] == "5"
