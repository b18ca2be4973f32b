from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

# every store's tables join Base.metadata when their models are imported
import intelligence.anomaly.models
import intelligence.attacks.models
import intelligence.claude.models
import intelligence.enhance.models
import intelligence.events.models
import intelligence.jobs.cursors
import intelligence.store.replicas
import intelligence.throttle.models  # noqa: F401
from intelligence.store import migrate
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.models import Base

FreshDb = Callable[[], Awaitable[str]]
REQUEST_LOG_TABLES = {"exchanges", "sessions"}
INTELLIGENCE_TABLES = {
    "claude_calls",
    "enhancements",
    "experiments",
    "experiment_events",
    "anomaly_verdicts",
    "verdict_memory",
    "events",
    "job_cursors",
    "attack_memory",
    "policy_throttle_counts",
    "replica_heartbeats",
}


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_upgrade_on_empty_database_creates_schema_and_vector(fresh_db_url: FreshDb) -> None:
    url = await fresh_db_url()
    assert migrate.current(url) is None
    assert REQUEST_LOG_TABLES.isdisjoint(await _tables(url))

    migrate.upgrade(url)  # sync API called from inside a running loop

    assert migrate.current(url) == migrate.head()
    assert REQUEST_LOG_TABLES <= await _tables(url)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        assert await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        indexes = {r["indexname"] for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename='exchanges'")}
    finally:
        await conn.close()
    assert {
        "ix_exchanges_started_at",
        "ix_exchanges_session_started",
        "ix_exchanges_model_started",
        "ix_exchanges_provider_started",
        "ix_exchanges_status",
    } <= indexes


async def test_upgrade_is_idempotent_and_async_variant_works(fresh_db_url: FreshDb) -> None:
    url = await fresh_db_url()
    await migrate.upgrade_async(url)
    await migrate.upgrade_async(url)
    assert migrate.current(url) == migrate.head()


def test_upgrade_from_plain_sync_code(pg_url: str) -> None:
    # no running loop here: upgrade runs directly
    migrate.upgrade(pg_url)
    assert migrate.current(pg_url) == migrate.head()


async def test_concurrent_upgrades_in_one_process_serialise(fresh_db_url: FreshDb) -> None:
    url = await fresh_db_url()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate.upgrade(url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    await asyncio.to_thread(lambda: [t.join(60) for t in threads])
    assert errors == []
    assert migrate.current(url) == migrate.head()


async def test_concurrent_upgrades_from_several_processes(fresh_db_url: FreshDb) -> None:
    url = await fresh_db_url()
    code = "import sys; from intelligence.store.migrate import upgrade; upgrade(sys.argv[1])"
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", code, url, stderr=asyncio.subprocess.PIPE) for _ in range(3)
    ]
    results = [await asyncio.wait_for(p.communicate(), 120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err.decode()[-2000:] for _, err in results]
    assert migrate.current(url) == migrate.head()


async def test_downgrade_to_base_drops_request_log(fresh_db_url: FreshDb) -> None:
    url = await fresh_db_url()
    migrate.upgrade(url, "0001_request_log")
    migrate.downgrade(url, "base")
    assert migrate.current(url) is None
    assert REQUEST_LOG_TABLES.isdisjoint(await _tables(url))


def _request_log_object(obj, name, type_, reflected, compare_to) -> bool:
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return table in REQUEST_LOG_TABLES | INTELLIGENCE_TABLES


async def test_models_match_migrated_schema(pg_url: str) -> None:
    engine = make_engine(pg_url)

    def diff(sync_conn) -> list:
        ctx = MigrationContext.configure(
            sync_conn,
            opts={
                "compare_type": True,
                "compare_server_default": False,
                "include_object": _request_log_object,
            },
        )
        return compare_metadata(ctx, Base.metadata)

    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    # later revisions may add indexes of their own to these tables (reporting queries); every
    # column, and every index the models declare, must match
    assert [d for d in differences if not (isinstance(d, tuple) and d[0] == "remove_index")] == []


def test_current_requires_a_url_scheme_it_knows() -> None:
    with pytest.raises(ValueError):
        migrate.current("mysql://localhost/db")
