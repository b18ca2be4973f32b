"""The audit chain's head, anchored outside the database: a signed checkpoint file and a webhook.

A chain kept in the database cannot, by itself, show that rows were cut off its end (the head row is
in the same database) or that it was recomputed from genesis. So the writer periodically records the
head it has verified in a file the database cannot touch, ``DATA_DIR/audit/checkpoint.json``::

    {"version": 1, "last_id": 1234, "last_mac": "hmac-sha256:<kid>:<hex>", "count": 1234,
     "kid": "<key id>", "time": "2026-11-27T10:00:00.000000+00:00", "sig": "<hex>"}

``sig`` is HMAC-SHA256 over the canonical JSON of the other fields with the checkpoint sub-key of the
audit key (:class:`~intelligence.audit.keys.AuditKey`). ``count`` is the number of entries up to
``last_id`` (ids have no gaps, so it equals ``last_id``). ``llmproxy audit verify`` compares the
chain with it: fewer entries means a truncated tail, a different MAC at ``last_id`` a rewritten
chain, an empty table a reset.

The file only ever moves forward: a checkpoint for a lower id than the one on disk, or another MAC
for the same id, is refused and logged as a tampering alarm. It is written atomically (temporary
file, fsync, rename; mode 0600) under an exclusive lock, so replicas sharing a data dir do not race.
With ``LLMPROXY_AUDIT_CHECKPOINT_URL`` each new checkpoint is also POSTed there (JSON body,
``x-llmproxy-signature: sha256=<HMAC of the body>`` with ``LLMPROXY_AUDIT_CHECKPOINT_SECRET``, or
else with the audit key's webhook sub-key), with bounded retries; a failed post is retried with the
next tick. Nothing here runs on the request path: :class:`Checkpointer` is a background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.errors import Unavailable

from .chain import AuditEntry, canonical_json, check_entry, mac_key_id
from .keys import DATA_DIR_ENV, AuditKey

log = logging.getLogger("llmproxy.audit")

CHECKPOINT_FILE_ENV = "LLMPROXY_AUDIT_CHECKPOINT_FILE"
CHECKPOINT_URL_ENV = "LLMPROXY_AUDIT_CHECKPOINT_URL"
CHECKPOINT_SECRET_ENV = "LLMPROXY_AUDIT_CHECKPOINT_SECRET"
CHECKPOINT_INTERVAL_ENV = "LLMPROXY_AUDIT_CHECKPOINT_INTERVAL"
SIGNATURE_HEADER = "x-llmproxy-signature"
VERSION = 1

# statuses of a checkpoint as read back
NONE = "none"  # no checkpoint file
VALID = "valid"  # signature verified
UNVERIFIED = "unverified"  # no key to check its signature: used, but said so
INVALID = "invalid"  # unreadable, malformed or a bad signature


def default_path(data_dir: Path) -> Path:
    return data_dir / "audit" / "checkpoint.json"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    last_id: int
    last_mac: str
    count: int
    kid: str
    time: str
    version: int = VERSION

    def signing_input(self) -> bytes:
        return canonical_json(asdict(self)).encode("utf-8")

    def signed(self, key: AuditKey) -> dict[str, Any]:
        return {**asdict(self), "sig": key.checkpoint_mac(self.signing_input())}


@dataclass(frozen=True, slots=True)
class CheckpointState:
    """A checkpoint file as read back: its status, and the checkpoint unless it is absent or unreadable."""

    status: str
    path: str | None
    checkpoint: Checkpoint | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"status": self.status, "path": self.path, "detail": self.detail}
        if self.checkpoint is not None:
            doc.update(asdict(self.checkpoint))
        return doc


def parse(doc: Any, keys: Mapping[str, AuditKey], path: str | None = None) -> CheckpointState:
    try:
        cp = Checkpoint(
            last_id=int(doc["last_id"]),
            last_mac=str(doc["last_mac"]),
            count=int(doc["count"]),
            kid=str(doc["kid"]),
            time=str(doc["time"]),
            version=int(doc.get("version", VERSION)),
        )
        sig = str(doc["sig"])
    except (KeyError, TypeError, ValueError) as exc:
        return CheckpointState(INVALID, path, None, f"malformed checkpoint: {exc!r}")
    key = keys.get(cp.kid)
    if key is None:
        detail = f"signed with key {cp.kid}, which this verifier does not hold: signature not checked"
        return CheckpointState(UNVERIFIED, path, cp, detail)
    if not hmac.compare_digest(key.checkpoint_mac(cp.signing_input()), sig):
        return CheckpointState(INVALID, path, cp, "the checkpoint's signature does not verify: the file was altered")
    return CheckpointState(VALID, path, cp, f"signed with key {cp.kid}")


def read_checkpoint(path: Path, keys: Sequence[AuditKey]) -> CheckpointState:
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return CheckpointState(NONE, str(path), None, "no checkpoint file")
    except (OSError, UnicodeDecodeError) as exc:
        return CheckpointState(INVALID, str(path), None, f"unreadable: {exc}")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        return CheckpointState(INVALID, str(path), None, f"not JSON: {exc}")
    return parse(doc, {k.kid: k for k in keys}, str(path))


def configured_path(env: Mapping[str, str] | None = None) -> Path | None:
    """The checkpoint file this process is configured with: LLMPROXY_AUDIT_CHECKPOINT_FILE, else
    LLMPROXY_DATA_DIR/audit/checkpoint.json, else None."""
    env = os.environ if env is None else env
    file = env.get(CHECKPOINT_FILE_ENV) or None
    if file:
        return Path(file)
    return default_path(Path(env[DATA_DIR_ENV])) if env.get(DATA_DIR_ENV) else None


class CheckpointRefused(Unavailable):
    """The new checkpoint would move the anchor backwards or contradict it (a tampering alarm)."""


def write_checkpoint(path: Path, cp: Checkpoint, key: AuditKey) -> bool:
    """Store ``cp`` unless the file already holds it; raises :class:`CheckpointRefused` for a
    checkpoint behind, or contradicting, the one on disk. Blocking (call it in a thread)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current = read_checkpoint(path, [key])
        old = current.checkpoint
        if current.status == VALID and old is not None:
            if old.last_id > cp.last_id:
                raise CheckpointRefused(
                    f"the audit chain's head is entry {cp.last_id}, behind the checkpoint's entry {old.last_id} "
                    f"({old.time}): rows were removed"
                )
            if old.last_id == cp.last_id:
                if old.last_mac != cp.last_mac:
                    raise CheckpointRefused(f"audit entry {cp.last_id} differs from the checkpointed one: it was rewritten")
                return False
        elif current.status == INVALID:
            # keep the evidence; a new anchor starts from the verified head
            aside = path.with_name(f"{path.name}.invalid-{datetime.now(UTC):%Y%m%dT%H%M%S}")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            log.error("audit checkpoint %s was invalid (%s); moved to %s", path, current.detail, aside)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = (json.dumps(cp.signed(key), sort_keys=True, indent=2) + "\n").encode()
        tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(tfd, data)
            os.fsync(tfd)
        finally:
            os.close(tfd)
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself survives a crash
        finally:
            os.close(dfd)
        return True
    finally:
        os.close(fd)


def sign_body(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


_HEAD_SQL = text(
    "SELECT h.last_id, h.hash, l.id, l.ts, l.actor, l.kind, l.subject, l.payload, l.prev_hash, l.hash AS entry_hash "
    "FROM audit_head h LEFT JOIN audit_log l ON l.id = h.last_id WHERE h.id = 1"
)


class Checkpointer:
    """Checkpoints the verified head every ``interval`` seconds (when it moved) and at :meth:`stop`."""

    def __init__(
        self,
        engine: AsyncEngine,
        key: AuditKey,
        path: Path | None,
        *,
        interval: float = 10.0,
        webhook_url: str | None = None,
        webhook_secret: bytes | None = None,
        retries: int = 3,
        timeout: float = 5.0,
        backoff: float = 0.5,
    ) -> None:
        if path is None and not webhook_url:
            raise ValueError("a checkpointer needs a file, a webhook URL, or both")
        if webhook_url and not webhook_url.startswith(("http://", "https://")):
            raise ValueError(f"{CHECKPOINT_URL_ENV} must be an http(s) URL (s3:// is not supported yet): {webhook_url!r}")
        self.engine = engine
        self.key = key
        self.path = path
        self.interval = interval
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret or key.webhook_key
        self.retries = max(1, retries)
        self.timeout = timeout
        self.backoff = backoff
        self.last: Checkpoint | None = None
        self._posted_id = 0
        self.stats = {"written": 0, "posted": 0, "refused": 0, "failures": 0}
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, engine: AsyncEngine, key: AuditKey | None, env: Mapping[str, str] | None = None) -> Checkpointer | None:
        """From LLMPROXY_AUDIT_CHECKPOINT_FILE (else LLMPROXY_DATA_DIR/audit/checkpoint.json),
        LLMPROXY_AUDIT_CHECKPOINT_URL, _SECRET and _INTERVAL; None without a key or anywhere to write."""
        env = os.environ if env is None else env
        if key is None:
            return None
        path = configured_path(env)
        url = env.get(CHECKPOINT_URL_ENV) or None
        if path is None and url is None:
            return None
        secret = env.get(CHECKPOINT_SECRET_ENV)
        interval = float(env.get(CHECKPOINT_INTERVAL_ENV) or 10.0)
        return cls(engine, key, path, interval=interval, webhook_url=url, webhook_secret=secret.encode() if secret else None)

    async def checkpoint(self) -> Checkpoint | None:
        """Anchor the current head if it moved and its entry authenticates with our key; the new
        checkpoint, or None when nothing was written (no change, empty log, refused)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(_HEAD_SQL)).mappings().one_or_none()
        if row is None or not row["last_id"]:
            return None
        if self.last is not None and self.last.last_id == row["last_id"] and self.last.last_mac == row["hash"]:
            await self._post_pending()
            return None
        if row["id"] is None or row["entry_hash"] != row["hash"]:
            self._alarm(f"the audit head (entry {row['last_id']}) has no matching row: the log was tampered with")
            return None
        entry = AuditEntry(
            id=row["id"],
            ts=row["ts"],
            actor=row["actor"],
            kind=row["kind"],
            subject=row["subject"],
            payload=row["payload"],
            prev_hash=row["prev_hash"],
            hash=row["entry_hash"],
        )
        kid = mac_key_id(entry.hash)
        if kid != self.key.kid:
            # made without a MAC or with another key (a process configured differently): not ours to vouch for
            log.warning("audit head entry %d is not authenticated with this process's key (%s); no checkpoint", entry.id, kid)
            return None
        if check_entry(entry, {self.key.kid: self.key}) != "ok":
            self._alarm(f"audit head entry {entry.id} does not authenticate: the log was tampered with")
            return None
        cp = Checkpoint(
            last_id=entry.id,
            last_mac=entry.hash,
            count=entry.id,
            kid=self.key.kid,
            time=datetime.now(UTC).isoformat(timespec="microseconds"),
        )
        if self.path is not None:
            try:
                written = await asyncio.to_thread(write_checkpoint, self.path, cp, self.key)
            except CheckpointRefused as exc:
                self._alarm(str(exc))
                return None
            if written:
                self.stats["written"] += 1
        self.last = cp
        await self._post_pending()
        return cp

    def _alarm(self, message: str) -> None:
        self.stats["refused"] += 1
        log.error("AUDIT TAMPERING SUSPECTED: %s; checkpoint not advanced (run `llmproxy audit verify`)", message)

    async def _post_pending(self) -> None:
        cp = self.last
        if self.webhook_url is None or cp is None or cp.last_id <= self._posted_id:
            return
        if await self._post(cp):
            self._posted_id = cp.last_id
            self.stats["posted"] += 1

    async def _post(self, cp: Checkpoint) -> bool:
        import aiohttp

        assert self.webhook_url is not None
        body = json.dumps(cp.signed(self.key), sort_keys=True, separators=(",", ":")).encode()
        headers = {"content-type": "application/json", SIGNATURE_HEADER: sign_body(self.webhook_secret, body)}
        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
                    async with session.post(self.webhook_url, data=body, headers=headers) as resp:
                        if 200 <= resp.status < 300:
                            return True
                        problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            self.stats["failures"] += 1
            log.warning("audit checkpoint POST %d/%d failed (%s)", attempt, self.retries, problem)
            if attempt < self.retries:
                await asyncio.sleep(delay)
                delay *= 2
        return False

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-checkpoint")

    async def stop(self) -> None:
        """Stop the loop and checkpoint once more (the shutdown checkpoint)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=5)
        try:
            await self.checkpoint()
        except Exception as exc:  # noqa: BLE001 - shutting down: report, do not raise
            log.warning("final audit checkpoint failed: %s", exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.checkpoint()
            except Exception as exc:  # noqa: BLE001 - the database may be away; try at the next tick
                self.stats["failures"] += 1
                log.warning("audit checkpoint failed (%s); retrying in %.0fs", exc, self.interval)
