"""Alert delivery: the event writer publishes off the hot path; the webhook dispatcher POSTs
undelivered events with retries and backoff, signs them, records delivery, never sends twice."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web
from sqlalchemy import select, text

from intelligence.events import Event, publish
from intelligence.events.webhook import SIGNATURE_HEADER, WebhookDispatcher
from intelligence.events.writer import EventWriter
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.migrate import upgrade_async
from tests.conftest import database_url


@pytest.fixture(scope="module")
async def events_db_url(pg_server_url: str) -> AsyncIterator[str]:
    """One migrated database for this module (migrating costs seconds); each test empties `events`."""
    name = f"t_hook_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(pg_server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url(pg_server_url, name)
    await upgrade_async(url)
    yield url
    admin = await asyncpg.connect(asyncpg_dsn(pg_server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def engine(events_db_url: str):
    eng = make_engine(events_db_url)
    async with eng.begin() as conn:
        await conn.execute(text("TRUNCATE events"))
    yield eng
    await eng.dispose()


class Receiver:
    """A local webhook endpoint that answers 500 to the first ``fail_first`` requests."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict, bytes, int]] = []  # headers, body, status answered
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = 500 if len(self.requests) < self.fail_first else 200
        self.requests.append((dict(request.headers), body, status))
        return web.Response(status=status, text="ok" if status == 200 else "boom")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(fail_first=2)
    await r.start()
    yield r
    await r.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_writer_publishes_in_background_and_never_raises(engine) -> None:
    w = EventWriter(engine, flush_interval=0.05)
    assert w.submit("alert", "boom", severity="critical", subject="gk_1", detail={"rule": "t/r"})
    assert not w.submit("alert", "bad severity", severity="fatal")
    assert w.stats["dropped"] == 1
    await w.start()
    for _ in range(100):
        if w.stats["published"]:
            break
        await asyncio.sleep(0.02)
    await w.stop()
    async with engine.connect() as conn:
        rows = (await conn.execute(select(Event))).all()
    assert [(r.kind, r.severity, r.subject, r.detail, r.source) for r in rows] == [
        ("alert", "critical", "gk_1", {"rule": "t/r"}, "sidecar")
    ]


async def test_writer_keeps_events_while_database_is_away() -> None:
    dead = make_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    w = EventWriter(dead, max_pending=2)
    assert w.submit("alert", "a") and w.submit("alert", "b") and not w.submit("alert", "c")
    with pytest.raises(Exception):
        await w.flush()
    assert w.pending == 2 and w.stats["dropped"] == 1
    await dead.dispose()


async def test_dispatcher_retries_with_backoff_signs_and_never_delivers_twice(engine, receiver: Receiver) -> None:
    async with engine.begin() as conn:
        crit = await publish(conn, kind="block", title="injection blocked", severity="critical", subject="gk_1")
        await publish(conn, kind="alert", title="fyi", severity="info")
        warn = await publish(conn, kind="quarantine", title="key quarantined", severity="warning", subject="gk_2")
    clock = Clock()
    d = WebhookDispatcher(
        engine, receiver.url, secret="s3cret", min_severity="warning", max_attempts=5, backoff=10.0, clock=clock
    )
    try:
        assert await d.tick() == {"delivered": 0, "failed": 2, "waiting": 0}  # both fail (500, 500)
        assert await d.tick() == {"delivered": 0, "failed": 0, "waiting": 2}  # backoff: nothing is due
        clock.now += 10.5
        assert await d.tick() == {"delivered": 2, "failed": 0, "waiting": 0}
        assert await d.tick() == {"delivered": 0, "failed": 0, "waiting": 0}  # delivered once, never again
    finally:
        await d.aclose()
    delivered = [json.loads(body) for _, body, status in receiver.requests if status == 200]
    assert sorted(e["id"] for e in delivered) == [crit, warn]
    assert all(e["severity"] in ("warning", "critical") for _, b, _ in receiver.requests for e in [json.loads(b)])
    for headers, body, _ in receiver.requests:
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers[SIGNATURE_HEADER] == expected
    async with engine.connect() as conn:
        rows = {r.id: r for r in (await conn.execute(select(Event))).all()}
    assert rows[crit].delivered_at is not None and rows[crit].delivery_attempts == 2
    assert rows[warn].delivered_at is not None and rows[warn].delivery_attempts == 2
    info = next(r for r in rows.values() if r.severity == "info")
    assert info.delivered_at is None and info.delivery_attempts == 0


async def test_dispatcher_gives_up_after_max_attempts(engine) -> None:
    r = Receiver(fail_first=100)
    await r.start()
    async with engine.begin() as conn:
        eid = await publish(conn, kind="alert", title="x", severity="critical")
    clock = Clock()
    d = WebhookDispatcher(engine, r.url, max_attempts=3, backoff=1.0, clock=clock)
    try:
        for _ in range(6):
            await d.tick()
            clock.now += 100
    finally:
        await d.aclose()
        await r.stop()
    assert len(r.requests) == 3 and SIGNATURE_HEADER not in {k.lower() for k in r.requests[0][0]}
    async with engine.connect() as conn:
        row = (await conn.execute(select(Event).where(Event.id == eid))).one()
    assert row.delivered_at is None and row.delivery_attempts == 3 and d.stats["given_up"] == 1


async def test_dispatcher_run_delivers_and_stops(engine, receiver: Receiver) -> None:
    receiver.fail_first = 0
    async with engine.begin() as conn:
        await publish(conn, kind="alert", title="live", severity="warning")
    d = WebhookDispatcher(engine, receiver.url, interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(d.run(stop))
    for _ in range(100):
        if receiver.requests:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(receiver.requests) == 1


def test_dispatcher_configuration_is_checked() -> None:
    with pytest.raises(ValueError):
        WebhookDispatcher(None, "ftp://x", min_severity="warning")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        WebhookDispatcher(None, "http://x", min_severity="loud")  # type: ignore[arg-type]
    assert WebhookDispatcher.from_env(None, {}) is None  # type: ignore[arg-type]
    d = WebhookDispatcher.from_env(
        None,
        {
            "LLMPROXY_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/h",  # type: ignore[arg-type]
            "LLMPROXY_ALERT_WEBHOOK_SECRET": "k",
        },
    )
    assert d is not None and d.secret == "k" and d.severities == ("warning", "critical")
