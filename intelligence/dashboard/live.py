"""What the dashboard's live feed reads: exchanges announced by NOTIFY, a backfill after a disconnect, the KPI window.

Rows are the light ones of :mod:`intelligence.analytics` (no bodies: a body can be a megabyte). Every read
is by primary key or through ``ix_exchanges_started_at``, so its cost does not grow with the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from intelligence.analytics import LIGHT_COLUMNS, ExchangeRow, light_row

_BY_IDS = text(f"SELECT {LIGHT_COLUMNS} FROM exchanges x WHERE x.request_id = ANY(:ids)").bindparams(
    bindparam("ids", type_=ARRAY(Text))
)


@dataclass(frozen=True, slots=True)
class WindowSample:
    """One exchange as the live KPIs count it: start (epoch seconds), latency (None if unusable), error."""

    started: float
    latency_ms: float | None
    error: bool
    request_id: str = ""  # the feed skips what it was seeded with when a catch-up reads it again


@dataclass(frozen=True, slots=True)
class SpendGroup:
    """One hour of one model and api, summed over clients and providers (the spend tile's input)."""

    bucket: datetime
    model: str | None
    api: str | None
    n: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int


class LiveRepository:
    def __init__(self, conn: AsyncConnection | AsyncSession) -> None:
        self._conn = conn

    async def by_ids(self, request_ids: Sequence[str]) -> list[ExchangeRow]:
        """The exchanges among ``request_ids`` (ids announced on ``llmproxy_exchanges``), in the order given."""
        if not request_ids:
            return []
        rows = [light_row(r) for r in (await self._conn.execute(_BY_IDS, {"ids": list(request_ids)})).all()]
        order = {rid: i for i, rid in enumerate(request_ids)}
        return sorted(rows, key=lambda r: order.get(r.request_id, 0))

    async def started_since(self, since: datetime, limit: int = 200) -> list[ExchangeRow]:
        """Exchanges started at or after ``since``, newest first (at most ``limit``): a reconnecting client's backfill."""
        rows = (
            await self._conn.execute(
                text(
                    f"SELECT {LIGHT_COLUMNS} FROM exchanges x WHERE x.started_at >= :since "
                    "ORDER BY x.started_at DESC, x.request_id DESC LIMIT :limit"
                ),
                {"since": since, "limit": int(limit)},
            )
        ).all()
        return [light_row(r) for r in rows]

    async def window(self, since: datetime) -> list[WindowSample]:
        """Every exchange started since ``since`` reduced to what the live KPIs need (the same cleaning of
        latencies as the rollups: ``llmproxy_ms``)."""
        rows = (
            await self._conn.execute(
                text(
                    "SELECT extract(epoch FROM started_at)::float8 AS started, llmproxy_ms(latency_ms) AS latency, "
                    "(error IS NOT NULL OR status >= 400) AS failed, request_id FROM exchanges WHERE started_at >= :since"
                ),
                {"since": since},
            )
        ).all()
        return [WindowSample(float(r.started), r.latency, bool(r.failed), r.request_id) for r in rows]

    async def spend_groups(self, day_start: datetime) -> list[SpendGroup]:
        """Today's hourly rollups summed per hour, model and api: all that pricing needs (no clients, no
        histograms), so the spend tile's read stays small however many clients a day brings."""
        rows = (
            await self._conn.execute(
                text(
                    "SELECT bucket, model, api, sum(n)::float8 AS n, sum(input_tokens)::float8 AS input_tokens, "
                    "sum(output_tokens)::float8 AS output_tokens, sum(cached_tokens)::float8 AS cached_tokens, "
                    "sum(reasoning_tokens)::float8 AS reasoning_tokens FROM exchange_rollups "
                    "WHERE granularity = 'hour' AND bucket >= :since GROUP BY bucket, model, api"
                ),
                {"since": day_start},
            )
        ).all()
        return [SpendGroup(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]), int(r[6]), int(r[7])) for r in rows]
