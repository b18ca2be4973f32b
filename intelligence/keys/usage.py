"""SQL of the shared per-key usage counters (minute and day buckets, UTC).

Replicas add their local counts with one UPSERT per flush and read the global totals back. Rows are
upserted in (key_id, granularity, bucket) order so two replicas flushing together take row locks in
the same order and cannot deadlock; counts for keys that no longer exist are skipped, not failed on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

Executor = AsyncConnection | AsyncSession

_UPSERT = text("""
INSERT INTO gateway_key_usage (key_id, granularity, bucket, requests, tokens)
SELECT d.key_id, d.granularity, d.bucket, d.requests, d.tokens
FROM unnest(CAST(:key_ids AS text[]), CAST(:grans AS text[]), CAST(:buckets AS timestamptz[]),
            CAST(:reqs AS bigint[]), CAST(:toks AS bigint[])) AS d(key_id, granularity, bucket, requests, tokens)
JOIN gateway_keys k ON k.id = d.key_id
ORDER BY d.key_id, d.granularity, d.bucket
ON CONFLICT (key_id, granularity, bucket) DO UPDATE
SET requests = gateway_key_usage.requests + EXCLUDED.requests, tokens = gateway_key_usage.tokens + EXCLUDED.tokens
""")

_TOTALS = text("""
SELECT key_id, granularity, bucket, requests, tokens FROM gateway_key_usage
WHERE (granularity = 'minute' AND bucket = :minute) OR (granularity = 'day' AND bucket = :day)
""")


@dataclass(frozen=True, slots=True)
class UsageDelta:
    key_id: str
    minute: datetime  # start of the minute the usage happened in (UTC)
    requests: int
    tokens: int


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    requests: int = 0
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class KeyTotals:
    minute: Bucket | None = None
    day: Bucket | None = None


def minute_of(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def day_of(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


async def add_usage(conn: Executor, deltas: Iterable[UsageDelta]) -> None:
    rows: dict[tuple[str, str, datetime], list[int]] = {}
    for d in deltas:
        for gran, bucket in (("minute", d.minute), ("day", day_of(d.minute))):
            acc = rows.setdefault((d.key_id, gran, bucket), [0, 0])
            acc[0] += d.requests
            acc[1] += d.tokens
    if not rows:
        return
    keys = sorted(rows)
    await conn.execute(
        _UPSERT,
        {
            "key_ids": [k[0] for k in keys],
            "grans": [k[1] for k in keys],
            "buckets": [k[2] for k in keys],
            "reqs": [rows[k][0] for k in keys],
            "toks": [rows[k][1] for k in keys],
        },
    )


async def read_totals(conn: Executor, now: datetime) -> dict[str, KeyTotals]:
    """Every key's totals in the minute and day that contain ``now``."""
    result = await conn.execute(_TOTALS, {"minute": minute_of(now), "day": day_of(now)})
    found: dict[str, dict[str, Bucket]] = {}
    for key_id, gran, bucket, requests, tokens in result.all():
        found.setdefault(key_id, {})[gran] = Bucket(bucket, requests, tokens)
    return {k: KeyTotals(minute=v.get("minute"), day=v.get("day")) for k, v in found.items()}


async def prune_usage(conn: Executor, now: datetime, keep_minutes: timedelta = timedelta(days=1)) -> int:
    """Drop minute buckets older than ``keep_minutes`` (day buckets stay: they are small and make history)."""
    result = await conn.execute(
        text("DELETE FROM gateway_key_usage WHERE granularity = 'minute' AND bucket < :cut"), {"cut": now - keep_minutes}
    )
    return result.rowcount or 0
