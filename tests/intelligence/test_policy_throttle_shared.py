"""Policy throttles across two and four "replicas" (Throttler + SharedThrottleCounts pairs, each with
its own heartbeat) on one real PostgreSQL: hit at full speed as a minute opens, with fair shares they
stay within the minute's limit plus rounding (< N), where the shared window alone let N x burst
through and per-process buckets alone N x the limit and more."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from intelligence.policy import Throttler
from intelligence.policy.testing import request_facts, snapshot
from intelligence.store.engine import make_engine
from intelligence.store.replicas import DbHeartbeats, LiveReplicas
from intelligence.throttle import DbWindowStore, SharedThrottleCounts
from intelligence.throttle.simulate import one_busy_replica, simulate_minute

T0 = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
RULE = "test/slow"


class WallClock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


class MonoClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def _window_rows(engine) -> dict[tuple[str, str, datetime], int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT rule, subject, window_start, requests FROM policy_throttle_counts"))
        return {(r, s, w): n for r, s, w, n in rows.all()}


@pytest.mark.parametrize("replicas", [2, 4])
async def test_replicas_hit_at_full_speed_as_the_minute_opens_stay_within_limit_plus_rounding(migrated_db, replicas: int) -> None:
    spike = await simulate_minute(migrated_db.engine, replicas=replicas, rpm=60, burst=60, per_second=100)
    assert 60 <= spike.shared <= spike.bound == 60 + replicas - 1, spike
    assert spike.rows == spike.shared  # the database saw every admission
    assert spike.unshared >= replicas * 60 - replicas, spike  # before shares: each spent its burst before a flush
    assert spike.per_process >= replicas * 60 * 2 - replicas, spike  # buckets alone: burst + a refill minute each
    steady = await simulate_minute(migrated_db.engine, replicas=replicas, rpm=60, burst=10, per_second=5)
    assert 60 <= steady.shared <= steady.bound, steady


async def test_one_busy_replica_of_two_still_gets_the_whole_limit_in_the_minute(migrated_db) -> None:
    admitted, reached = await one_busy_replica(migrated_db.engine, replicas=2, rpm=60, per_second=100)
    assert admitted == 60 and reached is not None and reached < 30  # the cost of shares: seconds, not the minute


async def test_heartbeats_count_live_replicas_once_per_process(migrated_db) -> None:
    beats = DbHeartbeats(migrated_db.engine)
    a, a_again = (LiveReplicas(beats, replica_id="replica-a") for _ in range(2))  # two flushers of one process
    b = LiveReplicas(beats, replica_id="replica-b")
    t = T0 + timedelta(hours=3)
    assert await a.beat(t) == 1 and await a_again.beat(t) == 1
    assert await b.beat(t + timedelta(seconds=1)) == 2 and a.count(t + timedelta(seconds=1)) == 1
    assert await a.beat(t + timedelta(seconds=12)) == 1  # b silent for 11 s: not live
    assert await a.beat(t + timedelta(hours=2)) == 1
    async with migrated_db.engine.connect() as conn:  # b's row, gone for over an hour, was deleted
        ids = (await conn.execute(text("SELECT replica_id FROM replica_heartbeats ORDER BY 1"))).scalars().all()
    assert ids == ["replica-a"]


async def test_background_flushers_make_a_replica_refuse_what_another_spent(migrated_db) -> None:
    wall = WallClock(T0 + timedelta(seconds=5))
    counts = [SharedThrottleCounts.from_engine(migrated_db.engine, clock=wall, flush_interval=0.05) for _ in range(2)]
    a, b = (Throttler(shared=c) for c in counts)
    snap = snapshot({"id": "slow", "actions": {"throttle": {"rpm": 5}}})
    facts = request_facts(key_id=None, client=None, client_addr="192.0.2.9", now=wall.t)
    decision = snap.evaluate_request(facts)
    for c in counts:
        await c.start()
    try:
        assert [a.check(decision, facts).block is None for _ in range(5)] == [True] * 5
        async with asyncio.timeout(5):
            while counts[1].used(RULE, "192.0.2.9", T0) < 5:
                await asyncio.sleep(0.02)
        refused = b.check(decision, facts).block
        assert refused is not None and refused.retry_after == 55  # 07:00:05 -> 07:01:00
    finally:
        for c in counts:
            await c.stop()
    assert await _window_rows(migrated_db.engine) == {(RULE, "192.0.2.9", T0): 5}


async def test_counts_survive_an_unreachable_database_and_old_windows_are_pruned(migrated_db) -> None:
    with socket.socket() as s:  # a port nobody listens on: connection refused, like a database that is down
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = make_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{dead_port}/none", connect_timeout=2)
    wall = WallClock(T0 + timedelta(seconds=30))
    counts = SharedThrottleCounts.from_engine(dead, clock=wall)
    throttler = Throttler(clock=MonoClock(), shared=counts)
    snap = snapshot({"id": "slow", "actions": {"throttle": {"rpm": 3}}})
    facts = request_facts()
    decision = snap.evaluate_request(facts)
    try:
        assert [throttler.check(decision, facts).block is None for _ in range(4)] == [True, True, True, False]
        with pytest.raises(OSError):
            await counts.flush()
        assert counts.unflushed() == 3 and throttler.check(decision, facts).block is not None  # still enforced
        assert counts.replicas is not None and counts.replicas.count(wall.t) is None  # no shares without a count
    finally:
        await dead.dispose()
    async with migrated_db.engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO policy_throttle_counts VALUES (:r, 'old', :w, 9)"), {"r": RULE, "w": T0 - timedelta(minutes=3)}
        )
    counts.store = DbWindowStore(migrated_db.engine)  # the database is back
    await counts.flush()
    assert counts.unflushed() == 0 and counts.stats["pruned"] == 1
    assert await _window_rows(migrated_db.engine) == {(RULE, "gk_test", T0): 3}
