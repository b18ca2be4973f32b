"""The candidate job against a real Postgres and the fake Claude server (real anthropic SDK)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from intelligence.claude import ClaudeClient, ClaudeSettings, FakeClaude, FakeFault
from intelligence.enhance import manage
from intelligence.enhance.candidates import PURPOSE, TOOL_NAME, CandidateJob

from .test_enhance_support import Ex, make_pattern, write

SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD"
GOOD = {
    "kind": "system_prompt",
    "spec": {"text": "Always finish the invoice; keep it under 200 words.", "position": "append"},
    "rationale": "Failures end with finish_reason=length.",
}


async def _seed(conn) -> dict[str, int]:
    """A: busy and failing half the time; B: healthy; C: failing but rare; D: failing but already has a
    candidate; E: fine by fleet standards but worse than its own past."""
    ids = {name: await make_pattern(conn, f"family {name}") for name in "ABCDE"}
    past = datetime.now(UTC) - timedelta(days=2)
    rows: list[Ex] = []
    for i in range(60):
        rows.append(
            Ex(
                ids["A"],
                ok=i % 2 == 0,
                finish_reason="stop" if i % 2 == 0 else "length",
                tools=("lookup",),
                prompt_user=f"Invoice for order {i}" + (f" key {SECRET}" if i == 59 else ""),
            )
        )
        rows.append(Ex(ids["D"], ok=i % 2 == 0))
        rows.append(Ex(ids["E"], ok=i % 10 != 0))
        rows.append(Ex(ids["E"], ok=True, at=past + timedelta(seconds=i)))
    rows += [Ex(ids["B"], ok=i % 20 != 0) for i in range(100)]
    rows += [Ex(ids["C"], ok=False) for _ in range(20)]
    await write(conn, rows)
    await manage.create_enhancement(conn, ids["D"], "parameters", {"temperature": 0.3}, "", "operator")
    return ids


async def test_picks_patterns_asks_claude_validates_stores_and_starts(migrated_db) -> None:
    engine = migrated_db.engine
    async with engine.begin() as conn:
        ids = await _seed(conn)

    def responder(request: dict) -> dict:
        assert request["tool_name"] == TOOL_NAME
        if f'"id": {ids["A"]},' in request["prompt"]:
            return {
                "candidates": [
                    GOOD,
                    {"kind": "parameters", "spec": {"temperature": 9}, "rationale": "out of bounds"},
                    {"kind": "tool_description", "spec": {"tool": "no_such_tool", "description": "d"}, "rationale": "x"},
                    {**GOOD, "rationale": "the same again"},
                    {"kind": "parameters", "spec": {"max_tokens": 2000}, "rationale": "room to finish"},
                ]
            }
        return {"candidates": [{"kind": "parameters", "spec": {"temperature": 0.2}, "rationale": "less drift"}]}

    async with FakeClaude(responder) as fake:
        client = ClaudeClient(fake.client_settings(), engine)
        try:
            job = CandidateJob(engine, client, min_volume=50, window_hours=24, max_per_tick=3)
            summary = await job.tick()
            assert summary["patterns"] == [ids["A"], ids["E"]]  # most failures first; B fine, C rare, D pending
            assert summary["proposed"] == 6 and summary["invalid"] == 3 and len(summary["stored"]) == 3
            assert len(summary["started"]) == 2 and summary["claude_failures"] == 0
            prompts = [r["prompt"] for r in fake.requests]
            assert len(prompts) == 2
            a_prompt = next(p for p in prompts if f'"id": {ids["A"]},' in p)
            evidence = json.loads(a_prompt.split("\n\n", 1)[1])
            assert evidence["failures_by_signal"] == {"finish": 30}
            assert evidence["declared_tools"] == ["lookup"]
            assert {e["finish_reason"] for e in evidence["failing_examples"]} == {"length"}
            assert len(evidence["failing_examples"]) == 5 and len(evidence["succeeding_examples"]) == 5
            assert SECRET not in "".join(prompts) and "Invoice for order 59 key" in a_prompt  # redacted, not dropped
            assert "own past" in next(p for p in prompts if f'"id": {ids["E"]},' in p)

            async with engine.connect() as conn:
                a = await manage.list_enhancements(conn, pattern_id=ids["A"])
                assert [(e["kind"], e["status"], e["source"]) for e in a] == [
                    ("parameters", "candidate", "claude"),
                    ("system_prompt", "testing", "claude"),
                ]
                call = (
                    await conn.execute(
                        text("SELECT id, purpose, subject FROM claude_calls WHERE id = :i"), {"i": a[0]["claude_call_id"]}
                    )
                ).one()
                assert (call.purpose, call.subject) == (PURPOSE, f"pattern:{ids['A']}")
                running = {e["pattern_id"] for e in await manage.list_experiments(conn, status="running")}
                assert running == {ids["A"], ids["E"]}

            # everything picked is now busy: no second round of Claude calls
            again = await job.tick()
            assert again["patterns"] == [] and len(fake.requests) == 2
        finally:
            await client.aclose()


async def test_claude_failures_are_counted_and_store_nothing(migrated_db) -> None:
    engine = migrated_db.engine
    async with engine.begin() as conn:
        p, healthy = await make_pattern(conn), await make_pattern(conn, "healthy")
        await write(conn, [Ex(p, ok=i % 3 == 0) for i in range(60)] + [Ex(healthy, ok=True) for _ in range(200)])
    async with FakeClaude(lambda _request: FakeFault(kind="server_error")) as fake:
        client = ClaudeClient(fake.client_settings(max_retries=0), engine)
        try:
            summary = await CandidateJob(engine, client, min_volume=50).tick()
        finally:
            await client.aclose()
    assert summary["patterns"] == [p] and summary["claude_failures"] == 1 and summary["stored"] == []
    async with engine.connect() as conn:
        assert await manage.list_enhancements(conn) == []


async def test_without_auto_start_candidates_wait_for_an_operator(migrated_db) -> None:
    engine = migrated_db.engine
    async with engine.begin() as conn:
        p, healthy = await make_pattern(conn), await make_pattern(conn, "healthy")
        await write(conn, [Ex(p, ok=i % 3 == 0) for i in range(60)] + [Ex(healthy, ok=True) for _ in range(100)])
    async with FakeClaude(lambda _request: {"candidates": [GOOD]}) as fake:
        client = ClaudeClient(fake.client_settings(), engine)
        try:
            summary = await CandidateJob(engine, client, min_volume=50, auto_start=False).tick()
        finally:
            await client.aclose()
    assert len(summary["stored"]) == 1 and summary["started"] == []
    async with engine.connect() as conn:
        assert (await manage.list_enhancements(conn))[0]["status"] == "candidate"


async def test_local_only_client_does_nothing(migrated_db) -> None:
    client = ClaudeClient(ClaudeSettings.from_env({}), migrated_db.engine)
    assert client.local_only
    assert await CandidateJob(migrated_db.engine, client).tick() == {"skipped": "local-only"}
    assert await CandidateJob(migrated_db.engine, None).tick() == {"skipped": "local-only"}
