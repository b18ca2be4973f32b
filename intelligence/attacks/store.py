"""Adding, disabling, listing and loading learned attacks (the ``attack_memory`` table).

Every function takes the caller's connection (or session) and never commits: a row, its audit entry
and (for a confirmation) the verdict's update commit together. The statement trigger of migration
0009 notifies ``llmproxy_attack_memory`` on every change; the sidecar reloads on it.

Texts must already be in the form the request log stores (redacted): the table is readable by every
operator and shown in the CLI, so it must never hold what the gateway redacted. Vectors are made with
the inline detector's own embedding and pre-processing (normalise, head and tail), so a stored attack
and a scanned segment are compared exactly as the detector compares them with the shipped seed.
"""

from __future__ import annotations

import asyncio
import hashlib
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from intelligence.attacks.models import ATTACK_DIM
from intelligence.audit import AuditLog
from intelligence.detectors.memory import EMBEDDING_MODEL, KnownAttack
from intelligence.memory.repository import vec_arg

Executor = AsyncConnection | AsyncSession
Embed = Callable[[Sequence[str]], np.ndarray]

AUDIT_KIND = "attack_memory"
MAX_TEXT_CHARS = 8000  # a longer segment is judged on its head and tail anyway (embed_input)
_COLUMNS = "id, text, text_hash, family, source, model, verdict_id, added_by, created_at, disabled_at, disabled_by"


@dataclass(frozen=True, slots=True)
class AttackRecord:
    id: int
    text: str
    text_hash: str
    family: str
    source: str
    model: str
    verdict_id: int | None
    added_by: str
    created_at: datetime
    disabled_at: datetime | None
    disabled_by: str | None

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "family": self.family,
            "source": self.source,
            "model": self.model,
            "verdict_id": self.verdict_id,
            "added_by": self.added_by,
            "created_at": self.created_at.isoformat(),
            "active": self.active,
            "disabled_at": self.disabled_at.isoformat() if self.disabled_at else None,
            "disabled_by": self.disabled_by,
        }


def normalise_text(text: str) -> str:
    """Canonical stored form: NFKC, whitespace runs collapsed, bounded length."""
    return " ".join(unicodedata.normalize("NFKC", text).split())[:MAX_TEXT_CHARS]


def text_hash(text: str) -> str:
    """Identity of an attack text: case does not matter (the detector's tokenizer is uncased)."""
    return hashlib.sha256(normalise_text(text).casefold().encode("utf-8")).hexdigest()


def detector_view(text: str) -> str:
    """What the inline detector embeds for a segment with this text (see InjectionDetector.scan)."""
    from intelligence.detectors.injection import embed_input
    from intelligence.detectors.normalize import normalize

    return embed_input(normalize(text).text)


def static_embed() -> Embed:
    """The detector's static embedding (loads the cached table; builds it on first use if absent)."""
    from intelligence.detectors.static_embed import shared_static_embedder

    return shared_static_embedder().encode


async def embed_attack(text: str, embed: Embed | None = None) -> np.ndarray:
    def run() -> np.ndarray:
        fn = embed or static_embed()
        return np.asarray(fn([detector_view(text)])[0], dtype=np.float32)

    return await asyncio.to_thread(run)  # table load and tokenizer: off the event loop


def _record(row: Any) -> AttackRecord:
    return AttackRecord(**{k: row[k] for k in AttackRecord.__slots__})


async def get_attack(conn: Executor, attack_id: int) -> AttackRecord:
    row = (
        (await conn.execute(sql(f"SELECT {_COLUMNS} FROM attack_memory WHERE id = :id"), {"id": attack_id}))
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise LookupError(f"no learned attack {attack_id}")
    return _record(row)


async def add_attack(
    conn: Executor,
    text: str,
    family: str,
    *,
    source: str,
    added_by: str,
    verdict_id: int | None = None,
    embed: Embed | None = None,
    audit: bool = True,
) -> tuple[AttackRecord, bool]:
    """Remember an attack; returns (row, changed).

    Idempotent on the normalised text: an active row with the same text is returned unchanged
    (changed=False); a disabled one is enabled again (the latest ruling wins). ``audit=False`` is for
    a caller that records the addition in its own audit entry (a verdict's confirmation).
    Empty text, family or actor -> ValueError.
    """
    stored = normalise_text(text)
    if not stored:
        raise ValueError("an attack needs a text")
    if not family.strip() or not added_by or not source:
        raise ValueError("an attack needs a family, a source and who added it")
    digest = text_hash(stored)
    existing = (
        (await conn.execute(sql(f"SELECT {_COLUMNS} FROM attack_memory WHERE text_hash = :h FOR UPDATE"), {"h": digest}))
        .mappings()
        .one_or_none()
    )
    if existing is not None and existing["disabled_at"] is None:
        return _record(existing), False
    vector = await embed_attack(stored, embed)
    params = {
        "text": stored,
        "h": digest,
        "family": family.strip(),
        "source": source,
        "model": EMBEDDING_MODEL,
        "v": vec_arg(vector),
        "vid": verdict_id,
        "by": added_by,
    }
    row = (
        (
            await conn.execute(
                sql(
                    "INSERT INTO attack_memory (text, text_hash, family, source, model, embedding, verdict_id, added_by) "
                    "VALUES (:text, :h, :family, :source, :model, CAST(:v AS real[])::vector, :vid, :by) "
                    "ON CONFLICT (text_hash) DO UPDATE SET family = EXCLUDED.family, source = EXCLUDED.source, "
                    "model = EXCLUDED.model, embedding = EXCLUDED.embedding, verdict_id = EXCLUDED.verdict_id, "
                    "added_by = EXCLUDED.added_by, created_at = now(), disabled_at = NULL, disabled_by = NULL "
                    f"RETURNING {_COLUMNS}"
                ),
                params,
            )
        )
        .mappings()
        .one()
    )
    record = _record(row)
    if audit:
        await AuditLog().append(
            conn,
            AUDIT_KIND,
            f"attack:{record.id}",
            {
                "action": "add" if existing is None else "enable",
                "id": record.id,
                "family": record.family,
                "source": record.source,
                "verdict_id": verdict_id,
                "text_hash": digest,
            },
            added_by,
        )
    return record, True


async def disable_attack(
    conn: Executor, attack_id: int, *, actor: str, reason: str | None = None, audit: bool = True
) -> tuple[AttackRecord, bool]:
    """Stop using an attack (the row stays, for the record); returns (row, changed). Unknown id -> LookupError."""
    if not actor:
        raise ValueError("disabling an attack needs an actor")
    row = (
        (
            await conn.execute(
                sql(
                    f"UPDATE attack_memory SET disabled_at = now(), disabled_by = :by WHERE id = :id AND disabled_at IS NULL "
                    f"RETURNING {_COLUMNS}"
                ),
                {"id": attack_id, "by": actor},
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        return await get_attack(conn, attack_id), False
    record = _record(row)
    if audit:
        await AuditLog().append(
            conn,
            AUDIT_KIND,
            f"attack:{record.id}",
            {"action": "disable", "id": record.id, "reason": reason, "verdict_id": record.verdict_id},
            actor,
        )
    return record, True


async def list_attacks(conn: Executor, *, include_disabled: bool = True, limit: int = 1000) -> list[AttackRecord]:
    """Newest first."""
    where = "true" if include_disabled else "disabled_at IS NULL"
    rows = (
        (
            await conn.execute(
                sql(f"SELECT {_COLUMNS} FROM attack_memory WHERE {where} ORDER BY created_at DESC, id DESC LIMIT :limit"),
                {"limit": max(1, min(int(limit), 100_000))},
            )
        )
        .mappings()
        .all()
    )
    return [_record(r) for r in rows]


async def memory_version(conn: Executor, model: str = EMBEDDING_MODEL) -> tuple[Any, ...]:
    """A small stamp that moves whenever the active learned attacks change (a reload reads rows only then)."""
    row = (
        await conn.execute(
            sql(
                "SELECT count(*) FILTER (WHERE disabled_at IS NULL) AS active, coalesce(max(id), 0) AS max_id, "
                "max(created_at) AS last_added, max(disabled_at) AS last_disabled FROM attack_memory WHERE model = :model"
            ),
            {"model": model},
        )
    ).one()
    return tuple(row)


async def load_active(conn: Executor, model: str = EMBEDDING_MODEL) -> tuple[list[KnownAttack], np.ndarray]:
    """The active attacks embedded with ``model``, in id order, and their vectors (n x 384).

    Vectors travel in pgvector's binary form (``vector_send``: 2-byte dimension, 2 unused bytes,
    big-endian float4s): parsing the text form costs ~0.15 ms a row, on the sidecar's event loop."""
    rows = (
        (
            await conn.execute(
                sql(
                    "SELECT text, family, source, vector_send(embedding) AS embedding FROM attack_memory "
                    "WHERE disabled_at IS NULL AND model = :model ORDER BY id"
                ),
                {"model": model},
            )
        )
        .mappings()
        .all()
    )
    items = [KnownAttack(r["text"], r["family"], r["source"]) for r in rows]
    if not rows:
        return items, np.zeros((0, ATTACK_DIM), dtype=np.float32)
    return items, np.stack([_from_binary(r["embedding"]) for r in rows])


def _from_binary(raw: bytes) -> np.ndarray:
    dim = int.from_bytes(raw[:2], "big")
    return np.frombuffer(raw, dtype=">f4", count=dim, offset=4).astype(np.float32)
