"""The hash chain itself: canonical content, entry MACs and hashes, streaming checkers. No database here.

An entry's authenticator covers the previous entry's and the entry's own content (id, timestamp,
actor, kind, subject, payload):

* with an audit key (:mod:`intelligence.audit.keys`): ``hmac-sha256:<kid>:<hex>`` where hex is
  ``HMAC-SHA256(entry_key, prev_hash + canonical_json(content))``; only a key holder can make or
  re-make one, so a rewritten chain no longer verifies;
* without one (every entry made before the key existed): the legacy ``sha256(prev_hash +
  canonical_json(content))``, 64 hex digits. It links entries but authenticates nothing: anyone
  with write access can recompute it. Verification reports such entries as legacy, unauthenticated.

The canonical form must be reproducible from what Postgres hands back, so payloads are normalised
*before* they are stored: jsonb keeps neither key order nor the spelling of numbers (``1e16`` comes
back as ``10000000000000000``), hence integral floats become ints and the JSON is written with
sorted keys and no whitespace.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from intelligence.store.sanitize import clean_json, clean_text

from .keys import AuditKey

GENESIS_HASH = "0" * 64
MAC_PREFIX = "hmac-sha256:"
_LEGACY = re.compile(r"[0-9a-f]{64}")
_KEYED = re.compile(r"hmac-sha256:([0-9a-f]{16}):([0-9a-f]{64})")

# Reasons verify reports; stable strings, the CLI and tests match on them.
HASH_MISMATCH = "hash mismatch"
PREV_HASH_MISMATCH = "prev_hash mismatch"
MISSING_ROW = "missing row"
HEAD_MISMATCH = "head mismatch"
UNKNOWN_KEY_REASON = "unknown key"

# Finding kinds (docs/keys-and-audit.md): each names one way the log was changed.
EDITED = "edited"  # an entry's content no longer matches its MAC / hash
RELINKED = "relinked"  # an entry does not link to the one before it (re-made entry, spliced rows)
DELETED = "deleted"  # ids missing inside the chain
TRUNCATED = "truncated"  # rows missing at the tail: the head or the checkpoint records more
RESET = "reset"  # the chain was emptied or recomputed from genesis without the key
DOWNGRADED = "downgraded"  # an entry without MAC after authenticated ones
UNKNOWN_KEY = "unknown_key"  # MACs made with a key this verifier does not hold
HEAD_MISMATCH_KIND = "head_mismatch"  # the head row disagrees with the chain's end, or rows lie past it
CHECKPOINT_INVALID = "checkpoint_invalid"  # the checkpoint file's signature does not verify
CHECKPOINT_MISMATCH = "checkpoint_mismatch"  # the checkpointed entry differs, the chain being broken before it

_REASONS = {
    EDITED: HASH_MISMATCH,
    RELINKED: PREV_HASH_MISMATCH,
    DELETED: MISSING_ROW,
    TRUNCATED: MISSING_ROW,
    HEAD_MISMATCH_KIND: HEAD_MISMATCH,
    UNKNOWN_KEY: UNKNOWN_KEY_REASON,
}


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


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    id: int | None  # the first entry concerned (None: the log as a whole)
    detail: str

    @property
    def reason(self) -> str:
        """The older one-phrase reason (hash mismatch, missing row, ...) for callers that show one."""
        return _REASONS.get(self.kind, self.kind)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "detail": self.detail}


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


def _message(prev_hash: str, id: int, ts: datetime, actor: str, kind: str, subject: str, payload: Any) -> bytes:
    content = {"id": id, "ts": format_ts(ts), "actor": actor, "kind": kind, "subject": subject, "payload": payload}
    return (prev_hash + canonical_json(content)).encode("utf-8")


def entry_hash(
    prev_hash: str,
    *,
    id: int,
    ts: datetime,
    actor: str,
    kind: str,
    subject: str,
    payload: Any,
    key: AuditKey | None = None,
) -> str:
    """The entry's authenticator: ``hmac-sha256:<kid>:<hex>`` with ``key``, the legacy SHA-256 without."""
    message = _message(prev_hash, id, ts, actor, kind, subject, payload)
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return f"{MAC_PREFIX}{key.kid}:{key.entry_mac(message)}"


def mac_key_id(stored: str) -> str | None:
    """The key id in a keyed authenticator, None for a legacy hash (or anything else)."""
    m = _KEYED.fullmatch(stored)
    return m[1] if m else None


def is_keyed(stored: str) -> bool:
    return stored.startswith(MAC_PREFIX)


def seal(
    prev: tuple[int, str], ts: datetime, actor: str, kind: str, subject: str, payload: Any, key: AuditKey | None = None
) -> AuditEntry:
    """The next entry after ``prev`` = (last id, last hash), with its MAC (or legacy hash) computed."""
    last_id, prev_hash = prev
    actor, kind, subject = clean_text(actor), clean_text(kind), clean_text(subject)
    payload = normalise_payload(payload)
    new_id = last_id + 1
    digest = entry_hash(prev_hash, id=new_id, ts=ts, actor=actor, kind=kind, subject=subject, payload=payload, key=key)
    return AuditEntry(
        id=new_id, ts=ts, actor=actor, kind=kind, subject=subject, payload=payload, prev_hash=prev_hash, hash=digest
    )


def check_entry(e: AuditEntry, keys: Mapping[str, AuditKey]) -> str:
    """How the entry's own authenticator fares: ``ok`` (MAC verified), ``legacy`` (a matching SHA-256),
    ``unverifiable`` (a MAC, no key at all to check it), ``unknown_key`` (a MAC under a key not held),
    ``bad`` (does not match, or malformed)."""
    args = dict(id=e.id, ts=e.ts, actor=e.actor, kind=e.kind, subject=e.subject, payload=e.payload)
    if _LEGACY.fullmatch(e.hash):
        return "legacy" if hmac.compare_digest(entry_hash(e.prev_hash, **args), e.hash) else "bad"
    m = _KEYED.fullmatch(e.hash)
    if m is None:
        return "bad"
    if not keys:
        return "unverifiable"
    key = keys.get(m[1])
    if key is None:
        return "unknown_key"
    return "ok" if hmac.compare_digest(entry_hash(e.prev_hash, key=key, **args), e.hash) else "bad"


class ChainChecker:
    """Feed entries in id order; the first broken link is kept, later ones are not looked at.

    ``start`` is the (id, hash) the first entry must follow: (0, GENESIS_HASH) for a whole log,
    or None to accept whatever the first entry claims (an export that starts mid-chain). Keyed
    entries are checked with ``keys`` (a MAC under a key not given breaks the chain); a MAC with
    no keys at all is taken on trust here (:class:`ChainVerifier` reports it as unauthenticated).
    """

    def __init__(self, start: tuple[int, str] | None = (0, GENESIS_HASH), keys: Sequence[AuditKey] = ()):
        self.last: tuple[int, str] | None = start
        self.checked = 0
        self.broken: ChainBreak | None = None
        self._keys = {k.kid: k for k in keys}

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
        state = check_entry(e, self._keys)
        if state == "bad":
            self.broken = ChainBreak(e.id, HASH_MISMATCH, "the stored content does not match the stored hash")
            return False
        if state == "unknown_key":
            self.broken = ChainBreak(e.id, UNKNOWN_KEY_REASON, f"entry {e.id} was authenticated with key {mac_key_id(e.hash)}")
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


@dataclass
class _KeyUse:
    first_id: int
    last_id: int
    entries: int = 0


@dataclass
class ChainVerifier:
    """Walks a whole chain (entries in id order) and reports every finding, not only the first.

    After a break it keeps going: each entry's own MAC is still checked, and the links from there on,
    so one deleted row does not hide an edit further on. At most ``max_findings`` are kept (the
    count goes on). ``watch`` lists ids whose stored hash to remember (the checkpoint's entry).
    """

    keys: Sequence[AuditKey] = ()
    start: tuple[int, str] | None = (0, GENESIS_HASH)
    max_findings: int = 100
    watch: frozenset[int] = frozenset()
    findings: list[Finding] = field(default_factory=list)
    total_findings: int = 0
    entries: int = 0
    authenticated: int = 0
    legacy: int = 0
    legacy_ids: tuple[int, int] | None = None  # (first, last) legacy entry
    unverifiable: int = 0  # keyed entries with no key at all to check them
    link_breaks: int = 0
    mac_failures: int = 0
    first_failed_id: int | None = None
    keyed_seen: int | None = None  # the first entry carrying a MAC
    last: tuple[int, str] | None = None
    seen: dict[int, str] = field(default_factory=dict)
    key_use: dict[str, _KeyUse] = field(default_factory=dict)
    _unknown: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._keyring = {k.kid: k for k in self.keys}
        self.last = self.start

    def add(self, kind: str, id: int | None, detail: str) -> None:
        self.total_findings += 1
        if len(self.findings) < self.max_findings:
            self.findings.append(Finding(kind, id, detail))

    def feed(self, e: AuditEntry) -> None:
        self.entries += 1
        if e.id in self.watch:
            self.seen[e.id] = e.hash
        if self.last is not None:
            last_id, last_hash = self.last
            if e.id != last_id + 1:
                self.link_breaks += 1
                missing = f"entry {last_id + 1}" if e.id == last_id + 2 else f"entries {last_id + 1}..{e.id - 1}"
                self.add(DELETED, last_id + 1, f"{missing} missing (the entry after {last_id} is {e.id}): rows were deleted")
            elif e.prev_hash != last_hash:
                self.link_breaks += 1
                self.add(
                    RELINKED,
                    e.id,
                    f"entry {e.id} does not link to entry {last_id} (its prev_hash is not that entry's MAC): "
                    "an entry before it was re-made, or rows were spliced",
                )
        state = check_entry(e, self._keyring)
        kid = mac_key_id(e.hash)
        if kid is not None and self.keyed_seen is None:
            self.keyed_seen = e.id
        if state == "ok":
            self.authenticated += 1
            assert kid is not None
            use = self.key_use.setdefault(kid, _KeyUse(e.id, e.id))
            use.last_id, use.entries = e.id, use.entries + 1
        elif state == "legacy":
            if self.keyed_seen is not None:
                self._failed(e.id)
                self.add(
                    DOWNGRADED,
                    e.id,
                    f"entry {e.id} has a plain SHA-256 hash although entries from {self.keyed_seen} on carry MACs: "
                    "rewritten by someone without the key (or written by a process without the audit key)",
                )
            else:
                self.legacy += 1
                first = self.legacy_ids[0] if self.legacy_ids else e.id
                self.legacy_ids = (first, e.id)
        elif state == "unverifiable":
            self.unverifiable += 1
        elif state == "unknown_key":
            assert kid is not None
            self._unknown.setdefault(kid, []).append(e.id)
        else:
            self._failed(e.id)
            self.add(EDITED, e.id, f"entry {e.id}'s content does not match its {'MAC' if kid else 'hash'}: it was edited")
        self.last = (e.id, e.hash)

    def _failed(self, entry_id: int) -> None:
        self.mac_failures += 1
        if self.first_failed_id is None:
            self.first_failed_id = entry_id

    def finish(self, head: tuple[int, str] | None) -> None:
        """Compare the end with the head, then summarise: unknown keys, a chain recomputed from genesis."""
        for kid, ids in self._unknown.items():
            self.add(
                UNKNOWN_KEY,
                ids[0],
                f"{len(ids)} entries (first {ids[0]}, last {ids[-1]}) carry MACs made with key {kid}, which this "
                "verifier does not hold (a rotated key: pass it with --key-file; otherwise forged)",
            )
        if head is not None and self.last is not None:
            head_id, head_hash = head
            last_id, last_hash = self.last
            if head_id > last_id:
                self.add(
                    TRUNCATED,
                    last_id + 1,
                    f"the chain ends at entry {last_id} but the head records entry {head_id}: rows were removed at the tail",
                )
            elif head_id < last_id or head_hash != last_hash:
                self.add(
                    HEAD_MISMATCH_KIND,
                    head_id + 1 if head_id < last_id else last_id,
                    f"the head (entry {head_id}, {head_hash[:24]}...) does not match the chain's last entry {last_id}",
                )
        self._collapse_reset()

    def _collapse_reset(self) -> None:
        """Every entry from genesis on fails its MAC, yet the links all hold: the whole chain was
        recomputed by someone without the key. One finding says so instead of one per entry."""
        if not self._keyring or self.start != (0, GENESIS_HASH) or self.authenticated or self.link_breaks:
            return
        if self.first_failed_id != 1 or self.mac_failures == 0:
            return
        self.findings = [f for f in self.findings if f.kind not in (EDITED, DOWNGRADED)]
        self.total_findings -= self.mac_failures
        self.add(
            RESET,
            1,
            f"none of the {self.entries} entries authenticates with the key although they link up from genesis: "
            "the log was recomputed from scratch by someone without the key",
        )

    @property
    def ok(self) -> bool:
        return self.total_findings == 0

    @property
    def first(self) -> Finding | None:
        candidates = [f for f in self.findings if f.id is not None]
        if candidates:
            return min(candidates, key=lambda f: f.id or 0)
        return self.findings[0] if self.findings else None
