"""How many gateway replicas are live, and each replica's fair share of a shared budget.

Two flushers enforce limits across replicas without the database on the request path (policy
throttles: intelligence/throttle/shared.py; gateway-key budgets: extproc/auth.py ``UsageMeter``).
Between two reads of the shared totals a replica cannot see what the others spend, so each may only
spend a *share* of what is left; this module holds the two pieces they have in common:

* :class:`LiveReplicas`: every flush upserts this process's heartbeat (table ``replica_heartbeats``)
  and reads how many replicas were seen in the last ``live_for``. The replica id is random per
  process start and shared by every flusher of the process, so a process counts once.
* :class:`ShareBook`: per (budget, window) the most this replica may spend until its next read.

The share rule (docs/policy.md, "Throttling", derives the bound): with N live replicas, limit L and
shared total T at the last read, a replica may spend ``ceil(max(0, L - T - (N-1) * o) / N)`` before
its next read, where ``o`` is the largest share *this* replica held in the last ``horizon`` seconds
(the share every replica gets before it has read the window, ``ceil(L / N)``, counts while the window
is younger than the horizon). All replicas follow the same rule on totals that are at most a flush
apart, so ``o`` stands for what each other replica may still hold unflushed; subtracting it keeps N
replicas within L plus rounding (at most N - 1) as long as every replica reads at least once per
``horizon``. When N is unknown (no successful heartbeat in ``live_for``: database down, first
second after start) callers fall back to spending up to the whole remaining budget, as before.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import DateTime, PrimaryKeyConstraint, Text, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from intelligence.store.models import Base

log = logging.getLogger("llmproxy.replicas")

PROCESS_REPLICA_ID = secrets.token_hex(8)  # one per process start: all flushers of a process count once
LIVE_FOR = timedelta(seconds=10)
_FORGET_AFTER = timedelta(hours=1)  # heartbeat rows of replicas gone this long are deleted

_BEAT = text("""
INSERT INTO replica_heartbeats (replica_id, last_seen) VALUES (:id, :now)
ON CONFLICT (replica_id) DO UPDATE SET last_seen = greatest(replica_heartbeats.last_seen, EXCLUDED.last_seen)
""")
_LIVE = text("SELECT count(*) FROM replica_heartbeats WHERE last_seen > :since")
_FORGET = text("DELETE FROM replica_heartbeats WHERE last_seen < :cut")


class ReplicaHeartbeat(Base):
    """One row per live (or recently live) gateway process; migration 0011_replica_heartbeats owns the schema."""

    __tablename__ = "replica_heartbeats"

    replica_id: Mapped[str] = mapped_column(Text)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (PrimaryKeyConstraint("replica_id", name="pk_replica_heartbeats"),)


class HeartbeatStore(Protocol):
    async def beat(self, replica_id: str, now: datetime, live_since: datetime) -> int: ...


class DbHeartbeats:
    """``replica_heartbeats`` in PostgreSQL (migration 0011_replica_heartbeats)."""

    def __init__(self, engine: AsyncEngine, forget_after: timedelta = _FORGET_AFTER):
        self.engine = engine
        self.forget_after = forget_after

    async def beat(self, replica_id: str, now: datetime, live_since: datetime) -> int:
        """Record ``replica_id`` as seen at ``now``; return how many replicas were seen after ``live_since``."""
        async with self.engine.begin() as conn:
            await conn.execute(_BEAT, {"id": replica_id, "now": now})
            await conn.execute(_FORGET, {"cut": now - self.forget_after})
            return int((await conn.execute(_LIVE, {"since": live_since})).scalar_one())


class LiveReplicas:
    """This process's heartbeat and the last known number of live replicas (>= 1)."""

    def __init__(self, store: HeartbeatStore, *, replica_id: str = PROCESS_REPLICA_ID, live_for: timedelta = LIVE_FOR):
        self.store = store
        self.replica_id = replica_id
        self.live_for = live_for
        self._count: int | None = None
        self._counted_at: datetime | None = None

    @classmethod
    def from_engine(cls, engine: AsyncEngine, **options: object) -> LiveReplicas:
        return cls(DbHeartbeats(engine), **options)  # type: ignore[arg-type]

    async def beat(self, now: datetime) -> int | None:
        """Heartbeat and recount; failures are logged and leave the count to expire (see :meth:`count`)."""
        try:
            n = await self.store.beat(self.replica_id, now, now - self.live_for)
        except Exception as exc:  # noqa: BLE001 - an unknown count means "enforce as before", never an error
            log.debug("replica heartbeat failed: %s", exc)
            return None
        self._count, self._counted_at = max(n, 1), now
        return self._count

    async def first_beat(self, now: datetime, timeout: float = 2.0) -> int | None:
        """The beat a flusher sends as it starts, so a new replica knows N before its first flush;
        bounded so that a database that is down cannot hold up the sidecar's start."""
        try:
            async with asyncio.timeout(timeout):
                return await self.beat(now)
        except TimeoutError:
            log.debug("first replica heartbeat timed out")
            return None

    def count(self, now: datetime) -> int | None:
        """Live replicas as last counted, or None when that count is older than ``live_for`` (or never made)."""
        if self._counted_at is None or now - self._counted_at > self.live_for:
            return None
        return self._count


@dataclass(slots=True)
class _Share:
    value: int
    read: int  # which read of the shared totals it was computed from
    history: list[tuple[datetime, int]] = field(default_factory=list)  # (replaced at, value) within the horizon


ShareKey = tuple[Hashable, ...]  # names a budget; its last item is the window's start (a datetime)


class ShareBook:
    """The share of each budget window this replica may spend between two reads of the shared totals."""

    def __init__(self, horizon: timedelta = timedelta(seconds=2.5)):
        self.horizon = horizon
        self._shares: dict[ShareKey, _Share] = {}

    def allowance(
        self,
        key: ShareKey,
        *,
        window_start: datetime,
        now: datetime,
        limit: int,
        replicas: int,
        total: int | None,
        read: int | None,
    ) -> int:
        """How much of ``limit`` this replica may spend in the window between its last read and the next.

        ``total`` is the window's shared total at the last read, ``read`` that read's sequence number
        (None: this replica has not read the window yet: it gets the opening share ``ceil(limit / N)``).
        """
        opening = math.ceil(limit / replicas)
        if total is None or read is None:
            return opening
        share = self._shares.get(key)
        if share is not None and share.read == read:
            return share.value
        since = now - self.horizon
        history = [(t, v) for t, v in share.history if t > since] if share is not None else []
        if share is not None:
            history.append((now, share.value))  # held until now
        held = [v for _, v in history]
        if window_start > since:
            held.append(opening)  # every replica may still hold its opening share
        # nothing held lately (a budget this replica has not used): the others got at most what it would
        others = max(held) if held else math.ceil(max(0, limit - total) / replicas)
        value = math.ceil(max(0, limit - total - (replicas - 1) * others) / replicas)
        self._shares[key] = _Share(value, read, history)
        return value

    def forget_before(self, window_start: datetime) -> None:
        """Drop the shares of windows that started before ``window_start``."""
        for key in [k for k, _ in self._shares.items() if k[-1] < window_start]:  # type: ignore[operator]
            del self._shares[key]

    def __len__(self) -> int:
        return len(self._shares)
