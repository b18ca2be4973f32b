"""Hot reload: keep one compiled :class:`PolicySnapshot` current without a restart.

Sources: the policy file (polled by mtime/size/inode about once a second; an editor's atomic rename
counts) and the database policies (LISTEN on ``llmproxy_policies`` for an immediate reload, plus a
poll every ``db_poll_interval`` in case a notification is lost). Any change builds a new snapshot
and swaps it in with one reference assignment, so a request sees the old or the new policy, never
a mix.

A source that fails validation is rejected with its errors logged (and audited) and its last good
version stays in force; the other sources still update. At start-up a bad policy *file* is fatal
(:class:`PolicyError` from :meth:`PolicyWatcher.start`): a gateway must not come up without the
policy its operator wrote. A bad database policy at start-up is left out and logged, so one bad row
cannot keep every replica down.

Every change the watcher sees is audited (``policy_change``, with a unified diff): file changes with
the file owner as actor; a database change that bypassed :func:`store.set_policy` (direct SQL) as
``db:unaudited``. Replicas do not duplicate entries (see :func:`store.record_change`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.audit import AuditLog
from intelligence.store.listen import NotifyReloader

from . import store
from .errors import PolicyError, PolicyIssue
from .models import NOTIFY_CHANNEL
from .parse import PolicyDocument, parse_policy
from .snapshot import PolicySnapshot
from .throttle import Throttler

log = logging.getLogger("llmproxy.policy")

DEFAULT_POLICY_FILE = Path(__file__).with_name("default.yaml")
POLICY_FILE_ENV = "LLMPROXY_POLICY_FILE"
UNAUDITED_ACTOR = "db:unaudited"


def resolve_policy_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The policy file to use: explicit > $LLMPROXY_POLICY_FILE > the shipped default."""
    chosen = explicit or os.environ.get(POLICY_FILE_ENV)
    return Path(chosen) if chosen else DEFAULT_POLICY_FILE


def load_file(path: Path) -> PolicyDocument:
    """Read and compile a policy file; raises PolicyError (also for a missing or unreadable file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([PolicyIssue(0, "", f"cannot read the policy file: {exc}", str(path))]) from None
    return parse_policy(text, origin=str(path), default_name=path.stem)


def compose_snapshot(
    file_doc: PolicyDocument | None, stored: list[store.StoredPolicy]
) -> tuple[PolicySnapshot, dict[str, tuple[PolicyIssue, ...]]]:
    """A snapshot of a file policy plus enabled database policies (bad ones left out, with their issues)."""
    docs = [file_doc] if file_doc is not None else []
    issues: dict[str, tuple[PolicyIssue, ...]] = {}
    for row in stored:
        if not row.enabled:
            continue
        try:
            docs.append(_db_document(row, file_doc))
        except PolicyError as exc:
            issues[row.name] = exc.issues
    return PolicySnapshot.build(docs), issues


def _db_document(row: store.StoredPolicy, file_doc: PolicyDocument | None) -> PolicyDocument:
    # the row's name is the policy's identity (rule ids are qualified by it), whatever the YAML says
    doc = parse_policy(row.source, origin=f"db:{row.name}", name=row.name)
    if file_doc is not None and doc.name == file_doc.name:
        raise PolicyError(
            [PolicyIssue(0, "name", f"database policy {row.name!r} has the name of the policy file; rename it", f"db:{row.name}")]
        )
    return doc


def file_actor(path: Path) -> str:
    """Who changed the file, as far as the machine knows: its owner (git history has the author)."""
    try:
        import pwd

        owner = pwd.getpwuid(path.stat().st_uid).pw_name
    except (KeyError, OSError, ImportError):
        owner = "unknown"
    return f"file:{owner}@{socket.gethostname()}"


@dataclass(frozen=True, slots=True)
class _PendingAudit:
    subject: str
    origin: str
    name: str
    content: str | None
    actor: str
    status: str
    errors: tuple[PolicyIssue, ...]


class PolicyWatcher:
    """Holds the current snapshot (``.snapshot``) and keeps it fresh in the background."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        engine: AsyncEngine | None = None,
        *,
        poll_interval: float = 1.0,
        db_poll_interval: float = 5.0,
        listen: bool = True,
        audit: AuditLog | None = None,
        on_swap: Callable[[PolicySnapshot], None] | None = None,
    ):
        self.path = resolve_policy_path(path)
        self.engine = engine
        self.poll_interval = poll_interval
        self.audit = audit or AuditLog()
        self.on_swap = on_swap
        self.throttler = Throttler()
        self.stats = {"swaps": 0, "rejected": 0, "db_refreshes": 0, "db_failures": 0, "notifications": 0, "listens": 0}
        self.errors: dict[str, tuple[PolicyIssue, ...]] = {}  # source -> issues of its rejected version
        self._snapshot = PolicySnapshot.empty()
        self._file_doc: PolicyDocument | None = None
        self._file_sig: tuple[int, int, int] | None = None
        self._file_seen_sha: str | None = None
        self._db_docs: dict[str, PolicyDocument] = {}
        self._db_seen: dict[str, tuple[int, str, bool]] = {}
        self._pending_audit: list[_PendingAudit] = []
        self._tasks: list[asyncio.Task[None]] = []  # the file watch
        self._stopping = False
        self._db: NotifyReloader | None = None  # database policies: LISTEN + poll
        if engine is not None:
            self._db = NotifyReloader(
                engine,
                NOTIFY_CHANNEL,
                self.refresh_db,
                poll_interval=db_poll_interval,
                listen=listen,
                what="database policies",
                task_name="policy-db-watch",
                stats=self.stats,
                failures_key="db_failures",
                keeping=lambda: "keeping the current policy",
            )
        self._db_poll_interval, self._listen = db_poll_interval, listen

    @property
    def snapshot(self) -> PolicySnapshot:
        return self._snapshot

    @property
    def db_poll_interval(self) -> float:
        return self._db.poll_interval if self._db is not None else self._db_poll_interval

    @property
    def listen(self) -> bool:
        return self._db.listen if self._db is not None else self._listen

    @property
    def listening(self) -> bool:
        return self._db is not None and self._db.listening

    # ------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Load the file (a bad one raises PolicyError), then the database policies (best effort),
        and start watching."""
        doc = load_file(self.path)
        self._file_doc = doc
        self._file_sig = self._stat()
        self._file_seen_sha = doc.sha256
        self._queue_audit(store.file_subject(doc.name), "file", doc.name, doc.text, file_actor(self.path), "applied")
        self._swap("file loaded")
        self._stopping = False
        if self._db is not None:  # the database may come later: the reloader keeps trying
            await self._db.start(not_loaded="running with the file policy")
        if not self._tasks:
            self._tasks.append(asyncio.create_task(self._file_loop(), name="policy-file-watch"))

    async def stop(self) -> None:
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            # asyncio.wait, not `await task`: it neither swallows a cancellation of stop() itself nor
            # hangs on a task whose cancellation a database driver consumed (the loops re-check
            # _stopping, so they end at their next turn anyway)
            await asyncio.wait(tasks, timeout=5)
        if self._db is not None:
            await self._db.stop()
        if self.engine is not None and self._pending_audit:
            with contextlib.suppress(Exception):
                await self.flush_audit()

    async def reload(self) -> bool:
        """Check every source now; True when the snapshot changed."""
        before = self._snapshot
        self.check_file()
        if self.engine is not None:
            await self.refresh_db()
        return self._snapshot is not before

    # ------------------------------------------------------------------------------ file
    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def check_file(self) -> bool:
        """Re-read the file if it changed on disk; True when a new version went into force."""
        sig = self._stat()
        if sig == self._file_sig:
            return False
        self._file_sig = sig
        if sig is None:
            log.warning("policy file %s is gone; keeping the policy loaded from it", self.path)
            return False
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("policy file %s unreadable (%s); keeping the current policy", self.path, exc)
            return False
        sha = store.sha256_of(text)
        if sha == self._file_seen_sha:
            return False  # touched, not changed
        self._file_seen_sha = sha
        name = self._file_doc.name if self._file_doc is not None else self.path.stem
        try:
            doc = parse_policy(text, origin=str(self.path), default_name=self.path.stem)
        except PolicyError as exc:
            self._reject(str(self.path), exc.issues)
            self._queue_audit(store.file_subject(name), "file", name, text, file_actor(self.path), "rejected", exc.issues)
            return False
        self.errors.pop(str(self.path), None)
        self._file_doc = doc
        self._queue_audit(store.file_subject(doc.name), "file", doc.name, text, file_actor(self.path), "applied")
        self._swap(f"file {self.path} changed")
        return True

    async def _file_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.poll_interval)
            try:
                self.check_file()
            except Exception:
                log.exception("policy file check failed")

    # ------------------------------------------------------------------------------ database
    async def refresh_db(self) -> bool:
        """Load changed database policies; True when the snapshot changed. Raises on DB errors."""
        assert self.engine is not None
        async with self.engine.connect() as conn:
            versions = await store.policy_versions(conn)
            changed = [n for n, v in versions.items() if self._db_seen.get(n) != v]
            gone = [n for n in self._db_seen if n not in versions]
            rows = {}
            for name in changed:
                row = await store.get_policy(conn, name)
                if row is not None:
                    rows[name] = row
        self.stats["db_refreshes"] += 1
        swapped = False
        for name in gone:
            self._db_seen.pop(name, None)
            self.errors.pop(f"db:{name}", None)
            swapped |= self._db_docs.pop(name, None) is not None
            self._queue_audit(store.db_subject(name), "db", name, None, UNAUDITED_ACTOR, "deleted")
        for name, row in rows.items():
            self._db_seen[name] = (row.version, row.sha256, row.enabled)
            if not row.enabled:
                self.errors.pop(f"db:{name}", None)
                swapped |= self._db_docs.pop(name, None) is not None
                self._queue_audit(store.db_subject(name), "db", name, row.source, UNAUDITED_ACTOR, "disabled")
                continue
            try:
                doc = _db_document(row, self._file_doc)
            except PolicyError as exc:
                self._reject(f"db:{name}", exc.issues)
                self._queue_audit(store.db_subject(name), "db", name, row.source, UNAUDITED_ACTOR, "rejected", exc.issues)
                continue
            self.errors.pop(f"db:{name}", None)
            self._db_docs[name] = doc
            self._queue_audit(store.db_subject(name), "db", name, row.source, UNAUDITED_ACTOR, "applied")
            swapped = True
        if swapped:
            self._swap("database policies changed")
        await self.flush_audit()
        return swapped

    async def flush_audit(self) -> int:
        """Write queued policy_change entries (deduplicated against the log); returns how many were new."""
        if self.engine is None or not self._pending_audit:
            return 0
        written = 0
        async with self.engine.begin() as conn:
            for item in self._pending_audit:
                entry = await store.record_change(
                    conn,
                    subject=item.subject,
                    origin=item.origin,
                    name=item.name,
                    content=item.content,
                    actor=item.actor,
                    status=item.status,
                    errors=item.errors,
                    audit=self.audit,
                )
                written += entry is not None
        self._pending_audit.clear()
        return written

    def _queue_audit(
        self,
        subject: str,
        origin: str,
        name: str,
        content: str | None,
        actor: str,
        status: str,
        errors: tuple[PolicyIssue, ...] = (),
    ) -> None:
        if self.engine is None:
            return
        self._pending_audit.append(_PendingAudit(subject, origin, name, content, actor, status, errors))
        if self._db is not None:
            self._db.wake()  # the next round writes it

    # ------------------------------------------------------------------------------ swapping
    def _reject(self, source: str, issues: tuple[PolicyIssue, ...]) -> None:
        self.stats["rejected"] += 1
        self.errors[source] = issues
        log.error("policy %s rejected, keeping the version in force:\n  %s", source, "\n  ".join(str(i) for i in issues))

    def _swap(self, why: str) -> None:
        docs = ([self._file_doc] if self._file_doc is not None else []) + [self._db_docs[n] for n in sorted(self._db_docs)]
        snapshot = PolicySnapshot.build(docs)
        self._snapshot = snapshot  # one assignment: readers see the old or the new snapshot
        self.stats["swaps"] += 1
        log.info(
            "policy %s in force (%s): %d request rules, %d response rules",
            snapshot.version,
            why,
            len(snapshot.request_rules),
            len(snapshot.response_rules),
        )
        if self.on_swap is not None:
            try:
                self.on_swap(snapshot)
            except Exception:
                log.exception("policy swap listener failed")
