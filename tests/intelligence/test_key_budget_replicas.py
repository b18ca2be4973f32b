"""Gateway-key budgets across two and four UsageMeter "replicas" (each with its own heartbeat) on one
real PostgreSQL, hit at full speed as a minute opens: with fair shares they stay within each budget
plus rounding (requests: < N; tokens: N x the tokens of one request), where each replica spending
all it believed was left let N x the budget through. Clocks are simulated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from intelligence.keys import Budgets, NewKey, create_key
from intelligence.keys.meter import UsageMeter
from intelligence.store.replicas import PROCESS_REPLICA_ID, DbHeartbeats, LiveReplicas
from intelligence.throttle.simulate import simulate_key_minute

T0 = datetime(2026, 11, 27, 7, 0, 20, tzinfo=UTC)


@pytest.mark.parametrize("replicas", [2, 4])
async def test_request_budget_holds_within_rounding_across_replicas(migrated_db, replicas: int) -> None:
    r = await simulate_key_minute(migrated_db.engine, replicas=replicas, rpm=60)
    assert 60 <= r.requests <= 60 + replicas - 1, r
    assert r.unshared_requests == replicas * 60, r  # before: every replica spent the whole minute before a flush


async def test_token_and_day_budgets_hold_across_four_replicas(migrated_db) -> None:
    tokens = await simulate_key_minute(migrated_db.engine, replicas=4, tpm=10_000, tokens_per_request=100)
    assert 10_000 <= tokens.tokens <= 10_000 + 4 * 100, tokens  # a response's tokens land after its admission
    assert tokens.unshared_tokens >= 4 * 10_000, tokens
    day = await simulate_key_minute(migrated_db.engine, replicas=4, rpd=1000)
    assert 1000 <= day.requests <= 1000 + 3 and day.unshared_requests > 1000 + 3, day


async def _key(engine, budgets: Budgets) -> str:
    async with engine.begin() as conn:
        return (await create_key(conn, NewKey(name="k", budgets=budgets), actor="test")).record.id


async def test_a_replica_out_of_its_share_says_so_and_retries_in_a_second(migrated_db) -> None:
    budgets = Budgets(rpm=10)
    key_id = await _key(migrated_db.engine, budgets)
    now = [T0 - timedelta(seconds=2)]
    meters = [
        UsageMeter(
            migrated_db.engine,
            {key_id: budgets}.get,
            clock=lambda: now[0],
            replicas=LiveReplicas(DbHeartbeats(migrated_db.engine), replica_id=f"meter-{k}"),
        )
        for k in range(2)
    ]
    for m in meters + meters:  # both beat, then both count two
        await m.flush()
    now[0] = T0
    a = meters[0]
    assert [a.admit(key_id) for _ in range(3)] == [None] * 3  # 3 used in this minute, the other replica has 7 left
    await a.flush()  # reads 3 of 10: a's share is (10 - 3 - what b may hold) / 2
    admitted = 0
    while a.admit(key_id) is None and admitted < 10:
        admitted += 1
    hit = a.check(key_id)
    assert hit is not None and hit.budget == "rpm" and hit.retry_after == 1, hit
    assert "share" in hit.message and "of 10 requests per minute" in hit.message
    assert 3 + admitted < 10  # b's part of the rest stays b's until the next read


async def test_one_process_counts_once_and_a_lone_replica_spends_its_whole_budget(migrated_db) -> None:
    budgets = Budgets(rpm=5)
    key_id = await _key(migrated_db.engine, budgets)
    now = [T0]
    a, b = (UsageMeter(migrated_db.engine, {key_id: budgets}.get, clock=lambda: now[0]) for _ in range(2))
    await a.flush()
    await b.flush()  # the default heartbeat: this process's id, shared by every meter of the process
    assert a.replicas is not None and a.replicas.replica_id == PROCESS_REPLICA_ID
    assert a.replicas.count(now[0]) == 1 and b.replicas is not None and b.replicas.count(now[0]) == 1
    results = [a.admit(key_id) for _ in range(6)]
    assert results[:5] == [None] * 5  # N = 1: the whole budget, as before shares
    refused = results[5]
    assert refused is not None and refused.retry_after == 40  # 07:00:20 -> 07:01:00
    assert "gateway key budget exhausted: 5 of 5" in refused.message
