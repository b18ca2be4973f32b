"""Per-arm outcomes from the pattern-memory signals, and the evaluator acting on them (real Postgres)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, text

from intelligence.enhance import manage
from intelligence.enhance.evaluator import ExperimentEvaluator
from intelligence.enhance.outcomes import experiment_outcomes

from .test_enhance_support import Ex, arm_rows, make_pattern, write


async def _experiment(conn, *, min_effect: float = 0.05) -> tuple[int, int, int]:
    p = await make_pattern(conn)
    enh = await manage.create_enhancement(conn, p, "system_prompt", {"text": "Finish every answer."}, "", "operator")
    exp = await manage.start_experiment(conn, enh, actor="test", min_effect=min_effect)
    return p, enh, exp


async def test_outcomes_count_successes_errors_and_means_per_arm_in_one_query(migrated_db) -> None:
    engine = migrated_db.engine
    async with engine.begin() as conn:
        p, enh, exp = await _experiment(conn)
        other_p, other_enh, other_exp = await _experiment(conn)
        old = datetime.now(UTC) - timedelta(hours=1)
        c = dict(experiment=exp, enhancement=enh, arm="control")
        v = dict(experiment=exp, enhancement=enh, arm="variant")
        await write(
            conn,
            [
                Ex(p, ok=True, **c, total_tokens=100, latency_ms=400),  # success
                Ex(p, ok=True, **c, total_tokens=300, latency_ms=600),  # success
                Ex(p, failing_signal="tool_args", **c),  # failing signal
                Ex(p, failing_signal="retry", **c),  # retried
                Ex(p, feedback=("down", None), **c),  # thumbs down
                Ex(p, status=500, error="upstream 500", failing_signal="status", **c),  # error
                Ex(p, processed=False, at=old, **c),  # the worker skipped it: failure
                Ex(p, processed=False, at=datetime.now(UTC), **c),  # pending: not counted yet
                Ex(p, ok=True, feedback=(None, 0.9), **v, model="no-such-model"),  # good score: success
                Ex(p, feedback=(None, 0.2), **v, model="no-such-model"),  # low score
                Ex(p, ok=True, arm="control", experiment=other_exp, enhancement=other_enh),  # another experiment
                Ex(p, ok=True),  # not exposed at all
            ],
        )
    async with engine.connect() as conn:
        statements: list[str] = []
        sync_engine = engine.sync_engine

        def count(conn_, cursor, statement, *args):
            statements.append(statement)

        event.listen(sync_engine, "before_cursor_execute", count)
        try:
            o = await experiment_outcomes(conn, exp)
        finally:
            event.remove(sync_engine, "before_cursor_execute", count)
    assert len(statements) == 1
    assert (o.control.n, o.control.successes, o.control.errors) == (7, 2, 1)
    # one unit (session) per exposure here; the pending exposure's session has nothing counted yet
    assert o.control.units == 7 and o.control.success_m is not None and o.control.success_m.y == 2
    assert o.control.error_m is not None and o.control.error_m.y == 1
    assert o.pending == {"control": 1}
    assert (o.variant.n, o.variant.successes, o.variant.errors) == (2, 1, 0)
    assert o.control.mean_tokens == pytest.approx((100 + 300 + 6 * 100) / 8)
    assert o.control.mean_latency_ms == pytest.approx((400 + 600 + 6 * 500) / 8)
    assert o.control.mean_cost_usd is not None and o.control.mean_cost_usd > 0  # gpt-4o-mini is priced
    assert o.variant.mean_cost_usd is None  # an unpriced model: no cost figure rather than a wrong one


async def test_the_index_serves_the_exposure_lookup(migrated_db) -> None:
    async with migrated_db.engine.begin() as conn:
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            (
                await conn.execute(
                    text(
                        "EXPLAIN SELECT 1 FROM exchanges e WHERE e.flags ? 'enhancement' "
                        "AND (e.flags -> 'enhancement' ->> 'experiment')::bigint = 5"
                    )
                )
            ).scalars()
        )
    assert "ix_exchanges_experiment" in plan


async def test_evaluator_asks_an_admin_to_promote_a_clear_winner_with_figures(migrated_db, monkeypatch) -> None:
    monkeypatch.delenv("LLMPROXY_EXPERIMENTS_AUTO", raising=False)
    engine = migrated_db.engine
    async with engine.begin() as conn:
        p, enh, exp = await _experiment(conn)
        await write(conn, arm_rows(p, exp, enh, "control", 120, 48) + arm_rows(p, exp, enh, "variant", 120, 100))
    evaluator = ExperimentEvaluator(engine, min_samples=30, interval_s=0.05)
    summary = await evaluator.tick()
    assert summary["awaiting_approval"] == [exp] and summary["promoted"] == [] and summary["errors"] == 0
    async with engine.connect() as conn:
        row = await manage.get_experiment(conn, exp)
        assert row["status"] == "running" and row["awaiting"] == "promote" and row["enhancement"]["status"] == "testing"
        stats = row["stats"]
        assert stats["decision"] == "promote" and stats["p_value"] < 0.05 and stats["p_better"] < 0.05
        assert stats["approval"] == "admin" and stats["method_id"] == "msprt-cluster-v1"
        assert stats["arms"]["control"]["n"] == 120 and stats["arms"]["control"]["units"] == 120
        assert stats["arms"]["variant"]["rate"] == pytest.approx(100 / 120)
        assert stats["effect"] == pytest.approx(100 / 120 - 0.4) and stats["ci"][0] > 0
        assert stats["relative_lift"]["estimate"] == pytest.approx((100 / 120) / 0.4 - 1)
        assert "control 48/120 (120 units), variant 100/120" in row["awaiting_reason"]
    assert (await evaluator.tick())["awaiting_approval"] == [exp]  # still waiting; asked only once
    async with engine.begin() as conn:
        history = [h["action"] for h in await manage.experiment_history(conn, exp)]
        assert history == ["started", "promotion_requested"]
        assert await manage.approve_experiment(conn, exp, actor="admin-ann") == "promote"
    async with engine.connect() as conn:
        row = await manage.get_experiment(conn, exp)
        assert row["status"] == "promoted" and row["enhancement"]["status"] == "active" and row["awaiting"] is None
        assert "control 48/120" in row["decision_reason"]
        history = await manage.experiment_history(conn, exp)
        assert [(h["action"], h["actor"]) for h in history[-2:]] == [("approved", "admin-ann"), ("promoted", "admin-ann")]
        assert history[-2]["detail"]["approved"] == "promote" and history[-2]["detail"]["mode"] == "admin"
        audited = (
            (
                await conn.execute(
                    text("SELECT actor FROM audit_log WHERE subject = :s AND payload ->> 'action' = 'approved'"),
                    {"s": f"experiment:{exp}"},
                )
            )
            .scalars()
            .all()
        )
        assert audited == ["admin-ann"]
    assert (await evaluator.tick())["checked"] == 0  # decided experiments are left alone


async def test_in_automatic_mode_the_evaluator_promotes_and_records_the_approval(migrated_db, monkeypatch) -> None:
    monkeypatch.setenv("LLMPROXY_EXPERIMENTS_AUTO", "1")
    engine = migrated_db.engine
    async with engine.begin() as conn:
        p, enh, exp = await _experiment(conn)
        await write(conn, arm_rows(p, exp, enh, "control", 120, 48) + arm_rows(p, exp, enh, "variant", 120, 100))
    assert (await ExperimentEvaluator(engine, min_samples=30).tick())["promoted"] == [exp]
    async with engine.connect() as conn:
        row = await manage.get_experiment(conn, exp)
        assert row["status"] == "promoted" and row["stats"]["approval"] == "auto"
        history = await manage.experiment_history(conn, exp)
        assert [(h["action"], h["actor"]) for h in history] == [
            ("started", "test"),
            ("promotion_requested", "evaluator"),
            ("approved", "evaluator"),
            ("promoted", "evaluator"),
        ]
        assert history[2]["detail"]["mode"] == "auto"


async def test_correlated_sessions_are_analysed_as_units(migrated_db) -> None:
    """The same 200 vs 200 exposures (0.5 vs 0.6): as independent requests the evaluator would act;
    as 20 sessions of 10 that succeed or fail together it must not."""
    engine = migrated_db.engine
    async with engine.begin() as conn:
        p, enh, exp = await _experiment(conn)
        await write(
            conn,
            arm_rows(p, exp, enh, "control", 400, 200, per_session=10)
            + arm_rows(p, exp, enh, "variant", 400, 260, per_session=10),
        )
        q, enh2, flat = await _experiment(conn)
        await write(conn, arm_rows(q, flat, enh2, "control", 400, 200) + arm_rows(q, flat, enh2, "variant", 400, 260))
    summary = await ExperimentEvaluator(engine, min_samples=30, auto_approve=True).tick()
    assert summary["promoted"] == [flat] and exp in summary["continuing"]
    async with engine.connect() as conn:
        stats = (await manage.get_experiment(conn, exp))["stats"]
    assert (stats["arms"]["control"]["units"], stats["arms"]["variant"]["units"]) == (40, 40)
    assert stats["effect"] == pytest.approx(0.15) and stats["p_value"] > 0.05
    assert stats["reason"].startswith("not yet significant") and "(40 units)" in stats["reason"]


async def test_assign_by_client_makes_the_client_the_unit(migrated_db) -> None:
    engine = migrated_db.engine
    async with engine.begin() as conn:
        p = await make_pattern(conn)
        enh = await manage.create_enhancement(conn, p, "system_prompt", {"text": "Finish every answer."}, "", "operator")
        exp = await manage.start_experiment(conn, enh, actor="test", assign_by="client")
        rows = []
        for i in range(60):  # 6 clients per arm, 10 exposures each, in 60 different sessions
            for arm in ("control", "variant"):
                rows.append(Ex(p, ok=i % 2 == 0, experiment=exp, enhancement=enh, arm=arm, client=f"key-{arm}-{i % 6}"))
        await write(conn, rows)
    async with engine.connect() as conn:
        o = await experiment_outcomes(conn, exp)
    assert (o.control.units, o.variant.units) == (6, 6) and o.control.n == 60


async def test_evaluator_rolls_back_a_loser_and_trips_the_cost_guard(migrated_db) -> None:
    engine = migrated_db.engine
    async with engine.begin() as conn:
        p, enh, worse = await _experiment(conn)
        await write(conn, arm_rows(p, worse, enh, "control", 100, 85) + arm_rows(p, worse, enh, "variant", 100, 40))
        q, enh2, costly = await _experiment(conn)
        await write(
            conn,
            arm_rows(q, costly, enh2, "control", 60, 30, total_tokens=100)
            + arm_rows(q, costly, enh2, "variant", 60, 30, total_tokens=400, input_tokens=320, output_tokens=80),
        )
    summary = await ExperimentEvaluator(engine).tick()  # roll-backs need no approval
    assert sorted(summary["rolled_back"]) == sorted([worse, costly])
    async with engine.connect() as conn:
        assert (await manage.get_experiment(conn, worse))["decision_reason"].startswith("significantly worse")
        row = await manage.get_experiment(conn, costly)
        assert row["decision_reason"].startswith("guard rail: mean cost_usd up +300%, significantly more than 50%")
        assert row["stats"]["guard"]["cost_metric"] == "cost_usd" and row["stats"]["cost_p_value"] < 0.05
        assert row["enhancement"]["status"] == "rolled_back"
        sev = (
            await conn.execute(
                text("SELECT severity FROM events WHERE subject = :s ORDER BY id DESC LIMIT 1"), {"s": f"experiment:{costly}"}
            )
        ).scalar_one()
        assert sev == "warning"


async def test_evaluator_keeps_collecting_and_carries_the_running_minimum(migrated_db) -> None:
    engine = migrated_db.engine
    async with engine.begin() as conn:
        p, enh, exp = await _experiment(conn)
        await write(conn, arm_rows(p, exp, enh, "control", 10, 5) + arm_rows(p, exp, enh, "variant", 10, 9))
    evaluator = ExperimentEvaluator(engine, min_samples=30, auto_approve=True)
    assert (await evaluator.tick())["continuing"] == [exp]
    async with engine.begin() as conn:
        row = await manage.get_experiment(conn, exp)
        assert row["status"] == "running" and row["stats"]["reason"].startswith("collecting: 10 of 30 units")
        # a previous check that already saw strong evidence is not forgotten by a weaker one
        await manage.save_stats(conn, exp, {**row["stats"], "p_value": 0.01, "p_better": 0.01})
        await write(conn, arm_rows(p, exp, enh, "control", 30, 15) + arm_rows(p, exp, enh, "variant", 30, 25))
    assert (await evaluator.tick())["promoted"] == [exp]
    async with engine.connect() as conn:
        assert (await manage.get_experiment(conn, exp))["stats"]["p_better"] == 0.01


async def test_minima_of_the_old_per_request_method_are_not_carried(migrated_db) -> None:
    engine = migrated_db.engine
    async with engine.begin() as conn:
        p, enh, exp = await _experiment(conn)
        await write(conn, arm_rows(p, exp, enh, "control", 40, 20) + arm_rows(p, exp, enh, "variant", 40, 21))
        await manage.save_stats(conn, exp, {"p_value": 0.001, "decision": "continue"})  # stored before this version
    assert (await ExperimentEvaluator(engine, min_samples=30, auto_approve=True).tick())["continuing"] == [exp]
    async with engine.connect() as conn:
        assert (await manage.get_experiment(conn, exp))["stats"]["p_value"] > 0.05


async def test_paused_experiments_are_not_decided_and_run_stops(migrated_db) -> None:
    engine = migrated_db.engine
    async with engine.begin() as conn:
        p, enh, exp = await _experiment(conn)
        await write(conn, arm_rows(p, exp, enh, "control", 100, 20) + arm_rows(p, exp, enh, "variant", 100, 95))
        await manage.pause_experiment(conn, exp, actor="op")
    evaluator = ExperimentEvaluator(engine, interval_s=0.05, auto_approve=True)
    stop = asyncio.Event()
    task = asyncio.create_task(evaluator.run(stop))
    await asyncio.sleep(0.3)
    async with engine.connect() as conn:
        assert (await manage.get_experiment(conn, exp))["status"] == "paused"
    async with engine.begin() as conn:
        await manage.resume_experiment(conn, exp, actor="op")
    for _ in range(50):
        await asyncio.sleep(0.05)
        async with engine.connect() as conn:
            if (await manage.get_experiment(conn, exp))["status"] == "promoted":
                break
    stop.set()
    await asyncio.wait_for(task, 2)
    async with engine.connect() as conn:
        assert (await manage.get_experiment(conn, exp))["status"] == "promoted"
