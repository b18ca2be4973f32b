"""Database-managed policies against real PostgreSQL: storing with audit entries and diffs, hot reload
through LISTEN/NOTIFY and polling, bad policies rejected with the old version kept, file changes
audited once across replicas, the CLI, and the ORM model matching the migration."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

import extproc.cli as cli_main
from intelligence.audit import POLICY_CHANGE, AuditLog
from intelligence.policy import PolicyError, PolicyWatcher
from intelligence.policy.models import POLICY_TABLES
from intelligence.policy.store import (
    PolicyNotFound,
    db_subject,
    delete_policy,
    file_subject,
    get_policy,
    list_policies,
    set_policy,
)
from intelligence.policy.testing import policy_yaml, request_facts
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.migrate import upgrade
from intelligence.store.models import Base
from tests.conftest import database_url


@pytest.fixture(scope="session")
def policy_database(pg_server_url: str) -> Iterator[str]:
    """A migrated database of its own: the audit log is append-only, so tests share it and use unique names."""
    name = f"t_pol_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(pg_server_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = database_url(pg_server_url, name)
    upgrade(url)
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class PolicyDb:
    url: str
    engine: AsyncEngine

    async def changes(self, subject: str) -> list[dict]:
        out = []
        async with self.engine.connect() as conn:
            async for entry in AuditLog().entries(conn):
                if entry.kind == POLICY_CHANGE and entry.subject == subject:
                    out.append({"actor": entry.actor, **entry.payload})
        return out

    async def raw(self, sql: str, *args: object) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(self.url))
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close()


@pytest.fixture
async def policy_db(policy_database: str) -> AsyncIterator[PolicyDb]:
    engine = make_engine(policy_database)
    yield PolicyDb(policy_database, engine)
    await engine.dispose()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def tagging(tag: str, name: str = "x", **rule: object) -> str:
    return policy_yaml({"id": "tagger", "actions": {"tag": tag}, **rule}, name=name)


async def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def tags(watcher: PolicyWatcher) -> tuple[str, ...]:
    return watcher.snapshot.evaluate_request(request_facts()).tags


# ------------------------------------------------------------------------------------------ store and audit
async def test_set_update_disable_delete_are_audited_with_diffs(policy_db: PolicyDb) -> None:
    name = unique("team")
    v1, v2 = tagging("one"), tagging("two")
    async with policy_db.engine.begin() as conn:
        created = await set_policy(conn, name, v1, actor="admin:alice")
    assert created.changed and created.policy.version == 1 and created.policy.enabled
    assert created.policy.created_by == "admin:alice" and created.audit is not None
    assert "+    tag: one" in created.diff

    async with policy_db.engine.begin() as conn:
        same = await set_policy(conn, name, v1, actor="admin:bob")
    assert not same.changed and same.audit is None and same.policy.version == 1

    async with policy_db.engine.begin() as conn:
        updated = await set_policy(conn, name, v2, actor="admin:bob")
        disabled = await set_policy(conn, name, v2, actor="admin:carol", enabled=False)
    assert updated.policy.version == 2 and updated.policy.updated_by == "admin:bob"
    assert disabled.policy.version == 3 and not disabled.policy.enabled

    async with policy_db.engine.begin() as conn:
        deleted = await delete_policy(conn, name, actor="admin:dave")
        assert await get_policy(conn, name) is None
    assert deleted.policy is None and "-    tag: two" in deleted.diff

    entries = await policy_db.changes(db_subject(name))
    assert [(e["actor"], e["status"], e.get("action")) for e in entries] == [
        ("admin:alice", "applied", "create"),
        ("admin:bob", "applied", "update"),
        ("admin:carol", "disabled", "update"),
        ("admin:dave", "deleted", "delete"),
    ]
    created_e, updated_e, disabled_e, deleted_e = entries
    assert created_e["previous_sha256"] is None and created_e["diff"].startswith(f"--- {name} (before)\n+++ {name} (after)\n")
    assert "-    tag: one\n+    tag: two\n" in updated_e["diff"]
    assert updated_e["previous_sha256"] == created_e["sha256"] and updated_e["content"] == v2
    assert disabled_e["diff"] == ""  # same content, switched off
    assert deleted_e["content"] is None and deleted_e["sha256"] is None and "-    tag: two" in deleted_e["diff"]
    async with policy_db.engine.connect() as conn:
        assert (await AuditLog().verify(conn)).ok


async def test_invalid_policies_and_names_are_refused_before_storing(policy_db: PolicyDb) -> None:
    name = unique("bad")
    async with policy_db.engine.begin() as conn:
        with pytest.raises(PolicyError) as info:
            await set_policy(conn, name, "rules:\n  - id: a\n    actions: {colour: red}\n", actor="admin")
        assert (info.value.issues[0].line, info.value.issues[0].field) == (3, "rules[0].actions.colour")
        assert info.value.issues[0].source == f"db:{name}"
        with pytest.raises(PolicyError):
            await set_policy(conn, "no spaces allowed", tagging("x"), actor="admin")
        with pytest.raises(ValueError):
            await set_policy(conn, name, tagging("x"), actor="")
        with pytest.raises(PolicyNotFound):
            await delete_policy(conn, name, actor="admin")
        assert await get_policy(conn, name) is None
    assert await policy_db.changes(db_subject(name)) == []


# ------------------------------------------------------------------------------------------ hot reload from the database
async def test_db_policies_join_the_file_and_reload_on_notify(policy_db: PolicyDb, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(tagging("from-file", name=unique("file")))
    name = unique("dash")
    watcher = PolicyWatcher(path, policy_db.engine, poll_interval=3600, db_poll_interval=3600)  # LISTEN only
    await watcher.start()
    try:
        await wait_for(lambda: watcher.listening)
        base = set(tags(watcher))
        assert "from-file" in base

        async with policy_db.engine.begin() as conn:
            await set_policy(conn, name, tagging("from-db", priority=1), actor="admin:alice")
        await wait_for(lambda: "from-db" in tags(watcher))
        assert watcher.stats["notifications"] >= 1
        assert tags(watcher)[0] == "from-db"  # priority 1 runs before the file's priority-100 rule
        assert any(d.origin == f"db:{name}" for d in watcher.snapshot.documents)
        good = watcher.snapshot

        # a direct SQL write skips validation: the watcher rejects it and keeps the last good version
        bad = "rules:\n  - id: tagger\n    actions: {tag: broken, colour: red}\n"
        await policy_db.raw(
            "UPDATE policies SET source = $1, sha256 = 'manual', version = version + 1 WHERE name = $2", bad, name
        )
        await wait_for(lambda: f"db:{name}" in watcher.errors)
        assert watcher.snapshot is good and "from-db" in tags(watcher)
        assert watcher.errors[f"db:{name}"][0].field == "rules[0].actions.colour"

        async with policy_db.engine.begin() as conn:
            await set_policy(conn, name, tagging("fixed"), actor="admin:alice")
        await wait_for(lambda: "fixed" in tags(watcher))
        assert f"db:{name}" not in watcher.errors

        async with policy_db.engine.begin() as conn:
            await set_policy(conn, name, tagging("fixed"), actor="admin:alice", enabled=False)
        await wait_for(lambda: "fixed" not in tags(watcher))

        async with policy_db.engine.begin() as conn:
            await set_policy(conn, name, tagging("back"), actor="admin:alice")
        await wait_for(lambda: "back" in tags(watcher))
        async with policy_db.engine.begin() as conn:
            await delete_policy(conn, name, actor="admin:alice")
        await wait_for(lambda: "back" not in tags(watcher))
        assert set(tags(watcher)) == base
    finally:
        await watcher.stop()

    entries = await policy_db.changes(db_subject(name))
    statuses = [(e["actor"], e["status"]) for e in entries]
    # the SQL edit that bypassed set_policy is audited by the watcher, once, with its errors
    assert ("db:unaudited", "rejected") in statuses
    rejected = next(e for e in entries if e["status"] == "rejected")
    assert rejected["errors"][0]["field"] == "rules[0].actions.colour" and "+    actions: {tag: broken" in rejected["diff"]
    assert [s for s in statuses if s[0] != "db:unaudited"] == [
        ("admin:alice", "applied"),
        ("admin:alice", "applied"),
        ("admin:alice", "disabled"),
        ("admin:alice", "applied"),
        ("admin:alice", "deleted"),
    ]
    assert statuses.count(("db:unaudited", "rejected")) == 1


async def test_poll_fallback_without_listen_and_name_clash(policy_db: PolicyDb, tmp_path: Path) -> None:
    file_name = unique("file")
    path = tmp_path / "policy.yaml"
    path.write_text(tagging("from-file", name=file_name))
    watcher = PolicyWatcher(path, policy_db.engine, poll_interval=3600, db_poll_interval=0.05, listen=False)
    await watcher.start()
    try:
        name = unique("polled")
        async with policy_db.engine.begin() as conn:
            await set_policy(conn, name, tagging("polled"), actor="admin")
            await set_policy(conn, file_name, tagging("clash"), actor="admin")  # same name as the file policy
        await wait_for(lambda: "polled" in tags(watcher) and f"db:{file_name}" in watcher.errors)
        assert "clash" not in tags(watcher) and not watcher.listening
        assert "name of the policy file" in watcher.errors[f"db:{file_name}"][0].message
        async with policy_db.engine.begin() as conn:
            await delete_policy(conn, name, actor="admin")
            await delete_policy(conn, file_name, actor="admin")
        await wait_for(lambda: "polled" not in tags(watcher))
    finally:
        await watcher.stop()


async def test_bad_db_policy_at_start_is_left_out(policy_db: PolicyDb, tmp_path: Path) -> None:
    name = unique("broken")
    await policy_db.raw("INSERT INTO policies (name, source, sha256) VALUES ($1, $2, 'x')", name, "rules: 5\n")
    path = tmp_path / "policy.yaml"
    path.write_text(tagging("file-only", name=unique("file")))
    watcher = PolicyWatcher(path, policy_db.engine, poll_interval=3600, db_poll_interval=3600, listen=False)
    await watcher.start()
    try:
        assert "file-only" in tags(watcher) and f"db:{name}" in watcher.errors
        assert all(d.name != name for d in watcher.snapshot.documents)
    finally:
        await watcher.stop()
        await policy_db.raw("DELETE FROM policies WHERE name = $1", name)


async def test_database_down_at_start_runs_on_the_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(tagging("file-only"))
    engine = make_engine("postgresql://nobody@127.0.0.1:1/none")
    watcher = PolicyWatcher(path, engine, poll_interval=3600, db_poll_interval=3600, listen=False)
    try:
        await watcher.start()
        assert tags(watcher) == ("file-only",) and watcher.stats["db_failures"] == 1
        with pytest.raises(Exception):
            await watcher.reload()
        assert tags(watcher) == ("file-only",)
    finally:
        await watcher.stop()
        await engine.dispose()


# ------------------------------------------------------------------------------------------ file changes audited
async def test_file_changes_are_audited_once_across_replicas(policy_db: PolicyDb, tmp_path: Path) -> None:
    file_name = unique("gitops")
    path = tmp_path / "policy.yaml"
    path.write_text(tagging("v1", name=file_name))
    replicas = [PolicyWatcher(path, policy_db.engine, poll_interval=0.02, db_poll_interval=3600, listen=False) for _ in range(2)]
    for w in replicas:
        await w.start()
    try:
        for w in replicas:
            await w.flush_audit()
        path.write_text(tagging("v2", name=file_name))
        for w in replicas:
            await wait_for(lambda w=w: tags(w) == ("v2",))
        path.write_text("rules:\n  - id: tagger\n    actions: {tag: v3, colour: red}\n")
        for w in replicas:
            await wait_for(lambda w=w: w.stats["rejected"] == 1)
            await wait_for(lambda w=w: not w._pending_audit)
            assert tags(w) == ("v2",)
    finally:
        for w in replicas:
            await w.stop()
    entries = await policy_db.changes(file_subject(file_name))
    assert [e["status"] for e in entries] == ["applied", "applied", "rejected"]
    first, second, rejected = entries
    assert first["origin"] == "file" and first["actor"].startswith("file:") and first["previous_sha256"] is None
    assert "-    tag: v1\n+    tag: v2\n" in second["diff"]
    assert rejected["errors"][0]["line"] == 3 and "+    actions: {tag: v3, colour: red}" in rejected["diff"]


# ------------------------------------------------------------------------------------------ CLI
class InProcessCli:
    def __init__(self, url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.delenv("LLMPROXY_POLICY_FILE", raising=False)
        monkeypatch.setattr(cli_main, "_COMMANDS", tuple(dict.fromkeys(cli_main._COMMANDS + ("policy",))))
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

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = await asyncio.to_thread(self._run, args)
        out = self.capsys.readouterr()
        return code, out.out, out.err


async def test_cli_set_list_show_delete(
    policy_db: PolicyDb, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = InProcessCli(policy_db.url, capsys, monkeypatch)
    name = unique("cli")
    path = tmp_path / f"{name}.yaml"
    path.write_text(policy_yaml({"id": "r", "actions": {"tag": "cli"}}, name=name))
    code, out, _ = await cli("policy", "set", str(path))
    assert code == 0 and f"policy {name!r} stored: version 1, enabled, 1 rules" in out and "+- id: r" in out
    code, out, _ = await cli("policy", "set", str(path))
    assert code == 0 and "unchanged (version 1)" in out
    code, out, _ = await cli("policy", "set", "--json", "--disable", "--name", name, str(path))
    doc = json.loads(out)
    assert doc["enabled"] is False and doc["version"] == 2 and doc["changed"] and doc["audit_id"]

    code, out, _ = await cli("policy", "list")
    assert code == 0 and any(line.split()[:3] == [name, "disabled", "2"] for line in out.splitlines())
    code, out, _ = await cli("policy", "list", "--json")
    assert any(p["name"] == name for p in json.loads(out))

    await cli("policy", "set", str(path))  # enabled again
    code, out, _ = await cli("policy", "show", "--json")
    summary = json.loads(out)
    assert code == 0 and any(s["name"] == name for s in summary["sources"]) and "stored" in summary["database"]
    code, out, _ = await cli("policy", "show")
    assert f"{name}/r" in out

    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: r\n    actions: {tag: 5}\n")
    code, _, err = await cli("policy", "set", str(bad))
    assert code == 1 and f"{bad}:3: rules[0].actions.tag[0]" in err or f"{bad}:3: rules[0].actions.tag" in err
    code, _, err = await cli("policy", "set", str(tmp_path / "missing.yaml"))
    assert code == 1 and "cannot read" in err

    code, out, _ = await cli("policy", "delete", name)
    assert code == 0 and "deleted" in out
    code, _, err = await cli("policy", "delete", name)
    assert code == 1 and "no database policy" in err
    entries = await policy_db.changes(db_subject(name))
    assert [e["status"] for e in entries] == ["applied", "disabled", "applied", "deleted"]
    assert all(e["actor"].startswith("cli:") for e in entries)
    async with policy_db.engine.connect() as conn:
        assert all(p.name != name for p in await list_policies(conn))


# ------------------------------------------------------------------------------------------ schema
def _policy_object(obj, name, type_, reflected, compare_to) -> bool:
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return table in POLICY_TABLES


async def test_model_matches_migration(policy_db: PolicyDb) -> None:
    def diff(sync_conn) -> list:
        ctx = MigrationContext.configure(
            sync_conn, opts={"compare_type": True, "compare_server_default": False, "include_object": _policy_object}
        )
        return compare_metadata(ctx, Base.metadata)

    async with policy_db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_notify_trigger_and_name_check(policy_db: PolicyDb) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(policy_db.url))
    got: asyncio.Queue[str] = asyncio.Queue()
    try:
        await conn.add_listener("llmproxy_policies", lambda *args: got.put_nowait(args[3]))
        name = unique("notify")
        async with policy_db.engine.begin() as c:
            await set_policy(c, name, tagging("n"), actor="admin")
        assert await asyncio.wait_for(got.get(), 5) == name
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO policies (name, source, sha256) VALUES ('bad name', '', '')")
        await conn.execute("DELETE FROM policies WHERE name = $1", name)
    finally:
        await conn.close()
