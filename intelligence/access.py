"""Who may look and who may change things: signed access tokens for the dashboard and control API.

Tokens are JWTs (HS256, PyJWT) signed with SECRET_KEY, carrying a subject, a role, an id (``jti``),
the issue time and an expiry (ACCESS_TOKEN_EXPIRE_MINUTES, default 60). Two roles: ``viewer`` reads;
``admin`` may also change policies, keys and experiments. Without SECRET_KEY there is no
authentication, which is allowed only on loopback: :func:`require_safe_bind` refuses a non-loopback
listener without it.

Hardening:

* SECRET_KEY must look random (:func:`check_secret_key`): at least 32 bytes, no placeholder words
  (``CHANGE_ME``, ``secret``, ...), and an estimated strength of at least 128 bits. A weak key is
  refused when the settings are read from the environment, i.e. at start.
* A token lives at most ACCESS_TOKEN_MAX_MINUTES (default 24 h): longer ones are refused when issued
  and rejected when verified (``exp - iat``), so no token (say, one issued by a misconfigured
  script) outlives that bound, and a stolen token is useful for a day at most.
* Tokens can be revoked by ``jti`` (``llmproxy token revoke``, table ``access_token_revocations``).
  Verifiers keep the revoked ids in memory (:class:`TokenRevocations`), reloaded on
  ``NOTIFY llmproxy_token_revocations`` and every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import os
import re
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, cast

import jwt
from sqlalchemy import DateTime, Index, Table, Text, select, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Mapped, mapped_column

from intelligence.errors import ConfigError, Refused, Unavailable
from intelligence.store.models import Base

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from intelligence.store.listen import NotifyReloader

log = logging.getLogger("llmproxy.access")

ROLES = ("viewer", "admin")
ISSUER = "llmproxy"
_MIN_SECRET_BYTES = 32  # HS256 keys shorter than the hash are weak (RFC 7518 3.2)
MIN_SECRET_BITS = 128
DEFAULT_MAX_MINUTES = 24 * 60
GENERATE_HINT = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'

REVOCATIONS_CHANNEL = "llmproxy_token_revocations"
# Revocations are kept while the token could still be presented: a token lives at most the maximum
# lifetime, so a row older than that (plus clock skew) protects nothing and is pruned.
_REVOCATION_MARGIN = timedelta(minutes=10)


class InvalidToken(Refused):
    """The token is missing, malformed, forged, expired, revoked, too long-lived or names an unknown role."""


class WeakSecretKey(ConfigError):
    """A configured key is too short, a placeholder or too predictable to sign anything."""


class UnsafeBind(SystemExit):
    pass


# ------------------------------------------------------------------------------------ key strength
# Lower-cased fragments that mark a placeholder or a made-up key. Only fragments of six or more
# characters: a random 64-character base64url key contains a given 6-letter word (either case) about
# once in 18 million keys, so a generated key is practically never refused. Shorter patterns
# ("12345", "xxxxx", "abcde") are the entropy estimate's job (runs and repeats cost little there).
_PLACEHOLDERS = (
    "changeme",
    "change_me",
    "change-me",
    "secret",
    "password",
    "passwd",
    "example",
    "placeholder",
    "default",
    "insecure",
    "sample",
    "replace",
    "yourkey",
    "your_key",
    "your-key",
    "llmproxy",
    "qwerty",
    "letmein",
)
_HEX = re.compile(r"[0-9a-f]+|[0-9A-F]+")


def estimate_entropy_bits(value: str) -> float:
    """A conservative estimate of the bits of randomness in ``value`` (not a proof of randomness).

    The smaller of two estimates: the Shannon entropy of the character distribution times the length,
    and a pattern-aware count where every character costs log2 of its alphabet (hex digits, or the
    classes present among lower, upper, digits, punctuation, non-ASCII) except characters that repeat
    an earlier run of three or more (a back-reference costs only its offset and length) and characters
    one code point away from the previous one (``abcd``, ``1234``, ``aaaa``: one bit each).
    """
    s = value[:512]  # long enough for any real key; keeps the quadratic search cheap
    n = len(s)
    if n == 0:
        return 0.0
    counts = Counter(s)
    shannon = -sum(c / n * math.log2(c / n) for c in counts.values()) * n
    if _HEX.fullmatch(s):
        pool = 16
    else:
        pool = sum(
            size
            for present, size in (
                (any(c.islower() and c.isascii() for c in s), 26),
                (any(c.isupper() and c.isascii() for c in s), 26),
                (any(c.isdigit() and c.isascii() for c in s), 10),
                (any(c.isascii() and not c.isalnum() for c in s), 33),
                (any(not c.isascii() for c in s), 100),
            )
            if present
        )
    per_char = math.log2(max(pool, 2))
    bits = 0.0
    i = 0
    while i < n:
        length = 0
        while i + length < n and s.find(s[i : i + length + 1], 0, i + length) != -1:
            length += 1
        if length >= 3:
            bits += math.log2(i + 1) + math.log2(length)
            i += length
            continue
        bits += 1.0 if i and abs(ord(s[i]) - ord(s[i - 1])) <= 1 else per_char
        i += 1
    return min(bits, shannon)


def check_secret_key(value: str, *, name: str = "SECRET_KEY") -> None:
    """Raise :class:`WeakSecretKey` unless ``value`` is long and random-looking enough to sign with."""
    size = len(value.encode())
    if size < _MIN_SECRET_BYTES:
        raise WeakSecretKey(f"{name} must be at least {_MIN_SECRET_BYTES} bytes (it has {size}); {GENERATE_HINT}")
    lowered = value.lower()
    for word in _PLACEHOLDERS:
        if word in lowered:
            raise WeakSecretKey(f"{name} looks like a placeholder (it contains {word!r}); {GENERATE_HINT}")
    distinct = len(set(value))
    if distinct < 10:
        raise WeakSecretKey(f"{name} has only {distinct} distinct characters; {GENERATE_HINT}")
    bits = estimate_entropy_bits(value)
    if bits < MIN_SECRET_BITS:
        raise WeakSecretKey(
            f"{name} is too predictable (about {bits:.0f} bits of randomness, at least {MIN_SECRET_BITS} needed); {GENERATE_HINT}"
        )


# ------------------------------------------------------------------------------------ settings
class RevocationChecker(Protocol):
    def is_revoked(self, jti: str) -> bool:
        """True for a revoked token id; raises :class:`RevocationsUnavailable` when it cannot tell."""
        ...


class RevocationsUnavailable(Unavailable):
    """The revocation list was never loaded (database unreachable since start)."""


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: str
    expires_at: datetime | None  # None: the unauthenticated loopback operator
    jti: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


LOCAL_OPERATOR = Principal(subject="local", role="admin", expires_at=None)


@dataclass(frozen=True, slots=True)
class AccessSettings:
    secret_key: str | None
    expire_minutes: int = 60
    max_minutes: int = DEFAULT_MAX_MINUTES
    # where revoked token ids come from; None: no revocation check (tests, or no database)
    revocations: RevocationChecker | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *, revocations: bool = True) -> AccessSettings:
        """The settings of this process; raises ValueError (:class:`WeakSecretKey`) for a weak key.

        With ``revocations`` and both SECRET_KEY and DATABASE_URL set, tokens are checked against the
        revocation list of that database (:meth:`ThreadedRevocations.shared`, loaded on first use).
        """
        env = dict(os.environ) if env is None else env
        secret = env.get("SECRET_KEY") or None
        if secret is not None:
            check_secret_key(secret)
        minutes = int(env.get("ACCESS_TOKEN_EXPIRE_MINUTES") or 60)
        if minutes <= 0:
            raise ValueError("ACCESS_TOKEN_EXPIRE_MINUTES must be positive")
        max_minutes = int(env.get("ACCESS_TOKEN_MAX_MINUTES") or DEFAULT_MAX_MINUTES)
        if max_minutes <= 0:
            raise ValueError("ACCESS_TOKEN_MAX_MINUTES must be positive")
        if minutes > max_minutes:
            raise ValueError(f"ACCESS_TOKEN_EXPIRE_MINUTES ({minutes}) is longer than ACCESS_TOKEN_MAX_MINUTES ({max_minutes})")
        checker: RevocationChecker | None = None
        url = env.get("DATABASE_URL")
        if revocations and secret is not None and url:
            checker = ThreadedRevocations.shared(url)
        return cls(secret_key=secret, expire_minutes=minutes, max_minutes=max_minutes, revocations=checker)

    @property
    def enabled(self) -> bool:
        return self.secret_key is not None

    def with_revocations(self, revocations: RevocationChecker | None) -> AccessSettings:
        return replace(self, revocations=revocations)


def issue_token(
    settings: AccessSettings, subject: str, role: str, *, minutes: int | None = None, now: datetime | None = None
) -> str:
    """A signed token; refused (ValueError) when it would live longer than ``settings.max_minutes``."""
    if not settings.enabled:
        raise ValueError("SECRET_KEY is not set: tokens cannot be issued")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    lifetime = minutes if minutes is not None else settings.expire_minutes
    if lifetime > settings.max_minutes:
        raise ValueError(f"a token may live at most {settings.max_minutes} minutes (ACCESS_TOKEN_MAX_MINUTES), not {lifetime}")
    now = now or datetime.now(UTC)
    exp = now + timedelta(minutes=lifetime)
    claims = {
        "sub": subject,
        "role": role,
        "iat": int(now.timestamp()),
        "exp": int(exp.timestamp()),
        "iss": ISSUER,
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(claims, settings.secret_key, algorithm="HS256")


def token_claims(settings: AccessSettings, token: str, *, verify_exp: bool = True) -> dict[str, Any]:
    """The verified claims of ``token`` (signature, issuer, required claims); raises :class:`InvalidToken`."""
    token = token.removeprefix("Bearer ").removeprefix("bearer ").strip()
    try:
        return jwt.decode(
            token,
            settings.secret_key,
            algorithms=["HS256"],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "role", "iss", "jti"], "verify_exp": verify_exp},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the access token has expired") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"invalid access token: it has no {exc.claim!r} claim (issue a new one)") from None
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"invalid access token: {type(exc).__name__}") from None


def verify_token(settings: AccessSettings, token: str | None) -> Principal:
    """The token's principal. Without SECRET_KEY every caller is the local operator (loopback only)."""
    if not settings.enabled:
        return LOCAL_OPERATOR
    if not token:
        raise InvalidToken("an access token is required")
    claims = token_claims(settings, token)
    if claims.get("role") not in ROLES:
        raise InvalidToken("the access token names an unknown role")
    try:
        lifetime = int(claims["exp"]) - int(claims["iat"])
    except (TypeError, ValueError):
        raise InvalidToken("invalid access token: exp and iat must be numbers") from None
    if lifetime > settings.max_minutes * 60:
        raise InvalidToken(
            f"the access token claims a lifetime of {lifetime // 60} minutes, more than the maximum "
            f"{settings.max_minutes} (ACCESS_TOKEN_MAX_MINUTES)"
        )
    jti = str(claims["jti"])
    if settings.revocations is not None:
        try:
            revoked = settings.revocations.is_revoked(jti)
        except RevocationsUnavailable as exc:
            raise InvalidToken(f"cannot check whether the access token is revoked: {exc}") from None
        if revoked:
            raise InvalidToken("the access token has been revoked")
    return Principal(
        subject=str(claims["sub"]), role=claims["role"], expires_at=datetime.fromtimestamp(claims["exp"], UTC), jti=jti
    )


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_safe_bind(host: str, settings: AccessSettings, *, what: str) -> None:
    """Refuse to listen beyond loopback without authentication (secure by default)."""
    if not is_loopback(host) and not settings.enabled:
        raise UnsafeBind(
            f"llmproxy: refusing to start the {what} on {host}: it is not loopback and SECRET_KEY is not set "
            "(set SECRET_KEY to require signed access tokens, or bind 127.0.0.1)"
        )


# ------------------------------------------------------------------------------------ revocation
class TokenRevocationRow(Base):
    """A revoked token id (migration 0015_audit_hardening); a trigger NOTIFYs every change."""

    __tablename__ = "access_token_revocations"

    jti: Mapped[str] = mapped_column(Text, primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))
    revoked_by: Mapped[str] = mapped_column(Text, server_default=text("''"))
    reason: Mapped[str | None] = mapped_column(Text)
    # after this the token has expired anyway (issue time + the maximum lifetime); the row may go
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_access_token_revocations_expires_at", "expires_at"),)


_REVOCATIONS = cast(Table, TokenRevocationRow.__table__)


async def revoke_token(
    conn: AsyncConnection,
    jti: str,
    *,
    actor: str,
    reason: str | None = None,
    expires_at: datetime | None = None,
    max_minutes: int = DEFAULT_MAX_MINUTES,
) -> bool:
    """Record ``jti`` as revoked (audited in the same transaction); False when it already was.

    ``expires_at`` is when the token expires, if known; otherwise now + the maximum lifetime bounds it.
    Rows of tokens that have expired since are pruned here.
    """
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    from intelligence.audit import CONFIG_CHANGE, AuditLog

    jti = jti.strip()
    if not jti or len(jti) > 200:
        raise ValueError("a token id (jti) is 1 to 200 characters")
    now = datetime.now(UTC)
    until = (expires_at or now + timedelta(minutes=max_minutes)) + _REVOCATION_MARGIN
    stmt = (
        pg_insert(_REVOCATIONS)
        .values(jti=jti, revoked_by=actor, reason=reason, expires_at=until)
        .on_conflict_do_nothing(index_elements=[_REVOCATIONS.c.jti])
        .returning(_REVOCATIONS.c.jti)
    )
    inserted = (await conn.execute(stmt)).first() is not None
    await conn.execute(_REVOCATIONS.delete().where(_REVOCATIONS.c.expires_at < now))
    if inserted:
        await AuditLog().append(
            conn, CONFIG_CHANGE, f"access_token:{jti}", {"action": "revoke_token", "jti": jti, "reason": reason}, actor
        )
    return inserted


async def revoked_ids(conn: AsyncConnection) -> frozenset[str]:
    rows = await conn.execute(
        select(_REVOCATIONS.c.jti).where((_REVOCATIONS.c.expires_at.is_(None)) | (_REVOCATIONS.c.expires_at > text("now()")))
    )
    return frozenset(r[0] for r in rows)


class TokenRevocations:
    """Revoked token ids held in memory, reloaded on NOTIFY and every ``poll_interval`` seconds.

    ``is_revoked`` is a set lookup (no database round trip per call). Before the first successful
    load it raises :class:`RevocationsUnavailable` (callers refuse the token: fail closed); during a
    later outage the last loaded list stays in force. A database without the table (schema older
    than 0015) has nothing revoked.
    """

    def __init__(self, engine: AsyncEngine, *, poll_interval: float = 3.0, listen: bool = True) -> None:
        self.engine = engine
        self.poll_interval = poll_interval
        self.listen = listen
        self._revoked: frozenset[str] = frozenset()
        self.loaded_at: datetime | None = None
        self.loaded = asyncio.Event()
        self._reloader: NotifyReloader | None = None
        self._missing_table_logged = False

    def is_revoked(self, jti: str) -> bool:
        if self.loaded_at is None:
            raise RevocationsUnavailable("the token revocation list has not been loaded from the database yet")
        return jti in self._revoked

    async def refresh(self) -> None:
        try:
            async with self.engine.connect() as conn:
                revoked = await revoked_ids(conn)
        except ProgrammingError as exc:
            if "access_token_revocations" not in str(exc):
                raise
            if not self._missing_table_logged:
                log.warning("no access_token_revocations table (migrate the database): tokens cannot be revoked")
                self._missing_table_logged = True
            revoked = frozenset()
        self._revoked = revoked
        self.loaded_at = datetime.now(UTC)
        self.loaded.set()

    async def start(self) -> None:
        from intelligence.store.listen import NotifyReloader

        if self._reloader is None:
            self._reloader = NotifyReloader(
                self.engine,
                REVOCATIONS_CHANNEL,
                self.refresh,
                poll_interval=self.poll_interval,
                listen=self.listen,
                what="token revocations",
                task_name="token-revocations",
                keeping=lambda: "keeping the last loaded revocation list",
            )
            await self._reloader.start(not_loaded="tokens are refused until it loads")

    async def stop(self) -> None:
        reloader, self._reloader = self._reloader, None
        if reloader is not None:
            await reloader.stop()


class ThreadedRevocations:
    """:class:`TokenRevocations` for synchronous callers (the dashboard): its loop runs in a daemon
    thread with an engine of its own, started on first use; the first check waits for the first load
    (at most ``first_load_timeout`` seconds)."""

    _shared: dict[str, ThreadedRevocations] = {}
    _shared_lock = threading.Lock()

    def __init__(self, url: str, *, poll_interval: float = 3.0, first_load_timeout: float = 5.0) -> None:
        self.url = url
        self.poll_interval = poll_interval
        self.first_load_timeout = first_load_timeout
        self._inner: TokenRevocations | None = None
        self._ready = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @classmethod
    def shared(cls, url: str) -> ThreadedRevocations:
        """One per database URL and process (the dashboard re-reads its settings on every run)."""
        with cls._shared_lock:
            found = cls._shared.get(url)
            if found is None:
                found = cls._shared[url] = cls(url)
            return found

    def is_revoked(self, jti: str) -> bool:
        self._ensure_started()
        self._ready.wait(self.first_load_timeout)
        if self._inner is None:
            raise RevocationsUnavailable("the token revocation list is not running")
        return self._inner.is_revoked(jti)

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name="token-revocations", daemon=True)
                self._thread.start()

    def _main(self) -> None:
        asyncio.run(self._serve())

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (a daemon otherwise lives as long as the process) and forget the shared entry."""
        with self._shared_lock:
            if self._shared.get(self.url) is self:
                del self._shared[self.url]
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(timeout)

    async def _serve(self) -> None:
        from intelligence.store.engine import make_engine

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        engine = make_engine(self.url, pool_size=1, max_overflow=1)
        inner = TokenRevocations(engine, poll_interval=self.poll_interval)
        self._inner = inner
        try:
            await inner.start()
            self._ready.set()  # loaded, or the first load failed (then checks fail closed until it loads)
            await self._stop.wait()
        finally:
            self._ready.set()
            await inner.stop()
            await engine.dispose()
