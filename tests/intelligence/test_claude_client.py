"""ClaudeClient through the real anthropic SDK against FakeClaude, with call records in real Postgres."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from intelligence.claude import (
    ClaudeClient,
    ClaudeSettings,
    FakeClaude,
    FakeFault,
    StructuredResult,
    call_cost,
    spend_summary,
)
from intelligence.claude.models import ClaudeCall
from intelligence.store.engine import make_engine

SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
    "required": ["label", "confidence"],
    "additionalProperties": False,
}
GOOD = {"label": "summarise", "confidence": 0.9}
MODEL = "claude-sonnet-5-5"


def settings_for(fake: FakeClaude, **overrides: Any) -> ClaudeSettings:
    return fake.client_settings(**{"model": MODEL, **overrides})


async def ask(client: ClaudeClient, purpose: str = "pattern_label", subject: str = "pattern:1") -> StructuredResult:
    return await client.structured(
        purpose,
        subject,
        "You label request patterns.",
        "Label this: summarise text",
        "label_pattern",
        "Give the pattern a label.",
        SCHEMA,
        max_tokens=256,
    )


async def calls(engine) -> list[ClaudeCall]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(ClaudeCall.__table__).order_by(ClaudeCall.id))).all()
    return rows


@pytest.fixture
async def fake_factory() -> AsyncIterator:
    started: list[FakeClaude] = []

    async def make(responder) -> FakeClaude:
        fake = await FakeClaude(responder).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        await fake.stop()


async def test_success_is_recorded_with_its_cost(migrated_db, fake_factory) -> None:
    usage = {"input_tokens": 1000, "output_tokens": 200, "cache_creation_input_tokens": 500, "cache_read_input_tokens": 300}
    fake = await fake_factory(lambda request: FakeFault(kind="ok", input=GOOD, usage=usage))
    client = ClaudeClient(settings_for(fake), migrated_db.engine)
    try:
        res = await ask(client)
    finally:
        await client.aclose()

    expected_cost = (1000 * 2.0 + 200 * 10.0 + 300 * 0.2 + 500 * 2.5) / 1_000_000
    assert res.ok and res.outcome == "ok" and res.data == GOOD and res.error is None
    assert res.attempts == 1 and res.cost_usd == pytest.approx(expected_cost)
    [row] = await calls(migrated_db.engine)
    assert row.id == res.call_id
    assert (row.purpose, row.subject, row.mode, row.model, row.outcome) == (
        "pattern_label",
        "pattern:1",
        "anthropic",
        MODEL,
        "ok",
    )
    assert (row.input_tokens, row.output_tokens, row.cache_write_tokens, row.cache_read_tokens) == (1000, 200, 500, 300)
    assert row.cost_usd == pytest.approx(expected_cost) and row.attempts == 1 and row.latency_ms > 0

    # What went over the wire: cached system block and tool, the tool forced, the key as a bearer token.
    [request] = fake.requests
    body = request["body"]
    assert body["system"] == [{"type": "text", "text": "You label request patterns.", "cache_control": {"type": "ephemeral"}}]
    assert body["tools"] == [
        {
            "name": "label_pattern",
            "description": "Give the pattern a label.",
            "input_schema": SCHEMA,
            "cache_control": {"type": "ephemeral"},
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "label_pattern"}
    assert body["model"] == MODEL and body["max_tokens"] == 256
    assert request["prompt"] == "Label this: summarise text"
    assert request["headers"]["authorization"] == "Bearer test"
    assert request["headers"]["x-stainless-retry-count"] == "0"  # the SDK does not retry behind our back


async def test_timeouts_are_retried_then_reported(migrated_db, fake_factory) -> None:
    fake = await fake_factory(lambda request: FakeFault(kind="timeout", delay_s=5.0))
    client = ClaudeClient(settings_for(fake, timeout_s=0.3, max_retries=2), migrated_db.engine)
    started = time.monotonic()
    try:
        res = await ask(client)
    finally:
        await client.aclose()
    assert not res.ok and res.outcome == "timeout" and res.data is None and res.attempts == 3
    assert len(fake.requests) == 3
    assert time.monotonic() - started < 3.0  # three 0.3 s attempts, not the fake's 5 s
    [row] = await calls(migrated_db.engine)
    assert row.outcome == "timeout" and row.attempts == 3 and row.cost_usd == 0 and "Timeout" in row.error


async def test_rate_limit_then_success_honours_retry_after(migrated_db, fake_factory) -> None:
    fake = await fake_factory([FakeFault(kind="rate_limited", retry_after=0.4), GOOD])
    client = ClaudeClient(settings_for(fake), migrated_db.engine)
    started = time.monotonic()
    try:
        res = await ask(client)
    finally:
        await client.aclose()
    assert res.ok and res.data == GOOD and res.attempts == 2
    assert time.monotonic() - started >= 0.4  # backoff alone would have waited at most 0.05 s
    [row] = await calls(migrated_db.engine)
    assert row.outcome == "ok" and row.attempts == 2


async def test_overloaded_retries_until_it_gives_up(migrated_db, fake_factory) -> None:
    fake = await fake_factory(lambda request: FakeFault(kind="overloaded"))
    client = ClaudeClient(settings_for(fake, max_retries=1), migrated_db.engine)
    try:
        res = await ask(client)
    finally:
        await client.aclose()
    assert res.outcome == "overloaded" and res.attempts == 2 and len(fake.requests) == 2 and res.data is None
    [row] = await calls(migrated_db.engine)
    assert row.outcome == "overloaded" and "529" in row.error


async def test_server_error_then_success(fake_factory) -> None:
    fake = await fake_factory([FakeFault(kind="server_error"), FakeFault(kind="server_error"), GOOD])
    client = ClaudeClient(settings_for(fake, max_retries=3), None)
    try:
        res = await ask(client)
    finally:
        await client.aclose()
    assert res.ok and res.attempts == 3 and res.call_id is None


async def test_a_waiting_time_beyond_the_limit_ends_the_call(fake_factory) -> None:
    fake = await fake_factory(lambda request: FakeFault(kind="rate_limited", retry_after=120))
    client = ClaudeClient(settings_for(fake, max_retry_after_s=10), None)
    try:
        res = await ask(client)
    finally:
        await client.aclose()
    assert res.outcome == "rate_limited" and res.attempts == 1


@pytest.mark.parametrize(
    "answer",
    [
        FakeFault(kind="malformed"),  # text, no tool call
        FakeFault(kind="malformed", input={"label": "x", "confidence": 7}),  # out of range
        FakeFault(kind="malformed", input={"label": "x"}),  # missing field
    ],
)
async def test_malformed_answers_are_parse_errors_without_data(migrated_db, fake_factory, answer) -> None:
    fake = await fake_factory(lambda request: answer)
    client = ClaudeClient(settings_for(fake), migrated_db.engine)
    try:
        res = await ask(client)
    finally:
        await client.aclose()
    assert not res.ok and res.outcome == "parse_error" and res.data is None and res.attempts == 1
    assert res.cost_usd > 0  # the tokens were spent all the same
    [row] = await calls(migrated_db.engine)
    assert row.outcome == "parse_error" and row.output_tokens > 0 and row.error


async def test_usd_budget_stops_calls_before_any_request(migrated_db, fake_factory) -> None:
    fake = await fake_factory(lambda request: GOOD)
    async with migrated_db.engine.begin() as conn:
        await conn.execute(
            insert(ClaudeCall).values(purpose="enhancement", mode="anthropic", model=MODEL, cost_usd=0.75, outcome="ok")
        )
        # Yesterday's spend does not count against today.
        await conn.execute(
            insert(ClaudeCall).values(
                purpose="enhancement",
                mode="anthropic",
                model=MODEL,
                cost_usd=50.0,
                outcome="ok",
                at=datetime.now(UTC) - timedelta(days=1, hours=1),
            )
        )
    client = ClaudeClient(settings_for(fake, daily_budget_usd=1.0), migrated_db.engine)
    try:
        assert (await ask(client)).ok
        async with migrated_db.engine.begin() as conn:
            await conn.execute(
                insert(ClaudeCall).values(purpose="enhancement", mode="anthropic", model=MODEL, cost_usd=0.30, outcome="ok")
            )
        client.budget._loaded_at = None  # as if the cache had expired: re-read the table
        res = await ask(client)
    finally:
        await client.aclose()
    assert res.outcome == "budget_exhausted" and not res.ok and res.attempts == 0 and "CLAUDE_DAILY_BUDGET_USD" in res.error
    assert len(fake.requests) == 1
    rows = await calls(migrated_db.engine)
    assert rows[-1].outcome == "budget_exhausted" and rows[-1].attempts == 0 and rows[-1].id == res.call_id


async def test_token_budget_counts_this_process_between_refreshes(migrated_db, fake_factory) -> None:
    fake = await fake_factory(lambda request: FakeFault(kind="ok", input=GOOD, usage={"input_tokens": 600, "output_tokens": 100}))
    client = ClaudeClient(settings_for(fake, daily_token_budget=1000, budget_cache_s=3600), migrated_db.engine)
    try:
        first, second, third = [await ask(client) for _ in range(3)]
    finally:
        await client.aclose()
    assert first.ok and second.ok  # 700 tokens, then 1400 (the check is before each call)
    assert third.outcome == "budget_exhausted" and "CLAUDE_DAILY_TOKEN_BUDGET" in third.error
    assert len(fake.requests) == 2


async def test_concurrency_limit_is_honoured(fake_factory) -> None:
    fake = await fake_factory(lambda request: FakeFault(kind="ok", input=GOOD, delay_s=0.15))
    client = ClaudeClient(settings_for(fake, concurrency=2), None)
    try:
        results = await asyncio.gather(*(ask(client) for _ in range(6)))
    finally:
        await client.aclose()
    assert all(r.ok for r in results) and len(fake.requests) == 6
    assert fake.max_in_flight == 2


async def test_local_only_makes_no_call_and_records_nothing(migrated_db) -> None:
    client = ClaudeClient(ClaudeSettings.from_env({}), migrated_db.engine)
    assert client.local_only and client.mode == "local-only"
    res = await ask(client)
    await client.aclose()
    assert res.outcome == "local_only" and not res.ok and res.data is None and res.call_id is None
    assert "ANTHROPIC_API_KEY" in res.error
    assert await calls(migrated_db.engine) == []


async def test_openrouter_client_sends_its_model_name_and_bearer_key(fake_factory) -> None:
    fake = await fake_factory(lambda request: GOOD)
    settings = ClaudeSettings.from_env(
        {"OPENROUTER_API_KEY": "or-key", "OPENROUTER_BASE_URL": fake.base_url, "CLAUDE_MODEL": "claude-opus-4-5"}
    )
    client = ClaudeClient(settings, None)
    try:
        res = await ask(client)
    finally:
        await client.aclose()
    assert res.ok and client.mode == "openrouter" and client.model == "anthropic/claude-opus-4.5"
    [request] = fake.requests
    assert request["body"]["model"] == "anthropic/claude-opus-4.5"
    assert request["headers"]["authorization"] == "Bearer or-key" and "x-api-key" not in request["headers"]
    assert res.cost_usd == pytest.approx(
        call_cost("claude-opus-4-5", input_tokens=res.tokens["input"], output_tokens=res.tokens["output"])
    )


async def test_database_down_still_returns_the_answer(fake_factory, caplog) -> None:
    fake = await fake_factory(lambda request: GOOD)
    # Nothing listens on port 9 of the loopback: connections are refused at once.
    engine = make_engine("postgresql://nobody@127.0.0.1:9/none", connect_timeout=1)
    client = ClaudeClient(settings_for(fake, record_timeout_s=2), engine)
    try:
        res = await ask(client)
    finally:
        await client.aclose()
        await engine.dispose()
    assert res.ok and res.data == GOOD and res.call_id is None
    assert "call record not written" in caplog.text and "cannot read today's spend" in caplog.text


async def test_spend_summary_groups_by_purpose_and_outcome(migrated_db, fake_factory) -> None:
    fake = await fake_factory([GOOD, FakeFault(kind="malformed"), GOOD])
    client = ClaudeClient(settings_for(fake), migrated_db.engine)
    try:
        results = [
            await ask(client, purpose="pattern_label"),
            await ask(client, purpose="anomaly_verdict"),
            await ask(client, purpose="anomaly_verdict"),
        ]
    finally:
        await client.aclose()
    since = datetime.now(UTC) - timedelta(hours=1)
    async with migrated_db.engine.connect() as conn:
        summary = await spend_summary(conn, since=since)
        total_tokens = (await conn.execute(select(func.sum(ClaudeCall.input_tokens + ClaudeCall.output_tokens)))).scalar()
    assert summary["calls"] == 3
    assert summary["cost_usd"] == pytest.approx(sum(r.cost_usd for r in results))
    assert summary["tokens"]["total"] == total_tokens
    assert summary["by_outcome"] == {"ok": 2, "parse_error": 1}
    assert summary["by_purpose"]["anomaly_verdict"]["calls"] == 2
    assert summary["by_purpose"]["pattern_label"]["cost_usd"] == pytest.approx(results[0].cost_usd)
    async with migrated_db.engine.connect() as conn:
        later = await spend_summary(conn, since=datetime.now(UTC) + timedelta(minutes=1))
    assert later["calls"] == 0 and later["by_purpose"] == {}


async def test_an_invalid_schema_is_the_callers_bug(fake_factory) -> None:
    fake = await fake_factory(lambda request: GOOD)
    client = ClaudeClient(settings_for(fake), None)
    try:
        with pytest.raises(Exception, match="is not valid"):
            await client.structured("p", "s", "sys", "prompt", "t", "d", {"type": "no-such-type"})
    finally:
        await client.aclose()
    assert fake.requests == []
