"""The event feed: alerts and decisions that operators should see as they happen.

``publish`` appends one row in the caller's transaction (the trigger NOTIFYs ``llmproxy_events``
on commit), so an event is never announced for work that was rolled back.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from .models import NOTIFY_CHANNEL, SEVERITIES, Event

__all__ = ["NOTIFY_CHANNEL", "SEVERITIES", "Event", "publish"]


async def publish(
    conn: AsyncConnection | AsyncSession,
    *,
    kind: str,
    title: str,
    severity: str = "info",
    subject: str = "",
    detail: dict[str, Any] | None = None,
    source: str = "",
) -> int:
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, not {severity!r}")
    result = await conn.execute(
        insert(Event)
        .values(kind=kind, title=title[:500], severity=severity, subject=subject, detail=detail or {}, source=source)
        .returning(Event.id)
    )
    return int(result.scalar_one())
