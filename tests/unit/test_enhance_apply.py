"""Applying enhancements in the sidecar: snapshot loading, arm assignment, the patch, opt-out, the hook."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from intelligence.enhance import spec as specs
from intelligence.enhance.live import (
    Applicable,
    EnhancementCache,
    EnhancementSnapshot,
    Enhancer,
    assign_arm,
    assignment_point,
    opted_out,
)
from intelligence.memory.lookup import PatternMatch
from intelligence.store.engine import make_engine
from intelligence.store.migrate import upgrade_async

INSTRUCTION = "Answer in full; never stop mid-sentence."
CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "system", "content": "You write invoices."}, {"role": "user", "content": "Invoice for 3 chairs"}],
}


def item(
    experiment_id: int | None = 7,
    enhancement_id: int = 11,
    weight: float = 0.5,
    assign_by: str = "session",
    kind: str = "system_prompt",
    spec: dict | None = None,
) -> Applicable:
    spec = spec or {"text": INSTRUCTION, "position": "append"}
    return Applicable(
        experiment_id,
        enhancement_id,
        kind,
        spec,
        weight if experiment_id else 0.0,
        assign_by,
        "experiment" if experiment_id else "active",
        specs.parse_spec(kind, spec),
    )


class StaticCache:
    def __init__(self, by_pattern: dict[int, tuple[Applicable, ...]]):
        self.snapshot = EnhancementSnapshot(by_pattern)


class CountingLookup:
    def __init__(self, match: PatternMatch | None):
        self.match = match
        self.calls = 0

    async def lookup(self, prompt):
        self.calls += 1
        assert "Invoice for 3 chairs" in prompt.text  # the canonical prompt is built from the client's view
        return self.match


class Flags:
    def __init__(self, on: bool):
        self.real_time_enhancement = on


# ---------------------------------------------------------------------------------- assignment
def test_assignment_is_deterministic_and_follows_the_control_weight() -> None:
    exp = item(weight=0.2)
    arms = [assign_arm(exp, session_id=f"s{i}", client="c") for i in range(4000)]
    assert arms == [assign_arm(exp, session_id=f"s{i}", client="c") for i in range(4000)]
    share = arms.count("control") / len(arms)
    assert 0.17 < share < 0.23
    # a different experiment reshuffles the same sessions (no carry-over between experiments)
    other = [assign_arm(item(experiment_id=8, weight=0.2), session_id=f"s{i}", client="c") for i in range(4000)]
    assert other != arms
    assert all(0.0 <= assignment_point(7, f"s{i}") < 1.0 for i in range(100))


def test_assign_by_client_ignores_the_session() -> None:
    exp = item(assign_by="client")
    for client in ("key_a", "key_b", "key_c", "key_d"):
        assert len({assign_arm(exp, session_id=f"s{i}", client=client) for i in range(50)}) == 1
    assert assign_arm(item(experiment_id=None), session_id="s", client="c") == "active"


def test_opt_out_header_values() -> None:
    assert opted_out({"x-enhance": "off"}) and opted_out({"x-enhance": " OFF "})
    assert not opted_out({}) and not opted_out({"x-enhance": "on"})


# ---------------------------------------------------------------------------------- applying
def _session_for(exp: Applicable, arm: str) -> str:
    return next(f"s{i}" for i in range(1000) if assign_arm(exp, session_id=f"s{i}", client=None) == arm)


def test_variant_gets_the_patch_control_gets_none_and_the_client_doc_is_untouched() -> None:
    exp = item()
    enhancer = Enhancer(StaticCache({5: (exp,)}), CountingLookup(None))
    original = json.loads(json.dumps(CHAT))
    variant = enhancer.apply_items((exp,), 5, original, "chat", session_id=_session_for(exp, "variant"), client=None)
    assert variant.arm == "variant" and variant.changed
    assert variant.doc["messages"][0]["content"].endswith(INSTRUCTION)
    assert original == CHAT  # never mutated: the record keeps what the client sent
    assert variant.record() == {"experiment": 7, "enhancement": 11, "arm": "variant", "pattern": 5, "patch": list(variant.patch)}
    control = enhancer.apply_items((exp,), 5, original, "chat", session_id=_session_for(exp, "control"), client=None)
    assert control.arm == "control" and not control.changed and control.doc is original
    assert control.record()["patch"] == [] and control.record()["experiment"] == 7


def test_active_enhancement_applies_to_everyone_and_a_variant_replaces_it_in_its_arm() -> None:
    active = item(experiment_id=None, enhancement_id=3, spec={"text": "OLD RULE"})
    applied = Enhancer(StaticCache({}), None).apply_items((active,), 5, CHAT, "chat", session_id="x", client=None)
    assert applied.arm == "active" and applied.experiment_id is None and "OLD RULE" in applied.doc["messages"][0]["content"]
    exp = item()
    both = (exp, active)
    v = Enhancer(StaticCache({}), None).apply_items(both, 5, CHAT, "chat", session_id=_session_for(exp, "variant"), client=None)
    assert INSTRUCTION in v.doc["messages"][0]["content"] and "OLD RULE" not in v.doc["messages"][0]["content"]
    c = Enhancer(StaticCache({}), None).apply_items(both, 5, CHAT, "chat", session_id=_session_for(exp, "control"), client=None)
    assert c.arm == "control" and "OLD RULE" in c.doc["messages"][0]["content"] and c.also_active == (3,)


def test_wants_is_false_without_any_await_when_nothing_applies() -> None:
    lookup = CountingLookup(PatternMatch(5, 1.0, True, "hash"))
    full = StaticCache({5: (item(),)})
    assert Enhancer(full, lookup).wants("chat", {})
    assert Enhancer(full, lookup).wants("messages", {})
    assert not Enhancer(StaticCache({}), lookup).wants("chat", {})  # empty snapshot
    assert not Enhancer(full, lookup, Flags(False)).wants("chat", {})  # ENABLE_REAL_TIME_ENHANCEMENT off
    assert not Enhancer(full, lookup).wants("embeddings", {})
    assert not Enhancer(full, lookup).wants("chat", {"x-enhance": "off"})
    assert not Enhancer(full, None).wants("chat", {})


async def test_enhance_uses_the_pattern_lookup_and_skips_unmatched_requests() -> None:
    view = type("V", (), {"last_user": "Invoice for 3 chairs", "system": "You write invoices.", "tool_names": ()})()
    exp = item()
    hit = Enhancer(StaticCache({5: (exp,)}), CountingLookup(PatternMatch(5, 1.0, True, "hash")))
    applied = await hit.enhance(view, CHAT, "chat", _session_for(exp, "variant"), {})
    assert applied is not None and applied.arm == "variant" and applied.pattern_id == 5
    weak = Enhancer(StaticCache({5: (exp,)}), CountingLookup(PatternMatch(5, 0.4, False, "index")))
    assert await weak.enhance(view, CHAT, "chat", "s1", {}) is None
    other = Enhancer(StaticCache({5: (exp,)}), CountingLookup(PatternMatch(6, 1.0, True, "hash")))
    assert await other.enhance(view, CHAT, "chat", "s1", {}) is None
    opted = Enhancer(StaticCache({5: (exp,)}), CountingLookup(PatternMatch(5, 1.0, True, "hash")))
    assert await opted.enhance(view, CHAT, "chat", "s1", {"x-enhance": "off"}) is None
    assert opted.lookup.calls == 0


# ---------------------------------------------------------------------------------- the cache (real Postgres)
@pytest.fixture
async def engine(fresh_db_url):
    url = await fresh_db_url()
    await upgrade_async(url)
    eng = make_engine(url)
    yield eng
    await eng.dispose()


async def _seed(engine) -> dict[str, int]:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        live = (
            await conn.execute(text("INSERT INTO patterns (first_seen, last_seen) VALUES (:t, :t) RETURNING id"), {"t": now})
        ).scalar_one()
        merged = (
            await conn.execute(
                text("INSERT INTO patterns (first_seen, last_seen, redirect_to) VALUES (:t, :t, :r) RETURNING id"),
                {"t": now, "r": live},
            )
        ).scalar_one()
        other = (
            await conn.execute(text("INSERT INTO patterns (first_seen, last_seen) VALUES (:t, :t) RETURNING id"), {"t": now})
        ).scalar_one()
        testing = (
            await conn.execute(
                text(
                    "INSERT INTO enhancements (pattern_id, version, kind, spec, status) "
                    "VALUES (:p, 1, 'system_prompt', CAST(:s AS jsonb), 'testing') RETURNING id"
                ),
                {"p": live, "s": json.dumps({"text": INSTRUCTION})},
            )
        ).scalar_one()
        exp = (
            await conn.execute(
                text("INSERT INTO experiments (enhancement_id, pattern_id, control_weight) VALUES (:e, :p, 0.3) RETURNING id"),
                {"e": testing, "p": live},
            )
        ).scalar_one()
        # a candidate and a testing enhancement without a running experiment are not applied
        await conn.execute(
            text(
                "INSERT INTO enhancements (pattern_id, version, kind, spec, status) VALUES "
                "(:p, 1, 'parameters', '{\"temperature\": 0.1}', 'candidate'), "
                "(:p, 2, 'parameters', '{\"temperature\": 0.2}', 'testing')"
            ),
            {"p": other},
        )
    return {"live": live, "merged": merged, "other": other, "enhancement": testing, "experiment": exp}


async def test_cache_loads_running_experiments_follows_merges_and_reloads_on_notify(engine) -> None:
    ids = await _seed(engine)
    cache = EnhancementCache(engine, poll_interval=60)  # a reload within seconds can only come from NOTIFY
    await cache.start()
    try:
        snap = cache.snapshot
        assert set(snap.by_pattern) == {ids["live"], ids["merged"]}
        (a,) = snap.for_pattern(ids["merged"])
        assert (a.experiment_id, a.enhancement_id, a.mode, a.control_weight) == (
            ids["experiment"],
            ids["enhancement"],
            "experiment",
            0.3,
        )
        deadline = time.monotonic() + 5
        while not cache.listening and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert cache.listening
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE experiments SET status = 'promoted' WHERE id = :x"), {"x": ids["experiment"]})
            await conn.execute(text("UPDATE enhancements SET status = 'active' WHERE id = :e"), {"e": ids["enhancement"]})
        while time.monotonic() < deadline:
            items = cache.snapshot.for_pattern(ids["live"])
            if items and items[0].mode == "active":
                break
            await asyncio.sleep(0.05)
        (a,) = cache.snapshot.for_pattern(ids["live"])
        assert a.mode == "active" and a.experiment_id is None
        assert cache.stats["notifications"] >= 1
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE enhancements SET status = 'retired' WHERE id = :e"), {"e": ids["enhancement"]})
        deadline = time.monotonic() + 5
        while not cache.snapshot.is_empty and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert cache.snapshot.is_empty
    finally:
        await cache.stop()


# ---------------------------------------------------------------------------------- the simulation's fake model
def test_instruction_model_rates_and_deterministic_draws() -> None:
    from extproc.testing.instruction_fake import InstructionModel

    def model(seed: int = 0) -> InstructionModel:
        return InstructionModel(helpful="BE COMPLETE", harmful="RAMBLE", target_marker="invoice", seed=seed)

    m = model()
    assert [m.condition(t) for t in ("invoice x", "invoice BE COMPLETE", "BE COMPLETE RAMBLE", "hello")] == [
        "base",
        "helpful",
        "harmful",
        "other",
    ]
    draws = [m.decide("invoice x", f"s{i}")[1] for i in range(2000)]
    assert draws == [model().decide("invoice x", f"s{i}")[1] for i in range(2000)]  # same seed and key, same draw
    assert draws != [model(seed=1).decide("invoice x", f"s{i}")[1] for i in range(2000)]
    assert 0.25 < sum(draws) / len(draws) < 0.35
    helped = [m.decide("invoice x BE COMPLETE", f"s{i}")[1] for i in range(2000)]
    assert 0.75 < sum(helped) / len(helped) < 0.85
    harmed = [m.decide("invoice x BE COMPLETE RAMBLE", f"s{i}")[1] for i in range(2000)]
    assert 0.07 < sum(harmed) / len(harmed) < 0.13
