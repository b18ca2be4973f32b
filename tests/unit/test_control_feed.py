"""The WatchEvents fan-out queue: bounded, drop-oldest, gap marker, kind filter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from intelligence.control.watch import EventHub, EventItem, GapItem

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def ev(i: int, kind: str = "alert") -> EventItem:
    return EventItem(id=i, at=NOW, kind=kind, severity="info", title=f"e{i}", subject="", detail={}, source="t")


async def test_slow_subscriber_drops_oldest_and_gets_a_gap_marker() -> None:
    hub = EventHub(None, queue_size=3)  # type: ignore[arg-type]
    slow = hub.subscribe()
    fast = hub.subscribe()
    for i in range(1, 6):
        hub._fan_out(ev(i))
        assert await fast.get() == ev(i)
    got = [await slow.get() for _ in range(4)]
    assert got == [GapItem(2), ev(3), ev(4), ev(5)]
    hub._fan_out(ev(6))
    assert await slow.get() == ev(6)  # the gap is reported once


async def test_kind_filter_and_unsubscribe() -> None:
    hub = EventHub(None, queue_size=10)  # type: ignore[arg-type]
    with hub.subscribe(["verdict"]) as sub:
        assert hub.subscribers == 1
        hub._fan_out(ev(1, "alert"))
        hub._fan_out(ev(2, "verdict"))
        assert await sub.get() == ev(2, "verdict")
        waiting = asyncio.create_task(sub.get())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        hub._fan_out(ev(3, "verdict"))
        assert await asyncio.wait_for(waiting, 1) == ev(3, "verdict")
    assert hub.subscribers == 0


async def test_duplicates_from_listen_and_catch_up_poll_are_sent_once() -> None:
    hub = EventHub(None, queue_size=10)  # type: ignore[arg-type]
    sub = hub.subscribe()
    hub._publish_events([ev(1), ev(2)])
    hub._publish_events([ev(2), ev(3)])
    assert [await sub.get() for _ in range(3)] == [ev(1), ev(2), ev(3)]
    assert hub.stats.events == 3
