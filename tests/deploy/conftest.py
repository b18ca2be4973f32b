"""Fixtures of the deployment tests that need a database: a fresh migrated one per test (retention deletes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.store.engine import make_engine
from intelligence.store.migrate import upgrade_async


@dataclass
class MigratedDb:
    url: str
    engine: AsyncEngine


@pytest.fixture
async def migrated_db(fresh_db_url: Callable[[], Awaitable[str]]) -> AsyncIterator[MigratedDb]:
    url = await fresh_db_url()
    await upgrade_async(url)
    engine = make_engine(url)
    yield MigratedDb(url=url, engine=engine)
    await engine.dispose()
