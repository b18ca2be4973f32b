"""The audit log against someone who holds the database: HMAC'd entries, the external checkpoint,
the insert-only writer role, and losses written down instead of vanishing.

Tampering is done as a DBA would: ``SecurityDb.superuser()`` bypasses the append-only triggers
(``session_replication_role = replica``). Every case must produce its own finding kind, through the
API and through ``llmproxy audit verify --json``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from intelligence.audit import (
    AUDIT_DROPPED,
    DELETED,
    DOWNGRADED,
    EDITED,
    GENESIS_HASH,
    POLICY_DECISION,
    RELINKED,
    RESET,
    TRUNCATED,
    UNKNOWN_KEY,
    WRITER_ROLE,
    AuditKey,
    AuditLog,
    AuditWriter,
    Checkpointer,
    describe,
    read_checkpoint,
)
from intelligence.audit.chain import CHECKPOINT_INVALID, entry_hash
from intelligence.audit.checkpoint import default_path, sign_body
from intelligence.audit.log import CANNOT_AUTHENTICATE
from intelligence.store.engine import asyncpg_dsn, make_engine
from tests.intelligence.conftest import SecurityDb
from tests.intelligence.test_keys_store import InProcessCli

KEY_TEXT = secrets.token_urlsafe(48)
KEY = AuditKey.from_secret(KEY_TEXT, "LLMPROXY_AUDIT_KEY")
N = 6


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This process has the audit key; the data dir (checkpoint) is a fresh temporary one."""
    monkeypatch.setenv("LLMPROXY_AUDIT_KEY", KEY_TEXT)
    monkeypatch.setenv("LLMPROXY_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LLMPROXY_AUDIT_KEY_FILE", raising=False)
    for name in ("LLMPROXY_AUDIT_CHECKPOINT_FILE", "LLMPROXY_AUDIT_CHECKPOINT_URL", "SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


async def _append(db: SecurityDb, n: int, audit: AuditLog | None = None, start: int = 0) -> list:
    audit = audit or AuditLog()
    out = []
    async with db.engine.begin() as conn:
        for i in range(start, start + n):
            out.append(await audit.append(conn, POLICY_DECISION, f"req-{i}", {"rule": f"r{i}", "action": "block"}, "sidecar"))
    return out


async def _seed(db: SecurityDb, data_dir: Path, n: int = N) -> list:
    """``n`` authenticated entries, the head checkpointed under ``data_dir``."""
    entries = await _append(db, n, AuditLog(key=KEY))
    cp = await Checkpointer(db.engine, KEY, default_path(data_dir)).checkpoint()
    assert cp is not None and cp.last_id == n
    return entries


async def _verify(db: SecurityDb, data_dir: Path | None = None, keys: list[AuditKey] | None = None):
    state = read_checkpoint(default_path(data_dir), keys or [KEY]) if data_dir is not None else None
    async with db.engine.connect() as conn:
        return await AuditLog().verify(conn, keys=[KEY] if keys is None else keys, checkpoint=state)


async def _as_dba(db: SecurityDb, *statements: tuple[Any, ...]) -> None:
    su = await db.superuser()
    try:
        for sql, *args in statements:
            await su.execute(sql, *args)
    finally:
        await su.close()


def _kinds(result) -> set[tuple[str, int | None]]:
    return {(f.kind, f.id) for f in result.findings}


async def _rewrite_from_genesis(db: SecurityDb, entries: list, make_hash: Callable[..., str]) -> None:
    """Replace the whole log by a chain re-made from genesis with ``make_hash`` (someone without the key)."""
    rows, prev = [], GENESIS_HASH
    for e in entries:
        payload = {**e.payload, "action": "allow"}  # what the rewrite was for
        h = make_hash(prev, id=e.id, ts=e.ts, actor=e.actor, kind=e.kind, subject=e.subject, payload=payload)
        rows.append((e.id, e.ts, e.actor, e.kind, e.subject, json.dumps(payload), prev, h))
        prev = h
    su = await db.superuser()
    try:
        await su.execute("DELETE FROM audit_log")
        await su.executemany(
            "INSERT INTO audit_log (id, ts, actor, kind, subject, payload, prev_hash, hash) VALUES ($1,$2,$3,$4,$5,$6::jsonb,$7,$8)",
            rows,
        )
        await su.execute("UPDATE audit_head SET last_id = $1, hash = $2 WHERE id = 1", rows[-1][0], prev)
    finally:
        await su.close()


# ------------------------------------------------------------------------------------------ tampering
TamperFn = Callable[[SecurityDb, list], Awaitable[None]]


async def _edit(db: SecurityDb, entries: list) -> None:
    await _as_dba(db, ("""UPDATE audit_log SET payload = '{"rule": "r2", "action": "allow"}' WHERE id = 3""",))


async def _delete(db: SecurityDb, entries: list) -> None:
    await _as_dba(db, ("DELETE FROM audit_log WHERE id = 3",))


async def _truncate_tail(db: SecurityDb, entries: list) -> None:
    # the head is moved back too, so the database alone looks consistent: only the checkpoint knows
    await _as_dba(
        db,
        ("DELETE FROM audit_log WHERE id >= 5",),
        ("UPDATE audit_head SET last_id = 4, hash = $1 WHERE id = 1", entries[3].hash),
    )


async def _recompute_legacy(db: SecurityDb, entries: list) -> None:
    await _rewrite_from_genesis(db, entries, entry_hash)  # plain SHA-256: anyone can compute it


async def _recompute_guessed_macs(db: SecurityDb, entries: list) -> None:
    guess = AuditKey.from_secret(secrets.token_urlsafe(48), "attacker")

    def forged(prev: str, **content: Any) -> str:  # our key id, a MAC from another key
        return f"hmac-sha256:{KEY.kid}:" + entry_hash(prev, key=guess, **content)[-64:]

    await _rewrite_from_genesis(db, entries, forged)


async def _empty(db: SecurityDb, entries: list) -> None:
    await _as_dba(db, ("DELETE FROM audit_log",), ("UPDATE audit_head SET last_id = 0, hash = $1 WHERE id = 1", GENESIS_HASH))


async def _downgrade(db: SecurityDb, entries: list) -> None:
    e = entries[2]
    payload = {**e.payload, "action": "allow"}
    legacy = entry_hash(e.prev_hash, id=e.id, ts=e.ts, actor=e.actor, kind=e.kind, subject=e.subject, payload=payload)
    await _as_dba(db, ("UPDATE audit_log SET payload = $1::jsonb, hash = $2 WHERE id = 3", json.dumps(payload), legacy))


CASES: dict[str, tuple[TamperFn, set[tuple[str, int | None]]]] = {
    "edited": (_edit, {(EDITED, 3)}),
    "deleted": (_delete, {(DELETED, 3)}),
    "truncated": (_truncate_tail, {(TRUNCATED, 5)}),
    "reset, recomputed as plain SHA-256": (_recompute_legacy, {(RESET, 1)}),
    "reset, recomputed with guessed MACs": (_recompute_guessed_macs, {(RESET, 1)}),
    "reset, emptied": (_empty, {(RESET, None)}),
    "downgraded": (_downgrade, {(DOWNGRADED, 3), (RELINKED, 4)}),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_each_tampering_has_its_own_finding(security_db: SecurityDb, keyed: Path, case: str) -> None:
    tamper, expected = CASES[case]
    entries = await _seed(security_db, keyed)
    before = await _verify(security_db, keyed)
    assert before.ok and before.authenticated and before.checkpoint and before.checkpoint["consistent"], describe(before)
    await tamper(security_db, entries)
    result = await _verify(security_db, keyed)
    assert not result.ok
    assert _kinds(result) == expected, describe(result)


@pytest.mark.parametrize("case", ["truncated", "reset, recomputed as plain SHA-256", "reset, emptied"])
async def test_without_the_checkpoint_these_look_intact(security_db: SecurityDb, keyed: Path, case: str) -> None:
    """Why the checkpoint exists: a DBA who also fixes the head hides a cut tail or a legacy rewrite
    from the database's own view (the report then says the entries are unauthenticated legacy ones)."""
    tamper, _ = CASES[case]
    entries = await _seed(security_db, keyed)
    await tamper(security_db, entries)
    result = await _verify(security_db)
    assert result.ok and result.findings == ()
    assert result.authenticated is (case != "reset, recomputed as plain SHA-256")  # an empty log: vacuously
    if case.startswith("reset, recomputed"):
        assert result.legacy_entries == N and "legacy" in describe(result)


async def test_cli_reports_findings_as_json(
    security_db: SecurityDb,
    keyed: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = InProcessCli(security_db.url, capsys, monkeypatch)
    entries = await _seed(security_db, keyed)
    r = await run("audit", "verify", "--json", "--data-dir", str(keyed))
    doc = json.loads(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (doc["ok"], doc["entries"], doc["findings"], doc["authenticated"]) == (True, N, [], True)
    assert doc["checkpoint"]["status"] == "valid" and doc["checkpoint"]["consistent"] and doc["checkpoint"]["last_id"] == N
    r = await run("audit", "verify", "--data-dir", str(keyed))
    assert r.returncode == 0 and "intact and authenticated: 6 entries" in r.stdout

    await _truncate_tail(security_db, entries)
    await _edit(security_db, entries)
    r = await run("audit", "verify", "--json", "--data-dir", str(keyed))
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["ok"] is False
    assert {(f["kind"], f["id"]) for f in doc["findings"]} == {(EDITED, 3), (TRUNCATED, 5)}
    assert all(f["detail"] for f in doc["findings"]) and doc["checkpoint"]["consistent"] is False
    r = await run("audit", "verify", "--data-dir", str(keyed))
    assert r.returncode == 1 and "BROKEN at entry 3" in r.stdout and "truncated" in r.stdout and "intact and" not in r.stdout


async def test_without_the_key_verify_cannot_authenticate(
    security_db: SecurityDb,
    keyed: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _seed(security_db, keyed)
    monkeypatch.delenv("LLMPROXY_AUDIT_KEY")
    run = InProcessCli(security_db.url, capsys, monkeypatch)
    r = await run("audit", "verify", "--data-dir", str(keyed))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "NOT authenticated" in r.stdout and "intact" not in r.stdout
    r = await run("audit", "verify", "--json", "--data-dir", str(keyed))
    doc = json.loads(r.stdout)
    assert (doc["ok"], doc["authenticated"], doc["reason"], doc["findings"]) == (False, False, CANNOT_AUTHENTICATE, [])
    assert doc["checkpoint"]["status"] == "unverified"  # its signature cannot be checked either
    # with the key in a file (an operator's copy), it authenticates again
    key_file = keyed / "copy.key"
    key_file.write_text(KEY_TEXT)
    key_file.chmod(0o600)
    r = await run("audit", "verify", "--json", "--data-dir", str(keyed), "--key-file", str(key_file))
    assert r.returncode == 0 and json.loads(r.stdout)["authenticated"] is True


async def test_legacy_entries_verify_as_unauthenticated(security_db: SecurityDb, keyed: Path) -> None:
    await _append(security_db, 3, AuditLog(key=None))  # before the key existed
    entries = await _append(security_db, 3, AuditLog(), start=3)  # this process's key, from the environment
    assert [e.hash.startswith("hmac-sha256:") for e in entries] == [True] * 3
    result = await _verify(security_db)
    assert result.ok and not result.authenticated
    assert (result.legacy_entries, result.legacy_range, result.authenticated_entries) == (3, (1, 3), 3)
    text_ = describe(result)
    assert "3 legacy entries (1..3: plain SHA-256" in text_ and "unauthenticated" in text_
    assert result.keys[0]["kid"] == KEY.kid and (result.keys[0]["first_id"], result.keys[0]["last_id"]) == (4, 6)


async def test_mac_under_another_key_is_reported_as_such(security_db: SecurityDb, keyed: Path) -> None:
    other = AuditKey.from_secret(secrets.token_urlsafe(48), "old key")
    await _append(security_db, 2, AuditLog(key=other))
    await _append(security_db, 2, AuditLog(key=KEY), start=2)
    result = await _verify(security_db)
    assert _kinds(result) == {(UNKNOWN_KEY, 1)}
    both = await _verify(security_db, keys=[KEY, other])  # the old key given back (after a rotation)
    assert both.ok and both.authenticated


async def test_an_altered_checkpoint_file_is_reported(security_db: SecurityDb, keyed: Path) -> None:
    await _seed(security_db, keyed)
    path = default_path(keyed)
    doc = json.loads(path.read_text())
    doc["last_id"] = 3  # hide the last entries from the anchor
    path.write_text(json.dumps(doc))
    result = await _verify(security_db, keyed)
    assert _kinds(result) == {(CHECKPOINT_INVALID, None)} and result.checkpoint["status"] == "invalid"


# ------------------------------------------------------------------------------------------ checkpoints
async def test_checkpoint_file_is_private_signed_and_only_moves_forward(security_db: SecurityDb, keyed: Path) -> None:
    entries = await _seed(security_db, keyed)
    path = default_path(keyed)
    assert path.stat().st_mode & 0o777 == 0o600
    doc = json.loads(path.read_text())
    assert set(doc) == {"version", "last_id", "last_mac", "count", "kid", "time", "sig"}
    assert (doc["last_id"], doc["count"], doc["last_mac"], doc["kid"]) == (N, N, entries[-1].hash, KEY.kid)
    await _truncate_tail(security_db, entries)
    cp = Checkpointer(security_db.engine, KEY, path)
    assert await cp.checkpoint() is None and cp.stats["refused"] == 1  # the alarm, not a new anchor
    assert json.loads(path.read_text())["last_id"] == N


async def test_writer_checkpoints_periodically_and_at_shutdown(security_db: SecurityDb, keyed: Path) -> None:
    path = default_path(keyed)
    writer = AuditWriter(
        security_db.engine,
        AuditLog(key=KEY),
        flush_interval=0.02,
        batch_size=10,
        checkpoint=Checkpointer(security_db.engine, KEY, path, interval=0.1),
    )
    await writer.start()
    try:
        for i in range(5):
            writer.submit(POLICY_DECISION, f"r{i}", {"i": i}, "sidecar")
        for _ in range(100):
            if path.exists() and json.loads(path.read_text())["last_id"] == 5:
                break
            await asyncio.sleep(0.05)
        assert json.loads(path.read_text())["last_id"] == 5
        writer.submit(POLICY_DECISION, "last", {"i": 5}, "sidecar")
    finally:
        await writer.stop()
    assert json.loads(path.read_text())["last_id"] == 6  # written at shutdown, after the last flush


async def test_writer_takes_its_checkpoint_settings_from_the_environment(
    security_db: SecurityDb, keyed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMPROXY_AUDIT_CHECKPOINT_FILE", str(keyed / "elsewhere.json"))
    writer = AuditWriter(security_db.engine)
    assert writer.checkpointer is not None and writer.checkpointer.path == keyed / "elsewhere.json"
    monkeypatch.delenv("LLMPROXY_AUDIT_KEY")
    assert AuditWriter(security_db.engine).checkpointer is None  # nothing to sign with


async def test_checkpoint_webhook_is_signed_and_retried(
    security_db: SecurityDb, keyed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[tuple[bytes, str]] = []
    attempts = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            return web.Response(status=503)  # the receiver is briefly away: retried
        received.append((await request.read(), request.headers["x-llmproxy-signature"]))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/checkpoint", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        await _append(security_db, 3, AuditLog(key=KEY))
        monkeypatch.setenv("LLMPROXY_AUDIT_CHECKPOINT_URL", f"http://127.0.0.1:{port}/checkpoint")
        monkeypatch.setenv("LLMPROXY_AUDIT_CHECKPOINT_SECRET", "receiver-secret")
        cp = Checkpointer.from_env(security_db.engine, KEY)
        assert cp is not None
        cp.backoff = 0.01
        assert await cp.checkpoint() is not None
    finally:
        await runner.cleanup()
    assert attempts == 2 and len(received) == 1 and cp.stats["posted"] == 1
    body, signature = received[0]
    assert signature == sign_body(b"receiver-secret", body)
    doc = json.loads(body)
    assert doc["last_id"] == 3 and doc["kid"] == KEY.kid
    assert default_path(keyed).exists()  # the file too (LLMPROXY_DATA_DIR)


# ------------------------------------------------------------------------------------------ dropped entries
async def test_dropped_entries_leave_a_record(security_db: SecurityDb, keyed: Path) -> None:
    writer = AuditWriter(security_db.engine, AuditLog(key=KEY), max_pending=2, checkpoint=None)
    results = [writer.submit(POLICY_DECISION, f"r{i}", {"i": i}, "sidecar") for i in range(5)]
    writer.submit("automated_action", "x", {}, "sidecar")
    assert results == [True, True, False, False, False] and writer.unrecorded_drops == 4
    assert await writer.flush() == 2
    assert writer.unrecorded_drops == 0 and writer.stats["drops_recorded"] == 4
    async with security_db.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT id, kind, payload FROM audit_log ORDER BY id"))).all()
    assert [r.kind for r in rows] == [POLICY_DECISION, POLICY_DECISION, AUDIT_DROPPED]
    record = rows[-1].payload
    assert record["dropped"] == 4 and record["kinds"] == {POLICY_DECISION: 3, "automated_action": 1}
    assert record["first_at"] <= record["last_at"]
    assert (await _verify(security_db)).ok


async def test_drops_stay_counted_while_the_database_is_away(keyed: Path) -> None:
    dead = make_engine("postgresql://nobody@127.0.0.1:1/none", connect_timeout=0.5)
    writer = AuditWriter(dead, AuditLog(key=KEY), max_pending=1, checkpoint=None)
    writer.submit("k", "s", {}, "a")
    assert not writer.submit("k", "s", {}, "a")
    with pytest.raises(OSError):
        await writer.flush()
    await dead.dispose()
    assert writer.unrecorded_drops == 1 and writer.pending == 1  # nothing forgotten: written when it can


# ------------------------------------------------------------------------------------------ writer role
def _url_as(url: str, user: str) -> str:
    parts = urlsplit(asyncpg_dsn(url))
    return urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc.rpartition('@')[2]}"))


async def test_the_writer_role_can_insert_but_not_change(security_db: SecurityDb) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(security_db.url))
    try:
        privileges = {
            (table, p): await conn.fetchval("SELECT has_table_privilege($1, $2, $3)", WRITER_ROLE, table, p)
            for table in ("audit_log", "audit_head")
            for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
        }
    finally:
        await conn.close()
    assert {k for k, v in privileges.items() if v} == {("audit_log", "SELECT"), ("audit_log", "INSERT"), ("audit_head", "SELECT")}


async def test_an_application_role_appends_only_through_the_writer_role(security_db: SecurityDb) -> None:
    """A non-owner application role (NOINHERIT: none of the writer's rights unless it switches) that is
    a member of llmproxy_audit_writer: appends work (SET LOCAL ROLE), changes are refused by privileges."""
    app = f"t_app_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(asyncpg_dsn(security_db.url))
    db_name = await admin.fetchval("SELECT current_database()")
    await admin.execute(f"CREATE ROLE {app} LOGIN NOINHERIT")
    await admin.execute(f"GRANT {WRITER_ROLE} TO {app}")
    await admin.execute(f'GRANT CONNECT ON DATABASE "{db_name}" TO {app}')
    await admin.execute(f"GRANT USAGE ON SCHEMA public TO {app}")
    engine = make_engine(_url_as(security_db.url, app))
    try:
        async with engine.begin() as conn:
            assert await AuditLog(key=KEY).lock_head(conn) == (0, GENESIS_HASH)  # what policy changes take first
            entry = await AuditLog(key=KEY).append(conn, POLICY_DECISION, "req", {"a": 1}, "app")
            # back to the application role for the rest of the caller's transaction
            assert (await conn.execute(text("SELECT current_user"))).scalar_one() == app
        assert entry.id == 1
        for sql in (
            "UPDATE audit_log SET actor = 'x'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
            "UPDATE audit_head SET last_id = 0",
        ):
            for as_writer in (False, True):
                with pytest.raises(DBAPIError, match="permission denied"):
                    async with engine.begin() as conn:
                        if as_writer:
                            await conn.execute(text(f"SET LOCAL ROLE {WRITER_ROLE}"))
                        await conn.execute(text(sql))
        # without the writer role the application role cannot append at all (it has no rights of its own)
        with pytest.raises(DBAPIError, match="permission denied"):
            async with engine.begin() as conn:
                await AuditLog(key=KEY, writer_role=None).append(conn, POLICY_DECISION, "req", {}, "app")
    finally:
        await engine.dispose()
        await admin.execute(f"DROP OWNED BY {app}")
        await admin.execute(f"DROP ROLE {app}")
        await admin.close()
    result = await _verify(security_db)
    assert result.ok and result.entries == 1


async def test_policy_changes_still_append_in_their_own_transaction(security_db: SecurityDb, keyed: Path) -> None:
    from intelligence.policy.store import set_policy

    source = "version: 1\nname: p\nrules: []\n"
    async with security_db.engine.begin() as conn:
        change = await set_policy(conn, "p1", source, actor="admin:alice")
    assert change.audit is not None and change.audit.hash.startswith(f"hmac-sha256:{KEY.kid}:")
    result = await _verify(security_db)
    assert result.ok and result.authenticated and result.entries == 1


async def test_concurrent_keyed_appends_never_fork(security_db: SecurityDb, keyed: Path) -> None:
    engines = [make_engine(security_db.url, pool_size=2) for _ in range(3)]

    async def writer(engine, w: int) -> None:
        for i in range(10):
            async with engine.begin() as conn:
                await AuditLog().append(conn, POLICY_DECISION, f"w{w}", {"i": i}, f"replica-{w}")

    try:
        await asyncio.gather(*(writer(e, w) for w, e in enumerate(engines)))
    finally:
        for e in engines:
            await e.dispose()
    result = await _verify(security_db)
    assert result.ok and result.authenticated and result.entries == 30


async def test_migration_0015_downgrades_and_upgrades_again(fresh_db_url) -> None:
    from intelligence.store.migrate import downgrade, upgrade_async

    url = await fresh_db_url()
    await upgrade_async(url)

    async def state() -> dict[str, Any]:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            return {
                "lock_fn": await conn.fetchval("SELECT to_regprocedure('llmproxy_audit_lock_head()') IS NOT NULL"),
                "definer": await conn.fetchval("SELECT prosecdef FROM pg_proc WHERE proname = 'llmproxy_audit_chain'"),
                "revocations": await conn.fetchval("SELECT to_regclass('access_token_revocations') IS NOT NULL"),
                "grants": await conn.fetchval(
                    "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = $1", WRITER_ROLE
                ),
            }
        finally:
            await conn.close()

    assert await state() == {"lock_fn": True, "definer": True, "revocations": True, "grants": 3}
    await asyncio.to_thread(downgrade, url, "0014_learning_loop")
    assert await state() == {"lock_fn": False, "definer": False, "revocations": False, "grants": 0}
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:  # the old head lock still works after a downgrade
            await conn.execute(text("SELECT last_id FROM audit_head WHERE id = 1 FOR UPDATE"))
    finally:
        await engine.dispose()
    await upgrade_async(url)
    assert await state() == {"lock_fn": True, "definer": True, "revocations": True, "grants": 3}
