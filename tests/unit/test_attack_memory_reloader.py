"""NotifyReloader's loop without a database: poll rounds, wake-ups, failures counted and logged once."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from intelligence.store.listen import NotifyReloader


async def _until(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_polls_counts_failures_once_per_outage_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    outage = {"on": True}
    calls: list[float] = []

    async def reload() -> None:
        calls.append(time.monotonic())
        if outage["on"]:
            raise ConnectionError("database down")

    stats = {"swaps": 7}
    reloader = NotifyReloader(
        None,
        "chan",
        reload,
        poll_interval=0.02,
        listen=False,
        what="things",  # type: ignore[arg-type]
        stats=stats,
        failures_key="db_failures",
        keeping=lambda: "keeping version 3",
    )
    with caplog.at_level(logging.WARNING, logger="llmproxy.store.listen"):
        await reloader.start(not_loaded="running without")
        await _until(lambda: stats["db_failures"] >= 4)
        outage["on"] = False
        n = len(calls)
        await _until(lambda: len(calls) >= n + 2)
        failures = stats["db_failures"]
        await asyncio.sleep(0.1)
        assert stats["db_failures"] == failures  # recovered: no more failures
        await reloader.stop()
    assert not reloader.running and stats["swaps"] == 7 and stats["notifications"] == 0
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "things not loaded yet (database down); running without"
    # one line for the outage seen by the loop, not one per failed round
    assert messages[1:] == ["reloading things failed (database down); keeping version 3"]


async def test_wake_reloads_before_the_poll_interval() -> None:
    calls = 0

    async def reload() -> None:
        nonlocal calls
        calls += 1

    reloader = NotifyReloader(None, "chan", reload, poll_interval=60.0, listen=False)  # type: ignore[arg-type]
    await reloader.start()
    try:
        assert calls == 1
        reloader.wake()
        await _until(lambda: calls == 2, 2.0)
    finally:
        await reloader.stop()
    calls_at_stop = calls
    await asyncio.sleep(0.05)
    assert calls == calls_at_stop and not reloader.running
