"""The lift report of promoted enhancements (intelligence/enhance/lift.py), real Postgres."""

from __future__ import annotations

import math

import pytest

from intelligence.enhance import manage
from intelligence.enhance.evaluator import ExperimentEvaluator
from intelligence.enhance.lift import experiment_lift, lift_report, overall_lift

from .test_enhance_support import Ex, arm_rows, make_pattern, write


async def _promoted(engine, label: str, control: tuple[int, int], variant: tuple[int, int], traffic: int) -> tuple[int, int]:
    """A pattern whose experiment the evaluator promotes (automatic mode), plus ``traffic`` requests."""
    async with engine.begin() as conn:
        p = await make_pattern(conn, label)
        enh = await manage.create_enhancement(conn, p, "system_prompt", {"text": f"Rule for {label}."}, "", "operator")
        exp = await manage.start_experiment(conn, enh, actor="test")
        await write(conn, arm_rows(p, exp, enh, "control", *control) + arm_rows(p, exp, enh, "variant", *variant))
        if traffic:
            await write(conn, [Ex(p) for _ in range(traffic)])
    assert (await ExperimentEvaluator(engine, min_samples=30, auto_approve=True).tick())["promoted"] == [exp]
    return p, exp


async def test_per_pattern_and_requests_weighted_overall_lift(migrated_db) -> None:
    engine = migrated_db.engine
    p1, x1 = await _promoted(engine, "invoices", (200, 60), (200, 120), traffic=600)  # 0.30 -> 0.60: +100%
    p2, x2 = await _promoted(engine, "tickets", (200, 100), (200, 150), traffic=200)  # 0.50 -> 0.75: +50%
    async with engine.connect() as conn:
        report = await lift_report(conn)
    by_pattern = {i["pattern_id"]: i for i in report["per_pattern"]}
    assert set(by_pattern) == {p1, p2} and len(report["promoted"]) == 2
    a, b = by_pattern[p1], by_pattern[p2]
    assert a["lift"] == pytest.approx(1.0) and b["lift"] == pytest.approx(0.5)
    assert a["ci"][0] < 1.0 < a["ci"][1] and a["method"] == "unit" and a["experiment_id"] == x1
    # weights: each pattern's requests in the window (its experiment's exposures plus the other traffic)
    assert (a["requests"], b["requests"]) == (1000, 600)
    overall = report["overall"]
    assert overall["lift"] == pytest.approx((1000 * 1.0 + 600 * 0.5) / 1600)
    se = math.sqrt(1000**2 * a["variance"] + 600**2 * b["variance"]) / 1600
    assert overall["ci"][0] == pytest.approx(overall["lift"] - 1.959964 * se, rel=1e-4)
    assert overall["target"] == 0.30 and overall["target_status"] == "met" and overall["weights"] == "requests"


async def test_a_retired_enhancement_is_listed_but_not_current(migrated_db) -> None:
    engine = migrated_db.engine
    p, first = await _promoted(engine, "invoices", (200, 60), (200, 120), traffic=0)
    async with engine.begin() as conn:
        enh = await manage.create_enhancement(conn, p, "system_prompt", {"text": "A newer rule."}, "", "operator")
        second = await manage.start_experiment(conn, enh, actor="test")
        await manage.promote_experiment(conn, second, actor="ops")  # no data: an admin's call
    async with engine.connect() as conn:
        report = await lift_report(conn)
    assert [i["experiment_id"] for i in report["promoted"]] == [second, first]
    current = report["per_pattern"]
    assert [i["experiment_id"] for i in current] == [second] and current[0]["lift"] is None
    assert report["overall"]["lift"] is None and report["overall"]["target_status"] == "no data yet"


def test_experiment_lift_without_data_legacy_stats_and_target_status() -> None:
    assert experiment_lift({}) == {} and experiment_lift({"arms": {"control": {"n": 0}, "variant": {"n": 0}}}) == {}
    legacy = experiment_lift({"arms": {"control": {"n": 100, "rate": 0.4}, "variant": {"n": 100, "rate": 0.6}}})
    assert legacy["method"] == "legacy" and legacy["lift"] == pytest.approx(0.5) and legacy["ci"][0] < 0.5 < legacy["ci"][1]
    item = {"lift": 0.2, "variance": 0.0001, "requests": 10}
    assert overall_lift([item])["target_status"] == "missed"
    assert overall_lift([{**item, "variance": 0.04}])["target_status"] == "undetermined"
    # no traffic in the window: the experiments' exposures weight instead
    fallback = overall_lift([{**item, "requests": 0, "exposures": 50}, {"lift": 0.6, "variance": 0.0001, "exposures": 150}])
    assert fallback["weights"] == "exposures" and fallback["lift"] == pytest.approx((50 * 0.2 + 150 * 0.6) / 200)
