"""One simulated minute of traffic through N gateway replicas sharing a database, with and without
the shared window: the figures of docs/policy.md ("Throttling") come from here.

    python -m intelligence.throttle.simulate [DATABASE_URL]   # none: a throw-away embedded Postgres

Clocks are simulated (a minute runs in well under a second); the database is real. Each replica
flushes once per simulated second, one after the other, so what a replica knows of the others is up
to two flush intervals old, as with the real one-second flusher.
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

from .shared import SharedThrottleCounts

START = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class MinuteResult:
    replicas: int
    rpm: int
    burst: int
    offered_per_second: int  # per replica, evenly spread
    shared: int  # admitted with the shared window
    per_process: int  # admitted by the same replicas with local buckets only
    rows: int  # requests the database recorded for the window (equals ``shared``)

    @property
    def bound(self) -> float:
        """max(rpm, burst) plus, per other replica, what its bucket admits in two flush intervals."""
        return max(self.rpm, self.burst) + (self.replicas - 1) * (self.burst + self.rpm * 2 / 60)


class _Clock:
    def __init__(self, start: float) -> None:
        self.t = start

    def mono(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return START + timedelta(seconds=self.t)


async def simulate_minute(engine: AsyncEngine, *, replicas: int = 2, rpm: int = 60, burst: int = 10,
                          per_second: int = 5, subject: str = "gk_simulated") -> MinuteResult:
    # imported here: intelligence must not need extproc to load (the sidecar imports us, not the reverse)
    from extproc.policy import Throttler
    from extproc.policy.testing import request_facts, snapshot

    clock = _Clock(0.0)
    counts = [SharedThrottleCounts.from_engine(engine, clock=clock.wall) for _ in range(replicas)]
    shared = [Throttler(clock=clock.mono, shared=c) for c in counts]
    local = [Throttler(clock=clock.mono) for _ in range(replicas)]
    snap = snapshot({"id": "simulated", "actions": {"throttle": {"rpm": rpm, "burst": burst}}})
    facts = request_facts(key_id=subject, client=subject)
    decision = snap.evaluate_request(facts)
    rule = decision.throttles[0].rule
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM policy_throttle_counts WHERE rule = :r AND subject = :s"),
                           {"r": rule, "s": subject})
    with_shared = per_process = 0
    for second in range(60):
        for k in range(per_second):
            clock.t = second + k / per_second
            with_shared += sum(t.check(decision, facts).block is None for t in shared)
            per_process += sum(t.check(decision, facts).block is None for t in local)
        for c in counts:
            await c.flush()
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT coalesce(sum(requests), 0) FROM policy_throttle_counts "
                                        "WHERE rule = :r AND subject = :s AND window_start = :w"),
                                   {"r": rule, "s": subject, "w": START})).scalar_one()
    return MinuteResult(replicas, rpm, burst, per_second, with_shared, per_process, int(rows))


SCENARIOS = ((2, 60, 10, 5), (2, 60, 60, 5), (2, 60, 60, 100), (2, 600, 50, 50), (4, 60, 10, 5), (4, 60, 60, 5))


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
            print("| replicas | rpm | burst | offered / replica | admitted, shared window | bound | per-process buckets only |")
            print("|---|---|---|---|---|---|---|")
            for replicas, rpm, burst, per_second in SCENARIOS:
                r = await simulate_minute(engine, replicas=replicas, rpm=rpm, burst=burst, per_second=per_second)
                assert r.rows == r.shared
                print(f"| {r.replicas} | {r.rpm} | {r.burst} | {r.offered_per_second}/s | {r.shared} | "
                      f"{r.bound:g} | {r.per_process} |")
        finally:
            await engine.dispose()
    finally:
        if pg is not None:
            pg.stop()
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1] if len(sys.argv) > 1 else None))
