"""The metering stage: a key with token budgets is charged for streamed responses too."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

from extproc.testing.pipeline import Driver, context, json_chunk, request_headers, response_headers
from intelligence.keys.cache import KeyInfo, KeySnapshot
from intelligence.keys.material import Budgets, generate_key, hash_key

KEY = generate_key()


class Meter:
    def __init__(self) -> None:
        self.charged: list[tuple[str, int]] = []

    def admit(self, key_id: str):
        return None

    def record(self, key_id: str, tokens: int = 0, requests: int = 0) -> None:
        self.charged.append((key_id, tokens))


def driver(budgets: Budgets) -> tuple[Driver, Meter]:
    c = context(auth_mode="required", provider_keys={"openai": "sk-op"})
    info = KeyInfo(id="k1", name="metered", prefix=KEY[:12], budgets=budgets)
    c.keys = SimpleNamespace(snapshot=KeySnapshot.build([(hash_key(KEY), info)], datetime.now(UTC)))
    meter = Meter()
    c.meter = meter  # type: ignore[assignment]
    return Driver(c), meter


def sse(*events: dict) -> bytes:
    return ("".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n").encode()


CHUNK = {
    "id": "c",
    "object": "chat.completion.chunk",
    "model": "gpt-4o",
    "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
}
LAST = {
    "id": "c",
    "object": "chat.completion.chunk",
    "model": "gpt-4o",
    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
}
USAGE = {
    "id": "c",
    "object": "chat.completion.chunk",
    "model": "gpt-4o",
    "choices": [],
    "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
}
BODY = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def test_a_metered_stream_asks_for_usage_charges_it_and_hides_the_extra_event() -> None:
    d, meter = driver(Budgets(tpm=1000))
    raw = sse(CHUNK, LAST, USAGE)
    r = await d.round(request_headers("/openai/v1/chat/completions", authorization=f"Bearer {KEY}"), json_chunk(BODY),
                      response=response_headers(content_type="text/event-stream"), chunks=[raw[:40], raw[40:]])  # fmt: skip
    assert r.answer is None
    assert r.request_body is not None and json.loads(r.request_body.body)["stream_options"] == {"include_usage": True}  # type: ignore[union-attr]
    client = b"".join(
        (reply.body if reply.body is not None else chunk) for reply, chunk in zip(r.response_body, [raw[:40], raw[40:]])
    )  # type: ignore[union-attr]
    assert b'"usage"' not in client and client.endswith(b"data: [DONE]\n\n") and b'"content": "hi"' in client
    assert meter.charged == [("k1", 10)]
    (rec,) = d.ctx.recorder.records  # type: ignore[attr-defined]
    assert rec.usage.total_tokens == 10


async def test_a_client_that_asked_for_usage_gets_it_and_unmetered_keys_are_left_alone() -> None:
    d, meter = driver(Budgets(tpm=1000))
    asked = {**BODY, "stream_options": {"include_usage": True}}
    r = await d.round(request_headers("/openai/v1/chat/completions", authorization=f"Bearer {KEY}"), json_chunk(asked),
                      response=response_headers(content_type="text/event-stream"), chunks=[sse(CHUNK, USAGE)])  # fmt: skip
    assert r.response_body[0].body is None  # type: ignore[union-attr]  # passed through untouched, usage included
    assert meter.charged == [("k1", 10)]
    d, _ = driver(Budgets(rpm=10))  # requests only: nothing to ask for
    r = await d.round(request_headers("/openai/v1/chat/completions", authorization=f"Bearer {KEY}"), json_chunk(BODY))
    assert r.request_body is not None and r.request_body.body is None  # type: ignore[union-attr]
