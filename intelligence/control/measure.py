"""``python -m intelligence.control.measure --database-url URL``: WatchEvents delivery latency.

Starts a ControlServer on 127.0.0.1:0 against the (migrated) database, opens ``--subscribers``
WatchEvents streams, commits ``--events`` events rows one by one and reports the time from each
commit to its arrival at every subscriber (p50/p95/max), for LISTEN and for the polling fallback.
It writes real rows (kind ``measure``) into the events table: point it at a scratch database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import grpc

from intelligence.access import AccessSettings
from intelligence.events import publish

from .gen import control_pb2 as pb
from .gen import control_pb2_grpc as pb_grpc
from .server import ControlServer

KIND = "measure"


async def measure(url: str, *, events: int, subscribers: int, listen: bool, poll_interval: float) -> dict[str, float]:
    from intelligence.store.engine import make_engine

    engine = make_engine(url)
    server = ControlServer(engine, AccessSettings(secret_key=None), "127.0.0.1", 0, listen=listen, poll_interval=poll_interval)
    await server.start()
    await server.hub.ready.wait()
    latencies: list[float] = []
    sent: dict[int, float] = {}
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.ControlStub(channel)
            streams = [stub.WatchEvents(pb.WatchEventsRequest(kinds=[KIND])) for _ in range(subscribers)]
            while server.hub.subscribers < subscribers:  # noqa: ASYNC110 - the hub has no event for this count
                await asyncio.sleep(0.01)

            async def drain(stream) -> None:
                for _ in range(events):
                    item = await stream.read()
                    latencies.append((time.perf_counter() - sent[item.event.id]) * 1000)

            readers = [asyncio.create_task(drain(s)) for s in streams]
            for i in range(events):
                async with engine.begin() as conn:
                    event_id = await publish(conn, kind=KIND, title=f"measure {i}", source="measure")
                    sent[event_id] = time.perf_counter()  # just before COMMIT; NOTIFY is sent at commit
                await asyncio.sleep(0.005)
            await asyncio.wait_for(asyncio.gather(*readers), 60)
            for s in streams:
                s.cancel()
    finally:
        await server.stop()
        await engine.dispose()
    latencies.sort()
    return {
        "mode": "listen" if listen else f"poll {poll_interval}s",
        "events": events,
        "subscribers": subscribers,
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
        "max_ms": round(latencies[-1], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m intelligence.control.measure", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--subscribers", type=int, default=4)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    args = parser.parse_args(argv)
    for listen in (True, False):
        result = asyncio.run(
            measure(
                args.database_url,
                events=args.events,
                subscribers=args.subscribers,
                listen=listen,
                poll_interval=args.poll_interval,
            )
        )
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
