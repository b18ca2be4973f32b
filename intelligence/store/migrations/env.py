"""Alembic environment: async (asyncpg) migrations, serialised across processes.

The URL comes from ``config.attributes["database_url"]`` (set by
:func:`intelligence.store.migrate.upgrade`) or ``$DATABASE_URL``. A caller may instead pass
an open sync connection as ``config.attributes["connection"]`` (used by tests that compare
the models with the migrated schema).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection

from intelligence.store import models
from intelligence.store.engine import make_engine

config = context.config
target_metadata = models.Base.metadata

# Two processes starting together (sidecar replicas, `llmproxy up` beside a test run) must not
# both run the DDL: the second waits for this lock, then finds the schema at head.
_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(hashtext('llmproxy.alembic'))"


def _database_url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: pass it to intelligence.store.migrate.upgrade() or set DATABASE_URL")
    return url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        connection.execute(text(_MIGRATION_LOCK))
        context.run_migrations()


async def _run_async() -> None:
    engine = make_engine(_database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def _run_offline() -> None:
    context.configure(
        url="postgresql://", target_metadata=target_metadata, literal_binds=True, dialect_opts={"paramstyle": "named"}
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
elif (given := config.attributes.get("connection")) is not None:
    _run(given)
else:
    asyncio.run(_run_async())
