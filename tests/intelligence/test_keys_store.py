"""Gateway keys in PostgreSQL: create/list/revoke through the API and the CLI, hash-only storage,
audit events, database-side guards."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

import extproc.cli as cli_main
from extproc.cli import keys as keys_cli
from intelligence.audit import KEY_EVENT, AuditLog
from intelligence.keys import (
    AmbiguousKey,
    Budgets,
    KeyNotFound,
    NewKey,
    create_key,
    find_key,
    hash_key,
    list_keys,
    quarantine_key,
    release_key,
    revoke_key,
)
from intelligence.store.engine import asyncpg_dsn
from tests.intelligence.conftest import SecurityDb

# The CLI as installed, with this helper's subcommands registered even before extproc/cli/__init__ lists them.
CLI_SHIM = (
    "import sys, extproc.cli as c; "
    "c._COMMANDS = tuple(dict.fromkeys(c._COMMANDS + ('keys', 'audit'))); "
    "sys.argv[0] = 'llmproxy'; c.main()"
)


def cli(url: str, *args: str) -> subprocess.CompletedProcess:
    """The real entry point in a new process, with DATABASE_URL set (a few calls: each costs ~2 s of imports)."""
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run([sys.executable, "-c", CLI_SHIM, *args], capture_output=True, text=True, env=env, timeout=60)


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


class InProcessCli:
    """The same parser and commands, run in a worker thread of this process (the commands call
    asyncio.run()); exit codes and output as the shell would see them."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setattr(cli_main, "_COMMANDS", tuple(dict.fromkeys(cli_main._COMMANDS + ("keys", "audit"))))
        self.parser = cli_main.build_parser()
        self.capsys = capsys

    def _run(self, args: tuple[str, ...]) -> int:
        try:
            ns = self.parser.parse_args(args)
            return ns.func(ns) or 0
        except SystemExit as exc:
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
                return 1
            return exc.code or 0

    async def __call__(self, *args: str) -> CliResult:
        self.capsys.readouterr()
        code = await asyncio.to_thread(self._run, args)
        out = self.capsys.readouterr()
        return CliResult(code, out.out, out.err)


async def _dump_database(url: str) -> str:
    """Every text-ish value in every table, to prove a key string is stored nowhere."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        parts = []
        for table in tables:
            rows = await conn.fetch(f'SELECT t::text AS row FROM "{table}" t')
            parts.extend(r["row"] for r in rows)
        return "\n".join(parts)
    finally:
        await conn.close()


async def _key_events(db: SecurityDb) -> list[dict]:
    out = []
    async with db.engine.connect() as conn:
        async for entry in AuditLog().entries(conn):
            if entry.kind == KEY_EVENT:
                out.append({"subject": entry.subject, "actor": entry.actor, **entry.payload})
    return out


async def test_create_list_revoke_via_api(security_db: SecurityDb) -> None:
    expires = datetime.now(UTC) + timedelta(days=30)
    spec = NewKey(
        name="team-a",
        models=("gpt-*", "claude-*"),
        providers=("openai", "anthropic"),
        expires_at=expires,
        budgets=Budgets(rpm=60, tpd=100_000),
    )
    async with security_db.engine.begin() as conn:
        created = await create_key(conn, spec, actor="admin:alice")
    key, record = created.key, created.record
    assert key.startswith("llmp_") and len(key) >= 5 + 43
    assert key not in repr(created) and key not in repr(record)
    assert record.key_hash == hash_key(key) and key.startswith(record.prefix) and len(record.prefix) < 20
    assert record.models == ("gpt-*", "claude-*") and record.providers == ("openai", "anthropic")
    assert record.budgets == Budgets(rpm=60, tpd=100_000) and record.expires_at == expires
    assert record.status(datetime.now(UTC)) == "active"
    assert record.status(expires + timedelta(seconds=1)) == "expired"

    async with security_db.engine.connect() as conn:
        listed = await list_keys(conn)
        assert [r.id for r in listed] == [record.id]
        assert (await find_key(conn, record.id)).id == record.id
        assert (await find_key(conn, record.prefix)).id == record.id
        assert (await find_key(conn, record.prefix[:9])).id == record.id
        assert (await find_key(conn, key)).id == record.id  # the full key, pasted
        with pytest.raises(KeyNotFound) as missing:
            await find_key(conn, key[:-1] + ("A" if key[-1] != "A" else "B"))
        assert key[:-1] not in str(missing.value)  # a near-miss full key is never echoed whole

    public = record.to_public_dict(datetime.now(UTC))
    assert key not in json.dumps(public) and record.key_hash not in json.dumps(public)

    async with security_db.engine.begin() as conn:
        revoked, changed = await revoke_key(conn, record.prefix, actor="admin:bob", reason="left the team")
    assert changed and revoked.revoked_at is not None and revoked.revoked_by == "admin:bob"
    async with security_db.engine.begin() as conn:
        again, changed = await revoke_key(conn, record.id, actor="admin:bob")
    assert not changed and again.status(datetime.now(UTC)) == "revoked"

    events = await _key_events(security_db)
    assert [(e["action"], e["actor"]) for e in events] == [("create", "admin:alice"), ("revoke", "admin:bob")]
    assert events[0]["subject"] == record.id and events[0]["budgets"]["rpm"] == 60
    assert events[1]["reason"] == "left the team"
    assert key not in await _dump_database(security_db.url)
    async with security_db.engine.connect() as conn:
        assert (await AuditLog().verify(conn)).ok


async def test_quarantine_and_release_are_audited(security_db: SecurityDb) -> None:
    async with security_db.engine.begin() as conn:
        rec = (await create_key(conn, NewKey(name="bot"), actor="admin")).record
        q, changed = await quarantine_key(conn, rec.id, actor="policy:injection-burst", reason="5 injections in 1 min")
        assert changed and q.status(datetime.now(UTC)) == "quarantined"
        assert (await quarantine_key(conn, rec.id, actor="policy", reason="again"))[1] is False
        r, changed = await release_key(conn, rec.id, actor="admin:alice")
        assert changed and r.quarantined_at is None and r.status(datetime.now(UTC)) == "active"
        assert (await release_key(conn, rec.id, actor="admin:alice"))[1] is False
    assert [e["action"] for e in await _key_events(security_db)] == ["create", "quarantine", "release"]


async def test_ambiguous_prefix_and_unknown_key(security_db: SecurityDb) -> None:
    async with security_db.engine.begin() as conn:
        a = (await create_key(conn, NewKey(name="a"), actor="t")).record
        b = (await create_key(conn, NewKey(name="b"), actor="t")).record
        # force a shared display-prefix start (it is only 48 random bits; collisions must still be handled)
        await conn.execute(
            text("UPDATE gateway_keys SET prefix = 'llmp_same' || id WHERE id IN (:a, :b)"), {"a": a.id, "b": b.id}
        )
    async with security_db.engine.connect() as conn:
        with pytest.raises(AmbiguousKey) as info:
            await find_key(conn, "llmp_same")
        assert {c.id for c in info.value.candidates} == {a.id, b.id}
        with pytest.raises(KeyNotFound):
            await find_key(conn, "gk_nope")
        with pytest.raises(KeyNotFound):
            await find_key(conn, "llmp_")  # too short to be a prefix: taken as an id


async def test_database_guards_on_keys(security_db: SecurityDb) -> None:
    async with security_db.engine.begin() as conn:
        rec = (await create_key(conn, NewKey(name="x"), actor="t")).record
        await revoke_key(conn, rec.id, actor="t")
    with pytest.raises(DBAPIError, match="revocation is final"):
        async with security_db.engine.begin() as conn:
            await conn.execute(text("UPDATE gateway_keys SET revoked_at = NULL WHERE id = :id"), {"id": rec.id})
    with pytest.raises(DBAPIError, match="hash cannot change"):
        async with security_db.engine.begin() as conn:
            await conn.execute(text("UPDATE gateway_keys SET key_hash = 'x' WHERE id = :id"), {"id": rec.id})
    with pytest.raises(IntegrityError):
        async with security_db.engine.begin() as conn:
            await conn.execute(text("UPDATE gateway_keys SET rpm = 0 WHERE id = :id"), {"id": rec.id})
    with pytest.raises(ValueError):
        async with security_db.engine.begin() as conn:
            await create_key(conn, NewKey(name="  "), actor="t")


async def test_cli_create_list_revoke(
    security_db: SecurityDb, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = security_db.url
    run = InProcessCli(url, capsys, monkeypatch)
    r = await asyncio.to_thread(
        cli,
        url,
        "keys",
        "create",
        "--name",
        "ci-bot",
        "--models",
        "gpt-4o*, claude-*",
        "--providers",
        "openai,anthropic",
        "--expires",
        "30d",
        "--rpm",
        "10",
        "--tpd",
        "5000",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    key = made["key"]
    assert key.startswith("llmp_") and made["models"] == ["gpt-4o*", "claude-*"] and made["providers"] == ["openai", "anthropic"]
    assert made["budgets"] == {"rpm": 10, "rpd": None, "tpm": None, "tpd": 5000} and made["status"] == "active"
    assert datetime.fromisoformat(made["expires_at"]) > datetime.now(UTC) + timedelta(days=29)

    r = await run("keys", "create", "--name", "human")
    assert r.returncode == 0, r.stderr
    assert "shown once" in r.stdout and "llmp_" in r.stdout and "budgets:   unlimited" in r.stdout

    r = await run("keys", "list", "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert {k["name"] for k in listed} == {"ci-bot", "human"}
    assert key not in r.stdout and hash_key(key) not in r.stdout
    r = await run("keys", "list")
    assert r.returncode == 0 and "ci-bot" in r.stdout and "rpm=10 tpd=5000" in r.stdout and key not in r.stdout

    r = await run("keys", "revoke", made["prefix"], "--reason", "rotated")
    assert r.returncode == 0, r.stderr
    assert f"revoked gateway key {made['id']}" in r.stdout
    r = await run("keys", "revoke", made["id"])
    assert r.returncode == 0 and "already revoked" in r.stdout
    r = await run("keys", "revoke", "gk_doesnotexist")
    assert r.returncode == 1 and "no gateway key matches" in r.stderr
    r = await run("keys", "list", "--json")
    assert {k["name"]: k["status"] for k in json.loads(r.stdout)} == {"ci-bot": "revoked", "human": "active"}

    r = await run("keys", "create", "--name", "bad", "--expires", "yesterday")
    assert r.returncode != 0 and "expiry" in r.stderr
    r = await run("keys", "create", "--name", "bad", "--rpm", "0")
    assert r.returncode == 2 and "positive" in r.stderr

    assert key not in await _dump_database(url)
    actions = [(e["action"], e["actor"].startswith("cli:")) for e in await _key_events(security_db)]
    assert actions == [("create", True), ("create", True), ("revoke", True)]
    r = await run("audit", "verify")
    assert r.returncode == 0 and "audit log links intact: 3 entries" in r.stdout  # no audit key: links only


async def test_cli_in_process_reports_missing_schema_and_empty_list(
    security_db: SecurityDb, fresh_db_url, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="llmproxy")
    keys_cli.register(parser.add_subparsers(dest="command"))
    # asyncio.run() inside the command: run it in a worker thread, away from the test's loop
    args = parser.parse_args(["keys", "list", "--database-url", security_db.url])
    assert await asyncio.to_thread(args.func, args) == 0
    assert "no gateway keys" in capsys.readouterr().out
    unmigrated = await fresh_db_url()
    args = parser.parse_args(["keys", "list", "--database-url", unmigrated])
    with pytest.raises(SystemExit, match="no gateway-key tables"):
        await asyncio.to_thread(args.func, args)
    args = parser.parse_args(["keys", "create", "--name", " ", "--database-url", security_db.url])
    with pytest.raises(SystemExit, match="must not be empty"):
        await asyncio.to_thread(args.func, args)
