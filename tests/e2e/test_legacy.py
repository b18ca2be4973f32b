"""Legacy debug-proxy parity (reference/README.md): POST /?target_url= to allowlisted hosts only."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from .conftest import Stack, body_json, last_request

pytestmark = pytest.mark.e2e


def test_target_url_forwarded_to_allowlisted_host(stack: Stack) -> None:
    target = quote(f"{stack.fake.base_url}/v1/chat/completions?trace=1", safe="")
    r = httpx.post(
        f"{stack.url}/?target_url={target}",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "legacy hello"}]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "echo: legacy hello"
    up = last_request(stack.fake, "/v1/chat/completions")
    assert up.query.get("trace") == "1"
    rec = stack.record(r.headers["x-llmproxy-request-id"])
    assert rec.route == "legacy" and rec.status == 200


def test_target_url_ollama_ndjson_stream_is_merged(stack: Stack) -> None:
    target = quote(f"{stack.fake.base_url}/api/chat", safe="")
    with httpx.stream(
        "POST",
        f"{stack.url}/?target_url={target}",
        json={"model": "llama3", "messages": [{"role": "user", "content": "ndjson please"}], "stream": True},
        headers={"x-fake-chunk-bytes": "5"},
    ) as r:
        lines = [line for line in r.iter_lines() if line]
        rid = r.headers["x-llmproxy-request-id"]
    assert len(lines) > 2  # the client still gets the stream line by line
    rec = stack.record(rid)
    assert rec.streamed
    merged = body_json(rec.response_client)
    assert merged["message"]["content"] == "echo: ndjson please"


@pytest.mark.parametrize("target", ["https://evil.example.com/v1/chat/completions", "http://127.0.0.1:1/x"])
def test_target_url_not_allowlisted_is_403(stack: Stack, target: str) -> None:
    r = httpx.post(f"{stack.url}/?target_url={quote(target, safe='')}", json={"model": "x"})
    assert r.status_code == 403
    assert "allowlist" in r.json()["error"]["message"]
    assert stack.record(r.headers["x-llmproxy-request-id"]).status == 403


@pytest.mark.parametrize("target", ["not a url", "ftp://127.0.0.1/x", "/relative/path", ""])
def test_invalid_target_url_is_400(stack: Stack, target: str) -> None:
    r = httpx.post(f"{stack.url}/?target_url={quote(target, safe='')}", json={"model": "x"})
    assert r.status_code == 400
    assert "target_url" in r.json()["error"]["message"]
