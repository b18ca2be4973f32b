"""Helpers the CLI commands share: which database to use, one committed transaction."""

from __future__ import annotations

import os
from pathlib import Path

from intelligence.ops.stack import StackState


def database_url_for(data_dir: Path, explicit: str | None = None) -> str:
    """The database a command should use: explicit > $DATABASE_URL > the running stack's."""
    state = StackState.load(data_dir)
    if explicit:
        url = explicit
    elif os.environ.get("DATABASE_URL"):
        url = os.environ["DATABASE_URL"]
    elif state is None:
        raise SystemExit(
            f"llmproxy: no running stack found in {data_dir} (start one with `llmproxy up`), and DATABASE_URL is not set"
        )
    else:
        url = state.database_url
    # The audit key and checkpoint of a stack live in its data dir and belong to its database: commands
    # that append or verify audit entries on that database find them through LLMPROXY_DATA_DIR. On any
    # other database they must not: a checkpoint anchors one chain, and another database's entries
    # would contradict it (configure LLMPROXY_AUDIT_CHECKPOINT_FILE for that database instead).
    if state is not None and state.database_url == url:
        os.environ.setdefault("LLMPROXY_DATA_DIR", str(data_dir))
    return url


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
