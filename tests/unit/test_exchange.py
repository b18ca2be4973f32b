"""The exchange state machine without gRPC: phases in, typed replies and one record out."""

from __future__ import annotations

import json

from extproc.exchange import Context, Exchange, key_fingerprint, safe_headers
from extproc.settings import SidecarSettings
from extproc.wire import BodyChunk, Headers, Immediate, Phase, Reply


class ListRecorder:
    def __init__(self) -> None:
        self.records = []

    def submit(self, record) -> None:
        self.records.append(record)


def ctx(**kw) -> Context:
    return Context(settings=SidecarSettings(**kw), recorder=ListRecorder())


def req_headers(path: str, eos: bool = False, **extra: str) -> Headers:
    h = {
        ":method": "POST",
        ":path": path,
        "x-request-id": "rid-1",
        "content-type": "application/json",
        "authorization": "Bearer sk-secret",
        "accept-encoding": "gzip",
        **extra,
    }
    return Headers(h, eos, {"source.address": "10.1.2.3:5555"})


def run_json(c: Context, path: str, body: dict | bytes, status: int = 200, resp: dict | None = None, **hdrs):
    ex = Exchange(c)
    r1 = ex.handle(Phase.REQUEST_HEADERS, req_headers(path, **hdrs))
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r2 = ex.handle(Phase.REQUEST_BODY, BodyChunk(raw, True))
    if isinstance(r2, Immediate):
        return ex, r1, r2, None, None
    r3 = ex.handle(Phase.RESPONSE_HEADERS, Headers({":status": str(status), "content-type": "application/json"}, False))
    r4 = ex.handle(Phase.RESPONSE_BODY, BodyChunk(json.dumps(resp or {}).encode(), True))
    return ex, r1, r2, r3, r4


CHAT_RESP = {
    "id": "c1",
    "object": "chat.completion",
    "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def test_prefix_route_records_everything_and_strips_routing_headers() -> None:
    c = ctx()
    ex, r1, r2, r3, r4 = run_json(
        c,
        "/openai/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]},
        resp=CHAT_RESP,
        **{"x-llmproxy-provider": "anthropic"},
    )
    assert "accept-encoding" in r1.remove_headers and "x-llmproxy-provider" in r1.remove_headers and r1.clear_route_cache
    assert r3.set_headers["x-llmproxy-request-id"] == "rid-1"
    (rec,) = c.recorder.records
    assert rec.provider == "openai" and rec.route == "prefix" and rec.status == 200 and rec.client_addr == "10.1.2.3"
    assert rec.usage.input_tokens == 3 and rec.finish_reason == "stop"
    assert rec.client_key_fp == key_fingerprint({"authorization": "Bearer sk-secret"})
    assert "authorization" not in rec.request_headers


def test_unified_route_sets_provider_header_and_clears_route_cache() -> None:
    c = ctx()
    _, _, r2, _, _ = run_json(c, "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []})
    assert r2.set_headers["x-llmproxy-provider"] == "anthropic" and r2.clear_route_cache


def test_unknown_model_is_answered_in_anthropic_format_for_messages() -> None:
    c = ctx()
    _, _, imm, _, _ = run_json(c, "/v1/messages", {"model": "who-knows", "messages": []})
    assert isinstance(imm, Immediate) and imm.status == 400
    doc = json.loads(imm.body)
    assert doc["type"] == "error" and "who-knows" in doc["error"]["message"]
    assert c.recorder.records[0].status == 400


def test_credentials_injected_when_operator_sets_a_key() -> None:
    c = ctx(provider_keys={"anthropic": "sk-ant-operator"})
    ex = Exchange(c)
    ex.handle(Phase.REQUEST_HEADERS, req_headers("/v1/messages", **{"x-api-key": "sk-client"}))
    r2 = ex.handle(Phase.REQUEST_BODY, BodyChunk(json.dumps({"model": "claude-3-haiku", "messages": []}).encode(), True))
    assert r2.set_headers["x-api-key"] == "sk-ant-operator"
    assert set(r2.remove_headers) == {"authorization", "x-api-key"}
    ex2 = Exchange(ctx(provider_keys={"openai": "sk-op"}))
    r = ex2.handle(Phase.REQUEST_HEADERS, req_headers("/openai/v1/models", eos=True))
    assert r.set_headers["authorization"] == "Bearer sk-op"


def test_unified_route_without_body_is_400() -> None:
    c = ctx()
    r = Exchange(c).handle(Phase.REQUEST_HEADERS, req_headers("/v1/chat/completions", eos=True))
    assert isinstance(r, Immediate) and r.status == 400


def test_abort_records_once_with_reason() -> None:
    c = ctx()
    ex = Exchange(c)
    ex.handle(Phase.REQUEST_HEADERS, req_headers("/openai/v1/chat/completions"))
    ex.abort("client went away")
    ex.abort("again")
    (rec,) = c.recorder.records
    assert rec.error == "client went away" and rec.status is None


def test_a_bug_in_a_phase_passes_through_and_is_recorded(monkeypatch) -> None:
    c = ctx()
    ex = Exchange(c)
    ex.handle(Phase.REQUEST_HEADERS, req_headers("/openai/v1/chat/completions"))
    monkeypatch.setattr(ex, "_request_body", lambda ev: 1 / 0)
    assert isinstance(ex.handle(Phase.REQUEST_BODY, BodyChunk(b"{}", True)), Reply)
    ex.abort("end")
    assert "sidecar error in request_body" in c.recorder.records[0].error


def test_body_logging_is_capped() -> None:
    c = ctx(log_body_max=100)
    run_json(
        c,
        "/openai/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 500}]},
        resp=CHAT_RESP,
    )
    rec = c.recorder.records[0]
    assert rec.request_client.truncated and len(rec.request_client.text) == 100 and rec.request_client.size > 500


def test_safe_headers_drop_credentials() -> None:
    h = safe_headers(
        {"authorization": "a", "x-api-key": "b", "x-goog-api-key": "c", "cookie": "d", "x-session-id": "s", ":path": "/"}
    )
    assert h == {"x-session-id": "s"}
