"""Load shedding: an overloaded sidecar answers new requests 503 at once, and recovers by itself."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

from extproc.overload import Shedder, request_age_ms
from extproc.testing.pipeline import Driver, ListRecorder, context, json_chunk, request_headers
from extproc.wire import Immediate


def test_one_pause_does_not_shed_a_loop_that_stays_behind_does() -> None:
    load = Shedder(threshold_ms=500)
    for late in (0, 2, 900, 3, 1, 0):  # one garbage-collection pause among quiet samples
        load.observe(late)
        assert not load.shedding
    for _ in range(3):  # the loop stays a second behind
        load.observe(1_000)
    assert load.shedding and not load.admit() and load.shed == {"waited": 0, "loop_lag": 1}
    load.observe(400)  # under the threshold, above half of it: still shedding (no flapping)
    assert load.shedding
    for _ in range(10):
        load.observe(5)
    assert not load.shedding and load.admit() and load.shed == {"waited": 0, "loop_lag": 1}


def test_a_request_that_waited_past_the_threshold_is_refused_alone() -> None:
    load = Shedder(threshold_ms=1_000)
    assert load.admit(None) and load.admit(20.0) and load.admit(999.0)
    assert not load.admit(1_500.0) and load.shed == {"waited": 1, "loop_lag": 0}
    assert load.admit(30.0), "the next request that did not wait is admitted"
    off = Shedder(threshold_ms=0)
    for _ in range(3):
        off.observe(5_000)
    assert off.admit(60_000.0), "a threshold of 0 turns shedding off"


def test_request_age_reads_envoys_timestamps() -> None:
    now = 1_796_650_000.0  # a Unix time in December 2026
    stamp = datetime.fromtimestamp(now - 1.25, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    assert abs(request_age_ms(stamp + "123Z", now=now) - 1_250.0) < 1.0  # nanoseconds, as Envoy sends them
    assert abs(request_age_ms(stamp + "+00:00", now=now) - 1_250.0) < 1.0
    future = datetime.fromtimestamp(now + 5, tz=UTC).isoformat()
    assert request_age_ms(future, now=now) == 0.0, "a clock ahead of ours is no wait"
    for bad in (None, "", "yesterday", "2026-12-07T14:21:40"):  # no time zone: unreadable, not guessed
        assert request_age_ms(bad, now=now) is None


async def test_the_monitor_sees_a_busy_event_loop_and_its_recovery() -> None:
    shed: list[str] = []
    load = Shedder(threshold_ms=100, on_shed=shed.append)
    load.start()
    try:
        await asyncio.sleep(0.12)
        assert not load.shedding
        loop = asyncio.get_running_loop()
        for i in range(6):  # CPU-bound callbacks: every timer in the loop runs late
            loop.call_later(0.01 * i, time.sleep, 0.15)
        deadline = time.monotonic() + 5
        while not load.shedding and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert load.shedding and not load.admit() and shed == ["loop_lag"]
        deadline = time.monotonic() + 5
        while load.shedding and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not load.shedding, "shedding must stop once the loop keeps time again"
    finally:
        await load.stop()


async def test_a_shed_request_gets_a_fast_503_unscreened_and_is_recorded() -> None:
    recorder = ListRecorder()
    ctx = context(recorder)
    ctx.load = Shedder(threshold_ms=100)
    driver = Driver(ctx)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    waited = request_headers("/openai/v1/chat/completions")
    waited.attributes["request.time"] = datetime.fromtimestamp(time.time() - 2, tz=UTC).isoformat()
    r = await driver.round(waited, json_chunk(body))
    assert isinstance(r.answer, Immediate) and r.answer.status == 503, "a request that waited 2 s is refused"
    recorder.records.clear()

    for _ in range(3):
        ctx.load.observe(1_000)
    r = await driver.round(request_headers("/openai/v1/chat/completions"), json_chunk(body))
    answer = r.answer
    assert isinstance(answer, Immediate) and answer.status == 503
    assert r.request_body is None, "the body of a shed request is never read or screened"
    assert answer.headers["retry-after"] == "1" and answer.headers["x-llmproxy-error"] == "gateway_overloaded"
    assert json.loads(answer.body)["error"]["code"] == "gateway_overloaded"  # the OpenAI error format
    (record,) = recorder.records
    assert record.status == 503 and record.flags.get("shed") is True

    for _ in range(20):
        ctx.load.observe(0)
    r = await driver.round(request_headers("/openai/v1/chat/completions"), json_chunk(body))
    assert r.answer is None, "once the loop keeps time, requests are admitted again"


async def test_an_envoy_without_request_time_is_reported_once(caplog) -> None:
    ctx = context(ListRecorder())
    ctx.load = Shedder(threshold_ms=100)
    driver = Driver(ctx)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    with caplog.at_level("WARNING", logger="llmproxy.overload"):
        for _ in range(3):
            r = await driver.round(request_headers("/openai/v1/chat/completions"), json_chunk(body))
            assert r.answer is None
    assert sum("request.time" in m for m in caplog.messages) == 1
