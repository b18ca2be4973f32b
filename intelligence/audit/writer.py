"""A non-blocking front for the audit log, for the hot path (policy decisions, automated actions).

Entries are queued in memory and appended in batches by a background task, one transaction (and one
head lock) per batch; see :class:`intelligence.store.batch_queue.BatchQueue` for the bound and retry.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..store.batch_queue import BatchQueue
from .log import AuditLog, PendingEntry

log = logging.getLogger("llmproxy.audit")


class AuditWriter(BatchQueue[PendingEntry]):
    name = "audit-writer"
    written_stat = "appended"

    def __init__(
        self,
        engine: AsyncEngine,
        audit: AuditLog | None = None,
        *,
        max_pending: int = 10_000,
        flush_interval: float = 0.5,
        batch_size: int = 500,
    ):
        # decisions arrive with every request: wait for a full batch or the interval
        super().__init__(
            engine, log=log, max_pending=max_pending, flush_interval=flush_interval, batch_size=batch_size, wake_at=batch_size
        )
        self.audit = audit or AuditLog()

    def submit(self, kind: str, subject: str, payload: Any, actor: str) -> bool:
        """Queue one entry; never blocks or raises. False when it was dropped (queue full, or no kind/actor)."""
        if not kind or not actor:
            return self._refuse("audit entry without kind or actor dropped (kind=%r, actor=%r)", kind, actor)
        return self._enqueue(PendingEntry(kind=kind, subject=subject, payload=payload, actor=actor))

    async def write_batch(self, conn: AsyncConnection, batch: list[PendingEntry]) -> None:
        await self.audit.append_many(conn, batch)
