"""What the intelligence's own Claude calls cost per day (totals by purpose and outcome: intelligence.claude.spend)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


class ClaudeSpendRepository:
    def __init__(self, conn: AsyncConnection | AsyncSession) -> None:
        self._conn = conn

    async def daily(self, since: datetime) -> list[dict[str, Any]]:
        """Per UTC day since ``since``: calls and cost (days without calls are absent)."""
        rows = (
            await self._conn.execute(
                text(
                    "SELECT date_trunc('day', at AT TIME ZONE 'UTC') AS day, count(*) AS calls, sum(cost_usd) AS cost_usd "
                    "FROM claude_calls WHERE at >= :since GROUP BY 1 ORDER BY 1"
                ),
                {"since": since},
            )
        ).mappings()
        return [dict(r) for r in rows]
