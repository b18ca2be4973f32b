"""A bounded, never-blocking queue that a background task writes to the database in batches.

The request path must not wait on the database, so hot-path writers (audit entries, feed events)
queue in memory and a task appends them, one transaction per batch. The queue is bounded: with the
database away long enough to fill it, new items are dropped and counted (``stats["dropped"]``) with a
warning, rather than growing without limit. A failed batch stays queued, in order, and is retried
with exponential backoff (capped at 30 s).

Subclasses say what a batch write is (:meth:`write_batch`) and may refuse items the table would
reject (:meth:`submit` returning False): such an item would fail its whole batch forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")

_MAX_BACKOFF = 30.0


class BatchQueue(Generic[T]):
    name = "batch-writer"  # the task name, and the noun in log lines
    written_stat = "written"  # the stats key counting stored items (kept per subclass for its callers)

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        log: logging.Logger,
        max_pending: int,
        flush_interval: float,
        batch_size: int,
        wake_at: int = 1,
    ):
        self.engine = engine
        self.max_pending = max_pending
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.stats = {self.written_stat: 0, "dropped": 0, "failures": 0}
        self._log = log
        self._wake_at = wake_at  # queue length that wakes the writer before its interval is up
        self._pending: deque[T] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    async def write_batch(self, conn: AsyncConnection, batch: list[T]) -> None:
        raise NotImplementedError

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _refuse(self, reason: str, *args: object) -> bool:
        self.stats["dropped"] += 1
        self._log.warning(reason, *args)
        return False

    def _enqueue(self, item: T) -> bool:
        """Queue one item; never blocks or raises. False when the queue is full."""
        if len(self._pending) >= self.max_pending:
            self.stats["dropped"] += 1
            if self.stats["dropped"] == 1 or self.stats["dropped"] % 1000 == 0:
                self._log.warning("%s queue full (%d): %d dropped so far", self.name, self.max_pending, self.stats["dropped"])
            return False
        self._pending.append(item)
        if len(self._pending) >= self._wake_at:
            self._wake.set()
        return True

    async def flush(self) -> int:
        """Write everything queued now; returns how many. Raises on database errors (items stay queued)."""
        written = 0
        async with self._flush_lock:
            while self._pending:
                batch = [self._pending[i] for i in range(min(self.batch_size, len(self._pending)))]
                async with self.engine.begin() as conn:
                    await self.write_batch(conn, batch)
                for _ in batch:
                    self._pending.popleft()
                written += len(batch)
                self.stats[self.written_stat] += len(batch)
        return written

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

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
            self._log.warning("%s stopped with %d items unwritten: %s", self.name, len(self._pending), exc)

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
                delay = min(delay * 2, _MAX_BACKOFF)
                self._log.warning("%s failed (%s); %d queued, retrying in %.1fs", self.name, exc, len(self._pending), delay)
