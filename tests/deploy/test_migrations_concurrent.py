"""Replicas start together: their migration init containers run `upgrade()` at the same moment against an
empty database. The advisory lock in migrations/env.py serialises them: both succeed, the schema is at head,
nothing ran twice."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

from sqlalchemy import text

from intelligence.store.engine import make_engine
from intelligence.store.migrate import current, head

from .helpers import ROOT

# the exact command of the init containers and the compose migrate service
MIGRATE = "import os; from intelligence.store.migrate import upgrade; upgrade(os.environ['DATABASE_URL'])"


async def test_concurrent_migrations_do_not_race(fresh_db_url: Callable[[], Awaitable[str]]) -> None:
    url = await fresh_db_url()
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            MIGRATE,
            cwd=ROOT,
            env={"DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    results = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 300)
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err.decode()[-3000:]
    assert await asyncio.to_thread(current, url) == head()
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            versions = (await conn.execute(text("SELECT count(*) FROM alembic_version"))).scalar_one()
            tables = (await conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))).scalar_one()
        assert versions == 1 and tables > 20
    finally:
        await engine.dispose()
