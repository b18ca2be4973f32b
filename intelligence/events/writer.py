"""A non-blocking front for the event feed, for the hot path (the guard's alerts and blocks).

Same shape as :class:`intelligence.audit.writer.AuditWriter`: ``submit`` queues in memory and never
waits or raises; a background task publishes the queue in batches, one transaction per batch (the
insert trigger NOTIFYs ``llmproxy_events`` on commit, so the dashboard and the webhook dispatcher see
each event once it is stored). The queue is bounded: with the database away long enough to fill it,
new events are dropped and counted rather than growing without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

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


class EventWriter:
    def __init__(self, engine: AsyncEngine, *, source: str = "sidecar", max_pending: int = 10_000,
                 flush_interval: float = 0.5, batch_size: int = 200):
        self.engine = engine
        self.source = source
        self.max_pending = max_pending
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.stats = {"published": 0, "dropped": 0, "failures": 0}
        self._pending: deque[PendingEvent] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    def submit(self, kind: str, title: str, *, severity: str = "info", subject: str = "",
               detail: dict[str, Any] | None = None) -> bool:
        """Queue one event; never blocks or raises. False when it was dropped (queue full, or an
        event the table would refuse: such a row would fail its whole batch forever)."""
        if not kind or not title or severity not in SEVERITIES:
            self.stats["dropped"] += 1
            log.warning("event dropped: kind=%r title=%r severity=%r", kind, title, severity)
            return False
        if len(self._pending) >= self.max_pending:
            self.stats["dropped"] += 1
            if self.stats["dropped"] == 1 or self.stats["dropped"] % 1000 == 0:
                log.warning("event queue full (%d): %d events dropped so far", self.max_pending, self.stats["dropped"])
            return False
        self._pending.append(PendingEvent(kind, title, severity, subject, dict(detail or {}), self.source))
        self._wake.set()  # alerts are rare and wanted quickly: no reason to wait for a batch
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Publish everything queued now; returns how many. Raises on DB errors (events stay queued)."""
        written = 0
        async with self._flush_lock:
            while self._pending:
                batch = [self._pending[i] for i in range(min(self.batch_size, len(self._pending)))]
                async with self.engine.begin() as conn:
                    for e in batch:
                        await publish(conn, kind=e.kind, title=e.title, severity=e.severity, subject=e.subject,
                                      detail=e.detail, source=e.source)
                for _ in batch:
                    self._pending.popleft()
                written += len(batch)
                self.stats["published"] += len(batch)
        return written

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001 - shutting down: report, do not raise
            log.warning("event writer stopped with %d events unpublished: %s", len(self._pending), exc)

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
                log.warning("event publish failed (%s); %d queued, retrying in %.1fs", exc, len(self._pending), delay)
