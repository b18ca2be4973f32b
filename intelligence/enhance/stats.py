"""Statistics of an A/B experiment, analysed at the unit that was randomised.

**Why units.** The sidecar assigns arms per *session* (or per *client*: intelligence/enhance/live.py),
so every request of a session lands in the same arm. Requests of one session are correlated (same
user, same task, retries), and a test that treats each request as an independent Bernoulli trial
underestimates the variance: with 10 requests per session and a session-level spread of 0.3 it
declares a winner between two identical arms in about half of the experiments (measured with
``llmproxy simulate ab --method per-request``, docs/experiments.md). Here each unit i (session or
client) contributes its totals -- y_i successes (or errors, or cost) over n_i exposures -- and the
arm's rate is the ratio estimator mu = sum y_i / sum n_i (the request-weighted rate) with the
cluster-robust (linearisation, "sandwich") variance

    V(mu) = m / (m - 1) * sum_i (y_i - mu n_i)^2 / (sum_i n_i)^2          (m units)

(Liang and Zeger 1986; for ratio metrics in A/B tests, Deng, Knoblich and Lu, "Applying the delta
method in metric analytics", KDD 2018). It is valid when *units* are independent, whatever the
correlation inside a unit: the assumption the analysis rests on. With one exposure per unit it is
the binomial variance of the per-request test. A floor keeps it from collapsing at small m: the
binomial variance of the rate shrunk by half a success and half a failure, i.e. a unit never counts
for less than independent exposures would.

**Always valid.** The evaluator looks every 30 s, i.e. after (nearly) every request. The test is the
mixture sequential probability ratio test (mSPRT) of Johari, Koomen, Pekelis and Walsh, "Always valid
inference: continuous monitoring of A/B tests" (2017; Operations Research 2022): with theta_hat the
difference of the arms' means and V its (cluster-robust) variance, a normal mixture N(theta0, tau^2)
over the alternative gives

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (theta_hat - theta0)^2 / (2 V (V + tau^2)))

Under H0, Lambda is (asymptotically) a nonnegative martingale with mean 1, so by Ville's inequality
P(sup_t Lambda_t >= 1/alpha) <= alpha, and the always-valid p-value min_t 1/Lambda_t may be checked
any number of times. Inverting it gives a confidence sequence (Howard, Ramdas, McAuliffe and Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021, sec. 3) that
covers theta at all times at once with probability >= 1 - alpha. Decisions use one-sided running
p-values (evidence that theta > theta0, or < theta0), each running minimum carried between checks.
Because V is estimated, the guarantee is asymptotic; ``min_samples`` units per arm must be in before
anything is claimed. ``llmproxy simulate ab`` measures the false decision rate and the power of this
exact code (intelligence/enhance/simulate_ab.py).

**Guard rails** are always-valid tests too: roll back when the error rate is *significantly* more
than ``max_error_increase`` above control's (H0: increase <= tolerance rejected), or mean cost (USD,
else tokens) is significantly more than ``max_cost_increase`` (relative) above control's.

Every function of the test (:func:`ratio_variance`, :func:`proportion_variance`,
:func:`msprt_log_lambda`, :func:`one_sided_p`, :func:`success_decisions`) works element-wise on
NumPy arrays as well as on floats: :func:`decide` (the evaluator) and the simulator run the same code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

DEFAULT_TAU = 0.1
DEFAULT_COST_TAU = 0.5  # relative: the mixture scale of the cost guard rail (a +50% change)
DEFAULT_MIN_SAMPLES = 30  # units (sessions or clients) per arm
COST_CV_FLOOR = 0.1  # a unit's cost varies by at least 10% (floor of the cost variance)

Decision = Literal["promote", "rollback", "continue"]
Method = Literal["session", "per-request"]
METHODS: tuple[str, ...] = ("session", "per-request")
# stored with the stats: carried p-values are only reused by the same method
METHOD_ID = {
    "session": "msprt-cluster-v1",
    "per-request": "msprt-binomial-v0",
}
METHOD_TEXT = {
    "session": "mSPRT (normal mixture, Johari et al. 2017) on unit-level (session/client) ratio means with "
    "cluster-robust variance; always-valid one-sided p-values; Wilson intervals per arm for display",
    "per-request": "mSPRT on per-request Bernoulli outcomes (assumes independent requests; for comparison only)",
}


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


# ------------------------------------------------------------------------------------- unit moments
@dataclass(frozen=True, slots=True)
class Moments:
    """Sufficient statistics of one arm for a ratio estimate of one metric over its units.

    units = m, n = sum n_i (exposures), y = sum y_i, yy = sum y_i^2, yn = sum y_i n_i, nn = sum n_i^2,
    where unit i had n_i exposures totalling y_i (successes, errors, USD or tokens).
    """

    units: float = 0.0
    n: float = 0.0
    y: float = 0.0
    yy: float = 0.0
    yn: float = 0.0
    nn: float = 0.0

    @classmethod
    def from_units(cls, units: Iterable[tuple[float, float]]) -> Moments:
        """From (y_i, n_i) pairs, one per unit; units without exposures are skipped."""
        m = n = y = yy = yn = nn = 0.0
        for yi, ni in units:
            if ni <= 0:
                continue
            m += 1
            n += ni
            y += yi
            yy += yi * yi
            yn += yi * ni
            nn += ni * ni
        return cls(m, n, y, yy, yn, nn)

    @classmethod
    def independent(cls, successes: float, n: float) -> Moments:
        """Each of ``n`` binary exposures its own unit (the per-request view)."""
        return cls(float(n), float(n), float(successes), float(successes), float(successes), float(n))

    @property
    def mean(self) -> float | None:
        return self.y / self.n if self.n > 0 else None

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def ratio_variance(units: Any, n: Any, y: Any, yy: Any, yn: Any, nn: Any) -> Any:
    """Cluster-robust variance of y/n (element-wise); inf where there are fewer than two units."""
    units, n = np.asarray(units, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.asarray(y, dtype=float) / n
        rss = np.maximum(np.asarray(yy, dtype=float) - 2 * mu * yn + mu * mu * nn, 0.0)
        v = rss / (n * n) * units / (units - 1)
    return np.where(units >= 2, v, np.inf)


def proportion_variance(units: Any, n: Any, y: Any, yy: Any, yn: Any, nn: Any, method: str = "session") -> Any:
    """Variance of an arm's success (or error) rate: cluster-robust, floored at the binomial variance of
    the rate shrunk by half a count (``method="per-request"``: that binomial variance alone)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        shrunk = (np.asarray(y, dtype=float) + 0.5) / (n + 1)
        floor = shrunk * (1 - shrunk) / n
    floor = np.where(n > 0, floor, np.inf)
    if method == "per-request":
        return floor
    return np.maximum(ratio_variance(units, n, y, yy, yn, nn), floor)


def msprt_log_lambda(effect: Any, variance: Any, tau: float = DEFAULT_TAU, theta0: Any = 0.0) -> Any:
    """log of the normal-mixture likelihood ratio against H0: theta = theta0 (element-wise)."""
    tau2 = tau * tau
    v = np.asarray(variance, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = np.asarray(effect, dtype=float) - theta0
        out = 0.5 * np.log(v / (v + tau2)) + tau2 * d * d / (2 * v * (v + tau2))
    return np.where(np.isfinite(v) & (v > 0), out, np.where(v == 0, np.inf, -np.inf))


def msprt_lambda(effect: float, variance: float, tau: float = DEFAULT_TAU, theta0: float = 0.0) -> float:
    """The mixture likelihood ratio itself (inf when it overflows)."""
    log_lambda = float(msprt_log_lambda(effect, variance, tau, theta0))
    return math.exp(log_lambda) if log_lambda < 700 else math.inf


def one_sided_p(effect: Any, variance: Any, tau: float, theta0: Any, direction: int) -> Any:
    """1/Lambda(theta0) where the estimate lies on ``direction``'s side of theta0 (+1: above), else 1.

    Its running minimum is an always-valid p-value for H0: theta <= theta0 (direction +1) or
    theta >= theta0 (-1): rejecting when it falls below alpha means theta0 has left the confidence
    sequence on that side.
    """
    log_lambda = msprt_log_lambda(effect, variance, tau, theta0)
    with np.errstate(over="ignore"):
        p = np.minimum(1.0, np.exp(-log_lambda))
    side = (np.asarray(effect, dtype=float) - theta0) * direction > 0
    return np.where(side, p, 1.0)


def cs_half_width(variance: Any, alpha: float, tau: float = DEFAULT_TAU) -> Any:
    """Half-width of the mSPRT's (1 - alpha) confidence sequence around the estimate."""
    tau2 = tau * tau
    v = np.asarray(variance, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + np.log((v + tau2) / v)))


def success_decisions(effect: Any, p_better: Any, p_worse: Any, ready: Any, alpha: float, min_effect: float) -> tuple[Any, Any]:
    """(promote, rollback) masks from the running one-sided p-values: roll back when significantly
    worse; promote when significantly better and the estimate is at least ``min_effect``."""
    ready = np.asarray(ready, dtype=bool)
    rollback = ready & (np.asarray(p_worse) < alpha)
    promote = ready & ~rollback & (np.asarray(p_better) < alpha) & (np.asarray(effect) >= min_effect)
    return promote, rollback


# ---------------------------------------------------------------------------- backward-compatible
def difference_variance(s_c: int, n_c: int, s_v: int, n_v: int) -> float:
    """Per-request variance of p_hat_v - p_hat_c (rates shrunk by half a count so it is never 0)."""
    return float(
        proportion_variance(n_c, n_c, s_c, s_c, s_c, n_c, "per-request")
        + proportion_variance(n_v, n_v, s_v, s_v, s_v, n_v, "per-request")
    )


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
    """Per-request two-sided p: min(previous, 1/Lambda) for H0: equal rates (treats requests as independent)."""
    if min(n_c, n_v) < max(min_samples, 1):
        return min(previous, 1.0)
    effect = s_v / n_v - s_c / n_c
    lam = msprt_lambda(effect, difference_variance(s_c, n_c, s_v, n_v), tau)
    return min(previous, 1.0, 1.0 / lam if lam > 0 else 1.0)


def confidence_sequence(
    s_c: int, n_c: int, s_v: int, n_v: int, *, alpha: float = 0.05, tau: float = DEFAULT_TAU
) -> tuple[float, float]:
    """Per-request always-valid (1 - alpha) interval for p_v - p_c."""
    if n_c <= 0 or n_v <= 0:
        return (-1.0, 1.0)
    effect = s_v / n_v - s_c / n_c
    half = float(cs_half_width(difference_variance(s_c, n_c, s_v, n_v), alpha, tau))
    return (max(-1.0, effect - half), min(1.0, effect + half))


# ------------------------------------------------------------------------------------------ decide
@dataclass(frozen=True, slots=True)
class ArmOutcome:
    """What one arm's exposures came to (see intelligence/enhance/outcomes.py).

    ``success_m``/``error_m``/``cost_m``/``tokens_m`` are the unit moments of successes, errors, cost
    (USD) and total tokens. Without them (``None``) every exposure is taken as its own unit for
    successes and errors, and the cost guard rail cannot be tested.
    """

    n: int = 0
    successes: int = 0
    errors: int = 0
    mean_tokens: float | None = None
    mean_cost_usd: float | None = None  # None when any exposure's model is unpriced
    mean_latency_ms: float | None = None
    units: int | None = None
    success_m: Moments | None = None
    error_m: Moments | None = None
    cost_m: Moments | None = None
    tokens_m: Moments | None = None

    @property
    def rate(self) -> float | None:
        return self.successes / self.n if self.n else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.n if self.n else None

    @property
    def unit_count(self) -> int:
        return int(self.units) if self.units is not None else self.n

    def successes_m(self) -> Moments:
        return self.success_m if self.success_m is not None else Moments.independent(self.successes, self.n)

    def errors_m(self) -> Moments:
        return self.error_m if self.error_m is not None else Moments.independent(self.errors, self.n)


@dataclass(frozen=True, slots=True)
class Thresholds:
    alpha: float = 0.05
    min_effect: float = 0.05
    max_error_increase: float = 0.05
    max_cost_increase: float = 0.5  # as a fraction of control's mean
    min_samples: int = DEFAULT_MIN_SAMPLES  # units per arm
    tau: float = DEFAULT_TAU
    cost_tau: float = DEFAULT_COST_TAU
    method: str = "session"


@dataclass(frozen=True, slots=True)
class Carry:
    """The running minima carried from the previous check (stored in ``experiments.stats``)."""

    p_value: float = 1.0
    p_better: float = 1.0
    p_worse: float = 1.0
    error_p_value: float = 1.0
    cost_p_value: float = 1.0

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any] | None, method: str = "session") -> Carry:
        """Minima of the last check; a check by another method (or the old per-request code) starts afresh."""
        stats = stats or {}
        if stats.get("method_id") != METHOD_ID.get(method):
            return cls()

        def num(key: str) -> float:
            try:
                value = float(stats.get(key, 1.0))
            except (TypeError, ValueError):
                return 1.0
            return value if 0.0 <= value <= 1.0 else 1.0

        return cls(num("p_value"), num("p_better"), num("p_worse"), num("error_p_value"), num("cost_p_value"))


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
    p_better: float = 1.0
    p_worse: float = 1.0
    cost_p_value: float = 1.0
    variance: float | None = None
    relative_lift: dict[str, Any] = field(default_factory=dict)
    method: str = "session"
    method_id: str = METHOD_ID["session"]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = list(self.ci)
        return out


def _arm_dict(arm: ArmOutcome, alpha: float) -> dict[str, Any]:
    lo, hi = wilson_interval(arm.successes, arm.n, alpha)
    return {
        "n": arm.n,
        "units": arm.unit_count,
        "successes": arm.successes,
        "rate": arm.rate,
        "ci": [lo, hi],
        "errors": arm.errors,
        "error_rate": arm.error_rate,
        "mean_tokens": arm.mean_tokens,
        "mean_cost_usd": arm.mean_cost_usd,
        "mean_latency_ms": arm.mean_latency_ms,
    }


def _var(m: Moments, method: str) -> float:
    return float(proportion_variance(m.units, m.n, m.y, m.yy, m.yn, m.nn, method))


def _mean_var(m: Moments) -> float:
    """Variance of a continuous metric's ratio mean, floored at a 10% per-unit coefficient of variation."""
    mean = m.mean or 0.0
    floor = (COST_CV_FLOOR * mean) ** 2 / m.units if m.units > 0 else math.inf
    v = float(ratio_variance(m.units, m.n, m.y, m.yy, m.yn, m.nn))
    return max(v, floor)


def relative_change(c_mean: float, c_var: float, v_mean: float, v_var: float) -> tuple[float, float] | None:
    """(v/c - 1, its delta-method variance), or None when control's mean is not positive."""
    if c_mean <= 0 or not math.isfinite(c_var) or not math.isfinite(v_var):
        return None
    return v_mean / c_mean - 1.0, v_var / c_mean**2 + v_mean**2 * c_var / c_mean**4


def _cost_guard(
    control: ArmOutcome, variant: ArmOutcome, t: Thresholds, previous: float
) -> tuple[str | None, float | None, float, str]:
    """(metric, relative increase, running one-sided p for H0: increase <= max_cost_increase, note)."""
    for metric, c_mean, v_mean, cm, vm in (
        ("cost_usd", control.mean_cost_usd, variant.mean_cost_usd, control.cost_m, variant.cost_m),
        ("tokens", control.mean_tokens, variant.mean_tokens, control.tokens_m, variant.tokens_m),
    ):
        if c_mean is None or v_mean is None or c_mean <= 0:
            continue
        if cm is None or vm is None or cm.units < 2 or vm.units < 2 or not cm.mean or vm.mean is None:
            return metric, (v_mean - c_mean) / c_mean, previous, "no per-unit figures: not tested"
        rel = relative_change(cm.mean, _mean_var(cm), vm.mean, _mean_var(vm))
        if rel is None:
            return metric, (v_mean - c_mean) / c_mean, previous, "control mean is 0: not tested"
        est, var = rel
        p = min(previous, float(one_sided_p(est, var, t.cost_tau, t.max_cost_increase, +1)))
        return metric, est, p, ""
    return None, None, previous, "no cost or token figures"


def decide(
    control: ArmOutcome,
    variant: ArmOutcome,
    thresholds: Thresholds = Thresholds(),
    *,
    carry: Carry | None = None,
    previous_p: float | None = None,
    previous_error_p: float | None = None,
) -> Evaluation:
    """Promote, roll back or continue, with the figures that justify it.

    In this order: fewer than ``min_samples`` units in an arm: continue; roll back (guard rail) when
    the error rate is significantly more than ``max_error_increase`` above control's, or the mean
    cost (else tokens) significantly more than ``max_cost_increase`` above; roll back when the
    success rate is significantly lower; promote when it is significantly higher and the estimate is
    at least ``min_effect``; else continue. ``carry`` holds the running minima of the last check.
    """
    t = thresholds
    if t.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    carry = carry or Carry()
    if previous_p is not None or previous_error_p is not None:  # the old keyword form
        carry = Carry(
            p_value=carry.p_value if previous_p is None else previous_p,
            p_better=carry.p_better if previous_p is None else previous_p,
            p_worse=carry.p_worse if previous_p is None else previous_p,
            error_p_value=carry.error_p_value if previous_error_p is None else previous_error_p,
            cost_p_value=carry.cost_p_value,
        )
    per_request = t.method == "per-request"
    sc = Moments.independent(control.successes, control.n) if per_request else control.successes_m()
    sv = Moments.independent(variant.successes, variant.n) if per_request else variant.successes_m()
    ec = Moments.independent(control.errors, control.n) if per_request else control.errors_m()
    ev = Moments.independent(variant.errors, variant.n) if per_request else variant.errors_m()
    arms = {"control": _arm_dict(control, t.alpha), "variant": _arm_dict(variant, t.alpha)}
    units_c, units_v = int(sc.units), int(sv.units)
    ready = min(units_c, units_v) >= max(t.min_samples, 2) and control.n > 0 and variant.n > 0

    effect = variance = None
    ci = (-1.0, 1.0)
    p_better, p_worse, error_p = carry.p_better, carry.p_worse, carry.error_p_value
    error_increase = None
    if control.n and variant.n:
        effect = (sv.y / sv.n) - (sc.y / sc.n)
        variance = _var(sc, t.method) + _var(sv, t.method)
        half = float(cs_half_width(variance, t.alpha, t.tau))
        ci = (max(-1.0, effect - half), min(1.0, effect + half))
        error_increase = (ev.y / ev.n) - (ec.y / ec.n)
        if ready:
            p_better = min(p_better, float(one_sided_p(effect, variance, t.tau, 0.0, +1)))
            p_worse = min(p_worse, float(one_sided_p(effect, variance, t.tau, 0.0, -1)))
            error_var = _var(ec, t.method) + _var(ev, t.method)
            error_p = min(error_p, float(one_sided_p(error_increase, error_var, t.tau, t.max_error_increase, +1)))
    p = min(carry.p_value, p_better, p_worse)
    cost_metric, cost_increase, cost_p, cost_note = _cost_guard(control, variant, t, carry.cost_p_value)
    if not ready:
        cost_p = carry.cost_p_value
    lift = _relative_lift(sc, sv, t)
    guard = {
        "error_increase": error_increase,
        "error_p_value": error_p,
        "error_null": f"increase <= {t.max_error_increase}",
        "cost_metric": cost_metric,
        "cost_increase": cost_increase,
        "cost_p_value": cost_p,
        "cost_null": f"relative increase <= {t.max_cost_increase}",
        "cost_note": cost_note,
    }

    def result(decision: Decision, reason: str) -> Evaluation:
        return Evaluation(
            decision=decision,
            reason=reason,
            effect=effect,
            ci=ci,
            p_value=p,
            error_p_value=error_p,
            arms=arms,
            guard=guard,
            p_better=p_better,
            p_worse=p_worse,
            cost_p_value=cost_p,
            variance=variance,
            relative_lift=lift,
            method=t.method,
            method_id=METHOD_ID[t.method],
        )

    unit_word = "exposures" if per_request else "units"
    if not ready:
        if not control.n or not variant.n:
            return result("continue", "no data yet")
        return result("continue", f"collecting: {min(units_c, units_v)} of {t.min_samples} {unit_word} in the smaller arm")
    assert effect is not None and error_increase is not None
    figures = (
        f"control {control.successes}/{control.n} ({units_c} {unit_word}), variant {variant.successes}/{variant.n} "
        f"({units_v} {unit_word}), effect {effect:+.3f} (CI {ci[0]:+.3f}..{ci[1]:+.3f}), always-valid p={p:.3g}"
    )
    promote, rollback = success_decisions(effect, p_better, p_worse, True, t.alpha, t.min_effect)
    if error_p < t.alpha:
        return result(
            "rollback",
            f"guard rail: error rate up {error_increase:+.3f}, significantly more than {t.max_error_increase} "
            f"(p={error_p:.3g}); {figures}",
        )
    if cost_p < t.alpha and cost_increase is not None:
        return result(
            "rollback",
            f"guard rail: mean {cost_metric} up {cost_increase:+.0%}, significantly more than {t.max_cost_increase:.0%} "
            f"(p={cost_p:.3g}); {figures}",
        )
    if bool(rollback):
        return result("rollback", f"significantly worse: {figures}")
    if bool(promote):
        return result("promote", f"significantly better by >= {t.min_effect}: {figures}")
    if p < t.alpha:
        return result("continue", f"significant but below min_effect {t.min_effect}: {figures}")
    return result("continue", f"not yet significant at alpha={t.alpha}: {figures}")


def _relative_lift(sc: Moments, sv: Moments, t: Thresholds) -> dict[str, Any]:
    """Relative lift of the success rate, (p_v - p_c) / p_c, with its always-valid interval
    (:func:`relative_lift_interval`) and the delta-method variance of the lift (for combining
    experiments, intelligence/enhance/lift.py)."""
    if sc.n <= 0 or sv.n <= 0 or sc.units < 2 or sv.units < 2:
        return {}
    pc, pv = sc.y / sc.n, sv.y / sv.n
    if pc <= 0:
        return {}
    out = relative_lift_interval(pc, _var(sc, t.method), sc.n, pv, _var(sv, t.method), sv.n, t.alpha, t.tau)
    return {**out, "alpha": t.alpha}


def relative_lift_interval(
    pc: float, var_c: float, n_c: float, pv: float, var_v: float, n_v: float, alpha: float, tau: float = DEFAULT_TAU
) -> dict[str, Any]:
    """The lift pv/pc - 1 with an interval consistent with the decision test: Fieller's construction
    for the ratio rho = 1 + lift -- the rho for which |mu_v - rho mu_c| <= k sqrt(var_v + rho^2 var_c)
    -- with k the always-valid (mSPRT) critical value of the difference test at the current sample,
    k = cs_half_width(var_v + var_c) / sqrt(var_v + var_c). At rho = 1 it is that very test, so the
    interval excludes 0 exactly when the difference is significant, and the control rate's own
    uncertainty is accounted for (Fieller, "Some problems in interval estimation", JRSS B 1954). The
    upper end is None when the control rate is not clearly above 0 at that k (the ratio is unbounded).
    ``n_c``/``n_v`` are kept for the signature's sake (the variances already carry them). Also returns
    the delta-method variance of the lift, (var_v + rho^2 var_c) / pc^2 (for combining experiments)."""
    del n_c, n_v
    rho_hat = pv / pc
    v1 = var_v + var_c
    k = float(cs_half_width(v1, alpha, tau)) / math.sqrt(v1)

    def inside(rho: float) -> bool:
        return abs(pv - rho * pc) <= k * math.sqrt(var_v + rho * rho * var_c)

    def boundary(inner: float, outer: float) -> float:
        for _ in range(60):  # bisection between a ratio inside the set and one outside it
            mid = (inner + outer) / 2
            inner, outer = (mid, outer) if inside(mid) else (inner, mid)
        return inner

    lower = 0.0 if inside(0.0) else boundary(rho_hat, 0.0)
    upper: float | None = None
    probe = max(2 * rho_hat, 1.0)
    for _ in range(40):  # double until outside, or give up: unbounded above
        if not inside(probe):
            upper = boundary(rho_hat, probe)
            break
        probe *= 2
    return {
        "estimate": rho_hat - 1.0,
        "ci": [lower - 1.0, None if upper is None else upper - 1.0],
        "variance": (var_v + rho_hat * rho_hat * var_c) / (pc * pc),
    }


__all__ = [
    "ArmOutcome",
    "Carry",
    "DEFAULT_COST_TAU",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_TAU",
    "Decision",
    "Evaluation",
    "METHODS",
    "METHOD_ID",
    "METHOD_TEXT",
    "Moments",
    "Thresholds",
    "always_valid_p",
    "confidence_sequence",
    "cs_half_width",
    "decide",
    "difference_variance",
    "msprt_lambda",
    "msprt_log_lambda",
    "one_sided_p",
    "proportion_variance",
    "ratio_variance",
    "relative_change",
    "relative_lift_interval",
    "success_decisions",
    "wilson_interval",
]
