"""Effectiveness of one enhancement over its experiment and its active period (real Postgres): per-arm
totals and daily/hourly series with Wilson intervals, and the variant's deltas against control."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, text

from intelligence.enhance import manage
from intelligence.enhance.effectiveness import enhancement_effectiveness, newcombe_interval
from intelligence.enhance.outcomes import experiment_outcomes
from intelligence.enhance.stats import wilson_interval
from intelligence.pricing import load_prices

from .test_enhance_support import Ex, write

MIDNIGHT = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
DAYS = [MIDNIGHT - timedelta(days=d) for d in (4, 3, 2)]  # the experiment ran over these three days
ACTIVE_DAY = MIDNIGHT - timedelta(days=1)
PROMOTED_AT = DAYS[2] + timedelta(hours=18)
CONTROL_OK = (6, 5, 4)  # successes of 10 control exposures per day
VARIANT_OK = (8, 9, 7)  # of 10 variant exposures per day
CONTROL = dict(total_tokens=100, input_tokens=80, output_tokens=20)
VARIANT = dict(total_tokens=150, input_tokens=120, output_tokens=30, latency_ms=300.0)


def _control_day(p: int, exp: int, enh: int, day: datetime, ok: int) -> list[Ex]:
    # nine quick answers and one slow one a day: the mean (950 ms) and the median (500 ms) differ
    return [
        Ex(
            p,
            ok=i < ok,
            experiment=exp,
            enhancement=enh,
            arm="control",
            at=day + timedelta(hours=12, minutes=i),
            latency_ms=5000.0 if i == 9 else 500.0,
            **CONTROL,
        )
        for i in range(10)
    ]


def _variant_day(p: int, exp: int, enh: int, day: datetime, ok: int) -> list[Ex]:
    return [
        Ex(p, ok=i < ok, experiment=exp, enhancement=enh, arm="variant", at=day + timedelta(hours=13, minutes=i), **VARIANT)
        for i in range(10)
    ]


async def _enhancement(conn) -> tuple[int, int, int]:
    from .test_enhance_support import make_pattern

    p = await make_pattern(conn)
    enh = await manage.create_enhancement(conn, p, "system_prompt", {"text": "Answer in JSON."}, "", "operator")
    exp = await manage.start_experiment(conn, enh, actor="test")
    return p, enh, exp


async def _seed_promoted(engine) -> dict[str, int]:
    """Three days of experiment, a promotion at 18:00 on the third, then a day of active traffic."""
    async with engine.begin() as conn:
        p, enh, exp = await _enhancement(conn)
        other_p, other_enh, other_exp = await _enhancement(conn)
        items: list[Ex] = []
        for day, c_ok, v_ok in zip(DAYS, CONTROL_OK, VARIANT_OK):
            items += _control_day(p, exp, enh, day, c_ok) + _variant_day(p, exp, enh, day, v_ok)
        active = dict(enhancement=enh, arm="active", **VARIANT)
        items += [Ex(p, ok=i < 17, at=ACTIVE_DAY + timedelta(hours=9, minutes=i), **active) for i in range(20)]
        items += [
            Ex(p, ok=True, at=DAYS[2] + timedelta(hours=11), **active),  # before the promotion: not the active period
            Ex(p, processed=False, at=datetime.now(UTC), **active),  # the worker has not seen it yet: pending
            # exposures of another enhancement's experiment, and traffic that was not exposed at all
            Ex(other_p, ok=True, experiment=other_exp, enhancement=other_enh, arm="control", at=DAYS[1]),
            Ex(p, ok=False, at=DAYS[1]),
        ]
        await write(conn, items)
        # stacked under another active enhancement of the pattern: still an exposure of this one
        stacked = await write(
            conn,
            [
                Ex(other_p, ok=True, enhancement=other_enh, arm="active", at=ACTIVE_DAY + timedelta(hours=10), **VARIANT)
                for _ in range(2)
            ],
        )
        await conn.execute(
            text(
                "UPDATE exchanges SET flags = jsonb_set(flags, '{enhancement,also_active}', "
                "to_jsonb(ARRAY[CAST(:enh AS bigint)])) WHERE request_id = ANY(:ids)"
            ),
            {"enh": enh, "ids": stacked},
        )
        await manage.promote_experiment(conn, exp, actor="test", reason="better")
        await conn.execute(
            text("UPDATE experiments SET started_at = :s, decided_at = :d WHERE id = :id"),
            {"s": DAYS[0], "d": PROMOTED_AT, "id": exp},
        )
    return {"pattern": p, "enhancement": enh, "experiment": exp, "other_enhancement": other_enh}


async def test_promoted_enhancement_by_arm_and_day_with_deltas_in_two_statements(migrated_db) -> None:
    engine = migrated_db.engine
    ids = await _seed_promoted(engine)
    statements: list[str] = []

    def count(conn_, cursor, statement, *args):
        statements.append(statement)

    async with engine.connect() as conn:
        event.listen(engine.sync_engine, "before_cursor_execute", count)
        try:
            eff = await enhancement_effectiveness(conn, ids["enhancement"])
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", count)
        outcomes = await experiment_outcomes(conn, ids["experiment"])
    assert len(statements) == 2
    assert eff["status"] == "active" and eff["bucket"] == "day"
    assert eff["active_from"] == PROMOTED_AT.isoformat()

    arms = eff["arms"]
    assert list(arms) == ["control", "variant", "active"]
    assert (arms["control"]["n"], arms["control"]["successes"]) == (30, 15)
    assert (arms["variant"]["n"], arms["variant"]["successes"]) == (30, 24)
    # 20 + 2 stacked; the one before the promotion is out, the pending one is counted apart
    assert (arms["active"]["n"], arms["active"]["successes"], arms["active"]["pending"]) == (22, 19, 1)
    assert arms["variant"]["rate"] == pytest.approx(0.8)
    assert (arms["variant"]["ci_low"], arms["variant"]["ci_high"]) == pytest.approx(wilson_interval(24, 30))
    assert arms["control"]["mean_latency_ms"] == pytest.approx(950.0)
    assert arms["control"]["p50_latency_ms"] == pytest.approx(500.0)

    # the experiment's own arms are exactly what the evaluator reads (one definition of success)
    per_exp = eff["experiments"][0]
    assert per_exp["id"] == ids["experiment"] and per_exp["status"] == "promoted"
    for name, o in (("control", outcomes.control), ("variant", outcomes.variant)):
        a = per_exp["arms"][name]
        assert (a["n"], a["successes"], a["errors"]) == (o.n, o.successes, o.errors)
        assert (a["mean_tokens"], a["mean_latency_ms"]) == pytest.approx((o.mean_tokens, o.mean_latency_ms))
        assert a["mean_cost_usd"] == pytest.approx(o.mean_cost_usd)

    series = {(s["arm"], s["bucket"]): s for s in eff["series"]}
    assert sorted({b for _, b in series}) == [d.isoformat() for d in (*DAYS, ACTIVE_DAY, MIDNIGHT)]
    today = series[("active", MIDNIGHT.isoformat())]  # only the pending exposure: no rate yet, not a 0 %
    assert (today["n"], today["pending"], today["rate"], today["ci_low"]) == (0, 1, None, None)
    for day, c_ok, v_ok in zip(DAYS, CONTROL_OK, VARIANT_OK):
        c, v = series[("control", day.isoformat())], series[("variant", day.isoformat())]
        assert (c["n"], c["successes"], v["n"], v["successes"]) == (10, c_ok, 10, v_ok)
        assert (c["ci_low"], c["ci_high"]) == pytest.approx(wilson_interval(c_ok, 10))
        assert (c["mean_latency_ms"], c["p50_latency_ms"]) == pytest.approx((950.0, 500.0))
        assert v["mean_tokens"] == pytest.approx(150.0)
    assert ("active", DAYS[2].isoformat()) not in series
    day_active = series[("active", ACTIVE_DAY.isoformat())]
    assert (day_active["n"], day_active["successes"], day_active["rate"]) == (22, 19, pytest.approx(19 / 22))

    d = eff["deltas"]["variant_vs_control"]
    assert (d["baseline"], d["treatment"]) == ("control", "variant")
    assert d["success_rate"]["absolute"] == pytest.approx(0.8 - 0.5)
    lo, hi = d["success_rate"]["ci"]
    assert (lo, hi) == pytest.approx(newcombe_interval(15, 30, 24, 30)) and lo < 0.3 < hi and lo > 0
    assert (d["tokens"]["absolute"], d["tokens"]["relative"]) == pytest.approx((50.0, 0.5))
    assert (d["latency_ms"]["absolute"], d["p50_latency_ms"]["absolute"]) == pytest.approx((300 - 950, 300 - 500))
    prices = load_prices()
    per_control = prices.cost("gpt-4o-mini", "chat", input_tokens=80, output_tokens=20, on=DAYS[0])
    per_variant = prices.cost("gpt-4o-mini", "chat", input_tokens=120, output_tokens=30, on=DAYS[0])
    assert per_control and per_variant
    assert d["cost_usd"]["absolute"] == pytest.approx(per_variant - per_control)
    assert d["cost_usd"]["relative"] == pytest.approx(per_variant / per_control - 1)
    assert eff["deltas"]["active_vs_control"]["success_rate"]["absolute"] == pytest.approx(19 / 22 - 0.5)


async def test_hourly_buckets_since_and_unpriced_cost(migrated_db) -> None:
    engine = migrated_db.engine
    start = MIDNIGHT - timedelta(days=1) + timedelta(hours=8)
    async with engine.begin() as conn:
        p, enh, exp = await _enhancement(conn)
        arm = dict(experiment=exp, enhancement=enh)
        await write(
            conn,
            [
                Ex(p, ok=True, arm="control", at=start + timedelta(minutes=5), **arm),
                Ex(p, ok=False, arm="control", at=start + timedelta(minutes=50), **arm),
                Ex(p, ok=True, arm="variant", at=start + timedelta(hours=1, minutes=1), model="no-such-model", **arm),
                Ex(p, ok=True, arm="variant", at=start + timedelta(hours=2), **arm),
                Ex(p, ok=True, arm="variant", at=start - timedelta(hours=3), **arm),  # before `since`
            ],
        )
    async with engine.connect() as conn:
        eff = await enhancement_effectiveness(conn, enh, bucket="hour", since=start)
    assert eff["active_from"] is None and eff["deltas"]["active_vs_control"] is None
    buckets = [(s["arm"], s["bucket"], s["n"], s["successes"]) for s in eff["series"]]
    assert buckets == [
        ("control", start.isoformat(), 2, 1),
        ("variant", (start + timedelta(hours=1)).isoformat(), 1, 1),
        ("variant", (start + timedelta(hours=2)).isoformat(), 1, 1),
    ]
    assert eff["arms"]["variant"]["n"] == 2
    # one variant exposure's model has no price: no cost figure rather than a wrong one
    assert eff["arms"]["variant"]["mean_cost_usd"] is None
    assert eff["deltas"]["variant_vs_control"]["cost_usd"] is None
    assert eff["deltas"]["variant_vs_control"]["tokens"]["absolute"] == pytest.approx(0.0)


async def test_unknown_enhancement_and_bad_bucket_are_refused(migrated_db) -> None:
    async with migrated_db.engine.connect() as conn:
        with pytest.raises(LookupError):
            await enhancement_effectiveness(conn, 424242)
        with pytest.raises(ValueError):
            await enhancement_effectiveness(conn, 1, bucket="week")  # type: ignore[arg-type]


async def test_the_indexes_serve_both_periods(migrated_db) -> None:
    from intelligence.enhance.effectiveness import _QUERIES

    async with migrated_db.engine.begin() as conn:
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            (
                await conn.execute(
                    text("EXPLAIN " + _QUERIES[(True, False)].text),
                    {
                        "enhancement": 1,
                        "experiments": [1, 2],
                        "bucket": "day",
                        "grace": 600.0,
                        "negative": 0.5,
                        "active_from": MIDNIGHT,
                    },
                )
            ).scalars()
        )
    # the experiment's arms by the expression index; nothing reads every exchange (on an empty table the
    # planner picks the small partial index for the active period too, in production the start-time one)
    lines = plan.splitlines()
    at = next(i for i, line in enumerate(lines) if "Index Scan using ix_exchanges_experiment on exchanges e " in line)
    assert "Index Cond" in lines[at + 1] and "= ANY" in lines[at + 1], plan
    assert "Seq Scan on exchanges" not in plan, plan
