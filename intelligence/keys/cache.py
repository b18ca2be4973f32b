"""The gateway keys the sidecar knows, held in memory: no database round trip per request.

:class:`KeyCache` keeps an immutable :class:`KeySnapshot` (sha256 -> :class:`KeyInfo`) and swaps in a
new one after every poll (``poll_interval``, default 2 s) and at once when Postgres NOTIFYs a key
change on channel ``llmproxy_keys`` (a trigger on ``gateway_keys`` sends it), so a revocation reaches
every replica within milliseconds, or one poll interval if notifications are lost. When the database
is away the last snapshot stays in force (the sidecar's authentication decides how stale it may be).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

from sqlalchemy.ext.asyncio import AsyncEngine

from .material import Budgets, hash_key
from .models import NOTIFY_CHANNEL
from .store import KeyRecord, list_keys


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    name: str
    prefix: str
    models: tuple[str, ...] = ()  # lower-case glob patterns; empty = any model
    providers: tuple[str, ...] = ()  # lower-case names; empty = any provider
    expires_at: datetime | None = None
    revoked: bool = False
    quarantined: bool = False
    budgets: Budgets = field(default_factory=Budgets)

    @classmethod
    def from_record(cls, r: KeyRecord) -> KeyInfo:
        return cls(
            id=r.id,
            name=r.name,
            prefix=r.prefix,
            models=tuple(m.lower() for m in r.models),
            providers=tuple(p.lower() for p in r.providers),
            expires_at=r.expires_at,
            revoked=r.revoked_at is not None,
            quarantined=r.quarantined_at is not None,
            budgets=r.budgets,
        )

    @property
    def label(self) -> str:
        return f"{self.prefix}… ({self.name})"


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """Every key the gateway knows (revoked and expired ones too, for precise errors), read-only."""

    by_hash: Mapping[str, KeyInfo]
    by_id: Mapping[str, KeyInfo]
    loaded_at: datetime | None  # None: never loaded (no database yet)

    @classmethod
    def empty(cls) -> KeySnapshot:
        return cls(MappingProxyType({}), MappingProxyType({}), None)

    @classmethod
    def build(cls, keys: Iterable[tuple[str, KeyInfo]], loaded_at: datetime) -> KeySnapshot:
        by_hash = dict(keys)
        return cls(MappingProxyType(by_hash), MappingProxyType({k.id: k for k in by_hash.values()}), loaded_at)

    @classmethod
    def from_records(cls, records: Iterable[KeyRecord], loaded_at: datetime) -> KeySnapshot:
        return cls.build(((r.key_hash, KeyInfo.from_record(r)) for r in records), loaded_at)

    def lookup(self, key: str) -> KeyInfo | None:
        # A dict lookup on the SHA-256 of the presented key: timing can only reveal facts about the
        # hash of what the caller sent, which does not help find a valid key.
        return self.by_hash.get(hash_key(key))

    def budgets(self, key_id: str) -> Budgets | None:
        info = self.by_id.get(key_id)
        return info.budgets if info is not None else None

    def __len__(self) -> int:
        return len(self.by_hash)


class KeyCache:
    """Holds the current :class:`KeySnapshot`; a background reloader (LISTEN + poll) keeps it fresh."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        poll_interval: float = 2.0,
        listen: bool = True,
        channel: str = NOTIFY_CHANNEL,
        clock: Callable[[], datetime] = _utcnow,
    ):
        from intelligence.store.listen import NotifyReloader

        self.engine = engine
        self.clock = clock
        self.stats = {"refreshes": 0, "failures": 0, "notifications": 0, "listens": 0}
        self._snapshot = KeySnapshot.empty()
        self._reloader = NotifyReloader(
            engine,
            channel,
            self.refresh,
            poll_interval=poll_interval,
            listen=listen,
            what="gateway keys",
            task_name="key-cache",
            stats=self.stats,
            keeping=lambda: f"keeping the snapshot from {self._snapshot.loaded_at}",
        )

    @property
    def poll_interval(self) -> float:
        return self._reloader.poll_interval

    @property
    def listen(self) -> bool:
        return self._reloader.listen

    @property
    def channel(self) -> str:
        return self._reloader.channel

    @property
    def snapshot(self) -> KeySnapshot:
        return self._snapshot

    @property
    def listening(self) -> bool:
        return self._reloader.listening

    def budgets(self, key_id: str) -> Budgets | None:
        return self._snapshot.budgets(key_id)

    async def refresh(self) -> KeySnapshot:
        async with self.engine.connect() as conn:
            records = await list_keys(conn)
        self._snapshot = KeySnapshot.from_records(records, self.clock())
        self.stats["refreshes"] += 1
        return self._snapshot

    async def start(self) -> None:
        """Load once (a failure is logged, not raised: the loop keeps trying) and start refreshing."""
        await self._reloader.start()

    async def stop(self) -> None:
        await self._reloader.stop()


__all__ = ["KeyCache", "KeyInfo", "KeySnapshot"]
