"""Enhancement and experiment life cycle against a real, migrated Postgres."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from intelligence.audit.log import AuditLog
from intelligence.enhance import manage
from intelligence.enhance.spec import SpecError

from .test_enhance_support import make_pattern

SP = {"text": "Answer in at most three sentences.", "position": "append"}


async def _counts(conn, experiment_id: int) -> tuple[int, int, int]:
    hist = (
        await conn.execute(text("SELECT count(*) FROM experiment_events WHERE experiment_id = :e"), {"e": experiment_id})
    ).scalar_one()
    audit = (
        await conn.execute(text("SELECT count(*) FROM audit_log WHERE subject = :s"), {"s": f"experiment:{experiment_id}"})
    ).scalar_one()
    events = (
        await conn.execute(
            text("SELECT count(*) FROM events WHERE kind = 'experiment' AND subject = :s"), {"s": f"experiment:{experiment_id}"}
        )
    ).scalar_one()
    return hist, audit, events


async def test_create_versions_validate_and_list(migrated_db) -> None:
    async with migrated_db.engine.begin() as conn:
        p1, p2 = await make_pattern(conn), await make_pattern(conn, "other")
        a = await manage.create_enhancement(conn, p1, "system_prompt", SP, "terse answers succeed", "claude")
        b = await manage.create_enhancement(conn, p1, "parameters", {"temperature": 0.2}, "less drift", "operator")
        c = await manage.create_enhancement(
            conn, p2, "tool_description", {"tool": "lookup", "description": "Find a ticket by id."}, "", "claude"
        )
        with pytest.raises(SpecError):
            await manage.create_enhancement(conn, p1, "parameters", {"temperature": 7}, "", "claude")
        with pytest.raises(ValueError):
            await manage.create_enhancement(conn, p1, "parameters", {"temperature": 0.1}, "", "nobody")
    async with migrated_db.engine.connect() as conn:
        rows = await manage.list_enhancements(conn, pattern_id=p1)
        assert [(r["id"], r["version"], r["status"]) for r in rows] == [(b, 2, "candidate"), (a, 1, "candidate")]
        assert (await manage.get_enhancement(conn, c))["version"] == 1
        assert rows[1]["spec"] == SP
        assert [r["id"] for r in await manage.list_enhancements(conn, status="candidate")] == [c, b, a]
        # creation is audited and announced too
        n = (await conn.execute(text("SELECT count(*) FROM events WHERE subject LIKE 'enhancement:%'"))).scalar_one()
        assert n == 3
        with pytest.raises(LookupError):
            await manage.get_enhancement(conn, 999_999)


async def test_full_life_cycle_with_traces(migrated_db) -> None:
    engine = migrated_db.engine
    async with engine.begin() as conn:
        p = await make_pattern(conn)
        old = await manage.create_enhancement(conn, p, "system_prompt", {"text": "Be brief."}, "", "operator")
        new = await manage.create_enhancement(conn, p, "system_prompt", SP, "", "claude")
        old_exp = await manage.start_experiment(conn, old, actor="alice")
        await manage.promote_experiment(conn, old_exp, actor="alice", reason="looked good")
    async with engine.begin() as conn:
        exp = await manage.start_experiment(conn, new, actor="alice", control_weight=0.7, assign_by="client", min_effect=0.1)
        assert (await manage.get_enhancement(conn, new))["status"] == "testing"
        with pytest.raises(ValueError):  # not a candidate any more
            await manage.start_experiment(conn, new, actor="alice")
        await manage.pause_experiment(conn, exp, actor="bob", reason="incident")
        with pytest.raises(ValueError):
            await manage.pause_experiment(conn, exp, actor="bob")
        await manage.resume_experiment(conn, exp, actor="bob")
        await manage.promote_experiment(conn, exp, actor="evaluator", reason="p=0.01, effect=+0.2")
        with pytest.raises(ValueError):
            await manage.resume_experiment(conn, exp, actor="bob")
    async with engine.connect() as conn:
        enh = {e["id"]: e["status"] for e in await manage.list_enhancements(conn, pattern_id=p)}
        assert enh == {old: "retired", new: "active"}
        (row,) = [e for e in await manage.list_experiments(conn) if e["id"] == exp]
        assert row["status"] == "promoted" and row["control_weight"] == 0.7 and row["assign_by"] == "client"
        assert row["min_effect"] == 0.1 and row["alpha"] == 0.05 and row["decided_at"] is not None
        assert row["decision_reason"] == "p=0.01, effect=+0.2" and row["enhancement"]["status"] == "active"
        history = await manage.experiment_history(conn, exp)
        assert [(h["action"], h["actor"]) for h in history] == [
            ("started", "alice"),
            ("paused", "bob"),
            ("resumed", "bob"),
            ("promoted", "evaluator"),
        ]
        assert history[-1]["detail"]["retired"] == [old]
        assert await _counts(conn, exp) == (4, 4, 4)
        assert (await AuditLog().verify(conn)).ok
        assert [e["id"] for e in await manage.list_experiments(conn, status="promoted")] == [exp, old_exp]
    # undoing the promotion: the enhancement is withdrawn and the event is a warning
    async with engine.begin() as conn:
        await manage.rollback_experiment(conn, exp, actor="carol", reason="complaints")
        with pytest.raises(ValueError):  # the old promotion's enhancement was retired, nothing to undo
            await manage.rollback_experiment(conn, old_exp, actor="carol")
    async with engine.connect() as conn:
        assert (await manage.get_enhancement(conn, new))["status"] == "rolled_back"
        sev = (
            await conn.execute(
                text("SELECT severity FROM events WHERE subject = :s ORDER BY id DESC LIMIT 1"), {"s": f"experiment:{exp}"}
            )
        ).scalar_one()
        assert sev == "warning"


async def test_one_open_experiment_per_pattern_and_unknown_ids(migrated_db) -> None:
    async with migrated_db.engine.begin() as conn:
        p = await make_pattern(conn)
        a = await manage.create_enhancement(conn, p, "parameters", {"temperature": 0.2}, "", "operator")
        b = await manage.create_enhancement(conn, p, "parameters", {"top_p": 0.9}, "", "operator")
        first = await manage.start_experiment(conn, a, actor="x")
        await manage.pause_experiment(conn, first, actor="x")
        with pytest.raises(ValueError, match="already has experiment"):
            await manage.start_experiment(conn, b, actor="x")
        await manage.rollback_experiment(conn, first, actor="x", reason="no")
        second = await manage.start_experiment(conn, b, actor="x")
        assert (await manage.get_experiment(conn, second))["status"] == "running"
        assert (await manage.get_enhancement(conn, a))["status"] == "rolled_back"
        for call in (
            manage.pause_experiment(conn, 424242, actor="x"),
            manage.experiment_history(conn, 424242),
            manage.start_experiment(conn, 424242, actor="x"),
            manage.rollback_experiment(conn, 424242, actor="x"),
        ):
            with pytest.raises(LookupError):
                await call
        with pytest.raises(ValueError):
            await manage.start_experiment(conn, b, actor="x", control_weight=1.0)


async def test_concurrent_starts_on_one_pattern_leave_one_experiment(migrated_db) -> None:
    engine = migrated_db.engine
    async with engine.begin() as conn:
        p = await make_pattern(conn)
        ids = [await manage.create_enhancement(conn, p, "parameters", {"max_tokens": 100 + i}, "", "operator") for i in range(4)]

    async def start(enhancement_id: int) -> bool:
        try:
            async with engine.begin() as conn:
                await manage.start_experiment(conn, enhancement_id, actor="race")
            return True
        except ValueError:
            return False

    results = await asyncio.gather(*(start(i) for i in ids))
    assert sum(results) == 1
    async with engine.connect() as conn:
        assert len(await manage.list_experiments(conn, status="running")) == 1


async def test_reject_candidate(migrated_db) -> None:
    async with migrated_db.engine.begin() as conn:
        p = await make_pattern(conn)
        a = await manage.create_enhancement(conn, p, "parameters", {"temperature": 0.2}, "", "operator")
        await manage.reject_enhancement(conn, a, actor="alice", reason="off-brand")
        assert (await manage.get_enhancement(conn, a))["status"] == "rejected"
        with pytest.raises(ValueError):
            await manage.reject_enhancement(conn, a, actor="alice")
        with pytest.raises(ValueError):
            await manage.start_experiment(conn, a, actor="alice")
