"""`llmproxy audit verify|export` as an operator runs them (subprocess, DATABASE_URL or --database-url)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
from pathlib import Path

import pytest

from extproc.cli import audit as audit_cli
from intelligence.audit import MISSING_ROW, POLICY_CHANGE, AuditLog
from intelligence.ops.stack import StackState
from tests.intelligence.conftest import SecurityDb
from tests.intelligence.test_keys_store import InProcessCli, cli


@pytest.fixture(autouse=True)
def no_audit_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """These chains are made without an audit key, whatever the shell running the tests has set
    (and no ./.llmproxy/audit.key is picked up from the checkout)."""
    for name in ("LLMPROXY_AUDIT_KEY", "LLMPROXY_AUDIT_KEY_FILE", "SECRET_KEY", "LLMPROXY_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


async def _seed(db: SecurityDb, n: int) -> None:
    async with db.engine.begin() as conn:
        for i in range(n):
            await AuditLog().append(conn, POLICY_CHANGE, "default.yaml", {"diff": f"+ rule {i}"}, "admin:alice")


async def test_verify_and_export_from_the_command_line(
    security_db: SecurityDb, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    await _seed(security_db, 5)
    url = security_db.url
    run = InProcessCli(url, capsys, monkeypatch)

    r = await run("audit", "verify")
    assert r.returncode == 0, r.stderr
    # made without an audit key: linked, and said to be unauthenticated legacy entries
    assert "audit log links intact: 5 entries checked" in r.stdout and "5 legacy entries" in r.stdout
    r = await run("audit", "verify", "--json")
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["checked"] == 5 and doc["first_broken_id"] is None and doc["source"] == "database"
    assert doc["authenticated"] is False and doc["legacy_entries"] == 5 and doc["findings"] == []

    r = await run("audit", "export", "--since", "1h")
    assert r.returncode == 0 and "exported 5 audit entries" in r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["id"] for x in rows] == [1, 2, 3, 4, 5] and rows[4]["payload"] == {"diff": "+ rule 4"}
    out_csv = tmp_path / "audit.csv"
    r = await run("audit", "export", "--format", "csv", "-o", str(out_csv))
    assert r.returncode == 0, r.stderr
    table = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert len(table) == 5 and table[0]["actor"] == "admin:alice" and table[0]["kind"] == "policy_change"
    r = await run("audit", "verify", "--file", str(out_csv))
    assert r.returncode == 0 and "5 entries checked" in r.stdout

    out_jsonl = tmp_path / "audit.jsonl"
    r = await run("audit", "export", "-o", str(out_jsonl))
    assert r.returncode == 0
    out_jsonl.write_text(out_jsonl.read_text().replace("+ rule 3", "+ rule 3 (edited)"))
    r = await run("audit", "verify", "--file", str(out_jsonl), "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["first_broken_id"] == 4

    su = await security_db.superuser()
    try:
        await su.execute("DELETE FROM audit_log WHERE id = 2")
    finally:
        await su.close()
    r = await asyncio.to_thread(cli, url, "audit", "verify")
    assert r.returncode == 1
    assert "BROKEN at entry 2: missing row" in r.stdout and "1 entries before it are intact" in r.stdout
    r = await run("audit", "verify", "--json")
    doc = json.loads(r.stdout)
    assert (r.returncode, doc["ok"], doc["first_broken_id"], doc["reason"]) == (1, False, 2, MISSING_ROW)


async def test_commands_find_the_database_of_a_running_stack(
    security_db: SecurityDb, tmp_path: Path, fresh_db_url, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    await _seed(security_db, 2)
    StackState(data_dir=str(tmp_path), database_url=security_db.url, ports={}).save()
    monkeypatch.delenv("DATABASE_URL", raising=False)
    parser = argparse.ArgumentParser(prog="llmproxy")
    audit_cli.register(parser.add_subparsers(dest="command"))

    args = parser.parse_args(["audit", "verify", "--data-dir", str(tmp_path)])
    assert await asyncio.to_thread(args.func, args) == 0
    assert "2 entries checked" in capsys.readouterr().out
    args = parser.parse_args(["audit", "export", "--data-dir", str(tmp_path), "--format", "csv"])
    assert await asyncio.to_thread(args.func, args) == 0
    assert capsys.readouterr().out.startswith("id,ts,actor,kind,subject,payload,prev_hash,hash\r\n")

    args = parser.parse_args(["audit", "verify", "--database-url", await fresh_db_url()])
    with pytest.raises(SystemExit, match="no audit tables"):
        await asyncio.to_thread(args.func, args)
    args = parser.parse_args(["audit", "verify", "--file", str(tmp_path / "nope.jsonl")])
    with pytest.raises(SystemExit, match="cannot read"):
        await asyncio.to_thread(args.func, args)
    args = parser.parse_args(["audit", "verify", "--data-dir", str(tmp_path / "no-stack")])
    with pytest.raises(SystemExit, match="no running stack"):
        await asyncio.to_thread(args.func, args)


async def test_csv_export_escapes_formula_cells_reversibly(
    security_db: SecurityDb, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with security_db.engine.begin() as conn:
        await AuditLog().append(conn, POLICY_CHANGE, "'quoted", {"x": 1}, "=cmd|' /C calc'!A0")
        await AuditLog().append(conn, POLICY_CHANGE, "-2+3", {"x": "\r"}, "@admin\rmore")
    run = InProcessCli(security_db.url, capsys, monkeypatch)
    out_csv = tmp_path / "audit.csv"
    r = await run("audit", "export", "--format", "csv", "-o", str(out_csv))
    assert r.returncode == 0, r.stderr
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(x["actor"], x["subject"]) for x in rows] == [("'=cmd|' /C calc'!A0", "''quoted"), ("'@admin\rmore", "'-2+3")]
    r = await run("audit", "verify", "--file", str(out_csv), "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["ok"] and doc["entries"] == 2, r.stdout
