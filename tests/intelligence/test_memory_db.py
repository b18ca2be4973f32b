"""Pattern memory against real PostgreSQL + pgvector with the migrations applied.

One database for this module (created on the test server, migrated, dropped afterwards); every
test starts from empty tables. The embedding model is the real all-MiniLM-L6-v2, loaded once per
test session through ``shared_embedder`` (it is process-wide).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from intelligence.embeddings import Embedder, shared_embedder
from intelligence.memory import models as memory_models
from intelligence.memory.assign import MemoryConfig, PatternAssigner
from intelligence.memory.canonical import canonical_prompt
from intelligence.memory.lookup import PatternLookup
from intelligence.memory.maintenance import PatternMaintenance
from intelligence.memory.repository import (
    NEAREST_PATTERNS_SQL,
    SIMILAR_EXCHANGES_SQL,
    EmbeddingRow,
    PatternRepository,
    Signal,
    vec_arg,
)
from intelligence.memory.worker import PatternWorker, add_feedback
from intelligence.records import ExchangeRecord
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.migrate import upgrade
from intelligence.store.models import Base
from intelligence.store.repositories import ExchangeRepository
from tests.conftest import database_url
from tests.intelligence.factories import make_record

MEMORY_TABLES = {"exchange_embeddings", "patterns", "pattern_counts", "pattern_usage", "outcome_signals", "feedback"}
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

CITIES = ["Paris", "London", "Tokyo", "Madrid", "Denver", "Berlin"]
TABLES = [
    ("orders", "customer"),
    ("invoices", "month"),
    ("users", "country"),
    ("sessions", "day"),
    ("tickets", "agent"),
    ("payments", "merchant"),
]
WORDS = ["apple", "house", "bicycle", "window", "friend", "river"]
FAMILIES = {
    "weather": [f"What is the weather forecast for {c} tomorrow?" for c in CITIES],
    "sql": [f"Write a SQL query that counts {a} per {b} in PostgreSQL" for a, b in TABLES],
    "translate": [f"Translate the word '{w}' from English into French" for w in WORDS],
}


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return shared_embedder()


@pytest.fixture(scope="module")
def memory_db_url(pg_server_url: str) -> Iterator[str]:
    name = f"mem_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(pg_server_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = database_url(pg_server_url, name)
    upgrade(url)
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
async def engine(memory_db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(memory_db_url)
    yield eng
    await eng.dispose()


@pytest.fixture(autouse=True)
async def empty_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE exchanges, sessions, exchange_embeddings, patterns, pattern_counts, pattern_usage, "
                "outcome_signals, feedback RESTART IDENTITY CASCADE"
            )
        )


def rec(prompt: str | None, *, at: datetime, client: str | None = "fp-1", **kw: Any) -> ExchangeRecord:
    fields: dict[str, Any] = dict(
        prompt_user=prompt,
        prompt_system=None,
        tool_names=(),
        started_at=at,
        finished_at=at + timedelta(milliseconds=500),
        client_key_fp=client,
    )
    fields.update(kw)
    return make_record(**fields)


async def record(engine: AsyncEngine, records: list[ExchangeRecord]) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        await ExchangeRepository(session).insert_batch(records)


async def drain(worker: PatternWorker) -> int:
    total = 0
    while (n := await worker.run_once()) > 0:
        total += n
    return total


def repo_session(engine: AsyncEngine) -> Any:
    return async_sessionmaker(engine, expire_on_commit=False)()


def family_records(
    per_family: int = 6, start: datetime = T0, clients: tuple[str, ...] = ("fp-a", "fp-b")
) -> dict[str, list[ExchangeRecord]]:
    """The three families interleaved in time (as live traffic would be), 10 s apart."""
    out: dict[str, list[ExchangeRecord]] = {k: [] for k in FAMILIES}
    n = 0
    for i in range(per_family):
        for fam, prompts in FAMILIES.items():
            out[fam].append(
                rec(
                    prompts[i],
                    at=start + timedelta(seconds=10 * n),
                    client=clients[n % len(clients)],
                    model="gpt-4o-mini" if fam != "sql" else "claude-sonnet",
                )
            )
            n += 1
    return out


async def seed_families(
    engine: AsyncEngine, embedder: Embedder, **kw: Any
) -> tuple[dict[str, list[ExchangeRecord]], PatternWorker]:
    fams = family_records(**kw)
    await record(engine, [r for rs in fams.values() for r in rs])
    worker = PatternWorker(engine, embedder, batch=8)
    assert await drain(worker) == sum(len(v) for v in fams.values())
    return fams, worker


# ------------------------------------------------------------------------------------------ schema


async def test_models_match_the_migrated_memory_tables(engine: AsyncEngine) -> None:
    assert MEMORY_TABLES <= set(Base.metadata.tables)
    assert memory_models.EMBEDDING_DIM == 384

    def diff(sync_conn: Any) -> list:
        ctx = MigrationContext.configure(
            sync_conn,
            opts={
                "compare_type": True,
                "include_object": lambda obj, name, type_, reflected, compare_to: (
                    (obj.table.name if type_ in ("column", "index") else name) in MEMORY_TABLES
                    if type_ in ("table", "column", "index")
                    else True
                ),
            },
        )
        return compare_metadata(ctx, Base.metadata)

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_hnsw_indexes_serve_nearest_neighbour_search(engine: AsyncEngine) -> None:
    # With a few hundred rows a sequential scan really is cheaper and the planner rightly picks it
    # (measured: it switches to the HNSW index by itself between 1,000 and 3,000 rows, and building
    # that many index entries costs this suite ~25 s). So the test turns seqscan off: what it must
    # prove is that these exact queries CAN use the indexes (operator class, expression, LIMIT).
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO exchanges (request_id, started_at, finished_at, method, path) "
                "SELECT 'r' || g, now(), now(), 'POST', '/x' FROM generate_series(1, 300) g"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO patterns (centroid, first_seen, last_seen) "
                "SELECT (SELECT array_agg(random() - 0.5 + i * 0 + g * 0) FROM generate_series(1, 384) i)::real[]::vector, "
                "now(), now() FROM generate_series(1, 300) g"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO exchange_embeddings (request_id, embedding, canonical_hash, created_at) "
                "SELECT 'r' || g, (SELECT array_agg(random() - 0.5 + i * 0 + g * 0) FROM generate_series(1, 384) i)"
                "::real[]::vector, md5(g::text), now() FROM generate_series(1, 300) g"
            )
        )
        await conn.execute(text("ANALYZE patterns"))
        await conn.execute(text("ANALYZE exchange_embeddings"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        v = vec_arg(np.random.default_rng(0).standard_normal(384).astype(np.float32))
        for sql, index in (
            (NEAREST_PATTERNS_SQL, "ix_patterns_centroid_hnsw"),
            (SIMILAR_EXCHANGES_SQL, "ix_exchange_embeddings_hnsw"),
        ):
            explain = sql.text.replace("SELECT", "EXPLAIN (FORMAT JSON) SELECT", 1)
            raw = (await conn.execute(text(explain).bindparams(*sql._bindparams.values()), {"v": v, "k": 5})).scalar_one()
            plan = json.dumps(raw if not isinstance(raw, str) else json.loads(raw))
            assert f'"Index Name": "{index}"' in plan, plan
    # and the queries answer: nearest first, k rows
    async with repo_session(engine) as s, s.begin():
        repo = PatternRepository(s)
        hits = await repo.nearest_patterns(np.asarray(v, dtype=np.float32), k=5, ef_search=100)
        assert len(hits) == 5 and [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)


# ------------------------------------------------------------------------------------------ worker


async def test_three_prompt_families_become_three_patterns_with_right_counts(engine: AsyncEngine, embedder: Embedder) -> None:
    fams, worker = await seed_families(engine, embedder)
    async with repo_session(engine) as s:
        repo = PatternRepository(s)
        assert await repo.count_patterns() == 3
        pattern_of: dict[str, set[int]] = {}
        for fam, records in fams.items():
            ids = await repo.pattern_assignments([r.request_id for r in records])
            pattern_of[fam] = set(ids.values())
        assert all(len(p) == 1 for p in pattern_of.values())
        assert len(set().union(*pattern_of.values())) == 3
        top = await repo.top_by_volume()
        assert sorted(t.total for t in top) == [6, 6, 6]
        weather = next(iter(pattern_of["weather"]))
        summary = await repo.get_pattern(weather)
        assert summary is not None and summary.member_count == 6
        assert "weather" in summary.label and summary.label_source == "heuristic"
        assert len(summary.examples) == 5 and all("weather" in e["text"] for e in summary.examples)
        assert summary.first_seen == fams["weather"][0].started_at and summary.last_seen == fams["weather"][-1].started_at
        assert 0 < summary.spread < summary.radius < 0.5
        usage = await repo.pattern_usage(weather)
        assert usage.models == [("gpt-4o-mini", 6)] and dict(usage.clients) == {"fp-a": 3, "fp-b": 3}
        assert (await repo.pattern_usage(next(iter(pattern_of["sql"])))).models == [("claude-sonnet", 6)]
        hours = await repo.time_series(weather, "hour")
        days = await repo.time_series(weather, "day")
        assert sum(p.n for p in hours) == 6 and [(p.bucket, p.n) for p in days] == [(T0.replace(hour=0), 6)]
        assert (await repo.pattern_for_request(fams["sql"][2].request_id)).id == next(iter(pattern_of["sql"]))
    assert worker.stats.processed == 18 and worker.stats.embedded == 18 and worker.stats.embeddings_per_s
    assert await worker.run_once() == 0  # nothing left, nothing processed twice


async def test_similar_prompt_queries(engine: AsyncEngine, embedder: Embedder) -> None:
    fams, _ = await seed_families(engine, embedder)
    paris = fams["weather"][0]
    async with repo_session(engine) as s, s.begin():
        repo = PatternRepository(s)
        similar = await repo.similar_to_request(paris.request_id, k=4)
        assert [h.request_id for h in similar] == [h.request_id for h in similar if h.request_id != paris.request_id]
        assert len(similar) == 4 and all("weather" in (h.text or "") for h in similar)
        assert similar == sorted(similar, key=lambda h: -h.similarity)
        vec = embedder.encode(["Write a SQL query counting rows per group"])[0]
        hits = await repo.similar_to_vector(vec, k=3, ef_search=64)
        assert all("SQL" in (h.text or "") for h in hits)
        assert await repo.similar_to_request("no-such-request") == []
        assert await repo.pattern_for_request("no-such-request") is None
        same = canonical_prompt(paris.prompt_user)
        assert await repo.pattern_id_for_hash(same.hash) == (await repo.pattern_for_request(paris.request_id)).id
        assert await repo.pattern_id_for_hash("0" * 64) is None


async def test_exchange_without_prompt_is_marked_done_but_not_embedded(engine: AsyncEngine, embedder: Embedder) -> None:
    r = rec(None, at=T0, status=502, error="upstream connect error", finish_reason=None)
    await record(engine, [r])
    worker = PatternWorker(engine, embedder)
    assert await worker.run_once() == 1 and await worker.run_once() == 0
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT embedding, pattern_id FROM exchange_embeddings"))).one()
    assert tuple(row) == (None, None)
    async with repo_session(engine) as s:
        signals = await PatternRepository(s).signals_for_request(r.request_id)
    assert [(x.kind, x.ok, x.value, x.detail) for x in signals] == [("status", False, "502", "upstream connect error")]
    assert worker.stats.embedded == 0


async def test_failure_signals_feedback_and_retry_move_the_success_rate(engine: AsyncEngine, embedder: Embedder) -> None:
    prompts = FAMILIES["weather"]
    records = [
        rec(prompts[0], at=T0, client="c1"),
        rec(prompts[1], at=T0 + timedelta(seconds=10), client="c1", status=500, error="boom"),
        rec(prompts[2], at=T0 + timedelta(seconds=20), client="c1", finish_reason="length"),
        rec(prompts[3], at=T0 + timedelta(seconds=30), client="c1", tool_args_invalid=1),
        rec(prompts[4], at=T0 + timedelta(seconds=40), client="c1"),
        rec(prompts[5], at=T0 + timedelta(seconds=50), client="c1"),
    ]
    await record(engine, records)
    worker = PatternWorker(engine, embedder)
    await drain(worker)
    async with repo_session(engine) as s:
        repo = PatternRepository(s)
        pid = (await repo.pattern_for_request(records[0].request_id)).id
        rate = await repo.success_rate(pid)
    assert (rate.total, rate.failed) == (6, 3) and rate.rate == 0.5
    assert {k: c.failed for k, c in rate.by_kind.items()} == {"status": 1, "finish": 1, "tool_args": 1, "retry": 0, "feedback": 0}

    # the same client sends the Paris question again 30 s later: the first answer was not good enough
    retry = rec(prompts[0] + " ", at=T0 + timedelta(seconds=80), client="c1")
    other_client = rec(prompts[4], at=T0 + timedelta(seconds=81), client="c2")
    too_late = rec(prompts[5], at=T0 + timedelta(seconds=50 + 600), client="c1")
    await record(engine, [retry, other_client, too_late])
    await drain(worker)
    # feedback: thumbs down on an otherwise clean exchange, thumbs up on another
    await add_feedback(engine, records[4].request_id, thumbs="down", comment="wrong city")
    await add_feedback(engine, records[5].request_id, score=0.9)
    async with repo_session(engine) as s:
        repo = PatternRepository(s)
        rate = await repo.success_rate(pid)
        retry_signals = [x for x in await repo.signals_for_request(records[0].request_id) if x.kind == "retry"]
        assert [x.kind for x in await repo.signals_for_request(records[4].request_id)] == ["feedback"]
        assert await repo.signals_for_request(other_client.request_id) == []
        since_rate = await repo.success_rate(pid, since=T0 + timedelta(seconds=60))
    assert len(retry_signals) == 1 and retry_signals[0].value == retry.request_id and not retry_signals[0].ok
    assert "80.0 s later" in (retry_signals[0].detail or "")
    assert rate.total == 9 and rate.failed == 5  # + retried first exchange, + thumbs-down
    assert rate.by_kind["retry"].failed == 1
    assert (rate.by_kind["feedback"].failed, rate.by_kind["feedback"].ok) == (1, 1)
    assert since_rate.total == 3 and since_rate.failed == 0
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT request_id, score, thumbs, comment FROM feedback ORDER BY id"))).all()
    assert [tuple(r) for r in rows] == [
        (records[4].request_id, None, "down", "wrong city"),
        (records[5].request_id, 0.9, None, None),
    ]


async def test_retry_within_one_batch_and_identical_empty_embeddings(engine: AsyncEngine, embedder: Embedder) -> None:
    first = rec("Summarise the attached quarterly report", at=T0, client="c9")
    again = rec("Summarise the attached quarterly report", at=T0 + timedelta(seconds=5), client="c9")
    await record(engine, [first, again])
    await drain(PatternWorker(engine, embedder))
    async with repo_session(engine) as s:
        signals = await PatternRepository(s).signals_for_request(first.request_id)
    assert [(x.kind, x.value) for x in signals] == [("retry", again.request_id)]
    assert "similarity 1.000" in (signals[0].detail or "")


async def test_feedback_before_the_exchange_is_recorded_still_counts(engine: AsyncEngine, embedder: Embedder) -> None:
    r = rec(FAMILIES["sql"][0], at=T0)
    await add_feedback(engine, r.request_id, thumbs=False)
    await record(engine, [r])
    await drain(PatternWorker(engine, embedder))
    async with repo_session(engine) as s:
        repo = PatternRepository(s)
        rate = await repo.success_rate((await repo.pattern_for_request(r.request_id)).id)
    assert (rate.total, rate.failed, rate.by_kind["feedback"].failed) == (1, 1, 1)
    with pytest.raises(ValueError):
        await add_feedback(engine, r.request_id)


async def test_top_patterns_by_failure_rate_and_growth(engine: AsyncEngine, embedder: Embedder) -> None:
    now = T0 + timedelta(days=2)
    records: list[ExchangeRecord] = []
    # weather: steady, 3 per day on two days; sql: new and busy today, half failing; translate: old only
    for i in range(3):
        records.append(rec(FAMILIES["weather"][i], at=now - timedelta(hours=30, minutes=i)))
        records.append(rec(FAMILIES["weather"][i + 3], at=now - timedelta(hours=2, minutes=i)))
        records.append(rec(FAMILIES["translate"][i], at=now - timedelta(hours=40, minutes=i)))
    for i in range(6):
        records.append(rec(FAMILIES["sql"][i], at=now - timedelta(hours=1, minutes=i), status=500 if i % 2 else 200))
    await record(engine, records)
    await drain(PatternWorker(engine, embedder))
    async with repo_session(engine) as s:
        repo = PatternRepository(s)
        label = {
            fam: (await repo.pattern_for_request(next(r for r in records if r.prompt_user in FAMILIES[fam]).request_id)).id
            for fam in FAMILIES
        }
        growth = await repo.top_by_growth(timedelta(hours=24), now=now, min_recent=1)
        failing = await repo.top_by_failure_rate(min_count=3)
        volume_today = await repo.top_by_volume(since=now - timedelta(hours=24))
        series = await repo.time_series(label["sql"], "hour", since=now - timedelta(hours=3), until=now)
    assert [g.pattern_id for g in growth] == [label["sql"], label["weather"]]
    assert (growth[0].recent, growth[0].previous, growth[0].score) == (6, 0, 7.0)
    assert (growth[1].recent, growth[1].previous) == (3, 3)
    assert failing[0].pattern_id == label["sql"] and (failing[0].failed, failing[0].total) == (3, 6)
    assert {f.pattern_id: f.score for f in failing}[label["weather"]] == 0.0
    assert [(v.pattern_id, v.total) for v in volume_today] == [(label["sql"], 6), (label["weather"], 3)]
    assert sum(p.n for p in series) == 6 and sum(p.failed for p in series) == 3
    with pytest.raises(ValueError):
        async with repo_session(engine) as s:
            await PatternRepository(s).time_series(label["sql"], "minute")


async def test_claude_label_is_not_overwritten_by_heuristics(engine: AsyncEngine, embedder: Embedder) -> None:
    fams = family_records(per_family=3)
    await record(engine, fams["weather"][:2])
    worker = PatternWorker(engine, embedder)
    await drain(worker)
    async with repo_session(engine) as s, s.begin():
        repo = PatternRepository(s)
        pid = (await repo.pattern_for_request(fams["weather"][0].request_id)).id
        await repo.set_label(pid, "Weather forecast questions")
    await record(engine, fams["weather"][2:])
    await drain(worker)
    async with repo_session(engine) as s:
        p = await PatternRepository(s).get_pattern(pid)
    assert (p.label, p.label_source, p.member_count) == ("Weather forecast questions", "claude", 3)


# ------------------------------------------------------------------------------------------ maintenance


async def test_merge_redirects_the_smaller_pattern_and_moves_everything(engine: AsyncEngine, embedder: Embedder) -> None:
    # a strict join threshold makes near-duplicates start separate patterns, as early traffic can
    strict = MemoryConfig(join_threshold=0.97)
    recs = [rec(p, at=T0 + timedelta(minutes=i), model="m1") for i, p in enumerate(FAMILIES["weather"][:3])]
    await record(engine, recs)
    await drain(PatternWorker(engine, embedder, config=strict))
    async with repo_session(engine) as s:
        repo = PatternRepository(s)
        before = [(await repo.pattern_for_request(r.request_id)).id for r in recs]
    assert len(set(before)) == 3
    report = await PatternMaintenance(engine, MemoryConfig(merge_threshold=0.75)).run()
    assert len(report.merged) >= 1
    async with repo_session(engine) as s:
        repo = PatternRepository(s)
        after = [(await repo.pattern_for_request(r.request_id)).id for r in recs]
        live = await repo.count_patterns()
        for loser, winner in report.merged:
            assert await repo.resolve(loser) == await repo.resolve(winner)
            assert (await repo.get_pattern(loser)).id == await repo.resolve(winner)
            assert await repo.time_series(loser) == await repo.time_series(winner)
        survivor = await repo.get_pattern(after[0])
        series = await repo.time_series(survivor.id, "day")
        usage = await repo.pattern_usage(survivor.id)
    assert live == len(set(after)) < 3
    assert survivor.member_count == sum(1 for a in after if a == survivor.id)
    assert sum(p.n for p in series) == survivor.member_count and usage.models == [("m1", survivor.member_count)]
    assert survivor.first_seen == recs[0].started_at
    # a second run changes nothing new
    again = await PatternMaintenance(engine, MemoryConfig(merge_threshold=0.999)).run()
    assert again.merged == [] and again.split == []


async def test_split_keeps_the_id_on_the_larger_part(engine: AsyncEngine, embedder: Embedder) -> None:
    # with join threshold 0 everything lands in one pattern: two families make it too wide
    loose = MemoryConfig(join_threshold=-1.0)
    recs = [rec(p, at=T0 + timedelta(minutes=i)) for i, p in enumerate(FAMILIES["weather"] + FAMILIES["sql"][:4])]
    await record(engine, recs)
    await drain(PatternWorker(engine, embedder, config=loose))
    async with repo_session(engine) as s:
        repo = PatternRepository(s)
        assert await repo.count_patterns() == 1
        original = (await repo.pattern_for_request(recs[0].request_id)).id
    cfg = MemoryConfig(split_min_members=8, split_max_spread=0.3, split_min_part=3)
    maintenance = PatternMaintenance(engine, cfg)
    report = await maintenance.run()
    assert len(report.split) == 1 and report.split[0][0] == original
    new = report.split[0][1]
    async with repo_session(engine) as s:
        repo = PatternRepository(s)
        weather = {(await repo.pattern_for_request(r.request_id)).id for r in recs[:6]}
        sql = {(await repo.pattern_for_request(r.request_id)).id for r in recs[6:]}
        kept, made = await repo.get_pattern(original), await repo.get_pattern(new)
        counts = [sum(p.n for p in await repo.time_series(pid, "hour")) for pid in (original, new)]
    assert weather == {original} and sql == {new}
    assert (kept.member_count, made.member_count) == (6, 4) and counts == [6, 4]
    assert "weather" in kept.label and "sql" in made.label
    assert made.first_seen == recs[6].started_at and kept.last_seen == recs[5].started_at
    # rejected splits are not retried until the pattern changes
    assert (await maintenance.run()).split == []


# ------------------------------------------------------------------------------------------ loop


async def test_run_loop_wakes_on_notify_holds_a_lock_and_stops(engine: AsyncEngine, embedder: Embedder) -> None:
    worker = PatternWorker(engine, embedder, poll_interval=30.0, maintenance_interval=0.0)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.sleep(0.5)  # let it take the lock and LISTEN
        second = PatternWorker(engine, embedder)
        async with engine.connect() as conn:
            assert await second._lead(conn) is False
        r = rec(FAMILIES["translate"][0], at=datetime.now(UTC))
        started = time.monotonic()
        await record(engine, [r])
        while time.monotonic() - started < 10:
            async with repo_session(engine) as s:
                if await PatternRepository(s).pattern_for_request(r.request_id) is not None:
                    break
            await asyncio.sleep(0.05)
        lag = time.monotonic() - started
        assert lag < 10  # woken by NOTIFY: the 30 s poll interval never elapsed
        assert worker.stats.last_lag_s is not None
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    async with engine.connect() as conn:  # the lock was released on stop
        assert await PatternWorker(engine, embedder)._lead(conn) is True
        await conn.execute(text("SELECT pg_advisory_unlock_all()"))


async def test_watermark_skips_late_rows_until_the_full_sweep(engine: AsyncEngine, embedder: Embedder) -> None:
    worker = PatternWorker(engine, embedder, late_window=timedelta(minutes=1), full_sweep_interval=3600)
    await record(engine, [rec(FAMILIES["sql"][0], at=T0 + timedelta(hours=1))])
    assert await drain(worker) == 1
    late = rec(FAMILIES["sql"][1], at=T0)  # replayed from a spool an hour late
    await record(engine, [late])
    assert await worker.run_once() == 0
    worker.full_sweep_interval = 0
    assert await worker.run_once() == 1


async def test_a_poisoned_exchange_is_skipped_not_blocking(
    engine: AsyncEngine, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, bad = rec(FAMILIES["sql"][0], at=T0), rec(FAMILIES["sql"][1], at=T0 + timedelta(seconds=1))
    await record(engine, [good, bad])
    worker = PatternWorker(engine, embedder)
    original = PatternRepository.insert_embeddings

    async def failing(self: PatternRepository, rows: list[EmbeddingRow]) -> None:
        if any(r.request_id == bad.request_id for r in rows):
            raise RuntimeError("cannot store")
        await original(self, rows)

    monkeypatch.setattr(PatternRepository, "insert_embeddings", failing)
    assert await worker.run_once() == 2
    assert worker.stats.poisoned == {bad.request_id}
    assert await worker.run_once() == 0
    async with repo_session(engine) as s:
        assert await PatternRepository(s).pattern_for_request(good.request_id) is not None


def test_worker_refuses_a_model_of_another_dimension(engine: AsyncEngine) -> None:
    class Wide:
        dim = 768

        def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
            return np.zeros((len(texts), 768), dtype=np.float32)

    with pytest.raises(ValueError, match="768"):
        PatternWorker(engine, Wide())


# ------------------------------------------------------------------------------------------ lookup


async def test_inline_lookup_tiers_budget_and_load_shedding(engine: AsyncEngine, embedder: Embedder) -> None:
    fams, _ = await seed_families(engine, embedder, per_family=3)
    known = canonical_prompt(fams["weather"][0].prompt_user)
    async with repo_session(engine) as s:
        weather = (await PatternRepository(s).pattern_for_request(fams["weather"][0].request_id)).id

    lookup = PatternLookup(engine, lambda: embedder, budget_ms=2000)
    first = await lookup.lookup(known)
    assert first is not None and (first.pattern_id, first.source, first.matched) == (weather, "hash", True)
    hit = await lookup.lookup(known)
    assert hit is not None and hit.source == "cache" and hit.pattern_id == weather

    new_text = canonical_prompt("What's the weather forecast for Rome tomorrow?")
    miss = await lookup.lookup(new_text)
    assert miss is not None and miss.source == "index" and miss.pattern_id == weather and miss.matched
    assert miss.vector is not None and miss.vector.shape == (384,)
    unrelated = await lookup.lookup(canonical_prompt("Compose a haiku about autumn leaves"))
    assert unrelated is not None and not unrelated.matched
    assert await lookup.lookup(canonical_prompt(None)) is None

    # cache hits are what the hot path pays most of the time: microseconds
    started = time.perf_counter()
    for _ in range(1000):
        await lookup.lookup(known)
    assert (time.perf_counter() - started) / 1000 < 0.001

    # a budget too small for a miss: no answer now, the answer is cached for next time
    tight = PatternLookup(engine, embedder, budget_ms=0.01)
    slow = canonical_prompt("Weather forecast for Lisbon tomorrow")
    assert await tight.lookup(slow) is None and tight.stats.timeouts == 1
    for _ in range(200):
        if tight._cached(slow.hash) is not None:
            break
        await asyncio.sleep(0.02)
    again = await tight.lookup(slow)
    assert again is not None and again.source == "cache"

    shed = PatternLookup(engine, embedder, max_inflight=0)
    assert await shed.lookup(canonical_prompt("anything at all")) is None and shed.stats.skipped == 1

    lookup.invalidate()
    assert (await lookup.lookup(known)).source == "hash"


async def test_lookup_ttl_lru_and_errors(engine: AsyncEngine, embedder: Embedder) -> None:
    lookup = PatternLookup(engine, embedder, cache_size=2, ttl_s=0.0)
    assert await lookup.lookup(canonical_prompt("no patterns exist yet")) is None  # empty memory
    from intelligence.memory.lookup import PatternMatch

    for key in "abc":
        lookup._remember(key, PatternMatch(1, 1.0, True, "hash"))
    assert list(lookup._cache) == ["b", "c"]
    time.sleep(0.001)
    assert lookup._cached("c") is None  # expired

    class Broken:
        dim = 384

        def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
            raise RuntimeError("model crashed")

    broken = PatternLookup(engine, Broken(), budget_ms=2000)
    assert await broken.lookup(canonical_prompt("something new")) is None and broken.stats.errors == 1


async def test_assigner_single_prompt_path(engine: AsyncEngine, embedder: Embedder) -> None:
    v = embedder.encode(["What is the weather forecast for Oslo tomorrow?", "What is the weather forecast for Rome tomorrow?"])
    async with repo_session(engine) as s, s.begin():
        repo = PatternRepository(s)
        assigner = PatternAssigner()
        a = await assigner.assign(repo, v[0], request_id="a", text="Oslo", seen_at=T0)
        b = await assigner.assign(repo, v[1], request_id="b", text="Rome", seen_at=T0 + timedelta(seconds=1))
        assert a.created and not b.created and a.pattern_id == b.pattern_id and b.similarity > 0.5
        p = await repo.get_pattern(a.pattern_id)
        assert p.member_count == 2 and {e["request_id"] for e in p.examples} == {"a", "b"}
        await repo.add_signals([Signal("a", "status", False, "500")])
        with pytest.raises(ValueError):
            await repo.add_signals([Signal("a", "nonsense", False)])


async def test_lookup_retries_a_failed_model_load(engine: AsyncEngine, embedder: Embedder) -> None:
    calls: list[int] = []

    def factory() -> Embedder:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("model files not there yet")
        return embedder

    lookup = PatternLookup(engine, factory, budget_ms=5000)
    assert await lookup.lookup(canonical_prompt("first prompt")) is None and lookup.stats.errors == 1
    assert await lookup.lookup(canonical_prompt("second prompt")) is None  # empty memory: no pattern yet
    assert len(calls) == 2 and lookup.stats.errors == 1


async def test_a_failed_prefetch_is_dropped_quietly(engine: AsyncEngine, embedder: Embedder) -> None:
    worker = PatternWorker(engine, embedder)

    async def database_away() -> None:
        raise ConnectionError("database away")

    worker._prefetch = asyncio.ensure_future(database_away())
    await asyncio.sleep(0.01)
    worker.discard_prefetch()
    worker.discard_prefetch()  # nothing left: a no-op
    assert worker._prefetch is None
