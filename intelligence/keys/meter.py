"""Per-key request and token budgets, shared by every replica through the database.

:class:`UsageMeter` enforces request and token budgets across replicas through the shared
``gateway_key_usage`` table: counts accumulate locally, are UPSERTed every ``flush_interval`` and the
global totals are read back; a request is refused once global + unflushed local usage reaches a
budget. Replicas see each other one flush late, so the worst-case overshoot is what the *other*
replicas admit within one flush interval (see docs/keys-and-audit.md). The hot-path methods are
synchronous and do no I/O.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.store.periodic import PeriodicFlush
from intelligence.store.replicas import LiveReplicas, ShareBook

from .material import Budgets
from .usage import KeyTotals, UsageDelta, add_usage, day_of, minute_of, prune_usage, read_totals

log = logging.getLogger("llmproxy.keys.meter")


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Exceeded:
    message: str
    retry_after: int  # seconds until the window that ran out starts over
    budget: str  # rpm | tpm | rpd | tpd


_Counts = dict[datetime, list[int]]  # minute bucket -> [requests, tokens]


class _FromEngine:
    """Default of ``UsageMeter(replicas=...)``: count live replicas through the meter's own engine."""


_FROM_ENGINE = _FromEngine()


class UsageMeter:
    """Per-key request and token budgets shared by all replicas through the database.

    ``budgets`` maps a key id to its :class:`Budgets` (normally ``KeyCache.budgets``). Windows are UTC
    calendar minutes and days (fixed windows: a client can spend a minute's budget at the end of one
    minute and again at the start of the next).

    With the number of live replicas known (``replicas``, heartbeats sent by each flush; by default
    this process's row in ``replica_heartbeats``) a replica spends at most its fair share of what is
    left of each budget between two flushes (intelligence/store/replicas.py): N replicas together stay
    within a budget plus rounding. ``replicas=None``, or the count unknown, means as before: each
    spends all it believes is left (docs/keys-and-audit.md, "Budgets").
    """

    def __init__(
        self,
        engine: AsyncEngine,
        budgets: Callable[[str], Budgets | None],
        *,
        flush_interval: float = 1.0,
        clock: Callable[[], datetime] = _utcnow,
        prune_interval: float = 600.0,
        replicas: LiveReplicas | None | _FromEngine = _FROM_ENGINE,
        share_horizon: timedelta | None = None,
    ):
        self.engine = engine
        self.replicas = LiveReplicas.from_engine(engine) if isinstance(replicas, _FromEngine) else replicas
        # a share must outlive the gap between any replica's two reads: two and a half flush intervals
        horizon = share_horizon or timedelta(seconds=2.5 * flush_interval)
        self._shares = {"minute": ShareBook(horizon), "day": ShareBook(horizon)}
        self._reads = 0  # successful reads of the totals: a share is computed once per read
        self._read_now: datetime | None = None  # the clock at the last successful read
        self.budgets = budgets
        self.flush_interval = flush_interval
        self.clock = clock
        self.prune_interval = prune_interval
        self.stats = {"flushes": 0, "failures": 0, "refused": 0}
        self._pending: dict[str, _Counts] = {}
        self._inflight: dict[str, _Counts] = {}
        self._global: dict[str, KeyTotals] = {}
        self._loop = PeriodicFlush(
            self.flush,
            interval=flush_interval,
            name="usage-meter",
            log=log,
            stats=self.stats,
            failing="flushing key usage failed (%s); enforcing with local counts until the database is back",
            recovered="key usage flushed again after %d failed flushes",
        )
        self._flush_lock = asyncio.Lock()
        self._last_prune: datetime | None = None

    # -- hot path (synchronous, no I/O) --------------------------------------------------------
    def record(self, key_id: str, tokens: int = 0, requests: int = 0) -> None:
        """Count usage for ``key_id`` now: tokens once the response is in, requests via :meth:`admit`."""
        if not tokens and not requests:
            return
        acc = self._pending.setdefault(key_id, {}).setdefault(minute_of(self.clock()), [0, 0])
        acc[0] += max(requests, 0)
        acc[1] += max(tokens, 0)

    def check(self, key_id: str) -> Exceeded | None:
        budgets = self.budgets(key_id)
        if budgets is None or not budgets.any:
            return None
        now = self.clock()
        minute, day = minute_of(now), day_of(now)
        (m_req, m_tok, d_req, d_tok), (m_read, d_read) = self._usage(key_id, minute, day), self._read(minute, day)
        mine = self._unflushed(key_id, minute, day)
        to_minute = math.ceil((minute + timedelta(minutes=1) - now).total_seconds())
        to_day = math.ceil((day + timedelta(days=1) - now).total_seconds())
        live = self.replicas.count(now) if self.replicas is not None else None
        for name, used, limit, what, wait, start, read, own in (
            ("rpm", m_req, budgets.rpm, "requests per minute", to_minute, minute, m_read, mine[0]),
            ("tpm", m_tok, budgets.tpm, "tokens per minute", to_minute, minute, m_read, mine[1]),
            ("rpd", d_req, budgets.rpd, "requests per day", to_day, day, d_read, mine[2]),
            ("tpd", d_tok, budgets.tpd, "tokens per day", to_day, day, d_read, mine[3]),
        ):
            if limit is None:
                continue
            if used >= limit:
                return Exceeded(f"llmproxy: gateway key budget exhausted: {used} of {limit} {what} used", max(wait, 1), name)
            if live is None:
                continue  # live replicas unknown (database down, just started): as if alone, documented
            book = self._shares["minute" if name in ("rpm", "tpm") else "day"]
            share = book.allowance(
                (key_id, name, start),
                window_start=start,
                now=now,
                limit=limit,
                replicas=live,
                total=used - own if read else None,
                read=self._reads if read else None,
            )
            if own >= share:  # the next flush (about a second) brings a new share, or shows the budget spent
                return Exceeded(
                    f"llmproxy: gateway key budget busy: {used} of {limit} {what} used; this gateway "
                    f"replica's share of the rest (1 of {live}) is spent until its next sync",
                    1,
                    name,
                )
        return None

    def exceeded(self, key_id: str) -> str | None:
        """Why ``key_id`` may not make another request now, or None."""
        hit = self.check(key_id)
        return hit.message if hit is not None else None

    def admit(self, key_id: str) -> Exceeded | None:
        """Check the budgets and, if there is room, count one request (call in the request-headers phase)."""
        hit = self.check(key_id)
        if hit is not None:
            self.stats["refused"] += 1
            return hit
        self.record(key_id, requests=1)
        return None

    def _usage(self, key_id: str, minute: datetime, day: datetime) -> tuple[int, int, int, int]:
        totals = self._global.get(key_id)
        m_req = m_tok = d_req = d_tok = 0
        if totals is not None:
            if totals.minute is not None and totals.minute.start == minute:
                m_req, m_tok = totals.minute.requests, totals.minute.tokens
            if totals.day is not None and totals.day.start == day:
                d_req, d_tok = totals.day.requests, totals.day.tokens
        own = self._unflushed(key_id, minute, day)
        return m_req + own[0], m_tok + own[1], d_req + own[2], d_tok + own[3]

    def _unflushed(self, key_id: str, minute: datetime, day: datetime) -> tuple[int, int, int, int]:
        """This replica's own counts since its last read: (minute requests, minute tokens, day requests, day tokens)."""
        m_req = m_tok = d_req = d_tok = 0
        for local in (self._pending.get(key_id), self._inflight.get(key_id)):
            for bucket, (req, tok) in (local or {}).items():
                if bucket == minute:
                    m_req += req
                    m_tok += tok
                if bucket >= day:
                    d_req += req
                    d_tok += tok
        return m_req, m_tok, d_req, d_tok

    def _read(self, minute: datetime, day: datetime) -> tuple[bool, bool]:
        """Whether the last read of the shared totals covered this minute and this day."""
        at = self._read_now
        return (at is not None and minute_of(at) == minute), (at is not None and day_of(at) == day)

    # -- background ----------------------------------------------------------------------------
    async def flush(self) -> None:
        """Add local counts to the shared buckets and read every key's global totals back."""
        async with self._flush_lock:
            self._inflight, self._pending = self._pending, {}
            deltas = [
                UsageDelta(key_id, minute, req, tok)
                for key_id, counts in self._inflight.items()
                for minute, (req, tok) in counts.items()
            ]
            now = self.clock()
            try:
                async with self.engine.begin() as conn:
                    await add_usage(conn, deltas)
                    totals = await read_totals(conn, now)  # sees our own upsert: inflight is now inside
                    if self._last_prune is None or (now - self._last_prune).total_seconds() >= self.prune_interval:
                        await prune_usage(conn, now)
                        self._last_prune = now
            except BaseException:
                self._merge_back()
                raise
            self._global = totals
            self._inflight = {}
            self._reads += 1
            self._read_now = now
            self.stats["flushes"] += 1
            self._shares["minute"].forget_before(minute_of(now))
            self._shares["day"].forget_before(day_of(now))
        if self.replicas is not None:
            await self.replicas.beat(now)

    def _merge_back(self) -> None:
        for key_id, counts in self._inflight.items():
            mine = self._pending.setdefault(key_id, {})
            for minute, (req, tok) in counts.items():
                acc = mine.setdefault(minute, [0, 0])
                acc[0] += req
                acc[1] += tok
        self._inflight = {}

    async def start(self) -> None:
        await self._loop.start(self.replicas, self.clock)

    async def stop(self) -> None:
        await self._loop.stop()


__all__ = ["Exceeded", "UsageMeter"]
