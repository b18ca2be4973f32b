"""Enhancements through the real stack (Envoy + sidecar + Postgres + fake provider), and the simulation.

Pattern memory is seeded directly (an exchange_embeddings row with the request's canonical hash), so
the sidecar's lookup finds the pattern by hash without the worker; enhancements and experiments are
rows like the ones intelligence.enhance.manage writes. The sidecar picks them up through NOTIFY.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
from sqlalchemy import text

from intelligence.enhance.live import Applicable, assign_arm
from intelligence.memory.canonical import canonical_prompt
from intelligence.store.engine import make_engine

from .conftest import LLMPROXY, Stack, body_json

INSTRUCTION = "Always finish the answer; be concise."


def _chat(tag: str) -> dict:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": f"You help team {tag}."},
            {"role": "user", "content": f"Summarise ticket {tag} for the weekly report"},
        ],
    }


def _send(stack: Stack, doc: dict, **headers: str) -> str:
    r = httpx.post(
        f"{stack.url}/openai/v1/chat/completions", json=doc, timeout=10, headers={"authorization": "Bearer sk-test", **headers}
    )
    assert r.status_code == 200, r.text
    return r.headers["x-llmproxy-request-id"]


def _upstream_saw(stack: Stack, tag: str) -> dict:
    for req in reversed(stack.fake.requests):
        if req.path.endswith("/chat/completions") and tag in json.dumps(req.json):
            return req.json
    raise AssertionError(f"the provider never received a request about {tag}")


@asynccontextmanager
async def _engine(url: str):
    engine = make_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _seed_pattern(url: str, record) -> int:
    """The pattern memory row the worker would write: this canonical prompt belongs to a new pattern."""
    prompt = canonical_prompt(record.prompt_user, record.prompt_system, record.tool_names)
    now = datetime.now(UTC)
    async with _engine(url) as engine, engine.begin() as conn:
        pid = (
            await conn.execute(
                text("INSERT INTO patterns (first_seen, last_seen, member_count) VALUES (:t, :t, 1) RETURNING id"), {"t": now}
            )
        ).scalar_one()
        await conn.execute(
            text(
                "INSERT INTO exchange_embeddings (request_id, canonical_hash, pattern_id, similarity, created_at) "
                "VALUES (:r, :h, :p, 1.0, :t)"
            ),
            {"r": record.request_id, "h": prompt.hash, "p": pid, "t": now},
        )
    return pid


async def _add_enhancement(url: str, pattern_id: int, *, experiment: bool) -> tuple[int, int | None]:
    async with _engine(url) as engine, engine.begin() as conn:
        eid = (
            await conn.execute(
                text(
                    "INSERT INTO enhancements (pattern_id, version, kind, spec, status, source) "
                    "VALUES (:p, 1, 'system_prompt', CAST(:s AS jsonb), :st, 'operator') RETURNING id"
                ),
                {
                    "p": pattern_id,
                    "s": json.dumps({"text": INSTRUCTION, "position": "append"}),
                    "st": "testing" if experiment else "active",
                },
            )
        ).scalar_one()
        xid = None
        if experiment:
            xid = (
                await conn.execute(
                    text(
                        "INSERT INTO experiments (enhancement_id, pattern_id, control_weight, created_by) "
                        "VALUES (:e, :p, 0.5, 'test') RETURNING id"
                    ),
                    {"e": eid, "p": pattern_id},
                )
            ).scalar_one()
    return eid, xid


async def _retire(url: str, pattern_ids: list[int]) -> None:
    """Leave nothing applicable: other tests share this database and the stack."""
    async with _engine(url) as engine, engine.begin() as conn:
        await conn.execute(text("UPDATE experiments SET status = 'stopped' WHERE pattern_id = ANY(:p)"), {"p": pattern_ids})
        await conn.execute(text("UPDATE enhancements SET status = 'retired' WHERE pattern_id = ANY(:p)"), {"p": pattern_ids})


def _enhanced_record(stack: Stack, doc: dict, timeout: float = 10.0, **headers: str):
    """Send until the sidecar has reloaded (NOTIFY) and the exchange carries an enhancement."""
    deadline = time.monotonic() + timeout
    while True:
        rec = stack.record(_send(stack, doc, **headers))
        if "enhancement" in rec.flags or time.monotonic() > deadline:
            return rec
        time.sleep(0.2)


def test_active_enhancement_is_applied_recorded_and_respects_opt_out(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:10]
    doc = _chat(tag)
    first = stack.record(_send(stack, doc))
    assert "enhancement" not in first.flags
    pid = asyncio.run(_seed_pattern(stack.db_url, first))
    try:
        eid, _ = asyncio.run(_add_enhancement(stack.db_url, pid, experiment=False))
        rec = _enhanced_record(stack, doc)
        assert rec.flags["enhancement"]["arm"] == "active"
        assert rec.flags["enhancement"]["enhancement"] == eid and rec.flags["enhancement"]["experiment"] is None
        assert rec.flags["enhancement"]["pattern"] == pid and rec.flags["enhancement"]["patch"]
        upstream = _upstream_saw(stack, tag)
        assert upstream["messages"][0]["content"] == f"You help team {tag}.\n\n{INSTRUCTION}"
        # the log keeps what the client sent and what went upstream
        assert INSTRUCTION not in json.dumps(body_json(rec.request_client))
        assert INSTRUCTION in json.dumps(body_json(rec.request_forwarded))
        assert rec.prompt_system == f"You help team {tag}."  # pattern memory keeps seeing the client's prompt

        opted = stack.record(_send(stack, doc, **{"x-enhance": "off"}))
        assert "enhancement" not in opted.flags
        assert INSTRUCTION not in json.dumps(_upstream_saw(stack, tag))
        assert "x-enhance" not in {k.lower() for k in stack.fake.requests[-1].headers}
    finally:
        asyncio.run(_retire(stack.db_url, [pid]))


def test_experiment_arms_are_deterministic_per_session(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:10]
    doc = _chat(tag)
    pid = asyncio.run(_seed_pattern(stack.db_url, stack.record(_send(stack, doc))))
    try:
        eid, xid = asyncio.run(_add_enhancement(stack.db_url, pid, experiment=True))
        assert _enhanced_record(stack, doc, **{"x-session-id": f"warm-{tag}"}).flags["enhancement"]["experiment"] == xid
        expected = Applicable(xid, eid, "system_prompt", {}, 0.5, "session", "experiment")
        seen: dict[str, set[str]] = {}
        for _round in range(2):
            for i in range(8):
                session = f"{tag}-s{i}"
                rec = stack.record(_send(stack, doc, **{"x-session-id": session}))
                arm = rec.flags["enhancement"]["arm"]
                seen.setdefault(session, set()).add(arm)
                assert arm == assign_arm(expected, session_id=session, client=None)
                assert (INSTRUCTION in json.dumps(_upstream_saw(stack, tag))) == (arm == "variant")
                assert rec.flags["enhancement"]["patch"] == [] if arm == "control" else rec.flags["enhancement"]["patch"]
        assert all(len(arms) == 1 for arms in seen.values())  # a session never switches arms
        assert {a for arms in seen.values() for a in arms} == {"control", "variant"}
    finally:
        asyncio.run(_retire(stack.db_url, [pid]))


async def test_simulation_promotes_the_helpful_and_rolls_back_the_harmful_candidate(fresh_db_url) -> None:
    """The honest loop (docs/experiments-simulation.md): the fake Claude derives its proposals from the
    evidence, sessions hold correlated requests and the evaluator analyses sessions, so it needs about
    twice the traffic of the old per-request simulation; the null scenario must not be promoted."""
    url = await fresh_db_url()  # an empty database of its own; the command migrates it
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "OPENROUTER_API_KEY")}
    proc = await asyncio.to_thread(
        subprocess.run,
        [
            LLMPROXY,
            "simulate",
            "enhancement",
            "--json",
            "--requests-per-phase",
            "400",
            "--seed",
            "7",
            "--database-url",
            url,
            "--max-seconds",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=420,
        env=env,
    )
    assert proc.stdout.strip(), proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    for key, kind in (
        ("promoted_helpful", bool),
        ("rolled_back_harmful", bool),
        ("null_scenario_promoted", bool),
        ("requests_to_decide", int),
        ("control_success_rate", float),
        ("variant_success_rate", float),
    ):
        assert isinstance(result[key], kind), (key, result)
    assert result["promoted_helpful"] and result["rolled_back_harmful"], proc.stderr[-3000:]
    assert not result["null_scenario_promoted"], proc.stderr[-3000:]
    assert result["variant_success_rate"] > result["control_success_rate"]
    assert 0 < result["requests_to_decide"] <= 400
    # Claude (fake) derived the helpful proposal from the examples, and the job found the pattern
    assert result["helpful"]["source"] == "candidate_job" and result["helpful"]["proposal"] == "length_limit"
    assert result["helpful"]["approvals"] == ["start", "promote"]  # an admin (the simulation) approved both
    assert result["lift"]["per_pattern"] and result["lift"]["per_pattern"][0]["lift"] > 0
    assert proc.returncode == 0
