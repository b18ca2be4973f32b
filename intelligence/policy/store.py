"""Database-managed policies (the dashboard's and ``llmproxy policy set``'s) and the audit trail of
every policy change, file or database.

Like the other repositories nothing here commits: the caller owns the transaction, so a policy row
and the audit entry describing its change commit (or roll back) together.

Audit entries (kind ``policy_change``) have subject ``policy:file:<name>`` or ``policy:db:<name>``
and a payload with the unified diff against the previous version, both hashes, the new content
(so the next diff can be made after a restart), the status (applied | rejected | disabled |
deleted) and, for a rejected change, the validation errors. :func:`record_change` skips an entry
whose (content, status) is already the latest for its subject, so several gateway replicas
noticing the same file change write it once.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from intelligence.audit import POLICY_CHANGE, AuditLog
from intelligence.audit.chain import AuditEntry
from intelligence.audit.models import AuditLogRow

from .errors import PolicyError, PolicyIssue
from .models import PolicyRow
from .parse import parse_policy
from .reader import ID

Executor = AsyncConnection | AsyncSession
_POLICIES = PolicyRow.__table__
_LOG = AuditLogRow.__table__
MAX_DIFF_CHARS = 200_000


class PolicyNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    name: str
    source: str
    sha256: str
    enabled: bool
    version: int
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str

    def to_public_dict(self, *, with_source: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "enabled": self.enabled,
            "version": self.version,
            "sha256": self.sha256,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "updated_at": self.updated_at.isoformat(),
            "updated_by": self.updated_by,
        }
        if with_source:
            doc["source"] = self.source
        return doc


@dataclass(frozen=True, slots=True)
class PolicyChange:
    policy: StoredPolicy | None  # None after a delete
    changed: bool
    diff: str
    audit: AuditEntry | None


def _stored(row: Any) -> StoredPolicy:
    return StoredPolicy(
        name=row["name"],
        source=row["source"],
        sha256=row["sha256"],
        enabled=row["enabled"],
        version=row["version"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


def sha256_of(text_: str) -> str:
    return hashlib.sha256(text_.encode()).hexdigest()


def unified_diff(old: str, new: str, name: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile=f"{name} (before)", tofile=f"{name} (after)"
    )
    out = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
    return out if len(out) <= MAX_DIFF_CHARS else out[:MAX_DIFF_CHARS] + "\n... diff truncated\n"


# ---------------------------------------------------------------------------------------- reads
async def list_policies(conn: Executor, *, enabled_only: bool = False) -> list[StoredPolicy]:
    query = select(_POLICIES).order_by(_POLICIES.c.name)
    if enabled_only:
        query = query.where(_POLICIES.c.enabled.is_(True))
    return [_stored(r) for r in (await conn.execute(query)).mappings()]


async def get_policy(conn: Executor, name: str, *, for_update: bool = False) -> StoredPolicy | None:
    query = select(_POLICIES).where(_POLICIES.c.name == name)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).mappings().one_or_none()
    return _stored(row) if row is not None else None


async def policy_versions(conn: Executor) -> dict[str, tuple[int, str, bool]]:
    """name -> (version, sha256, enabled): the cheap query a watcher polls."""
    rows = await conn.execute(select(_POLICIES.c.name, _POLICIES.c.version, _POLICIES.c.sha256, _POLICIES.c.enabled))
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


# ---------------------------------------------------------------------------------------- writes
def check_name(name: str) -> None:
    if not ID.fullmatch(name):
        raise PolicyError(
            [PolicyIssue(0, "name", f"{name!r} is not a valid policy name: letters, digits, '_', '.', '-'", f"db:{name}")]
        )


async def set_policy(
    conn: Executor, name: str, source: str, *, actor: str, enabled: bool = True, audit: AuditLog | None = None
) -> PolicyChange:
    """Create or replace policy ``name``. The source is validated first (:class:`PolicyError`); an
    unchanged policy writes nothing. The change is audited with its diff in the same transaction."""
    check_name(name)
    if not actor:
        raise ValueError("a policy change needs an actor")
    parse_policy(source, origin=f"db:{name}", name=name)
    sha = sha256_of(source)
    old = await get_policy(conn, name, for_update=True)
    if old is not None and old.sha256 == sha and old.enabled == enabled:
        return PolicyChange(old, False, "", None)
    stmt = pg_insert(_POLICIES).values(name=name, source=source, sha256=sha, enabled=enabled, created_by=actor, updated_by=actor)
    stmt = stmt.on_conflict_do_update(
        index_elements=[_POLICIES.c.name],
        set_={
            "source": stmt.excluded.source,
            "sha256": stmt.excluded.sha256,
            "enabled": stmt.excluded.enabled,
            "updated_by": stmt.excluded.updated_by,
            "updated_at": text("now()"),
            "version": _POLICIES.c.version + 1,
        },
    ).returning(*_POLICIES.c)
    row = (await conn.execute(stmt)).mappings().one()
    stored = _stored(row)
    diff = unified_diff(old.source if old is not None else "", source, name)
    entry = await record_change(
        conn,
        subject=db_subject(name),
        origin="db",
        name=name,
        content=source,
        actor=actor,
        status="applied" if enabled else "disabled",
        audit=audit,
        extra={"version": stored.version, "action": "create" if old is None else "update"},
    )
    return PolicyChange(stored, True, diff, entry)


async def delete_policy(conn: Executor, name: str, *, actor: str, audit: AuditLog | None = None) -> PolicyChange:
    old = await get_policy(conn, name, for_update=True)
    if old is None:
        raise PolicyNotFound(f"no database policy named {name!r}")
    await conn.execute(delete(_POLICIES).where(_POLICIES.c.name == name))
    entry = await record_change(
        conn,
        subject=db_subject(name),
        origin="db",
        name=name,
        content=None,
        actor=actor,
        status="deleted",
        audit=audit,
        extra={"version": old.version, "action": "delete"},
    )
    return PolicyChange(None, True, unified_diff(old.source, "", name), entry)


def db_subject(name: str) -> str:
    return f"policy:db:{name}"


def file_subject(name: str) -> str:
    return f"policy:file:{name}"


async def _latest(conn: Executor, subject: str, *, applied_only: bool = False) -> dict[str, Any] | None:
    query = select(_LOG.c.payload).where(_LOG.c.kind == POLICY_CHANGE, _LOG.c.subject == subject)
    if applied_only:
        query = query.where(_LOG.c.payload["status"].astext == "applied")
    payload = (await conn.execute(query.order_by(_LOG.c.id.desc()).limit(1))).scalar_one_or_none()
    return payload if isinstance(payload, dict) else None


async def record_change(
    conn: Executor,
    *,
    subject: str,
    origin: str,
    name: str,
    content: str | None,
    actor: str,
    status: str = "applied",
    errors: Sequence[PolicyIssue] = (),
    extra: dict[str, Any] | None = None,
    audit: AuditLog | None = None,
) -> AuditEntry | None:
    """Append a ``policy_change`` entry unless the latest one for ``subject`` already says the same.

    The audit head is locked first, so replicas recording the same change serialise and only the
    first writes it (through the audit log's definer-rights lock: the insert-only writer role has no
    UPDATE on the head to lock it with).
    """
    audit = audit or AuditLog()
    await audit.lock_head(conn)
    sha = sha256_of(content) if content is not None else None
    latest = await _latest(conn, subject)
    if latest is not None and latest.get("sha256") == sha and latest.get("status") == status:
        return None
    base = latest if latest is not None and latest.get("status") == "applied" else await _latest(conn, subject, applied_only=True)
    before = (base or {}).get("content") or ""
    payload: dict[str, Any] = {
        "origin": origin,
        "name": name,
        "status": status,
        "sha256": sha,
        "previous_sha256": (base or {}).get("sha256"),
        "diff": unified_diff(before, content or "", name),
        "content": content,
    }
    if errors:
        payload["errors"] = [i.to_dict() for i in errors]
    payload.update(extra or {})
    return await audit.append(conn, POLICY_CHANGE, subject, payload, actor)
