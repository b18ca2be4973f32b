"""Create, list, find, revoke and quarantine gateway keys. Every change is written to the audit log
in the same transaction; like the other repositories nothing here commits (the caller owns the
transaction, e.g. ``async with engine.begin() as conn``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from intelligence.audit import KEY_EVENT, AuditLog
from intelligence.errors import NotFound

from .material import KEY_SCHEME, PREFIX_LEN, Budgets, generate_key, hash_key, key_prefix
from .models import GatewayKey

Executor = AsyncConnection | AsyncSession
_KEYS = GatewayKey.__table__


class KeyNotFound(NotFound):
    pass


class AmbiguousKey(NotFound):
    def __init__(self, ref: str, candidates: list[KeyRecord]):
        self.candidates = candidates
        names = ", ".join(f"{k.id} ({k.prefix}…, {k.name})" for k in candidates)
        super().__init__(f"{ref!r} matches several keys: {names}; give the key id")


@dataclass(frozen=True, slots=True)
class NewKey:
    name: str
    models: tuple[str, ...] = ()  # glob patterns; empty = any model
    providers: tuple[str, ...] = ()  # empty = any provider
    expires_at: datetime | None = None
    budgets: Budgets = field(default_factory=Budgets)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    name: str
    prefix: str
    key_hash: str
    models: tuple[str, ...]
    providers: tuple[str, ...]
    budgets: Budgets
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None
    quarantined_at: datetime | None = None
    quarantine_reason: str | None = None

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if self.quarantined_at is not None:
            return "quarantined"
        return "active"

    def to_public_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """Everything an operator may see: never the key, and not its hash either."""
        doc: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "models": list(self.models),
            "providers": list(self.providers),
            "budgets": self.budgets.to_dict(),
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "revoked_by": self.revoked_by,
            "revoke_reason": self.revoke_reason,
            "quarantined_at": _iso(self.quarantined_at),
            "quarantine_reason": self.quarantine_reason,
        }
        if now is not None:
            doc["status"] = self.status(now)
        return doc


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: str = field(repr=False)  # the only time the key exists outside its holder
    record: KeyRecord


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _record(row: Any) -> KeyRecord:
    return KeyRecord(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        key_hash=row["key_hash"],
        models=tuple(row["models"] or ()),
        providers=tuple(row["providers"] or ()),
        budgets=Budgets(rpm=row["rpm"], rpd=row["rpd"], tpm=row["tpm"], tpd=row["tpd"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        revoked_by=row["revoked_by"],
        revoke_reason=row["revoke_reason"],
        quarantined_at=row["quarantined_at"],
        quarantine_reason=row["quarantine_reason"],
    )


def _event(action: str, record: KeyRecord, **extra: Any) -> dict[str, Any]:
    doc = {"action": action, "key_id": record.id, "name": record.name, "prefix": record.prefix}
    doc.update(extra)
    return doc


async def create_key(conn: Executor, spec: NewKey, *, actor: str, audit: AuditLog | None = None) -> CreatedKey:
    if not spec.name.strip():
        raise ValueError("a key needs a name")
    key = generate_key()
    row = (
        (
            await conn.execute(
                pg_insert(_KEYS)
                .values(
                    id="gk_" + secrets.token_hex(6),
                    name=spec.name.strip(),
                    prefix=key_prefix(key),
                    key_hash=hash_key(key),
                    models=list(spec.models),
                    providers=list(spec.providers),
                    expires_at=spec.expires_at,
                    created_by=actor,
                    **spec.budgets.to_dict(),
                )
                .returning(*_KEYS.c)
            )
        )
        .mappings()
        .one()
    )
    record = _record(row)
    await (audit or AuditLog()).append(
        conn,
        KEY_EVENT,
        record.id,
        _event(
            "create",
            record,
            models=list(record.models),
            providers=list(record.providers),
            budgets=record.budgets.to_dict(),
            expires_at=_iso(record.expires_at),
        ),
        actor,
    )
    return CreatedKey(key=key, record=record)


async def list_keys(conn: Executor) -> list[KeyRecord]:
    rows = (await conn.execute(select(_KEYS).order_by(_KEYS.c.created_at, _KEYS.c.id))).mappings().all()
    return [_record(r) for r in rows]


async def find_key(conn: Executor, ref: str) -> KeyRecord:
    """A key by id, display prefix (or a longer start of the key), or the full key itself."""
    ref = ref.strip()
    if ref.startswith(KEY_SCHEME) and len(ref) > PREFIX_LEN:
        cond = _KEYS.c.key_hash == hash_key(ref)
    elif ref.startswith(KEY_SCHEME) and len(ref) >= len(KEY_SCHEME) + 4:
        cond = _KEYS.c.prefix.startswith(ref, autoescape=True)
    else:
        cond = _KEYS.c.id == ref
    rows = [_record(r) for r in (await conn.execute(select(_KEYS).where(cond).order_by(_KEYS.c.id))).mappings().all()]
    if not rows:
        # a full key is never echoed back, only its display prefix
        shown = ref[:PREFIX_LEN] + ("…" if len(ref) > PREFIX_LEN else "")
        raise KeyNotFound(f"no gateway key matches {shown!r}")
    if len(rows) > 1:
        raise AmbiguousKey(ref[:PREFIX_LEN], rows)
    return rows[0]


async def revoke_key(
    conn: Executor, ref: str, *, actor: str, reason: str | None = None, audit: AuditLog | None = None
) -> tuple[KeyRecord, bool]:
    """Revoke for good; returns (record, False) when it was already revoked (nothing changes, nothing audited)."""
    found = await find_key(conn, ref)
    row = (
        (
            await conn.execute(
                update(_KEYS)
                .where(_KEYS.c.id == found.id, _KEYS.c.revoked_at.is_(None))
                .values(revoked_at=func.now(), revoked_by=actor, revoke_reason=reason, updated_at=func.now())
                .returning(*_KEYS.c)
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        return found, False
    record = _record(row)
    await (audit or AuditLog()).append(conn, KEY_EVENT, record.id, _event("revoke", record, reason=reason), actor)
    return record, True


async def quarantine_key(
    conn: Executor, key_id: str, *, actor: str, reason: str, audit: AuditLog | None = None
) -> tuple[KeyRecord, bool]:
    """Suspend a key until an admin releases it (automated threat response); (record, changed)."""
    return await _set_quarantine(conn, key_id, actor=actor, reason=reason, audit=audit)


async def release_key(
    conn: Executor, key_id: str, *, actor: str, reason: str | None = None, audit: AuditLog | None = None
) -> tuple[KeyRecord, bool]:
    """Lift a quarantine (the reversible automated action); (record, changed). The audit entry keeps
    why the key was quarantined and why it is released; a key that is not quarantined is left alone."""
    record, changed = await _set_quarantine(conn, key_id, actor=actor, reason=None, audit=audit, note=reason)
    if changed:  # the live feed shows the release next to the quarantine it undoes
        from intelligence.events import publish

        await publish(
            conn,
            kind="release",
            title=f"gateway key {record.id} released" + (f": {reason}" if reason else ""),
            severity="info",
            subject=record.id,
            detail={"actor": actor, "reason": reason, "name": record.name},
            source="cli" if actor.startswith("cli:") else "dashboard" if actor.startswith("dashboard") else "",
        )
    return record, changed


async def _set_quarantine(
    conn: Executor, key_id: str, *, actor: str, reason: str | None, audit: AuditLog | None, note: str | None = None
) -> tuple[KeyRecord, bool]:
    found = await find_key(conn, key_id)
    quarantine = reason is not None
    state = _KEYS.c.quarantined_at.is_(None) if quarantine else _KEYS.c.quarantined_at.is_not(None)
    values: dict[str, Any] = {
        "quarantined_at": func.now() if quarantine else None,
        "quarantine_reason": reason,
        "updated_at": func.now(),
    }
    row = (
        (await conn.execute(update(_KEYS).where(_KEYS.c.id == found.id, state).values(**values).returning(*_KEYS.c)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        return found, False
    record = _record(row)
    if quarantine:
        payload = _event("quarantine", record, reason=reason)
    else:
        payload = _event(
            "release", record, reason=note, quarantined_at=_iso(found.quarantined_at), quarantine_reason=found.quarantine_reason
        )
    await (audit or AuditLog()).append(conn, KEY_EVENT, record.id, payload, actor)
    return record, True
