"""Explorer's "Policy action" filter and "Policy & enhancement" tab (AppTest) against a real Postgres
seeded with exchanges whose flags have the shapes the sidecar records (extproc/screening.py, exchange.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from streamlit.testing.v1 import AppTest

from intelligence.records import ExchangeRecord
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.migrate import upgrade_async
from intelligence.store.repositories import ExchangeRepository
from tests.conftest import database_url
from tests.ui.conftest import APP, SECRET, plain, table_frames
from tests.ui.intel_seed import drop_db
from ui import data

BLOCK_MESSAGE = "big models are not allowed here"
PATCH = [{"op": "add", "path": "/messages/0", "value": {"role": "system", "content": "Answer in one paragraph."}}]


def _fired(rule: str, mode: str, *actions: str, note: str | None = None) -> dict:
    doc = {"rule": rule, "policy": "default", "mode": mode, "actions": list(actions)}
    if note:
        doc["note"] = note
    return doc


def _block(rule: str, status: int = 403) -> dict:
    return {"status": status, "code": "policy_blocked", "message": BLOCK_MESSAGE, "rule": f"default/{rule}"}


FLAGS: dict[str, tuple[float, str, dict]] = {  # key -> (minutes ago, model, flags)
    "blocked": (
        5,
        "gpt-4.5-preview",
        {
            "policy": {
                "version": "v3",
                "fired": [_fired("no-big-models", "enforce", "block", note=f"key {SECRET}")],
                "block": _block("no-big-models"),
            },
            "detections": {
                "pii": {"EMAIL": 2},
                "secrets": {"OPENAI_KEY": 1},
                "injection_score": 0.91,
                "injection_layer": "classifier",
                "flags": [],
            },
        },
    ),
    "response_blocked": (
        6,
        "gpt-4o-mini",
        {
            "policy": {"version": "v3", "fired": []},
            "response_policy": {
                "version": "v3",
                "fired": [_fired("no-leaks", "enforce", "block")],
                "block": _block("no-leaks", 502),
            },
        },
    ),
    "redacted": (
        7,
        "gpt-4o-mini",
        {
            "policy": {
                "version": "v3",
                "fired": [_fired("mask-pii", "enforce", "redact")],
                "redact": [{"categories": ["pii"], "kinds": None, "mode": "mask", "restore": True, "rule": "default/mask-pii"}],
            },
            "redacted_strings": 3,
            "edits": ["redact 3 strings"],
        },
    ),
    "monitored": (
        8,
        "gpt-4o-mini",
        {
            "policy": {
                "version": "v3",
                "fired": [_fired("watch-injection", "monitor", "alert")],
                "alerts": [{"severity": "warning", "message": "injection suspected", "rule": "default/watch-injection"}],
            }
        },
    ),
    "enhanced": (
        9,
        "gpt-4o",
        {"enhancement": {"experiment": 7, "enhancement": 3, "arm": "treatment", "pattern": 42, "patch": PATCH}},
    ),
    "verdict": (
        10,
        "gpt-4o",
        {
            "claude_verdict": {
                "rule": "default/ask-claude",
                "mode": "enforce",
                "outcome": "ok",
                "action": "allow",
                "verdict": "benign",
                "confidence": 0.93,
                "latency_ms": 812.4,
                "timeout_ms": 2000,
                "fail_mode": "open",
            }
        },
    ),
    "plain": (11, "gpt-4o", {}),
    "old_blocked": (
        3 * 24 * 60,
        "gpt-4.5-preview",
        {"policy": {"version": "v2", "fired": [_fired("no-big-models", "enforce", "block")], "block": _block("no-big-models")}},
    ),
}


@dataclass
class PolicyDb:
    url: str
    marker: str
    ids: dict[str, str]


@pytest.fixture(scope="module")
async def policy_db(pg_server_url: str) -> AsyncIterator[PolicyDb]:
    name = f"uipol_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(asyncpg_dsn(pg_server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url(pg_server_url, name)
    await upgrade_async(url)
    marker = f"pol{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    ids = {k: f"{marker}-{k}" for k in FLAGS}
    records = []
    for key, (minutes, model, flags) in FLAGS.items():
        started = now - timedelta(minutes=minutes)
        records.append(
            ExchangeRecord(
                request_id=ids[key],
                started_at=started,
                finished_at=started + timedelta(milliseconds=100),
                method="POST",
                path="/openai/v1/chat/completions",
                provider="openai",
                api="chat",
                route="prefix",
                model=model,
                client_key_fp=f"fp-{marker}",
                client_addr="127.0.0.1",
                status=403 if key.endswith("blocked") else 200,
                latency_ms=100.0,
                upstream_ms=90.0,
                prompt_user=f"{marker} {key} prompt",
                flags=flags,
            )
        )
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await ExchangeRepository(conn).insert_batch(records)
    finally:
        await engine.dispose()
    yield PolicyDb(url=url, marker=marker, ids=ids)
    await drop_db(pg_server_url, url)


def open_explorer(monkeypatch: pytest.MonkeyPatch, db: PolicyDb, **params: str) -> AppTest:
    monkeypatch.setenv("DATABASE_URL", db.url)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("app_pages/explorer.py")
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def listed(at: AppTest) -> set[str]:
    frame = next(d.value for d in at.dataframe if {"request_id", "flags"} <= set(d.value.columns))
    return set(frame["request_id"])


def choose(at: AppTest, actions: list[str]) -> AppTest:
    next(m for m in at.multiselect if m.label == "Policy action").set_value(actions).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_policy_action_filter_selects_by_flags_within_the_time_window(policy_db: PolicyDb, monkeypatch) -> None:
    ids = policy_db.ids
    at = open_explorer(monkeypatch, policy_db)
    assert listed(at) == {ids[k] for k in FLAGS if k != "old_blocked"}  # last 24 hours, no action chosen
    # request-side and response-side blocks; the 3-day-old block is outside the window
    assert listed(choose(at, ["blocked"])) == {ids["blocked"], ids["response_blocked"]}
    next(s for s in at.selectbox if s.label == "Time").set_value("any time").run()
    assert listed(at) == {ids["blocked"], ids["response_blocked"], ids["old_blocked"]}
    assert listed(choose(at, ["redacted"])) == {ids["redacted"]}
    assert listed(choose(at, ["alerted"])) == {ids["monitored"]}
    assert listed(choose(at, ["monitor rule fired"])) == {ids["monitored"]}
    assert listed(choose(at, ["edited"])) == {ids["redacted"]}
    # several actions: any of them
    assert listed(choose(at, ["enhanced (any arm)", "Claude verdict"])) == {ids["enhanced"], ids["verdict"]}
    # combined with the other filters: every filter must hold
    choose(at, ["blocked"])
    next(m for m in at.multiselect if m.label == "Model").set_value(["gpt-4o-mini"]).run()
    assert listed(at) == {ids["response_blocked"]}
    next(m for m in at.multiselect if m.label == "Model").set_value([]).run()
    next(t for t in at.text_input if t.label == "Free text").set_value(f"{policy_db.marker} old_blocked").run()
    assert listed(at) == {ids["old_blocked"]}


def test_unknown_policy_action_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown policy action"):
        data.policy_action_where(("blocked", "teleported"))
    assert "'enhancement' IS NOT NULL" in data.policy_action_where(("enhanced (any arm)",))


def _tables(at: AppTest) -> str:
    """Every st.table as text, each Markdown cell as it renders (the page escapes what it did not write)."""
    return "\n".join(t.value.map(plain).rename(index=lambda i: plain(str(i))).to_string() for t in at.table)


def test_policy_tab_shows_rules_block_and_detector_counts_without_values(policy_db: PolicyDb, monkeypatch) -> None:
    at = open_explorer(monkeypatch, policy_db, request_id=policy_db.ids["blocked"])
    rules = next(f for f in table_frames(at) if "rule" in f.columns and "mode" in f.columns)
    row = rules.iloc[0].to_dict()
    assert {k: row[k] for k in ("side", "policy", "rule", "mode", "actions")} == {
        "side": "request",
        "policy": "default",
        "rule": "no-big-models",
        "mode": "enforce",
        "actions": "block",
    }
    assert SECRET not in row["note"] and row["note"].startswith("key ")  # free text is masked
    assert any(
        plain(e.value) == f"Request blocked: 403 policy_blocked: {BLOCK_MESSAGE} (rule default/no-big-models)" for e in at.error
    )
    counts = next(f for f in table_frames(at) if "kind" in f.columns)
    assert sorted(map(tuple, counts[["category", "kind", "count"]].values.tolist())) == [
        ("pii", "EMAIL", "2"),
        ("secrets", "OPENAI_KEY", "1"),
    ]
    assert any("injection score 0.91 (classifier)" in plain(c.value) for c in at.caption)
    assert "v3" in _tables(at)
    assert any("No enhancement experiment" in c.value for c in at.caption)


def test_policy_tab_shows_response_block_redaction_and_edits(policy_db: PolicyDb, monkeypatch) -> None:
    at = open_explorer(monkeypatch, policy_db, request_id=policy_db.ids["response_blocked"])
    assert any(plain(e.value).startswith("Response blocked: 502 policy_blocked") for e in at.error)
    rules = next(f for f in table_frames(at) if "rule" in f.columns and "mode" in f.columns)
    assert rules[["side", "rule"]].values.tolist() == [["response", "no-leaks"]]
    at = open_explorer(monkeypatch, policy_db, request_id=policy_db.ids["redacted"])
    assert "pii · mask · restored (rule default/mask-pii)" in _tables(at)
    text = "\n".join(m.value for m in at.markdown)
    assert "**Redacted in the request**: 3 string(s)" in text and "`redact 3 strings`" in text


def test_policy_tab_shows_enhancement_arm_and_patch(policy_db: PolicyDb, monkeypatch) -> None:
    at = open_explorer(monkeypatch, policy_db, request_id=policy_db.ids["enhanced"])
    text = "\n".join(m.value for m in at.markdown)
    assert "experiment **#7** · enhancement **#3** · arm **treatment** · pattern #42" in text
    assert "(experiments)" in text  # the link to the Experiments page
    patch = next(c.value for c in at.code if c.language == "json" and '"op"' in c.value)
    assert '"path": "/messages/0"' in patch and "Answer in one paragraph." in patch
    assert any("No policy decision recorded" in c.value for c in at.caption)


def test_policy_tab_shows_claude_verdict(policy_db: PolicyDb, monkeypatch) -> None:
    at = open_explorer(monkeypatch, policy_db, request_id=policy_db.ids["verdict"])
    verdict = next(t.value for t in at.table if t.value.index.name == "verdict").map(plain).rename(index=plain)
    expected = {"verdict": "benign", "confidence": "0.93", "action": "allow", "rule": "default/ask-claude", "latency_ms": "812.4"}
    assert expected.items() <= verdict["value"].to_dict().items()
