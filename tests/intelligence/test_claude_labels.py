"""PatternLabelJob against a real Postgres and the fake Claude server (real anthropic SDK)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from intelligence.claude import ClaudeClient, ClaudeSettings, FakeClaude, FakeFault, IntelligenceFlags
from intelligence.memory.claude_labels import MAX_LABEL_CHARS, PURPOSE, TOOL_NAME, PatternLabelJob, clean_label
from intelligence.memory.models import EMBEDDING_DIM, ExchangeEmbedding
from intelligence.memory.repository import PatternRepository
from intelligence.store.models import Exchange

ON = IntelligenceFlags()
SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD"
_seq = itertools.count()
_rng = np.random.default_rng(7)


async def make_pattern(engine: AsyncEngine, label: str, texts: list[str], members: int) -> int:
    centroid = _rng.standard_normal(EMBEDDING_DIM).astype(np.float32)
    examples = [{"request_id": f"ex-{next(_seq)}", "text": t, "similarity": 0.9} for t in texts]
    async with AsyncSession(engine) as session, session.begin():
        return await PatternRepository(session).create_pattern(
            centroid, seen_at=datetime.now(UTC), label=label, examples=examples, member_count=members
        )


async def add_members(engine: AsyncEngine, pattern_id: int, n: int, at: datetime) -> None:
    """``n`` exchanges with embedding rows in the pattern, and the pattern's member_count raised by ``n``."""
    exchanges, embeddings = [], []
    for _ in range(n):
        rid = f"req-label-{next(_seq)}"
        exchanges.append(dict(request_id=rid, started_at=at, finished_at=at, method="POST", path="/v1/chat"))
        embeddings.append(dict(request_id=rid, canonical_hash=rid, pattern_id=pattern_id, created_at=at))
    async with engine.begin() as conn:
        await conn.execute(insert(Exchange.__table__), exchanges)
        await conn.execute(insert(ExchangeEmbedding.__table__), embeddings)
        await conn.execute(
            text("UPDATE patterns SET member_count = member_count + :n WHERE id = :id"), {"n": n, "id": pattern_id}
        )


async def label_of(engine: AsyncEngine, pattern_id: int) -> tuple[str, str]:
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT label, label_source FROM patterns WHERE id = :id"), {"id": pattern_id})).one()
    return row.label, row.label_source


def naming(request: dict) -> dict:
    assert request["tool_name"] == TOOL_NAME
    if "invoice" in request["prompt"]:
        return {"label": "Invoice summaries", "description": "Requests to summarise invoices."}
    return {"label": "Weather questions", "description": "Questions about the weather."}


async def test_labels_heuristic_patterns_once_and_leaves_the_rest(migrated_db) -> None:
    engine = migrated_db.engine
    invoices = await make_pattern(
        engine, "invoice summarise order", ["summarise invoice 1", f"summarise invoice 2 key {SECRET}"], members=8
    )
    small = await make_pattern(engine, "weather tomorrow", ["weather tomorrow?"], members=2)
    by_hand = await make_pattern(engine, "weather rain", ["will it rain"], members=9)
    async with AsyncSession(engine) as session, session.begin():
        await PatternRepository(session).set_label(by_hand, "Rain checks", source="claude")

    async with FakeClaude(naming) as fake:
        client = ClaudeClient(fake.client_settings(), engine)
        try:
            job = PatternLabelJob(engine, client, min_members=5, flags=ON)
            summary = await job.tick()
            again = await job.tick()
        finally:
            await client.aclose()

    assert summary["patterns"] == [invoices]
    assert summary["labelled"] == [
        {
            "pattern": invoices,
            "label": "Invoice summaries",
            "previous": "invoice summarise order",
            "description": "Requests to summarise invoices.",
        }
    ]
    assert len(fake.requests) == 1, "already-labelled patterns must not be sent again"
    prompt = fake.requests[0]["prompt"]
    assert "summarise invoice 1" in prompt and SECRET not in prompt
    assert again["patterns"] == [] and again["labelled"] == []
    assert await label_of(engine, invoices) == ("Invoice summaries", "claude")
    assert await label_of(engine, small) == ("weather tomorrow", "heuristic")
    assert await label_of(engine, by_hand) == ("Rain checks", "claude")
    async with engine.connect() as conn:
        calls = (await conn.execute(text("SELECT purpose, subject, outcome FROM claude_calls"))).all()
    assert [tuple(c) for c in calls] == [(PURPOSE, f"pattern:{invoices}", "ok")]


async def test_malformed_answers_leave_the_heuristic_label_and_back_off(migrated_db) -> None:
    engine = migrated_db.engine
    pid = await make_pattern(engine, "invoice summarise order", ["summarise invoice 1"], members=6)
    answers = iter(
        [
            FakeFault(kind="malformed"),  # text instead of a tool call
            FakeFault(kind="malformed", input={"label": "x" * (MAX_LABEL_CHARS + 1), "description": "too long"}),
            FakeFault(kind="malformed", input={"label": "   ", "description": "blank"}),
            {"label": ' " . " ', "description": "valid JSON, but nothing left once cleaned"},
        ]
    )
    async with FakeClaude(lambda _request: next(answers)) as fake:
        client = ClaudeClient(fake.client_settings(), engine)
        try:
            backing_off = PatternLabelJob(engine, client, flags=ON)
            first = await backing_off.tick()
            second = await backing_off.tick()  # the failed call is in claude_calls: no new call yet
            assert len(fake.requests) == 1
            eager = PatternLabelJob(engine, client, flags=ON, retry_after_s=0)
            summaries = [await eager.tick() for _ in range(2)]
            # claude_calls records the cleaned-away label as "ok": the job itself must back off
            other = await make_pattern(engine, "weather tomorrow", ["weather tomorrow?"], members=6)
            rejecting = await backing_off.tick()
            after_rejected = await backing_off.tick()
        finally:
            await client.aclose()

    assert first["parse_errors"] == 1 and first["labelled"] == []
    assert second["patterns"] == []
    assert [s["parse_errors"] for s in summaries] == [1, 1]
    assert rejecting["patterns"] == [other] and rejecting["parse_errors"] == 1
    assert after_rejected["patterns"] == []
    assert len(fake.requests) == 4
    assert await label_of(engine, pid) == ("invoice summarise order", "heuristic")
    assert await label_of(engine, other) == ("weather tomorrow", "heuristic")


async def test_local_only_or_pattern_learning_off_does_nothing(migrated_db) -> None:
    engine = migrated_db.engine
    pid = await make_pattern(engine, "invoice summarise order", ["summarise invoice 1"], members=6)
    local = ClaudeClient(ClaudeSettings(), engine)
    assert local.local_only
    assert await PatternLabelJob(engine, local, flags=ON).tick() == {"skipped": "local-only"}
    assert await PatternLabelJob(engine, None, flags=ON).tick() == {"skipped": "local-only"}

    async with FakeClaude(naming) as fake:
        client = ClaudeClient(fake.client_settings(), engine)
        try:
            off = IntelligenceFlags.from_env({"ENABLE_PATTERN_LEARNING": "off", "ANTHROPIC_API_KEY": "k"})
            assert await PatternLabelJob(engine, client, flags=off).tick() == {"skipped": "pattern_learning off"}
        finally:
            await client.aclose()
    assert fake.requests == []
    assert await label_of(engine, pid) == ("invoice summarise order", "heuristic")
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM claude_calls"))).scalar_one() == 0


async def test_exhausted_budget_stops_the_tick(migrated_db) -> None:
    engine = migrated_db.engine
    ids = [await make_pattern(engine, f"topic {n}", [f"weather {n}"], members=6) for n in range(3)]
    async with FakeClaude(naming) as fake:
        client = ClaudeClient(fake.client_settings(daily_budget_usd=0.0), engine)
        try:
            summary = await PatternLabelJob(engine, client, flags=ON).tick()
        finally:
            await client.aclose()
    assert summary["stopped"] == "budget_exhausted" and summary["labelled"] == []
    assert fake.requests == []
    async with engine.connect() as conn:
        outcomes = (await conn.execute(text("SELECT outcome FROM claude_calls"))).scalars().all()
    assert outcomes == ["budget_exhausted"], "the tick stops at the first refusal"
    assert [(await label_of(engine, i))[1] for i in ids] == ["heuristic"] * 3


async def test_bounded_per_tick_biggest_first(migrated_db) -> None:
    engine = migrated_db.engine
    ids = [await make_pattern(engine, f"topic {n}", [f"weather in city {n}"], members=5 + n) for n in range(4)]
    async with FakeClaude(naming) as fake:
        client = ClaudeClient(fake.client_settings(), engine)
        try:
            job = PatternLabelJob(engine, client, max_per_tick=2, flags=ON)
            first = await job.tick()
            second = await job.tick()
            third = await job.tick()
        finally:
            await client.aclose()
    assert first["patterns"] == [ids[3], ids[2]]
    assert second["patterns"] == [ids[1], ids[0]]
    assert third["patterns"] == []
    assert len(fake.requests) == 4


async def test_relabels_when_membership_grew_since_the_claude_label(migrated_db) -> None:
    engine = migrated_db.engine
    pid = await make_pattern(engine, "invoice summarise", ["summarise invoice 1"], members=0)
    await add_members(engine, pid, 6, datetime.now(UTC) - timedelta(hours=1))
    async with FakeClaude(naming) as fake:
        client = ClaudeClient(fake.client_settings(), engine)
        try:
            job = PatternLabelJob(engine, client, relabel_growth=2.0, flags=ON)
            assert [x["pattern"] for x in (await job.tick())["labelled"]] == [pid]
            await add_members(engine, pid, 5, datetime.now(UTC))
            not_yet = await job.tick()  # 11 members, 6 when labelled: less than twice
            await add_members(engine, pid, 1, datetime.now(UTC))
            grown = await job.tick()  # 12 = twice 6
            settled = await job.tick()
            without_relabel = PatternLabelJob(engine, client, relabel_growth=0, flags=ON)
            await add_members(engine, pid, 30, datetime.now(UTC))
            disabled = await without_relabel.tick()
        finally:
            await client.aclose()
    assert not_yet["patterns"] == []
    assert grown["patterns"] == [pid] and grown["labelled"][0]["previous"] == "Invoice summaries"
    assert settled["patterns"] == []
    assert disabled["patterns"] == []
    assert len(fake.requests) == 2


async def test_pattern_merged_away_meanwhile_is_not_labelled(migrated_db) -> None:
    engine = migrated_db.engine
    loser = await make_pattern(engine, "invoice summarise", ["summarise invoice 1"], members=6)
    winner = await make_pattern(engine, "invoice order", ["order invoice 2"], members=3)

    async def merge_then_answer(request: dict) -> dict:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE patterns SET redirect_to = :w, centroid = NULL WHERE id = :l"), {"w": winner, "l": loser}
            )
        return naming(request)

    async with FakeClaude(merge_then_answer) as fake:
        client = ClaudeClient(fake.client_settings(), engine)
        try:
            summary = await PatternLabelJob(engine, client, flags=ON).tick()
        finally:
            await client.aclose()
    assert summary["moved"] == 1 and summary["labelled"] == []
    assert await label_of(engine, winner) == ("invoice order", "heuristic")


async def test_run_stops_when_asked(migrated_db) -> None:
    engine = migrated_db.engine
    pid = await make_pattern(engine, "invoice summarise", ["summarise invoice 1"], members=6)
    async with FakeClaude(naming) as fake:
        client = ClaudeClient(fake.client_settings(), engine)
        try:
            stop = asyncio.Event()
            task = asyncio.create_task(PatternLabelJob(engine, client, interval_s=60, flags=ON).run(stop))
            for _ in range(200):
                if (await label_of(engine, pid))[1] == "claude":
                    break
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.wait_for(task, timeout=2)
        finally:
            await client.aclose()
    assert await label_of(engine, pid) == ("Invoice summaries", "claude")


def test_clean_label() -> None:
    assert clean_label('  "Invoice\n  summaries." ') == "Invoice summaries"
    assert clean_label(" . ") == ""
    assert len(clean_label("word " * 40)) <= MAX_LABEL_CHARS
