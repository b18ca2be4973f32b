from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.embedded_pg import EmbeddedPostgres, start_postgres, stop_postgres
from intelligence.ingest import DbRecorder
from intelligence.records import ExchangeRecord
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.migrate import upgrade
from intelligence.store.spool import REJECTED_FILE, Spool

from ..conftest import embedded_postgres
from .conftest import MigratedDb
from .factories import make_record

FAST = dict(flush_interval=0.05, retry_interval=0.1, batch_timeout=2.0)


async def eventually(predicate: Callable[[], bool], timeout: float = 15.0, recorder: DbRecorder | None = None) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            state = (
                ""
                if recorder is None
                else (
                    f" queue={recorder.queue_depth} spool={recorder.spool_depth} written={recorder.written}"
                    f" spooled={recorder.spooled} replayed={recorder.replayed} db_ok={recorder.db_ok}"
                )
            )
            raise AssertionError("condition not reached in time" + state)
        await asyncio.sleep(0.02)


async def stored_ids(engine: AsyncEngine) -> list[str]:
    """request_ids in the order the rows were written (heap order: the tables only get inserts)."""
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT request_id FROM exchanges ORDER BY ctid"))).scalars())


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture(scope="module")
def stoppable_pg() -> Iterator[EmbeddedPostgres]:
    """A server of its own, so stopping it cannot disturb the shared test database."""
    with embedded_postgres() as pg:
        upgrade(pg.url)
        yield pg


async def test_queued_records_are_written_one_transaction_per_batch(migrated_db: MigratedDb, tmp_path: Path) -> None:
    recorder = DbRecorder(migrated_db.engine, tmp_path / "spool", batch_max=200, **FAST)
    records = [make_record() for _ in range(450)]
    for r in records:
        recorder.submit(r)
    assert recorder.queue_depth == 450
    written_before = metric("llmproxy_recorder_written_total")

    await recorder.start()
    await eventually(lambda: recorder.written == 450)
    await recorder.stop()

    assert await stored_ids(migrated_db.engine) == [r.request_id for r in records]
    async with migrated_db.engine.connect() as conn:
        # now() is the transaction's start time: one distinct value per transaction
        transactions = (await conn.execute(text("SELECT count(DISTINCT inserted_at) FROM exchanges"))).scalar_one()
    assert transactions == 3  # 200 + 200 + 50
    assert (recorder.spooled, recorder.spool_depth, recorder.queue_depth, recorder.db_ok) == (0, 0, 0, True)
    assert metric("llmproxy_recorder_written_total") - written_before == 450


async def test_database_stopped_spools_then_replays_everything_once_in_order(
    stoppable_pg: EmbeddedPostgres, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(stoppable_pg.url)
    recorder = DbRecorder(engine, tmp_path / "spool", batch_max=4, **FAST)
    submitted: list[ExchangeRecord] = []

    def submit(n: int) -> None:
        for _ in range(n):
            submitted.append(make_record())
            recorder.submit(submitted[-1])

    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE exchanges, sessions CASCADE"))
    await recorder.start()
    try:
        submit(5)
        await eventually(lambda: recorder.written == 5)

        stop_postgres(stoppable_pg.pgdata)
        with caplog.at_level(logging.WARNING, logger="intelligence.ingest"):
            for _ in range(3):  # several batches while the database is away
                submit(4)
                await asyncio.sleep(0.1)
            await eventually(lambda: recorder.spool_depth == 12)
        assert not recorder.db_ok
        assert recorder.written == 5
        assert any("database unavailable" in m for m in caplog.messages)
        assert all(r.prompt_user not in " ".join(caplog.messages) for r in submitted)  # no bodies in logs

        assert start_postgres(stoppable_pg.pgdata) == stoppable_pg.url
        submit(3)  # arrives while the spool still holds older records: must queue up behind them
        # the spool goes first; the 3 follow through the spool or straight to the DB, never ahead
        await eventually(lambda: recorder.spool_depth == 0 and recorder.written + recorder.replayed == 20, recorder=recorder)
        assert recorder.db_ok
        submit(2)
        await eventually(lambda: recorder.written + recorder.replayed == 22)
    finally:
        await recorder.stop()
        start_postgres(stoppable_pg.pgdata)

    assert await stored_ids(engine) == [r.request_id for r in submitted]
    assert recorder.spooled == recorder.replayed >= 12
    assert list((tmp_path / "spool").glob("segment-*.jsonl")) == []
    await engine.dispose()


async def test_slow_database_times_out_into_the_spool(migrated_db: MigratedDb, tmp_path: Path) -> None:
    recorder = DbRecorder(migrated_db.engine, tmp_path / "spool", flush_interval=0.05, retry_interval=0.1, batch_timeout=0.5)
    blocker = await asyncpg.connect(asyncpg_dsn(migrated_db.url))
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("LOCK TABLE exchanges IN ACCESS EXCLUSIVE MODE")
    records = [make_record() for _ in range(3)]
    await recorder.start()
    try:
        for r in records:
            recorder.submit(r)
        await eventually(lambda: recorder.spool_depth == 3 and not recorder.db_ok)
        await tx.rollback()
        await eventually(lambda: recorder.spool_depth == 0 and recorder.db_ok)
    finally:
        await blocker.close()
        await recorder.stop()
    assert await stored_ids(migrated_db.engine) == [r.request_id for r in records]


async def test_full_queue_overflows_to_spool_and_nothing_is_lost(migrated_db: MigratedDb, tmp_path: Path) -> None:
    recorder = DbRecorder(migrated_db.engine, tmp_path / "spool", queue_max=4, **FAST)
    records = [make_record() for _ in range(7)]
    for r in records:
        recorder.submit(r)
    assert (recorder.queue_depth, recorder.spool_depth, recorder.spooled) == (4, 3, 3)
    [segment] = list((tmp_path / "spool").glob("segment-*.jsonl"))
    assert len(segment.read_text().splitlines()) == 3

    await recorder.start()
    # the spool is not empty at start, so the queued 4 follow the overflowed 3 through it
    await eventually(lambda: recorder.spool_depth == 0 and recorder.written + recorder.replayed == 7, recorder=recorder)
    await recorder.stop()
    assert sorted(await stored_ids(migrated_db.engine)) == sorted(r.request_id for r in records)


async def test_spool_left_by_a_previous_run_is_replayed_at_start(migrated_db: MigratedDb, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    earlier = [make_record() for _ in range(5)]
    previous = Spool(spool_dir, segment_max_records=2)
    previous.append(earlier)
    previous.close()
    # the previous process died while writing its last line
    with open(spool_dir / "segment-000000000009.jsonl", "w") as f:
        f.write(make_record().to_json()[:40])

    recorder = DbRecorder(migrated_db.engine, spool_dir, **FAST)
    assert recorder.spool_depth == 6
    await recorder.start()
    await eventually(lambda: recorder.spool_depth == 0)
    await recorder.stop()

    assert await stored_ids(migrated_db.engine) == [r.request_id for r in earlier]
    assert recorder.replayed == 5
    assert list(spool_dir.glob("segment-*.jsonl")) == []
    [rejected] = [json.loads(x) for x in (spool_dir / REJECTED_FILE).read_text().splitlines()]
    assert rejected["reason"] == "unreadable spool line"


async def test_replay_after_partial_commit_does_not_duplicate(migrated_db: MigratedDb, tmp_path: Path) -> None:
    # a crash after committing part of a segment but before deleting it: the segment is re-sent
    records = [make_record(session_id="sess-crash") for _ in range(4)]
    recorder = DbRecorder(migrated_db.engine, tmp_path / "spool", **FAST)
    await recorder.start()
    for r in records[:2]:
        recorder.submit(r)
    await eventually(lambda: recorder.written == 2)
    await recorder.stop()
    spool = Spool(tmp_path / "spool")
    spool.append(records)
    spool.close()

    again = DbRecorder(migrated_db.engine, tmp_path / "spool", **FAST)
    await again.start()
    await eventually(lambda: again.spool_depth == 0)
    await again.stop()
    assert await stored_ids(migrated_db.engine) == [r.request_id for r in records]
    async with migrated_db.engine.connect() as conn:
        count = (await conn.execute(text("SELECT request_count FROM sessions WHERE session_id='sess-crash'"))).scalar_one()
    assert count == 4


async def test_stop_drains_the_queue_into_the_database(migrated_db: MigratedDb, tmp_path: Path) -> None:
    recorder = DbRecorder(migrated_db.engine, tmp_path / "spool", batch_max=16, flush_interval=1.0)
    await recorder.start()
    records = [make_record() for _ in range(50)]
    for r in records:
        recorder.submit(r)
    await recorder.stop()
    assert await stored_ids(migrated_db.engine) == [r.request_id for r in records]
    assert recorder.spool_depth == 0


async def test_stop_with_database_unreachable_keeps_everything_on_disk(migrated_db: MigratedDb, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    dead = make_engine("postgresql://postgres@127.0.0.1:1/postgres", connect_timeout=1)
    recorder = DbRecorder(dead, spool_dir, **FAST)
    records = [make_record() for _ in range(10)]
    await recorder.start()
    for r in records:
        recorder.submit(r)
    await recorder.stop(timeout=3)
    late = make_record()
    recorder.submit(late)  # after stop: straight to the spool
    assert recorder.spool_depth == 11
    assert not recorder.db_ok
    await dead.dispose()

    revived = DbRecorder(migrated_db.engine, spool_dir, **FAST)
    await revived.start()
    await eventually(lambda: revived.spool_depth == 0)
    await revived.stop()
    assert await stored_ids(migrated_db.engine) == [r.request_id for r in records + [late]]


async def test_stop_timeout_cancels_a_stuck_writer_and_spools_its_batch(migrated_db: MigratedDb, tmp_path: Path) -> None:
    recorder = DbRecorder(migrated_db.engine, tmp_path / "spool", flush_interval=0.05, batch_timeout=30)
    blocker = await asyncpg.connect(asyncpg_dsn(migrated_db.url))
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("LOCK TABLE exchanges IN ACCESS EXCLUSIVE MODE")
    records = [make_record() for _ in range(3)]
    try:
        await recorder.start()
        for r in records:
            recorder.submit(r)
        await asyncio.sleep(0.3)  # the writer is now waiting on the lock
        await recorder.stop(timeout=0.5)
        assert recorder.spool_depth == 3
    finally:
        await blocker.close()
    revived = DbRecorder(migrated_db.engine, tmp_path / "spool", **FAST)
    await revived.start()
    await eventually(lambda: revived.spool_depth == 0)
    await revived.stop()
    assert sorted(await stored_ids(migrated_db.engine)) == sorted(r.request_id for r in records)


async def test_record_the_database_refuses_is_set_aside(migrated_db: MigratedDb, tmp_path: Path) -> None:
    recorder = DbRecorder(migrated_db.engine, tmp_path / "spool", **FAST)
    good = [make_record() for _ in range(3)]
    bad = make_record(status=2**40)  # not an HTTP status; does not fit the column
    rejected_before = metric("llmproxy_recorder_rejected_total")
    for r in [good[0], bad, good[1], good[2]]:
        recorder.submit(r)
    await recorder.start()
    await eventually(lambda: recorder.written + recorder.rejected == 4)
    await recorder.stop()
    assert await stored_ids(migrated_db.engine) == [r.request_id for r in good]
    assert recorder.rejected == 1 and recorder.db_ok and recorder.spool_depth == 0
    [kept] = [json.loads(x) for x in (tmp_path / "spool" / REJECTED_FILE).read_text().splitlines()]
    assert ExchangeRecord.from_json(kept["line"]).request_id == bad.request_id
    assert "sqlstate=22" in kept["reason"]
    assert metric("llmproxy_recorder_rejected_total") - rejected_before == 1


async def test_submit_from_another_thread(migrated_db: MigratedDb, tmp_path: Path) -> None:
    recorder = DbRecorder(migrated_db.engine, tmp_path / "spool", **FAST)
    await recorder.start()
    records = [make_record() for _ in range(5)]
    worker = threading.Thread(target=lambda: [recorder.submit(r) for r in records])
    worker.start()
    await asyncio.to_thread(worker.join)
    await eventually(lambda: recorder.written == 5)
    await recorder.stop()
    assert sorted(await stored_ids(migrated_db.engine)) == sorted(r.request_id for r in records)


async def test_submit_never_raises_even_when_the_disk_fails(migrated_db: MigratedDb, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    recorder = DbRecorder(migrated_db.engine, spool_dir, queue_max=1, **FAST)
    shutil.rmtree(spool_dir)
    spool_dir.write_text("a file where the spool directory was")
    recorder.submit(make_record())
    recorder.submit(make_record())  # queue full and the spool unwritable
    assert recorder.dropped == 1
    assert recorder.queue_depth == 1


async def test_stop_without_start_spools_what_was_queued(migrated_db: MigratedDb, tmp_path: Path) -> None:
    recorder = DbRecorder(migrated_db.engine, tmp_path / "spool")
    recorder.submit(make_record())
    recorder.submit(make_record())
    await recorder.stop()
    await recorder.stop()  # second stop is a no-op
    assert recorder.spool_depth == 2
    assert Spool(tmp_path / "spool").depth == 2


def test_batches_are_written_in_few_statement_shapes() -> None:
    """Every batch size maps onto power-of-two pages, so the driver caches at most a handful of INSERTs."""
    from intelligence.ingest import _statement_pages

    shapes: set[int] = set()
    for n in range(1, 201):
        pages = _statement_pages(list(range(n)))
        assert [x for page in pages for x in page] == list(range(n))  # order kept, nothing lost
        sizes = [len(p) for p in pages]
        assert sizes == sorted(sizes, reverse=True) and all(s & (s - 1) == 0 for s in sizes)
        shapes.update(sizes)
    assert len(shapes) == 8  # 1, 2, 4, ..., 128: instead of 200 one-off statements
