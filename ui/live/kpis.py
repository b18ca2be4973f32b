"""The live KPI tiles' numbers, kept in memory by the feed from the rows it pushes anyway (and the spend tile's,
from the hourly rollups).

The window is the last ``minutes`` minutes of exchanges by start time (the same definition as
``AnalyticsRepository.live_buckets``, which the page's first render uses): request rate, error rate,
exact p50/p95 latency (linear interpolation, like ``percentile_cont``) overall and per ``bucket_s``
bucket. Seeded once from the database (``LiveRepository.window``), then every pushed row is added; a
row that started long ago but finished now lands in its own bucket, as a fresh query would place it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from intelligence.dashboard.live import SpendGroup, WindowSample
from intelligence.pricing import PriceTable, costs

NO_DATA = None  # a statistic of zero samples: the browser shows "no data yet"


class KpiWindow:
    def __init__(self, minutes: int = 15, bucket_s: int = 60) -> None:
        self.minutes = minutes
        self.bucket_s = bucket_s
        # in arrival order, which is nearly start order: pruned from the left, masked by start time
        self._t: deque[float] = deque()
        self._latency: deque[float] = deque()  # NaN when unusable
        self._error: deque[bool] = deque()
        self.version = 0  # moves with every change (the feed publishes only when it moved or time passed)

    @property
    def span_s(self) -> float:
        return self.minutes * 60.0

    def seed(self, samples: Iterable[WindowSample]) -> None:
        self._t, self._latency, self._error = deque(), deque(), deque()
        for s in sorted(samples, key=lambda s: s.started):
            self._append(s.started, s.latency_ms, s.error)
        self.version += 1

    def add(self, started: float, latency_ms: float | None, error: bool) -> None:
        self._append(started, latency_ms, error)
        self.version += 1

    def _append(self, started: float, latency_ms: float | None, error: bool) -> None:
        self._t.append(float(started))
        ok = latency_ms is not None and math.isfinite(latency_ms) and 0 <= latency_ms < 1e9
        self._latency.append(float(latency_ms) if ok and latency_ms is not None else math.nan)
        self._error.append(bool(error))

    def _prune(self, since: float) -> None:
        while self._t and self._t[0] < since:
            self._t.popleft()
            self._latency.popleft()
            self._error.popleft()

    def __len__(self) -> int:
        return len(self._t)

    def snapshot(self, now: float) -> dict[str, Any]:
        """The tiles' values and per-bucket series (every bucket of the window, zeros filled)."""
        return self.freeze(now).compute()

    def freeze(self, now: float) -> FrozenWindow:
        """A copy of the window as of ``now`` (cheap: three list copies); :meth:`FrozenWindow.compute` does the
        arithmetic, in another thread if need be, while this window keeps taking rows."""
        self._prune(now - self.span_s)
        return FrozenWindow(self.minutes, self.bucket_s, now, list(self._t), list(self._latency), list(self._error))


@dataclass(frozen=True)
class FrozenWindow:
    minutes: int
    bucket_s: int
    now: float
    started: list[float]
    latency: list[float]
    error: list[bool]

    def compute(self) -> dict[str, Any]:
        now, span = self.now, self.minutes * 60.0
        since = now - span
        t = np.asarray(self.started, dtype=np.float64)
        keep = t >= since  # a late row that started before the window, stuck behind newer ones
        t = t[keep]
        lat = np.asarray(self.latency, dtype=np.float64)[keep]
        err = np.asarray(self.error, dtype=bool)[keep]
        start = math.floor(since / self.bucket_s) * self.bucket_s
        edges = np.arange(start, now, self.bucket_s, dtype=np.float64)
        n_buckets = len(edges)
        idx = np.floor((t - start) / self.bucket_s).astype(np.int64)
        inside = idx < n_buckets  # started after "now" (clock skew): counted, in no bucket
        counts = np.bincount(idx[inside], minlength=n_buckets)[:n_buckets]
        errors = np.bincount(idx[inside], weights=err[inside], minlength=n_buckets)[:n_buckets]
        usable = ~np.isnan(lat)
        order = np.argsort(idx[inside & usable], kind="stable")
        by_bucket = lat[inside & usable][order]
        bounds = np.searchsorted(idx[inside & usable][order], np.arange(n_buckets + 1))
        p50: list[float | None] = []
        p95: list[float | None] = []
        for b in range(n_buckets):
            lo, hi = _q2(by_bucket[bounds[b] : bounds[b + 1]])
            p50.append(lo)
            p95.append(hi)
        n = int(len(t))
        whole50, whole95 = _q2(lat[usable])
        return {
            "window_minutes": self.minutes,
            "requests": n,
            "req_per_s": n / span,
            "error_rate": (float(err.sum()) / n) if n else NO_DATA,
            "p50_ms": whole50,
            "p95_ms": whole95,
            "series": {
                "t": [float(e) * 1000.0 for e in edges],
                "req_per_s": [float(c) / self.bucket_s for c in counts],
                "error_rate": [float(e) / float(c) if c else 0.0 for e, c in zip(errors, counts)],
                "p50_ms": p50,
                "p95_ms": p95,
            },
        }


def _q2(values: np.ndarray) -> tuple[float | None, float | None]:
    """p50 and p95 with linear interpolation (what percentile_cont computes); None, None of nothing."""
    if not len(values):
        return NO_DATA, NO_DATA
    p50, p95 = np.percentile(values, [50, 95])
    return float(p50), float(p95)


def kpis_from_buckets(window_minutes: int, bucket_s: int, buckets: list[Any], now: float) -> dict[str, Any]:
    """The same dictionary from ``AnalyticsRepository.live_buckets`` rows (the page's first render)."""
    whole = buckets[0] if buckets and buckets[0].bucket is None else None
    per = {b.bucket.timestamp(): b for b in buckets if b.bucket is not None}
    since = now - window_minutes * 60
    start = math.floor(since / bucket_s) * bucket_s
    edges = np.arange(start, now, bucket_s, dtype=np.float64)
    series: dict[str, list[Any]] = {"t": [], "req_per_s": [], "error_rate": [], "p50_ms": [], "p95_ms": []}
    for e in edges:
        b = per.get(float(e))
        series["t"].append(float(e) * 1000.0)
        series["req_per_s"].append((b.n / bucket_s) if b else 0.0)
        series["error_rate"].append((b.errors / b.n) if b and b.n else 0.0)
        series["p50_ms"].append(_f(b.p50_ms) if b else NO_DATA)
        series["p95_ms"].append(_f(b.p95_ms) if b else NO_DATA)
    n = whole.n if whole else 0
    return {
        "window_minutes": window_minutes,
        "requests": n,
        "req_per_s": n / (window_minutes * 60),
        "error_rate": (whole.errors / n) if whole and n else NO_DATA,
        "p50_ms": _f(whole.p50_ms) if whole else NO_DATA,
        "p95_ms": _f(whole.p95_ms) if whole else NO_DATA,
        "series": series,
    }


def _f(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


MAX_TOKENS = 1_000_000_000  # per exchange, as the rollups clean it (llmproxy_tokens, migration 0003): larger is garbage


def _tokens(v: int | None) -> int:
    return int(v) if v is not None and 0 <= v <= MAX_TOKENS else 0


class SpendTally:
    """Today's spend per hour for the spend tile: seeded once from the hourly rollups
    (:meth:`LiveRepository.spend_groups`), then fed every exchange the feed publishes, priced the way the
    rollups are (per model and day, tokens cleaned alike). Reading it costs the hours of one day, not the
    day's traffic: re-reading the rollups every few seconds grew with every distinct model and client of the
    day, and a client that names a new model per request made that read, on the feed's event loop, the
    Live page's bottleneck."""

    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices
        self._cost: dict[int, float] = {}  # hour (epoch seconds // 3600) -> USD
        self._unpriced: dict[int, int] = {}  # hour -> exchanges of models without a price

    def seed(self, groups: Iterable[SpendGroup]) -> None:
        groups = list(groups)
        priced = costs(
            self.prices,
            (
                (g.model or None, g.api or None, g.bucket, g.input_tokens, g.output_tokens, g.cached_tokens, g.reasoning_tokens)
                for g in groups
            ),
        )
        self._cost, self._unpriced = {}, {}
        for g, cost in zip(groups, priced, strict=True):
            self._count(int(g.bucket.timestamp() // 3600), cost, g.n)

    def add(
        self,
        started: datetime,
        model: str | None,
        api: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        cached_tokens: int | None,
        reasoning_tokens: int | None,
    ) -> None:
        (cost,) = costs(
            self.prices,
            [
                (
                    model or None,
                    api or None,
                    started,
                    _tokens(input_tokens),
                    _tokens(output_tokens),
                    _tokens(cached_tokens),
                    _tokens(reasoning_tokens),
                )
            ],
        )
        self._count(int(started.timestamp() // 3600), cost, 1)

    def _count(self, hour: int, cost: float | None, n: int) -> None:
        if cost is None:
            self._unpriced[hour] = self._unpriced.get(hour, 0) + n
        else:
            self._cost[hour] = self._cost.get(hour, 0.0) + cost

    def doc(self, now: datetime) -> dict[str, Any]:
        """The tile as the page computes it (``ui.aggregate.spend_payload``): every hour since 00:00 UTC up to
        ``now``'s; yesterday's hours are dropped here, so the tally starts each day at zero by itself."""
        first = int(now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() // 3600)
        current = int(now.timestamp() // 3600)
        for table in (self._cost, self._unpriced):
            for hour in [h for h in table if h < first]:
                del table[hour]
        hourly = [self._cost.get(h, 0.0) for h in range(first, current + 1)]
        return {"total_usd": float(sum(hourly)), "unpriced_requests": sum(self._unpriced.values()), "hourly": hourly}
