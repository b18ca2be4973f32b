"""More concurrent exchanges than Envoy's default circuit breakers allow (1,024 per cluster) all complete.

Every exchange holds one ext_proc stream to the sidecar and, over HTTP/1.1, one upstream connection for
its whole life, so Envoy's defaults would cap the gateway at 1,024 concurrent LLM calls however idle the
sidecar is. envoy.yaml sets the ceiling deliberately (10,000); this checks it against the real Envoy.
"""

from __future__ import annotations

import asyncio
import collections
import json

import httpx
import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

CONCURRENT = 1_200  # past the default 1,024
UPSTREAM_DELAY_MS = 1_500  # every answer waits upstream, so the exchanges overlap (under the stack's 3 s idle timeout)


async def _burst(url: str) -> collections.Counter[int]:
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(i: int) -> int:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"concurrent call {i}"}]}
            r = await client.post(
                url + "/openai/v1/chat/completions",
                content=json.dumps(body),
                headers={
                    "content-type": "application/json",
                    "authorization": "Bearer sk-x",
                    "x-fake-delay-ms": str(UPSTREAM_DELAY_MS),
                },
            )
            return r.status_code

        return collections.Counter(await asyncio.gather(*(one(i) for i in range(CONCURRENT))))


@pytest.mark.timeout(300)
def test_more_concurrent_exchanges_than_the_default_breaker_all_complete(stack: Stack) -> None:
    statuses = asyncio.run(_burst(stack.url))
    assert statuses == {200: CONCURRENT}, statuses
