"""The tamper-evident audit log against real PostgreSQL: append, verify, tampering, concurrency, export.

Tampering is done the way an attacker with database superuser rights would: with
``session_replication_role = replica`` the protecting triggers do not fire, so the UPDATE/DELETE
goes through and only the hash chain can tell.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.audit import (
    GENESIS_HASH,
    HASH_MISMATCH,
    HEAD_MISMATCH,
    KEY_EVENT,
    MISSING_ROW,
    POLICY_DECISION,
    PREV_HASH_MISMATCH,
    AuditLog,
    AuditWriter,
    entry_hash,
    read_export,
    verify_export,
)
from intelligence.audit.models import AUDIT_TABLES
from intelligence.keys.models import KEY_TABLES
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.models import Base
from tests.intelligence.conftest import SecurityDb

SECURITY_TABLES = set(AUDIT_TABLES) | set(KEY_TABLES)


# ------------------------------------------------------------------------------- helpers
async def _append(engine: AsyncEngine, n: int, audit: AuditLog | None = None, kind: str = POLICY_DECISION) -> list:
    audit = audit or AuditLog()
    out = []
    async with engine.begin() as conn:
        for i in range(n):
            out.append(await audit.append(conn, kind, f"req-{i}", {"rule": f"r{i}", "action": "block", "i": i}, "sidecar:test"))
    return out


async def _verify(engine: AsyncEngine, audit: AuditLog | None = None):
    async with engine.connect() as conn:
        return await (audit or AuditLog()).verify(conn)


# ------------------------------------------------------------------------------- tests
async def test_schema_matches_models(security_db: SecurityDb) -> None:
    def diff(sync_conn) -> list:
        ctx = MigrationContext.configure(
            sync_conn,
            opts={
                "compare_type": True,
                "include_object": lambda obj, name, type_, reflected, compare_to: (
                    (obj.table.name if type_ in ("column", "index", "unique_constraint", "foreign_key_constraint") else name)
                    in SECURITY_TABLES
                    if type_ in ("table", "column", "index", "unique_constraint", "foreign_key_constraint")
                    else True
                ),
            },
        )
        return compare_metadata(ctx, Base.metadata)

    async with security_db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_empty_log_verifies(security_db: SecurityDb) -> None:
    result = await _verify(security_db.engine)
    assert result.ok and result.checked == 0 and result.head_id == 0 and result.head_hash == GENESIS_HASH


async def test_append_links_entries_and_verify_passes(security_db: SecurityDb) -> None:
    entries = await _append(security_db.engine, 5)
    assert [e.id for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS_HASH
    for prev, cur in zip(entries, entries[1:]):
        assert cur.prev_hash == prev.hash
        assert cur.ts >= prev.ts
    e = entries[2]
    assert e.hash == entry_hash(e.prev_hash, id=e.id, ts=e.ts, actor=e.actor, kind=e.kind, subject=e.subject, payload=e.payload)
    result = await _verify(security_db.engine, AuditLog(batch_size=2))  # several pages
    assert result.ok and result.checked == 5 and result.head_id == 5 and result.head_hash == entries[-1].hash


async def test_awkward_payloads_survive_the_jsonb_round_trip(security_db: SecurityDb) -> None:
    payload = {
        "b": 1.0,
        "a": [1e16, 0.1, 1e-7, -2.5e-300],
        "nan": float("nan"),
        "nul": "x\x00y",
        "n": None,
        "deep": {"z": True, "é": "ü"},
        3: "int key",
        "big": 2**70,
    }
    async with security_db.engine.begin() as conn:
        entry = await AuditLog().append(conn, KEY_EVENT, "k", payload, "admin")
    assert entry.payload["b"] == 1 and entry.payload["nan"] is None and entry.payload["nul"] == "x\ufffdy"
    assert (await _verify(security_db.engine)).ok


async def test_updated_payload_is_reported_at_that_id(security_db: SecurityDb) -> None:
    await _append(security_db.engine, 6)
    su = await security_db.superuser()
    try:
        await su.execute("""UPDATE audit_log SET payload = '{"rule": "r3", "action": "allow", "i": 3}' WHERE id = 4""")
    finally:
        await su.close()
    result = await _verify(security_db.engine)
    assert not result.ok
    assert (result.first_broken_id, result.reason, result.checked) == (4, HASH_MISMATCH, 3)


async def test_rehashed_row_is_caught_by_the_next_link(security_db: SecurityDb) -> None:
    entries = await _append(security_db.engine, 4)
    e = entries[1]
    forged = entry_hash(e.prev_hash, id=e.id, ts=e.ts, actor="someone-else", kind=e.kind, subject=e.subject, payload=e.payload)
    su = await security_db.superuser()
    try:
        await su.execute("UPDATE audit_log SET actor = 'someone-else', hash = $1 WHERE id = 2", forged)
    finally:
        await su.close()
    result = await _verify(security_db.engine)
    assert (result.ok, result.first_broken_id, result.reason) == (False, 3, PREV_HASH_MISMATCH)


async def test_deleted_row_is_reported_missing(security_db: SecurityDb) -> None:
    await _append(security_db.engine, 5)
    su = await security_db.superuser()
    try:
        await su.execute("DELETE FROM audit_log WHERE id = 3")
    finally:
        await su.close()
    result = await _verify(security_db.engine)
    assert (result.ok, result.first_broken_id, result.reason) == (False, 3, MISSING_ROW)


async def test_cut_off_tail_is_reported_missing(security_db: SecurityDb) -> None:
    await _append(security_db.engine, 5)
    su = await security_db.superuser()
    try:
        await su.execute("DELETE FROM audit_log WHERE id >= 4")
    finally:
        await su.close()
    result = await _verify(security_db.engine)
    assert (result.ok, result.first_broken_id, result.reason) == (False, 4, MISSING_ROW)


async def test_rows_slipped_in_past_the_head_are_reported(security_db: SecurityDb) -> None:
    entries = await _append(security_db.engine, 2)
    last = entries[-1]
    ts = datetime.now(UTC)
    forged = entry_hash(last.hash, id=3, ts=ts, actor="x", kind="policy_change", subject="s", payload={})
    su = await security_db.superuser()
    try:
        await su.execute(
            "INSERT INTO audit_log (id, ts, actor, kind, subject, payload, prev_hash, hash) "
            "VALUES (3, $1, 'x', 'policy_change', 's', '{}', $2, $3)",
            ts,
            last.hash,
            forged,
        )
    finally:
        await su.close()
    result = await _verify(security_db.engine)
    assert (result.ok, result.first_broken_id, result.reason) == (False, 3, HEAD_MISMATCH)


async def test_head_rewritten_to_hide_the_last_row_is_caught(security_db: SecurityDb) -> None:
    entries = await _append(security_db.engine, 3)
    su = await security_db.superuser()
    try:
        await su.execute("UPDATE audit_head SET hash = $1 WHERE id = 1", entries[0].hash)
    finally:
        await su.close()
    result = await _verify(security_db.engine)
    assert (result.ok, result.first_broken_id, result.reason) == (False, 3, HEAD_MISMATCH)


async def test_update_delete_truncate_are_refused_for_the_app(security_db: SecurityDb) -> None:
    await _append(security_db.engine, 2)
    for sql in (
        "UPDATE audit_log SET actor = 'x' WHERE id = 1",
        "DELETE FROM audit_log WHERE id = 2",
        "TRUNCATE audit_log",
        "UPDATE audit_head SET last_id = 0",
        "DELETE FROM audit_head",
        "INSERT INTO audit_head (id, last_id, hash) VALUES (2, 0, 'x')",
    ):
        with pytest.raises(DBAPIError) as info:
            async with security_db.engine.begin() as conn:
                await conn.execute(text(sql))
        assert "append-only" in str(info.value) or "audit_head" in str(info.value), sql
    assert (await _verify(security_db.engine)).checked == 2


async def test_an_insert_that_does_not_extend_the_head_is_refused(security_db: SecurityDb) -> None:
    await _append(security_db.engine, 1)
    with pytest.raises(DBAPIError, match="fork refused"):
        async with security_db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO audit_log (id, ts, actor, kind, subject, payload, prev_hash, hash) "
                    f"VALUES (2, now(), 'x', 'k', '', '{{}}', '{GENESIS_HASH}', 'h')"
                )
            )


async def test_concurrent_appenders_never_fork_the_chain(security_db: SecurityDb) -> None:
    engines = [make_engine(security_db.url, pool_size=2) for _ in range(4)]  # four "replicas"
    audit = AuditLog()

    async def writer(engine: AsyncEngine, w: int) -> None:
        for i in range(15):
            async with engine.begin() as conn:
                await audit.append(conn, POLICY_DECISION, f"w{w}", {"i": i}, f"replica-{w}")
                if i % 5 == 0:
                    await asyncio.sleep(0)  # hold the head lock across a scheduling point

    try:
        await asyncio.gather(*(writer(e, w) for w, e in enumerate(engines)))
    finally:
        for e in engines:
            await e.dispose()
    result = await _verify(security_db.engine)
    assert result.ok and result.checked == 60 and result.head_id == 60


async def test_rolled_back_append_leaves_no_gap(security_db: SecurityDb) -> None:
    await _append(security_db.engine, 1)
    with pytest.raises(RuntimeError):
        async with security_db.engine.begin() as conn:
            await AuditLog().append(conn, KEY_EVENT, "k", {}, "admin")
            raise RuntimeError("the change being audited failed")
    entries = await _append(security_db.engine, 1)
    assert entries[0].id == 2
    assert (await _verify(security_db.engine)).ok


async def test_append_needs_kind_and_actor(security_db: SecurityDb) -> None:
    async with security_db.engine.begin() as conn:
        with pytest.raises(ValueError):
            await AuditLog().append(conn, "", "s", {}, "a")
        with pytest.raises(ValueError):
            await AuditLog().append(conn, "k", "s", {}, "")
        assert await AuditLog().append_many(conn, []) == []


async def test_export_jsonl_and_csv_round_trip_and_verify(security_db: SecurityDb) -> None:
    await _append(security_db.engine, 4)
    audit = AuditLog(batch_size=3)
    out_jsonl, out_csv = io.StringIO(), io.StringIO()
    async with security_db.engine.connect() as conn:
        assert await audit.export(conn, out_jsonl, "jsonl") == 4
        assert await audit.export(conn, out_csv, "csv") == 4
        with pytest.raises(ValueError):
            await audit.export(conn, io.StringIO(), "xml")  # type: ignore[arg-type]
        assert await audit.export(conn, io.StringIO(), "jsonl", datetime.now(UTC) + timedelta(hours=1)) == 0
    lines = [json.loads(x) for x in out_jsonl.getvalue().splitlines()]
    assert [x["id"] for x in lines] == [1, 2, 3, 4]
    assert set(lines[0]) == {"id", "ts", "actor", "kind", "subject", "payload", "prev_hash", "hash"}
    assert lines[1]["payload"] == {"rule": "r1", "action": "block", "i": 1}
    rows = list(csv.DictReader(io.StringIO(out_csv.getvalue())))
    assert rows[3]["id"] == "4" and json.loads(rows[3]["payload"])["i"] == 3 and rows[3]["hash"] == lines[3]["hash"]
    for dump in (out_jsonl.getvalue(), out_csv.getvalue()):
        result = verify_export(read_export(io.StringIO(dump)))
        assert result.ok and result.checked == 4
    tampered = out_jsonl.getvalue().replace('"action": "block", "i": 2', '"action": "allow", "i": 2')
    result = verify_export(read_export(io.StringIO(tampered)))
    assert (result.ok, result.first_broken_id, result.reason) == (False, 3, HASH_MISMATCH)
    tail = "\n".join(out_jsonl.getvalue().splitlines()[2:])  # an export that starts mid-chain
    assert verify_export(read_export(io.StringIO(tail))).ok


async def test_audit_writer_batches_in_the_background(security_db: SecurityDb) -> None:
    writer = AuditWriter(security_db.engine, flush_interval=0.05, batch_size=3, max_pending=10)
    await writer.start()
    try:
        for i in range(7):
            assert writer.submit(POLICY_DECISION, f"req-{i}", {"i": i}, "sidecar")
        assert not writer.submit("", "s", {}, "sidecar")  # would poison a batch: dropped at the door
        for _ in range(100):
            if writer.pending == 0 and writer.stats["appended"] == 7:
                break
            await asyncio.sleep(0.05)
    finally:
        await writer.stop()
    assert writer.stats["appended"] == 7 and writer.stats["dropped"] == 1
    full = AuditWriter(security_db.engine, max_pending=2)
    assert full.submit("k", "s", {}, "a") and full.submit("k", "s", {}, "a") and not full.submit("k", "s", {}, "a")
    assert await full.flush() == 2  # and the loss is written down after them: one audit_dropped entry
    result = await _verify(security_db.engine)
    assert result.ok and result.checked == 10


async def test_audit_writer_keeps_entries_while_the_database_is_away() -> None:
    dead = make_engine("postgresql://nobody@127.0.0.1:1/none", connect_timeout=0.5)
    writer = AuditWriter(dead, flush_interval=0.01)
    writer.submit("k", "s", {}, "a")
    await writer.start()
    for _ in range(100):
        if writer.stats["failures"] >= 2:
            break
        await asyncio.sleep(0.02)
    await writer.stop()  # the last attempt fails too: logged, not raised
    await dead.dispose()
    assert writer.stats["failures"] >= 2 and writer.pending == 1


async def test_migration_downgrades_cleanly_and_upgrades_again(fresh_db_url) -> None:
    from intelligence.store.migrate import downgrade, upgrade_async

    url = await fresh_db_url()
    await upgrade_async(url)
    await asyncio.to_thread(downgrade, url, "0002_pattern_memory")

    async def leftovers() -> tuple[set, set]:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            tables = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
            funcs = {r[0] for r in await conn.fetch("SELECT proname FROM pg_proc WHERE proname LIKE 'llmproxy_%'")}
            return tables & SECURITY_TABLES, funcs
        finally:
            await conn.close()

    assert await leftovers() == (set(), set())
    await upgrade_async(url)
    tables, funcs = await leftovers()
    assert tables == SECURITY_TABLES and {"llmproxy_audit_chain", "llmproxy_keys_notify"} <= funcs
