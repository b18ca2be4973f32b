"""The tamper-evident audit log: append, verify, export.

Appends are serialised across every writer of the database (sidecar replicas, CLI, dashboard) by a
row lock on the one-row ``audit_head`` table, taken with SELECT ... FOR UPDATE and held until the
caller's transaction ends. A database trigger re-checks that each insert extends the head and moves
it, so even a writer that skipped the lock cannot fork the chain; other triggers refuse UPDATE, DELETE
and TRUNCATE. Every method takes the caller's connection or session and never commits: an audit
entry commits or rolls back together with the change it describes.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal, TextIO

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from .chain import GENESIS_HASH, HEAD_MISMATCH, AuditEntry, ChainChecker, canonical_json, format_ts, seal
from .models import AuditHeadRow, AuditLogRow

Executor = AsyncConnection | AsyncSession
ExportFormat = Literal["jsonl", "csv"]
EXPORT_FORMATS: tuple[str, ...] = ("jsonl", "csv")
CSV_COLUMNS = ("id", "ts", "actor", "kind", "subject", "payload", "prev_hash", "hash")

# Kinds used by llmproxy itself; any other non-empty name is accepted (the issue lists these "and ...").
POLICY_DECISION = "policy_decision"
KEY_EVENT = "key_event"
CONFIG_CHANGE = "config_change"
POLICY_CHANGE = "policy_change"
AUTOMATED_ACTION = "automated_action"

_LOG = AuditLogRow.__table__
_HEAD = AuditHeadRow.__table__


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """An entry not yet on the chain (what callers hand to :meth:`AuditLog.append_many`)."""

    kind: str
    subject: str
    payload: Any
    actor: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    first_broken_id: int | None = None
    reason: str | None = None  # hash mismatch | prev_hash mismatch | missing row | head mismatch
    detail: str | None = None
    head_id: int | None = None
    head_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditLog:
    def __init__(self, batch_size: int = 2000):
        self.batch_size = batch_size  # rows per query when verifying or exporting

    async def append(self, conn: Executor, kind: str, subject: str, payload: Any, actor: str) -> AuditEntry:
        (entry,) = await self.append_many(conn, [PendingEntry(kind=kind, subject=subject, payload=payload, actor=actor)])
        return entry

    async def append_many(self, conn: Executor, items: Sequence[PendingEntry]) -> list[AuditEntry]:
        """Chain ``items`` in order under one head lock (one lock round trip for a whole batch)."""
        if not items:
            return []
        for item in items:
            if not item.kind or not item.actor:
                raise ValueError("an audit entry needs a kind and an actor")
        # clock_timestamp(), read after the lock is granted, keeps ts in chain order across replicas
        # whose own clocks disagree.
        row = (
            await conn.execute(
                select(_HEAD.c.last_id, _HEAD.c.hash, func.clock_timestamp()).where(_HEAD.c.id == 1).with_for_update()
            )
        ).one()
        prev, now = (row[0], row[1]), row[2]
        entries: list[AuditEntry] = []
        for item in items:
            entry = seal(prev, now, item.actor, item.kind, item.subject or "", item.payload)
            entries.append(entry)
            prev = (entry.id, entry.hash)
        await conn.execute(
            insert(_LOG),
            [
                {
                    "id": e.id,
                    "ts": e.ts,
                    "actor": e.actor,
                    "kind": e.kind,
                    "subject": e.subject,
                    "payload": e.payload,
                    "prev_hash": e.prev_hash,
                    "hash": e.hash,
                }
                for e in entries
            ],
        )
        return entries

    async def head(self, conn: Executor) -> tuple[int, str]:
        row = (await conn.execute(select(_HEAD.c.last_id, _HEAD.c.hash).where(_HEAD.c.id == 1))).one_or_none()
        return (row[0], row[1]) if row is not None else (0, GENESIS_HASH)

    async def entries(
        self, conn: Executor, *, since: datetime | None = None, after_id: int = 0, upto_id: int | None = None
    ) -> AsyncIterator[AuditEntry]:
        """Entries in id order, fetched in keyset pages (no long-lived server-side cursor)."""
        while True:
            query = select(_LOG).where(_LOG.c.id > after_id).order_by(_LOG.c.id).limit(self.batch_size)
            if since is not None:
                query = query.where(_LOG.c.ts >= since)
            if upto_id is not None:
                query = query.where(_LOG.c.id <= upto_id)
            rows = (await conn.execute(query)).mappings().all()
            for r in rows:
                yield AuditEntry(
                    id=r["id"],
                    ts=r["ts"],
                    actor=r["actor"],
                    kind=r["kind"],
                    subject=r["subject"],
                    payload=r["payload"],
                    prev_hash=r["prev_hash"],
                    hash=r["hash"],
                )
            if len(rows) < self.batch_size:
                return
            after_id = rows[-1]["id"]

    async def verify(self, conn: Executor) -> VerifyResult:
        """Walk the whole chain from genesis and compare its end with the head.

        Consistent under concurrent appends: only entries up to the head read first are walked, and
        rows past the head count as broken only if a head read *after* them still does not cover
        them (a real append moves the head in the same transaction as its insert).
        """
        head = await self.head(conn)
        checker = ChainChecker()
        async for entry in self.entries(conn, upto_id=head[0]):
            if not checker.feed(entry):
                break
        broken = checker.finish(head)
        if broken is None:
            max_id = (await conn.execute(select(func.max(_LOG.c.id)))).scalar_one()
            head_now = await self.head(conn)
            if max_id is not None and max_id > head_now[0]:
                return VerifyResult(
                    ok=False,
                    checked=checker.checked,
                    first_broken_id=head_now[0] + 1,
                    reason=HEAD_MISMATCH,
                    head_id=head_now[0],
                    head_hash=head_now[1],
                    detail=f"entries {head_now[0] + 1}..{max_id} lie beyond the recorded head",
                )
            return VerifyResult(ok=True, checked=checker.checked, head_id=head[0], head_hash=head[1])
        return VerifyResult(
            ok=False,
            checked=checker.checked,
            first_broken_id=broken.entry_id,
            reason=broken.reason,
            detail=broken.detail,
            head_id=head[0],
            head_hash=head[1],
        )

    async def export(self, conn: Executor, out: TextIO, fmt: ExportFormat = "jsonl", since: datetime | None = None) -> int:
        """Write entries with ``ts >= since`` (all if None) in chain order; returns the count.

        Both formats keep prev_hash and hash and the payload's canonical JSON, so an export can be
        re-verified offline (:func:`verify_export`).
        """
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n") if fmt == "csv" else None
        if writer is not None:
            writer.writeheader()
        count = 0
        async for entry in self.entries(conn, since=since):
            if writer is not None:
                writer.writerow(csv_row(entry))
            else:
                out.write(json.dumps(entry.to_dict(), ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
        return count


def csv_row(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "ts": format_ts(entry.ts),
        "actor": entry.actor,
        "kind": entry.kind,
        "subject": entry.subject,
        "payload": canonical_json(entry.payload),
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def read_export(fh: TextIO) -> list[AuditEntry]:
    """Entries from a JSONL or CSV export (the format is told by the first character)."""
    text = fh.read()
    if text.lstrip().startswith("{"):
        return [AuditEntry.from_dict(json.loads(line)) for line in text.splitlines() if line.strip()]
    rows = csv.DictReader(text.splitlines())
    return [AuditEntry.from_dict({**r, "payload": json.loads(r["payload"])}) for r in rows]


def verify_export(entries: Sequence[AuditEntry]) -> VerifyResult:
    """Check the links inside an export. One that starts mid-chain is taken from its first entry on;
    without the database's head a cut-off tail cannot be seen here."""
    start = (0, GENESIS_HASH) if entries and entries[0].id == 1 else None
    checker = ChainChecker(start)
    for entry in entries:
        if not checker.feed(entry):
            break
    b = checker.broken
    last = checker.last
    if b is None:
        return VerifyResult(
            ok=True, checked=checker.checked, head_id=last[0] if last else None, head_hash=last[1] if last else None
        )
    return VerifyResult(ok=False, checked=checker.checked, first_broken_id=b.entry_id, reason=b.reason, detail=b.detail)
