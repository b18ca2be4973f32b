"""Client overhead against FakeClaude (no database): `python -m intelligence.claude.bench [calls]`.

The figures in docs/intelligence.md come from this; it measures the client and SDK, not Claude.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from .client import ClaudeClient
from .fake import FakeClaude

SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}


async def measure(calls: int) -> str:
    async with FakeClaude(lambda request: {"label": "x"}) as fake:
        client = ClaudeClient(fake.client_settings(model="claude-sonnet-5-5"), None)
        try:
            await client.structured("bench", "", "sys", "prompt", "label", "Label it.", SCHEMA)  # warm-up
            latencies = sorted(
                [
                    (await client.structured("bench", "", "sys", "prompt", "label", "Label it.", SCHEMA)).latency_ms
                    for _ in range(calls)
                ]
            )
            started = time.monotonic()
            results = await asyncio.gather(
                *(client.structured("bench", "", "sys", "prompt", "label", "Label it.", SCHEMA) for _ in range(calls))
            )
            elapsed = time.monotonic() - started
        finally:
            await client.aclose()
    ok = sum(r.ok for r in results)
    return (
        f"{calls} sequential calls: p50 {statistics.median(latencies):.2f} ms, "
        f"p95 {latencies[int(0.95 * (calls - 1))]:.2f} ms; {calls} concurrent "
        f"(CLAUDE_CONCURRENCY {client.settings.concurrency}): {elapsed:.2f} s, {ok} ok"
    )


if __name__ == "__main__":
    print(asyncio.run(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 200)))
