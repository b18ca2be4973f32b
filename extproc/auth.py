"""Gateway-key authentication on the hot path: no database round trip per request.

* :class:`KeyCache` keeps an immutable :class:`KeySnapshot` (sha256 -> :class:`KeyInfo`) and swaps in
  a new one after every poll (``poll_interval``, default 2 s) and at once when Postgres NOTIFYs a key
  change on channel ``llmproxy_keys`` (a trigger on ``gateway_keys`` sends it), so a revocation
  reaches every replica within milliseconds, or one poll interval if notifications are lost.
* :func:`check_key` / :func:`authenticate` answer the request-headers phase from the snapshot alone
  (401 before the body is read); :func:`check_scope` answers once provider and model are known (403).
* :class:`UsageMeter` enforces request and token budgets across replicas through the shared
  ``gateway_key_usage`` table: counts accumulate locally, are UPSERTed every ``flush_interval`` and
  the global totals are read back; a request is refused with 429 once global + unflushed local usage
  reaches a budget. Replicas see each other one flush late, so the worst-case overshoot is what the
  *other* replicas admit within one flush interval (see docs/keys-and-audit.md).

When the database is away the last snapshot and the last totals stay in force (plus local counts):
a revocation made during an outage takes effect when the database is back.
"""

from __future__ import annotations

import asyncio
import enum
import fnmatch
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.keys.material import KEY_SCHEME, MAX_KEY_LEN, PREFIX_LEN, Budgets, hash_key
from intelligence.keys.models import NOTIFY_CHANNEL
from intelligence.keys.store import KeyRecord, list_keys
from intelligence.keys.usage import KeyTotals, UsageDelta, add_usage, day_of, minute_of, prune_usage, read_totals
from intelligence.store.periodic import PeriodicFlush
from intelligence.store.replicas import LiveReplicas, ShareBook

from .errors import gateway_error
from .wire import Immediate

log = logging.getLogger("llmproxy.auth")

# Headers a client may carry its credential in (Envoy hands them over lower-cased).
CREDENTIAL_HEADERS = ("authorization", "x-api-key")


class AuthMode(str, enum.Enum):
    PASSTHROUGH = "passthrough"  # client provider keys go upstream; a gateway key, if sent, is still checked
    REQUIRED = "required"  # every request needs a gateway key; provider keys come from the operator

    @classmethod
    def parse(cls, value: str) -> "AuthMode":
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValueError(f"auth mode {value!r}: use one of {', '.join(m.value for m in cls)}") from None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------------------------------- snapshot
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
    def from_record(cls, r: KeyRecord) -> "KeyInfo":
        return cls(id=r.id, name=r.name, prefix=r.prefix, models=tuple(m.lower() for m in r.models),
                   providers=tuple(p.lower() for p in r.providers), expires_at=r.expires_at,
                   revoked=r.revoked_at is not None, quarantined=r.quarantined_at is not None, budgets=r.budgets)

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
    def empty(cls) -> "KeySnapshot":
        return cls(MappingProxyType({}), MappingProxyType({}), None)

    @classmethod
    def build(cls, keys: Iterable[tuple[str, KeyInfo]], loaded_at: datetime) -> "KeySnapshot":
        by_hash = dict(keys)
        return cls(MappingProxyType(by_hash), MappingProxyType({k.id: k for k in by_hash.values()}), loaded_at)

    @classmethod
    def from_records(cls, records: Iterable[KeyRecord], loaded_at: datetime) -> "KeySnapshot":
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


# ---------------------------------------------------------------------------------------- decisions
@dataclass(frozen=True, slots=True)
class AuthDecision:
    ok: bool
    status: int = 200
    message: str = ""
    key_id: str | None = None  # the gateway key, when one authenticated this request
    code: str | None = None  # machine-readable reason (the error `code` the client sees)
    key: KeyInfo | None = None
    retry_after: int | None = None  # seconds, for 429

    def immediate(self, api: str | None = None) -> Immediate:
        """The refusal as an answer in the calling API's error format (only for ``ok=False``)."""
        imm = gateway_error(self.status, self.message, api=api, code=self.code)
        if self.retry_after is not None:
            imm.headers["retry-after"] = str(self.retry_after)
        return imm


PASSTHROUGH = AuthDecision(ok=True, message="passthrough: no gateway key presented")


def _deny(status: int, code: str, message: str, key: KeyInfo | None = None, retry_after: int | None = None) -> AuthDecision:
    return AuthDecision(ok=False, status=status, message=message, code=code, key=key,
                        key_id=key.id if key is not None else None, retry_after=retry_after)


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), "")
    return value.strip()


def presented_credential(headers: Mapping[str, str]) -> str | None:
    """The credential the client sent: a gateway key if any header carries one, else whatever is there."""
    found = [value for _, value in _credentials(headers)]
    return next((v for v in found if v.startswith(KEY_SCHEME)), found[0] if found else None)


def gateway_key_headers(headers: Mapping[str, str]) -> list[str]:
    """Names of the headers that carry a gateway key: they must be removed before the request goes upstream."""
    return [name for name, value in _credentials(headers) if value.startswith(KEY_SCHEME)]


def _credentials(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    out = []
    for name in CREDENTIAL_HEADERS:
        value = _header(headers, name)
        if name == "authorization":
            scheme, _, rest = value.partition(" ")
            if scheme.lower() == "bearer":
                value = rest.strip()
        if value:
            out.append((name, value))
    return out


def check_key(headers: Mapping[str, str], snapshot: KeySnapshot, now: datetime) -> AuthDecision:
    """Authenticate a request that must carry a gateway key (``Authorization: Bearer llmp_...`` or ``x-api-key``)."""
    token = presented_credential(headers)
    if token is None:
        return _deny(401, "missing_gateway_key", "llmproxy: this gateway requires a gateway key "
                     "(send `Authorization: Bearer llmp_...` or `x-api-key: llmp_...`)")
    if not token.startswith(KEY_SCHEME):
        return _deny(401, "invalid_gateway_key", "llmproxy: provider API keys are not accepted by this gateway; "
                     "use a gateway key (llmp_...) issued with `llmproxy keys create`")
    if len(token) > MAX_KEY_LEN:
        return _deny(401, "invalid_gateway_key", "llmproxy: invalid gateway key")
    if snapshot.loaded_at is None:
        return _deny(503, "key_store_unavailable", "llmproxy: gateway keys are not loaded yet (database unavailable); retry shortly",
                     retry_after=2)
    info = snapshot.lookup(token)
    if info is None:
        return _deny(401, "invalid_gateway_key", f"llmproxy: invalid gateway key {token[:PREFIX_LEN]}…")
    if info.revoked:
        return _deny(401, "key_revoked", f"llmproxy: gateway key {info.label} has been revoked", info)
    if info.expires_at is not None and info.expires_at <= now:
        return _deny(401, "key_expired", f"llmproxy: gateway key {info.label} expired at {info.expires_at.isoformat()}", info)
    if info.quarantined:
        return _deny(403, "key_quarantined", f"llmproxy: gateway key {info.label} is quarantined; an administrator must release it", info)
    return AuthDecision(ok=True, key_id=info.id, key=info, message=f"gateway key {info.label}")


def authenticate(headers: Mapping[str, str], snapshot: KeySnapshot, now: datetime, mode: AuthMode) -> AuthDecision:
    """The request-headers decision for the configured mode.

    passthrough: requests without a gateway key go on untouched (:data:`PASSTHROUGH`); one that does
    present a gateway key is checked like in required mode, so a revoked key never slips through.
    """
    if mode is AuthMode.PASSTHROUGH:
        token = presented_credential(headers)
        if token is None or not token.startswith(KEY_SCHEME):
            return PASSTHROUGH
    return check_key(headers, snapshot, now)


def check_scope(target: AuthDecision | KeyInfo | None, provider: str | None, model: Any) -> AuthDecision:
    """May this key use ``provider`` / ``model``? Call once both are known (after routing and any model rewrite).

    A request with no model (e.g. listing models) is only checked against the provider scope. A
    provider that could not be determined fails a provider-scoped key.
    """
    if isinstance(target, AuthDecision):
        if not target.ok or target.key is None:
            return target
        key = target.key
    elif target is None:
        return PASSTHROUGH
    else:
        key = target
    decision = AuthDecision(ok=True, key_id=key.id, key=key, message=f"gateway key {key.label}")
    if key.providers:
        name = (provider or "").lower()
        if name not in key.providers:
            what = f"provider {provider!r}" if provider else "a request whose provider could not be determined"
            return _deny(403, "provider_not_allowed", f"llmproxy: gateway key {key.label} may not use {what}; "
                         f"allowed providers: {', '.join(key.providers)}", key)
    if key.models and model is not None:
        name = str(model)
        if not any(fnmatch.fnmatchcase(name.lower(), pattern) for pattern in key.models):
            shown = name if len(name) <= 200 else name[:200] + "…"
            return _deny(403, "model_not_allowed", f"llmproxy: gateway key {key.label} may not use model {shown!r}; "
                         f"allowed models: {', '.join(key.models)}", key)
    return decision


# ---------------------------------------------------------------------------------------- key cache
class KeyCache:
    """Holds the current :class:`KeySnapshot`; a background reloader (LISTEN + poll) keeps it fresh."""

    def __init__(self, engine: AsyncEngine, *, poll_interval: float = 2.0, listen: bool = True,
                 channel: str = NOTIFY_CHANNEL, clock: Callable[[], datetime] = _utcnow):
        from intelligence.store.listen import NotifyReloader

        self.engine = engine
        self.clock = clock
        self.stats = {"refreshes": 0, "failures": 0, "notifications": 0, "listens": 0}
        self._snapshot = KeySnapshot.empty()
        self._reloader = NotifyReloader(
            engine, channel, self.refresh, poll_interval=poll_interval, listen=listen, what="gateway keys",
            task_name="key-cache", stats=self.stats,
            keeping=lambda: f"keeping the snapshot from {self._snapshot.loaded_at}")

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


# ---------------------------------------------------------------------------------------- budgets
@dataclass(frozen=True, slots=True)
class Exceeded:
    message: str
    retry_after: int  # seconds until the window that ran out starts over
    budget: str  # rpm | tpm | rpd | tpd

    def decision(self, key_id: str) -> AuthDecision:
        return AuthDecision(ok=False, status=429, message=self.message, key_id=key_id, code="budget_exceeded",
                            retry_after=self.retry_after)


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

    def __init__(self, engine: AsyncEngine, budgets: Callable[[str], Budgets | None], *, flush_interval: float = 1.0,
                 clock: Callable[[], datetime] = _utcnow, prune_interval: float = 600.0,
                 replicas: LiveReplicas | None | _FromEngine = _FROM_ENGINE, share_horizon: timedelta | None = None):
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
        self._loop = PeriodicFlush(self.flush, interval=flush_interval, name="usage-meter", log=log, stats=self.stats,
                                   failing="flushing key usage failed (%s); enforcing with local counts until the "
                                           "database is back",
                                   recovered="key usage flushed again after %d failed flushes")
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
            share = book.allowance((key_id, name, start), window_start=start, now=now, limit=limit, replicas=live,
                                   total=used - own if read else None, read=self._reads if read else None)
            if own >= share:  # the next flush (about a second) brings a new share, or shows the budget spent
                return Exceeded(f"llmproxy: gateway key budget busy: {used} of {limit} {what} used; this gateway "
                                f"replica's share of the rest (1 of {live}) is spent until its next sync", 1, name)
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
            deltas = [UsageDelta(key_id, minute, req, tok)
                      for key_id, counts in self._inflight.items() for minute, (req, tok) in counts.items()]
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
