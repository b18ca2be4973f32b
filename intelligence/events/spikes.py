"""Fleet-wide error-rate and latency spikes, raised as live alerts against configurable thresholds.

Every ``interval_s`` the monitor looks at the exchanges that started in the last ``window_s``
(indexed by started_at) and compares the error rate (``error IS NOT NULL OR status >= 400``, the
dashboard's definition) and the p95 latency with their thresholds. A condition alerts once when it
starts, again only after ``cooldown_s`` while it lasts, and once more ("recovered", info) when it
ends, so a long incident is not a flood of toasts. Too few requests in the window say nothing.

Per-client changes (one client's volume, tokens or errors against its own past) are the anomaly
job's business (intelligence/anomaly); this is the operator's "is the gateway healthy" signal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from . import publish

log = logging.getLogger("llmproxy.spikes")

_WINDOW_STATS = text(
    "SELECT count(*) AS n, count(*) FILTER (WHERE error IS NOT NULL OR status >= 400) AS errors, "
    "percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95 "
    "FROM exchanges WHERE started_at >= now() - make_interval(secs => :window)"
)


@dataclass(frozen=True, slots=True)
class SpikeThresholds:
    error_rate: float = 0.2  # fraction of requests in the window
    p95_latency_ms: float = 30_000.0
    min_requests: int = 20
    window_s: float = 300.0
    cooldown_s: float = 1800.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SpikeThresholds:
        env = dict(os.environ) if env is None else env
        d = cls()
        t = cls(
            error_rate=float(env.get("LLMPROXY_ALERT_ERROR_RATE") or d.error_rate),
            p95_latency_ms=float(env.get("LLMPROXY_ALERT_P95_LATENCY_MS") or d.p95_latency_ms),
            min_requests=int(env.get("LLMPROXY_ALERT_MIN_REQUESTS") or d.min_requests),
            window_s=float(env.get("LLMPROXY_ALERT_WINDOW_S") or d.window_s),
            cooldown_s=float(env.get("LLMPROXY_ALERT_COOLDOWN_S") or d.cooldown_s),
        )
        if not 0 < t.error_rate <= 1 or t.p95_latency_ms <= 0 or t.min_requests < 1 or t.window_s <= 0:
            raise ValueError(f"invalid spike thresholds: {t}")
        return t


@dataclass
class _Condition:
    active: bool = False
    last_alert: float = float("-inf")


@dataclass
class SpikeMonitor:
    engine: AsyncEngine
    thresholds: SpikeThresholds = field(default_factory=SpikeThresholds)
    interval_s: float = 30.0
    clock: Any = time.monotonic
    _state: dict[str, _Condition] = field(default_factory=lambda: {"error_rate": _Condition(), "p95_latency": _Condition()})

    async def tick(self) -> dict[str, Any]:
        t = self.thresholds
        async with self.engine.begin() as conn:
            row = (await conn.execute(_WINDOW_STATS, {"window": t.window_s})).mappings().one()
            n, errors, p95 = int(row["n"]), int(row["errors"]), row["p95"]
            summary: dict[str, Any] = {"n": n, "error_rate": errors / n if n else None, "p95_latency_ms": p95, "alerts": []}
            if n < t.min_requests:
                return summary
            observed = {"error_rate": errors / n, "p95_latency": float(p95) if p95 is not None else 0.0}
            limits = {"error_rate": t.error_rate, "p95_latency": t.p95_latency_ms}
            for name, value in observed.items():
                cond = self._state[name]
                over = value > limits[name]
                now = self.clock()
                detail = {
                    "metric": name,
                    "value": value,
                    "threshold": limits[name],
                    "requests": n,
                    "errors": errors,
                    "window_s": t.window_s,
                }
                if over and (not cond.active or now - cond.last_alert >= t.cooldown_s):
                    await publish(
                        conn,
                        kind="spike",
                        severity="warning",
                        subject=name,
                        source="intelligence",
                        title=_title(name, value, limits[name], t.window_s),
                        detail=detail,
                    )
                    cond.last_alert = now
                    summary["alerts"].append(name)
                elif not over and cond.active:
                    await publish(
                        conn,
                        kind="spike",
                        severity="info",
                        subject=name,
                        source="intelligence",
                        title=f"{_label(name)} back under its threshold",
                        detail=detail,
                    )
                    summary["alerts"].append(f"{name}:recovered")
                cond.active = over
        return summary

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:  # the database may be away: try again next interval
                log.warning("spike check failed", exc_info=True)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass


def _label(name: str) -> str:
    return {"error_rate": "error rate", "p95_latency": "p95 latency"}[name]


def _title(name: str, value: float, limit: float, window_s: float) -> str:
    minutes = f"{window_s / 60:g} min"
    if name == "error_rate":
        return f"error rate {value:.0%} over the last {minutes} (threshold {limit:.0%})"
    return f"p95 latency {value:,.0f} ms over the last {minutes} (threshold {limit:,.0f} ms)"
