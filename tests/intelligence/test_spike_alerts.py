"""Fleet error-rate and latency spikes become live alerts, once per incident, and say when they end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

from intelligence.events.spikes import SpikeMonitor, SpikeThresholds
from intelligence.store.repositories import ExchangeRepository

from .factories import make_record


async def _add(engine, n: int, *, status: int = 200, latency_ms: float = 100.0, ago_s: float = 10.0) -> None:
    started = datetime.now(UTC) - timedelta(seconds=ago_s)
    records = [
        make_record(started_at=started, status=status, latency_ms=latency_ms, error=None if status < 400 else f"HTTP {status}")
        for _ in range(n)
    ]
    async with async_sessionmaker(engine)() as session, session.begin():
        await ExchangeRepository(session).insert_batch(records)


async def _spikes(engine) -> list[tuple[str, str, str]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT severity, subject, title FROM events WHERE kind = 'spike' ORDER BY id"))).all()
    return [tuple(r) for r in rows]


async def test_error_spike_alerts_once_then_recovers(migrated_db) -> None:
    now = [0.0]
    monitor = SpikeMonitor(
        migrated_db.engine, SpikeThresholds(error_rate=0.2, min_requests=10, cooldown_s=600), clock=lambda: now[0]
    )
    await _add(migrated_db.engine, 5, status=500)
    assert (await monitor.tick())["alerts"] == []  # too few requests to say anything
    await _add(migrated_db.engine, 10)
    summary = await monitor.tick()  # 5 errors in 15 = 33%
    assert summary["alerts"] == ["error_rate"] and summary["error_rate"] == pytest.approx(1 / 3)
    now[0] = 60
    assert (await monitor.tick())["alerts"] == []  # same incident, inside the cooldown: no second toast
    now[0] = 700
    assert (await monitor.tick())["alerts"] == ["error_rate"]  # still going after the cooldown: remind
    await _add(migrated_db.engine, 40)  # 5 in 55 = 9%
    assert (await monitor.tick())["alerts"] == ["error_rate:recovered"]
    spikes = await _spikes(migrated_db.engine)
    assert [s[:2] for s in spikes] == [("warning", "error_rate"), ("warning", "error_rate"), ("info", "error_rate")]
    assert "33%" in spikes[0][2] and "threshold 20%" in spikes[0][2]


async def test_latency_spike_and_window(migrated_db) -> None:
    monitor = SpikeMonitor(migrated_db.engine, SpikeThresholds(p95_latency_ms=2000, min_requests=10, window_s=300))
    await _add(migrated_db.engine, 30, latency_ms=9000, ago_s=900)  # slow, but outside the window
    await _add(migrated_db.engine, 20, latency_ms=150)
    assert (await monitor.tick())["alerts"] == []
    await _add(migrated_db.engine, 5, latency_ms=6000)
    summary = await monitor.tick()
    assert summary["alerts"] == ["p95_latency"] and summary["p95_latency_ms"] > 2000


def test_thresholds_from_env_are_validated() -> None:
    t = SpikeThresholds.from_env({"LLMPROXY_ALERT_ERROR_RATE": "0.05", "LLMPROXY_ALERT_P95_LATENCY_MS": "800"})
    assert (t.error_rate, t.p95_latency_ms) == (0.05, 800.0)
    with pytest.raises(ValueError):
        SpikeThresholds.from_env({"LLMPROXY_ALERT_ERROR_RATE": "3"})
