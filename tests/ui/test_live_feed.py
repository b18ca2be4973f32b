"""The live feed against a real PostgreSQL, served by a real uvicorn on loopback: the Host/Origin checks, the
token, pushed rows (masked, batched), alert toasts, reconnect with backfill, a dropped LISTEN connection,
a lagging subscriber, and the KPI window agreeing with the page's own query."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from intelligence.access import AccessSettings, issue_token
from intelligence.analytics import AnalyticsRepository
from intelligence.dashboard.live import LiveRepository
from intelligence.records import Usage
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.migrate import upgrade_async
from intelligence.store.repositories import ExchangeRepository
from tests.conftest import database_url
from tests.intelligence.factories import make_record
from ui.live import feed, server
from ui.live import rows as rows_module
from ui.live.kpis import KpiWindow, kpis_from_buckets

SECRET_KEY = "u_EPOUJL988uYeBf5-sXOAnsz-WuKqR0_lSmOfCKwEIfK863YyjkiVW2ZvoxinB1"
LEAKED = "sk-proj-LiveFeedLeak1234567890abcdefXYZ"
WAIT_S = 10.0  # every wait for a message is bounded by this


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str  # http://127.0.0.1:PORT
    port: int
    db_url: str
    engine: AsyncEngine


@pytest.fixture(scope="module")
async def live_db(pg_server_url: str) -> AsyncIterator[str]:
    name = f"live_{uuid.uuid4().hex[:10]}"
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


@contextlib.contextmanager
def serve(db_url: str) -> Iterator[int]:
    """The dashboard's own routes and middleware (as ui/streamlit_app.py mounts them) in a real uvicorn."""
    port = free_port()
    before = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = db_url
    app = Starlette(routes=server.routes(), middleware=server.middleware(), lifespan=server.lifespan)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, name="live-test-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not srv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield port
    finally:
        srv.should_exit = True
        thread.join(15)
        assert not thread.is_alive()
        server._serving = False  # AppTest runs later in this process render without the feed
        if before is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = before


@pytest.fixture(scope="module")
async def live(live_db: str) -> AsyncIterator[LiveServer]:
    engine = make_engine(live_db)
    with serve(live_db) as port:
        yield LiveServer(url=f"http://127.0.0.1:{port}", port=port, db_url=live_db, engine=engine)
    await engine.dispose()


async def insert(engine: AsyncEngine, records: list[Any]) -> None:
    async with engine.begin() as conn:
        await ExchangeRepository(conn).insert_batch(records)


async def receive(ws: aiohttp.ClientWebSocketResponse, want: str | None = None, timeout: float = WAIT_S) -> dict[str, Any]:
    """The next message (of type ``want``), waiting at most ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {want or 'message'} within {timeout}s"
        msg = await ws.receive(timeout=left)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, ws.close_code)
        doc = json.loads(msg.data)
        if want is None or doc["type"] == want:
            return doc


async def rows_until(ws: aiohttp.ClientWebSocketResponse, ids: set[str], timeout: float = WAIT_S) -> dict[str, dict]:
    """Collect pushed rows until every id in ``ids`` arrived (bounded by ``timeout``)."""
    got: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while not ids <= set(got):
        doc = await receive(ws, timeout=max(0.01, deadline - time.monotonic()))
        for r in doc.get("rows") or ():
            got[r["id"]] = r
    return got


@contextlib.asynccontextmanager
async def feed_socket(
    live: LiveServer, *, token: str | None = None, host: str | None = None, origin: str | None = None, hello: dict | None = None
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    headers = {}
    if host is not None:
        headers["Host"] = host
    if origin is not None:
        headers["Origin"] = origin
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"{live.url}{server.LIVE_PATH}", headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=5)
        ) as ws:
            await ws.send_json({"type": "hello", "token": server.local_key() if token is None else token, **(hello or {})})
            yield ws


# ------------------------------------------------------------------------------------------ refusals


async def test_a_forged_host_is_refused_for_pages_and_for_the_feed(live: LiveServer) -> None:
    async with aiohttp.ClientSession() as session:
        # DNS rebinding: the attacker's name resolves to 127.0.0.1 and the browser sends it as the Host
        async with session.get(f"{live.url}/", headers={"Host": f"evil.example:{live.port}"}) as r:
            assert r.status == 403 and "not allowed" in await r.text()
        async with session.get(f"{live.url}/", headers={"Host": f"localhost:{live.port}"}) as r:
            assert r.status == 404  # allowed through the guard (no page at / in this bare app)
        async with session.get(f"{live.url}/", headers={"Host": f"[::1]:{live.port}"}) as r:
            assert r.status == 404
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{live.url}{server.LIVE_PATH}", headers={"Host": f"evil.example:{live.port}"})
        assert refused.value.status == 403
        # the page's own host name with a foreign Origin: a cross-site page connecting to 127.0.0.1
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{live.url}{server.LIVE_PATH}", headers={"Origin": "http://evil.example"})
        assert refused.value.status == 403


async def test_the_feed_needs_the_key_of_a_page_the_dashboard_rendered(live: LiveServer) -> None:
    async with feed_socket(live, token="guessed") as ws:
        doc = await receive(ws)
        assert doc["type"] == "error" and "reload the page" in doc["error"]
        msg = await ws.receive(timeout=WAIT_S)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws.close_code == server.CLOSE_AUTH
    async with feed_socket(live, origin=live.url) as ws:  # the dashboard's own origin, the right key
        assert (await receive(ws))["type"] == "ready"


# ------------------------------------------------------------------------------------------ pushing


async def test_committed_exchanges_are_pushed_masked_with_kpis_and_toasts(live: LiveServer) -> None:
    now = datetime.now(UTC)
    async with feed_socket(live) as ws:
        ready = await receive(ws, "ready")
        assert ready["role"] == "admin" and ready["subject"] == "local"
        backfill = await receive(ws, "backfill")
        assert isinstance(backfill["rows"], list)
        first = await receive(ws, "update")  # the current tiles
        assert "kpis" in first and first["status"]["mode"] == "listen"
        batch = [
            make_record(started_at=now - timedelta(seconds=3 - i), model=f"gpt-live-{i}", prompt_user=f"key {LEAKED} please")
            for i in range(3)
        ]
        batch[1] = make_record(started_at=now - timedelta(seconds=2), status=503, error="upstream 503", model="gpt-live-1")
        t0 = time.monotonic()
        await insert(live.engine, batch)  # one transaction: three NOTIFYs, read back in one query
        got = await rows_until(ws, {r.request_id for r in batch})
        assert time.monotonic() - t0 < 2.0
        row = got[batch[0].request_id]
        assert row["model"] == "gpt-live-0" and row["latency_ms"] == 850.0 and row["tokens_in"] == 12
        assert LEAKED not in json.dumps(got) and "[redacted]" in row["prompt"]
        assert got[batch[1].request_id]["failed"] is True and "error" in got[batch[1].request_id]["flags"]
        kpis = await receive(ws, "update")
        while "kpis" not in kpis:
            kpis = await receive(ws, "update")
        assert kpis["kpis"]["requests"] >= 3
        # a critical event becomes a toast; an info event does not
        conn = await asyncpg.connect(asyncpg_dsn(live.db_url))
        try:
            await conn.execute(
                "INSERT INTO events (kind, severity, title) VALUES ('alert', 'info', 'quiet'), ('alert', 'critical', $1)",
                f"key leaked {LEAKED} [x](http://evil.example)",
            )
        finally:
            await conn.close()
        deadline = time.monotonic() + WAIT_S
        alerts: list[dict] = []
        while not alerts:
            alerts = (await receive(ws, "update", timeout=max(0.01, deadline - time.monotonic()))).get("alerts") or []
        assert [a["severity"] for a in alerts] == ["critical"]
        assert LEAKED not in alerts[0]["title"] and "[redacted]" in alerts[0]["title"]


async def test_a_reconnecting_page_backfills_what_it_missed(live: LiveServer) -> None:
    now = datetime.now(UTC)
    shown = make_record(started_at=now - timedelta(seconds=30))
    await insert(live.engine, [shown])
    async with feed_socket(live) as ws:
        await receive(ws, "ready")
        assert shown.request_id in {r["id"] for r in (await receive(ws, "backfill"))["rows"]}
    # the page is offline while two exchanges are committed (one started before the newest it had)
    missed = [make_record(started_at=now - timedelta(seconds=20)), make_record(started_at=now - timedelta(seconds=1))]
    await insert(live.engine, missed)
    older = make_record(started_at=now - timedelta(minutes=30))  # started before the oldest row shown
    await insert(live.engine, [older])
    since_ms = shown.started_at.timestamp() * 1000
    async with feed_socket(live, hello={"since": since_ms, "last_event_id": 0}) as ws:
        await receive(ws, "ready")
        back = await receive(ws, "backfill")
        ids = {r["id"] for r in back["rows"]}
        assert {shown.request_id, *(m.request_id for m in missed)} <= ids and older.request_id not in ids
        assert all(r["t"] >= since_ms for r in back["rows"])


async def test_the_hub_survives_a_dropped_listen_connection(live: LiveServer) -> None:
    async with feed_socket(live) as ws:
        await receive(ws, "ready")
        hub = server._hub  # runs on the server's loop (another thread): only read here
        assert hub is not None and hub._conn is not None
        pid = hub._conn.get_server_pid()
        conn = await asyncpg.connect(asyncpg_dsn(live.db_url))
        try:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await conn.close()
        during = make_record(started_at=datetime.now(UTC))
        await insert(live.engine, [during])  # committed while nobody LISTENs
        got = await rows_until(ws, {during.request_id}, timeout=15)
        assert during.request_id in got
        deadline = time.monotonic() + 15
        while hub.status.mode != "listen" or hub._conn is None or hub._conn.get_server_pid() == pid:
            assert time.monotonic() < deadline, hub.status
            await asyncio.sleep(0.05)
        after = make_record(started_at=datetime.now(UTC))
        await insert(live.engine, [after])
        assert after.request_id in await rows_until(ws, {after.request_id})


# ------------------------------------------------------------------------------------------ tokens


async def test_with_secret_key_the_feed_takes_the_same_signed_tokens(live: LiveServer, monkeypatch) -> None:
    monkeypatch.setenv("SECRET_KEY", SECRET_KEY)  # read by the feed on every connection
    access = AccessSettings(secret_key=SECRET_KEY)
    async with feed_socket(live, token=issue_token(access, "vera", "viewer")) as ws:
        ready = await receive(ws, "ready")
        assert ready["role"] == "viewer" and ready["subject"] == "vera" and ready["expires_at"] > time.time()
    async with feed_socket(live) as ws:  # the local key means nothing once SECRET_KEY is set
        assert (await receive(ws))["type"] == "error"
    expired = issue_token(access, "vera", "viewer", minutes=-1)
    async with feed_socket(live, token=expired) as ws:
        doc = await receive(ws)
        assert doc["type"] == "error" and "expired" in doc["error"]
    # a token that expires while the page is open: the feed closes, the page must sign in again
    soon = issue_token(access, "vera", "viewer", now=datetime.now(UTC) - timedelta(minutes=1) + timedelta(seconds=2), minutes=1)
    async with feed_socket(live, token=soon) as ws:
        await receive(ws, "ready")
        doc = await receive(ws, "error", timeout=8)
        assert "expired" in doc["error"]
        msg = await ws.receive(timeout=WAIT_S)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws.close_code == server.CLOSE_AUTH


# ------------------------------------------------------------------------------------------ units


async def test_a_lagging_subscriber_is_cleared_and_told_to_resync() -> None:
    class Hub:
        def unsubscribe(self, _sub: object) -> None:
            pass

    sub = feed.Subscriber(Hub(), maxsize=3)  # type: ignore[arg-type]
    sub.offer("rows", [{"id": "a", "t": 1.0}])
    sub.offer("kpis", {"requests": 1})
    sub.offer("rows", [{"id": "b", "t": 2.0}])
    msg = await asyncio.wait_for(sub.next_message(), 1)
    assert msg == {"type": "update", "rows": [{"id": "a", "t": 1.0}, {"id": "b", "t": 2.0}], "kpis": {"requests": 1}}
    for i in range(5):  # more than it holds: cleared, then resync, then what came after
        sub.offer("rows", [{"id": f"r{i}", "t": float(i)}])
    assert await asyncio.wait_for(sub.next_message(), 1) == {"type": "resync"}
    assert (await asyncio.wait_for(sub.next_message(), 1))["rows"] == [{"id": "r3", "t": 3.0}, {"id": "r4", "t": 4.0}]
    many = feed.merge([("rows", [{"id": f"x{i:04d}", "t": float(i)} for i in range(500)])])
    assert len(many["rows"]) == feed.TABLE_ROWS and many["rows"][0]["id"] == "x0499"


async def test_the_kpi_window_agrees_with_the_page_query(live_db: str) -> None:
    engine = make_engine(live_db)
    try:
        now = datetime.now(UTC)
        recs = [
            make_record(started_at=now - timedelta(seconds=5 + 37 * i), latency_ms=float(40 + (i * 53) % 900)) for i in range(20)
        ]
        recs += [make_record(started_at=now - timedelta(seconds=61), status=500, error="upstream 500", latency_ms=None)]
        await insert(engine, recs)
        async with engine.connect() as conn:
            t = time.time()
            since = datetime.fromtimestamp(t - 900, UTC)
            buckets = await AnalyticsRepository(conn).live_buckets(since, 60)
            samples = await LiveRepository(conn).window(since)
        page = kpis_from_buckets(15, 60, buckets, t)
        window = KpiWindow(15, 60)
        window.seed(samples)
        pushed = window.snapshot(t)
        assert pushed["requests"] == page["requests"] >= 21
        for key in ("req_per_s", "error_rate", "p50_ms", "p95_ms"):
            assert pushed[key] == pytest.approx(page[key]), key
        for key in ("t", "req_per_s", "error_rate"):
            assert pushed["series"][key] == pytest.approx(page["series"][key]), key
        for key in ("p50_ms", "p95_ms"):
            assert [v is None for v in pushed["series"][key]] == [v is None for v in page["series"][key]]
            assert [v for v in pushed["series"][key] if v is not None] == pytest.approx(
                [v for v in page["series"][key] if v is not None]
            )
        # rows added one by one give the same as a fresh read
        incremental = KpiWindow(15, 60)
        for s in samples:
            incremental.add(s.started, s.latency_ms, s.error)
        assert incremental.snapshot(t) == pushed
        empty = KpiWindow(15, 60).snapshot(t)
        assert empty["requests"] == 0 and empty["error_rate"] is None and empty["p50_ms"] is None  # "no data yet"
    finally:
        await engine.dispose()


async def test_the_spend_tile_agrees_with_the_page_computation(live_db: str) -> None:
    """The feed seeds its spend from per-hour, per-model sums (``LiveRepository.spend_groups``) and then adds
    each pushed row; the page prices the full rollup rows (``aggregate.spend_today``). Same numbers either
    way, unpriced models counted alike, garbage token counts cleaned alike."""
    from intelligence.pricing import load_prices
    from ui import aggregate
    from ui.live.kpis import SpendTally

    engine = make_engine(live_db)
    try:
        now = datetime.now(UTC)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        early = day + timedelta(seconds=30) if now - day > timedelta(minutes=2) else now - timedelta(seconds=20)
        usage = Usage(input_tokens=1200, output_tokens=340, total_tokens=1540, cached_tokens=200, reasoning_tokens=None)
        garbage = Usage(input_tokens=-5, output_tokens=10**12, total_tokens=0, cached_tokens=None, reasoning_tokens=7)
        prices = load_prices()
        async with engine.connect() as conn:
            before = await LiveRepository(conn).spend_groups(day)
        recs = [
            make_record(started_at=now - timedelta(seconds=3 + i), model=model, client_key_fp=client, usage=usage)
            for i, (model, client) in enumerate(
                [("gpt-4o-mini", "fp-a"), ("gpt-4o-mini", "fp-b"), ("gpt-4o", "fp-a"), ("no-such-model-zz", "fp-c")]
            )
        ]
        recs += [make_record(started_at=early, model="gpt-4o", client_key_fp="fp-d", usage=usage)]
        recs += [make_record(started_at=now - timedelta(seconds=9), model="no-such-model-zz", provider="openrouter")]
        recs += [make_record(started_at=now - timedelta(seconds=11), model="gpt-4o-mini", usage=garbage)]
        recs += [make_record(started_at=day - timedelta(minutes=5), model="gpt-4o", usage=usage)]  # yesterday
        await insert(engine, recs)
        async with engine.connect() as conn:
            rows = await AnalyticsRepository(conn).rollup("hour", day)
            groups = await LiveRepository(conn).spend_groups(day)
        page = aggregate.spend_payload(aggregate.spend_today(rows, prices, day, now))
        seeded = SpendTally(prices)
        seeded.seed(groups)
        fed = SpendTally(prices)  # what the feed holds: a seed from before, then the rows it pushed
        fed.seed(before)
        for r in recs:
            u = r.usage
            fed.add(r.started_at, r.model, r.api, u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens)
        assert len(groups) < len(rows)  # clients and providers summed away
        for pushed in (seeded.doc(now), fed.doc(now)):
            assert page["unpriced_requests"] == pushed["unpriced_requests"] >= 2
            assert pushed["total_usd"] == pytest.approx(page["total_usd"]) and pushed["total_usd"] > 0
            assert pushed["hourly"] == pytest.approx(page["hourly"])
        # the next day starts at zero by itself
        tomorrow = fed.doc(day + timedelta(days=1, minutes=1))
        assert tomorrow == {"total_usd": 0.0, "unpriced_requests": 0, "hourly": [0.0]}
    finally:
        await engine.dispose()


async def test_the_hub_counts_each_exchange_once_in_its_tiles(live_db: str) -> None:
    """Seeded from the database, then a catch-up re-reads the last minutes: the KPI window and the spend
    must hold every exchange once, and again after the hub re-seeds following a failure."""
    from intelligence.pricing import load_prices
    from ui import aggregate

    engine = make_engine(live_db)
    hub = feed.LiveHub(live_db)
    try:
        now = datetime.now(UTC)
        await insert(engine, [make_record(started_at=now - timedelta(seconds=4 + i)) for i in range(25)])
        hub.start()
        await asyncio.wait_for(hub.ready.wait(), WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while hub.status.mode != "listen":
            assert time.monotonic() < deadline, hub.status
            await asyncio.sleep(0.05)
        await insert(engine, [make_record(started_at=datetime.now(UTC)) for _ in range(3)])  # pushed as they commit

        async def expected() -> tuple[int, dict[str, Any]]:
            t = datetime.now(UTC)
            day = t.replace(hour=0, minute=0, second=0, microsecond=0)
            async with engine.connect() as conn:
                n = len(await LiveRepository(conn).window(t - timedelta(minutes=15)))
                rows = await AnalyticsRepository(conn).rollup("hour", day)
            return n, aggregate.spend_payload(aggregate.spend_today(rows, load_prices(), day, t))

        async def settled() -> None:
            deadline = time.monotonic() + WAIT_S
            while True:
                n, spend = await expected()
                got = hub.spend.doc(datetime.now(UTC))
                if len(hub.kpis) == n and got["total_usd"] == pytest.approx(spend["total_usd"]):
                    return
                assert time.monotonic() < deadline, (len(hub.kpis), n, got, spend)
                await asyncio.sleep(0.05)

        await settled()
        hub._fail(ConnectionError("simulated"))  # what a failed read does: the next round re-seeds
        await insert(engine, [make_record(started_at=datetime.now(UTC)) for _ in range(2)])
        await settled()
        assert not hub._reseed
    finally:
        await hub.stop()
        await engine.dispose()


async def test_hostile_hellos_and_rows_get_clear_answers(live: LiveServer) -> None:
    """A "since" or event id out of any range is ignored (the newest rows come back, no crash); a 100 KB
    model name and a long Chinese prompt travel as short cells; the feed keeps pushing after them."""
    assert feed.since_ms(1e308) is None and feed.since_ms("abc") is None and feed.since_ms(-1) is None
    assert feed.since_ms(1.7e12) == 1.7e12
    assert feed.event_id(10**30) is None and feed.event_id(True) is None and feed.event_id(-1) is None
    assert feed.event_id(42) == 42
    async with feed_socket(live, hello={"since": 1e308, "last_event_id": 10**30}) as ws:
        await receive(ws, "ready")
        assert isinstance((await receive(ws, "backfill"))["rows"], list)
        now = datetime.now(UTC)
        zh = "请帮我写一篇关于城市可持续发展的长文章，包括交通、能源和住房。" * 400
        recs = [
            make_record(started_at=now, model="x" * 100_000, prompt_user="y" * 100_000),
            make_record(started_at=now, model="模型-中文-" * 50, prompt_user=zh),
        ]
        await insert(live.engine, recs)
        got = await rows_until(ws, {r.request_id for r in recs})
        for r in recs:
            row = got[r.request_id]
            assert len(row["model"]) == rows_module.TEXT_MAX and len(row["prompt"]) <= rows_module.PROMPT_PREVIEW
        assert got[recs[1].request_id]["prompt"].startswith("请帮我写")
        after = make_record(started_at=datetime.now(UTC))
        await insert(live.engine, [after])
        assert after.request_id in await rows_until(ws, {after.request_id})
