from __future__ import annotations

import pytest
from sqlalchemy import text

from intelligence.store.engine import asyncpg_dsn, make_engine


@pytest.mark.parametrize("scheme", ["postgresql://", "postgres://", "postgresql+asyncpg://", "postgres+asyncpg://"])
def test_dsn_normalises_every_accepted_scheme(scheme: str) -> None:
    assert asyncpg_dsn(f"{scheme}u:p@/db?host=/run/pg") == "postgresql://u:p@/db?host=/run/pg"


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        make_engine("sqlite:///x.db")


@pytest.mark.parametrize("scheme", ["postgresql://", "postgres://", "postgresql+asyncpg://"])
async def test_engine_connects_over_unix_socket_url(pg_url: str, scheme: str) -> None:
    assert "?host=/" in pg_url  # the embedded server's socket form (skipped meaning when external)
    engine = make_engine(scheme + pg_url.split("://", 1)[1])
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 41 + 1"))).scalar_one() == 42
    finally:
        await engine.dispose()
