"""`llmproxy seed`: a realistic synthetic request log, consistent across every table it fills."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import numpy as np
import pytest

from extproc.cli import seed as seed_cli
from intelligence.store.engine import asyncpg_dsn
from tests.conftest import database_url

ROWS = 1500


@pytest.fixture(scope="module")
async def seeded(pg_server_url: str) -> AsyncIterator[tuple[str, dict]]:
    name = f"seed_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(pg_server_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = database_url(pg_server_url, name)
    result = await seed_cli.seed(url, ROWS, days=10, embed_sample=300, use_model=False, batch=1000, progress=False)
    yield url, result
    admin = await asyncpg.connect(asyncpg_dsn(pg_server_url))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def _one(url: str, sql: str):
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await conn.fetchrow(sql)
    finally:
        await conn.close()


async def test_every_table_agrees_on_the_exchanges(seeded) -> None:
    url, result = seeded
    assert result["rows"] == ROWS and result["patterns"] == len(seed_cli.TASKS)
    r = await _one(
        url,
        """
        SELECT (SELECT count(*) FROM exchanges) AS exchanges,
               (SELECT sum(request_count) FROM sessions) AS session_requests,
               (SELECT count(*) FROM sessions) AS sessions,
               (SELECT sum(n) FROM exchange_rollups WHERE granularity = 'day') AS rolled,
               (SELECT sum(n) FROM exchange_rollups WHERE granularity = 'hour') AS rolled_hourly,
               (SELECT sum(n) FROM pattern_rollups WHERE granularity = 'day') AS pattern_rolled,
               (SELECT sum(member_count) FROM patterns) AS members,
               (SELECT sum(n) FROM pattern_counts WHERE granularity = 'hour') AS counted,
               (SELECT count(*) FROM exchange_embeddings) AS assigned,
               (SELECT count(*) FROM exchange_embeddings WHERE embedding IS NOT NULL) AS vectors,
               (SELECT count(*) FROM exchanges WHERE status IS DISTINCT FROM 200) AS failed,
               (SELECT count(DISTINCT request_id) FROM outcome_signals WHERE kind = 'status') AS status_signals
    """,
    )
    assert r["exchanges"] == r["session_requests"] == r["rolled"] == r["rolled_hourly"] == ROWS
    assert r["pattern_rolled"] == r["members"] == r["counted"] == r["assigned"] == ROWS
    assert r["sessions"] == result["sessions"] and r["sessions"] < ROWS  # conversations of several turns
    assert r["vectors"] == 300
    assert r["failed"] == r["status_signals"] > 0


async def test_traffic_looks_like_a_real_gateway(seeded) -> None:
    url, _ = seeded
    r = await _one(
        url,
        """
        SELECT count(DISTINCT model) AS models, count(DISTINCT provider) AS providers,
               count(DISTINCT coalesce(client_key_fp, client_addr)) AS clients,
               count(*) FILTER (WHERE status = 429) AS limited, count(*) FILTER (WHERE status >= 500) AS server,
               count(*) FILTER (WHERE status IS NULL AND error IS NOT NULL) AS transport,
               count(*) FILTER (WHERE streamed AND ttft_ms IS NOT NULL) AS streamed,
               count(*) FILTER (WHERE cached_tokens > 0) AS cached, count(*) FILTER (WHERE reasoning_tokens > 0) AS reasoning,
               count(*) FILTER (WHERE tool_aliases <> '{}'::jsonb) AS aliased,
               min(started_at) > now() - interval '10 days 1 hour' AS within_period, max(started_at) <= now() AS not_future,
               count(*) FILTER (WHERE api = 'messages') AS anthropic, count(*) FILTER (WHERE api = 'embeddings') AS embeddings
        FROM exchanges
    """,
    )
    assert r["models"] >= 10 and r["providers"] == 3 and r["clients"] >= 20
    assert r["server"] > 0 and r["streamed"] > ROWS / 5 and r["cached"] > 0 and r["reasoning"] > 0
    assert r["aliased"] > 0 and r["anthropic"] > 0 and r["embeddings"] > 0
    assert r["within_period"] and r["not_future"]


async def test_bodies_are_shaped_like_the_provider_apis(seeded) -> None:
    url, _ = seeded
    row = await _one(
        url,
        """SELECT * FROM exchanges WHERE tool_aliases <> '{}'::jsonb AND api = 'chat' AND status = 200
                             ORDER BY started_at LIMIT 1""",
    )
    aliases = json.loads(row["tool_aliases"])
    sent = json.loads(row["request_client"])["json"]
    forwarded = json.loads(row["request_forwarded"])["json"]
    sent_names = [t["function"]["name"] for t in sent["tools"]]
    forwarded_names = [t["function"]["name"] for t in forwarded["tools"]]
    assert sent_names == list(row["tool_names"]) and [aliases.get(n, n) for n in forwarded_names] == sent_names
    upstream_call = json.loads(row["response_upstream"])["json"]["choices"][0]["message"]["tool_calls"][0]
    client_call = json.loads(row["response_client"])["json"]["choices"][0]["message"]["tool_calls"][0]
    assert aliases[upstream_call["function"]["name"]] == client_call["function"]["name"]
    msg = await _one(url, "SELECT * FROM exchanges WHERE api = 'messages' AND status = 200 LIMIT 1")
    body = json.loads(msg["response_client"])["json"]
    assert body["type"] == "message" and body["usage"]["input_tokens"] == msg["input_tokens"]
    assert json.loads(msg["request_headers"])["x-session-id"] == msg["session_id"]


def test_plan_is_deterministic_and_cumsum_restarts_per_session() -> None:
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    now = time.time()
    a = seed_cli.plan_traffic(500, 3, rng_a, seed_cli.make_clients(rng_a), now=now)
    b = seed_cli.plan_traffic(500, 3, rng_b, seed_cli.make_clients(rng_b), now=now)
    assert np.array_equal(a.started, b.started) and np.array_equal(a.status, b.status)
    got = seed_cli._cumsum_within(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([0, 0, 1, 1, 1]))
    assert list(got) == [1.0, 3.0, 3.0, 7.0, 12.0]


async def test_command_line_seeds_the_given_database(pg_server_url: str, capsys) -> None:
    name = f"seedcli_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(asyncpg_dsn(pg_server_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = database_url(pg_server_url, name)
    parser = argparse.ArgumentParser()
    seed_cli.register(parser.add_subparsers())
    args = parser.parse_args(["seed", "--rows", "120", "--database-url", url, "--no-model", "--embed-sample", "10"])
    import asyncio

    try:
        assert await asyncio.to_thread(args.func, args) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["rows"] == 120 and out["vectors"] == "synthetic"
        assert (await _one(url, "SELECT count(*) AS n FROM exchanges"))["n"] == 120
        assert await asyncio.to_thread(args.func, args) == 0  # seeding again adds to the same patterns
        again = await _one(
            url,
            "SELECT count(*) AS n, (SELECT count(*) FROM patterns) AS p, "
            "(SELECT sum(member_count) FROM patterns) AS m, "
            "(SELECT sum(n) FROM pattern_counts WHERE granularity = 'day') AS c FROM exchanges",
        )
        assert (again["n"], again["p"], again["m"], again["c"]) == (240, len(seed_cli.TASKS), 240, 240)
        bad = parser.parse_args(["seed", "--rows", "-1", "--database-url", url])
        assert args.func(bad) == 2
    finally:
        admin = await asyncpg.connect(asyncpg_dsn(pg_server_url))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
