"""Runs the async intelligence repositories for Streamlit's synchronous script threads.

One :class:`DbRunner` per database URL and process (held by ``st.cache_resource``): a daemon
thread runs an event loop that owns a small pooled engine, so a query costs a pooled
connection checkout, not a connect + teardown. The same loop LISTENs on the request log's
NOTIFY channel; :attr:`NotifyFeed.version` moves with every exchange committed, which is what
lets the live page re-query only when something happened.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.repositories import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

T = TypeVar("T")

_RECONNECT_SECONDS = 1.0
_ARRIVALS_KEPT = 256
_PING_SECONDS = 5.0  # a dead LISTEN connection says nothing; a ping finds out


@dataclass
class NotifyFeed:
    """State of the LISTEN connection; read from script threads, written by the loop thread."""

    version: int = 0
    connected: bool = False
    last_event: float | None = None  # time.time() of the newest notification
    last_payload: str | None = None
    error: str | None = None
    # request_id -> time.time() it was announced, for the newest few (measuring end-to-end latency)
    arrivals: OrderedDict[str, float] = field(default_factory=OrderedDict, repr=False)
    _stop: asyncio.Event | None = field(default=None, repr=False)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        now = time.time()
        self.version += 1
        self.last_event = now
        self.last_payload = payload
        self.arrivals[payload] = now
        while len(self.arrivals) > _ARRIVALS_KEPT:
            self.arrivals.popitem(last=False)

    async def run(self, dsn: str) -> None:
        self._stop = asyncio.Event()
        while not self._stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(dsn, timeout=5)
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                self.connected, self.error = True, None
                self.version += 1  # rows may have landed while we were away
                while not self._stop.is_set():
                    try:
                        await asyncio.wait_for(self._stop.wait(), _PING_SECONDS)
                    except TimeoutError:
                        await asyncio.wait_for(conn.execute("SELECT 1"), 5)
            except Exception as exc:  # noqa: BLE001 - any failure means: poll, and retry shortly
                self.error = f"{type(exc).__name__}: {exc}"
            finally:
                self.connected = False
                if conn is not None:
                    try:
                        await conn.close(timeout=2)
                    except Exception:  # noqa: BLE001 - already broken
                        conn.terminate()
            if not self._stop.is_set():
                await asyncio.sleep(_RECONNECT_SECONDS)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()


class DbRunner:
    def __init__(self, url: str, *, listen: bool = True) -> None:
        self.url = url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llmproxy-ui-db", daemon=True)
        self._thread.start()
        self._engine = make_engine(url, pool_size=4, max_overflow=4, connect_timeout=5.0)
        self.feed = NotifyFeed()
        if listen:
            asyncio.run_coroutine_threadsafe(self.feed.run(asyncpg_dsn(url)), self._loop)

    def run(self, fn: Callable[[AsyncConnection], Awaitable[T]], timeout: float = 30.0) -> T:
        """``await fn(conn)`` on the runner's loop with a pooled connection; blocks the calling thread."""

        async def go() -> T:
            async with self._engine.connect() as conn:
                return await fn(conn)

        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(timeout)

    def transaction(self, fn: Callable[[AsyncConnection], Awaitable[T]], timeout: float = 30.0) -> T:
        """``await fn(conn)`` inside one transaction that commits if ``fn`` returns (rolls back if it raises)."""

        async def go() -> T:
            async with self._engine.begin() as conn:
                return await fn(conn)

        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(timeout)

    def gather(self, *fns: Callable[[AsyncConnection], Awaitable[Any]], timeout: float = 30.0) -> list[Any]:
        """Run independent queries at once, each on its own pooled connection; results in order."""

        async def one(fn: Callable[[AsyncConnection], Awaitable[Any]]) -> Any:
            async with self._engine.connect() as conn:
                return await fn(conn)

        async def go() -> list[Any]:
            return list(await asyncio.gather(*(one(fn) for fn in fns)))

        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(timeout)

    def change_token(self) -> tuple[str, int]:
        """Changes whenever new exchanges may be visible: per notification, or each second without LISTEN."""
        if self.feed.connected:
            return ("notify", self.feed.version)
        return ("poll", int(time.time()))

    def close(self) -> None:
        self.feed.stop()

        async def dispose() -> None:
            await self._engine.dispose()

        try:
            asyncio.run_coroutine_threadsafe(dispose(), self._loop).result(5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
