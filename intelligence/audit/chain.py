"""The hash chain itself: canonical content, entry hashes and a streaming checker. No database here.

An entry's hash is ``sha256(prev_hash + canonical_json(content))`` where the content is the entry's
id, timestamp, actor, kind, subject and payload. The canonical form must be reproducible from what
Postgres hands back, so payloads are normalised *before* they are stored: jsonb keeps neither key order
nor the spelling of numbers (``1e16`` comes back as ``10000000000000000``), hence integral floats become
ints and the JSON is written with sorted keys and no whitespace.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from intelligence.store.sanitize import clean_json, clean_text

GENESIS_HASH = "0" * 64

# Reasons verify reports; stable strings, the CLI and tests match on them.
HASH_MISMATCH = "hash mismatch"
PREV_HASH_MISMATCH = "prev_hash mismatch"
MISSING_ROW = "missing row"
HEAD_MISMATCH = "head mismatch"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    ts: datetime
    actor: str
    kind: str
    subject: str
    payload: Any
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": format_ts(self.ts),
            "actor": self.actor,
            "kind": self.kind,
            "subject": self.subject,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditEntry:
        ts = datetime.fromisoformat(d["ts"]) if isinstance(d["ts"], str) else d["ts"]
        return cls(
            id=int(d["id"]),
            ts=ts,
            actor=d["actor"],
            kind=d["kind"],
            subject=d["subject"],
            payload=d["payload"],
            prev_hash=d["prev_hash"],
            hash=d["hash"],
        )


@dataclass(frozen=True, slots=True)
class ChainBreak:
    entry_id: int
    reason: str
    detail: str


def normalise_payload(value: Any) -> Any:
    """``value`` as it will come back from jsonb: storable strings, no NaN, integral floats as ints."""
    return _numbers(clean_json(value))


def _numbers(value: Any) -> Any:
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def format_ts(ts: datetime) -> str:
    # Postgres keeps microseconds; a fixed format keeps the hash independent of how ts was built.
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_json(value: Any) -> str:
    return json.dumps(_numbers(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(prev_hash: str, *, id: int, ts: datetime, actor: str, kind: str, subject: str, payload: Any) -> str:
    content = {"id": id, "ts": format_ts(ts), "actor": actor, "kind": kind, "subject": subject, "payload": payload}
    return hashlib.sha256((prev_hash + canonical_json(content)).encode("utf-8")).hexdigest()


def seal(prev: tuple[int, str], ts: datetime, actor: str, kind: str, subject: str, payload: Any) -> AuditEntry:
    """The next entry after ``prev`` = (last id, last hash), with its hash computed."""
    last_id, prev_hash = prev
    actor, kind, subject = clean_text(actor), clean_text(kind), clean_text(subject)
    payload = normalise_payload(payload)
    new_id = last_id + 1
    digest = entry_hash(prev_hash, id=new_id, ts=ts, actor=actor, kind=kind, subject=subject, payload=payload)
    return AuditEntry(
        id=new_id, ts=ts, actor=actor, kind=kind, subject=subject, payload=payload, prev_hash=prev_hash, hash=digest
    )


class ChainChecker:
    """Feed entries in id order; the first broken link is kept, later ones are not looked at.

    ``start`` is the (id, hash) the first entry must follow: (0, GENESIS_HASH) for a whole log,
    or None to accept whatever the first entry claims (an export that starts mid-chain).
    """

    def __init__(self, start: tuple[int, str] | None = (0, GENESIS_HASH)):
        self.last: tuple[int, str] | None = start
        self.checked = 0
        self.broken: ChainBreak | None = None

    def feed(self, e: AuditEntry) -> bool:
        """False once the chain is broken (at this entry or before)."""
        if self.broken is not None:
            return False
        if self.last is not None:
            last_id, last_hash = self.last
            if e.id != last_id + 1:
                self.broken = ChainBreak(
                    last_id + 1, MISSING_ROW, f"entry {last_id + 1} is missing (the entry after {last_id} is {e.id})"
                )
                return False
            if e.prev_hash != last_hash:
                self.broken = ChainBreak(
                    e.id, PREV_HASH_MISMATCH, f"prev_hash {e.prev_hash[:16]}... is not the hash of entry {last_id}"
                )
                return False
        digest = entry_hash(e.prev_hash, id=e.id, ts=e.ts, actor=e.actor, kind=e.kind, subject=e.subject, payload=e.payload)
        if digest != e.hash:
            self.broken = ChainBreak(e.id, HASH_MISMATCH, "the stored content does not match the stored hash")
            return False
        self.last = (e.id, e.hash)
        self.checked += 1
        return True

    def finish(self, head: tuple[int, str] | None) -> ChainBreak | None:
        """Compare the end of the chain with the recorded head (catches rows cut off the tail)."""
        if self.broken is not None or head is None:
            return self.broken
        head_id, head_hash = head
        last_id, last_hash = self.last or (0, GENESIS_HASH)
        if head_id > last_id:
            self.broken = ChainBreak(
                last_id + 1, MISSING_ROW, f"the chain ends at entry {last_id} but the head records entry {head_id}"
            )
        elif head_id < last_id or head_hash != last_hash:
            self.broken = ChainBreak(
                head_id + 1 if head_id < last_id else last_id,
                HEAD_MISMATCH,
                f"the head (entry {head_id}, {head_hash[:16]}...) does not match the chain's last entry {last_id}",
            )
        return self.broken
