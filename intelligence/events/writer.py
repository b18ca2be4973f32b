"""A non-blocking front for the event feed, for the hot path (the guard's alerts and blocks).

``submit`` queues in memory and never waits or raises; a background task publishes the queue in
batches, one transaction per batch (the insert trigger NOTIFYs ``llmproxy_events`` on commit, so the
dashboard and the webhook dispatcher see each event once it is stored). Bound and retry are
:class:`intelligence.store.batch_queue.BatchQueue`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..store.batch_queue import BatchQueue
from . import SEVERITIES, publish

log = logging.getLogger("llmproxy.events")


@dataclass(frozen=True, slots=True)
class PendingEvent:
    kind: str
    title: str
    severity: str = "info"
    subject: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    source: str = "sidecar"


class EventWriter(BatchQueue[PendingEvent]):
    name = "event-writer"
    written_stat = "published"

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        source: str = "sidecar",
        max_pending: int = 10_000,
        flush_interval: float = 0.5,
        batch_size: int = 200,
    ):
        # alerts are rare and wanted quickly: every event wakes the writer
        super().__init__(
            engine, log=log, max_pending=max_pending, flush_interval=flush_interval, batch_size=batch_size, wake_at=1
        )
        self.source = source

    def submit(
        self, kind: str, title: str, *, severity: str = "info", subject: str = "", detail: dict[str, Any] | None = None
    ) -> bool:
        """Queue one event; never blocks or raises. False when it was dropped (queue full, or an
        event the table would refuse)."""
        if not kind or not title or severity not in SEVERITIES:
            return self._refuse("event dropped: kind=%r title=%r severity=%r", kind, title, severity)
        return self._enqueue(PendingEvent(kind, title, severity, subject, dict(detail or {}), self.source))

    async def write_batch(self, conn: AsyncConnection, batch: list[PendingEvent]) -> None:
        for e in batch:
            await publish(
                conn, kind=e.kind, title=e.title, severity=e.severity, subject=e.subject, detail=e.detail, source=e.source
            )
