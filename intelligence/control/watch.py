"""The live feed behind WatchEvents: one database listener per server, fanned out to subscribers.

The hub holds one connection that LISTENs on ``llmproxy_events`` (payload: events.id) and
``llmproxy_exchanges`` (payload: request_id), reads each announced row once and offers it to every
subscriber. Subscribers own bounded queues: a slow one loses its oldest items and is told how many
with a gap marker, so it never holds the others back or grows without bound. When LISTEN is not
available (connection refused, lost) the hub polls instead (events by id, exchanges by
inserted_at) and tries to LISTEN again on every poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from intelligence.events.models import NOTIFY_CHANNEL as EVENTS_CHANNEL
from intelligence.events.models import Event
from intelligence.records import ExchangeRecord
from intelligence.store.listen import RecentKeys
from intelligence.store.models import Exchange
from intelligence.store.repositories import NOTIFY_CHANNEL as EXCHANGES_CHANNEL
from intelligence.store.repositories import record_from_row

log = logging.getLogger(__name__)

EXCHANGE_KIND = "exchange"  # the kind a subscriber names to receive finished exchanges
_BATCH = 500
_DEDUP = 4096


@dataclass(frozen=True, slots=True)
class EventItem:
    id: int
    at: datetime
    kind: str
    severity: str
    title: str
    subject: str
    detail: dict[str, Any]
    source: str


@dataclass(frozen=True, slots=True)
class ExchangeItem:
    record: ExchangeRecord
    kind: str = EXCHANGE_KIND


@dataclass(frozen=True, slots=True)
class GapItem:
    dropped: int


FeedItem = EventItem | ExchangeItem


def event_item(row: Any) -> EventItem:
    m = row._mapping
    return EventItem(
        id=int(m["id"]),
        at=m["at"],
        kind=m["kind"],
        severity=m["severity"],
        title=m["title"],
        subject=m["subject"] or "",
        detail=dict(m["detail"] or {}),
        source=m["source"] or "",
    )


async def events_after(conn: AsyncConnection, after_id: int, *, limit: int = _BATCH) -> list[EventItem]:
    rows = (await conn.execute(select(Event.__table__).where(Event.id > after_id).order_by(Event.id).limit(limit))).all()
    return [event_item(r) for r in rows]


class Subscription:
    """One WatchEvents caller's queue: bounded, drop-oldest, with a gap marker after losses."""

    def __init__(self, hub: EventHub, kinds: Iterable[str], maxsize: int) -> None:
        self._hub = hub
        self.kinds = frozenset(k for k in kinds if k)
        self.maxsize = maxsize
        self._items: deque[FeedItem] = deque()
        self._dropped = 0
        self._wake = asyncio.Event()
        self.closed = False

    def wants(self, kind: str) -> bool:
        return not self.kinds or kind in self.kinds

    def offer(self, item: FeedItem) -> None:
        if self.closed or not self.wants(item.kind):
            return
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self._dropped += 1
        self._items.append(item)
        self._wake.set()

    async def get(self) -> FeedItem | GapItem:
        while True:
            if self._dropped:  # reported before what is left, which all came after the loss
                dropped, self._dropped = self._dropped, 0
                return GapItem(dropped)
            if self._items:
                return self._items.popleft()
            self._wake.clear()
            await self._wake.wait()

    def close(self) -> None:
        self.closed = True
        self._hub.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class HubStats:
    listens: int = 0
    notifications: int = 0
    polls: int = 0
    events: int = 0
    exchanges: int = 0
    failures: int = 0


class EventHub:
    def __init__(self, engine: AsyncEngine, *, queue_size: int = 1000, poll_interval: float = 2.0, listen: bool = True) -> None:
        self.engine = engine
        self.queue_size = queue_size
        self.poll_interval = poll_interval
        self.listen = listen
        self.stats = HubStats()
        self._subs: set[Subscription] = set()
        self._wake = asyncio.Event()
        self._event_ids: list[int] = []
        self._request_ids: list[str] = []
        self._listen_conn: AsyncConnection | None = None
        self._listener_lost = False
        self._last_event_id = 0
        self._exchange_mark: datetime | None = None
        self._marks_ready = False
        self._seen_events: RecentKeys[int] = RecentKeys(_DEDUP)
        self._seen_exchanges: RecentKeys[str] = RecentKeys(_DEDUP)
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # set once the first listen/poll attempt is done

    # ------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="control-event-hub")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_listener()

    @property
    def listening(self) -> bool:
        return self._listen_conn is not None and not self._listener_lost

    def subscribe(self, kinds: Iterable[str] = ()) -> Subscription:
        sub = Subscription(self, kinds, self.queue_size)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    # ------------------------------------------------------------------------------ loop
    async def _run(self) -> None:
        failures_in_a_row = 0
        while True:
            try:
                if not self._marks_ready:  # without marks the first poll would replay the whole table
                    await self._init_marks()
                if self.listen and not self.listening:
                    await self._connect_listener()
                if self.listening:
                    await self._fetch_announced()
                else:
                    await self._poll()
                if failures_in_a_row:
                    log.info("event feed reads the database again")
                failures_in_a_row = 0
            except Exception as exc:
                if _cancelled():
                    raise asyncio.CancelledError from exc
                self.stats.failures += 1
                failures_in_a_row += 1
                if failures_in_a_row == 1:  # once per outage, not every poll
                    log.warning("event feed cannot read the database (%s); retrying every %.1fs", exc, self.poll_interval)
            self.ready.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()

    async def _init_marks(self) -> None:
        async with self.engine.connect() as conn:
            self._last_event_id = int((await conn.execute(select(func.coalesce(func.max(Event.id), 0)))).scalar_one())
            self._exchange_mark = (await conn.execute(select(func.now()))).scalar_one()
        self._marks_ready = True

    async def _connect_listener(self) -> None:
        await self._drop_listener()
        try:
            conn = await self.engine.connect()
        except Exception as exc:  # noqa: BLE001 - polling still works
            log.debug("event feed LISTEN connection failed: %s", exc)
            return
        try:
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.add_listener(EVENTS_CHANNEL, self._on_event)
            await driver.add_listener(EXCHANGES_CHANNEL, self._on_exchange)
            driver.add_termination_listener(self._on_terminated)
        except Exception as exc:  # noqa: BLE001
            log.debug("event feed LISTEN failed: %s", exc)
            await _discard(conn)
            return
        self._listen_conn = conn
        self._listener_lost = False
        self.stats.listens += 1
        # rows committed while we were not listening: one catch-up poll
        with contextlib.suppress(Exception):
            await self._poll()

    def _on_event(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.stats.notifications += 1
        with contextlib.suppress(ValueError):
            self._event_ids.append(int(payload))
        self._wake.set()

    def _on_exchange(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.stats.notifications += 1
        self._request_ids.append(payload)
        self._wake.set()

    def _on_terminated(self, *_: Any) -> None:
        self._listener_lost = True
        self._wake.set()

    async def _drop_listener(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is not None:
            await _discard(conn)

    # ------------------------------------------------------------------------------ reading
    async def _fetch_announced(self) -> None:
        event_ids, self._event_ids = self._event_ids, []
        request_ids, self._request_ids = self._request_ids, []
        if not event_ids and not request_ids:
            return
        try:
            await self._read_announced(event_ids, request_ids)
        except BaseException:
            # keep what was announced for the next attempt
            self._event_ids[:0] = event_ids
            self._request_ids[:0] = request_ids
            raise

    async def _read_announced(self, event_ids: list[int], request_ids: list[str]) -> None:
        async with self.engine.connect() as conn:
            if event_ids:
                rows = (await conn.execute(select(Event.__table__).where(Event.id.in_(event_ids)).order_by(Event.id))).all()
                self._publish_events([event_item(r) for r in rows])
            if request_ids:
                rows = (await conn.execute(select(Exchange.__table__).where(Exchange.request_id.in_(request_ids)))).all()
                order = {rid: i for i, rid in enumerate(request_ids)}
                records = sorted((record_from_row(r) for r in rows), key=lambda r: order.get(r.request_id, 0))
                self._publish_exchanges(records)

    async def _poll(self) -> None:
        self.stats.polls += 1
        async with self.engine.connect() as conn:
            self._publish_events(await events_after(conn, self._last_event_id))
            t = Exchange.__table__
            rows = (
                await conn.execute(select(t).where(t.c.inserted_at > self._exchange_mark).order_by(t.c.inserted_at).limit(_BATCH))
            ).all()
            if rows:
                self._exchange_mark = rows[-1]._mapping["inserted_at"]
            self._publish_exchanges([record_from_row(r) for r in rows])

    def _publish_events(self, items: list[EventItem]) -> None:
        for item in items:
            self._last_event_id = max(self._last_event_id, item.id)
            if self._seen_events.add(item.id):
                self.stats.events += 1
                self._fan_out(item)

    def _publish_exchanges(self, records: list[ExchangeRecord]) -> None:
        for record in records:
            if self._seen_exchanges.add(record.request_id):
                self.stats.exchanges += 1
                self._fan_out(ExchangeItem(record))

    def _fan_out(self, item: FeedItem) -> None:
        for sub in list(self._subs):
            sub.offer(item)


def _cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _discard(conn: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()
