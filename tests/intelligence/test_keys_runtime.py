"""The hot-path side against real PostgreSQL: the key snapshot follows revocations (NOTIFY and
polling), and budgets hold across two UsageMeter instances sharing one database (two replicas)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import text

from extproc.auth import AuthMode, authenticate, budget_refusal, check_key
from intelligence.keys import Budgets, NewKey, create_key, quarantine_key, revoke_key
from intelligence.keys.cache import KeyCache
from intelligence.keys.meter import UsageMeter
from intelligence.store.engine import asyncpg_dsn, make_engine
from tests.intelligence.conftest import SecurityDb

DEAD_URL = "postgresql://nobody@127.0.0.1:1/none"


async def _new_key(db: SecurityDb, **kw) -> tuple[str, str]:
    async with db.engine.begin() as conn:
        created = await create_key(conn, NewKey(name=kw.pop("name", "k"), **kw), actor="test")
    return created.key, created.record.id


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def _until(predicate: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``predicate`` held; fails the test after ``timeout``."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


def _status(cache: KeyCache, key: str) -> int:
    return check_key(_bearer(key), cache.snapshot, datetime.now(UTC)).status


async def _activity(url: str) -> list:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return [
            dict(r) for r in await conn.fetch("SELECT pid, state, query FROM pg_stat_activity WHERE datname = current_database()")
        ]
    finally:
        await conn.close()


# ------------------------------------------------------------------------------- key cache
async def test_revocation_reaches_the_snapshot_by_notify_well_before_the_poll(security_db: SecurityDb) -> None:
    key, key_id = await _new_key(security_db)
    cache = KeyCache(security_db.engine, poll_interval=30.0)  # only NOTIFY can explain a quick refresh
    await cache.start()
    try:
        assert _status(cache, key) == 200
        await _until(lambda: cache.listening, 5)
        await asyncio.sleep(0.1)  # let the wake-up that follows LISTEN settle
        async with security_db.engine.begin() as conn:
            await revoke_key(conn, key_id, actor="admin")
        waited = await _until(lambda: _status(cache, key) == 401, 2.0)
        assert waited < 1.0 and cache.stats["notifications"] >= 1
        decision = check_key(_bearer(key), cache.snapshot, datetime.now(UTC))
        assert decision.code == "key_revoked"

        # a new key is usable at once too
        key2, _ = await _new_key(security_db, name="second")
        await _until(lambda: _status(cache, key2) == 200, 2.0)
    finally:
        await cache.stop()
    assert not cache.listening


async def test_revocation_reaches_the_snapshot_by_polling_alone(security_db: SecurityDb) -> None:
    key, key_id = await _new_key(security_db)
    cache = KeyCache(security_db.engine, poll_interval=0.2, listen=False)
    await cache.start()
    try:
        assert _status(cache, key) == 200
        async with security_db.engine.begin() as conn:
            await quarantine_key(conn, key_id, actor="policy", reason="burst of injections")
        waited = await _until(lambda: _status(cache, key) == 403, 2.0)
        assert waited <= 0.2 * 2 + 0.3
        assert cache.stats["notifications"] == 0
    finally:
        await cache.stop()


async def test_listener_comes_back_after_its_connection_is_killed(security_db: SecurityDb) -> None:
    key, key_id = await _new_key(security_db)
    cache = KeyCache(security_db.engine, poll_interval=0.3)
    await cache.start()
    try:
        await _until(lambda: cache.listening, 5)
        listeners: list = []
        for _ in range(100):
            listeners = [a for a in await _activity(security_db.url) if a["query"].upper().startswith("LISTEN")]
            if listeners:
                break
            await asyncio.sleep(0.02)
        assert len(listeners) == 1, await _activity(security_db.url)
        admin = await asyncpg.connect(asyncpg_dsn(security_db.url))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", listeners[0]["pid"])
        finally:
            await admin.close()
        await _until(lambda: cache.stats["listens"] == 2 and cache.listening, 5)  # a new LISTEN connection
        await asyncio.sleep(0.1)
        async with security_db.engine.begin() as conn:
            await revoke_key(conn, key_id, actor="admin")
        await _until(lambda: _status(cache, key) == 401, 2.0)
    finally:
        await cache.stop()


async def test_no_database_means_503_not_401_and_the_last_snapshot_stays(security_db: SecurityDb) -> None:
    dead = make_engine(DEAD_URL, connect_timeout=0.5)
    cache = KeyCache(dead, poll_interval=0.05)
    await cache.start()
    try:
        await _until(lambda: cache.stats["failures"] >= 2, 5)
        decision = authenticate(_bearer("llmp_whatever"), cache.snapshot, datetime.now(UTC), AuthMode.REQUIRED)
        assert (decision.status, decision.code) == (503, "key_store_unavailable")
    finally:
        await cache.stop()
        await dead.dispose()

    key, _ = await _new_key(security_db)
    cache = KeyCache(security_db.engine, poll_interval=0.05, listen=False)
    await cache.start()
    loaded = cache.snapshot
    cache.engine = make_engine(DEAD_URL, connect_timeout=0.5)  # the database goes away
    try:
        await _until(lambda: cache.stats["failures"] >= 2, 5)
        assert cache.snapshot is loaded and _status(cache, key) == 200
    finally:
        await cache.stop()
        await cache.engine.dispose()


# ------------------------------------------------------------------------------- usage meter
def _clock(start: datetime) -> tuple[Callable[[], datetime], Callable[[timedelta], None]]:
    now = [start]
    return (lambda: now[0]), (lambda d: now.__setitem__(0, now[0] + d))


def _mid_minute() -> datetime:
    return datetime.now(UTC).replace(second=10, microsecond=0)


async def test_request_budget_holds_across_two_replicas(security_db: SecurityDb) -> None:
    _, key_id = await _new_key(security_db, budgets=Budgets(rpm=5, rpd=7))
    budgets = {key_id: Budgets(rpm=5, rpd=7)}.get
    clock, advance = _clock(_mid_minute())
    engine_b = make_engine(security_db.url)
    a = UsageMeter(security_db.engine, budgets, clock=clock)
    b = UsageMeter(engine_b, budgets, clock=clock)
    try:
        assert [a.admit(key_id) for _ in range(3)] == [None] * 3
        await a.flush()
        await b.flush()  # B now knows A's 3
        assert b.admit(key_id) is None and b.admit(key_id) is None
        refused = b.admit(key_id)
        assert refused is not None and refused.budget == "rpm" and "5 of 5 requests per minute" in refused.message
        assert 0 < refused.retry_after <= 60
        decision = budget_refusal(refused, key_id)
        assert (decision.status, decision.code, decision.key_id) == (429, "budget_exceeded", key_id)
        assert decision.immediate("chat").headers["retry-after"] == str(refused.retry_after)
        assert a.exceeded(key_id) is None  # A has not heard of B's two yet: the bounded overshoot
        await b.flush()
        await a.flush()
        assert "requests per minute" in (a.exceeded(key_id) or "")
        assert a.stats["refused"] == 0 and b.stats["refused"] == 1

        advance(timedelta(minutes=1))  # new minute: rpm resets, rpd (7) still counts the 5
        assert a.exceeded(key_id) is None
        assert a.admit(key_id) is None and a.admit(key_id) is None
        assert "requests per day" in (a.exceeded(key_id) or "")
        await a.flush()
        await b.flush()
        hit = b.check(key_id)
        assert hit is not None and hit.budget == "rpd" and hit.retry_after > 60
    finally:
        await engine_b.dispose()
    conn = await asyncpg.connect(asyncpg_dsn(security_db.url))
    try:
        rows = await conn.fetch("SELECT granularity, requests FROM gateway_key_usage WHERE key_id = $1 ORDER BY bucket", key_id)
    finally:
        await conn.close()
    assert sorted((r["granularity"], r["requests"]) for r in rows) == [("day", 7), ("minute", 2), ("minute", 5)]


async def test_token_budget_counts_after_the_response_across_replicas(security_db: SecurityDb) -> None:
    _, key_id = await _new_key(security_db, budgets=Budgets(tpm=100))
    budgets = {key_id: Budgets(tpm=100)}.get
    clock, _ = _clock(_mid_minute())
    engine_b = make_engine(security_db.url)
    a = UsageMeter(security_db.engine, budgets, clock=clock)
    b = UsageMeter(engine_b, budgets, clock=clock)
    try:
        assert a.admit(key_id) is None
        a.record(key_id, tokens=60)
        assert a.exceeded(key_id) is None
        b.record(key_id, tokens=40)
        assert a.exceeded(key_id) is None and b.exceeded(key_id) is None  # neither knows the other's yet
        await b.flush()
        await a.flush()
        assert "100 of 100 tokens per minute" in (a.exceeded(key_id) or "")
        assert b.exceeded(key_id) is None  # until its next flush reads A's 60 back
        await b.flush()
        assert "tokens per minute" in (b.exceeded(key_id) or "")
    finally:
        await engine_b.dispose()


async def test_flush_failure_keeps_counts_and_enforces_locally(security_db: SecurityDb) -> None:
    dead = make_engine(DEAD_URL, connect_timeout=0.5)
    meter = UsageMeter(dead, {"gk_x": Budgets(rpm=2)}.get)
    try:
        assert meter.admit("gk_x") is None and meter.admit("gk_x") is None
        with pytest.raises(Exception):
            await meter.flush()
        assert meter.exceeded("gk_x") is not None  # the two survived the failed flush
        assert meter.admit("gk_no_budget") is None  # keys without budgets are never refused
        meter.record("gk_x")  # nothing to count: ignored
        await meter.stop()  # the last flush fails: logged, not raised
    finally:
        await dead.dispose()


async def test_background_flush_unknown_keys_and_pruning(security_db: SecurityDb) -> None:
    _, key_id = await _new_key(security_db, budgets=Budgets(rpd=1000))
    clock, advance = _clock(_mid_minute() - timedelta(days=2))
    meter = UsageMeter(security_db.engine, {key_id: Budgets(rpd=1000)}.get, clock=clock, flush_interval=0.05, prune_interval=0.0)
    meter.record(key_id, tokens=5, requests=1)
    meter.record("gk_deleted_meanwhile", tokens=5, requests=1)  # skipped, does not fail the flush
    await meter.flush()
    advance(timedelta(days=2))
    await meter.start()
    meter.admit(key_id)
    await _until(lambda: meter.stats["flushes"] >= 3, 5)
    await meter.stop()

    async def minute_rows() -> list:
        async with security_db.engine.connect() as conn:
            return (
                await conn.execute(
                    text("SELECT bucket FROM gateway_key_usage WHERE key_id = :k AND granularity = 'minute'"), {"k": key_id}
                )
            ).all()

    rows = await minute_rows()
    assert len(rows) == 1 and rows[0][0] == clock().replace(second=0)  # the two-day-old minute was pruned
    async with security_db.engine.connect() as conn:
        days = (await conn.execute(text("SELECT count(*) FROM gateway_key_usage WHERE granularity = 'day'"))).scalar_one()
    assert days == 2  # day buckets stay as history
