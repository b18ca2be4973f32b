"""Helpers the CLI commands share: which database to use, one committed transaction."""

from __future__ import annotations

import os
from pathlib import Path

from intelligence.ops.stack import StackState


def database_url_for(data_dir: Path, explicit: str | None = None) -> str:
    """The database a command should use: explicit > $DATABASE_URL > the running stack's."""
    # The audit key and checkpoint of that stack live in its data dir: commands that append audit
    # entries find them through LLMPROXY_DATA_DIR.
    os.environ.setdefault("LLMPROXY_DATA_DIR", str(data_dir))
    if explicit:
        return explicit
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    state = StackState.load(data_dir)
    if state is None:
        raise SystemExit(
            f"llmproxy: no running stack found in {data_dir} (start one with `llmproxy up`), and DATABASE_URL is not set"
        )
    return state.database_url


def run_in_transaction(url: str, work, *, tables: str, isolation: str | None = None):
    """Run ``await work(conn)`` in one committed transaction on a one-connection engine.

    ``tables`` names what a missing relation means ("gateway-key tables", ...), so a database that was
    never migrated gets a sentence instead of a traceback.
    """
    import asyncio

    from sqlalchemy.exc import ProgrammingError

    from intelligence.store.engine import make_engine

    async def _go():
        engine = make_engine(url, pool_size=1, max_overflow=0)
        try:
            async with engine.connect() as conn:
                if isolation:
                    conn = await conn.execution_options(isolation_level=isolation)
                async with conn.begin():
                    return await work(conn)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(_go())
    except ProgrammingError as exc:
        if "does not exist" in str(exc):
            raise SystemExit(
                f"llmproxy: the database has no {tables} yet; start the stack once (`llmproxy up`) so it migrates the schema"
            ) from None
        raise
