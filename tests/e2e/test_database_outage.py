"""The database stopped while traffic flows: clients are unaffected and every record appears once
it is back (spooled durably, replayed in order, no duplicates)."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from intelligence.embedded_pg import start_embedded, start_postgres, stop_postgres
from intelligence.store.migrate import upgrade

from .conftest import start_stack

pytestmark = pytest.mark.e2e


async def _count(url: str, ids: list[str]) -> int:
    import asyncpg

    from intelligence.store.engine import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await conn.fetchval("select count(*) from exchanges where request_id = any($1::text[])", ids)
    finally:
        await conn.close()


def test_records_survive_a_database_outage(tmp_path, fake) -> None:
    pg = start_embedded(tmp_path / "pg")
    try:
        upgrade(pg.url)
        stack = start_stack(tmp_path, pg.url, fake)
        try:
            client = openai.OpenAI(base_url=stack.url + "/openai/v1", api_key="sk-outage", max_retries=0)
            ids: list[str] = []

            def send(n: int, tag: str) -> None:
                for i in range(n):
                    raw = client.chat.completions.with_raw_response.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": f"{tag} {i}"}]
                    )
                    assert raw.parse().choices[0].message.content == f"echo: {tag} {i}"
                    ids.append(raw.headers["x-llmproxy-request-id"])

            send(5, "before")
            stop_postgres(pg.pgdata)
            send(20, "during")  # the gateway keeps serving while the log is away
            spool = stack.data_dir / "spool"
            assert any(spool.iterdir()), "records should be spooled to disk while the database is down"
            start_postgres(pg.pgdata)
            send(5, "after")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if asyncio.run(_count(pg.url, ids)) == len(ids):
                    break
                time.sleep(0.5)
            assert asyncio.run(_count(pg.url, ids)) == len(ids) == 30
        finally:
            assert stack.stop() == 0
    finally:
        pg.stop()
