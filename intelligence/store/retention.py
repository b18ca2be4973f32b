"""Retention of the request log: archive (optionally) and delete exchanges older than a cutoff.

Work is done in bounded batches, each in its own transaction, oldest exchanges first:

1. lock up to ``batch`` exchanges started before the cutoff (``FOR UPDATE SKIP LOCKED``);
2. with an archive, write them as export documents (the ``llmproxy export requests`` JSON form, one per
   line, gzip) and flush the file to disk (fsync) *before* the delete commits;
3. delete the rows that describe those exchanges and nothing else: their ``exchange_embeddings``,
   ``outcome_signals`` and ``feedback`` (the last two have no foreign key: feedback may arrive before the
   exchange row), then the exchanges.

Afterwards, ``sessions`` rows last seen before the cutoff that no longer have any exchange are removed.

Kept on purpose: the analytics rollups (``exchange_rollups``, ``pattern_rollups``: aggregates, kept by
insert triggers, so dashboards keep their history), patterns and their counts, the audit log (append-only
and hash-chained), anomaly verdicts, events and Claude call records. ``experiment_exposures`` follows the
table (its delete trigger subtracts the deleted exchanges).

An archived exchange is on disk before it leaves the database; a crash between the fsync and the commit
leaves it in both, so a later run (with another archive file) archives it again: at least once, never lost.
One run at a time: a PostgreSQL advisory lock (:data:`LOCK_KEY`); a second run gets :class:`RetentionBusy`.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import Text

from intelligence.errors import Unavailable
from intelligence.export import export_document
from intelligence.store.repositories import record_from_row

LOCK_KEY = "llmproxy.retention"
DEFAULT_BATCH = 2000
RELATED_TABLES = ("exchange_embeddings", "outcome_signals", "feedback")

_IDS = bindparam("ids", type_=ARRAY(Text))
_SELECT_BATCH = text(
    "SELECT * FROM exchanges WHERE started_at < :cutoff ORDER BY started_at, request_id LIMIT :batch FOR UPDATE SKIP LOCKED"
)
_DELETE_RELATED = {t: text(f"DELETE FROM {t} WHERE request_id = ANY(:ids)").bindparams(_IDS) for t in RELATED_TABLES}
_DELETE_EXCHANGES = text("DELETE FROM exchanges WHERE request_id = ANY(:ids)").bindparams(_IDS)
_DELETE_SESSIONS = text(
    "DELETE FROM sessions WHERE session_id IN ("
    " SELECT s.session_id FROM sessions s WHERE s.last_seen < :cutoff"
    " AND NOT EXISTS (SELECT 1 FROM exchanges e WHERE e.session_id = s.session_id) LIMIT :batch)"
)
_COUNT_EXCHANGES = text("SELECT count(*) FROM exchanges WHERE started_at < :cutoff")
_COUNT_RELATED = {
    t: text(f"SELECT count(*) FROM {t} x JOIN exchanges e USING (request_id) WHERE e.started_at < :cutoff")
    for t in RELATED_TABLES
}
_COUNT_SESSIONS = text(
    "SELECT count(*) FROM sessions s WHERE s.last_seen < :cutoff AND NOT EXISTS"
    " (SELECT 1 FROM exchanges e WHERE e.session_id = s.session_id AND e.started_at >= :cutoff)"
)


class RetentionBusy(Unavailable):
    """Another retention run holds the lock."""


@dataclass
class RetentionResult:
    cutoff: datetime
    dry_run: bool
    exchanges: int = 0  # deleted (dry run: would be deleted)
    archived: int = 0
    batches: int = 0
    related: dict[str, int] = field(default_factory=dict)  # table -> rows deleted (or that would be)
    sessions: int = 0
    archive: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cutoff"] = self.cutoff.isoformat()
        return d


class JsonlGzArchive:
    """Export documents, one JSON object per line, gzip; :meth:`sync` makes what was written durable."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._raw: IO[bytes] = open(self.path, "xb")  # never overwrite an earlier archive
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb")
        self.count = 0

    def write(self, doc: dict[str, Any]) -> None:
        self._gz.write((json.dumps(doc, ensure_ascii=False) + "\n").encode())
        self.count += 1

    def sync(self) -> None:
        self._gz.flush()
        self._raw.flush()
        os.fsync(self._raw.fileno())

    def close(self) -> None:
        self._gz.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()


async def preview(engine: AsyncEngine, cutoff: datetime) -> RetentionResult:
    """What :func:`purge` would delete, without deleting anything."""
    async with engine.connect() as conn:
        exchanges = (await conn.execute(_COUNT_EXCHANGES, {"cutoff": cutoff})).scalar_one()
        related = {t: (await conn.execute(q, {"cutoff": cutoff})).scalar_one() for t, q in _COUNT_RELATED.items()}
        sessions = (await conn.execute(_COUNT_SESSIONS, {"cutoff": cutoff})).scalar_one()
    return RetentionResult(cutoff=cutoff, dry_run=True, exchanges=exchanges, related=related, sessions=sessions)


async def purge(
    engine: AsyncEngine,
    cutoff: datetime,
    *,
    batch: int = DEFAULT_BATCH,
    archive: JsonlGzArchive | None = None,
    progress: Callable[[RetentionResult], None] | None = None,
) -> RetentionResult:
    """Archive (when ``archive`` is given) and delete every exchange started before ``cutoff``."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    if cutoff.tzinfo is None:
        raise ValueError("cutoff must be timezone-aware")
    result = RetentionResult(
        cutoff=cutoff, dry_run=False, related=dict.fromkeys(RELATED_TABLES, 0), archive=str(archive.path) if archive else None
    )
    async with engine.connect() as lock_conn:
        got = (await lock_conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": LOCK_KEY})).scalar_one()
        await lock_conn.commit()
        if not got:
            raise RetentionBusy("another `llmproxy retention` run is in progress (advisory lock held)")
        try:
            while True:
                async with engine.begin() as conn:
                    n = await _one_batch(conn, cutoff, batch, archive, result)
                if n == 0:
                    break
                result.batches += 1
                if progress is not None:
                    progress(result)
            while True:
                async with engine.begin() as conn:
                    gone = (await conn.execute(_DELETE_SESSIONS, {"cutoff": cutoff, "batch": batch})).rowcount
                result.sessions += gone
                if gone < batch:
                    break
        finally:
            await lock_conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": LOCK_KEY})
            await lock_conn.commit()
    return result


async def _one_batch(
    conn: AsyncConnection, cutoff: datetime, batch: int, archive: JsonlGzArchive | None, result: RetentionResult
) -> int:
    rows = (await conn.execute(_SELECT_BATCH, {"cutoff": cutoff, "batch": batch})).all()
    if not rows:
        return 0
    ids = [r._mapping["request_id"] for r in rows]
    if archive is not None:
        for row in rows:
            archive.write(export_document(record_from_row(row)))
        archive.sync()  # on disk before the rows leave the database
        result.archived += len(rows)
    for table, stmt in _DELETE_RELATED.items():
        result.related[table] += (await conn.execute(stmt, {"ids": ids})).rowcount
    deleted = (await conn.execute(_DELETE_EXCHANGES, {"ids": ids})).rowcount
    result.exchanges += deleted
    return len(rows)
