"""verifier.stats: exact binomial tails in log space, Clopper-Pearson bounds, Holm's correction."""
from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from verifier.stats import binom_sf, clopper_pearson_upper, holm, log10_binom_sf


def _exact_sf(k: int, n: int, p: Fraction) -> Fraction:
    """P[Bin(n, p) >= k] as an exact rational."""
    return sum((Fraction(math.comb(n, j)) * p**j * (1 - p) ** (n - j)
                for j in range(max(k, 0), n + 1)), Fraction(0))


def _log10(x: Fraction) -> float:
    return math.log10(x.numerator) - math.log10(x.denominator)


@pytest.mark.parametrize("p", [Fraction(1, 2), Fraction(1, 9), Fraction(3, 10), Fraction(97, 100)])
def test_it_matches_a_brute_force_rational_sum_for_small_n(p: Fraction) -> None:
    for n in range(0, 31):
        for k in range(1, n + 1):
            exact = _exact_sf(k, n, p)
            assert log10_binom_sf(k, n, float(p)) == pytest.approx(_log10(exact), abs=1e-12), (k, n)


def test_it_stays_accurate_near_and_below_1e_minus_300() -> None:
    for k, n in [(1000, 1000), (995, 1000), (1900, 2000), (300, 300)]:
        exact = _exact_sf(k, n, Fraction(1, 2))
        got = log10_binom_sf(k, n, 0.5)
        assert got == pytest.approx(_log10(exact), rel=1e-12)
    assert log10_binom_sf(1000, 1000, 0.5) == pytest.approx(-1000 * math.log10(2), rel=1e-13)
    assert log10_binom_sf(1000, 1000, 0.5) < -300  # not clamped, not -inf


def test_it_gives_a_float_that_underflows_to_zero_only_below_the_float_range() -> None:
    assert binom_sf(256, 256, 0.5) == pytest.approx(2.0**-256, rel=1e-12)
    assert binom_sf(2000, 2000, 0.5) == 0.0
    assert math.isfinite(log10_binom_sf(2000, 2000, 0.5))


def test_it_treats_the_edges_of_k_and_p_exactly() -> None:
    assert log10_binom_sf(0, 10, 0.3) == 0.0
    assert log10_binom_sf(-3, 10, 0.3) == 0.0
    assert log10_binom_sf(11, 10, 0.3) == -math.inf
    assert log10_binom_sf(3, 10, 0.0) == -math.inf
    assert log10_binom_sf(10, 10, 1.0) == 0.0
    assert log10_binom_sf(0, 0, 0.5) == 0.0


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_it_rejects_a_probability_outside_zero_one(p: float) -> None:
    with pytest.raises(ValueError, match="p must lie in"):
        log10_binom_sf(1, 10, p)


def test_it_rejects_a_negative_number_of_trials() -> None:
    with pytest.raises(ValueError, match="n must be non-negative"):
        log10_binom_sf(1, -1, 0.5)


def test_its_clopper_pearson_bound_is_the_rule_of_three_at_zero_failures() -> None:
    assert clopper_pearson_upper(0, 100) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-9)


@pytest.mark.parametrize("failures,trials", [(1, 100), (3, 50), (10, 20), (0, 7)])
def test_its_clopper_pearson_bound_leaves_five_percent_below_the_observation(failures: int, trials: int) -> None:
    q = clopper_pearson_upper(failures, trials)
    cdf = float(1 - _exact_sf(failures + 1, trials, Fraction(q)))  # P[Bin(trials, q) <= failures]
    assert cdf == pytest.approx(0.05, abs=1e-9)
    assert failures / trials < q < 1


def test_its_clopper_pearson_bound_is_one_without_information() -> None:
    assert clopper_pearson_upper(0, 0) == 1.0
    assert clopper_pearson_upper(5, 5) == 1.0


def test_holm_rejects_what_survives_the_step_down() -> None:
    assert [d.reject for d in holm([-12.0, -2.0], alpha=1e-6)] == [True, False]


def test_holm_stops_at_the_first_failure_even_if_a_later_test_would_pass_alone() -> None:
    # sorted: -7 <= log10(1e-6/3) passes; -6.3 > log10(1e-6/2) fails; -6.1 <= -6 is never reached
    decisions = holm([-6.1, -7.0, -6.3], alpha=1e-6)
    assert [d.reject for d in decisions] == [False, True, False]
    assert decisions[0].alpha == pytest.approx(1e-6)
    assert decisions[1].alpha == pytest.approx(1e-6 / 3)
    assert decisions[2].alpha == pytest.approx(1e-6 / 2)


def test_holm_adjusted_p_values_are_monotone_and_capped_at_one() -> None:
    values = [-0.1, -5.0, -3.0, -9.0, -0.01]
    decisions = holm(values, alpha=0.05)
    ordered = [decisions[i].adjusted_log10_p for i in sorted(range(5), key=lambda i: values[i])]
    assert ordered == sorted(ordered)
    assert max(ordered) == 0.0
    assert decisions[3].adjusted_log10_p == pytest.approx(-9.0 + math.log10(5))


def test_holm_controls_the_family_wise_error_under_the_global_null() -> None:
    rng = random.Random(0)
    families, alpha = 4000, 0.05
    any_rejection = sum(
        any(d.reject for d in holm([math.log10(rng.random()) for _ in range(10)], alpha))
        for _ in range(families))
    assert any_rejection / families <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / families)


def test_holm_of_nothing_is_nothing() -> None:
    assert holm([], alpha=0.01) == []


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.5])
def test_holm_rejects_an_alpha_outside_zero_one(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha must lie in"):
        holm([-1.0], alpha=alpha)
