from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import asyncpg
import psutil

from intelligence.embedded_pg import start_embedded, start_postgres, stop_postgres
from intelligence.store.engine import asyncpg_dsn


async def test_data_survives_a_restart_and_stop_really_stops() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="llmproxy-test-embedded-"))
    try:
        pg = start_embedded(data_dir)
        assert (data_dir / "pgdata" / "PG_VERSION").exists()
        assert psutil.Process(pg.pid).is_running()
        conn = await asyncpg.connect(asyncpg_dsn(pg.url))
        await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
        await conn.close()

        stop_postgres(pg.pgdata)
        assert not (pg.pgdata / "postmaster.pid").exists()
        try:
            await asyncpg.connect(asyncpg_dsn(pg.url), timeout=2)
            raise AssertionError("connected to a stopped server")
        except OSError:
            pass
        assert start_postgres(pg.pgdata) == pg.url
        assert start_postgres(pg.pgdata) == pg.url  # already running: a no-op
        pg.stop()
        pg.stop()  # idempotent
        assert not (pg.pgdata / "postmaster.pid").exists()

        again = start_embedded(data_dir)
        try:
            conn = await asyncpg.connect(asyncpg_dsn(again.url))
            assert await conn.fetchval("SELECT v FROM kept") == "still here"
            await conn.close()
        finally:
            again.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
