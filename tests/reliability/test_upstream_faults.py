"""Upstream faults through the real gateway: 500s, 429 with retry-after, resets before and during the
response, a stalled stream, a stream that ends without its end event. Envoy retries only where that is
safe (envoy.yaml `retry_policy`: before any response byte went to the client; never after), the client
gets a correct error, and the log has one row per client request, flagged `incomplete` when the
response was cut or ended without its end event."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.e2e.conftest import Stack

from .harness import Outcome, check_log, new_session, prompt_of, send

pytestmark = pytest.mark.e2e

LONG = " ".join(f"word{i}" for i in range(16))


def attempts(stack: Stack, marker: str) -> int:
    """How many times the provider received this client request (1 + Envoy's retries)."""
    needle = prompt_of(marker)
    return sum(1 for r in list(stack.fake.requests) if needle in r.body.decode("utf-8", "replace"))


def one(stack: Stack, session: str, name: str, *, stream: bool, **headers: str) -> Outcome:
    with httpx.Client() as client:
        return send(
            client,
            stack.url,
            f"{session}-{name}",
            stream=stream,
            headers={"x-session-id": session, "x-fake-key": uuid.uuid4().hex, **headers},
            timeout=60,
        )


def test_upstream_faults(gateway: Stack, report) -> None:
    session = new_session("upstream")
    cases: list[tuple[str, Outcome]] = []

    def case(name: str, *, stream: bool = False, reply: str | None = None, **headers: str) -> Outcome:
        if reply is not None:
            headers["x-fake-reply"] = reply
        out = one(gateway, session, name, stream=stream, **headers)
        cases.append((name, out))
        return out

    t0 = time.monotonic()
    o = case("500-once", **{"x-fake-status": "500", "x-fake-fail-times": "1"})
    assert o.complete and attempts(gateway, o.marker) == 2, o.seen  # retried (nothing was sent to the client yet)

    o = case("500-always", **{"x-fake-status": "500"})
    assert o.status == 500 and attempts(gateway, o.marker) == 3, o.seen  # 1 + num_retries 2, then the provider's error

    t = time.monotonic()
    o = case("429-retry-after", **{"x-fake-status": "429", "x-fake-fail-times": "1", "x-fake-retry-after": "1"})
    waited = time.monotonic() - t
    assert o.complete and attempts(gateway, o.marker) == 2 and waited >= 1.0, (o.seen, waited)

    o = case("reset-before-headers", **{"x-fake-reset": "1"})
    assert o.complete and attempts(gateway, o.marker) == 2, o.seen  # a reset before any byte is retried

    o = case("reset-after-headers", stream=True, **{"x-fake-drop-mid-stream": "1"})
    assert not o.complete and attempts(gateway, o.marker) == 1, o.seen  # the response had begun: never retried

    o = case("reset-mid-stream", stream=True, **{"x-fake-drop-mid-stream": "1", "x-fake-chunk-delay-ms": "150"}, reply=LONG)
    assert o.status == 200 and not o.complete and attempts(gateway, o.marker) == 1, o.seen  # bytes were out

    o = case("reset-mid-body", **{"x-fake-drop-mid-stream": "1"})
    assert not o.complete and attempts(gateway, o.marker) == 1, o.seen

    t = time.monotonic()
    o = case("stall-mid-stream", stream=True, **{"x-fake-chunk-delay-ms": "60000"})
    stalled = time.monotonic() - t
    assert not o.complete and attempts(gateway, o.marker) == 1 and 2.5 < stalled < 20, (o.seen, stalled)

    t = time.monotonic()
    o = case("silent-before-headers", **{"x-fake-delay-ms": "60000"})
    silent = time.monotonic() - t
    assert o.status == 504 and silent < 20, (o.seen, silent)

    o = case("no-end-event", stream=True, **{"x-fake-no-end-event": "1"})
    assert o.status == 200 and not o.complete and "no [DONE]" in (o.error or ""), o.seen
    assert attempts(gateway, o.marker) == 1

    outcomes = [out for _, out in cases]
    log = check_log(gateway.db_url, session, outcomes, all_logged=True)
    log.assert_exactly_once()
    # every client request is in the log once, whatever it saw; the cut ones say so
    absent = [name for name, out in cases if out.marker not in log.flags]
    assert not absent and not log.duplicates, f"not in the log: {absent}; {log.holds()}"
    expected_flags = {
        "reset-after-headers": "cut",
        "reset-mid-stream": "cut",
        "reset-mid-body": "cut",
        "stall-mid-stream": "cut",
        "no-end-event": "no_end_event",
    }
    for name, out in cases:
        flag = log.flags[out.marker].get("incomplete")
        assert flag == expected_flags.get(name), (name, flag, log.flags[out.marker])
    assert log.statuses[f"{session}-500-always"] == 500 and log.errors[f"{session}-500-always"]
    assert log.statuses[f"{session}-silent-before-headers"] == 504
    for name, out in cases:
        report(
            f"upstream {name}",
            f"{out.seen} after {out.latency_s:.1f} s; provider asked {attempts(gateway, out.marker)}x",
            f"1 row, status {log.statuses[out.marker]}, incomplete={log.flags[out.marker].get('incomplete')}",
        )
    assert time.monotonic() - t0 < 120


def test_anthropic_stream_without_message_stop_is_flagged(gateway: Stack, report) -> None:
    session = new_session("anthropic-cut")
    marker = f"{session}-0"
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": prompt_of(marker)}],
    }
    headers = {"x-api-key": "sk-ant-reliability", "anthropic-version": "2023-06-01", "x-session-id": session}
    r = httpx.post(gateway.url + "/anthropic/v1/messages", json=body, headers={**headers, "x-fake-no-end-event": "1"}, timeout=30)
    assert r.status_code == 200 and "message_stop" not in r.text and "message_start" in r.text
    out = Outcome(marker, True, time.monotonic(), status=200, request_id=r.headers.get("x-llmproxy-request-id"))
    log = check_log(gateway.db_url, session, [out])
    assert log.rows == 1 and log.flags[marker].get("incomplete") == "no_end_event", log.flags
    report(
        "upstream Anthropic stream without message_stop",
        "200, the events up to the last delta, no message_stop",
        "1 row, incomplete=no_end_event",
    )
