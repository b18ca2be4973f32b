"""More concurrent exchanges than Envoy's default circuit breakers allow (1,024 per cluster) all complete.

Every exchange holds one ext_proc stream to the sidecar and, over HTTP/1.1, one upstream connection for
its whole life, so Envoy's defaults would cap the gateway at 1,024 concurrent LLM calls however idle the
sidecar is. envoy.yaml sets the ceiling deliberately (10,000); this checks it against the real Envoy.

The calls arrive at 60 a second, well under what the sidecar screens even on a busy CI machine with
coverage tracing it: 1,200 new streams at once are an overload of their own, which the sidecar sheds (a
request that waited over 2 s for it gets a 503, tests/extproc/test_overload.py), and that is not what
this test is about. Each answer waits 25 s upstream, on a stack of its own with envoy.yaml's idle timeout
(the shared e2e stack cuts silent upstreams at 3 s), so every call is still in flight when the last one
starts, at 20 s, and the sidecar sees only a few messages per exchange.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time

import httpx
import pytest

from tests.e2e.conftest import start_stack

pytestmark = pytest.mark.e2e

CONCURRENT = 1_200  # past the default 1,024
ARRIVALS_PER_S = 60
UPSTREAM_DELAY_MS = 25_000


async def _burst(url: str) -> tuple[collections.Counter[int], int]:
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=0)
    spans: list[tuple[float, float]] = []
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        t0 = time.monotonic()

        async def one(i: int) -> int:
            await asyncio.sleep(max(0.0, t0 + i / ARRIVALS_PER_S - time.monotonic()))
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"concurrent call {i}"}]}
            start = time.monotonic()
            r = await client.post(
                url + "/openai/v1/chat/completions",
                content=json.dumps(body),
                headers={
                    "content-type": "application/json",
                    "authorization": "Bearer sk-x",
                    "x-fake-delay-ms": str(UPSTREAM_DELAY_MS),
                },
            )
            spans.append((start, time.monotonic()))
            return r.status_code

        statuses = collections.Counter(await asyncio.gather(*(one(i) for i in range(CONCURRENT))))
    # the most calls in flight at one time, from the clients' own start and end times
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    peak = level = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return statuses, peak


@pytest.mark.timeout(240)
def test_more_concurrent_exchanges_than_the_default_breaker_all_complete(tmp_path, pg_url, fake) -> None:
    stack = start_stack(tmp_path, pg_url, fake)
    try:
        statuses, peak = asyncio.run(_burst(stack.url))
    finally:
        assert stack.stop() == 0
    assert statuses == {200: CONCURRENT}, statuses
    assert peak > 1_024, f"only {peak} calls were in flight at once: the test did not pass the default ceiling"
