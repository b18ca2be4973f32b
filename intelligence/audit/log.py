"""The tamper-evident audit log: append, verify, export.

Appends are serialised across every writer of the database (sidecar replicas, CLI, dashboard) by a
row lock on the one-row ``audit_head`` table, taken by the SECURITY DEFINER function
``llmproxy_audit_lock_head()`` and held until the caller's transaction ends. A database trigger
re-checks that each insert extends the head and moves it, so even a writer that skipped the lock
cannot fork the chain; other triggers refuse UPDATE, DELETE and TRUNCATE. Every method takes the
caller's connection or session and never commits: an audit entry commits or rolls back together
with the change it describes.

Entries are authenticated with the audit key (HMAC-SHA256, :mod:`intelligence.audit.keys`) when
one is configured. The inserts run as the NOLOGIN role ``llmproxy_audit_writer`` (``SET LOCAL
ROLE``, then back) when it exists and the session may assume it: that role can insert and read,
never update, delete or truncate. Verification reports every finding (:mod:`.chain`), compares
the chain with the external checkpoint (:mod:`.checkpoint`) and says whether it could
authenticate the entries at all.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Literal, TextIO, cast

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from .chain import (
    CHECKPOINT_INVALID,
    CHECKPOINT_MISMATCH,
    DELETED,
    DOWNGRADED,
    EDITED,
    GENESIS_HASH,
    HEAD_MISMATCH_KIND,
    RELINKED,
    RESET,
    TRUNCATED,
    AuditEntry,
    ChainVerifier,
    Finding,
    canonical_json,
    format_ts,
    is_keyed,
    mac_key_id,
    seal,
)
from .checkpoint import INVALID, NONE, CheckpointState, configured_path, read_checkpoint
from .keys import AuditKey, audit_key_from_env
from .models import AuditHeadRow, AuditLogRow

log = logging.getLogger("llmproxy.audit")

Executor = AsyncConnection | AsyncSession
ExportFormat = Literal["jsonl", "csv"]
EXPORT_FORMATS: tuple[str, ...] = ("jsonl", "csv")
CSV_COLUMNS = ("id", "ts", "actor", "kind", "subject", "payload", "prev_hash", "hash")
CANNOT_AUTHENTICATE = "cannot authenticate"

# Kinds used by llmproxy itself; any other non-empty name is accepted (the issue lists these "and ...").
POLICY_DECISION = "policy_decision"
KEY_EVENT = "key_event"
CONFIG_CHANGE = "config_change"
POLICY_CHANGE = "policy_change"
AUTOMATED_ACTION = "automated_action"
AUDIT_DROPPED = "audit_dropped"  # the hot-path writer lost entries (queue full): how many, when

WRITER_ROLE = "llmproxy_audit_writer"

_LOG = cast(Table, AuditLogRow.__table__)
_HEAD = cast(Table, AuditHeadRow.__table__)

# Become the insert-only role for this transaction when it exists and the session may (SET LOCAL ROLE
# through set_config; the inner query runs first thanks to OFFSET 0, so ``prev`` is the role before).
# pg_has_role's SET privilege exists from PostgreSQL 16; before it, membership is what SET ROLE needs.
_ASSUME_WRITER = text(
    """
SELECT s.prev, s.can, CASE WHEN s.can THEN set_config('role', :role, true) END AS switched
FROM (
    SELECT current_setting('role') AS prev,
           COALESCE(CASE WHEN current_setting('server_version_num')::int >= 160000
                         THEN pg_has_role(session_user, to_regrole(:role), 'SET')
                         ELSE pg_has_role(session_user, to_regrole(:role), 'MEMBER') END, false) AS can
    OFFSET 0
) s
"""
)
_RESTORE_ROLE = text("SELECT set_config('role', :prev, true)")
# the head row, locked until the transaction ends, through the SECURITY DEFINER function (the writer
# role has no UPDATE on audit_head); at_ts is clock_timestamp() once the lock is granted
_LOCK_HEAD = text("SELECT last_id, hash, at_ts FROM llmproxy_audit_lock_head()")

_UNSET: Any = object()


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
    checked: int  # entries intact before the first finding
    first_broken_id: int | None = None
    reason: str | None = None  # hash mismatch | prev_hash mismatch | missing row | head mismatch | <finding kind>
    detail: str | None = None
    head_id: int | None = None
    head_hash: str | None = None
    entries: int = 0  # entries walked
    findings: tuple[Finding, ...] = ()
    total_findings: int = 0
    authenticated: bool = False  # a key was available and every entry carried a MAC that verified
    key_available: bool = False
    authenticated_entries: int = 0
    legacy_entries: int = 0  # plain SHA-256 entries made before the key: linked, not authenticated
    legacy_range: tuple[int, int] | None = None
    unauthenticated_entries: int = 0  # MACs no key was available to check
    keys: tuple[dict[str, Any], ...] = ()  # per key id: first_id, last_id, entries
    checkpoint: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditLog:
    """The audit log. ``key``: the audit key to MAC new entries with; by default this process's
    (:func:`~intelligence.audit.keys.audit_key_from_env`, read on each append), None for none."""

    def __init__(self, batch_size: int = 2000, *, key: AuditKey | None = _UNSET, writer_role: str | None = WRITER_ROLE):
        self.batch_size = batch_size  # rows per query when verifying or exporting
        self._key = key
        self.writer_role = writer_role
        self._warned: set[str] = set()

    def signing_key(self) -> AuditKey | None:
        return audit_key_from_env() if self._key is _UNSET else self._key

    async def append(self, conn: Executor, kind: str, subject: str, payload: Any, actor: str) -> AuditEntry:
        (entry,) = await self.append_many(conn, [PendingEntry(kind=kind, subject=subject, payload=payload, actor=actor)])
        return entry

    async def lock_head(self, conn: Executor) -> tuple[int, str]:
        """Lock the head until the caller's transaction ends (what appends take); returns (last id, hash).

        Through the writer role like an append, so an application role that holds no rights of its
        own on the audit tables (NOINHERIT membership) can take it."""
        prev_role, switched = await self._assume_writer(conn)
        row = (await conn.execute(_LOCK_HEAD)).one()
        if switched:
            await conn.execute(_RESTORE_ROLE, {"prev": prev_role})
        return row[0], row[1]

    async def _assume_writer(self, conn: Executor) -> tuple[str | None, bool]:
        """SET LOCAL ROLE to the writer role when it exists and the session may; (previous role, switched)."""
        if not self.writer_role:
            return None, False
        row = (await conn.execute(_ASSUME_WRITER, {"role": self.writer_role})).one()
        return row[0], bool(row[1])

    async def append_many(self, conn: Executor, items: Sequence[PendingEntry]) -> list[AuditEntry]:
        """Chain ``items`` in order under one head lock (one lock round trip for a whole batch)."""
        if not items:
            return []
        for item in items:
            if not item.kind or not item.actor:
                raise ValueError("an audit entry needs a kind and an actor")
        key = self.signing_key()
        prev_role, switched = await self._assume_writer(conn)
        try:
            # clock_timestamp(), read after the lock is granted, keeps ts in chain order across replicas
            # whose own clocks disagree
            head = (await conn.execute(_LOCK_HEAD)).one()
            prev, now = (head[0], head[1]), head[2]
            self._warn_key_change(prev[1], key)
            entries: list[AuditEntry] = []
            for item in items:
                entry = seal(prev, now, item.actor, item.kind, item.subject or "", item.payload, key)
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
        except DBAPIError:
            raise  # the transaction is aborted: its rollback undoes SET LOCAL ROLE too
        except Exception:
            if switched:
                await conn.execute(_RESTORE_ROLE, {"prev": prev_role})
            raise
        if switched:  # the caller's transaction goes on as the role it had
            await conn.execute(_RESTORE_ROLE, {"prev": prev_role})
        return entries

    def _warn_key_change(self, head_hash: str, key: AuditKey | None) -> None:
        head_kid = mac_key_id(head_hash)
        if head_kid is None or (key is not None and key.kid == head_kid):
            return
        why = "without an audit key" if key is None else f"with another audit key ({key.kid}, from {key.source})"
        if why not in self._warned:
            self._warned.add(why)
            log.warning(
                "the audit chain is authenticated with key %s but this process appends %s: verification will "
                "report these entries (configure LLMPROXY_AUDIT_KEY or LLMPROXY_AUDIT_KEY_FILE like the gateway's)",
                head_kid,
                why,
            )

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

    def keyring(self, extra: Sequence[AuditKey] = ()) -> list[AuditKey]:
        key = self.signing_key()
        ring = [key] if key is not None else []
        return ring + [k for k in extra if all(k.kid != r.kid for r in ring)]

    async def verify(
        self, conn: Executor, *, keys: Sequence[AuditKey] | None = None, checkpoint: CheckpointState | None = _UNSET
    ) -> VerifyResult:
        """Walk the whole chain from genesis, compare its end with the head and the checkpoint.

        ``keys``: the keys to authenticate with (default: this process's audit key). ``checkpoint``:
        the external anchor to compare with (default: this process's checkpoint file, when one is
        configured: LLMPROXY_AUDIT_CHECKPOINT_FILE or LLMPROXY_DATA_DIR; None: none). Consistent under
        concurrent appends: only entries up to the head read first are walked, and rows past the head
        count as a finding only if a head read *after* them still does not cover them (a real append
        moves the head in the same transaction as its insert).
        """
        ring = list(keys) if keys is not None else self.keyring()
        if checkpoint is _UNSET:
            path = configured_path()
            checkpoint = read_checkpoint(path, ring) if path is not None else None
        head = await self.head(conn)
        cp = checkpoint.checkpoint if checkpoint is not None else None
        verifier = ChainVerifier(keys=ring, watch=frozenset({cp.last_id}) if cp is not None else frozenset())
        async for entry in self.entries(conn, upto_id=head[0]):
            verifier.feed(entry)
        verifier.finish(head)
        max_id = (await conn.execute(select(func.max(_LOG.c.id)))).scalar_one()
        head_now = await self.head(conn)
        if max_id is not None and max_id > head_now[0]:
            verifier.add(
                HEAD_MISMATCH_KIND,
                head_now[0] + 1,
                f"entries {head_now[0] + 1}..{max_id} lie beyond the recorded head: rows were slipped in past it",
            )
        if checkpoint is not None:
            compare_checkpoint(verifier, checkpoint)
        return build_result(verifier, ring, head, checkpoint)

    async def export(self, conn: Executor, out: TextIO, fmt: ExportFormat = "jsonl", since: datetime | None = None) -> int:
        """Write entries with ``ts >= since`` (all if None) in chain order; returns the count.

        Both formats keep prev_hash and hash and the payload's canonical JSON, so an export can be
        re-verified offline (:func:`verify_export`). CSV text cells that a spreadsheet would run as a
        formula are escaped with a leading apostrophe (reversibly: :func:`read_export` undoes it).
        """
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
        # CRLF rows (RFC 4180): with "\n" a cell holding a bare "\r" would be written unquoted
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n") if fmt == "csv" else None
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


def compare_checkpoint(verifier: ChainVerifier, state: CheckpointState) -> None:
    """Findings from the checkpoint: an altered file, a chain shorter than it (truncated) or emptied
    or rewritten from genesis (reset), or a different entry where it points."""
    if state.status == INVALID:
        verifier.add(CHECKPOINT_INVALID, None, f"checkpoint {state.path}: {state.detail}")
    cp = state.checkpoint
    if cp is None or state.status == INVALID:
        return
    when = f"the checkpoint of {cp.time}"
    last_id = verifier.last[0] if verifier.last is not None else 0
    if verifier.entries == 0 and cp.last_id > 0:
        verifier.add(RESET, None, f"the log is empty (back at genesis) but {when} records {cp.count} entries")
        return
    if any(f.kind == RESET for f in verifier.findings):
        return  # already explained: the chain was recomputed from genesis
    # nothing left authenticates although the checkpoint was made with a key we hold: not a cut tail
    # but a chain re-made by someone without the key
    rewritten = bool(verifier.keys) and is_keyed(cp.last_mac) and verifier.authenticated == 0
    if last_id < cp.last_id:
        if rewritten:
            verifier.add(
                RESET,
                1,
                f"none of the {verifier.entries} entries authenticates although {when} (entry {cp.last_id}) was made "
                "with the key: the log was emptied and re-written (or cut back to its unauthenticated legacy entries)",
            )
        elif not any(f.kind == TRUNCATED for f in verifier.findings):
            verifier.add(
                TRUNCATED,
                last_id + 1,
                f"the chain ends at entry {last_id} but {when} records entry {cp.last_id}: rows were removed at the tail",
            )
        return
    stored = verifier.seen.get(cp.last_id)
    if stored is None or stored == cp.last_mac:
        return
    earlier_breaks = [f for f in verifier.findings if f.id is not None and f.id <= cp.last_id and f.kind in (DELETED, RELINKED)]
    if earlier_breaks:
        verifier.add(
            CHECKPOINT_MISMATCH, cp.last_id, f"entry {cp.last_id} is not the one {when} recorded ({cp.last_mac[:32]}...)"
        )
        return
    # the links hold from genesis to the checkpoint's entry, yet it differs: the chain was recomputed
    # (its per-entry MAC failures, if any, are that one event)
    edits = [f for f in verifier.findings if f.kind in (EDITED, DOWNGRADED) and f.id is not None and f.id <= cp.last_id]
    verifier.findings[:] = [f for f in verifier.findings if f not in edits]
    verifier.total_findings -= len(edits)
    verifier.add(
        RESET,
        1,
        f"entry {cp.last_id} is not the one {when} recorded ({cp.last_mac[:32]}...), although the chain links up "
        "from genesis: the log was recomputed from scratch",
    )


def build_result(
    verifier: ChainVerifier, ring: Sequence[AuditKey], head: tuple[int, str] | None, checkpoint: CheckpointState | None
) -> VerifyResult:
    first = verifier.first
    keyed = verifier.entries - verifier.legacy
    cannot = not ring and verifier.unverifiable > 0  # MACs and no key at all: links only
    checked = verifier.entries if first is None or first.id is None else max(0, min(verifier.entries, first.id - 1))
    sources = {k.kid: k.source for k in ring}
    reason = first.reason if first is not None else (CANNOT_AUTHENTICATE if cannot else None)
    detail = first.detail if first is not None else None
    if first is None and cannot:
        detail = (
            f"{verifier.unverifiable} entries carry MACs but no audit key is configured (LLMPROXY_AUDIT_KEY, "
            "LLMPROXY_AUDIT_KEY_FILE, DATA_DIR/audit.key or SECRET_KEY): their links were checked, their "
            "content cannot be authenticated"
        )
    cp_doc: dict[str, Any] | None = None
    if checkpoint is not None:
        cp_doc = checkpoint.to_dict()
        if checkpoint.status not in (NONE, INVALID) and checkpoint.checkpoint is not None:
            cp_kinds = {RESET, TRUNCATED, CHECKPOINT_MISMATCH}
            cp_doc["consistent"] = not any(f.kind in cp_kinds for f in verifier.findings)
    return VerifyResult(
        ok=verifier.ok and not cannot,
        checked=checked,
        first_broken_id=first.id if first is not None else None,
        reason=reason,
        detail=detail,
        head_id=head[0] if head is not None else None,
        head_hash=head[1] if head is not None else None,
        entries=verifier.entries,
        findings=tuple(verifier.findings),
        total_findings=verifier.total_findings,
        authenticated=bool(ring) and verifier.ok and verifier.authenticated == verifier.entries,
        key_available=bool(ring),
        authenticated_entries=verifier.authenticated,
        legacy_entries=verifier.legacy,
        legacy_range=verifier.legacy_ids,
        unauthenticated_entries=verifier.unverifiable if keyed else 0,
        keys=tuple(
            {"kid": kid, "source": sources.get(kid), "first_id": u.first_id, "last_id": u.last_id, "entries": u.entries}
            for kid, u in verifier.key_use.items()
        ),
        checkpoint=cp_doc,
    )


_CSV_TEXT = ("actor", "kind", "subject")


def _csv_escape(value: str) -> str:
    # reversible: a leading apostrophe is added before a formula character and before an apostrophe
    return "'" + value if value.startswith(("=", "+", "-", "@", "\t", "\r", "'")) else value


def csv_row(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "ts": format_ts(entry.ts),
        "actor": _csv_escape(entry.actor),
        "kind": _csv_escape(entry.kind),
        "subject": _csv_escape(entry.subject),
        "payload": canonical_json(entry.payload),
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def read_export(fh: TextIO) -> list[AuditEntry]:
    """Entries from a JSONL or CSV export (the format is told by the first character)."""
    text_ = fh.read()
    if text_.lstrip().startswith("{"):
        return [AuditEntry.from_dict(json.loads(line)) for line in text_.splitlines() if line.strip()]
    import io

    rows = csv.DictReader(io.StringIO(text_, newline=""))
    return [
        AuditEntry.from_dict(
            {**r, **{k: r[k][1:] if r[k].startswith("'") else r[k] for k in _CSV_TEXT}, "payload": json.loads(r["payload"])}
        )
        for r in rows
    ]


def verify_export(entries: Sequence[AuditEntry], keys: Sequence[AuditKey] = ()) -> VerifyResult:
    """Check an export: links, and MACs with ``keys``. One that starts mid-chain is taken from its
    first entry on; without the database's head (or a checkpoint) a cut-off tail cannot be seen here."""
    start = (0, GENESIS_HASH) if entries and entries[0].id == 1 else None
    verifier = ChainVerifier(keys=keys, start=start)
    for entry in entries:
        verifier.feed(entry)
    verifier.finish(None)
    last = verifier.last
    result = build_result(verifier, keys, None, None)
    return replace(result, head_id=last[0] if last else None, head_hash=last[1] if last else None)


def describe(result: VerifyResult) -> str:
    """One paragraph for people: what was checked, what was found, what could not be authenticated."""
    lines: list[str] = []
    if result.findings:
        lines.append(
            f"audit log BROKEN at entry {result.first_broken_id}: {result.reason} ({result.detail}); "
            f"{result.checked} entries before it are intact"
        )
        for f in result.findings:
            lines.append(f"  {f.kind:<20} {'#' + str(f.id) if f.id is not None else '-':<8} {f.detail}")
        if result.total_findings > len(result.findings):
            lines.append(f"  ... {result.total_findings - len(result.findings)} more findings")
    elif result.reason == CANNOT_AUTHENTICATE:
        lines.append(f"audit log NOT authenticated: {result.entries} entries linked, {result.detail}")
    elif result.authenticated:
        lines.append(f"audit log intact and authenticated: {result.entries} entries checked")
    else:
        lines.append(f"audit log links intact: {result.entries} entries checked")
    if result.legacy_entries:
        first, last = result.legacy_range or (0, 0)
        lines.append(
            f"  {result.legacy_entries} legacy entries ({first}..{last}: plain SHA-256, made before the audit key) "
            "are linked but unauthenticated"
        )
    if not result.key_available and result.reason != CANNOT_AUTHENTICATE:
        lines.append("  no audit key configured: nothing could be authenticated, and new entries are not authenticated either")
    for k in result.keys:
        lines.append(f"  key {k['kid']} ({k['source']}): entries {k['first_id']}..{k['last_id']} ({k['entries']}) authenticated")
    if result.head_id is not None and result.head_hash:
        lines.append(f"  head: entry {result.head_id} {result.head_hash[:40]}")
    cp = result.checkpoint
    if cp is not None:
        if cp["status"] == NONE:
            lines.append(f"  checkpoint: none at {cp['path']} (tail truncation and resets cannot be detected)")
        else:
            state = "consistent" if cp.get("consistent") else ("INCONSISTENT" if "consistent" in cp else cp["status"])
            at = f"entry {cp['last_id']} at {cp['time']}" if "last_id" in cp else ""
            lines.append(f"  checkpoint: {cp['status']}, {state} {at} ({cp['path']}; {cp['detail']})")
    return "\n".join(lines)
