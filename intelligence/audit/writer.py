"""A non-blocking front for the audit log, for the hot path (policy decisions, automated actions).

Entries are queued in memory and appended in batches by a background task, one transaction (and one
head lock) per batch; see :class:`intelligence.store.batch_queue.BatchQueue` for the bound and retry.

Losses are recorded, not hidden: an entry dropped because the queue was full (the database away for
long enough) is counted, and as soon as a write succeeds again an ``audit_dropped`` entry with the
count, the time range and the kinds lost is appended to the chain. The writer also owns the
external anchor of the chain (:class:`~intelligence.audit.checkpoint.Checkpointer`): a signed
checkpoint file (and webhook) updated every few seconds and at shutdown, off the request path.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..store.batch_queue import BatchQueue
from .checkpoint import Checkpointer
from .log import AUDIT_DROPPED, AuditLog, PendingEntry

log = logging.getLogger("llmproxy.audit")

_MAX_KINDS = 50  # distinct kinds counted in a drop record (kinds are a small fixed set; bound it anyway)
_DEFAULT: Any = object()


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
        actor: str = "audit-writer",
        checkpoint: Checkpointer | None = _DEFAULT,
    ):
        # decisions arrive with every request: wait for a full batch or the interval
        super().__init__(
            engine, log=log, max_pending=max_pending, flush_interval=flush_interval, batch_size=batch_size, wake_at=batch_size
        )
        self.audit = audit or AuditLog()
        self.actor = actor
        self.stats["drops_recorded"] = 0
        self._unrecorded = 0  # entries lost to a full queue and not yet written down as such
        self._lost_kinds: Counter[str] = Counter()
        self._first_loss: datetime | None = None
        self._last_loss: datetime | None = None
        if checkpoint is _DEFAULT:
            # LLMPROXY_AUDIT_CHECKPOINT_FILE / LLMPROXY_DATA_DIR / LLMPROXY_AUDIT_CHECKPOINT_URL (set by `llmproxy up`).
            # A weak or unreadable configured key (AuditKeyError) or a bad URL (ValueError) stops the
            # process here, at start, rather than failing every batch later.
            checkpoint = Checkpointer.from_env(engine, self.audit.signing_key())
        self.checkpointer = checkpoint

    def submit(self, kind: str, subject: str, payload: Any, actor: str) -> bool:
        """Queue one entry; never blocks or raises. False when it was dropped (queue full, or no kind/actor)."""
        if not kind or not actor:
            return self._refuse("audit entry without kind or actor dropped (kind=%r, actor=%r)", kind, actor)
        if self._enqueue(PendingEntry(kind=kind, subject=subject, payload=payload, actor=actor)):
            return True
        now = datetime.now(UTC)
        self._unrecorded += 1
        if len(self._lost_kinds) < _MAX_KINDS or kind in self._lost_kinds:
            self._lost_kinds[kind] += 1
        self._first_loss = self._first_loss or now
        self._last_loss = now
        return False

    @property
    def unrecorded_drops(self) -> int:
        return self._unrecorded

    async def write_batch(self, conn: AsyncConnection, batch: list[PendingEntry]) -> None:
        await self.audit.append_many(conn, batch)

    async def flush(self) -> int:
        """Write what is queued, then the record of what was lost meanwhile (if anything)."""
        written = await super().flush()
        await self._record_drops()
        return written

    async def _record_drops(self) -> None:
        count = self._unrecorded
        if not count:
            return
        payload = {
            "dropped": count,
            "first_at": self._first_loss.isoformat() if self._first_loss else None,
            "last_at": self._last_loss.isoformat() if self._last_loss else None,
            "kinds": dict(self._lost_kinds),
            "reason": f"queue full ({self.max_pending} pending)",
        }
        async with self._flush_lock, self.engine.begin() as conn:
            await self.audit.append(conn, AUDIT_DROPPED, self.name, payload, self.actor)
        # drops that happened while this was being written stay counted for the next record
        self._unrecorded -= count
        if self._unrecorded == 0:
            self._lost_kinds.clear()
            self._first_loss = self._last_loss = None
        self.stats["drops_recorded"] += count
        log.warning("audit writer: %d dropped entries recorded on the chain", count)

    async def start(self) -> None:
        await super().start()
        if self.checkpointer is not None:
            await self.checkpointer.start()

    async def stop(self) -> None:
        await super().stop()
        if self.checkpointer is not None:
            await self.checkpointer.stop()  # the shutdown checkpoint, after the last entries are written
