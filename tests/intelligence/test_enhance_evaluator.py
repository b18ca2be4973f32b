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


async def test_evaluator_promotes_a_clear_winner_with_figures(migrated_db) -> None:
    engine = migrated_db.engine
    async with engine.begin() as conn:
        p, enh, exp = await _experiment(conn)
        await write(conn, arm_rows(p, exp, enh, "control", 120, 48) + arm_rows(p, exp, enh, "variant", 120, 100))
    evaluator = ExperimentEvaluator(engine, min_samples=30, interval_s=0.05)
    summary = await evaluator.tick()
    assert summary["promoted"] == [exp] and summary["errors"] == 0
    async with engine.connect() as conn:
        row = await manage.get_experiment(conn, exp)
        assert row["status"] == "promoted" and row["enhancement"]["status"] == "active"
        stats = row["stats"]
        assert stats["decision"] == "promote" and stats["p_value"] < 0.05
        assert stats["arms"]["control"]["n"] == 120 and stats["arms"]["control"]["successes"] == 48
        assert stats["arms"]["variant"]["rate"] == pytest.approx(100 / 120)
        assert stats["effect"] == pytest.approx(100 / 120 - 0.4) and stats["ci"][0] > 0
        assert "control 48/120, variant 100/120" in row["decision_reason"]
        history = await manage.experiment_history(conn, exp)
        assert history[-1]["action"] == "promoted" and history[-1]["actor"] == "evaluator"
    assert (await evaluator.tick())["checked"] == 0  # decided experiments are left alone


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
    summary = await ExperimentEvaluator(engine).tick()
    assert sorted(summary["rolled_back"]) == sorted([worse, costly])
    async with engine.connect() as conn:
        assert (await manage.get_experiment(conn, worse))["decision_reason"].startswith("significantly worse")
        row = await manage.get_experiment(conn, costly)
        assert row["decision_reason"].startswith("guard rail: mean cost_usd up +300%")
        assert row["stats"]["guard"]["cost_metric"] == "cost_usd"
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
    evaluator = ExperimentEvaluator(engine, min_samples=30)
    assert (await evaluator.tick())["continuing"] == [exp]
    async with engine.begin() as conn:
        row = await manage.get_experiment(conn, exp)
        assert row["status"] == "running" and row["stats"]["reason"].startswith("collecting")
        # a previous check that already saw strong evidence is not forgotten by a weaker one
        await manage.save_stats(conn, exp, {**row["stats"], "p_value": 0.01})
        await write(conn, arm_rows(p, exp, enh, "control", 30, 15) + arm_rows(p, exp, enh, "variant", 30, 25))
    assert (await evaluator.tick())["promoted"] == [exp]
    async with engine.connect() as conn:
        assert (await manage.get_experiment(conn, exp))["stats"]["p_value"] == 0.01


async def test_paused_experiments_are_not_decided_and_run_stops(migrated_db) -> None:
    engine = migrated_db.engine
    async with engine.begin() as conn:
        p, enh, exp = await _experiment(conn)
        await write(conn, arm_rows(p, exp, enh, "control", 100, 20) + arm_rows(p, exp, enh, "variant", 100, 95))
        await manage.pause_experiment(conn, exp, actor="op")
    evaluator = ExperimentEvaluator(engine, interval_s=0.05)
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
