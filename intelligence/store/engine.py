"""The async SQLAlchemy engine for the request log, built from any libpq-style URL."""

from __future__ import annotations

from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_SCHEMES = ("postgresql+asyncpg://", "postgres+asyncpg://", "postgresql://", "postgres://")


def asyncpg_dsn(url: str) -> str:
    """The URL as asyncpg's own DSN parser wants it (plain ``postgresql://``).

    asyncpg understands libpq query options (``?host=/socket/dir``, ``sslmode=``, ...),
    which SQLAlchemy's URL translation only partly does, so the DSN goes to asyncpg untouched
    apart from the scheme.
    """
    for scheme in _SCHEMES:
        if url.startswith(scheme):
            return "postgresql://" + url[len(scheme) :]
    raise ValueError("database URL must start with postgresql://, postgres:// or postgresql+asyncpg://")


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 5,
    connect_timeout: float = 10.0,
    **engine_kwargs: Any,
) -> AsyncEngine:
    """An AsyncEngine on asyncpg; ``engine_kwargs`` go to ``create_async_engine`` (e.g. ``poolclass``)."""
    dsn = asyncpg_dsn(url)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn, timeout=connect_timeout)

    if "poolclass" not in engine_kwargs:
        engine_kwargs.setdefault("pool_size", pool_size)
        engine_kwargs.setdefault("max_overflow", max_overflow)
        engine_kwargs.setdefault("pool_timeout", 10)
    # pre_ping: after a database restart pooled connections are dead; recycle guards against
    # idle-timeout proxies (pgbouncer, cloud LBs) cutting connections silently.
    engine_kwargs.setdefault("pool_pre_ping", True)
    engine_kwargs.setdefault("pool_recycle", 1800)
    return create_async_engine("postgresql+asyncpg://", async_creator=connect, **engine_kwargs)
