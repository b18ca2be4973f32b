"""A migrated database of its own for the CLI tests here (tests/intelligence's fixtures are not visible)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.store.engine import make_engine
from intelligence.store.migrate import upgrade_async


@pytest.fixture
async def cli_db(fresh_db_url: Callable[[], Awaitable[str]]) -> AsyncIterator[tuple[str, AsyncEngine]]:
    url = await fresh_db_url()
    await upgrade_async(url)
    engine = make_engine(url)
    yield url, engine
    await engine.dispose()
