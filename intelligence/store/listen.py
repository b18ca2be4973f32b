"""One reload loop for in-process copies of database state: LISTEN for a change, poll as a fallback.

The sidecar keeps several things in memory so the request path never waits for the database (gateway
keys, policies, enhancements, learned attacks). Each reloads when a trigger notifies its channel and,
in case a notification is lost (LISTEN connection dropped, a replica that missed it), every
``poll_interval`` seconds. :class:`NotifyReloader` is that loop; the owner supplies ``reload``.

The LISTEN connection is a dedicated one: it is invalidated (not returned to the pool) when dropped,
because a pooled connection with a LISTEN registered would keep receiving notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger("llmproxy.store.listen")

Reload = Callable[[], Awaitable[Any]]
K = TypeVar("K", bound=Hashable)


class RecentKeys(Generic[K]):
    """The last ``size`` keys seen, for consumers of a notification stream: LISTEN and the catch-up read
    that follows a reconnect (or a poll) may both report one row, which must be handled once."""

    def __init__(self, size: int) -> None:
        self._order: deque[K] = deque()
        self._keys: set[K] = set()
        self.size = size

    def add(self, key: K) -> bool:
        """True if ``key`` is new (and remember it); False if it is among the last ``size`` seen."""
        if key in self._keys:
            return False
        self._keys.add(key)
        self._order.append(key)
        if len(self._order) > self.size:
            self._keys.discard(self._order.popleft())
        return True


class NotifyReloader:
    """Calls ``reload`` on every notification of ``channel`` and every ``poll_interval`` seconds.

    A failed reload is counted in ``stats[failures_key]`` and logged once per outage (the owner keeps
    its last good state; ``keeping()`` says which, for the log line); a lost LISTEN connection is
    re-established on the next round. ``stats`` may be the owner's own dict: the loop adds
    ``notifications``, ``listens`` and the failures to it. ``what`` names the state in log lines.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        channel: str,
        reload: Reload,
        *,
        poll_interval: float = 2.0,
        listen: bool = True,
        what: str = "state",
        task_name: str = "notify-reloader",
        stats: dict[str, int] | None = None,
        failures_key: str = "failures",
        keeping: Callable[[], str] = lambda: "keeping the last loaded state",
    ) -> None:
        self.engine = engine
        self.channel = channel
        self.reload = reload
        self.poll_interval = poll_interval
        self.listen = listen
        self.what = what
        self.task_name = task_name
        self.failures_key = failures_key
        self.keeping = keeping
        self.stats = stats if stats is not None else {}
        for key in ("notifications", "listens", failures_key):
            self.stats.setdefault(key, 0)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listen_conn: AsyncConnection | None = None
        self._listener_lost = False
        self._stopping = False

    @property
    def listening(self) -> bool:
        return self._listen_conn is not None and not self._listener_lost

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, *, load: bool = True, not_loaded: str | None = None) -> None:
        """Load once unless ``load`` is False (a failure is logged, not raised: the loop keeps
        trying; ``not_loaded`` ends that log line) and start the loop."""
        if load:
            try:
                await self.reload()
            except Exception as exc:  # noqa: BLE001 - the database may come up later
                self.stats[self.failures_key] += 1
                log.warning(
                    "%s not loaded yet (%s); %s", self.what, exc, not_loaded or f"retrying every {self.poll_interval:.1f}s"
                )
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # asyncio.wait, not `await task`: it neither swallows a cancellation of stop() itself nor
            # hangs on a task whose cancellation a database driver consumed (the loop re-checks
            # _stopping, so it ends at its next turn anyway)
            await asyncio.wait([task], timeout=5)
        await self._drop_listener()

    def wake(self) -> None:
        """Reload at the next chance (as a notification would)."""
        self._wake.set()

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            if self.listen and not self.listening:
                await self._connect_listener()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self.reload()
                failures = 0
            except Exception as exc:
                if _cancelled():
                    raise asyncio.CancelledError from exc  # a driver turned our cancellation into an error
                self.stats[self.failures_key] += 1
                failures += 1
                if failures == 1:
                    log.warning("reloading %s failed (%s); %s", self.what, exc, self.keeping())

    async def _connect_listener(self) -> None:
        await self._drop_listener()
        try:
            conn = await self.engine.connect()
        except Exception as exc:  # noqa: BLE001 - polling still works; try again next round
            log.debug("%s: LISTEN connection failed: %s", self.what, exc)
            return
        try:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            await driver.add_listener(self.channel, self._on_notify)
            driver.add_termination_listener(self._on_terminated)
        except Exception as exc:  # noqa: BLE001
            log.debug("LISTEN %s failed: %s", self.channel, exc)
            await discard(conn)
            return
        self._listen_conn = conn
        self._listener_lost = False
        self.stats["listens"] += 1
        # Changes between the last reload and LISTEN taking effect would otherwise wait for the next poll.
        self._wake.set()

    def _on_notify(self, *_: Any) -> None:
        self.stats["notifications"] += 1
        self._wake.set()

    def _on_terminated(self, *_: Any) -> None:
        self._listener_lost = True
        self._wake.set()

    async def _drop_listener(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is not None:
            await discard(conn)


def _cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def discard(conn: AsyncConnection) -> None:
    """Drop a connection that had a LISTEN registered.

    Invalidate, not close: such a connection must not go back to the pool."""
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()
