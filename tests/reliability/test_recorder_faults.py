"""The recorder's own fault handling, in-process against a real database (no stack): the write-ahead
journal a killed process leaves behind, the disk-full path (memory, then counted drops, then the loss
announced), an all-or-nothing spool append, and the state file `llmproxy status` reads."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.ingest import STATE_FILE, DbRecorder
from intelligence.ops.health import recorder_problems, recorder_state
from intelligence.store.engine import make_engine
from intelligence.store.migrate import upgrade_async
from intelligence.store.spool import Spool
from tests.intelligence.factories import make_record

FAST = dict(flush_interval=0.05, retry_interval=0.1, batch_timeout=2.0, state_interval=0.1)


@pytest.fixture
async def db(fresh_db_url) -> AsyncIterator[tuple[str, AsyncEngine]]:
    url = await fresh_db_url()
    await upgrade_async(url)
    eng = make_engine(url)
    yield url, eng
    await eng.dispose()


@pytest.fixture
async def engine(db) -> AsyncEngine:
    return db[1]


async def allow_connections(url: str, allowed: bool) -> None:
    """This database up, or refusing every connection (an outage of this database only)."""
    import asyncpg

    from intelligence.store.engine import asyncpg_dsn

    name = url.split("?")[0].rsplit("/", 1)[1]
    conn = await asyncpg.connect(asyncpg_dsn(url.replace(f"/{name}", "/postgres")))
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            await conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1", name)
    finally:
        await conn.close()


def dead_engine() -> AsyncEngine:
    return make_engine("postgresql://postgres@127.0.0.1:1/postgres", connect_timeout=0.5)


async def stored(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(text("select request_id from exchanges order by ctid"))).scalars())


async def eventually(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_a_killed_process_leaves_its_journal_and_the_next_start_replays_it(engine: AsyncEngine, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    records = [make_record() for _ in range(7)]
    doomed = DbRecorder(dead_engine(), spool, **FAST)
    for r in records:
        doomed.submit(r)  # queued in memory and journaled; the process "dies" now: no stop()
    assert doomed.spool_depth == 0 and doomed.queue_depth == 7
    assert sum(1 for p in (spool / "journal").iterdir()) == 1

    revived = DbRecorder(engine, spool, **FAST)
    assert revived.adopted == 7 and revived.spool_depth == 7
    await revived.start()
    await eventually(lambda: revived.spool_depth == 0)
    await revived.stop()
    assert await stored(engine) == [r.request_id for r in records]
    assert list((spool / "journal").iterdir()) == []  # a clean stop leaves no journal


async def test_journal_of_records_already_stored_duplicates_nothing(engine: AsyncEngine, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    first = DbRecorder(engine, spool, journal_max_records=3, **FAST)
    await first.start()
    records = [make_record() for _ in range(10)]
    for r in records:
        first.submit(r)
    await eventually(lambda: first.written == 10)
    # killed right after the commit, before the journal was trimmed: a copy of the journal stays behind
    journal = spool / "journal"
    leftovers = {p.name: p.read_bytes() for p in journal.iterdir()}
    await first.stop()
    for name, data in leftovers.items():
        (journal / name).write_bytes(data)
    second = DbRecorder(engine, spool, **FAST)
    await second.start()
    await eventually(lambda: second.spool_depth == 0)
    await second.stop()
    assert await stored(engine) == [r.request_id for r in records]
    async with engine.connect() as conn:
        count = (await conn.execute(text("select sum(request_count) from sessions"))).scalar_one()
    assert count == 10  # replaying what is stored already counts nothing twice


async def test_disk_full_holds_in_memory_then_drops_counted_then_announces(
    db: tuple[str, AsyncEngine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, engine = db
    spool = tmp_path / "spool"
    real_append = Spool.append_lines
    disk_full = True

    def append_lines(self, lines, *, fsync=True):
        if disk_full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_append(self, lines, fsync=fsync)

    monkeypatch.setattr(Spool, "append_lines", append_lines)
    await allow_connections(url, False)
    recorder = DbRecorder(engine, spool, memory_max=5, batch_max=2, **FAST)
    await recorder.start()
    records = [make_record() for _ in range(9)]
    for r in records:
        recorder.submit(r)
    await eventually(lambda: recorder.held + recorder.dropped == 9)
    assert (recorder.held, recorder.dropped) == (5, 4)
    # what `llmproxy status --data-dir tmp_path` reads
    await eventually(lambda: (recorder_state(tmp_path) or {}).get("dropped") == 4)
    state = recorder_state(tmp_path)
    assert state is not None and state["disk_full"] and state["held"] == 5 and not state["stale"]
    problems = " ".join(recorder_problems(state))
    assert "4 records DROPPED" in problems and "refuses records" in problems and "not taking writes" in problems

    # the database comes back (the disk is still full): memory goes first, in order; the loss is announced
    await allow_connections(url, True)
    await eventually(lambda: recorder.held == 0 and recorder.db_ok)
    disk_full = False
    late = make_record()
    recorder.submit(late)
    await eventually(lambda: recorder.written == 1)
    await recorder.stop()
    assert await stored(engine) == [r.request_id for r in records[:5]] + [late.request_id]
    async with engine.connect() as conn:
        rows = (await conn.execute(text("select severity, detail from events where kind = 'request_log_loss'"))).all()
    assert [(sev, det["dropped"]) for sev, det in rows] == [("critical", 4)]


async def test_disk_full_then_free_again_moves_memory_to_the_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = tmp_path / "spool"
    real_append = Spool.append_lines
    full = {"on": True}

    def append_lines(self, lines, *, fsync=True):
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_append(self, lines, fsync=fsync)

    monkeypatch.setattr(Spool, "append_lines", append_lines)
    recorder = DbRecorder(dead_engine(), spool, **FAST)
    await recorder.start()
    records = [make_record() for _ in range(4)]
    for r in records:
        recorder.submit(r)
    await eventually(lambda: recorder.held == 4)
    full["on"] = False  # space again, the database still away: memory is made durable
    await eventually(lambda: recorder.held == 0 and recorder.spool_depth == 4)
    await recorder.stop()
    assert [r.request_id for r in Spool(spool).read(Spool(spool).sealed_segments()[0]).records] == [r.request_id for r in records]


def test_a_partial_append_is_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path)
    spool.append([make_record()])
    size = next(tmp_path.glob("segment-*.jsonl")).stat().st_size
    real_write = os.write

    def half_then_enospc(fd, data):
        real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(OSError):
        spool.append([make_record(), make_record()])
    monkeypatch.setattr(os, "write", real_write)
    [segment] = tmp_path.glob("segment-*.jsonl")
    assert segment.stat().st_size == size and spool.depth == 1  # no torn line left behind
    assert len(spool.read(segment).records) == 1 and not spool.read(segment).bad_lines


async def test_state_file_is_rewritten_in_place(engine: AsyncEngine, tmp_path: Path) -> None:
    recorder = DbRecorder(engine, tmp_path / "spool", **FAST)
    await recorder.start()
    recorder.submit(make_record())
    await eventually(lambda: recorder.written == 1)
    await asyncio.sleep(0.3)
    path = tmp_path / "spool" / STATE_FILE
    assert path.stat().st_size == 8192  # allocated once: a full disk cannot stop its updates
    state = json.loads(path.read_text())
    assert state["written"] == 1 and state["db_ok"] and sum(state["lag_ms_counts"]) == 1
    await recorder.stop()


def test_a_second_process_on_the_same_spool_leaves_the_journal_alone(tmp_path: Path) -> None:
    import subprocess
    import sys

    spool = tmp_path / "spool"
    child = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from intelligence.ingest import DbRecorder\n"
        "from intelligence.store.engine import make_engine\n"
        "from tests.intelligence.factories import make_record\n"
        "r = DbRecorder(make_engine('postgresql://postgres@127.0.0.1:1/x'), Path(sys.argv[1]))\n"
        "r.submit(make_record())\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    live = subprocess.Popen(
        [sys.executable, "-c", child, str(spool)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "ready"
        second = DbRecorder(dead_engine(), spool, **FAST)  # the live process records here: its journal is not ours
        assert second.adopted == 0 and second.spool_depth == 0
        assert len(list((spool / "journal").iterdir())) == 1
    finally:
        live.kill()
        live.wait()
    third = DbRecorder(dead_engine(), spool, **FAST)  # that process is gone now: its journal is taken in
    assert third.adopted == 1 and third.spool_depth == 1
