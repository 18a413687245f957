"""Exact tail probabilities and the family-wise correction used by every verification.

Rules encoded here:
- Binomial upper tails are summed in log space, so p-values stay accurate far below 1e-300
  (they are reported as log10 p when a float would underflow).
- One verification runs m tests (every applicable scheme on every commitment it covers).
  Decisions use Holm's step-down procedure at family-wise level alpha over those m tests:
  the i-th smallest p-value (i = 0, 1, ...) is compared with alpha / (m - i), and testing
  stops at the first that fails. Holm controls the family-wise error rate at alpha under
  any dependence between the tests, so a scan of 10,000 commitments accuses nobody by
  chance with probability above alpha.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

_LN10 = math.log(10.0)


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    """ln P[Bin(n, p) = k]."""
    if p == 0.0:
        return 0.0 if k == 0 else -math.inf
    if p == 1.0:
        return 0.0 if k == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))


def log10_binom_sf(k: int, n: int, p: float) -> float:
    """log10 P[Bin(n, p) >= k], exact up to floating-point rounding.

    Args:
        k: observed number of successes (matches).
        n: number of trials.
        p: success probability under the null hypothesis, in [0, 1].

    Returns:
        The base-10 logarithm of the upper tail; 0.0 when k <= 0, -inf when k > n.

    Example:
        >>> round(log10_binom_sf(256, 256, 0.5), 3)
        -77.064
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], received {p}")
    if n < 0:
        raise ValueError(f"n must be non-negative, received {n}")
    if k <= 0:
        return 0.0
    if k > n:
        return -math.inf
    terms = [_log_binom_pmf(j, n, p) for j in range(k, n + 1)]
    top = max(terms)
    if top == -math.inf:
        return -math.inf
    total = top + math.log(sum(math.exp(t - top) for t in terms))
    return min(0.0, total / _LN10)


def binom_sf(k: int, n: int, p: float) -> float:
    """P[Bin(n, p) >= k] as a float (0.0 when it underflows; use log10_binom_sf then)."""
    return 10.0 ** log10_binom_sf(k, n, p)


def clopper_pearson_upper(failures: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound on a rate observed as failures / trials.

    Exact (Clopper-Pearson): the largest q with P[Bin(trials, q) <= failures] >= 1 - confidence,
    found by bisection on the exact binomial tail.

    Example:
        >>> round(clopper_pearson_upper(0, 100), 4)  # the "rule of three": about 3/100
        0.0295
    """
    if trials <= 0:
        return 1.0
    if failures >= trials:
        return 1.0
    target = 1.0 - confidence
    lo, hi = failures / trials, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        cdf = 1.0 - binom_sf(failures + 1, trials, mid)  # P[X <= failures]
        if cdf > target:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class HolmDecision:
    """Holm's verdict on one test within a family."""

    alpha: float  # the threshold this test was compared with (alpha / (m - rank))
    adjusted_log10_p: float  # Holm-adjusted p-value, log10 (monotone, capped at 0)
    reject: bool  # True when H0 is rejected at family-wise level alpha


def holm(log10_pvalues: Sequence[float], alpha: float) -> list[HolmDecision]:
    """Holm's step-down correction over all tests a verification ran.

    Args:
        log10_pvalues: log10 p-value of each test, in any order (not-applicable tests are
            left out by the caller: they are not tests).
        alpha: the family-wise error rate, e.g. 1e-6.

    Returns:
        One decision per input, in input order. A test that was never reached (an earlier,
        smaller p-value failed) is reported with the threshold it would have faced.

    Example:
        >>> [d.reject for d in holm([-12.0, -2.0], alpha=1e-6)]
        [True, False]
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), received {alpha}")
    m = len(log10_pvalues)
    order = sorted(range(m), key=lambda i: log10_pvalues[i])
    log_alpha = math.log10(alpha)
    out: list[HolmDecision | None] = [None] * m
    still_rejecting = True
    running_max = -math.inf
    for rank, i in enumerate(order):
        log_factor = math.log10(m - rank)
        threshold = log_alpha - log_factor
        running_max = max(running_max, min(0.0, log10_pvalues[i] + log_factor))
        still_rejecting = still_rejecting and log10_pvalues[i] <= threshold
        out[i] = HolmDecision(alpha=10.0 ** threshold, adjusted_log10_p=running_max,
                              reject=still_rejecting)
    return [d for d in out if d is not None]
