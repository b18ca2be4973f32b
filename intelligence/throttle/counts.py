"""SQL of the shared policy throttle windows (table ``policy_throttle_counts``).

Same style as intelligence/keys/usage.py: a replica adds its local counts with one UPSERT and reads
the window's totals back in the same transaction. Rows are upserted in primary-key order so two
replicas flushing together take row locks in the same order and cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

Subject = tuple[str, str]  # (qualified rule id, subject)

_UPSERT = text("""
INSERT INTO policy_throttle_counts (rule, subject, window_start, requests)
SELECT d.rule, d.subject, d.window_start, d.requests
FROM unnest(CAST(:rules AS text[]), CAST(:subjects AS text[]), CAST(:windows AS timestamptz[]),
            CAST(:reqs AS bigint[])) AS d(rule, subject, window_start, requests)
ORDER BY d.rule, d.subject, d.window_start
ON CONFLICT (rule, subject, window_start) DO UPDATE
SET requests = policy_throttle_counts.requests + EXCLUDED.requests
""")

_WINDOW = text("SELECT rule, subject, requests FROM policy_throttle_counts WHERE window_start = :window")

_PRUNE = text("DELETE FROM policy_throttle_counts WHERE window_start < :cut")


@dataclass(frozen=True, slots=True)
class WindowDelta:
    rule: str
    subject: str
    window: datetime  # start of the UTC minute the admissions happened in
    requests: int


def window_of(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


async def add_counts(conn: AsyncConnection, deltas: Iterable[WindowDelta]) -> None:
    rows: dict[tuple[str, str, datetime], int] = {}
    for d in deltas:
        if d.requests > 0:
            k = (d.rule, d.subject, d.window)
            rows[k] = rows.get(k, 0) + d.requests
    if not rows:
        return
    keys = sorted(rows)
    await conn.execute(
        _UPSERT,
        {
            "rules": [k[0] for k in keys],
            "subjects": [k[1] for k in keys],
            "windows": [k[2] for k in keys],
            "reqs": [rows[k] for k in keys],
        },
    )


async def read_window(conn: AsyncConnection, window: datetime) -> dict[Subject, int]:
    """Every (rule, subject)'s total over all replicas in the minute starting at ``window``."""
    result = await conn.execute(_WINDOW, {"window": window})
    return {(rule, subject): requests for rule, subject, requests in result.all()}


async def prune_counts(conn: AsyncConnection, before: datetime) -> int:
    result = await conn.execute(_PRUNE, {"cut": before})
    return result.rowcount or 0


class DbWindowStore:
    """The database side of :class:`intelligence.throttle.shared.SharedThrottleCounts`."""

    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    async def exchange(self, deltas: list[WindowDelta], window: datetime) -> dict[Subject, int]:
        """Add ``deltas`` and return the totals of ``window`` (ours included: same transaction)."""
        async with self.engine.begin() as conn:
            await add_counts(conn, deltas)
            return await read_window(conn, window)

    async def prune(self, before: datetime) -> int:
        async with self.engine.begin() as conn:
            return await prune_counts(conn, before)
