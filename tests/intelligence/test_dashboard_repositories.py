"""The dashboard's repositories (intelligence/dashboard/, and the summary reads of intelligence/analytics.py)
against a real PostgreSQL, the response summary fields of ExchangeRecord, and migration 0013."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from intelligence.analytics import AnalyticsRepository
from intelligence.dashboard.alerts import AlertRepository
from intelligence.dashboard.experiments import ExperimentRepository
from intelligence.dashboard.live import LiveRepository
from intelligence.dashboard.security import ENFORCED_WHERE, SecurityRepository
from intelligence.dashboard.spend import ClaudeSpendRepository
from intelligence.records import ExchangeRecord
from intelligence.store import migrate
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.repositories import ExchangeRepository
from tests.conftest import database_url
from tests.intelligence.factories import make_record

CALLS = ({"name": "github.search_issues", "upstream_name": "github_search_issues_5f1e", "arguments": '{"q": "bugs"}'},)


@pytest.fixture(scope="module")
async def engine(pg_server_url: str) -> AsyncIterator[AsyncEngine]:
    name = f"t_dash_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(asyncpg_dsn(pg_server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url(pg_server_url, name)
    await migrate.upgrade_async(url)
    eng = make_engine(url)
    yield eng
    await eng.dispose()
    admin = await asyncpg.connect(asyncpg_dsn(pg_server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _event(conn, severity: str, title: str, minutes_ago: float = 0) -> int:
    return (
        await conn.execute(
            text(
                "INSERT INTO events (at, kind, severity, title) VALUES (now() - make_interval(mins => :m), 'alert', :s, :t) RETURNING id"
            ),
            {"m": minutes_ago, "s": severity, "t": title},
        )
    ).scalar_one()


# ------------------------------------------------------------------------------------------ records


def test_exchange_record_carries_the_response_summary_through_json() -> None:
    rec = make_record(response_text="twelve closed bugs", tool_calls=CALLS)
    back = ExchangeRecord.from_json(rec.to_json())
    assert back == rec and back.tool_calls == CALLS and isinstance(back.tool_calls, tuple)
    assert json.loads(rec.to_json())["tool_calls"] == list(CALLS)
    # a record spooled before the fields existed reads back with the defaults
    old = json.loads(make_record().to_json())
    del old["response_text"], old["tool_calls"]
    legacy = ExchangeRecord.from_json(json.dumps(old))
    assert legacy.response_text is None and legacy.tool_calls == ()


# ------------------------------------------------------------------------------------------ summary columns


async def test_the_summary_columns_are_read_by_the_dashboard_and_absent_on_older_rows(engine: AsyncEngine) -> None:
    summarised = make_record(session_id=f"s-{uuid.uuid4().hex[:6]}", response_text="done", tool_calls=CALLS)
    older = make_record(session_id=summarised.session_id)
    async with engine.begin() as conn:
        await ExchangeRepository(conn).insert_batch([summarised, older])
        await conn.execute(
            text("UPDATE exchanges SET response_text = :t, tool_calls = CAST(:c AS jsonb) WHERE request_id = :id"),
            {"t": "done", "c": json.dumps(list(CALLS)), "id": summarised.request_id},
        )
    async with engine.connect() as conn:
        repo = AnalyticsRepository(conn)
        got = await repo.exchange(summarised.request_id)
        assert got is not None and got.response_text == "done" and got.tool_calls == CALLS
        assert got.model == summarised.model and got.request_client == summarised.request_client
        plain = await repo.exchange(older.request_id)
        assert plain is not None and plain.response_text is None and plain.tool_calls == ()
        assert await repo.exchange("no-such-id") is None
        turns = {t.request_id: t for t in await repo.session_turns(summarised.session_id)}
    assert turns[summarised.request_id].summarised and turns[summarised.request_id].tool_calls == CALLS
    assert not turns[older.request_id].summarised and turns[older.request_id].response is not None


async def test_the_recorder_stores_the_response_summary(engine: AsyncEngine) -> None:
    """ExchangeRepository.insert_batch writes response_text and tool_calls (the recorder's path).

    Needs the two-line change to ``exchange_row``/``record_from_row`` in intelligence/store/repositories.py
    described in docs/dashboard.md ("Response summaries"); fails until it is made.
    """
    rec = make_record(response_text="stored by the recorder", tool_calls=CALLS)
    async with engine.begin() as conn:
        await ExchangeRepository(conn).insert_batch([rec])
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT response_text, tool_calls FROM exchanges WHERE request_id = :id"), {"id": rec.request_id}
            )
        ).one()
        assert (row.response_text, row.tool_calls) == ("stored by the recorder", list(CALLS))
        assert await ExchangeRepository(conn).get(rec.request_id) == rec


async def test_migration_0013_adds_and_removes_the_columns(fresh_db_url: Callable[[], Awaitable[str]]) -> None:
    url = await fresh_db_url()
    await migrate.upgrade_async(url)

    async def columns() -> set[str]:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            rows = await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_name = 'exchanges'")
        finally:
            await conn.close()
        return {r["column_name"] for r in rows}

    assert {"response_text", "tool_calls"} <= await columns()
    migrate.downgrade(url, "0012_policy_action_index")
    assert not {"response_text", "tool_calls"} & await columns()
    await migrate.upgrade_async(url)
    assert {"response_text", "tool_calls"} <= await columns()


async def test_the_seed_fills_the_summary_like_the_gateway(fresh_db_url: Callable[[], Awaitable[str]]) -> None:
    from extproc.cli import seed as seed_cli

    url = await fresh_db_url()
    await seed_cli.seed(url, 600, days=2, embed_sample=50, use_model=False, batch=1000, progress=False)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        ok = await conn.fetchval("SELECT count(*) FROM exchanges WHERE status = 200 AND api <> 'embeddings'")
        summarised = await conn.fetchval(
            "SELECT count(*) FROM exchanges WHERE status = 200 AND api <> 'embeddings' "
            "AND (response_text IS NOT NULL OR jsonb_array_length(tool_calls) > 0)"
        )
        calls = await conn.fetch(
            "SELECT tool_calls, tool_aliases, tool_names FROM exchanges WHERE jsonb_array_length(tool_calls) > 0 LIMIT 50"
        )
        failed = await conn.fetchval("SELECT count(*) FROM exchanges WHERE status >= 400 AND response_text IS NOT NULL")
    finally:
        await conn.close()
    assert ok > 0 and summarised == ok and failed == 0  # every answer has its text or its tool calls
    assert calls
    for r in calls:
        (call,) = json.loads(r["tool_calls"]) if isinstance(r["tool_calls"], str) else r["tool_calls"]
        assert call["name"] in r["tool_names"] and set(call) == {"name", "upstream_name", "arguments"}
        aliases = json.loads(r["tool_aliases"]) if isinstance(r["tool_aliases"], str) else r["tool_aliases"]
        assert aliases.get(call["upstream_name"], call["upstream_name"]) == call["name"]  # renamed ones map back


# ------------------------------------------------------------------------------------------ alerts


async def test_alert_repository_lists_toasts_banner_and_acknowledges(engine: AsyncEngine) -> None:
    tag = uuid.uuid4().hex[:6]
    async with engine.begin() as conn:
        before = await AlertRepository(conn).latest_event_id()
        info = await _event(conn, "info", f"{tag} info")
        warn = await _event(conn, "warning", f"{tag} warn", minutes_ago=1)
        crit = await _event(conn, "critical", f"{tag} crit")
        old = await _event(conn, "critical", f"{tag} old", minutes_ago=60 * 30)
    async with engine.begin() as conn:
        repo = AlertRepository(conn)
        assert await repo.latest_event_id() == old
        assert [a["id"] for a in await repo.alerts_after(before)] == [warn, crit, old]  # oldest first, no info
        assert [a["id"] for a in await repo.alerts_by_ids([info, crit, 10**9])] == [crit]
        events = await repo.events(10)
        assert [e["id"] for e in events[:3]] == [crit, info, warn]  # newest first by time
        banner = [r["id"] for r in await repo.open_alerts(24) if r["title"].startswith(tag)]
        assert banner == [crit, warn]  # not the info one, not the one from 30 hours ago
        done = await repo.acknowledge(warn, "dashboard:alice")
        assert done is not None and (done.id, done.kind, done.title) == (warn, "alert", f"{tag} warn")
        assert await repo.acknowledge(warn, "dashboard:bob") is None  # already acknowledged: nothing changes
        with pytest.raises(LookupError):
            await repo.acknowledge(10**9, "dashboard:alice")
        assert [r["id"] for r in await repo.open_alerts(24) if r["title"].startswith(tag)] == [crit]
        assert [e["id"] for e in await repo.events(50, unacknowledged_only=True)].count(warn) == 0


# ------------------------------------------------------------------------------------------ security


async def test_security_repository_enforced_detectors_verdicts_audit(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    blocked = make_record(started_at=now - timedelta(minutes=5), flags={"policy": {"block": {"rule": "r", "status": 403}}})
    redacted = make_record(
        started_at=now - timedelta(minutes=4),
        flags={"redacted_strings": 2, "detections": {"pii": {"EMAIL": 2}, "secrets": {}, "injection_score": 0.99}},
    )
    clean = make_record(started_at=now - timedelta(minutes=3), flags={"detections": {"pii": {}, "secrets": {"AWS": 1}}})
    stale = make_record(started_at=now - timedelta(days=3), flags={"policy": {"block": {"rule": "old"}}})
    async with engine.begin() as conn:
        await ExchangeRepository(conn).insert_batch([blocked, redacted, clean, stale])
        await conn.execute(
            text(
                "INSERT INTO anomaly_verdicts (at, client_key_fp, detectors, suspicion, status, verdict, confidence, reasoning, "
                "source, action) VALUES (now(), 'fp', ARRAY['volume'], '{}'::jsonb, 'judged', 'malicious', 0.9, 'r', 'claude', 'alert')"
            )
        )
    async with engine.connect() as conn:
        repo = SecurityRepository(conn)
        enforced = await repo.enforced(now - timedelta(hours=1))
        ids = [r["request_id"] for r in enforced]
        assert blocked.request_id in ids and redacted.request_id in ids
        assert clean.request_id not in ids and stale.request_id not in ids
        assert ids.index(redacted.request_id) < ids.index(blocked.request_id)  # newest first
        row = next(r for r in enforced if r["request_id"] == redacted.request_id)
        assert row["redacted"] == 2 and row["detections"]["pii"] == {"EMAIL": 2}
        rates = await repo.detector_rates(now - timedelta(hours=1), injection_threshold=0.9)
        total = {k: sum(r[k] for r in rates) for k in ("requests", "pii", "secrets", "injection", "blocked")}
        assert total["pii"] >= 1 and total["secrets"] >= 1 and total["injection"] >= 1 and total["blocked"] >= 1
        assert (await repo.verdicts(5))[0]["verdict"] == "malicious"
        assert isinstance(await repo.audit_recent(5), list)
        plan = "\n".join(
            r[0]
            for r in await conn.execute(
                text(
                    f"EXPLAIN SELECT request_id FROM exchanges WHERE started_at >= now() - interval '1 day' AND ({ENFORCED_WHERE})"
                )
            )
        )
    assert "exchanges" in plan


# ------------------------------------------------------------------------------------------ experiments, spend


async def test_experiment_repository_counts_exposures_of_live_experiments_only(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        enh = (
            await conn.execute(
                text(
                    "INSERT INTO enhancements (kind, spec, rationale, source, status) VALUES ('system_prompt', '{}'::jsonb, 'why', 'claude', 'testing') RETURNING id"
                )
            )
        ).scalar_one()
        running, done = [
            (
                await conn.execute(
                    text(
                        "INSERT INTO experiments (enhancement_id, status, stats, created_by) VALUES (:e, :s, '{}'::jsonb, 't') RETURNING id"
                    ),
                    {"e": enh, "s": status},
                )
            ).scalar_one()
            for status in ("running", "promoted")
        ]
        exposed = [make_record(flags={"enhancement": {"experiment": x, "arm": "control"}}) for x in (running, running, done)]
        await ExchangeRepository(conn).insert_batch(exposed)
        await conn.execute(
            text(
                "INSERT INTO experiment_events (experiment_id, action, actor, detail) VALUES (:x, 'start', 'alice', '{}'::jsonb)"
            ),
            {"x": running},
        )
    async with engine.connect() as conn:
        repo = ExperimentRepository(conn)
        by_id = {r["id"]: r for r in await repo.experiments()}
        assert by_id[running]["exposures"] == 2 and by_id[done]["exposures"] == 0  # decided ones are not counted
        assert by_id[running]["rationale"] == "why"
        assert [e["id"] for e in await repo.enhancements("testing")] == [enh]
        assert [(h["experiment_id"], h["actor"]) for h in await repo.history(running)] == [(running, "alice")]


async def test_claude_spend_per_day(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for days_ago, cost in ((0, 0.25), (0, 0.5), (2, 1.0)):
            await conn.execute(
                text(
                    "INSERT INTO claude_calls (at, purpose, subject, mode, model, input_tokens, output_tokens, cost_usd, outcome) "
                    "VALUES (now() - make_interval(days => :d), 'label', 's', 'anthropic', 'm', 1, 1, :c, 'ok')"
                ),
                {"d": days_ago, "c": cost},
            )
    async with engine.connect() as conn:
        days = await ClaudeSpendRepository(conn).daily(datetime.now(UTC) - timedelta(days=6))
    assert sorted(float(d["cost_usd"]) for d in days)[-2:] == [0.75, 1.0] and sum(d["calls"] for d in days) >= 3


# ------------------------------------------------------------------------------------------ live feed reads


async def test_live_repository_reads_by_id_by_time_and_the_kpi_window(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    recs = [make_record(started_at=now - timedelta(seconds=s)) for s in (40, 20, 10)]
    recs.append(make_record(started_at=now - timedelta(seconds=5), status=502, error="upstream 502", latency_ms=-3.0))
    async with engine.begin() as conn:
        await ExchangeRepository(conn).insert_batch(recs)
    async with engine.connect() as conn:
        repo = LiveRepository(conn)
        wanted = [recs[2].request_id, "missing", recs[0].request_id]
        assert [r.request_id for r in await repo.by_ids(wanted)] == [recs[2].request_id, recs[0].request_id]
        since = await repo.started_since(now - timedelta(seconds=25))
        assert [r.request_id for r in since][:3] == [recs[3].request_id, recs[2].request_id, recs[1].request_id]
        assert recs[0].request_id not in {r.request_id for r in since}
        window = {round(s.started, 3): s for s in await repo.window(now - timedelta(seconds=30))}
        bad = window[round(recs[3].started_at.timestamp(), 3)]
        assert bad.error and bad.latency_ms is None  # a negative latency is unusable, as in the rollups
        assert window[round(recs[1].started_at.timestamp(), 3)].latency_ms == 850.0
