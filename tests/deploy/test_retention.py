"""`llmproxy retention`: archive, then delete old exchanges in bounded batches, consistently, on the real
embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

from extproc.cli import main as cli_main
from extproc.cli.retention import parse_age
from intelligence.export import export_document
from intelligence.store import retention
from intelligence.store.repositories import ExchangeRepository
from tests.intelligence.factories import make_record

from .conftest import MigratedDb

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)
NEW = NOW - timedelta(days=1)


async def _seed(db: MigratedDb) -> dict:
    old = [make_record(started_at=OLD + timedelta(minutes=i), session_id="s-old") for i in range(17)]
    old += [make_record(started_at=OLD + timedelta(hours=1, minutes=i), session_id="s-mixed") for i in range(8)]
    new = [make_record(started_at=NEW + timedelta(minutes=i), session_id="s-new") for i in range(4)]
    new.append(make_record(started_at=NEW, session_id="s-mixed"))
    async with async_sessionmaker(db.engine).begin() as s:
        await ExchangeRepository(s).insert_batch(old + new)
    async with db.engine.begin() as conn:
        for r in old[:10] + new[:2]:
            await conn.execute(
                text("INSERT INTO exchange_embeddings (request_id, canonical_hash, created_at) VALUES (:r, :h, :t)"),
                {"r": r.request_id, "h": "h" + r.request_id, "t": r.started_at},
            )
            await conn.execute(
                text("INSERT INTO outcome_signals (request_id, kind, ok) VALUES (:r, 'status', true)"), {"r": r.request_id}
            )
        for r in old[:3] + new[:1]:
            await conn.execute(text("INSERT INTO feedback (request_id, thumbs) VALUES (:r, 'up')"), {"r": r.request_id})
        # feedback that arrived before its exchange row (no foreign key): not ours to delete
        await conn.execute(text("INSERT INTO feedback (request_id, thumbs) VALUES ('req-not-yet-recorded', 'down')"))
    return {"old": old, "new": new}


async def _counts(db: MigratedDb) -> dict[str, int]:
    async with db.engine.connect() as conn:
        out = {}
        for table in ("exchanges", "exchange_embeddings", "outcome_signals", "feedback", "sessions"):
            out[table] = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
        out["rollup_n"] = (
            await conn.execute(text("SELECT coalesce(sum(n), 0) FROM exchange_rollups WHERE granularity = 'hour'"))
        ).scalar_one()
        return out


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        cli_main(list(argv))
    return exc.value.code, out.getvalue(), err.getvalue()


async def test_dry_run_then_archive_and_delete_in_batches(migrated_db: MigratedDb, tmp_path: Path) -> None:
    seeded = await _seed(migrated_db)
    before = await _counts(migrated_db)
    code, out, _ = await asyncio.to_thread(
        _cli, "retention", "--older-than", "30d", "--dry-run", "--json", "--database-url", migrated_db.url
    )
    assert code == 0
    preview = json.loads(out)
    assert preview["dry_run"] and preview["exchanges"] == 25 and preview["sessions"] == 1
    assert preview["related"] == {"exchange_embeddings": 10, "outcome_signals": 10, "feedback": 3}
    assert await _counts(migrated_db) == before  # nothing changed

    archive = tmp_path / "old.jsonl.gz"
    code, out, err = await asyncio.to_thread(
        _cli,
        "retention",
        "--older-than",
        "30d",
        "--archive",
        str(archive),
        "--batch-size",
        "7",
        "--json",
        "--database-url",
        migrated_db.url,
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["exchanges"] == 25 and result["archived"] == 25 and result["batches"] == 4  # 7 + 7 + 7 + 4
    assert result["related"] == preview["related"] and result["sessions"] == 1

    after = await _counts(migrated_db)
    assert after["exchanges"] == 5 and after["exchange_embeddings"] == 2 and after["outcome_signals"] == 2
    assert after["feedback"] == 2  # the new exchange's and the one without an exchange row
    assert after["sessions"] == before["sessions"] - 1  # s-old went; s-mixed still has an exchange
    assert after["rollup_n"] == before["rollup_n"]  # aggregated analytics keep their history
    async with migrated_db.engine.connect() as conn:
        left = {r[0] for r in await conn.execute(text("SELECT request_id FROM exchanges"))}
        sessions = {r[0] for r in await conn.execute(text("SELECT session_id FROM sessions"))}
    assert left == {r.request_id for r in seeded["new"]}
    assert {"s-mixed", "s-new"} <= sessions and "s-old" not in sessions

    with gzip.open(archive, "rt") as fh:
        docs = [json.loads(line) for line in fh]
    assert [d["request_id"] for d in docs] == [r.request_id for r in sorted(seeded["old"], key=lambda r: r.started_at)]
    by_id = {r.request_id: r for r in seeded["old"]}
    assert docs[0] == json.loads(json.dumps(export_document(by_id[docs[0]["request_id"]])))

    # nothing left to do; an existing archive is never overwritten
    code, out, _ = await asyncio.to_thread(_cli, "retention", "--older-than", "30d", "--json", "--database-url", migrated_db.url)
    assert code == 0 and json.loads(out)["exchanges"] == 0
    code, _, _ = await asyncio.to_thread(
        _cli, "retention", "--older-than", "30d", "--archive", str(archive), "--database-url", migrated_db.url
    )
    assert "never overwritten" in str(code)


class _FailingArchive(retention.JsonlGzArchive):
    def __init__(self, path: Path, fail_on_sync: int):
        super().__init__(path)
        self.syncs = 0
        self.fail_on_sync = fail_on_sync

    def sync(self) -> None:
        self.syncs += 1
        if self.syncs == self.fail_on_sync:
            raise OSError(28, "No space left on device")
        super().sync()


async def test_a_batch_whose_archive_fails_is_not_deleted(migrated_db: MigratedDb, tmp_path: Path) -> None:
    await _seed(migrated_db)
    archive = _FailingArchive(tmp_path / "a.jsonl.gz", fail_on_sync=2)
    with pytest.raises(OSError, match="No space left"):
        await retention.purge(migrated_db.engine, NOW - timedelta(days=30), batch=10, archive=archive)
    archive.close()
    counts = await _counts(migrated_db)
    assert counts["exchanges"] == 30 - 10  # the first batch only: archived, then deleted
    with gzip.open(tmp_path / "a.jsonl.gz", "rt") as fh:
        archived = [json.loads(line)["request_id"] for line in fh]
    async with migrated_db.engine.connect() as conn:
        present = {r[0] for r in await conn.execute(text("SELECT request_id FROM exchanges"))}
    assert len(set(archived[:10]) & present) == 0  # every deleted exchange is in the archive


async def test_one_run_at_a_time(migrated_db: MigratedDb) -> None:
    await _seed(migrated_db)
    async with migrated_db.engine.connect() as holder:
        await holder.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": retention.LOCK_KEY})
        with pytest.raises(retention.RetentionBusy):
            await retention.purge(migrated_db.engine, NOW - timedelta(days=30))
        code, _, err = await asyncio.to_thread(_cli, "retention", "--older-than", "30d", "--database-url", migrated_db.url)
        assert code == 1 and "in progress" in err
        await holder.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": retention.LOCK_KEY})
    assert (await retention.purge(migrated_db.engine, NOW - timedelta(days=30))).exchanges == 25


def test_age_parsing() -> None:
    assert parse_age("30d") == timedelta(days=30) and parse_age("36h") == timedelta(hours=36)
    assert parse_age("2w") == timedelta(weeks=2)
    for bad in ("30", "0d", "-1d", "yesterday", "5m"):
        with pytest.raises(SystemExit):
            parse_age(bad)
