"""Pattern memory through the real gateway: three prompt families become three patterns."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from intelligence.store.migrate import upgrade

from .conftest import start_stack

pytestmark = pytest.mark.e2e

FAMILIES = {
    "weather": [
        "What is the weather forecast for {} tomorrow?",
        "Will it rain in {} this weekend?",
        "How hot will it be in {} on Friday?",
    ],
    "sql": [
        "Write a SQL query that counts orders per {} in the orders table.",
        "Write SQL to find the top 5 {} by total revenue.",
        "Give me a SQL query joining users and {} tables.",
    ],
    "translate": [
        "Translate into {}: good morning, how are you?",
        "Translate into {}: thank you very much.",
        "Translate into {}: the train leaves at noon.",
    ],
}
FILL = {"weather": ["Paris", "Tokyo"], "sql": ["customer", "products"], "translate": ["German", "Japanese"]}


async def _patterns(url: str) -> list[tuple[str, int]]:
    import asyncpg

    from intelligence.store.engine import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch("""
            select p.id::text as id, count(*) as n from exchange_embeddings e join patterns p on p.id = e.pattern_id
            group by p.id order by n desc""")
        return [(r["id"], r["n"]) for r in rows]
    finally:
        await conn.close()


async def _pattern_of(url: str, request_id: str) -> str | None:
    import asyncpg

    from intelligence.store.engine import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await conn.fetchval("select pattern_id::text from exchange_embeddings where request_id = $1", request_id)
    finally:
        await conn.close()


async def test_three_families_through_the_gateway_become_three_patterns(tmp_path, fresh_db_url, fake) -> None:
    db = await fresh_db_url()
    await asyncio.to_thread(upgrade, db)
    stack = await asyncio.to_thread(start_stack, tmp_path, db, fake, worker=True)
    try:
        client = openai.AsyncOpenAI(base_url=stack.url + "/openai/v1", api_key="sk-patterns", max_retries=0)
        ids: dict[str, list[str]] = {f: [] for f in FAMILIES}
        for i in range(2):
            for fam, templates in FAMILIES.items():
                for t in templates:
                    raw = await client.chat.completions.with_raw_response.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": t.format(FILL[fam][i])}]
                    )
                    ids[fam].append(raw.headers["x-llmproxy-request-id"])
        all_ids = [r for v in ids.values() for r in v]
        deadline = time.monotonic() + 120  # the worker loads the model first
        while time.monotonic() < deadline:
            assigned = [await _pattern_of(db, r) for r in all_ids]
            if all(assigned):
                break
            await asyncio.sleep(0.5)
        assert all(assigned), "every exchange should be assigned a pattern"
        by_family = {fam: {await _pattern_of(db, r) for r in rs} for fam, rs in ids.items()}
        assert all(len(p) == 1 for p in by_family.values()), by_family
        assert len({next(iter(p)) for p in by_family.values()}) == 3
        counts = sorted(n for _, n in await _patterns(db))
        assert counts == [6, 6, 6]
    finally:
        await asyncio.to_thread(stack.stop)
