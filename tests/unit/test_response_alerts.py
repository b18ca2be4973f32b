"""Alerts and automated actions reach the live feed: the guard submits events (never blocking), a
high-severity block is one "block" event, and `phase: response` rules alert from what the model said."""

from __future__ import annotations

import json

from extproc.context import Context
from extproc.settings import SidecarSettings
from extproc.testing.guard import guard_for
from extproc.testing.pipeline import Bound
from extproc.wire import BodyChunk, Headers, Immediate, Phase

from .test_response_exchange import EMAIL, KEY, Finder, Recorder

POLICY = """
version: 1
name: t
rules:
  - id: trip
    match: {headers: [x-trip]}
    actions:
      block: true
      alert: {severity: critical, message: tripped}
  - id: note
    match: {headers: [x-note]}
    actions:
      alert: {severity: info, message: noted}
  - id: withhold
    phase: response
    match: {secrets: any, headers: [x-withhold]}
    actions:
      block: {status: 502, code: response_withheld, message: "llmproxy: response withheld"}
      alert: {severity: critical, message: response withheld}
  - id: leak-out
    phase: response
    match: {secrets: any}
    actions:
      alert: {severity: warning, message: the model leaked a secret}
      tag: leak
"""


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, str, str, str, dict]] = []

    def submit(self, kind, title, *, severity="info", subject="", detail=None) -> bool:
        self.items.append((kind, title, severity, subject, detail or {}))
        return True


def context(events: Events) -> Context:
    guard = guard_for(POLICY, secrets=Finder("OPENAI_API_KEY", KEY), pii=Finder("EMAIL_ADDRESS", EMAIL), events=events)
    return Context(settings=SidecarSettings(), recorder=Recorder(), guard=guard)


async def request(c: Context, **headers: str) -> Bound:
    ex = Bound(c)
    await ex.handle(
        Phase.REQUEST_HEADERS,
        Headers(
            {
                ":method": "POST",
                ":path": "/openai/v1/chat/completions",
                "x-request-id": "r9",
                "content-type": "application/json",
                **headers,
            },
            False,
        ),
    )
    await ex.handle(
        Phase.REQUEST_BODY, BodyChunk(json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(), True)
    )
    return ex


async def test_blocking_rule_with_high_severity_alert_is_one_block_event() -> None:
    events = Events()
    await request(context(events), **{"x-trip": "1"})
    assert len(events.items) == 1
    kind, title, severity, subject, detail = events.items[0]
    assert (kind, title, severity, subject) == ("block", "tripped", "critical", "request:r9")
    assert detail["rule"] == "t/trip" and detail["block"]["status"] == 403


async def test_plain_alert_is_an_alert_event() -> None:
    events = Events()
    await request(context(events), **{"x-note": "1"})
    assert [(k, t, s) for k, t, s, _, _ in events.items] == [("alert", "noted", "info")]


async def test_response_rule_alerts_on_a_secret_the_model_produced_json_and_stream() -> None:
    events = Events()
    c = context(events)
    ex = await request(c)
    assert events.items == []
    r3 = await ex.handle(Phase.RESPONSE_HEADERS, Headers({":status": "200", "content-type": "application/json"}, False))
    assert r3.buffer_response_body is True  # a response rule reads the response: it is taken whole
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "use sk-ABCDEFGHIJKLMNOPQRSTUVWX"}}]}
    await ex.handle(Phase.RESPONSE_BODY, BodyChunk(json.dumps(body).encode(), True))
    assert [(k, s) for k, _, s, _, d in events.items] == [("alert", "warning")]
    assert events.items[0][4]["phase"] == "response"
    rp = c.recorder.records[0].flags["response_policy"]
    assert rp["tags"] == ["leak"] and rp["fired"][0]["rule"] == "leak-out"

    ex = await request(c)
    await ex.handle(Phase.RESPONSE_HEADERS, Headers({":status": "200", "content-type": "text/event-stream"}, False))
    pieces = ["use sk-ABCDEFGHIJ", "KLMNOPQRSTUVWX now"]
    raw = "".join("data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": p}}]}) + "\n\n" for p in pieces)
    await ex.handle(Phase.RESPONSE_BODY, BodyChunk((raw + "data: [DONE]\n\n").encode(), True))
    assert len(events.items) == 2 and events.items[1][0] == "alert"
    assert c.recorder.records[1].flags["response_policy"]["tags"] == ["leak"]

    ex = await request(c)  # nothing leaked: no alert
    await ex.handle(Phase.RESPONSE_HEADERS, Headers({":status": "200", "content-type": "application/json"}, False))
    await ex.handle(Phase.RESPONSE_BODY, BodyChunk(json.dumps({"choices": []}).encode(), True))
    assert len(events.items) == 2


async def test_response_rule_block_replaces_a_buffered_response() -> None:
    events = Events()
    c = context(events)
    ex = await request(c, **{"x-withhold": "1"})
    await ex.handle(Phase.RESPONSE_HEADERS, Headers({":status": "200", "content-type": "application/json"}, False))
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "use sk-ABCDEFGHIJKLMNOPQRSTUVWX"}}]}
    out = await ex.handle(Phase.RESPONSE_BODY, BodyChunk(json.dumps(body).encode(), True))
    assert isinstance(out, Immediate) and out.status == 502
    assert json.loads(out.body)["error"]["code"] == "response_withheld"
    rec = c.recorder.records[0]
    assert rec.status == 502 and rec.flags["response_policy"]["block"]["rule"] == "t/withhold"
    assert "block_not_enforced" not in rec.flags["response_policy"]
    assert [(k, s) for k, _, s, _, _ in events.items] == [("block", "critical")]

    ex = await request(c, **{"x-withhold": "1"})  # nothing to withhold: the response passes
    await ex.handle(Phase.RESPONSE_HEADERS, Headers({":status": "200", "content-type": "application/json"}, False))
    out = await ex.handle(Phase.RESPONSE_BODY, BodyChunk(json.dumps({"choices": []}).encode(), True))
    assert not isinstance(out, Immediate)


async def test_buffered_response_fails_closed_when_the_screen_breaks(monkeypatch) -> None:
    c = context(Events())
    ex = await request(c)
    await ex.handle(Phase.RESPONSE_HEADERS, Headers({":status": "200", "content-type": "application/json"}, False))

    def broken(*a, **k):
        raise RuntimeError("detector crashed")

    monkeypatch.setattr(c.guard, "detect", broken)
    out = await ex.handle(Phase.RESPONSE_BODY, BodyChunk(json.dumps({"choices": []}).encode(), True))
    assert isinstance(out, Immediate) and out.status == 502  # the guard fails closed: the response is withheld
    assert json.loads(out.body)["error"]["code"] == "gateway_stage_error"
    assert c.recorder.records[0].status == 502
