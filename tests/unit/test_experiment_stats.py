"""Experiment statistics (intelligence/enhance/stats.py) against known values, and their error rates
measured by the statistics-only simulator (intelligence/enhance/simulate_ab.py, `llmproxy simulate ab`).

Monte Carlo slack: a false-decision rate estimated from R runs is checked against the 99.9th
percentile of Binomial(R, alpha): if the true rate were exactly alpha, such a check would fail with
probability <= 0.1%. Seeds are fixed, so the figures are reproducible; they are printed with -s and
quoted in docs/experiments.md (`pytest tests/unit/test_experiment_stats.py -q -s`, ~30 s).
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from scipy.stats import binom

from intelligence.enhance.simulate_ab import ABConfig, binomial_upper, session_probabilities, simulate
from intelligence.enhance.stats import (
    ArmOutcome,
    Carry,
    Moments,
    Thresholds,
    always_valid_p,
    confidence_sequence,
    cs_half_width,
    decide,
    msprt_lambda,
    proportion_variance,
    ratio_variance,
    wilson_interval,
)

ALPHA = 0.05


def allowed_false_decisions(runs: int, alpha: float = ALPHA) -> int:
    """The 99.9th percentile of Binomial(runs, alpha): the Monte Carlo slack of a rate check."""
    return int(binom.ppf(0.999, runs, alpha))


def units(pairs: list[tuple[int, int]], repeat: int = 1) -> Moments:
    return Moments.from_units(pairs * repeat)


def arm(pairs: list[tuple[int, int]], repeat: int = 1, **kw) -> ArmOutcome:
    m = units(pairs, repeat)
    return ArmOutcome(n=int(m.n), successes=int(m.y), units=int(m.units), success_m=m, **kw)


# ------------------------------------------------------------------------------ the null, by simulation
@pytest.mark.parametrize("k", [1, 5, 10])
@pytest.mark.parametrize("sd", [0.0, 0.3])
def test_session_level_test_keeps_the_false_decision_rate_under_alpha(k: int, sd: float) -> None:
    runs = 1000
    r = simulate(ABConfig(runs=runs, requests_per_session=k, session_sd=sd, seed=100 + 10 * k + int(sd * 10), max_requests=1500))
    false = r["promoted"] + r["rolled_back"]
    print(
        f"A/A p=0.5 K={k} S={sd}: false decisions {false}/{runs} = {r['false_decision_rate']:.3f} "
        f"(95% upper {r['false_decision_upper_95']:.3f}; allowed {allowed_false_decisions(runs)}), {r['elapsed_s']} s"
    )
    assert false <= allowed_false_decisions(runs)
    assert r["decide_mismatches"] == 0 and r["decide_crosschecks"] >= false  # the real decide() agrees at every decision


def test_the_per_request_test_is_not_valid_for_correlated_sessions() -> None:
    """Why the unit is the session: the old per-request analysis of the same data declares a winner
    between identical arms far more often than alpha."""
    runs = 600
    cfg = dict(runs=runs, requests_per_session=10, session_sd=0.3, seed=7, max_requests=1500)
    old = simulate(ABConfig(**cfg, method="per-request"))
    new = simulate(ABConfig(**cfg))
    print(
        f"A/A K=10 S=0.3: per-request false decisions {old['false_decision_rate']:.3f}, session {new['false_decision_rate']:.3f}"
    )
    lower = binom.ppf(0.001, runs, 3 * ALPHA) / runs  # even a true rate of 3 alpha would rarely be this low
    assert old["false_decision_rate"] > max(3 * ALPHA, lower)
    assert new["false_decision_rate"] <= allowed_false_decisions(runs) / runs


def test_an_unequal_split_and_a_skewed_rate_keep_the_null() -> None:
    runs = 800
    r = simulate(
        ABConfig(
            runs=runs,
            control_rate=0.85,
            variant_rate=0.85,
            requests_per_session=5,
            session_sd=0.2,
            control_weight=0.7,
            seed=17,
            max_requests=1500,
        )
    )
    print(f"A/A p=0.85 weight 0.7 K=5 S=0.2: false decision rate {r['false_decision_rate']:.3f}")
    assert r["promoted"] + r["rolled_back"] <= allowed_false_decisions(runs)


# ------------------------------------------------------------------------------ power
def test_power_and_requests_to_decide_session_vs_per_request() -> None:
    runs = 400
    base = dict(runs=runs, control_rate=0.30, variant_rate=0.45, seed=21, max_requests=3000)
    k1 = simulate(ABConfig(**base, requests_per_session=1))
    k1_old = simulate(ABConfig(**base, requests_per_session=1, method="per-request"))
    k5 = simulate(ABConfig(**base, requests_per_session=5, session_sd=0.3))
    for name, r in (("session K=1", k1), ("per-request K=1", k1_old), ("session K=5 S=0.3", k5)):
        print(
            f"0.30 vs 0.45 {name}: power {r['power']:.3f} within 3000; median {r['median_requests_to_decide']:.0f}, "
            f"p90 {r['p90_requests_to_decide']:.0f} requests; wrong direction {r['wrong_direction']}"
        )
    assert k1["power"] >= 0.95 and k1_old["power"] >= 0.95 and k5["power"] >= 0.8
    assert k1["wrong_direction"] == 0 and k5["wrong_direction"] == 0
    # with independent requests the two analyses need about the same data ...
    assert (
        abs(k1["median_requests_to_decide"] - k1_old["median_requests_to_decide"]) <= 0.15 * k1_old["median_requests_to_decide"]
    )
    # ... with correlated sessions the valid one needs more (the price of not fooling itself)
    assert k5["median_requests_to_decide"] > 1.3 * k1["median_requests_to_decide"]


def test_session_probabilities_have_the_asked_mean_and_spread() -> None:
    p = session_probabilities(np.random.default_rng(3), 0.3, 0.2, (200_000,))
    assert p.mean() == pytest.approx(0.3, abs=0.003) and p.std() == pytest.approx(0.2, abs=0.003)
    assert (session_probabilities(np.random.default_rng(3), 0.3, 0.0, (10,)) == 0.3).all()
    with pytest.raises(ValueError):
        ABConfig(session_sd=0.6).validate()  # sd^2 >= p(1 - p): no Beta has that spread
    assert binomial_upper(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100))


# ------------------------------------------------------------------------------ the formulas
def test_cluster_robust_variance_known_values_and_the_independent_case() -> None:
    m = Moments.from_units([(1, 2), (2, 2), (0, 2)])  # rates 0.5, 1, 0; mean 0.5
    # sum (y_i - 0.5 n_i)^2 = 0 + 1 + 1 = 2; / n^2 = 36; * m/(m-1) = 1.5
    assert float(ratio_variance(m.units, m.n, m.y, m.yy, m.yn, m.nn)) == pytest.approx(2 / 36 * 1.5)
    # one exposure per unit: the binomial variance p(1-p)/n, times n/(n-1)
    ind = Moments.independent(30, 100)
    assert float(ratio_variance(ind.units, ind.n, ind.y, ind.yy, ind.yn, ind.nn)) == pytest.approx(0.3 * 0.7 / 100 * 100 / 99)
    # the floor: perfectly homogeneous units never count for less than independent exposures
    same = Moments.from_units([(2, 4)] * 50)
    assert float(ratio_variance(same.units, same.n, same.y, same.yy, same.yn, same.nn)) == 0.0
    floor = float(proportion_variance(same.units, same.n, same.y, same.yy, same.yn, same.nn))
    assert floor == pytest.approx((100.5 / 201) * (1 - 100.5 / 201) / 200)
    # vectorised: the same numbers element-wise
    got = proportion_variance(
        np.array([3.0, 100.0]),
        np.array([6.0, 100.0]),
        np.array([3.0, 30.0]),
        np.array([5.0, 30.0]),
        np.array([6.0, 30.0]),
        np.array([12.0, 100.0]),
    )
    assert got.shape == (2,) and got[1] == pytest.approx(0.3 * 0.7 / 100 * 100 / 99)


def test_correlated_units_widen_the_interval_and_weaken_the_evidence() -> None:
    """The same 600 vs 600 exposures with 55% vs 50% success: as 600 independent requests, or as
    60 sessions of 10 whose requests all agree (each session all-or-nothing)."""
    flat_c, flat_v = arm([(1, 1)] * 300 + [(0, 1)] * 300), arm([(1, 1)] * 330 + [(0, 1)] * 270)
    clus_c, clus_v = arm([(10, 10)] * 30 + [(0, 10)] * 30), arm([(10, 10)] * 33 + [(0, 10)] * 27)
    flat, clus = decide(flat_c, flat_v), decide(clus_c, clus_v)
    assert flat.effect == pytest.approx(0.05) and clus.effect == pytest.approx(0.05)
    assert clus.variance == pytest.approx(10 * flat.variance, rel=0.05)  # design effect 1 + (10 - 1) * ICC, ICC = 1
    assert clus.ci[1] - clus.ci[0] > 2.5 * (flat.ci[1] - flat.ci[0])
    assert clus.p_value > flat.p_value
    per_request = decide(clus_c, clus_v, Thresholds(method="per-request"))
    assert per_request.variance == pytest.approx(flat.variance, rel=0.05)  # the old analysis cannot see the sessions


def test_wilson_interval_known_values() -> None:
    # reference values (e.g. statsmodels proportion_confint(method="wilson"), Newcombe 1998 table I)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    lo90, hi90 = wilson_interval(5, 10, alpha=0.10)
    assert 0.2366 < lo90 < hi90 < 0.7634
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_msprt_lambda_closed_form_and_the_per_request_p_value_is_a_running_minimum() -> None:
    v, tau = 0.002, 0.1
    expected = math.sqrt(v / (v + tau**2)) * math.exp(tau**2 * 0.1**2 / (2 * v * (v + tau**2)))
    assert msprt_lambda(0.1, v, tau) == pytest.approx(expected)
    assert msprt_lambda(0.0, v, tau) < 1
    assert msprt_lambda(5.0, 1e-9, tau) == math.inf  # overflow is infinite evidence, not an error
    strong = always_valid_p(20, 100, 60, 100)
    assert strong < 1e-4
    assert always_valid_p(50, 100, 50, 100, previous=strong) == strong
    assert always_valid_p(3, 10, 9, 10) == 1.0
    # the confidence sequence's half-width inverts the same likelihood ratio: at theta0 = estimate +- half, 1/Lambda = alpha
    half = float(cs_half_width(v, 0.05, tau))
    assert 1 / msprt_lambda(half, v, tau) == pytest.approx(0.05, rel=1e-6)


def test_per_request_confidence_sequence_covers_the_truth_uniformly_over_time() -> None:
    rng = random.Random(31)
    runs, misses = 200, 0
    p_c, p_v = 0.5, 0.65
    for _ in range(runs):
        sc = nc = sv = nv = 0
        for _ in range(600):
            if rng.random() < 0.5:
                nc += 1
                sc += rng.random() < p_c
            else:
                nv += 1
                sv += rng.random() < p_v
            if nc >= 30 and nv >= 30:
                lo, hi = confidence_sequence(sc, nc, sv, nv)
                if not lo <= p_v - p_c <= hi:
                    misses += 1
                    break
    print(f"confidence sequence: ever missed the true difference in {misses / runs:.3f} of runs")
    assert misses <= allowed_false_decisions(runs)


# ------------------------------------------------------------------------------ decide
def test_decide_promotes_a_clear_winner_and_rolls_back_a_clear_loser() -> None:
    win = decide(arm([(2, 5), (1, 5)], 40), arm([(4, 5), (4, 5)], 40))  # 80 sessions of 5 per arm: 0.3 vs 0.8
    assert win.decision == "promote" and win.effect == pytest.approx(0.5)
    assert "always-valid p=" in win.reason and "80 units" in win.reason and win.arms["variant"]["units"] == 80
    assert win.arms["control"]["ci"] == pytest.approx(list(wilson_interval(120, 400)))
    assert win.relative_lift["estimate"] == pytest.approx(0.8 / 0.3 - 1)
    lo, hi = win.relative_lift["ci"]
    assert lo < 0.8 / 0.3 - 1 < hi and lo > 0
    lose = decide(arm([(4, 5)], 80), arm([(1, 5)], 80))
    assert lose.decision == "rollback" and lose.reason.startswith("significantly worse") and lose.p_worse < 0.05


def test_decide_says_no_data_yet_collects_and_continues() -> None:
    empty = decide(ArmOutcome(), ArmOutcome())
    assert empty.decision == "continue" and empty.reason == "no data yet" and empty.effect is None and empty.p_value == 1.0
    few = decide(arm([(0, 5)], 20), arm([(5, 5)], 20))  # 100 exposures but only 20 sessions per arm
    assert few.decision == "continue" and few.reason.startswith("collecting: 20 of 30 units")
    same = decide(arm([(5, 10)], 60), arm([(5, 10), (6, 10)], 30))
    assert same.decision == "continue" and same.p_value > 0.05
    small = decide(arm([(1, 2)], 25_000), arm([(26, 50)], 1000), Thresholds(min_effect=0.05))  # 0.50 vs 0.52
    assert small.p_better < 0.05 and small.decision == "continue" and "below min_effect" in small.reason


def test_carried_minima_keep_a_decision_and_a_method_change_starts_afresh() -> None:
    c, v = arm([(2, 4)], 40), arm([(2, 4)], 40)
    carried = decide(c, v, carry=Carry(p_value=0.01, p_better=0.01))  # once significantly better, always
    assert carried.p_better == 0.01 and carried.effect == 0.0
    assert carried.decision == "continue" and "below min_effect" in carried.reason  # ... but the effect is now 0
    assert decide(c, v, carry=Carry(p_worse=0.001)).decision == "rollback"
    stats = {"p_value": 0.01, "p_better": 0.01, "p_worse": 1.0, "method_id": "msprt-cluster-v1"}
    assert Carry.from_stats(stats).p_better == 0.01
    assert Carry.from_stats({**stats, "method_id": "old"}) == Carry()  # the old per-request minima are not reused
    assert Carry.from_stats({"p_value": "junk", "method_id": "msprt-cluster-v1"}).p_value == 1.0


def test_error_guard_rail_needs_an_increase_significantly_above_its_tolerance() -> None:
    ctrl = ArmOutcome(
        n=500, successes=300, units=100, success_m=units([(3, 5)], 100), errors=5, error_m=units([(0, 5)] * 95 + [(1, 5)] * 5)
    )
    bad = ArmOutcome(
        n=500,
        successes=350,
        units=100,
        success_m=units([(7, 10)] * 50),
        errors=120,
        error_m=units([(1, 5)] * 40 + [(2, 5)] * 40 + [(0, 5)] * 20),
    )
    ev = decide(ctrl, bad, Thresholds(max_error_increase=0.05))
    assert ev.decision == "rollback" and ev.reason.startswith("guard rail: error rate")
    assert ev.guard["error_increase"] == pytest.approx(120 / 500 - 5 / 500) and ev.error_p_value < 0.05
    # the same increase is within a 0.3 tolerance: no roll-back on errors
    assert not decide(ctrl, bad, Thresholds(max_error_increase=0.3)).reason.startswith("guard rail")
    # an increase above the tolerance but not significantly so (few sessions, noisy) does not trip either
    noisy = decide(
        ArmOutcome(n=60, successes=30, units=30, success_m=units([(1, 2)], 30), errors=0, error_m=units([(0, 2)], 30)),
        ArmOutcome(
            n=60, successes=30, units=30, success_m=units([(1, 2)], 30), errors=6, error_m=units([(2, 2)] * 3 + [(0, 2)] * 27)
        ),
    )
    assert noisy.guard["error_increase"] == pytest.approx(0.1) and noisy.decision == "continue" and noisy.error_p_value > 0.05


def _cost_arm(succ: int, cost_per_unit: list[float], tokens: float, exposures_per_unit: int = 4) -> ArmOutcome:
    n_units = len(cost_per_unit)
    n = n_units * exposures_per_unit
    return ArmOutcome(
        n=n,
        successes=succ,
        units=n_units,
        success_m=Moments.from_units([(succ / n_units, exposures_per_unit)] * n_units),
        mean_cost_usd=sum(cost_per_unit) / n,
        cost_m=Moments.from_units([(c, exposures_per_unit) for c in cost_per_unit]),
        mean_tokens=tokens,
        tokens_m=Moments.from_units([(tokens * exposures_per_unit, exposures_per_unit)] * n_units),
    )


def test_cost_guard_rail_is_an_always_valid_test_of_the_relative_increase() -> None:
    rng = np.random.default_rng(5)
    base = list(rng.normal(0.004, 0.0004, 60))  # USD per session of 4 requests
    control = _cost_arm(96, base, 100)
    pricey = _cost_arm(200, [c * 1.8 for c in rng.normal(0.004, 0.0004, 60)], 180)  # +80%, better success too
    ev = decide(control, pricey, Thresholds(max_cost_increase=0.5))
    assert ev.decision == "rollback" and ev.guard["cost_metric"] == "cost_usd" and ev.cost_p_value < 0.05
    assert ev.guard["cost_increase"] == pytest.approx(0.8, abs=0.05) and "significantly more than 50%" in ev.reason
    within = _cost_arm(200, [c * 1.3 for c in rng.normal(0.004, 0.0004, 60)], 130)  # +30%: within the tolerance
    assert decide(control, within, Thresholds(max_cost_increase=0.5)).decision == "promote"
    # +80% on average but so noisy per session that it is not yet significant: no roll-back
    wild = _cost_arm(100, [0.0004] * 15 + [0.0140] * 15, 180)  # 30 sessions, mean +80% (of 0.004 per session)
    noisy = decide(control, wild, Thresholds(max_cost_increase=0.5))
    assert noisy.guard["cost_increase"] > 0.5 and noisy.cost_p_value > 0.05 and noisy.decision == "promote"
    # unpriced: the tokens' moments are tested instead
    unpriced = _cost_arm(200, [c * 1.8 for c in base], 180)
    unpriced = ArmOutcome(**{f: getattr(unpriced, f) for f in unpriced.__slots__ if f not in ("mean_cost_usd", "cost_m")})
    ev = decide(control, unpriced, Thresholds(max_cost_increase=0.5))
    assert ev.guard["cost_metric"] == "tokens" and ev.decision == "rollback" and "tokens up +80%" in ev.reason
    # without per-unit figures nothing can be tested: no roll-back without evidence
    bare = decide(ArmOutcome(n=200, successes=80, mean_tokens=100), ArmOutcome(n=200, successes=160, mean_tokens=300))
    assert bare.decision == "promote" and "not tested" in bare.guard["cost_note"]


def test_evaluation_serialises_to_plain_json() -> None:
    ev = decide(arm([(2, 5)], 40), arm([(4, 5)], 40))
    doc = json.loads(json.dumps(ev.to_dict()))
    assert set(doc) >= {"decision", "reason", "effect", "ci", "p_value", "p_better", "p_worse", "arms", "guard", "method_id"}
    assert set(doc["arms"]["control"]) >= {"n", "units", "successes", "rate", "ci"}
    assert doc["relative_lift"]["estimate"] == pytest.approx(1.0)


def test_the_relative_lift_interval_agrees_with_the_decision_test() -> None:
    """Fieller's interval with the always-valid critical value excludes a lift of 0 exactly when the
    difference test is significant; it is bounded only when the control rate is clearly above 0."""
    from intelligence.enhance.stats import relative_lift_interval

    rng = np.random.default_rng(9)
    agree = 0
    for _ in range(300):
        pc, pv = rng.uniform(0.05, 0.9, 2)
        var_c, var_v = rng.uniform(1e-4, 5e-3, 2)
        out = relative_lift_interval(pc, var_c, 100, pv, var_v, 100, 0.05)
        significant = abs(pv - pc) > float(cs_half_width(var_c + var_v, 0.05))
        lo, hi = out["ci"]
        excludes_zero = lo > 0 or (hi is not None and hi < 0)
        agree += excludes_zero == significant
        assert lo <= out["estimate"] and (hi is None or out["estimate"] <= hi)
    assert agree == 300
    tight = relative_lift_interval(0.3, 0.3 * 0.7 / 400, 400, 0.6, 0.24 / 400, 400, 0.05)
    assert tight["ci"][0] == pytest.approx(0.561, abs=0.002) and tight["ci"][1] == pytest.approx(1.666, abs=0.002)
    assert relative_lift_interval(0.02, 0.0004, 100, 0.1, 0.0009, 100, 0.05)["ci"][1] is None  # control could be 0
