"""Rollups kept by the 0003_analytics triggers, and the AnalyticsRepository queries over them."""

from __future__ import annotations

import importlib.util
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.analytics import AnalyticsRepository, ExchangeFilter, hist_bin, hist_quantile
from intelligence.analytics_models import HIST_BINS
from intelligence.memory.models import EMBEDDING_DIM
from intelligence.memory.repository import EmbeddingRow, PatternRepository, Signal
from intelligence.records import Usage
from intelligence.store import migrate
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.repositories import ExchangeRepository, exchange_row
from tests.conftest import database_url
from tests.intelligence.factories import make_record

HOUR = datetime(2025, 4, 2, 10, 0, tzinfo=UTC)
_MIGRATION = Path(__file__).resolve().parents[2] / "intelligence/store/migrations/versions/0003_analytics_rollups.py"


def _previous_revision() -> str:
    spec = importlib.util.spec_from_file_location("rev0003", _MIGRATION)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.down_revision


async def _new_db(server: str) -> str:
    name = f"an_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url(server, name)


async def _drop(server: str, url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1].split("?")[0]}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def engine(pg_server_url: str) -> AsyncIterator[AsyncEngine]:
    """A database of this module's own at head: exact counts, whatever else the run inserts."""
    url = await _new_db(pg_server_url)
    await migrate.upgrade_async(url)
    eng = make_engine(url)
    yield eng
    await eng.dispose()
    await _drop(pg_server_url, url)


async def _insert(engine: AsyncEngine, records) -> list[str]:
    async with engine.begin() as conn:
        return await ExchangeRepository(conn).insert_batch(records)


async def _insert_into_schema(engine: AsyncEngine, records) -> list[str]:
    """Insert through the columns the table has at its current revision (the repository writes the head
    revision's columns; this test holds rows written at an older one)."""
    async with engine.begin() as conn:
        types = dict(
            (
                await conn.execute(
                    text("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'exchanges'")
                )
            ).all()
        )
        ids = []
        for record in records:
            row = {k: v for k, v in exchange_row(record).items() if k in types}
            values = ", ".join(f"CAST(:{k} AS {types[k]})" if types[k] in ("jsonb", "json") else f":{k}" for k in row)
            await conn.execute(text(f"INSERT INTO exchanges ({', '.join(row)}) VALUES ({values})"), row)
            ids.append(row["request_id"])
        return ids


async def _rollup(engine: AsyncEngine, where: str, params: dict) -> list:
    async with engine.connect() as conn:
        return (
            (await conn.execute(text(f"SELECT * FROM exchange_rollups WHERE {where} ORDER BY granularity, bucket"), params))
            .mappings()
            .all()
        )


async def test_rollups_count_each_inserted_exchange_once(engine: AsyncEngine) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    recs = [
        make_record(
            model=model,
            started_at=HOUR + timedelta(minutes=5),
            latency_ms=100.0,
            ttft_ms=None,
            streamed=False,
            usage=Usage(input_tokens=10, output_tokens=5, cached_tokens=2, reasoning_tokens=1),
        ),
        make_record(
            model=model,
            started_at=HOUR + timedelta(minutes=50),
            latency_ms=300.0,
            ttft_ms=50.0,
            streamed=True,
            usage=Usage(input_tokens=20, output_tokens=7),
        ),
        make_record(model=model, started_at=HOUR + timedelta(minutes=70), status=429, latency_ms=20.0, error=None),
        make_record(model=model, started_at=HOUR + timedelta(minutes=75), status=502, error="upstream 502", latency_ms=20.0),
    ]
    assert len(await _insert(engine, recs)) == 4
    assert await _insert(engine, recs) == []  # a replayed batch inserts nothing and counts nothing
    rows = await _rollup(engine, "model = :m", {"m": model})
    by = {(r["granularity"], r["bucket"]): r for r in rows}
    day = by[("day", HOUR.replace(hour=0))]
    assert (day["n"], day["errors"], day["client_errors"], day["server_errors"], day["rate_limited"]) == (4, 2, 1, 1, 1)
    assert (day["input_tokens"], day["output_tokens"], day["cached_tokens"], day["reasoning_tokens"]) == (54, 22, 2, 1)
    assert day["latency_n"] == 4 and day["latency_sum"] == pytest.approx(440.0)
    assert day["ttft_n"] == 3 and day["ttft_sum"] == pytest.approx(291.0) and day["streamed"] == 1
    first, second = by[("hour", HOUR)], by[("hour", HOUR + timedelta(hours=1))]
    assert (first["n"], second["n"]) == (2, 2)
    assert sum(first["latency_hist"]) == 2 and len(first["latency_hist"]) == HIST_BINS
    assert first["client"] == "fp-abc123" and first["provider"] == "openai" and first["api"] == "chat"


async def test_garbage_values_never_fail_an_insert_and_are_left_out(engine: AsyncEngine) -> None:
    model = f"g-{uuid.uuid4().hex[:6]}"
    recs = [
        make_record(
            model=model,
            started_at=HOUR,
            latency_ms=float("nan"),
            ttft_ms=float("inf"),
            usage=Usage(input_tokens=2**62, output_tokens=-5),
        ),
        make_record(
            model=model,
            started_at=HOUR,
            latency_ms=-3.0,
            ttft_ms=1e12,
            status=None,
            error="reset",
            client_key_fp=None,
            client_addr=None,
            provider=None,
            api=None,
            usage=Usage(input_tokens=7, output_tokens=1),
        ),
    ]
    assert len(await _insert(engine, recs)) == 2
    rows = await _rollup(engine, "model = :m AND granularity = 'day'", {"m": model})
    assert sum(r["n"] for r in rows) == 2
    assert sum(r["latency_n"] for r in rows) == 0 and sum(r["ttft_n"] for r in rows) == 0
    assert sum(r["input_tokens"] for r in rows) == 7 and sum(r["output_tokens"] for r in rows) == 1
    unknown = next(r for r in rows if r["client"] == "")
    assert (unknown["provider"], unknown["api"], unknown["server_errors"]) == ("", "", 1)


async def test_histogram_bins_agree_with_python(engine: AsyncEngine) -> None:
    model = f"h-{uuid.uuid4().hex[:6]}"
    values = [0.2, 1.0, 1.3, 99.0, 100.0, 2_000.0, 45_000.0, 1e7, 9e8]
    await _insert(engine, [make_record(model=model, started_at=HOUR, latency_ms=v) for v in values])
    (row,) = await _rollup(engine, "model = :m AND granularity = 'hour'", {"m": model})
    expected = np.zeros(HIST_BINS, dtype=np.int64)
    for v in values:
        expected[hist_bin(v)] += 1
    assert list(row["latency_hist"]) == list(expected)


def test_histogram_quantiles_are_within_the_bin_error() -> None:
    rng = np.random.default_rng(1)
    sample = rng.lognormal(np.log(800), 0.9, size=20_000)
    hist = np.zeros(HIST_BINS, dtype=np.int64)
    for v in sample:
        hist[hist_bin(float(v))] += 1
    for q in (0.5, 0.95, 0.99):
        assert hist_quantile(hist, q) == pytest.approx(float(np.quantile(sample, q)), rel=0.12)
    assert hist_quantile(np.zeros(HIST_BINS), 0.5) is None
    assert hist_bin(float("nan")) is None and hist_bin(-1.0) is None and hist_bin(0.5) == 0


async def test_pattern_rollups_follow_members_through_moves_and_merges(engine: AsyncEngine) -> None:
    model = f"p-{uuid.uuid4().hex[:6]}"
    recs = [
        make_record(
            model=model,
            started_at=HOUR + timedelta(minutes=i),
            latency_ms=100.0 + i,
            status=500 if i == 0 else 200,
            error="upstream 500" if i == 0 else None,
        )
        for i in range(5)
    ]
    await _insert(engine, recs)
    vec = np.ones(EMBEDDING_DIM, dtype=np.float32) / math.sqrt(EMBEDDING_DIM)
    async with engine.begin() as conn:
        memory = PatternRepository(conn)
        a = await memory.create_pattern(vec, seen_at=HOUR, label="a", examples=[])
        b = await memory.create_pattern(vec, seen_at=HOUR, label="b", examples=[])
        c = await memory.create_pattern(vec, seen_at=HOUR, label="c", examples=[])
        await memory.insert_embeddings(
            [EmbeddingRow(r.request_id, vec, r.request_id, a, 0.9, r.client_key_fp, r.model, r.started_at) for r in recs]
        )

    async def counts() -> dict[int, tuple[int, int]]:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT pattern_id, sum(n) AS n, sum(errors) AS e FROM pattern_rollups WHERE model = :m "
                        "AND granularity = 'day' GROUP BY pattern_id"
                    ),
                    {"m": model},
                )
            ).all()
        return {r.pattern_id: (int(r.n), int(r.e)) for r in rows}

    assert await counts() == {a: (5, 1)}
    async with engine.begin() as conn:
        await PatternRepository(conn).move_members([recs[0].request_id, recs[1].request_id], b)
    assert await counts() == {a: (3, 0), b: (2, 1)}
    async with engine.begin() as conn:
        await PatternRepository(conn).redirect(b, c)
    assert await counts() == {a: (3, 0), c: (2, 1)}
    async with engine.connect() as conn:
        rows = await AnalyticsRepository(conn).rollup(
            "hour", HOUR, HOUR + timedelta(hours=1), by_pattern=True, pattern_ids=[a, c]
        )
    assert sorted((r.pattern_id, int(r.measures["n"])) for r in rows if r.model == model) == [(a, 3), (c, 2)]
    assert all(int(r.latency_hist.sum()) == int(r.measures["n"]) for r in rows if r.model == model)


async def test_upgrade_counts_existing_rows_and_downgrade_removes_everything(pg_server_url: str) -> None:
    url = await _new_db(pg_server_url)
    eng = make_engine(url)
    try:
        before = _previous_revision()
        await migrate.upgrade_async(url, before)
        await _insert_into_schema(eng, [make_record(model="old-model", started_at=HOUR) for _ in range(3)])
        await migrate.upgrade_async(url)
        rows = await _rollup(eng, "model = 'old-model' AND granularity = 'day'", {})
        assert [r["n"] for r in rows] == [3]
        await _insert(eng, [make_record(model="old-model", started_at=HOUR)])  # the trigger adds to the backfill
        assert [r["n"] for r in await _rollup(eng, "model = 'old-model' AND granularity = 'day'", {})] == [4]
        await eng.dispose()
        await __import__("asyncio").to_thread(migrate.downgrade, url, before)
        eng = make_engine(url)
        async with eng.connect() as conn:
            left = (
                await conn.execute(
                    text(
                        "SELECT to_regclass('exchange_rollups') IS NULL AND to_regclass('pattern_rollups') IS NULL "
                        "AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname LIKE 'trg_%rollup%')"
                    )
                )
            ).scalar_one()
        assert left
        assert len(await _insert_into_schema(eng, [make_record(model="old-model", started_at=HOUR)])) == 1
    finally:
        await eng.dispose()
        await _drop(pg_server_url, url)


async def test_explorer_search_filters(engine: AsyncEngine) -> None:
    tag = uuid.uuid4().hex[:8]
    t0 = datetime.now(UTC) - timedelta(minutes=30)
    recs = [
        make_record(
            started_at=t0,
            client_key_fp=f"fp-{tag}-a",
            model=f"ma-{tag}",
            prompt_user=f"zebra {tag} crossing",
            session_id=f"s-{tag}",
        ),
        make_record(
            started_at=t0 + timedelta(seconds=1),
            client_key_fp=f"fp-{tag}-a",
            model=f"mb-{tag}",
            status=503,
            error="upstream 503",
            prompt_user=f"giraffe {tag}",
            session_id=f"s-{tag}",
        ),
        make_record(
            started_at=t0 + timedelta(seconds=2),
            client_key_fp=None,
            client_addr=f"10.0.0.{tag[:2]}",
            model=f"mb-{tag}",
            status=404,
            prompt_user=f"zebra {tag} again 100%_done",
            provider="anthropic",
        ),
    ]
    await _insert(engine, recs)
    ids = [r.request_id for r in recs]
    async with engine.connect() as conn:
        repo = AnalyticsRepository(conn)

        async def found(**kw) -> list[str]:
            return [r.request_id for r in await repo.search(ExchangeFilter(**kw))]

        assert await found(client=f"fp-{tag}-a") == [ids[1], ids[0]]
        assert await found(client=f"10.0.0.{tag[:2]}") == [ids[2]]
        assert await found(models=(f"mb-{tag}",)) == [ids[2], ids[1]]
        assert await found(models=(f"mb-{tag}",), status_class="5xx") == [ids[1]]
        assert await found(models=(f"mb-{tag}",), status_class="4xx") == [ids[2]]
        assert await found(models=(f"ma-{tag}", f"mb-{tag}"), status_class="2xx") == [ids[0]]
        assert await found(models=(f"mb-{tag}",), providers=("anthropic",)) == [ids[2]]
        assert await found(text=f"zebra {tag}") == [ids[2], ids[0]]
        assert await found(text="100%_done") == [ids[2]]  # LIKE wildcards are literal
        assert await found(text=ids[1]) == [ids[1]]
        assert await found(session_id=f"s-{tag}", since=t0 + timedelta(seconds=1)) == [ids[1]]
        assert await found(session_id=f"s-{tag}", until=t0 + timedelta(seconds=1)) == [ids[0]]
        assert [r.request_id for r in await repo.search(ExchangeFilter(session_id=f"s-{tag}"), limit=1)] == [ids[1]]
        row = (await repo.search(ExchangeFilter(text=ids[0])))[0]
        assert row.prompt_preview == f"zebra {tag} crossing" and row.pattern_id is None and row.tool_names == ("get_weather",)
        turns = await repo.session_turns(f"s-{tag}")
        assert [t.request_id for t in turns] == ids[:2] and turns[0].response["choices"][0]["message"]["content"] == "answer"
        with pytest.raises(ValueError):
            await repo.search(ExchangeFilter(status_class="7xx"))


async def test_search_by_pattern_and_memory_queries(engine: AsyncEngine) -> None:
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    recs = [
        make_record(
            started_at=now - timedelta(minutes=i),
            model=f"pm-{tag}",
            prompt_user=f"p {tag} {i}",
            status=200 if i else 500,
            error=None if i else "x",
        )
        for i in range(4)
    ]
    await _insert(engine, recs)
    rng = np.random.default_rng(0)
    async with engine.begin() as conn:
        memory = PatternRepository(conn)
        pid = await memory.create_pattern(np.ones(EMBEDDING_DIM, np.float32), seen_at=now, label=f"label {tag}", examples=[])
        await memory.insert_embeddings(
            [
                EmbeddingRow(
                    r.request_id,
                    rng.normal(size=EMBEDDING_DIM).astype(np.float32),
                    r.request_id,
                    pid,
                    0.9,
                    r.client_key_fp,
                    r.model,
                    r.started_at,
                )
                for r in recs[:3]
            ]
        )
        await memory.add_signals([Signal(recs[1].request_id, "finish", False, value="length")])
    async with engine.connect() as conn:
        repo = AnalyticsRepository(conn)
        hits = await repo.search(ExchangeFilter(pattern_id=pid))
        assert [h.request_id for h in hits] == [r.request_id for r in recs[:3]]
        assert all(h.pattern_id == pid for h in hits)
        sample = {p.request_id: p for p in await repo.embedding_sample(1000)}
        assert {r.request_id for r in recs[:3]} <= set(sample)
        assert sample[recs[0].request_id].failed and sample[recs[1].request_id].failed  # status / failing signal
        assert not sample[recs[2].request_id].failed
        assert sample[recs[2].request_id].embedding.shape == (EMBEDDING_DIM,)
        assert await repo.pattern_labels([pid]) == {pid: f"label {tag}"}
        assert await repo.worker_backlog(now - timedelta(hours=1)) >= 1  # recs[3] has no embedding
        trend = await repo.pattern_buckets([pid], "day", now - timedelta(days=2))
        assert sum(t.n for t in trend) == 3 and sum(t.errors for t in trend) == 1
        assert await repo.pattern_buckets([], "day", now) == []


async def test_live_buckets_recent_and_overview(engine: AsyncEngine) -> None:
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    # a minute ahead of now: newer than anything other tests of this module inserted
    recs = [
        make_record(
            started_at=now + timedelta(seconds=60 - 5 * i),
            model=f"lv-{tag}",
            latency_ms=float(100 * (i + 1)),
            status=500 if i == 3 else 200,
        )
        for i in range(4)
    ]
    await _insert(engine, recs)
    async with engine.connect() as conn:
        repo = AnalyticsRepository(conn)
        buckets = await repo.live_buckets(now - timedelta(seconds=30), 60)
        whole = buckets[0]
        assert whole.bucket is None and whole.n >= 4 and whole.errors >= 1
        assert sum(b.n for b in buckets[1:]) == whole.n
        newest = await repo.recent(2)
        assert [r.request_id for r in newest] == [recs[0].request_id, recs[1].request_id]
        values = await repo.dimension_values(now - timedelta(days=1))
        assert f"lv-{tag}" in values["model"] and "openai" in values["provider"]
        overview = await repo.overview()
        assert overview.schema_revision == migrate.head()
        assert {"vector", "pg_trgm"} <= set(overview.extensions) and overview.estimated_exchanges > 0
        assert "exchanges" in overview.table_bytes
        with pytest.raises(ValueError):
            await repo.rollup("minute", now)


async def test_text_search_is_served_by_the_trigram_index(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            r[0]
            for r in (
                await conn.execute(text("EXPLAIN SELECT request_id FROM exchanges WHERE prompt_user ILIKE '%zebra crossing%'"))
            ).all()
        )
        client_plan = "\n".join(
            r[0]
            for r in (
                await conn.execute(
                    text("EXPLAIN SELECT request_id FROM exchanges WHERE client_key_fp = 'x' ORDER BY started_at DESC LIMIT 10")
                )
            ).all()
        )
    assert "ix_exchanges_prompt_user_trgm" in plan
    assert "ix_exchanges_client_started" in client_plan
