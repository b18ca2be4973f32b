"""One simulated minute of traffic through N gateway replicas sharing a database: with fair shares
(live replicas counted through heartbeats), with the shared window alone (no shares: the behaviour
before shares, and the fallback while the replica count is unknown) and with per-process buckets
only. The figures of docs/policy.md ("Throttling") come from here, and those of
docs/keys-and-audit.md ("Budgets"): the same minute through N ``intelligence.keys.meter.UsageMeter`` replicas
enforcing one gateway key's budgets (the two mechanisms share intelligence/store/replicas.py).

    python -m intelligence.throttle.simulate [DATABASE_URL]   # none: a throw-away embedded Postgres

Clocks are simulated (a minute runs in well under a second); the database is real. Each replica
flushes once per simulated second, one after the other, so what a replica knows of the others is up
to two flush intervals old, as with the real one-second flusher. The replicas are already running
when the minute opens (each has flushed and counted the others once, a second before).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.store.replicas import DbHeartbeats, LiveReplicas

from .shared import SharedThrottleCounts

START = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class MinuteResult:
    replicas: int
    rpm: int
    burst: int
    offered_per_second: int  # per replica, evenly spread
    shared: int  # admitted with the shared window and fair shares
    unshared: int  # admitted with the shared window alone (no live-replica count: no shares)
    per_process: int  # admitted by the same replicas with local buckets only
    rows: int  # requests the database recorded for the window (equals ``shared``)

    @property
    def bound(self) -> int:
        """With shares: the minute's limit plus rounding, one request per other replica at most."""
        return max(self.rpm, self.burst) + self.replicas - 1

    @property
    def unshared_bound(self) -> float:
        """Without shares: max(rpm, burst) plus, per other replica, what its bucket admits in two flush intervals."""
        return max(self.rpm, self.burst) + (self.replicas - 1) * (self.burst + self.rpm * 2 / 60)


class _Clock:
    def __init__(self, start: float) -> None:
        self.t = start

    def mono(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return START + timedelta(seconds=self.t)


async def simulate_minute(
    engine: AsyncEngine, *, replicas: int = 2, rpm: int = 60, burst: int = 10, per_second: int = 5, subject: str = "gk_simulated"
) -> MinuteResult:
    """The same minute three ways: fair shares, shared window alone, per-process buckets only."""
    shared = await _admitted(engine, "shares", replicas, rpm, burst, per_second, subject)
    rows = await _window_total(engine, subject)
    unshared = await _admitted(engine, "window", replicas, rpm, burst, per_second, subject)
    per_process = await _admitted(engine, "local", replicas, rpm, burst, per_second, subject)
    return MinuteResult(replicas, rpm, burst, per_second, shared, unshared, per_process, rows)


async def one_busy_replica(
    engine: AsyncEngine, *, replicas: int, rpm: int, per_second: int, subject: str = "gk_simulated"
) -> tuple[int, float | None]:
    """The cost of shares: all traffic on one of N live replicas (one HTTP/2 connection, say).

    Returns (admitted in the minute, simulated second by which the limit was reached, or None).
    """
    reached: list[float] = []
    admitted = await _admitted(engine, "shares", replicas, rpm, rpm, per_second, subject, busy=1, reached=reached)
    return admitted, reached[0] if reached else None


async def _admitted(
    engine: AsyncEngine,
    mode: str,
    replicas: int,
    rpm: int,
    burst: int,
    per_second: int,
    subject: str,
    *,
    busy: int | None = None,
    reached: list[float] | None = None,
) -> int:
    # imported here: intelligence must not need extproc to load (the sidecar imports us, not the reverse)
    from intelligence.policy import Throttler

    clock = _Clock(-1.0)
    rule, decision, facts = _throttle(rpm, burst, subject)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM policy_throttle_counts WHERE rule = :r AND subject = :s"), {"r": rule, "s": subject})
        await conn.execute(text("DELETE FROM replica_heartbeats WHERE replica_id LIKE 'simulated-%'"))
    counts = []
    for k in range(replicas):
        live = LiveReplicas(DbHeartbeats(engine), replica_id=f"simulated-{k}") if mode == "shares" else None
        counts.append(SharedThrottleCounts.from_engine(engine, clock=clock.wall, replicas=live))
    throttlers = [Throttler(clock=clock.mono, shared=c if mode != "local" else None) for c in counts]
    for c in counts:  # running before the minute opens: every replica has beaten once
        await c.flush()
    for c in counts:
        await c.flush()  # ... and counted the others
    admitted = 0
    for second in range(60):
        for k in range(per_second):
            clock.t = second + k / per_second
            admitted += sum(t.check(decision, facts).block is None for t in throttlers[:busy])
            if reached is not None and not reached and admitted >= max(rpm, burst):
                reached.append(clock.t)
        for c in counts:
            await c.flush()
    return admitted


def _throttle(rpm: int, burst: int, subject: str):
    from intelligence.policy.testing import request_facts, snapshot

    snap = snapshot({"id": "simulated", "actions": {"throttle": {"rpm": rpm, "burst": burst}}})
    facts = request_facts(key_id=subject, client=subject)
    decision = snap.evaluate_request(facts)
    return decision.throttles[0].rule, decision, facts


async def _window_total(engine: AsyncEngine, subject: str) -> int:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT coalesce(sum(requests), 0) FROM policy_throttle_counts WHERE subject = :s AND window_start = :w"),
                {"s": subject, "w": START},
            )
        ).scalar_one()
    return int(rows)


SCENARIOS = (
    (2, 60, 10, 5),
    (2, 60, 60, 5),
    (2, 60, 60, 100),
    (2, 600, 50, 50),
    (2, 600, 600, 100),
    (4, 60, 10, 5),
    (4, 60, 60, 5),
    (4, 60, 60, 100),
    (4, 600, 600, 100),
)


@dataclass(frozen=True, slots=True)
class KeyMinuteResult:
    replicas: int
    budget: str  # rpm=60 | tpm=... | rpd=...
    limit: int
    requests: int  # admitted in the minute, with shares
    tokens: int
    unshared_requests: int  # the same replicas without shares (before; fallback)
    unshared_tokens: int

    @property
    def used(self) -> int:
        return self.tokens if self.budget.startswith("t") else self.requests

    @property
    def unshared_used(self) -> int:
        return self.unshared_tokens if self.budget.startswith("t") else self.unshared_requests


async def simulate_key_minute(
    engine: AsyncEngine,
    *,
    replicas: int,
    rpm: int | None = None,
    tpm: int | None = None,
    rpd: int | None = None,
    per_second: int = 100,
    tokens_per_request: int = 0,
) -> KeyMinuteResult:
    """N replicas enforce one gateway key's budgets, hit at full speed as the minute opens.

    Each admitted request records ``tokens_per_request`` right away (a response that came back at once).
    """
    budget, limit = next((n, v) for n, v in (("rpm", rpm), ("tpm", tpm), ("rpd", rpd)) if v is not None)
    shared = await _key_admitted(engine, True, replicas, rpm, tpm, rpd, per_second, tokens_per_request)
    unshared = await _key_admitted(engine, False, replicas, rpm, tpm, rpd, per_second, tokens_per_request)
    return KeyMinuteResult(replicas, f"{budget}={limit}", limit, *shared, *unshared)


async def _key_admitted(
    engine: AsyncEngine,
    shares: bool,
    replicas: int,
    rpm: int | None,
    tpm: int | None,
    rpd: int | None,
    per_second: int,
    tokens_per_request: int,
) -> tuple[int, int]:
    from intelligence.keys import Budgets, NewKey, create_key
    from intelligence.keys.meter import UsageMeter

    clock = _Clock(-2.0)
    budgets = Budgets(rpm=rpm, tpm=tpm, rpd=rpd)
    async with engine.begin() as conn:
        key_id = (await create_key(conn, NewKey(name="simulated", budgets=budgets), actor="simulation")).record.id
        await conn.execute(text("DELETE FROM replica_heartbeats WHERE replica_id LIKE 'simulated-%'"))
    meters = [
        UsageMeter(
            engine,
            {key_id: budgets}.get,
            clock=clock.wall,
            replicas=LiveReplicas(DbHeartbeats(engine), replica_id=f"simulated-{k}") if shares else None,
        )
        for k in range(replicas)
    ]
    for _ in range(2):  # running before the minute opens: every replica has beaten and counted the others
        for m in meters:
            await m.flush()
        clock.t += 1.0
    requests = tokens = 0
    for second in range(60):
        for k in range(per_second):
            clock.t = second + k / per_second
            for m in meters:
                if m.admit(key_id) is None:
                    requests += 1
                    tokens += tokens_per_request
                    m.record(key_id, tokens=tokens_per_request)
        for m in meters:
            await m.flush()
    return requests, tokens


KEY_SCENARIOS = (
    (2, {"rpm": 60}, 0),
    (4, {"rpm": 60}, 0),
    (4, {"rpm": 600}, 0),
    (2, {"tpm": 10_000}, 100),
    (4, {"tpm": 10_000}, 100),
    (4, {"rpd": 1000}, 0),
)
BUSY_SCENARIOS = ((2, 60, 100), (4, 60, 100), (2, 600, 100), (4, 600, 100))


async def _main(url: str | None) -> None:
    from intelligence.embedded_pg import start_embedded
    from intelligence.store.engine import make_engine
    from intelligence.store.migrate import upgrade_async

    data_dir, pg = None, None
    if url is None:
        data_dir = Path(tempfile.mkdtemp(prefix="llmproxy-throttle-sim-"))
        pg = start_embedded(data_dir)
        url = pg.url
    try:
        await upgrade_async(url)
        engine = make_engine(url)
        try:
            print(
                "| replicas | rpm | burst | offered / replica | admitted, fair shares | bound | "
                "window alone (before; fallback) | its bound | per-process buckets only |"
            )
            print("|---|---|---|---|---|---|---|---|---|")
            for replicas, rpm, burst, per_second in SCENARIOS:
                r = await simulate_minute(engine, replicas=replicas, rpm=rpm, burst=burst, per_second=per_second)
                assert r.rows == r.shared
                print(
                    f"| {r.replicas} | {r.rpm} | {r.burst} | {r.offered_per_second}/s | {r.shared} | {r.bound} | "
                    f"{r.unshared} | {r.unshared_bound:g} | {r.per_process} |"
                )
            print()
            print("| replicas | rpm = burst | offered to one replica | admitted in the minute | limit reached after |")
            print("|---|---|---|---|---|")
            for replicas, rpm, per_second in BUSY_SCENARIOS:
                admitted, at = await one_busy_replica(engine, replicas=replicas, rpm=rpm, per_second=per_second)
                print(f"| {replicas} | {rpm} | {per_second}/s | {admitted} | {'never' if at is None else f'{at:.1f} s'} |")
            print()
            print("| replicas | budget | admitted with shares (used) | bound | without shares (before; fallback) |")
            print("|---|---|---|---|---|")
            for replicas, limits, tokens in KEY_SCENARIOS:
                k = await simulate_key_minute(engine, replicas=replicas, tokens_per_request=tokens, **limits)
                per_request = f" ({tokens} tokens per request)" if tokens else ""
                bound = k.limit + replicas * tokens if tokens else k.limit + replicas - 1
                print(f"| {replicas} | {k.budget}{per_request} | {k.used} | {bound} | {k.unshared_used} |")
        finally:
            await engine.dispose()
    finally:
        if pg is not None:
            pg.stop()
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1] if len(sys.argv) > 1 else None))
