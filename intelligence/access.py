"""Who may look and who may change things: signed access tokens for the dashboard and control API.

Tokens are JWTs (HS256, PyJWT) signed with SECRET_KEY, carrying a subject, a role and an expiry
(ACCESS_TOKEN_EXPIRE_MINUTES, default 60). Two roles: ``viewer`` reads; ``admin`` may also change
policies, keys and experiments. Without SECRET_KEY there is no authentication, which is allowed only
on loopback: :func:`require_safe_bind` refuses a non-loopback listener without it.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

ROLES = ("viewer", "admin")
ISSUER = "llmproxy"
_MIN_SECRET_BYTES = 32  # HS256 keys shorter than the hash are weak (RFC 7518 3.2)


class InvalidToken(Exception):
    """The token is missing, malformed, forged, expired or names an unknown role."""


class UnsafeBind(SystemExit):
    pass


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: str
    expires_at: datetime | None  # None: the unauthenticated loopback operator

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


LOCAL_OPERATOR = Principal(subject="local", role="admin", expires_at=None)


@dataclass(frozen=True, slots=True)
class AccessSettings:
    secret_key: str | None
    expire_minutes: int = 60

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> AccessSettings:
        env = dict(os.environ) if env is None else env
        secret = env.get("SECRET_KEY") or None
        if secret is not None and len(secret.encode()) < _MIN_SECRET_BYTES:
            raise ValueError(f"SECRET_KEY must be at least {_MIN_SECRET_BYTES} bytes")
        minutes = int(env.get("ACCESS_TOKEN_EXPIRE_MINUTES") or 60)
        if minutes <= 0:
            raise ValueError("ACCESS_TOKEN_EXPIRE_MINUTES must be positive")
        return cls(secret_key=secret, expire_minutes=minutes)

    @property
    def enabled(self) -> bool:
        return self.secret_key is not None


def issue_token(
    settings: AccessSettings, subject: str, role: str, *, minutes: int | None = None, now: datetime | None = None
) -> str:
    if not settings.enabled:
        raise ValueError("SECRET_KEY is not set: tokens cannot be issued")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    now = now or datetime.now(UTC)
    exp = now + timedelta(minutes=minutes if minutes is not None else settings.expire_minutes)
    claims = {"sub": subject, "role": role, "iat": int(now.timestamp()), "exp": int(exp.timestamp()), "iss": ISSUER}
    return jwt.encode(claims, settings.secret_key, algorithm="HS256")


def verify_token(settings: AccessSettings, token: str | None) -> Principal:
    """The token's principal. Without SECRET_KEY every caller is the local operator (loopback only)."""
    if not settings.enabled:
        return LOCAL_OPERATOR
    if not token:
        raise InvalidToken("an access token is required")
    token = token.removeprefix("Bearer ").removeprefix("bearer ").strip()
    try:
        claims = jwt.decode(
            token, settings.secret_key, algorithms=["HS256"], issuer=ISSUER, options={"require": ["exp", "sub", "role", "iss"]}
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the access token has expired") from None
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"invalid access token: {type(exc).__name__}") from None
    if claims.get("role") not in ROLES:
        raise InvalidToken("the access token names an unknown role")
    return Principal(subject=str(claims["sub"]), role=claims["role"], expires_at=datetime.fromtimestamp(claims["exp"], UTC))


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
