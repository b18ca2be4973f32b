"""Gateway key material and plain values: generation, hashing, display prefix, budgets, expiry parsing.

Keys are 32 random bytes (256 bits) from the OS CSPRNG. At that entropy a single unsalted SHA-256 is
the right storage hash: there is nothing to brute-force or look up in a table, and it lets the hot
path find a key with one dictionary lookup. Slow password hashes (bcrypt, argon2) exist to protect
low-entropy human secrets and would only cost latency here.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

KEY_SCHEME = "llmp_"
PREFIX_LEN = len(KEY_SCHEME) + 8  # llmp_ + 8 chars (48 bits): enough to tell keys apart, useless to guess the rest
MAX_KEY_LEN = 256  # longer header values are rejected before hashing


@dataclass(frozen=True, slots=True)
class Budgets:
    """Per-key limits; None means unlimited."""

    rpm: int | None = None  # requests per minute
    rpd: int | None = None  # requests per day (UTC)
    tpm: int | None = None  # tokens per minute
    tpd: int | None = None  # tokens per day (UTC)

    def __post_init__(self) -> None:
        for name in ("rpm", "rpd", "tpm", "tpd"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"budget {name} must be a positive number (or unset for unlimited), not {value}")

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.rpm, self.rpd, self.tpm, self.tpd))

    def to_dict(self) -> dict[str, int | None]:
        return {"rpm": self.rpm, "rpd": self.rpd, "tpm": self.tpm, "tpd": self.tpd}


def generate_key() -> str:
    return KEY_SCHEME + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_prefix(key: str) -> str:
    return key[:PREFIX_LEN]


def looks_like_key(value: str) -> bool:
    return value.startswith(KEY_SCHEME) and len(value) <= MAX_KEY_LEN


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(value: str, now: datetime | None = None) -> datetime:
    """``30d``, ``12h``, ``2w`` from now, or an ISO date/time (UTC unless it says otherwise); must be in the future."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(value)
    if match:
        when = now + timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    else:
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"expiry {value!r}: use a duration like 30d, 12h, 2w or an ISO time like 2026-12-31T23:59") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    if when <= now:
        raise ValueError(f"expiry {value!r} is not in the future")
    return when


def split_list(value: str | None) -> tuple[str, ...]:
    """``'gpt-*, claude-*'`` -> ('gpt-*', 'claude-*'); lower-cased, empty parts dropped."""
    if not value:
        return ()
    return tuple(dict.fromkeys(part.strip().lower() for part in value.split(",") if part.strip()))
