"""A non-blocking front for the audit log, for the hot path (policy decisions, automated actions).

The sidecar must not wait on the database per request, so entries are queued in memory and a
background task appends them in batches, one transaction (and one head lock) per batch. The queue
is bounded: when the database is away long enough to fill it, new entries are dropped and counted
(``stats["dropped"]``) and a warning is logged, rather than growing without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .log import AuditLog, PendingEntry

log = logging.getLogger("llmproxy.audit")


class AuditWriter:
    def __init__(self, engine: AsyncEngine, audit: AuditLog | None = None, *, max_pending: int = 10_000,
                 flush_interval: float = 0.5, batch_size: int = 500):
        self.engine = engine
        self.audit = audit or AuditLog()
        self.max_pending = max_pending
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.stats = {"appended": 0, "dropped": 0, "failures": 0}
        self._pending: deque[PendingEntry] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    def submit(self, kind: str, subject: str, payload: Any, actor: str) -> bool:
        """Queue one entry; never blocks or raises. False when it was dropped (queue full, or no kind/actor:
        such an entry would fail its whole batch forever)."""
        if not kind or not actor:
            self.stats["dropped"] += 1
            log.warning("audit entry without kind or actor dropped (kind=%r, actor=%r)", kind, actor)
            return False
        if len(self._pending) >= self.max_pending:
            self.stats["dropped"] += 1
            if self.stats["dropped"] == 1 or self.stats["dropped"] % 1000 == 0:
                log.warning("audit queue full (%d): %d entries dropped so far", self.max_pending, self.stats["dropped"])
            return False
        self._pending.append(PendingEntry(kind=kind, subject=subject, payload=payload, actor=actor))
        if len(self._pending) >= self.batch_size:
            self._wake.set()
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Append everything queued now; returns how many entries were written. Raises on DB errors
        (the entries stay queued, in order)."""
        written = 0
        async with self._flush_lock:
            while self._pending:
                batch = [self._pending[i] for i in range(min(self.batch_size, len(self._pending)))]
                async with self.engine.begin() as conn:
                    await self.audit.append_many(conn, batch)
                for _ in batch:
                    self._pending.popleft()
                written += len(batch)
                self.stats["appended"] += len(batch)
        return written

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        """Stop the loop and make a last attempt to write what is queued."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001 - shutting down: report, do not raise
            log.warning("audit writer stopped with %d entries unwritten: %s", len(self._pending), exc)

    async def _run(self) -> None:
        delay = self.flush_interval
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            try:
                await self.flush()
                delay = self.flush_interval
            except Exception as exc:  # noqa: BLE001 - the database may be away; retry with backoff
                self.stats["failures"] += 1
                delay = min(delay * 2, 30.0)
                log.warning("audit append failed (%s); %d entries queued, retrying in %.1fs", exc, len(self._pending), delay)
