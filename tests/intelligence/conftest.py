"""Fixtures of the request-log tests: isolated databases, so row counts and order are exact."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.audit import GENESIS_HASH
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.migrate import upgrade, upgrade_async
from tests.conftest import database_url


@dataclass
class MigratedDb:
    url: str
    engine: AsyncEngine


@pytest.fixture
async def migrated_db(fresh_db_url: Callable[[], Awaitable[str]]) -> AsyncIterator[MigratedDb]:
    """A new database of its own at schema head, with an engine on it."""
    url = await fresh_db_url()
    await upgrade_async(url)
    engine = make_engine(url)
    yield MigratedDb(url=url, engine=engine)
    await engine.dispose()


# ------------------------------------------------------------------------------- the security tables
@pytest.fixture(scope="session")
def security_database(pg_server_url: str) -> Iterator[str]:
    """One migrated database for all security tests; :func:`security_db` empties it before each test."""
    name = f"t_sec_{uuid.uuid4().hex[:12]}"

    async def _admin(sql: str) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(pg_server_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = database_url(pg_server_url, name)
    upgrade(url)
    yield url
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class SecurityDb:
    url: str
    engine: AsyncEngine

    async def superuser(self) -> asyncpg.Connection:
        """A raw connection that bypasses triggers, as a DBA tampering with the table would."""
        conn = await asyncpg.connect(asyncpg_dsn(self.url))
        await conn.execute("SET session_replication_role = replica")
        return conn


@pytest.fixture
async def security_db(security_database: str) -> AsyncIterator[SecurityDb]:
    """The security tables, empty and with the audit chain back at genesis (resetting is a few
    milliseconds; a database per test would cost seconds each on a loaded machine)."""
    db = SecurityDb(url=security_database, engine=make_engine(security_database))
    su = await db.superuser()  # the append-only triggers would (rightly) refuse this reset
    try:
        await su.execute("TRUNCATE audit_log, gateway_key_usage, gateway_keys")
        await su.execute("UPDATE audit_head SET last_id = 0, hash = $1 WHERE id = 1", GENESIS_HASH)
    finally:
        await su.close()
    yield db
    await db.engine.dispose()
