"""WatchEvents over real gRPC and a real database: live events, exchanges, since_id replay,
kind filters, the polling fallback and `llmproxy tail --control`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest

from intelligence.access import AccessSettings
from intelligence.control.gen import control_pb2 as pb
from intelligence.control.gen import control_pb2_grpc as pb_grpc
from intelligence.control.server import ControlServer
from intelligence.events import publish
from intelligence.records import ExchangeRecord
from intelligence.store.repositories import ExchangeRepository
from tests.intelligence.factories import make_record

OPEN = AccessSettings(secret_key=None)  # loopback without SECRET_KEY: the local operator
WAIT = 10.0


async def start_server(engine, **kw) -> ControlServer:
    srv = ControlServer(engine, OPEN, "127.0.0.1", 0, **kw)
    await srv.start()
    await asyncio.wait_for(srv.hub.ready.wait(), WAIT)
    return srv


@pytest.fixture
async def server(migrated_db) -> AsyncIterator[ControlServer]:
    srv = await start_server(migrated_db.engine)
    yield srv
    await srv.stop()


@pytest.fixture
async def stub(server: ControlServer) -> AsyncIterator[pb_grpc.ControlStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield pb_grpc.ControlStub(channel)


async def add_event(engine, kind: str = "alert", title: str = "t") -> int:
    async with engine.begin() as conn:
        return await publish(conn, kind=kind, title=title, severity="warning", subject="key:1", detail={"n": 1}, source="test")


async def add_exchange(engine) -> ExchangeRecord:
    record = make_record()
    async with engine.begin() as conn:
        await ExchangeRepository(conn).insert_batch([record])
    return record


async def subscribed(server: ControlServer, n: int = 1) -> None:
    async def wait() -> None:
        while server.hub.subscribers < n:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), WAIT)


async def next_item(stream) -> pb.WatchEventsResponse:
    return await asyncio.wait_for(stream.read(), WAIT)


async def test_event_and_exchange_published_after_subscribing_arrive(stub, server, migrated_db) -> None:
    stream = stub.WatchEvents(pb.WatchEventsRequest())
    await subscribed(server)
    event_id = await add_event(migrated_db.engine, title="spend spike")
    got = await next_item(stream)
    assert got.WhichOneof("item") == "event"
    assert (got.event.id, got.event.kind, got.event.title, got.event.severity) == (event_id, "alert", "spend spike", "warning")
    assert json.loads(got.event.detail_json) == {"n": 1}

    record = await add_exchange(migrated_db.engine)
    got = await next_item(stream)
    assert got.WhichOneof("item") == "exchange"
    ex = got.exchange
    assert (ex.request_id, ex.status, ex.model, ex.input_tokens, ex.history) == (record.request_id, 200, "gpt-4o-mini", 12, False)
    assert ex.record_json == ""  # bodies only on request
    stream.cancel()


async def test_since_id_replays_missed_events_then_goes_live(stub, server, migrated_db) -> None:
    engine = migrated_db.engine
    first = await add_event(engine, title="one")
    second = await add_event(engine, title="two")
    third = await add_event(engine, kind="verdict", title="three")
    stream = stub.WatchEvents(pb.WatchEventsRequest(since_id=first))
    assert [(await next_item(stream)).event.id for _ in range(2)] == [second, third]
    await subscribed(server)
    fourth = await add_event(engine, title="four")
    assert (await next_item(stream)).event.id == fourth  # no duplicate of the replayed rows
    stream.cancel()


async def test_kinds_filter_and_bodies(stub, server, migrated_db) -> None:
    engine = migrated_db.engine
    only_exchanges = stub.WatchEvents(pb.WatchEventsRequest(kinds=["exchange"], include_bodies=True))
    only_verdicts = stub.WatchEvents(pb.WatchEventsRequest(kinds=["verdict"]))
    await subscribed(server, 2)
    await add_event(engine, kind="alert")
    verdict_id = await add_event(engine, kind="verdict")
    record = await add_exchange(engine)
    got = await next_item(only_exchanges)
    assert got.exchange.request_id == record.request_id
    assert ExchangeRecord.from_json(got.exchange.record_json).request_client == record.request_client
    got = await next_item(only_verdicts)
    assert got.event.id == verdict_id
    only_exchanges.cancel()
    only_verdicts.cancel()


async def test_exchange_history_comes_first_and_is_marked(stub, server, migrated_db) -> None:
    older = [await add_exchange(migrated_db.engine) for _ in range(3)]
    stream = stub.WatchEvents(pb.WatchEventsRequest(kinds=["exchange"], exchange_history=2))
    got = [(await next_item(stream)).exchange for _ in range(2)]
    assert [(g.request_id, g.history) for g in got] == [(older[1].request_id, True), (older[2].request_id, True)]
    stream.cancel()


async def test_polling_fallback_without_listen(migrated_db) -> None:
    engine = migrated_db.engine
    srv = await start_server(engine, listen=False, poll_interval=0.1)
    try:
        assert not srv.hub.listening
        async with grpc.aio.insecure_channel(srv.address) as channel:
            stream = pb_grpc.ControlStub(channel).WatchEvents(pb.WatchEventsRequest())
            await subscribed(srv)
            event_id = await add_event(engine)
            record = await add_exchange(engine)
            items = [await next_item(stream) for _ in range(2)]
            assert {i.WhichOneof("item") for i in items} == {"event", "exchange"}
            assert {i.event.id for i in items if i.HasField("event")} == {event_id}
            assert {i.exchange.request_id for i in items if i.HasField("exchange")} == {record.request_id}
            stream.cancel()
        assert srv.hub.stats.polls > 0 and srv.hub.stats.notifications == 0
    finally:
        await srv.stop()


async def test_listen_is_used_when_available(server, stub, migrated_db) -> None:
    assert server.hub.listening
    stream = stub.WatchEvents(pb.WatchEventsRequest())
    await subscribed(server)
    await add_event(migrated_db.engine)
    await next_item(stream)
    assert server.hub.stats.notifications >= 1
    stream.cancel()


async def test_tail_over_the_control_api_prints_like_the_database_path(server, migrated_db, capsys) -> None:
    from extproc.cli import main
    from extproc.cli.tail import render

    old = await add_exchange(migrated_db.engine)

    def tail() -> None:
        with pytest.raises(SystemExit) as exc:
            main(["tail", "--control", server.address, "--history", "1", "--count", "1", "--tools", "none"])
        assert exc.value.code == 0

    task = asyncio.create_task(asyncio.to_thread(tail))
    await subscribed(server)
    new = await add_exchange(migrated_db.engine)
    await asyncio.wait_for(task, WAIT)
    out = capsys.readouterr().out
    expected = render(old, tools="none") + "\n" + render(new, tools="none") + "\n"
    assert out == expected
