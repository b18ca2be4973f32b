"""Database fixtures shared by every test package: one real PostgreSQL (with pgvector) per run.

Set TEST_DATABASE_URL to use an existing server instead of the embedded one; it must allow
CREATE DATABASE for ``fresh_db_url``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.embedded_pg import EmbeddedPostgres, start_embedded
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.migrate import upgrade


def database_url(url: str, dbname: str) -> str:
    """``url`` pointing at another database on the same server (keeps ?host=... and credentials)."""
    parts = urlsplit(asyncpg_dsn(url))
    return urlunsplit(parts._replace(path="/" + dbname))


@contextmanager
def embedded_postgres() -> Iterator[EmbeddedPostgres]:
    """A throw-away embedded server.

    Its data lives in a mkdtemp() directory, not pytest's tmp_path: pytest prunes old
    basetemp directories, which would pull the data directory from under a server that
    outlives a concurrent pytest run on the same machine.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="llmproxy-test-pg-"))
    pg = start_embedded(data_dir)
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """The server's maintenance database URL (not migrated)."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    with embedded_postgres() as pg:
        yield pg.url


@pytest.fixture(scope="session")
def pg_url(pg_server_url: str) -> str:
    """A database migrated to head, shared by the whole run (tests must not assume it is empty)."""
    upgrade(pg_server_url)
    return pg_server_url


@pytest.fixture(scope="session")
async def db_engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(pg_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def fresh_db_url(pg_server_url: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """A factory of new, empty (unmigrated) databases on the test server, dropped afterwards."""
    created: list[str] = []

    async def create() -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        conn = await asyncpg.connect(asyncpg_dsn(pg_server_url))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        created.append(name)
        return database_url(pg_server_url, name)

    yield create
    conn = await asyncpg.connect(asyncpg_dsn(pg_server_url))
    try:
        for name in created:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# tests/e2e/conftest.py gives the whole run one audit key (LLMPROXY_AUDIT_KEY) so that what one stack or
# CLI call writes, another verifies. The suites that run stacks use it (and ui, whose session-wide seed
# writes audit entries while it is set); elsewhere a test that wants a key sets one itself, and the others
# see an unkeyed process, as they were written for.
_SHARED_AUDIT_KEY_SUITES = {"e2e", "reliability", "browser", "deploy", "ui"}


@pytest.fixture(autouse=True)
def _isolated_audit_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI commands run in-process point LLMPROXY_DATA_DIR at the stack they used (extproc/cli/stack.py);
    undone after each test, so a later test's audit entries never meet another database's checkpoint."""
    monkeypatch.delenv("LLMPROXY_DATA_DIR", raising=False)
    suite = Path(str(request.node.path)).relative_to(Path(__file__).parent).parts[0]
    if suite not in _SHARED_AUDIT_KEY_SUITES:
        monkeypatch.delenv("LLMPROXY_AUDIT_KEY", raising=False)
