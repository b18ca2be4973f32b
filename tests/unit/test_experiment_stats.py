"""Experiment statistics against known values and seeded simulations (intelligence/enhance/stats.py).

The simulations check after every single exposure (the worst case of peeking) with a bounded
number of runs and exposures; the figures they print are the ones quoted in docs/experiments.md
(`pytest tests/unit/test_experiment_stats.py -q -s`).
"""

from __future__ import annotations

import math
import random

import pytest

from intelligence.enhance.stats import (
    ArmOutcome,
    Thresholds,
    always_valid_p,
    confidence_sequence,
    decide,
    msprt_lambda,
    wilson_interval,
)


def monitor(
    p_control: float, p_variant: float, *, exposures: int, runs: int, seed: int, control_weight: float = 0.5, alpha: float = 0.05
) -> tuple[float, list[int]]:
    """Share of runs whose always-valid p ever dropped below alpha when checked after every exposure,
    and the exposures each rejecting run needed."""
    rng = random.Random(seed)
    rejected: list[int] = []
    for _ in range(runs):
        sc = nc = sv = nv = 0
        p = 1.0
        for i in range(exposures):
            if rng.random() < control_weight:
                nc += 1
                sc += rng.random() < p_control
            else:
                nv += 1
                sv += rng.random() < p_variant
            p = always_valid_p(sc, nc, sv, nv, previous=p)
            if p < alpha:
                rejected.append(i + 1)
                break
    return len(rejected) / runs, rejected


def mc_slack(alpha: float, runs: int) -> float:
    return 3 * math.sqrt(alpha * (1 - alpha) / runs)  # three standard errors of the estimated rate


@pytest.mark.parametrize(("rate", "weight", "seed"), [(0.5, 0.5, 11), (0.85, 0.5, 12), (0.6, 0.7, 13)])
def test_aa_false_positive_rate_under_continuous_monitoring_is_at_most_alpha(rate: float, weight: float, seed: int) -> None:
    runs = 250
    fpr, _ = monitor(rate, rate, exposures=800, runs=runs, seed=seed, control_weight=weight)
    print(f"A/A rate={rate} control_weight={weight}: false-positive rate {fpr:.3f} over {runs} runs x 800 checks")
    assert fpr <= 0.05 + mc_slack(0.05, runs)


def test_a_fixed_sample_z_test_checked_as_often_would_not_be_valid() -> None:
    """The reason for the mSPRT: the naive z-test peeked at after every exposure rejects far too often."""
    rng = random.Random(5)
    runs, hits = 250, 0
    for _ in range(runs):
        sc = nc = sv = nv = 0
        for _ in range(800):
            if rng.random() < 0.5:
                nc += 1
                sc += rng.random() < 0.5
            else:
                nv += 1
                sv += rng.random() < 0.5
            if nc >= 30 and nv >= 30:
                pc, pv = sc / nc, sv / nv
                pooled = (sc + sv) / (nc + nv)
                se = math.sqrt(pooled * (1 - pooled) * (1 / nc + 1 / nv)) or 1e-9
                if abs(pv - pc) / se > 1.96:
                    hits += 1
                    break
    print(f"naive z-test under the same monitoring: false-positive rate {hits / runs:.3f}")
    assert hits / runs > 0.15


def test_power_for_a_large_effect_within_a_few_hundred_exposures() -> None:
    power, needed = monitor(0.4, 0.8, exposures=300, runs=200, seed=21)
    needed.sort()
    print(f"0.4 vs 0.8: power {power:.3f} within 300 exposures; median exposures to decide {needed[len(needed) // 2]}")
    assert power >= 0.95
    assert needed[len(needed) // 2] <= 150


def test_power_for_a_moderate_effect() -> None:
    power, needed = monitor(0.6, 0.75, exposures=1500, runs=60, seed=22)
    needed.sort()
    print(f"0.6 vs 0.75: power {power:.3f} within 1500 exposures; median {needed[len(needed) // 2]}")
    assert power >= 0.8


def test_wilson_interval_known_values() -> None:
    # reference values (e.g. statsmodels proportion_confint(method="wilson"), Newcombe 1998 table I)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    lo90, hi90 = wilson_interval(5, 10, alpha=0.10)
    assert 0.2366 < lo90 < hi90 < 0.7634  # a lower confidence gives a narrower interval
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_msprt_lambda_closed_form_and_the_p_value_is_a_running_minimum() -> None:
    v, tau = 0.002, 0.1
    expected = math.sqrt(v / (v + tau**2)) * math.exp(tau**2 * 0.1**2 / (2 * v * (v + tau**2)))
    assert msprt_lambda(0.1, v, tau) == pytest.approx(expected)
    assert msprt_lambda(0.0, v, tau) < 1  # no effect: evidence for H0
    assert msprt_lambda(5.0, 1e-9, tau) == math.inf  # overflow is infinite evidence, not an error
    strong = always_valid_p(20, 100, 60, 100)
    assert strong < 1e-4
    # the running minimum: a later, weaker look never raises it
    assert always_valid_p(50, 100, 50, 100, previous=strong) == strong
    assert always_valid_p(3, 10, 9, 10) == 1.0  # below min_samples nothing is claimed


def test_confidence_sequence_covers_the_truth_uniformly_over_time() -> None:
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
    assert misses / runs <= 0.05 + mc_slack(0.05, runs)
    lo, hi = confidence_sequence(500, 1000, 600, 1000)
    assert lo < 0.1 < hi and hi - lo < 0.2


def test_decide_promotes_a_clear_winner_and_rolls_back_a_clear_loser() -> None:
    win = decide(ArmOutcome(n=200, successes=80), ArmOutcome(n=200, successes=160))
    assert win.decision == "promote" and win.effect == pytest.approx(0.4)
    assert "always-valid p=" in win.reason and win.arms["variant"]["rate"] == 0.8
    assert win.arms["control"]["ci"] == pytest.approx(list(wilson_interval(80, 200)))
    lose = decide(ArmOutcome(n=200, successes=160), ArmOutcome(n=200, successes=80))
    assert lose.decision == "rollback" and lose.reason.startswith("significantly worse")


def test_decide_continues_when_too_small_too_few_or_not_significant() -> None:
    few = decide(ArmOutcome(n=20, successes=2), ArmOutcome(n=20, successes=20))
    assert few.decision == "continue" and few.reason.startswith("collecting")
    same = decide(ArmOutcome(n=300, successes=150), ArmOutcome(n=300, successes=155))
    assert same.decision == "continue" and same.p_value > 0.05
    small = decide(ArmOutcome(n=50_000, successes=25_000), ArmOutcome(n=50_000, successes=26_000), Thresholds(min_effect=0.05))
    assert small.p_value < 0.05 and small.decision == "continue" and "below min_effect" in small.reason


def test_error_guard_rail_rolls_back_despite_a_better_success_rate() -> None:
    control = ArmOutcome(n=300, successes=150, errors=3)
    variant = ArmOutcome(n=300, successes=200, errors=60)
    ev = decide(control, variant, Thresholds(max_error_increase=0.05))
    assert ev.decision == "rollback" and ev.reason.startswith("guard rail: error rate")
    assert ev.guard["error_increase"] == pytest.approx(0.19)
    # the same increase, if allowed, no longer trips
    assert decide(control, variant, Thresholds(max_error_increase=0.25)).decision == "promote"
    # a large but not yet significant increase does not trip either (few errors, few samples)
    noisy = decide(ArmOutcome(n=30, successes=15, errors=0), ArmOutcome(n=30, successes=15, errors=3))
    assert noisy.guard["error_increase"] == pytest.approx(0.1) and noisy.decision == "continue"


def test_cost_guard_rail_uses_priced_cost_else_tokens() -> None:
    control = ArmOutcome(n=200, successes=80, mean_tokens=100, mean_cost_usd=0.001)
    pricey = ArmOutcome(n=200, successes=160, mean_tokens=120, mean_cost_usd=0.0018)
    ev = decide(control, pricey, Thresholds(max_cost_increase=0.5))
    assert ev.decision == "rollback" and ev.guard["cost_metric"] == "cost_usd"
    assert ev.guard["cost_increase"] == pytest.approx(0.8)
    unpriced = ArmOutcome(n=200, successes=160, mean_tokens=160, mean_cost_usd=None)
    ev = decide(control, unpriced, Thresholds(max_cost_increase=0.5))
    assert ev.decision == "rollback" and ev.guard["cost_metric"] == "tokens" and "tokens up +60%" in ev.reason
    within = ArmOutcome(n=200, successes=160, mean_tokens=140)
    assert decide(control, within, Thresholds(max_cost_increase=0.5)).decision == "promote"


def test_evaluation_serialises_to_plain_json() -> None:
    import json

    ev = decide(ArmOutcome(n=100, successes=40), ArmOutcome(n=100, successes=70))
    doc = json.loads(json.dumps(ev.to_dict()))
    assert set(doc) >= {"decision", "reason", "effect", "ci", "p_value", "arms", "guard"}
    assert set(doc["arms"]["control"]) >= {"n", "successes", "rate", "ci"}
