from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from intelligence.records import Body, Usage
from intelligence.store.engine import asyncpg_dsn
from intelligence.store.repositories import NOTIFY_CHANNEL, ExchangeRepository, SessionRepository

from .conftest import MigratedDb
from .factories import make_record


@pytest.fixture
async def session(db_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with async_sessionmaker(db_engine, expire_on_commit=False)() as s:
        yield s


async def _insert(db_engine: AsyncEngine, records) -> list[str]:
    async with async_sessionmaker(db_engine).begin() as s:
        return await ExchangeRepository(s).insert_batch(records)


async def test_insert_then_reinsert_is_idempotent(db_engine: AsyncEngine, session: AsyncSession) -> None:
    records = [make_record() for _ in range(3)]
    repo = ExchangeRepository(session)
    before = await repo.count()

    assert await _insert(db_engine, records) == [r.request_id for r in records]
    assert await _insert(db_engine, records) == []
    extra = make_record()
    assert await _insert(db_engine, [records[0], extra, extra]) == [extra.request_id]

    assert await repo.count() == before + 4


async def test_stored_record_reads_back_equal(db_engine: AsyncEngine, session: AsyncSession) -> None:
    record = make_record(
        streamed=True,
        request_client=Body(text="not json {", size=10, truncated=True),
        response_client=None,
        tool_names=("a", "b"),
        prompt_system="be brief",
        tool_args_invalid=2,
        flags={"pii": ["email"], "score": 0.5},
    )
    await _insert(db_engine, [record])
    assert await ExchangeRepository(session).get(record.request_id) == record
    assert await ExchangeRepository(session).get("no-such-request") is None


async def test_naive_timestamps_are_taken_as_utc(db_engine: AsyncEngine, session: AsyncSession) -> None:
    naive = datetime(2025, 5, 5, 10, 0)
    record = make_record(started_at=naive, finished_at=naive + timedelta(seconds=1))
    await _insert(db_engine, [record])
    stored = await ExchangeRepository(session).get(record.request_id)
    assert stored is not None and stored.started_at == naive.replace(tzinfo=UTC)


async def test_text_postgres_cannot_hold_is_sanitised(db_engine: AsyncEngine, session: AsyncSession) -> None:
    record = make_record(
        path="/v1/chat\x00completions",
        error="bad\x00byte",
        tool_names=("tool\x00x",),
        request_client=Body(json={"k\x00": ["v\x00", "lone \ud800 half", float("nan")], "ok": "😀"}, size=5),
        response_client=Body(text="surrogate \udcff and nul \x00", size=7),
        flags={"inf": float("inf")},
        usage=Usage(input_tokens=2**70, output_tokens=3, total_tokens=3),
    )
    assert await _insert(db_engine, [record]) == [record.request_id]
    stored = await ExchangeRepository(session).get(record.request_id)
    assert stored is not None
    assert stored.path == "/v1/chat\ufffdcompletions"
    assert stored.error == "bad\ufffdbyte"
    assert stored.tool_names == ("tool\ufffdx",)
    assert stored.request_client is not None
    assert stored.request_client.json == {"k\ufffd": ["v\ufffd", "lone \ufffd half", None], "ok": "😀"}
    assert stored.response_client is not None
    assert stored.response_client.text == "surrogate \ufffd and nul \ufffd"
    assert stored.flags == {"inf": None}
    row_tokens = await session.execute(
        text("SELECT input_tokens FROM exchanges WHERE request_id = :r"),
        {"r": record.request_id},
    )
    assert row_tokens.scalar_one() is None  # out of bigint range: NULL rather than a failed batch


async def test_sessions_totals_count_each_exchange_once(db_engine: AsyncEngine, session: AsyncSession) -> None:
    sid = f"sess-totals-{uuid.uuid4().hex}"
    t0 = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)
    ok = make_record(session_id=sid, started_at=t0, client_key_fp=None)
    failed = make_record(session_id=sid, started_at=t0 + timedelta(minutes=5), status=502, client_key_fp="fp-1")
    errored = make_record(session_id=sid, started_at=t0 - timedelta(minutes=5), status=None, error="upstream reset")
    await _insert(db_engine, [ok])
    await _insert(db_engine, [ok, failed])  # a replay of ok plus one new
    await _insert(db_engine, [failed, errored, ok])

    summary = await SessionRepository(session).get(sid)
    assert summary is not None
    assert summary.request_count == 3
    assert summary.input_tokens == 36 and summary.output_tokens == 15 and summary.total_tokens == 51
    assert summary.error_count == 2
    assert summary.client_key_fp == "fp-1"
    assert summary.first_seen == errored.started_at
    assert summary.last_seen == failed.finished_at
    assert await SessionRepository(session).get("sess-none") is None


async def test_records_without_session_do_not_create_sessions(db_engine: AsyncEngine, session: AsyncSession) -> None:
    record = make_record(session_id=None)
    await _insert(db_engine, [record])
    assert await ExchangeRepository(session).get(record.request_id) is not None
    assert all(s.session_id is not None for s in await SessionRepository(session).recent(1000))


async def test_recent_sessions_are_newest_first(migrated_db: MigratedDb) -> None:
    t0 = datetime(2025, 7, 1, tzinfo=UTC)
    a = make_record(session_id="sess-a", started_at=t0)
    b = make_record(session_id="sess-b", started_at=t0 + timedelta(hours=1))
    c = make_record(session_id="sess-c", started_at=t0 - timedelta(hours=1))
    await _insert(migrated_db.engine, [a, b, c])
    async with AsyncSession(migrated_db.engine) as s:
        top = await SessionRepository(s).recent(2)
    assert [x.session_id for x in top] == ["sess-b", "sess-a"]


async def test_recent_and_iter_since_page_in_time_order(migrated_db: MigratedDb) -> None:
    engine = migrated_db.engine
    t0 = datetime(2025, 6, 1, tzinfo=UTC)
    records = [make_record(started_at=t0 + timedelta(minutes=i)) for i in range(7)]
    same_time = make_record(started_at=records[3].started_at)  # ties are paged by request_id
    await _insert(engine, list(reversed(records)) + [same_time])
    async with AsyncSession(engine) as s:
        repo = ExchangeRepository(s)
        newest = await repo.recent(3)
        assert [r.request_id for r in newest] == [r.request_id for r in records[:-4:-1]]
        older = await repo.recent(2, before=records[2].started_at)
        assert [r.request_id for r in older] == [records[1].request_id, records[0].request_id]

        everything = [r async for r in repo.iter_since(None, batch=3)]
        assert len(everything) == 8
        assert [r.started_at for r in everything] == sorted(r.started_at for r in everything)
        assert len({r.request_id for r in everything}) == 8

        since = [r.request_id async for r in repo.iter_since(records[5].started_at, batch=1)]
        assert since == [records[5].request_id, records[6].request_id]
        assert await repo.count() == 8


async def test_notify_per_inserted_row_on_commit_only(db_engine: AsyncEngine, pg_url: str) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(asyncpg_dsn(pg_url))
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: received.put_nowait(args[3]))
    try:
        first, second = make_record(), make_record()
        await _insert(db_engine, [first, second])
        got = [await asyncio.wait_for(received.get(), 5) for _ in range(2)]
        assert got == [first.request_id, second.request_id]

        await _insert(db_engine, [first])  # already stored: no notification
        rolled_back = make_record()
        async with async_sessionmaker(db_engine)() as s:
            await ExchangeRepository(s).insert_batch([rolled_back])
            await s.rollback()
        third = make_record()
        await _insert(db_engine, [third])
        assert await asyncio.wait_for(received.get(), 5) == third.request_id
        await asyncio.sleep(0.1)
        assert received.empty()
    finally:
        await listener.close()


async def test_repository_does_not_commit(db_engine: AsyncEngine, session: AsyncSession) -> None:
    record = make_record()
    async with async_sessionmaker(db_engine)() as s:
        assert await ExchangeRepository(s).insert_batch([record]) == [record.request_id]
        await s.rollback()
    assert await ExchangeRepository(session).get(record.request_id) is None


async def test_repositories_work_on_a_plain_connection(db_engine: AsyncEngine) -> None:
    record = make_record()
    async with db_engine.begin() as conn:
        assert await ExchangeRepository(conn).insert_batch([record]) == [record.request_id]
    async with db_engine.connect() as conn:
        assert await ExchangeRepository(conn).get(record.request_id) == record
        assert (await SessionRepository(conn).get(record.session_id)).request_count == 1
