"""`llmproxy simulate ab`: the experiment statistics on synthetic, session-correlated exposures.

Statistics only (no gateway, no database): it measures what the decision code of
intelligence/enhance/stats.py does when it is checked after every exposure, the way the evaluator
uses it. Each run is one experiment:

* sessions arrive one per time step and are assigned to an arm (``control_weight`` to control), the
  way the sidecar assigns them (one arm per session);
* each session has its own success probability, drawn from a Beta distribution with mean the arm's
  rate (``control_rate``/``variant_rate``) and standard deviation ``session_sd`` (0: every session
  has the arm's rate), and makes ``requests_per_session`` requests, Bernoulli with that probability:
  requests of one session are correlated, sessions are independent;
* a session's requests are spread over time (exponential gaps, mean ``MEAN_GAP`` arrivals), so
  sessions overlap and the test sees sessions in progress, as the evaluator does;
* after every ``check_every`` exposures (default 1: every exposure) the unit moments of each arm
  go through the same functions :func:`~intelligence.enhance.stats.decide` uses
  (:func:`proportion_variance`, :func:`one_sided_p`, :func:`success_decisions`), with the same
  running minima; the first promote or rollback ends the run. Every decided run (and a sample of
  undecided ones) is then re-checked by calling :func:`decide` itself on that check's figures; the
  number of disagreements is reported (``decide_mismatches``: must be 0).

Vectorised with NumPy over runs and exposures, so a few thousand runs take seconds. ``method``
``per-request`` is the old analysis (every request an independent trial), for comparison.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .stats import (
    DEFAULT_MIN_SAMPLES,
    DEFAULT_TAU,
    METHOD_TEXT,
    METHODS,
    ArmOutcome,
    Carry,
    Moments,
    Thresholds,
    decide,
    one_sided_p,
    proportion_variance,
    success_decisions,
)

MEAN_GAP = 5.0  # mean time (in session arrivals) between two requests of one session
MAX_CELLS = 500_000  # runs x exposures per vectorised chunk (about 60 MB of arrays)
MAX_RUNS = 200_000
MAX_REQUESTS = 200_000
CROSSCHECK_UNDECIDED = 20


@dataclass(frozen=True)
class ABConfig:
    runs: int = 1000
    control_rate: float = 0.5
    variant_rate: float = 0.5
    requests_per_session: int = 1
    session_sd: float = 0.0
    seed: int = 1
    method: str = "session"
    max_requests: int = 2000  # exposures (both arms) per run
    control_weight: float = 0.5
    alpha: float = 0.05
    min_effect: float = 0.05
    min_samples: int = DEFAULT_MIN_SAMPLES
    tau: float = DEFAULT_TAU
    check_every: int = 1

    def validate(self) -> None:
        if not 1 <= self.runs <= MAX_RUNS:
            raise ValueError(f"runs must be between 1 and {MAX_RUNS}")
        if not 1 <= self.max_requests <= MAX_REQUESTS:
            raise ValueError(f"max_requests must be between 1 and {MAX_REQUESTS}")
        if self.requests_per_session < 1:
            raise ValueError("requests_per_session must be at least 1")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}")
        if not 0 < self.control_weight < 1 or not 0 < self.alpha < 1:
            raise ValueError("control_weight and alpha must be strictly between 0 and 1")
        if self.check_every < 1:
            raise ValueError("check_every must be at least 1")
        for rate in (self.control_rate, self.variant_rate):
            if not 0 <= rate <= 1:
                raise ValueError("rates must be between 0 and 1")
            if self.session_sd > 0 and self.session_sd**2 >= rate * (1 - rate):
                raise ValueError(
                    f"session_sd {self.session_sd} is too large for rate {rate}: a Beta distribution needs sd^2 < p(1-p)"
                )


def session_probabilities(rng: np.random.Generator, rate: float, sd: float, shape: tuple[int, ...]) -> np.ndarray:
    """Per-session success probabilities: Beta with mean ``rate`` and standard deviation ``sd``."""
    if sd <= 0 or rate in (0.0, 1.0):
        return np.full(shape, rate)
    k = rate * (1 - rate) / (sd * sd) - 1  # alpha + beta
    return rng.beta(rate * k, (1 - rate) * k, size=shape)


def _chunk(cfg: ABConfig, rng: np.random.Generator, runs: int) -> dict[str, np.ndarray]:
    """Cumulative per-arm unit moments after every exposure, for ``runs`` runs: arrays (runs, H)."""
    k, h = cfg.requests_per_session, cfg.max_requests
    # enough sessions that the first H requests by time are all there (sessions overlap by ~MEAN_GAP*k)
    sessions = math.ceil(h / k) + math.ceil(MEAN_GAP * k) + 2
    variant = rng.random((runs, sessions)) >= cfg.control_weight
    p = np.where(
        variant,
        session_probabilities(rng, cfg.variant_rate, cfg.session_sd, (runs, sessions)),
        session_probabilities(rng, cfg.control_rate, cfg.session_sd, (runs, sessions)),
    )
    x = (rng.random((runs, sessions, k)) < p[:, :, None]).astype(np.int32)
    prior_y = np.cumsum(x, axis=2) - x
    prior_n = np.broadcast_to(np.arange(k, dtype=np.int32), x.shape)
    gaps = rng.exponential(MEAN_GAP, size=(runs, sessions, k))
    gaps[:, :, 0] = 0.0
    times = np.arange(sessions, dtype=float)[None, :, None] + np.cumsum(gaps, axis=2)
    order = np.argsort(times.reshape(runs, -1), axis=1, kind="stable")[:, :h]

    def take(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(np.ascontiguousarray(a).reshape(runs, -1), order, axis=1)

    xs, py, pn = take(x), take(prior_y), take(prior_n)
    arm = take(np.broadcast_to(variant[:, :, None], x.shape))
    inc = {
        "units": (pn == 0).astype(np.int64),
        "n": np.ones_like(xs, dtype=np.int64),
        "y": xs.astype(np.int64),
        "yy": (2 * py * xs + xs).astype(np.int64),  # (y + x)^2 - y^2 with x in {0, 1}
        "yn": (py + xs * pn + xs).astype(np.int64),  # (y + x)(n + 1) - y n
        "nn": (2 * pn + 1).astype(np.int64),  # (n + 1)^2 - n^2
    }
    out: dict[str, np.ndarray] = {}
    for name, a in inc.items():
        out[f"v_{name}"] = np.cumsum(np.where(arm, a, 0), axis=1)
        out[f"c_{name}"] = np.cumsum(np.where(arm, 0, a), axis=1)
    return out


def _moments(m: dict[str, np.ndarray], arm: str, per_request: bool) -> tuple[np.ndarray, ...]:
    n, y = m[f"{arm}_n"], m[f"{arm}_y"]
    if per_request:  # every exposure its own unit (binary outcome: y^2 = y)
        return n, n, y, y, y, n
    return m[f"{arm}_units"], n, y, m[f"{arm}_yy"], m[f"{arm}_yn"], m[f"{arm}_nn"]


def _arm_at(m: dict[str, np.ndarray], arm: str, run: int, col: int) -> ArmOutcome:
    mom = Moments(*(float(m[f"{arm}_{k}"][run, col]) for k in ("units", "n", "y", "yy", "yn", "nn")))
    return ArmOutcome(n=int(mom.n), successes=int(mom.y), units=int(mom.units), success_m=mom)


def simulate(cfg: ABConfig) -> dict[str, Any]:
    cfg.validate()
    started = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    t = Thresholds(alpha=cfg.alpha, min_effect=cfg.min_effect, min_samples=cfg.min_samples, tau=cfg.tau, method=cfg.method)
    per_request = cfg.method == "per-request"
    checks = np.arange(cfg.check_every - 1, cfg.max_requests, cfg.check_every)
    if checks.size == 0 or checks[-1] != cfg.max_requests - 1:
        checks = np.append(checks, cfg.max_requests - 1)
    chunk_runs = max(1, min(cfg.runs, MAX_CELLS // cfg.max_requests))
    decisions: list[np.ndarray] = []
    at: list[np.ndarray] = []
    lifts: list[np.ndarray] = []
    mismatches = crosschecked = 0
    done = 0
    while done < cfg.runs:  # bounded: each pass handles at least one run
        runs = min(chunk_runs, cfg.runs - done)
        m = _chunk(cfg, rng, runs)
        m = {k: v[:, checks] for k, v in m.items()}
        c, v = _moments(m, "c", per_request), _moments(m, "v", per_request)
        with np.errstate(divide="ignore", invalid="ignore"):
            effect = v[2] / v[1] - c[2] / c[1]
            variance = proportion_variance(c[0], c[1], c[2], c[3], c[4], c[5], cfg.method) + proportion_variance(
                v[0], v[1], v[2], v[3], v[4], v[5], cfg.method
            )
        ready = (np.minimum(c[0], v[0]) >= max(cfg.min_samples, 2)) & (c[1] > 0) & (v[1] > 0)
        p_better = np.minimum.accumulate(np.where(ready, one_sided_p(effect, variance, cfg.tau, 0.0, +1), 1.0), axis=1)
        p_worse = np.minimum.accumulate(np.where(ready, one_sided_p(effect, variance, cfg.tau, 0.0, -1), 1.0), axis=1)
        promote, rollback = success_decisions(effect, p_better, p_worse, ready, cfg.alpha, cfg.min_effect)
        decided = promote | rollback
        first = np.where(decided.any(axis=1), decided.argmax(axis=1), -1)
        rows = np.arange(runs)
        code = np.where(first < 0, 0, np.where(promote[rows, np.maximum(first, 0)], 1, -1))
        decisions.append(code)
        at.append(np.where(first < 0, -1, checks[np.maximum(first, 0)] + 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = effect[rows, np.maximum(first, 0)] / (c[2] / c[1])[rows, np.maximum(first, 0)]
        lifts.append(np.where(first < 0, np.nan, rel))
        # the real decide() on the same figures, with the minima carried from the check before
        undecided_sample = [r for r in range(runs) if first[r] < 0][:CROSSCHECK_UNDECIDED]
        for r in [r for r in range(runs) if first[r] >= 0] + undecided_sample:
            col = int(first[r]) if first[r] >= 0 else len(checks) - 1
            carry = Carry(
                p_better=float(p_better[r, col - 1]) if col > 0 else 1.0,
                p_worse=float(p_worse[r, col - 1]) if col > 0 else 1.0,
            )
            got = decide(_arm_at(m, "c", r, col), _arm_at(m, "v", r, col), t, carry=carry).decision
            want = {1: "promote", -1: "rollback", 0: "continue"}[int(code[r])]
            crosschecked += 1
            mismatches += got != want
        done += runs
    code = np.concatenate(decisions)
    needed = np.concatenate(at)
    lift = np.concatenate(lifts)
    promoted, rolled_back = int((code == 1).sum()), int((code == -1).sum())
    null = cfg.control_rate == cfg.variant_rate
    better = cfg.variant_rate > cfg.control_rate
    correct = (code == 1) if better else (code == -1)
    decided_at = needed[code != 0]
    correct_at = needed[correct]
    false_rate = (promoted + rolled_back) / cfg.runs if null else None
    return {
        "runs": cfg.runs,
        "promoted": promoted,
        "rolled_back": rolled_back,
        "undecided": cfg.runs - promoted - rolled_back,
        "false_decision_rate": false_rate,
        "false_decision_upper_95": binomial_upper(promoted + rolled_back, cfg.runs, 0.05) if null else None,
        "power": None if null else float(correct.mean()),
        "wrong_direction": None if null else int((code == (-1 if better else 1)).sum()),
        "median_requests_to_decide": float(np.median(decided_at)) if decided_at.size else None,
        "p90_requests_to_decide": float(np.percentile(decided_at, 90)) if decided_at.size else None,
        "median_requests_to_correct_decision": float(np.median(correct_at)) if correct_at.size and not null else None,
        # the estimate when the test stopped: above the true lift on average (it stops on a high estimate)
        "median_relative_lift_at_promotion": _median_finite(lift[code == 1]),
        "true_relative_lift": (cfg.variant_rate / cfg.control_rate - 1) if cfg.control_rate > 0 else None,
        "method": cfg.method,
        "method_description": METHOD_TEXT[cfg.method],
        "alpha": cfg.alpha,
        "decide_crosschecks": crosschecked,
        "decide_mismatches": mismatches,
        "config": asdict(cfg),
        "elapsed_s": round(time.perf_counter() - started, 2),
    }


def _median_finite(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]  # a control rate of 0 at the stop has no relative lift
    return float(np.median(finite)) if finite.size else None


def binomial_upper(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound of a binomial rate."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(1 - alpha, k + 1, n - k))


__all__ = ["ABConfig", "MEAN_GAP", "binomial_upper", "session_probabilities", "simulate"]
