"""Statistics of an A/B experiment: is the variant's success rate different from control's?

The evaluator looks at every running experiment every few seconds, i.e. after (nearly) every
request. A fixed-sample test checked that often would almost surely declare a winner eventually
(the "peeking" problem), so the test here is *always valid*: the mixture sequential probability
ratio test (mSPRT) of Johari, Koomen, Pekelis and Walsh, "Always valid inference: continuous
monitoring of A/B tests" (2017; Operations Research 2022), for the difference of two proportions.

Let theta = p_variant - p_control, theta_hat its estimate after n_c and n_v exposures, and V the
variance of theta_hat, p_c(1 - p_c)/n_c + p_v(1 - p_v)/n_v. With a normal mixture N(0, tau^2) over
the alternative, the mixture likelihood ratio against H0: theta = theta_0 is (their eq. 11, with
V in place of 2 sigma^2 / n)

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (theta_hat - theta_0)^2 / (2 V (V + tau^2)))

Under H0, Lambda is a nonnegative martingale with mean 1, so by Ville's inequality
P(sup_n Lambda_n >= 1/alpha) <= alpha: the always-valid p-value p_n = min(p_{n-1}, 1/Lambda_n)
can be checked after every observation. Inverting the test gives a confidence *sequence*
theta_hat +- sqrt(V (V + tau^2) / tau^2 * (2 ln(1/alpha) + ln((V + tau^2)/V))) that covers theta at
all times at once with probability >= 1 - alpha.

V is estimated from the data (as in the paper's binary-outcome section), so the guarantee is
asymptotic; two safeguards keep it at small n: success rates are shrunk by half a success and half
a failure when estimating V (never 0 at p_hat = 0 or 1), and no p-value is computed before every arm
has ``min_samples`` exposures. tests/unit/test_experiment_stats.py measures the false-positive rate
under continuous monitoring (A/A) and the power, with the figures in docs/experiments.md.

tau is the scale of effects the test is tuned to find quickest; 0.1 (ten points of success rate)
suits prompt changes. Per-arm rates get Wilson score intervals (fixed-n, for display).

:func:`decide` turns the figures into promote / rollback / continue, with guard rails on errors and
cost that can roll back a variant whose success rate looks fine.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, Literal

DEFAULT_TAU = 0.1
DEFAULT_MIN_SAMPLES = 30

Decision = Literal["promote", "rollback", "continue"]


# --------------------------------------------------------------------------------------- intervals
def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; (0, 1) when n is 0."""
    if n <= 0:
        return (0.0, 1.0)
    successes = min(max(successes, 0), n)
    z = NormalDist().inv_cdf(1 - alpha / 2)
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    # at 0 or n the bound is exactly 0 or 1; the formula leaves a rounding residue
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


# --------------------------------------------------------------------------------------------- mSPRT
def _shrunk(successes: int, n: int) -> float:
    return (successes + 0.5) / (n + 1)


def difference_variance(s_c: int, n_c: int, s_v: int, n_v: int) -> float:
    """Estimated variance of p_hat_v - p_hat_c (rates shrunk by half a count so it is never 0)."""
    pc, pv = _shrunk(s_c, n_c), _shrunk(s_v, n_v)
    return pc * (1 - pc) / n_c + pv * (1 - pv) / n_v


def msprt_lambda(effect: float, variance: float, tau: float = DEFAULT_TAU, theta0: float = 0.0) -> float:
    """The normal-mixture likelihood ratio for H0: theta = theta0 (inf when it overflows)."""
    tau2 = tau * tau
    exponent = tau2 * (effect - theta0) ** 2 / (2 * variance * (variance + tau2))
    log_lambda = 0.5 * math.log(variance / (variance + tau2)) + exponent
    return math.exp(log_lambda) if log_lambda < 700 else math.inf


def always_valid_p(
    s_c: int,
    n_c: int,
    s_v: int,
    n_v: int,
    *,
    previous: float = 1.0,
    tau: float = DEFAULT_TAU,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> float:
    """min(previous, 1/Lambda) for H0: equal rates; ``previous`` is the p-value of the last check."""
    if min(n_c, n_v) < max(min_samples, 1):
        return min(previous, 1.0)
    effect = s_v / n_v - s_c / n_c
    lam = msprt_lambda(effect, difference_variance(s_c, n_c, s_v, n_v), tau)
    return min(previous, 1.0, 1.0 / lam if lam > 0 else 1.0)


def confidence_sequence(
    s_c: int, n_c: int, s_v: int, n_v: int, *, alpha: float = 0.05, tau: float = DEFAULT_TAU
) -> tuple[float, float]:
    """An always-valid (1 - alpha) interval for p_v - p_c: the theta0 the mSPRT does not reject."""
    if n_c <= 0 or n_v <= 0:
        return (-1.0, 1.0)
    effect = s_v / n_v - s_c / n_c
    v, tau2 = difference_variance(s_c, n_c, s_v, n_v), tau * tau
    half = math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))
    return (max(-1.0, effect - half), min(1.0, effect + half))


# ------------------------------------------------------------------------------------------ decide
@dataclass(frozen=True, slots=True)
class ArmOutcome:
    """What one arm's exposures came to (see intelligence/enhance/outcomes.py)."""

    n: int = 0
    successes: int = 0
    errors: int = 0
    mean_tokens: float | None = None
    mean_cost_usd: float | None = None  # None when any exposure's model is unpriced
    mean_latency_ms: float | None = None

    @property
    def rate(self) -> float | None:
        return self.successes / self.n if self.n else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.n if self.n else None


@dataclass(frozen=True, slots=True)
class Thresholds:
    alpha: float = 0.05
    min_effect: float = 0.05
    max_error_increase: float = 0.05
    max_cost_increase: float = 0.5  # as a fraction of control's mean
    min_samples: int = DEFAULT_MIN_SAMPLES
    tau: float = DEFAULT_TAU


@dataclass(frozen=True, slots=True)
class Evaluation:
    decision: Decision
    reason: str
    effect: float | None
    ci: tuple[float, float]
    p_value: float
    error_p_value: float
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    guard: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = list(self.ci)
        return out


def _arm_dict(arm: ArmOutcome, alpha: float) -> dict[str, Any]:
    lo, hi = wilson_interval(arm.successes, arm.n, alpha)
    return {
        "n": arm.n,
        "successes": arm.successes,
        "rate": arm.rate,
        "ci": [lo, hi],
        "errors": arm.errors,
        "error_rate": arm.error_rate,
        "mean_tokens": arm.mean_tokens,
        "mean_cost_usd": arm.mean_cost_usd,
        "mean_latency_ms": arm.mean_latency_ms,
    }


def _cost_increase(control: ArmOutcome, variant: ArmOutcome) -> tuple[str | None, float | None]:
    """Relative increase of mean cost when both arms are priced, else of mean total tokens."""
    for metric, c, v in (
        ("cost_usd", control.mean_cost_usd, variant.mean_cost_usd),
        ("tokens", control.mean_tokens, variant.mean_tokens),
    ):
        if c is not None and v is not None and c > 0:
            return metric, (v - c) / c
    return None, None


def decide(
    control: ArmOutcome,
    variant: ArmOutcome,
    thresholds: Thresholds = Thresholds(),
    *,
    previous_p: float = 1.0,
    previous_error_p: float = 1.0,
) -> Evaluation:
    """Promote, roll back or continue, with the figures that justify it.

    Roll back when a guard rail trips (error rate up by more than ``max_error_increase`` and
    significantly so; mean cost or tokens up by more than ``max_cost_increase``) or when the success
    rate is significantly lower. Promote when it is significantly higher by at least ``min_effect``.
    ``previous_p``/``previous_error_p`` carry the running minimum of the always-valid p-values
    between checks.
    """
    t = thresholds
    arms = {"control": _arm_dict(control, t.alpha), "variant": _arm_dict(variant, t.alpha)}
    p = always_valid_p(
        control.successes, control.n, variant.successes, variant.n, previous=previous_p, tau=t.tau, min_samples=t.min_samples
    )
    error_p = always_valid_p(
        control.errors, control.n, variant.errors, variant.n, previous=previous_error_p, tau=t.tau, min_samples=t.min_samples
    )
    effect = (variant.successes / variant.n - control.successes / control.n) if control.n and variant.n else None
    ci = confidence_sequence(control.successes, control.n, variant.successes, variant.n, alpha=t.alpha, tau=t.tau)
    error_increase = (variant.errors / variant.n - control.errors / control.n) if control.n and variant.n else None
    cost_metric, cost_increase = _cost_increase(control, variant)
    guard = {
        "error_increase": error_increase,
        "error_p_value": error_p,
        "cost_metric": cost_metric,
        "cost_increase": cost_increase,
    }

    def result(decision: Decision, reason: str) -> Evaluation:
        return Evaluation(
            decision=decision, reason=reason, effect=effect, ci=ci, p_value=p, error_p_value=error_p, arms=arms, guard=guard
        )

    n_min = min(control.n, variant.n)
    if n_min < t.min_samples:
        return result("continue", f"collecting: {n_min} of {t.min_samples} exposures in the smaller arm")
    figures = (
        f"control {control.successes}/{control.n}, variant {variant.successes}/{variant.n}, "
        f"effect {effect:+.3f} (CI {ci[0]:+.3f}..{ci[1]:+.3f}), always-valid p={p:.3g}"
    )
    if error_increase is not None and error_increase > t.max_error_increase and error_p < t.alpha:
        return result(
            "rollback", f"guard rail: error rate up {error_increase:+.3f} (> {t.max_error_increase}, p={error_p:.3g}); {figures}"
        )
    if cost_increase is not None and cost_increase > t.max_cost_increase:
        return result(
            "rollback", f"guard rail: mean {cost_metric} up {cost_increase:+.0%} (> {t.max_cost_increase:.0%}); {figures}"
        )
    if p < t.alpha and effect is not None and effect < 0:
        return result("rollback", f"significantly worse: {figures}")
    if p < t.alpha and effect is not None and effect >= t.min_effect:
        return result("promote", f"significantly better by >= {t.min_effect}: {figures}")
    if p < t.alpha:
        return result("continue", f"significant but below min_effect {t.min_effect}: {figures}")
    return result("continue", f"not yet significant at alpha={t.alpha}: {figures}")


__all__ = [
    "ArmOutcome",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_TAU",
    "Decision",
    "Evaluation",
    "Thresholds",
    "always_valid_p",
    "confidence_sequence",
    "decide",
    "difference_variance",
    "msprt_lambda",
    "wilson_interval",
]
