"""Whole exchanges through the default pipeline, without gRPC: phases in, typed replies and one record out."""

from __future__ import annotations

import json

from extproc.auth import key_fingerprint
from extproc.stages.record import safe_headers
from extproc.testing.pipeline import Driver, context, json_chunk, request_headers, response_headers
from extproc.wire import Immediate, Phase, Reply

CHAT_RESP = {
    "id": "c1",
    "object": "chat.completion",
    "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
CLIENT = {"authorization": "Bearer sk-secret", "accept-encoding": "gzip"}


async def run_json(driver: Driver, path: str, body: dict | bytes, status: int = 200, resp: dict | None = None, **hdrs: str):
    return await driver.round(
        request_headers(path, **{**CLIENT, **hdrs}),
        json_chunk(body),
        response=response_headers(status),
        chunks=[json.dumps(resp or {}).encode()],
    )


async def test_prefix_route_records_everything_and_strips_routing_headers() -> None:
    c = context()
    r = await run_json(
        Driver(c),
        "/openai/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]},
        resp=CHAT_RESP,
        **{"x-llmproxy-provider": "anthropic"},
    )
    r1, r3 = r.request_headers, r.response_headers
    assert isinstance(r1, Reply) and isinstance(r3, Reply)
    assert "accept-encoding" in r1.remove_headers and "x-llmproxy-provider" in r1.remove_headers and r1.clear_route_cache
    assert r3.set_headers["x-llmproxy-request-id"] == "rid-1"
    (rec,) = c.recorder.records
    assert rec.provider == "openai" and rec.route == "prefix" and rec.status == 200 and rec.client_addr == "10.1.2.3"
    assert rec.usage.input_tokens == 3 and rec.finish_reason == "stop" and rec.response_text == "hi"
    assert rec.client_key_fp == key_fingerprint({"authorization": "Bearer sk-secret"})
    assert "authorization" not in rec.request_headers


async def test_unified_route_sets_provider_header_and_clears_route_cache() -> None:
    r = await run_json(Driver(context()), "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []})
    assert isinstance(r.request_body, Reply)
    assert r.request_body.set_headers["x-llmproxy-provider"] == "anthropic" and r.request_body.clear_route_cache


async def test_unknown_model_is_answered_in_anthropic_format_for_messages() -> None:
    c = context()
    r = await run_json(Driver(c), "/v1/messages", {"model": "who-knows", "messages": []})
    imm = r.answer
    assert isinstance(imm, Immediate) and imm.status == 400
    doc = json.loads(imm.body)
    assert doc["type"] == "error" and "who-knows" in doc["error"]["message"]
    assert c.recorder.records[0].status == 400


async def test_credentials_injected_when_operator_sets_a_key() -> None:
    d = Driver(context(provider_keys={"anthropic": "sk-ant-operator"}))
    ex = d.exchange()
    await d.send(ex, Phase.REQUEST_HEADERS, request_headers("/v1/messages", **{"x-api-key": "sk-client", "authorization": "x"}))
    r2 = await d.send(ex, Phase.REQUEST_BODY, json_chunk({"model": "claude-3-haiku", "messages": []}))
    assert isinstance(r2, Reply)
    assert r2.set_headers["x-api-key"] == "sk-ant-operator"
    assert set(r2.remove_headers) == {"authorization", "x-api-key"}
    d2 = Driver(context(provider_keys={"openai": "sk-op"}))
    r = await d2.send(d2.exchange(), Phase.REQUEST_HEADERS, request_headers("/openai/v1/models", method="GET", eos=True))
    assert isinstance(r, Reply) and r.set_headers["authorization"] == "Bearer sk-op"


async def test_unified_route_without_body_is_400() -> None:
    d = Driver(context())
    r = await d.send(d.exchange(), Phase.REQUEST_HEADERS, request_headers("/v1/chat/completions", eos=True))
    assert isinstance(r, Immediate) and r.status == 400


async def test_abort_records_once_with_reason() -> None:
    c = context()
    d = Driver(c)
    ex = d.exchange()
    await d.send(ex, Phase.REQUEST_HEADERS, request_headers("/openai/v1/chat/completions"))
    await d.abort(ex, "client went away")
    await d.abort(ex, "again")
    (rec,) = c.recorder.records
    assert rec.error == "client went away" and rec.status is None


async def test_body_logging_is_capped() -> None:
    c = context(log_body_max=100)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 500}]}
    await run_json(Driver(c), "/openai/v1/chat/completions", body, resp=CHAT_RESP)
    rec = c.recorder.records[0]
    assert rec.request_client is not None
    assert rec.request_client.truncated and len(rec.request_client.text or "") == 100 and rec.request_client.size > 500


def test_safe_headers_drop_credentials() -> None:
    h = safe_headers(
        {"authorization": "a", "x-api-key": "b", "x-goog-api-key": "c", "cookie": "d", "x-session-id": "s", ":path": "/"}
    )
    assert h == {"x-session-id": "s"}


async def test_a_client_supplied_forwarded_for_is_not_the_client_address() -> None:
    c = context()
    d = Driver(c)
    headers = request_headers("/openai/v1/chat/completions", peer="", **{"x-forwarded-for": "6.6.6.6"})
    await run_json(d, "/openai/v1/chat/completions", {"model": "gpt-4o", "messages": []})
    r = await d.round(headers, json_chunk({"model": "gpt-4o", "messages": []}), response=response_headers(), chunks=[b"{}"])
    assert r.answer is None
    assert c.recorder.records[-1].client_addr is None
