"""Tail probabilities and a robust z-score for the rate detectors (pure functions, no SciPy needed).

Sums run in log space from the mode outwards, so counts in the thousands neither overflow nor lose
the tail to rounding.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def poisson_sf(k: int, lam: float) -> float:
    """P(X >= k) for X ~ Poisson(lam)."""
    if k <= 0:
        return 1.0
    if lam <= 0:
        return 0.0
    if k <= lam:  # the upper tail is large: 1 - P(X <= k - 1), summed from k - 1 downwards
        log_term = -lam + (k - 1) * math.log(lam) - math.lgamma(k)
        term, total = math.exp(log_term), 0.0
        for i in range(k - 1, -1, -1):
            total += term
            if i == 0 or term < total * 1e-17:
                break
            term *= i / lam
        return max(0.0, 1.0 - total)
    log_term = -lam + k * math.log(lam) - math.lgamma(k + 1)
    term, total, i = math.exp(log_term), 0.0, k
    while True:
        total += term
        i += 1
        term *= lam / i
        if term < total * 1e-17 or i > k + 100_000:
            return min(1.0, total)


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)

    def log_pmf(i: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q

    terms = [log_pmf(i) for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def median_abs_deviation(values: Sequence[float], centre: float) -> float:
    return statistics.median(abs(v - centre) for v in values) if values else 0.0


def robust_z(value: float, median: float, mad: float, *, floor: float) -> float:
    """(value - median) / (1.4826 * MAD): a z-score that one outlier in the baseline cannot hide.

    1.4826 makes the MAD a consistent estimate of the standard deviation for normal data; ``floor``
    keeps a perfectly steady baseline (MAD 0) from turning every small change into infinity.
    """
    scale = max(1.4826 * mad, floor)
    return (value - median) / scale
