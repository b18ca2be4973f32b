"""The live feed's hub: one LISTEN connection per dashboard process, fanned out to every open Live page.

The gateway's request log NOTIFYs ``llmproxy_exchanges`` with each committed request id, the events
table ``llmproxy_events`` with each event id. The hub collects the ids, reads the announced rows in one
query per wake-up (so at high rates rows arrive in batches by themselves: while one read runs the next
ids pile up), turns them into the table's wire format (:mod:`ui.live.rows`), adds them to the KPI
window (:mod:`ui.live.kpis`) and offers them to every subscriber. It runs on the dashboard server's
event loop (uvicorn's), beside Streamlit's own websocket.

Rows and tiles run as two tasks. The tiles (KPIs, spend, the alerts banner) cost a database read or tens
of milliseconds of arithmetic that grow with the traffic of the window and of the day; while one task
waits on them, rows announced meanwhile must not wait too (at 100 req/s, a serial loop made every row
that arrived during a spend read late by that read, and the page fell further behind as the day filled).

Subscribers never hold the hub back: each has a bounded queue, and one that falls too far behind is
cleared and told to resynchronise (it backfills from the database, like after a reconnect). When LISTEN
is unavailable the hub polls the database once a second (exchanges by start time, events by id) and
tries to LISTEN again; after a reconnect it reads what was committed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from intelligence.analytics import AnalyticsRepository, ExchangeRow
from intelligence.dashboard.alerts import AlertRepository
from intelligence.dashboard.live import LiveRepository
from intelligence.events.models import NOTIFY_CHANNEL as EVENTS_CHANNEL
from intelligence.pricing import PriceTable, load_prices
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.listen import RecentKeys
from intelligence.store.repositories import NOTIFY_CHANNEL as EXCHANGES_CHANNEL
from ui.live.kpis import KpiWindow, SpendTally
from ui.live.rows import alert_payload, row_payload

log = logging.getLogger(__name__)

TABLE_ROWS = 200  # rows the live table keeps (a backfill sends at most this many)
QUEUE_MAX = 1000  # queued messages per subscriber before it is cleared and asked to resynchronise
CATCH_UP_MARGIN_S = 600.0  # a reconnect re-reads exchanges started this long before the newest one seen
KPI_EVERY_S = 1.0  # KPI tiles recomputed at most this often while traffic flows ...
KPI_IDLE_S = 5.0  # ... and this often without (the window slides)
SPEND_EVERY_S = 1.0  # the spend tile (kept in memory: cheap) while traffic flows ...
SPEND_IDLE_S = 60.0  # ... and without (a new hour, a new day)
BANNER_EVERY_S = 30.0  # acknowledgements do not NOTIFY: the open-alerts banner is re-read this often
PING_S = 5.0  # a LISTEN connection that died silently is found by a ping
POLL_S = 1.0  # without LISTEN: one poll a second
RECONNECT_S = 2.0
RECENT_IDS = 8192  # request ids remembered: LISTEN and a catch-up read may both see a row


class Subscriber:
    """One browser connection's queue: bounded; merged into one message per send when it lags."""

    def __init__(self, hub: LiveHub, maxsize: int = QUEUE_MAX) -> None:
        self._hub = hub
        self._items: deque[tuple[str, Any]] = deque()
        self._maxsize = maxsize
        self._wake = asyncio.Event()
        self.resync = False
        self.closed = False

    def offer(self, kind: str, payload: Any) -> None:
        if self.closed:
            return
        if len(self._items) >= self._maxsize:  # too far behind: drop it all, the client backfills from the database
            self._items.clear()
            self.resync = True
        self._items.append((kind, payload))
        self._wake.set()

    async def next_message(self) -> dict[str, Any]:
        """Everything queued, as one message (rows merged, only the newest KPIs, banner and status)."""
        while True:
            if self.resync:
                self.resync = False
                return {"type": "resync"}
            if self._items:
                return merge(self._drain())
            self._wake.clear()
            await self._wake.wait()

    def _drain(self) -> list[tuple[str, Any]]:
        items = list(self._items)
        self._items.clear()
        return items

    def close(self) -> None:
        self.closed = True
        self._hub.unsubscribe(self)


def merge(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Queued items as one ``update`` message: rows and alerts concatenated, the latest of everything else."""
    msg: dict[str, Any] = {"type": "update"}
    for kind, payload in items:
        if kind in ("rows", "alerts"):
            msg.setdefault(kind, []).extend(payload)
        else:
            msg[kind] = payload
    if len(msg.get("rows", ())) > TABLE_ROWS:  # the table keeps 200 by start time; the rest would be dropped there
        msg["rows"] = sorted(msg["rows"], key=lambda r: (r["t"], r["id"]), reverse=True)[:TABLE_ROWS]
    return msg


@dataclass
class HubStatus:
    mode: str = "starting"  # starting | listen | poll | down
    error: str | None = None
    notifications: int = 0
    rows: int = 0
    batches: int = 0
    started_at: float = field(default_factory=time.time)


class LiveHub:
    def __init__(
        self,
        url: str,
        *,
        prices: PriceTable | None = None,
        window_minutes: int = 15,
        bucket_s: int = 60,
        listen: bool = True,
    ) -> None:
        self.url = url
        self.prices = prices or load_prices()
        self.listen = listen
        self.status = HubStatus()
        self.kpis = KpiWindow(window_minutes, bucket_s)
        self.spend = SpendTally(self.prices)
        self.ready = asyncio.Event()  # set once the first read (and LISTEN, if possible) is done
        self._engine = make_engine(url, pool_size=3, max_overflow=2, connect_timeout=5.0)
        self._subs: set[Subscriber] = set()
        self._wake = asyncio.Event()  # rows or events announced, or the listener lost
        self._tick_wake = asyncio.Event()  # rows published: the tiles may be due
        self._request_ids: list[str] = []
        self._event_ids: list[int] = []
        self._seen: RecentKeys[str] = RecentKeys(RECENT_IDS)  # published to the pages
        self._counted: RecentKeys[str] = RecentKeys(
            RECENT_IDS
        )  # in the KPI window and the spend (a seed counts rows it never published)
        self._conn: asyncpg.Connection | None = None
        self._lost = False
        self._seeded = False
        self._reseed = False  # after a failure: the window and the spend are read again (a catch-up is bounded)
        self._newest_started = 0.0
        self._last_event_id = 0
        self._kpi_version_sent = -1
        self._kpi_at = 0.0
        self._kpi_doc: dict[str, Any] | None = None
        self._spend_dirty = True
        self._spend_at = 0.0
        self._spend_doc: dict[str, Any] | None = None
        self._banner_dirty = True
        self._banner_at = 0.0
        self._banner_doc: dict[str, Any] | None = None
        self._ping_at = 0.0
        self._reconnect_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._tick_error: str | None = None

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="llmproxy-live-hub")
            self._ticker = asyncio.create_task(self._run_tiles(), name="llmproxy-live-tiles")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, self._ticker) if t is not None]
        self._task = self._ticker = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_listener()
        await self._engine.dispose()

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    # ------------------------------------------------------------------------------ for a new connection
    async def backfill(self, since_ms: float | None, last_event_id: int | None) -> dict[str, Any]:
        """What a (re)connecting page may have missed: every exchange started since ``since_ms`` (the oldest
        one it shows; the newest 200 when it shows none) and the alerts after ``last_event_id``."""
        async with self._engine.connect() as conn:
            live = LiveRepository(conn)
            if since_ms is not None and math.isfinite(since_ms):
                since = datetime.fromtimestamp(since_ms / 1000.0, UTC)
                rows = await live.started_since(since, TABLE_ROWS)
            else:
                rows = await AnalyticsRepository(conn).recent(TABLE_ROWS)
            alerts: list[dict[str, Any]] = []
            if last_event_id is not None:
                alerts = await AlertRepository(conn).alerts_after(int(last_event_id), limit=20)
        return {
            "rows": [row_payload(r, self.prices) for r in rows],
            "alerts": [alert_payload(a) for a in alerts],
            "last_event_id": max([int(last_event_id or 0), self._last_event_id, *(int(a["id"]) for a in alerts)]),
        }

    async def current(self) -> dict[str, Any]:
        """The latest KPI tiles, spend, banner and feed status (sent to a new connection after its backfill)."""
        kpis = await asyncio.to_thread(self.kpis.freeze(time.time()).compute)
        return {"kpis": kpis, "spend": self._spend_doc, "banner": self._banner_doc, "status": self.status_doc()}

    def status_doc(self) -> dict[str, Any]:
        return {"mode": self.status.mode, "error": self.status.error}

    # ------------------------------------------------------------------------------ loop
    async def _run(self) -> None:
        while True:
            try:
                if not self._seeded or self._reseed:
                    await self._seed()
                if self.listen and self._conn is None and time.monotonic() >= self._reconnect_at:
                    await self._connect()
                if self._conn is not None:
                    await self._drain()
                    await self._ping()
                else:
                    await self._catch_up()
                if self.status.error and self._conn is not None:
                    self.status.error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database restarts, the network hiccups: retry
                self._fail(exc)
            finally:
                if self._seeded:
                    self.ready.set()
            timeout = PING_S if self._conn is not None else POLL_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    async def _run_tiles(self) -> None:
        """The tiles' own loop: after each published batch (at most every KPI_EVERY_S) and as time passes."""
        await self.ready.wait()
        while True:
            try:
                await self._tick()
                if self._tick_error is not None:
                    log.info("live feed: the tiles are computed again")
                    self._tick_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database restarts: the rows' loop reports it, retry here
                error = f"{type(exc).__name__}: {exc}"
                if error != self._tick_error:
                    log.warning("live feed: the tiles could not be computed: %s", error)
                self._tick_error = error
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick_wake.wait(), KPI_EVERY_S)
            self._tick_wake.clear()

    def _fail(self, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if error != self.status.error:
            log.warning("live feed: %s", error)
        self.status.error = error
        self._reseed = self._seeded
        self._set_mode("poll" if self._seeded else "down")

    def _set_mode(self, mode: str) -> None:
        if mode != self.status.mode:
            self.status.mode = mode
            self._publish("status", self.status_doc())

    async def _seed(self) -> None:
        """The KPI window and today's spend from the database, in one snapshot, and the ids it counted: the
        catch-up that follows re-reads the last minutes and publishes what the pages have not seen, but must
        not count those exchanges twice."""
        now = time.time()
        day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        async with self._engine.connect() as conn:
            await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                live = LiveRepository(conn)
                samples = await live.window(datetime.fromtimestamp(now - self.kpis.span_s, UTC))
                groups = await live.spend_groups(day)
                last_event_id = await AlertRepository(conn).latest_event_id()
        self._last_event_id = max(self._last_event_id, last_event_id)
        # built in a worker thread (a busy window is tens of thousands of rows), swapped in on the loop: the
        # tiles' task never reads a half-built one
        kpis, spend = KpiWindow(self.kpis.minutes, self.kpis.bucket_s), SpendTally(self.prices)
        await asyncio.to_thread(kpis.seed, samples)
        await asyncio.to_thread(spend.seed, groups)
        kpis.version = self.kpis.version + 1
        self.kpis, self.spend = kpis, spend
        counted: RecentKeys[str] = RecentKeys(self._counted.size)
        for sample in sorted(samples, key=lambda s: s.started)[-counted.size :]:
            counted.add(sample.request_id)
        self._counted = counted
        self._newest_started = max((s.started for s in samples), default=self._newest_started or now)
        self._seeded, self._reseed = True, False
        self._spend_dirty = True
        self._tick_wake.set()
        self._set_mode("listen" if self._conn is not None else "poll")

    async def _connect(self) -> None:
        self._reconnect_at = time.monotonic() + RECONNECT_S
        conn = await asyncpg.connect(asyncpg_dsn(self.url), timeout=5)
        try:
            await conn.add_listener(EXCHANGES_CHANNEL, self._on_exchange)
            await conn.add_listener(EVENTS_CHANNEL, self._on_event)
            conn.add_termination_listener(self._on_terminated)
        except BaseException:
            conn.terminate()
            raise
        self._conn, self._lost = conn, False
        self._ping_at = time.monotonic() + PING_S
        self._set_mode("listen")
        await self._catch_up()  # committed while nobody listened

    async def _drop_listener(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
            conn.terminate()

    def _on_exchange(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.status.notifications += 1
        self._request_ids.append(payload)
        self._wake.set()

    def _on_event(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.status.notifications += 1
        with contextlib.suppress(ValueError):
            self._event_ids.append(int(payload))
        self._wake.set()

    def _on_terminated(self, _conn: object) -> None:
        self._lost = True
        self._wake.set()

    async def _ping(self) -> None:
        if self._lost:
            await self._drop_listener()
            raise ConnectionError("LISTEN connection lost")
        if self._conn is not None and time.monotonic() >= self._ping_at:
            self._ping_at = time.monotonic() + PING_S
            try:
                await asyncio.wait_for(self._conn.execute("SELECT 1"), 5)
            except Exception:
                await self._drop_listener()
                raise

    async def _drain(self) -> None:
        """Read the rows and events announced since the last wake-up (one query each) and publish them."""
        while self._request_ids or self._event_ids:
            request_ids, self._request_ids = self._request_ids, []
            event_ids, self._event_ids = self._event_ids, []
            try:
                async with self._engine.connect() as conn:
                    rows = await LiveRepository(conn).by_ids(request_ids) if request_ids else []
                    alerts = await AlertRepository(conn).alerts_by_ids(event_ids) if event_ids else []
            except BaseException:
                self._request_ids[:0] = request_ids  # announced rows are not lost: read on the next attempt
                self._event_ids[:0] = event_ids
                raise
            self._publish_rows(rows)
            if event_ids:
                self._last_event_id = max(self._last_event_id, *event_ids)
                self._banner_dirty = True
                self._tick_wake.set()
                if alerts:
                    self._publish("alerts", [alert_payload(a) for a in alerts])

    async def _catch_up(self) -> None:
        """Read by time and id what LISTEN did not announce (polling, or committed while reconnecting)."""
        since = max(self._newest_started - CATCH_UP_MARGIN_S, time.time() - self.kpis.span_s)
        async with self._engine.connect() as conn:
            rows = await LiveRepository(conn).started_since(datetime.fromtimestamp(since, UTC), 1000)
            alerts = await AlertRepository(conn).alerts_after(self._last_event_id, limit=100)
            newest_event = await AlertRepository(conn).latest_event_id()
        self._publish_rows(list(reversed(rows)))
        if newest_event > self._last_event_id:
            self._last_event_id = newest_event
            self._banner_dirty = True
            self._tick_wake.set()
        if alerts:
            self._publish("alerts", [alert_payload(a) for a in alerts])

    def _publish_rows(self, rows: list[ExchangeRow]) -> None:
        fresh = []
        for r in rows:
            if not self._seen.add(r.request_id):
                continue
            started = r.started_at.timestamp()
            self._newest_started = max(self._newest_started, started)
            if self._counted.add(r.request_id):
                self.kpis.add(started, r.latency_ms, bool(r.error) or (r.status is not None and r.status >= 400))
                self.spend.add(r.started_at, r.model, r.api, r.input_tokens, r.output_tokens, r.cached_tokens, r.reasoning_tokens)
            fresh.append(row_payload(r, self.prices))
        if fresh:
            self.status.rows += len(fresh)
            self.status.batches += 1
            self._spend_dirty = True
            self._publish("rows", fresh)
            self._tick_wake.set()  # the tiles follow this batch (at most every KPI_EVERY_S)

    async def _tick(self) -> None:
        now = time.time()
        changed = self.kpis.version != self._kpi_version_sent
        if (changed and now - self._kpi_at >= KPI_EVERY_S) or now - self._kpi_at >= KPI_IDLE_S:
            self._kpi_at, self._kpi_version_sent = now, self.kpis.version
            # tens of milliseconds of numpy for a busy window: not on the loop that pushes the rows
            self._kpi_doc = await asyncio.to_thread(self.kpis.freeze(now).compute)
            self._publish("kpis", self._kpi_doc)
        if (self._spend_dirty and now - self._spend_at >= SPEND_EVERY_S) or now - self._spend_at >= SPEND_IDLE_S:
            self._spend_at, self._spend_dirty = now, False
            self._spend_doc = self.spend.doc(datetime.fromtimestamp(now, UTC))
            self._publish("spend", self._spend_doc)
        if self._banner_dirty or now - self._banner_at >= BANNER_EVERY_S:
            self._banner_at, self._banner_dirty = now, False
            banner = await self._banner()
            if banner != self._banner_doc:
                self._banner_doc = banner
                self._publish("banner", banner)

    async def _banner(self) -> dict[str, Any]:
        async with self._engine.connect() as conn:
            rows = await AlertRepository(conn).open_alerts(24)
        return banner_payload(rows)

    def _publish(self, kind: str, payload: Any) -> None:
        for sub in list(self._subs):
            sub.offer(kind, payload)


def banner_payload(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The open-alerts banner from ``AlertRepository.open_alerts`` rows (newest first)."""
    from ui.redact import mask_secrets

    return {
        "open": len(rows),
        "critical": sum(r["severity"] == "critical" for r in rows),
        "newest": mask_secrets(str(rows[0]["title"])) if rows else None,
    }


def dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), allow_nan=False, default=str)


MAX_EPOCH_MS = 32_503_680_000_000.0  # 3000-01-01: a "since" beyond it is garbage (and past what datetime takes)


def since_ms(value: Any) -> float | None:
    """A page's "since" (epoch ms) if it is one, else None (the newest rows then)."""
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) and 0 < f < MAX_EPOCH_MS else None


def event_id(value: Any) -> int | None:
    """A page's last seen event id if it is one (a bigint), else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value < 2**63 else None
