"""Apply or inspect the database schema (Alembic), callable from sync code or a running loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool

from intelligence.store.engine import make_engine

_STORE_DIR = Path(__file__).resolve().parent
ALEMBIC_INI = _STORE_DIR / "alembic.ini"
HEAD = "heads"  # every branch head: tolerant of two revisions written against the same parent

T = TypeVar("T")

# Alembic keeps the running migration in module globals (alembic.context / alembic.op), so two
# threads of one process must not run commands at once. Across processes env.py takes an
# advisory lock in the database.
_ALEMBIC_LOCK = threading.Lock()


def alembic_config(database_url: str | None = None) -> Config:
    """The Alembic config of this package, independent of the working directory."""
    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(_STORE_DIR / "migrations"))
    if database_url is not None:
        cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = HEAD) -> None:
    """Migrate the database to ``revision`` (default: the newest)."""
    _outside_loop(lambda: _locked(command.upgrade, alembic_config(database_url), revision))


def downgrade(database_url: str, revision: str) -> None:
    _outside_loop(lambda: _locked(command.downgrade, alembic_config(database_url), revision))


def current(database_url: str) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    return _outside_loop(lambda: asyncio.run(_current(database_url)))


def head() -> str:
    """The newest revision this code knows."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


async def _current(database_url: str) -> str | None:
    engine = make_engine(database_url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
    finally:
        await engine.dispose()


def _outside_loop(fn: Callable[[], T]) -> T:
    """Run ``fn`` here, or in a worker thread when this thread already runs an event loop.

    env.py drives the async engine with asyncio.run(), which refuses to nest in a running loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="alembic") as pool_:
        return pool_.submit(fn).result()


async def upgrade_async(database_url: str, revision: str = HEAD) -> None:
    """:func:`upgrade` without blocking the calling event loop."""
    await asyncio.to_thread(_locked, command.upgrade, alembic_config(database_url), revision)


def _locked(fn: Callable[[Config, str], None], cfg: Config, revision: str) -> None:
    with _ALEMBIC_LOCK:
        fn(cfg, revision)
