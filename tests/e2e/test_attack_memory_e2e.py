"""A confirmed attack is learned by the running gateway: real Envoy + sidecar + Postgres, no restart.

The prompt passes the default policy at first (no heuristic or classifier signal); once its verdict is
confirmed as an attack, the sidecar reloads its attack memory on NOTIFY and the gateway blocks the same
text and a light rewording of it before the provider sees them."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy import text

from intelligence.anomaly.store import confirm_verdict
from intelligence.store.engine import make_engine
from intelligence.store.migrate import upgrade_async

from ..intelligence.test_attack_memory import ATTACK, ATTACK_EDITED
from .conftest import _wait_record, start_stack

pytestmark = pytest.mark.e2e
BLOCK_WITHIN_S = 15.0


async def _send(client: httpx.AsyncClient, base: str, prompt: str) -> httpx.Response:
    return await client.post(
        f"{base}/openai/v1/chat/completions",
        headers={"authorization": "Bearer sk-mem"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]},
    )


async def test_confirmed_attack_is_blocked_by_the_running_gateway(tmp_path, fresh_db_url, fake) -> None:
    from intelligence.detectors.static_embed import shared_static_embedder

    url = await fresh_db_url()
    await upgrade_async(url)
    stack = await asyncio.to_thread(start_stack, tmp_path, url, fake, "--allow-target", f"127.0.0.1:{fake.port}")
    engine = make_engine(url)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            first = await _send(client, stack.url, ATTACK)
            assert first.status_code == 200, first.text
            rid = first.headers["x-llmproxy-request-id"]
            record = await _wait_record(url, rid, 10.0)
            assert record.prompt_user == ATTACK and record.flags["detections"]["injection_score"] < 0.5

            async with engine.begin() as conn:  # what the anomaly job records for a doubtful score
                verdict_id = (
                    await conn.execute(
                        text(
                            "INSERT INTO anomaly_verdicts (request_id, detectors, status, verdict, confidence) "
                            "VALUES (:rid, ARRAY['injection_uncertain'], 'judged', 'suspicious', 0.6) RETURNING id"
                        ),
                        {"rid": rid},
                    )
                ).scalar_one()
                encoder = await asyncio.to_thread(shared_static_embedder)
                await confirm_verdict(conn, verdict_id, "attack", actor="ops:e2e", embedder=encoder)

            confirmed_at = time.monotonic()
            deadline, blocked = confirmed_at + BLOCK_WITHIN_S, None
            while time.monotonic() < deadline:
                r = await _send(client, stack.url, ATTACK)
                if r.status_code == 400:
                    blocked = r
                    break
                await asyncio.sleep(0.2)
            assert blocked is not None, "the gateway never blocked the confirmed attack"
            print(f"confirmation -> blocked by the gateway: {(time.monotonic() - confirmed_at) * 1000:.0f} ms")
            assert "prompt-injection" in blocked.text
            n = len(fake.requests)
            edited = await _send(client, stack.url, ATTACK_EDITED)
            assert edited.status_code == 400 and "prompt-injection" in edited.text
            assert len(fake.requests) == n  # the blocked rewording never reached the provider
            rec = await _wait_record(url, edited.headers["x-llmproxy-request-id"], 10.0)
            assert rec.flags["detections"]["injection_layer"] == "memory"
    finally:
        await engine.dispose()
        assert await asyncio.to_thread(stack.stop) == 0
