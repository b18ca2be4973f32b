"""The exchange's response side: reversible redaction restored for the client (JSON and SSE), model-
produced values masked, response fields edited, and the log holding the redacted forms only."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

from extproc.context import Context
from extproc.screening import Guard
from extproc.settings import SidecarSettings
from extproc.testing.guard import fixed_policy
from extproc.testing.pipeline import Bound
from extproc.wire import BodyChunk, Headers, Immediate, Phase
from intelligence.detectors.spans import Span

POLICY = """
version: 1
name: t
rules:
  - id: pii-reversible
    match: {pii: any}
    actions:
      redact: {kinds: [EMAIL_ADDRESS], in: [request], reversible: true}
  - id: outbound
    match: {apis: [chat, messages]}
    actions:
      mask: {kinds: [secrets, EMAIL_ADDRESS], in: [response]}
      strip_response_fields: [/system_fingerprint]
      rewrite_response_fields: {/service_tier: scrubbed}
"""
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
KEY = re.compile(r"sk-[A-Za-z0-9]{20,}")


class Finder:
    def __init__(self, kind: str, rx: re.Pattern[str]) -> None:
        self.kind, self.rx = kind, rx

    def find(self, text: str) -> list[Span]:
        return [Span(self.kind, m.start(), m.end(), 1.0, "test") for m in self.rx.finditer(text)]


class Quiet:
    def scan(self, segs, budget_ms=None):
        return SimpleNamespace(score=0.0, layers=(), flags=())


class Recorder:
    def __init__(self) -> None:
        self.records = []

    def submit(self, record) -> None:
        self.records.append(record)


def context(policy: str = POLICY) -> Context:
    watcher = fixed_policy(policy)
    guard = Guard(watcher, secrets=Finder("OPENAI_API_KEY", KEY), pii=Finder("EMAIL_ADDRESS", EMAIL), injection=Quiet())
    return Context(settings=SidecarSettings(), recorder=Recorder(), guard=guard)


async def start(c: Context, path: str, body: dict) -> Bound:
    ex = Bound(c)
    await ex.handle(
        Phase.REQUEST_HEADERS,
        Headers({":method": "POST", ":path": path, "x-request-id": "r1", "content-type": "application/json"}, False),
    )
    r = await ex.handle(Phase.REQUEST_BODY, BodyChunk(json.dumps(body).encode(), True))
    assert not isinstance(r, Immediate)
    forwarded = json.loads(r.body)
    assert "ann@example.com" not in json.dumps(forwarded) and "<EMAIL_1>" in json.dumps(forwarded)
    return ex


CHAT_REQ = {"model": "gpt-4o", "messages": [{"role": "user", "content": "email ann@example.com about it"}]}
LEAK = "I wrote to <EMAIL_1>; cc zed@corp.io, key sk-ABCDEFGHIJKLMNOPQRSTUVWX."


async def test_json_response_restored_for_client_masked_edited_and_logged_redacted() -> None:
    c = context()
    ex = await start(c, "/openai/v1/chat/completions", CHAT_REQ)
    r3 = await ex.handle(Phase.RESPONSE_HEADERS, Headers({":status": "200", "content-type": "application/json"}, False))
    assert r3.buffer_response_body is True and "content-length" in r3.remove_headers
    resp = {
        "id": "c1",
        "object": "chat.completion",
        "model": "gpt-4o",
        "system_fingerprint": "fp",
        "service_tier": "default",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": LEAK}, "finish_reason": "stop"}],
    }
    r4 = await ex.handle(Phase.RESPONSE_BODY, BodyChunk(json.dumps(resp).encode(), True))
    client = json.loads(r4.body)
    assert client["choices"][0]["message"]["content"] == "I wrote to ann@example.com; cc <EMAIL>, key <OPENAI_API_KEY>."
    assert "system_fingerprint" not in client and client["service_tier"] == "scrubbed"
    rec = c.recorder.records[0]
    logged = json.dumps([rec.request_client.json, rec.response_client.json, rec.response_upstream.json])
    for raw in ("ann@example.com", "zed@corp.io", "sk-ABCDEF"):
        assert raw not in logged
    assert (
        rec.response_client.json["choices"][0]["message"]["content"] == "I wrote to <EMAIL_1>; cc <EMAIL>, key <OPENAI_API_KEY>."
    )
    rp = rec.flags["response_policy"]
    assert rp["masked"] == {"EMAIL_ADDRESS": 1, "OPENAI_API_KEY": 1} and rp["restored"] == 1
    assert any("system_fingerprint" in e for e in rp["edits"]) and any("service_tier" in e for e in rp["edits"])


def sse(events: list[dict], done: bool = True) -> bytes:
    return ("".join(f"data: {json.dumps(e)}\n\n" for e in events) + ("data: [DONE]\n\n" if done else "")).encode()


async def test_streamed_chat_restores_across_chunks_and_logs_placeholders() -> None:
    c = context()
    ex = await start(c, "/openai/v1/chat/completions", {**CHAT_REQ, "stream": True})
    r3 = await ex.handle(Phase.RESPONSE_HEADERS, Headers({":status": "200", "content-type": "text/event-stream"}, False))
    assert r3.buffer_response_body is None  # streams stay streamed
    pieces = ["I wrote to <EMA", "IL_1>; cc zed@co", "rp.io, key sk-ABCDEFGHIJ", "KLMNOPQRSTUVWX."]
    raw = sse(
        [
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}],
            }
            for p in pieces
        ]
        + [
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
        ]
    )
    out = b""
    for i in range(0, len(raw), 23):
        chunk = raw[i : i + 23]
        reply = await ex.handle(Phase.RESPONSE_BODY, BodyChunk(chunk, i + 23 >= len(raw)))
        out += reply.body if reply.body is not None else chunk
    text = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in out.decode().split("\n")
        if line.startswith("data: {")
    )
    assert text == "I wrote to ann@example.com; cc <EMAIL>, key <OPENAI_API_KEY>."
    rec = c.recorder.records[0]
    assert (
        rec.response_client.json["choices"][0]["message"]["content"] == "I wrote to <EMAIL_1>; cc <EMAIL>, key <OPENAI_API_KEY>."
    )
    for raw_value in ("ann@example.com", "zed@corp.io", "sk-ABCDEF"):
        assert raw_value not in rec.response_upstream.text and raw_value not in json.dumps(rec.response_client.json)
    assert rec.flags["response_policy"]["restored"] == 1


async def test_streamed_anthropic_restores_text() -> None:
    c = context()
    ex = await start(
        c,
        "/anthropic/v1/messages",
        {
            "model": "claude-x",
            "max_tokens": 10,
            "stream": True,
            "messages": [{"role": "user", "content": "mail ann@example.com"}],
        },
    )
    await ex.handle(Phase.RESPONSE_HEADERS, Headers({":status": "200", "content-type": "text/event-stream"}, False))
    evs = [
        (
            "message_start",
            {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": []}},
        ),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Sent to <EMAIL"}},
        ),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "_1>."}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_stop", {"type": "message_stop"}),
    ]
    raw = "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in evs).encode()
    reply = await ex.handle(Phase.RESPONSE_BODY, BodyChunk(raw, True))
    deltas = [json.loads(line[6:]) for line in reply.body.decode().split("\n") if line.startswith("data: ")]
    text = "".join(d["delta"]["text"] for d in deltas if d["type"] == "content_block_delta")
    assert text == "Sent to ann@example.com."
    rec = c.recorder.records[0]
    assert "ann@example.com" not in json.dumps(rec.response_client.json)


async def test_no_screen_without_redaction_or_response_rules() -> None:
    c = context("version: 1\nname: t\nrules:\n  - id: tag\n    match: {apis: [chat]}\n    actions: {tag: x}\n")
    ex = Bound(c)
    await ex.handle(
        Phase.REQUEST_HEADERS,
        Headers({":method": "POST", ":path": "/openai/v1/chat/completions", "content-type": "application/json"}, False),
    )
    await ex.handle(Phase.REQUEST_BODY, BodyChunk(json.dumps(CHAT_REQ).encode(), True))
    r3 = await ex.handle(Phase.RESPONSE_HEADERS, Headers({":status": "200", "content-type": "application/json"}, False))
    assert ex.ex.response_screen is None and r3.buffer_response_body is None  # the hot path stays a pass-through
