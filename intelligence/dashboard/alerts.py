"""The ``events`` table as the dashboard reads it: the alert list, new alerts for toasts, the banner, acknowledgement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

ALERT_SEVERITIES = ("warning", "critical")
EVENT_COLUMNS = ("id", "at", "severity", "kind", "title", "subject", "source", "acknowledged_at", "acknowledged_by")
_ALERT_COLUMNS = "id, at, severity, kind, title, subject"


@dataclass(frozen=True, slots=True)
class Acknowledged:
    id: int
    kind: str
    title: str


async def _rows(conn: AsyncConnection | AsyncSession, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in (await conn.execute(text(sql), params)).mappings().all()]


class AlertRepository:
    def __init__(self, conn: AsyncConnection | AsyncSession) -> None:
        self._conn = conn

    async def events(self, limit: int = 200, *, unacknowledged_only: bool = False) -> list[dict[str, Any]]:
        """Events newest first (every kind and severity), as dicts with :data:`EVENT_COLUMNS`."""
        where = "WHERE acknowledged_at IS NULL" if unacknowledged_only else ""
        return await _rows(
            self._conn,
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM events {where} ORDER BY at DESC, id DESC LIMIT :limit",
            limit=int(limit),
        )

    async def alerts_after(self, last_id: int, limit: int = 20) -> list[dict[str, Any]]:
        """Warning and critical events with an id above ``last_id``, oldest first (a primary-key range scan)."""
        return await _rows(
            self._conn,
            f"SELECT {_ALERT_COLUMNS} FROM events WHERE id > :last AND severity IN ('warning', 'critical') ORDER BY id LIMIT :limit",
            last=int(last_id),
            limit=int(limit),
        )

    async def alerts_by_ids(self, ids: list[int]) -> list[dict[str, Any]]:
        """The warning and critical events among ``ids`` (announced by NOTIFY llmproxy_events), oldest first."""
        if not ids:
            return []
        return await _rows(
            self._conn,
            f"SELECT {_ALERT_COLUMNS} FROM events WHERE id = ANY(CAST(:ids AS bigint[])) "
            "AND severity IN ('warning', 'critical') ORDER BY id",
            ids=[int(i) for i in ids],
        )

    async def latest_event_id(self) -> int:
        return int((await self._conn.execute(text("SELECT coalesce(max(id), 0) FROM events"))).scalar_one())

    async def open_alerts(self, hours: int = 24, limit: int = 200) -> list[dict[str, Any]]:
        """Unacknowledged warning/critical events of the last ``hours`` hours, newest first (the banner)."""
        return await _rows(
            self._conn,
            "SELECT id, at, severity, title FROM events WHERE at > now() - make_interval(hours => :hours) "
            "AND severity IN ('warning', 'critical') AND acknowledged_at IS NULL ORDER BY at DESC, id DESC LIMIT :limit",
            hours=int(hours),
            limit=int(limit),
        )

    async def acknowledge(self, event_id: int, actor: str, at: datetime | None = None) -> Acknowledged | None:
        """Mark an event seen by ``actor``; None when it was acknowledged already; LookupError when there is none."""
        row = (
            (
                await self._conn.execute(
                    text(
                        "UPDATE events SET acknowledged_at = coalesce(CAST(:at AS timestamptz), now()), acknowledged_by = :actor "
                        "WHERE id = :id AND acknowledged_at IS NULL RETURNING id, kind, title"
                    ),
                    {"id": int(event_id), "actor": actor, "at": at},
                )
            )
            .mappings()
            .one_or_none()
        )
        if row is None:
            exists = (await self._conn.execute(text("SELECT 1 FROM events WHERE id = :id"), {"id": int(event_id)})).first()
            if exists is None:
                raise LookupError(f"no event {event_id}")
            return None
        return Acknowledged(id=int(row["id"]), kind=str(row["kind"]), title=str(row["title"]))
