"""Policy throttle windows shared by every gateway replica, with no database on the request path.

Each replica counts its own admissions per (rule, subject, UTC minute) in memory. A background task
adds them to ``policy_throttle_counts`` about once a second and reads back the minute's totals of
all replicas (its own included). The request path asks :meth:`SharedThrottleCounts.used`:
last totals read + what this replica admitted since (unflushed or being flushed), a dict lookup.

Between two reads a replica cannot see what the others admit, so with the live-replica count known
(``replicas``: a heartbeat after each flush) it admits at most its fair share of what is left until
its next read (intelligence/store/replicas.py, ``ShareBook``): N replicas hit at full speed as a
minute opens stay within the limit plus rounding instead of each spending its whole burst.

When the database is unreachable the counts stay in memory (only the current and previous minute:
older ones can no longer change a decision) and go out with the next flush that succeeds; meanwhile
each replica enforces with its own counts plus the last totals it read for the current minute, and
(the live-replica count expiring after ~10 s) without shares.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.store.periodic import PeriodicFlush
from intelligence.store.replicas import LiveReplicas, ShareBook

from .counts import DbWindowStore, Subject, WindowDelta, window_of

log = logging.getLogger("llmproxy.policy.throttle")

MINUTE = timedelta(minutes=1)


class WindowStore(Protocol):
    async def exchange(self, deltas: list[WindowDelta], window: datetime) -> dict[Subject, int]: ...

    async def prune(self, before: datetime) -> int: ...


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime  # UTC minute
    seconds_left: float  # until the next minute starts


_Counts = dict[datetime, dict[Subject, int]]  # window start -> (rule, subject) -> admissions

# "full": the minute's limit is reached; "share": this replica's share until its next read is spent
Refusal = Literal["full", "share"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SharedThrottleCounts:
    """Fixed one-minute admission counts per (rule, subject), summed over replicas via ``store``."""

    def __init__(
        self,
        store: WindowStore,
        *,
        flush_interval: float = 1.0,
        flush_timeout: float = 10.0,
        clock: Callable[[], datetime] = _utcnow,
        keep: timedelta = timedelta(minutes=2),
        prune_interval: float = 60.0,
        replicas: LiveReplicas | None = None,
        share_horizon: timedelta | None = None,
    ):
        self.store = store
        self.replicas = replicas  # None: no shares, each replica may spend all that is left (as without a count)
        self.flush_interval = flush_interval
        self.flush_timeout = flush_timeout
        self.clock = clock
        self.keep = keep
        self.prune_interval = prune_interval
        self.stats = {"flushes": 0, "failures": 0, "pruned": 0, "dropped": 0}
        self._pending: _Counts = {}
        self._inflight: _Counts = {}
        self._totals: dict[Subject, int] = {}
        self._totals_window: datetime | None = None
        self._lock = asyncio.Lock()
        self._loop = PeriodicFlush(
            self.flush,
            interval=flush_interval,
            name="policy-throttle-counts",
            log=log,
            stats=self.stats,
            failing="sharing policy throttle counts failed (%s); each replica enforces with its "
            "own counts until the database is back",
            recovered="policy throttle counts shared again after %d failed flushes",
        )
        self._last_prune: datetime | None = None
        self._reads = 0  # successful reads of the totals: a share is computed once per read
        # a share must outlive the gap between any replica's two reads: two and a half flush intervals
        self.shares = ShareBook(share_horizon or timedelta(seconds=2.5 * flush_interval))

    @classmethod
    def from_engine(cls, engine: AsyncEngine, **options: Any) -> SharedThrottleCounts:
        """Counts in ``policy_throttle_counts``; with shares unless ``replicas=None`` is passed."""
        options.setdefault("replicas", LiveReplicas.from_engine(engine))
        return cls(DbWindowStore(engine), **options)

    # -- hot path (synchronous, no I/O) --------------------------------------------------------
    def window(self) -> Window:
        now = self.clock()
        start = window_of(now)
        return Window(start, (start + MINUTE - now).total_seconds())

    def used(self, rule: str, subject: str, window: datetime) -> int:
        """Admissions in ``window`` over all replicas, as far as this one knows."""
        key = (rule, subject)
        n = self._totals.get(key, 0) if self._totals_window == window else 0
        for local in (self._pending.get(window), self._inflight.get(window)):
            if local:
                n += local.get(key, 0)
        return n

    def refusal(self, rule: str, subject: str, window: datetime, limit: int) -> Refusal | None:
        """Why one more admission of (rule, subject) in ``window`` must wait, or None if it may go."""
        key = (rule, subject)
        read = self._totals_window == window
        total = self._totals.get(key, 0) if read else 0
        mine = 0
        for local in (self._pending.get(window), self._inflight.get(window)):
            if local:
                mine += local.get(key, 0)
        if total + mine >= limit:
            return "full"
        if self.replicas is None:
            return None
        now = self.clock()
        n = self.replicas.count(now)
        if n is None:
            return None  # live replicas unknown (database down, just started): as if alone, documented
        allowance = self.shares.allowance(
            (rule, subject, window),
            window_start=window,
            now=now,
            limit=limit,
            replicas=n,
            total=total if read else None,
            read=self._reads if read else None,
        )
        return "share" if mine >= allowance else None

    def add(self, rule: str, subject: str, window: datetime) -> None:
        counts = self._pending.setdefault(window, {})
        counts[(rule, subject)] = counts.get((rule, subject), 0) + 1

    def unflushed(self) -> int:
        return sum(n for local in (self._pending, self._inflight) for counts in local.values() for n in counts.values())

    # -- background ----------------------------------------------------------------------------
    async def flush(self) -> None:
        """Send local counts, read the current minute's totals back; raises (counts kept) on failure."""
        async with self._lock:
            self._inflight, self._pending = self._pending, {}
            now = self.clock()
            window = window_of(now)
            deltas = [
                WindowDelta(rule, subject, start, n)
                for start, counts in self._inflight.items()
                for (rule, subject), n in counts.items()
            ]
            try:
                async with asyncio.timeout(self.flush_timeout):
                    totals = await self.store.exchange(deltas, window)
            except BaseException:
                self._merge_back(window)
                raise
            # no await from here on: a request sees either inflight + old totals or the new totals
            self._totals, self._totals_window = totals, window
            self._inflight = {}
            self._reads += 1
            self.stats["flushes"] += 1
            self.shares.forget_before(window)
        if self.replicas is not None:
            await self.replicas.beat(now)
        if self._last_prune is None or (now - self._last_prune).total_seconds() >= self.prune_interval:
            self._last_prune = now
            try:
                self.stats["pruned"] += await self.store.prune(now - self.keep)
            except Exception as exc:  # noqa: BLE001 - old rows only cost space; the next prune retries
                log.debug("pruning policy throttle counts failed: %s", exc)

    def _merge_back(self, window: datetime) -> None:
        oldest = window - MINUTE  # earlier minutes can no longer change a decision: keep memory bounded
        for start, counts in self._inflight.items():
            if start < oldest:
                self.stats["dropped"] += sum(counts.values())
                continue
            mine = self._pending.setdefault(start, {})
            for key, n in counts.items():
                mine[key] = mine.get(key, 0) + n
        for start in [s for s in self._pending if s < oldest]:
            self.stats["dropped"] += sum(self._pending.pop(start).values())
        self._inflight = {}

    async def start(self) -> None:
        await self._loop.start(self.replicas, self.clock)

    async def stop(self) -> None:
        await self._loop.stop()
