"""The background loop of the shared counters (gateway-key usage, policy throttle counts).

Each replica counts in memory and a task calls ``flush()`` every ``flush_interval`` seconds: one
round trip that adds this replica's counts and reads everyone's back. A failed flush keeps the counts
local (they are enforced locally meanwhile) and is retried on the next tick; the first failure of an
outage is logged as a warning and the recovery as info, not every tick. ``stop()`` makes a last flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any


class PeriodicFlush:
    """Owns the task; the counter passes what to call and what to say."""

    def __init__(
        self,
        flush: Callable[[], Awaitable[Any]],
        *,
        interval: float,
        name: str,
        log: logging.Logger,
        stats: dict[str, int],
        failing: str,
        recovered: str,
    ) -> None:
        self._flush = flush
        self.interval = interval
        self.name = name
        self._log = log
        self._stats = stats
        self._failing = failing  # a format with one %s: the error
        self._recovered = recovered  # a format with one %d: the failed flushes
        self._task: asyncio.Task[None] | None = None

    async def start(self, replicas: Any = None, now: Callable[[], datetime] | None = None) -> None:
        """Start the loop; with ``replicas`` (intelligence.store.replicas.LiveReplicas), beat once first so
        this replica knows how many there are from its first request."""
        if self._task is None:
            if replicas is not None and now is not None:
                await replicas.first_beat(now())
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self._flush()
        except Exception as exc:  # noqa: BLE001 - shutting down
            self._log.warning("last %s flush failed: %s", self.name, exc)

    async def _run(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._flush()
            except Exception as exc:  # noqa: BLE001 - counts stay local and are enforced locally meanwhile
                self._stats["failures"] += 1
                failures += 1
                if failures == 1:
                    self._log.warning(self._failing, exc)
                continue
            if failures:
                self._log.info(self._recovered, failures)
            failures = 0
