"""Policy throttles with a shared per-minute window: the window logic and the fair shares between
reads, with fake clocks and in-memory stand-ins for the database (the real-database version is
tests/intelligence/test_policy_throttle_shared.py)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from extproc.errors import refusal
from intelligence.policy import Mode, Throttler
from intelligence.policy.testing import request_facts, snapshot
from intelligence.store.replicas import LiveReplicas, ShareBook
from intelligence.throttle import SharedThrottleCounts, WindowDelta
from intelligence.throttle.counts import Subject

T0 = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
RULE = "test/slow"  # qualified id of rule "slow" in the policy the factory builds


class WallClock:
    def __init__(self, t: datetime = T0) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


class MonoClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class MemoryStore:
    """What policy_throttle_counts does, in a dict; ``down`` makes every call fail like a lost database."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, datetime], int] = {}
        self.down = False
        self.gate: asyncio.Event | None = None  # when set, exchange waits for it (a slow database)
        self.calls = 0

    async def exchange(self, deltas: list[WindowDelta], window: datetime) -> dict[Subject, int]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise ConnectionRefusedError("database down")
        for d in deltas:
            key = (d.rule, d.subject, d.window)
            self.rows[key] = self.rows.get(key, 0) + d.requests
        return {(r, s): n for (r, s, w), n in self.rows.items() if w == window}

    async def prune(self, before: datetime) -> int:
        if self.down:
            raise ConnectionRefusedError("database down")
        old = [k for k in self.rows if k[2] < before]
        for k in old:
            del self.rows[k]
        return len(old)


class MemoryHeartbeats:
    """What replica_heartbeats does, in a dict; ``down`` fails every beat."""

    def __init__(self) -> None:
        self.seen: dict[str, datetime] = {}
        self.down = False

    async def beat(self, replica_id: str, now: datetime, live_since: datetime) -> int:
        if self.down:
            raise ConnectionRefusedError("database down")
        self.seen[replica_id] = now
        return sum(t > live_since for t in self.seen.values())


class Replica:
    def __init__(
        self, store: MemoryStore, wall: WallClock, mono: MonoClock | None = None, replicas: LiveReplicas | None = None
    ) -> None:
        self.counts = SharedThrottleCounts(store, clock=wall, replicas=replicas)
        self.throttler = Throttler(clock=mono or MonoClock(), shared=self.counts)

    def admits(self, snap, facts=None) -> bool:
        facts = facts or request_facts()
        return self.throttler.check(snap.evaluate_request(facts), facts).block is None


def _throttle(rpm: int, burst: int | None = None, mode: str = "enforce"):
    spec = {"rpm": rpm} if burst is None else {"rpm": rpm, "burst": burst}
    return snapshot({"id": "slow", "mode": mode, "actions": {"throttle": spec}})


async def test_window_refuses_when_bucket_has_refilled_and_retry_after_is_the_window_end() -> None:
    wall, mono = WallClock(T0 + timedelta(seconds=20)), MonoClock()
    replica = Replica(MemoryStore(), wall, mono)
    snap = _throttle(rpm=6)
    assert [replica.admits(snap) for _ in range(6)] == [True] * 6
    mono.t += 30.0  # 3 tokens back in the bucket, but the minute already has its 6
    wall.t += timedelta(seconds=25)
    facts = request_facts()
    refused = replica.throttler.check(snap.evaluate_request(facts), facts)
    assert refused.block is not None and refused.block.status == 429
    assert refused.block.retry_after == 15  # 07:00:45 -> 07:01:00
    assert refusal(refused.block, "chat").headers["retry-after"] == "15"
    assert replica.throttler.stats == {"bucket_refused": 0, "window_refused": 1, "share_refused": 0}
    wall.t = T0 + timedelta(minutes=1)  # next minute: the window is empty again
    assert replica.admits(snap)


async def test_retry_after_is_the_later_of_bucket_and_window() -> None:
    wall, mono = WallClock(T0 + timedelta(seconds=55)), MonoClock()
    replica = Replica(MemoryStore(), wall, mono)
    snap = _throttle(rpm=2, burst=2)  # a token every 30 s; the window ends in 5 s
    assert replica.admits(snap) and replica.admits(snap)
    facts = request_facts()
    assert replica.throttler.check(snap.evaluate_request(facts), facts).block.retry_after == 30


async def test_two_replicas_share_the_minute_once_counts_are_flushed() -> None:
    store, wall = MemoryStore(), WallClock()
    a, b = Replica(store, wall), Replica(store, wall)
    snap = _throttle(rpm=4, burst=4)
    assert [a.admits(snap) for _ in range(3)] == [True] * 3
    await a.counts.flush()
    await b.counts.flush()  # b reads a's 3
    assert b.counts.used(RULE, "gk_test", T0) == 3
    assert b.admits(snap)
    assert not b.admits(snap)  # 3 + 1 = 4 = rpm, though b's own bucket still has 3 tokens
    assert a.admits(snap)  # a has not seen b's admission yet: the flush lag the documented bound allows
    await b.counts.flush()
    await a.counts.flush()
    assert store.rows[(RULE, "gk_test", T0)] == 5
    assert not a.admits(snap)
    other = request_facts(key_id="gk_other", client="gk_other")
    assert a.admits(snap, other)  # per key: another subject has its own window


async def test_without_sharing_each_replica_admits_its_own_rpm() -> None:
    snap = _throttle(rpm=4, burst=4)
    a, b = Throttler(clock=MonoClock()), Throttler(clock=MonoClock())
    facts = request_facts()
    admitted = sum(t.check(snap.evaluate_request(facts), facts).block is None for t in (a, b) for _ in range(4))
    assert admitted == 8  # the gap the shared window closes


async def test_refused_requests_consume_neither_token_nor_count() -> None:
    store, wall = MemoryStore(), WallClock()
    replica = Replica(store, wall)
    snap = _throttle(rpm=2, burst=2)
    assert replica.admits(snap) and replica.admits(snap)
    for _ in range(5):
        assert not replica.admits(snap)
    assert replica.counts.used(RULE, "gk_test", T0) == 2
    await replica.counts.flush()
    assert store.rows == {(RULE, "gk_test", T0): 2}


async def test_monitor_throttle_fires_on_the_window_without_refusing() -> None:
    store, wall, mono = MemoryStore(), WallClock(), MonoClock()
    a, b = Replica(store, wall, mono), Replica(store, wall)
    snap = _throttle(rpm=2, mode="monitor")
    assert a.admits(snap) and a.admits(snap)
    await a.counts.flush()
    await b.counts.flush()
    facts = request_facts()
    over = b.throttler.check(snap.evaluate_request(facts), facts)
    assert over.block is None and over.fired[0].mode is Mode.MONITOR and over.fired[0].rule == "slow"


async def test_counts_being_flushed_still_count_and_come_back_when_the_flush_fails() -> None:
    store, wall = MemoryStore(), WallClock()
    replica = Replica(store, wall)
    snap = _throttle(rpm=3, burst=3)
    assert replica.admits(snap) and replica.admits(snap)
    store.gate, store.down = asyncio.Event(), True
    flush = asyncio.create_task(replica.counts.flush())
    while store.calls == 0:
        await asyncio.sleep(0)
    assert replica.counts.used(RULE, "gk_test", T0) == 2  # in flight, still counted
    assert replica.admits(snap)  # pending: 1, inflight: 2
    assert not replica.admits(snap)
    store.gate.set()
    with pytest.raises(ConnectionRefusedError):
        await flush
    assert replica.counts.unflushed() == 3 and replica.counts.used(RULE, "gk_test", T0) == 3
    store.gate, store.down = None, False
    await replica.counts.flush()
    assert store.rows == {(RULE, "gk_test", T0): 3} and replica.counts.unflushed() == 0


async def test_outage_keeps_only_minutes_that_can_still_matter() -> None:
    store, wall = MemoryStore(), WallClock()
    replica = Replica(store, wall)
    snap = _throttle(rpm=100)
    store.down = True
    for minute in range(4):  # four minutes of outage, 2 requests each
        wall.t = T0 + timedelta(minutes=minute)
        assert replica.admits(snap) and replica.admits(snap)
        with pytest.raises(ConnectionRefusedError):
            await replica.counts.flush()
    assert replica.counts.unflushed() == 4  # minutes 2 and 3 kept, 0 and 1 dropped
    assert replica.counts.stats["dropped"] == 4
    store.down = False
    await replica.counts.flush()
    assert store.rows == {(RULE, "gk_test", T0 + timedelta(minutes=2)): 2, (RULE, "gk_test", T0 + timedelta(minutes=3)): 2}


async def test_totals_of_a_past_minute_do_not_count_in_the_next() -> None:
    store, wall = MemoryStore(), WallClock()
    a, b = Replica(store, wall), Replica(store, wall)
    snap = _throttle(rpm=2, burst=2)
    assert a.admits(snap) and a.admits(snap)
    await a.counts.flush()
    await b.counts.flush()
    assert not b.admits(snap)
    wall.t = T0 + timedelta(minutes=1, seconds=1)  # b's totals are of 07:00; it is 07:01 now
    assert b.counts.used(RULE, "gk_test", T0 + timedelta(minutes=1)) == 0
    assert b.admits(snap)


async def test_flusher_prunes_old_windows() -> None:
    store, wall = MemoryStore(), WallClock()
    replica = Replica(store, wall)
    store.rows[(RULE, "gk_test", T0 - timedelta(minutes=5))] = 7
    store.rows[(RULE, "gk_test", T0 - timedelta(minutes=1))] = 7
    await replica.counts.flush()
    assert list(store.rows) == [(RULE, "gk_test", T0 - timedelta(minutes=1))]
    assert replica.counts.stats["pruned"] == 1


async def test_background_loop_retries_after_an_outage_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    store, wall = MemoryStore(), WallClock()
    counts = SharedThrottleCounts(store, clock=wall, flush_interval=0.01)
    counts.add(RULE, "gk_test", T0)
    store.down = True
    caplog.set_level(logging.INFO, logger="llmproxy.policy.throttle")
    await counts.start()
    try:
        while counts.stats["failures"] < 3:
            await asyncio.sleep(0.01)
        store.down = False
        while counts.stats["flushes"] < 1:
            await asyncio.sleep(0.01)
    finally:
        await counts.stop()
    assert store.rows == {(RULE, "gk_test", T0): 1}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "own counts" in warnings[0].getMessage()
    assert any("shared again" in r.getMessage() for r in caplog.records)


async def test_stop_flushes_what_is_left() -> None:
    store, wall = MemoryStore(), WallClock()
    counts = SharedThrottleCounts(store, clock=wall, flush_interval=3600)
    await counts.start()
    counts.add(RULE, "10.0.0.7", T0)
    await counts.stop()
    assert store.rows == {(RULE, "10.0.0.7", T0): 1}


def test_local_only_throttler_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llmproxy.policy.throttle")
    throttler = Throttler(clock=MonoClock())
    snap = _throttle(rpm=10)
    facts = request_facts()
    for _ in range(3):
        throttler.check(snap.evaluate_request(facts), facts)
    assert [r.getMessage() for r in caplog.records].count(
        "policy throttles count in this process only (no shared database counter)"
    ) == 1


# ----------------------------------------------------------------------------- fair shares
async def _running_replicas(n: int, store: MemoryStore, wall: WallClock, beats: MemoryHeartbeats) -> list[Replica]:
    """``n`` replicas that have flushed twice before ``wall``'s minute: each knows there are ``n``."""
    replicas = [Replica(store, wall, replicas=LiveReplicas(beats, replica_id=f"r{k}")) for k in range(n)]
    opened = wall.t
    wall.t = opened - timedelta(seconds=2)
    for _ in range(2):
        for r in replicas:
            await r.counts.flush()
        wall.t += timedelta(seconds=1)
    wall.t = opened
    return replicas


async def test_replicas_hit_as_the_minute_opens_spend_only_their_share_before_a_read() -> None:
    store, wall, beats = MemoryStore(), WallClock(T0), MemoryHeartbeats()
    a, b = await _running_replicas(2, store, wall, beats)
    snap = _throttle(rpm=10, burst=10)
    assert [a.admits(snap) for _ in range(6)] == [True] * 5 + [False]  # ceil(10 / 2), though its bucket has 5 more
    facts = request_facts()
    refused = a.throttler.check(snap.evaluate_request(facts), facts).block
    assert refused is not None and refused.retry_after == 1  # a new share comes with the next flush, not next minute
    assert a.throttler.stats["share_refused"] == 2 and a.throttler.stats["window_refused"] == 0
    assert [b.admits(snap) for _ in range(6)] == [True] * 5 + [False]
    for r in (a, b):
        await r.counts.flush()
    assert store.rows[(RULE, "gk_test", T0)] == 10
    assert not b.admits(snap) and b.throttler.stats["window_refused"] == 1  # b read both: the minute is full
    # a read before b's 5 went out: b may still hold its opening share, so a's share is 0
    assert not a.admits(snap) and a.throttler.stats["window_refused"] == 0


async def test_without_a_live_replica_count_a_replica_spends_all_that_is_left() -> None:
    store, wall, beats = MemoryStore(), WallClock(T0), MemoryHeartbeats()
    a, _ = await _running_replicas(2, store, wall, beats)
    wall.t = T0 + timedelta(seconds=11)  # the count from 07:59:59 is too old to trust
    snap = _throttle(rpm=10, burst=10)
    assert a.counts.replicas is not None and a.counts.replicas.count(wall.t) is None
    assert [a.admits(snap) for _ in range(11)] == [True] * 10 + [False]  # as before shares


async def test_a_lost_heartbeat_does_not_fail_the_flush_and_the_count_expires() -> None:
    store, wall, beats = MemoryStore(), WallClock(T0), MemoryHeartbeats()
    (a,) = await _running_replicas(1, store, wall, beats)
    live = a.counts.replicas
    assert live is not None and live.count(wall.t) == 1
    beats.down = True
    wall.t += timedelta(seconds=5)
    await a.counts.flush()  # the counts went out; only the heartbeat failed
    assert a.counts.stats["flushes"] == 3 and live.count(wall.t) == 1
    wall.t += timedelta(seconds=6)
    assert live.count(wall.t) is None


async def test_live_replicas_counts_each_process_once_and_forgets_the_silent() -> None:
    beats, now = MemoryHeartbeats(), T0
    a = LiveReplicas(beats, replica_id="a", live_for=timedelta(seconds=10))
    a2 = LiveReplicas(beats, replica_id="a")  # a second flusher of the same process
    b = LiveReplicas(beats, replica_id="b")
    assert a.count(now) is None  # never counted
    assert await a.beat(now) == 1 and await a2.beat(now) == 1
    assert await b.beat(now + timedelta(seconds=1)) == 2
    assert await a.beat(now + timedelta(seconds=12)) == 1  # b has been silent for 11 s


def test_share_book_leaves_room_for_what_the_others_may_still_hold() -> None:
    book, limit = ShareBook(horizon=timedelta(seconds=2.5)), 60

    def share(read: int | None, total: int | None, at: float, replicas: int = 2) -> int:
        return book.allowance(
            ("r", "s", T0),
            window_start=T0,
            now=T0 + timedelta(seconds=at),
            limit=limit,
            replicas=replicas,
            total=total,
            read=read,
        )

    assert share(None, None, 0.5) == 30  # not read yet: ceil(60 / 2)
    assert share(1, 30, 1.0) == 0  # the other may still hold its opening 30: nothing left to share
    assert share(1, 30, 1.5) == 0  # one share per read
    assert share(2, 30, 4.0) == 15  # the opening is past the horizon and this replica held 0: (60 - 30) / 2
    assert share(3, 45, 5.0) == 0  # the other may hold 15 too
    assert share(4, 45, 6.0) == 0  # ... for a whole horizon after this replica held 15
    assert share(5, 45, 8.0) == 8  # ceil(15 / 2)
    assert share(6, 45, 9.0, replicas=1) == 15  # alone: all that is left
    book.forget_before(T0 + timedelta(minutes=1))
    assert len(book) == 0


class SlowHeartbeats(MemoryHeartbeats):
    async def beat(self, replica_id: str, now: datetime, live_since: datetime) -> int:
        await asyncio.sleep(3600)
        return 0


async def test_starting_beats_first_so_a_new_replica_knows_n_but_never_waits_long_for_it() -> None:
    wall, beats = WallClock(T0), MemoryHeartbeats()
    beats.seen["other"] = T0
    counts = SharedThrottleCounts(MemoryStore(), clock=wall, flush_interval=3600, replicas=LiveReplicas(beats, replica_id="new"))
    await counts.start()
    try:
        assert counts.replicas is not None and counts.replicas.count(T0) == 2  # before any flush
    finally:
        await counts.stop()
    slow = LiveReplicas(SlowHeartbeats(), replica_id="slow")
    async with asyncio.timeout(5):
        assert await slow.first_beat(T0, timeout=0.05) is None and slow.count(T0) is None
