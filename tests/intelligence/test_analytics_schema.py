"""The analytics ORM (intelligence.analytics_models) matches migration 0003_analytics_rollups."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import intelligence.analytics_models as analytics_models
from intelligence.store.engine import make_engine
from intelligence.store.models import Base, Exchange

TABLES = {"exchange_rollups", "pattern_rollups"}


def _mine(obj, name, type_, reflected, compare_to) -> bool:
    if type_ == "table":
        return name in TABLES
    if type_ == "column":
        return obj.table.name in TABLES
    if type_ == "index":
        return obj.table.name in TABLES or name in analytics_models.EXCHANGE_SEARCH_INDEXES
    return True


async def test_analytics_models_match_the_migrated_schema(pg_url: str) -> None:
    engine = make_engine(pg_url)

    def diff(sync_conn) -> list:
        ctx = MigrationContext.configure(
            sync_conn, opts={"compare_type": True, "compare_server_default": False, "include_object": _mine}
        )
        return compare_metadata(ctx, Base.metadata)

    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    assert differences == []


def test_exchange_search_indexes_are_declared_once() -> None:
    names = [ix.name for ix in Exchange.__table__.indexes]
    for name in analytics_models.EXCHANGE_SEARCH_INDEXES:
        assert names.count(name) == 1
    analytics_models._declare_exchange_indexes()  # importing twice (or the request log declaring them) adds nothing
    assert [ix.name for ix in Exchange.__table__.indexes] == names
