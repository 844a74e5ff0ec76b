"""certlib.stats against independent references: scipy's binomtest, exact mpmath sums, plain loops, hand cases."""
import itertools

import mpmath
import numpy as np
import pytest
from scipy.stats import binomtest

from certlib.errors import CertlibError
from certlib.stats import (binom_test_greater, bonferroni, clopper_pearson_lower, clopper_pearson_upper, holm,
                           min_samples_to_certify)

GRID = [(k, n) for n in (1, 2, 7, 31, 100, 256) for k in sorted({0, 1, n // 4, n // 2, (3 * n) // 4, n - 1, n})]
ALPHAS = (0.2, 0.05, 1e-3, 1e-6)


# ------------------------------------------------------------------------------------------------ binomial test

@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.75, 0.9, 1.0])
def test_binom_test_greater_matches_scipy_binomtest(p):
    for k, n in GRID:
        expected = binomtest(k, n, p, alternative="greater").pvalue
        assert binom_test_greater(k, n, p) == pytest.approx(expected, rel=1e-12, abs=1e-300), (k, n, p)


def test_binom_test_greater_boundaries_by_hand():
    assert binom_test_greater(0, 10, 0.3) == 1.0                   # at least 0 successes: certain
    assert binom_test_greater(10, 10, 0.75) == pytest.approx(0.75 ** 10, rel=1e-13)
    assert binom_test_greater(1, 1, 0.75) == pytest.approx(0.75, rel=1e-15)
    # P[Bin(2, 1/2) >= 1] = 3/4
    assert binom_test_greater(1, 2, 0.5) == pytest.approx(0.75, rel=1e-15)


def _exact_tail(k, n, p, digits=60):
    """sum_{j >= k} C(n, j) p^j (1-p)^(n-j), exactly in decimal arithmetic."""
    with mpmath.workdps(digits):
        pm = mpmath.mpf(p)
        return mpmath.fsum(mpmath.binomial(n, j) * pm ** j * (1 - pm) ** (n - j) for j in range(k, n + 1))


@pytest.mark.parametrize("k, n, p", [
    (7600, 10000, 0.75), (8000, 10000, 0.75), (8600, 10000, 0.75), (7600, 10000, 0.7),
    (5500, 10000, 0.5), (256, 256, 0.75), (250, 256, 0.75), (60, 100, 0.01),
])
def test_binom_tail_far_out_matches_an_exact_sum(k, n, p):
    exact = _exact_tail(k, n, p)
    assert exact > mpmath.mpf("1e-300")                              # still a normal double: a real check
    assert binom_test_greater(k, n, p) == pytest.approx(float(exact), rel=1e-9)


def test_binom_test_greater_broadcasts():
    k = np.array([[0], [5], [10]])
    n = np.array([10, 20])
    out = binom_test_greater(k, n, 0.4)
    assert out.shape == (3, 2)
    for i, j in itertools.product(range(3), range(2)):
        assert out[i, j] == pytest.approx(binomtest(int(k[i, 0]), int(n[j]), 0.4, alternative="greater").pvalue,
                                          rel=1e-12)
    assert isinstance(binom_test_greater(3, 10, 0.5), float)
    assert isinstance(binom_test_greater(np.array([3]), 10, 0.5), np.ndarray)


# ------------------------------------------------------------------------------------------------ Clopper–Pearson

@pytest.mark.parametrize("alpha", ALPHAS)
def test_clopper_pearson_matches_scipy_exact_interval(alpha):
    # A one-sided (1 - alpha) bound is one end of the two-sided exact interval at level 1 - 2 alpha.
    # scipy finds that interval by root finding to an absolute tolerance of about 1e-12 (at k=1, n=256,
    # alpha=1e-6 it gives 3.90675e-9 for 3.90625e-9), hence abs=1e-11; the exact mpmath check below covers
    # the tiny bounds to full relative accuracy.
    for k, n in GRID:
        ci = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
        assert clopper_pearson_lower(k, n, alpha) == pytest.approx(ci.low, rel=1e-9, abs=1e-11), (k, n)
        assert clopper_pearson_upper(k, n, alpha) == pytest.approx(ci.high, rel=1e-9, abs=1e-11), (k, n)


@pytest.mark.parametrize("k, n", [(1, 2), (1, 256), (5, 31), (30, 31), (200, 256)])
def test_clopper_pearson_at_tiny_alpha_solves_the_exact_tail_equations(k, n):
    # lower bound L: P[Bin(n, L) >= k] = alpha; upper bound U: P[Bin(n, U) <= k] = alpha
    alpha = 1e-6
    lo, hi = clopper_pearson_lower(k, n, alpha), clopper_pearson_upper(k, n, alpha)
    assert float(_exact_tail(k, n, lo)) == pytest.approx(alpha, rel=1e-8)
    assert float(1 - _exact_tail(k + 1, n, hi)) == pytest.approx(alpha, rel=1e-8)


def test_clopper_pearson_edges_and_definition():
    assert clopper_pearson_lower(0, 50, 0.05) == 0.0
    assert clopper_pearson_upper(50, 50, 0.05) == 1.0
    # k = n: the lower bound solves p^n = alpha (the only way to see n of n with probability alpha)
    assert clopper_pearson_lower(50, 50, 0.05) == pytest.approx(0.05 ** (1 / 50), rel=1e-12)
    assert clopper_pearson_upper(0, 50, 0.05) == pytest.approx(1 - 0.05 ** (1 / 50), rel=1e-12)
    # the defining property: at p = lower bound, seeing >= k successes has probability exactly alpha
    lo = clopper_pearson_lower(37, 60, 0.01)
    assert float(_exact_tail(37, 60, lo, 40)) == pytest.approx(0.01, rel=1e-8)


def test_clopper_pearson_vectorised_and_ordered():
    k = np.arange(0, 21)
    lo, hi = clopper_pearson_lower(k, 20, 0.05), clopper_pearson_upper(k, 20, 0.05)
    assert lo.shape == hi.shape == (21,)
    assert np.all(lo <= k / 20) and np.all(hi >= k / 20) and np.all(np.diff(lo) > 0) and np.all(np.diff(hi) > 0)
    for i in (0, 7, 20):
        assert lo[i] == clopper_pearson_lower(int(k[i]), 20, 0.05)
    grid = clopper_pearson_lower(np.array([[3], [9]]), np.array([10, 12, 30]), np.array([0.1, 0.05, 0.01]))
    assert grid.shape == (2, 3)
    assert grid[1, 2] == pytest.approx(clopper_pearson_lower(9, 30, 0.01), rel=1e-15)


# ------------------------------------------------------------------------------------------------ Holm / Bonferroni

def _holm_loop(p, alpha):
    """Holm written out plainly: walk the sorted p-values, stop at the first that misses its threshold."""
    flat = list(np.asarray(p, dtype=float).ravel())
    m = len(flat)
    rejected = [False] * m
    for rank, index in enumerate(sorted(range(m), key=lambda i: flat[i])):
        if flat[index] <= alpha / (m - rank):
            rejected[index] = True
        else:
            break
    return np.array(rejected, dtype=bool).reshape(np.shape(p))


def test_holm_hand_worked_cases():
    # sorted 0.005 <= 0.05/4, 0.01 <= 0.05/3, then 0.03 > 0.05/2: stop
    assert holm([0.01, 0.04, 0.03, 0.005], 0.05).tolist() == [True, False, False, True]
    # every step passes: 0.01 <= .025, .02 <= .0333, .03 <= .05, .04 <= .1
    assert holm([0.04, 0.03, 0.02, 0.01], 0.1).tolist() == [True] * 4
    # step-down stops at the first failure even though 0.04 alone would pass its own threshold 0.05
    assert holm([0.001, 0.03, 0.0301, 0.04], 0.05).tolist() == [True, False, False, False]
    # a p-value equal to its threshold is rejected (<=)
    assert holm([0.025, 0.05], 0.05).tolist() == [True, True]
    assert holm([0.5], 0.05).tolist() == [False]


def test_bonferroni_hand_worked_and_the_difference_with_holm():
    p = [0.04, 0.03, 0.02, 0.01]
    assert bonferroni(p, 0.1).tolist() == [False, False, True, True]      # threshold 0.1 / 4 = 0.025
    assert holm(p, 0.1).tolist() == [True, True, True, True]


def test_holm_matches_a_plain_loop_on_random_inputs_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(300):
        m = int(rng.integers(1, 60))
        # rounding creates ties; the exponent mixes tiny and large p-values
        p = np.round(rng.uniform(0, 1, m) ** rng.uniform(1, 8), int(rng.integers(2, 5)))
        alpha = float(rng.choice([0.5, 0.1, 0.05, 0.01]))
        assert np.array_equal(holm(p, alpha), _holm_loop(p, alpha)), (trial, p, alpha)


def test_holm_rejects_a_superset_of_bonferroni():
    rng = np.random.default_rng(1)
    strictly_more = 0
    for _ in range(200):
        p = rng.uniform(0, 1, 40) ** 6
        h, b = holm(p, 0.05), bonferroni(p, 0.05)
        assert np.all(h[b])
        strictly_more += int(h.sum() > b.sum())
    assert strictly_more > 0        # the comparison is not vacuous


def test_corrections_keep_shapes_and_treat_all_entries_as_one_family():
    rng = np.random.default_rng(2)
    p = np.round(rng.uniform(0, 1, (3, 4, 5)) ** 5, 3)
    for correct in (holm, bonferroni):
        out = correct(p, 0.05)
        assert out.shape == (3, 4, 5) and out.dtype == bool
    assert np.array_equal(holm(p, 0.05), _holm_loop(p.ravel(), 0.05).reshape(3, 4, 5))
    assert np.array_equal(bonferroni(p, 0.05), p <= 0.05 / 60)
    assert holm(np.zeros((0,)), 0.05).shape == (0,)


# ------------------------------------------------------------------------------------------------ planning

def test_min_samples_to_certify_matches_brute_force():
    rng = np.random.default_rng(3)
    cases = [(0.75, 0.001, 150528), (0.75, 0.05, 360), (0.5, 0.05, 1), (0.99, 1e-6, 50176 * 3)]
    cases += [(float(rng.uniform(0.5, 0.995)), float(10 ** rng.uniform(-8, -0.5)), int(rng.integers(1, 10 ** 6)))
              for _ in range(100)]
    for tau, alpha, tests in cases:
        n = 1
        while tau ** n > alpha / tests:
            n += 1
        assert min_samples_to_certify(tau, alpha, tests) == n, (tau, alpha, tests)


def test_min_samples_is_where_full_votes_first_pass():
    n = min_samples_to_certify(0.75, 0.01, 1000)
    assert binom_test_greater(n, n, 0.75) <= 0.01 / 1000 < binom_test_greater(n - 1, n - 1, 0.75)


# ------------------------------------------------------------------------------------------------ validation

@pytest.mark.parametrize("call, message", [
    (lambda: clopper_pearson_lower(3, 10, 0.0), "alpha must be in (0, 1), got 0.0"),
    (lambda: clopper_pearson_upper(3, 10, 1.0), "alpha must be in (0, 1), got 1.0"),
    (lambda: clopper_pearson_lower(3, 10, np.array([0.1, 2.0])), "alpha must be in (0, 1), got 2.0"),
    (lambda: clopper_pearson_lower(3, 10, float("nan")), "alpha must be in (0, 1), got nan"),
    (lambda: clopper_pearson_lower(11, 10, 0.05), "k must satisfy 0 <= k <= n, got k = 11"),
    (lambda: clopper_pearson_lower(-1, 10, 0.05), "k must satisfy 0 <= k <= n, got k = -1"),
    (lambda: binom_test_greater(3, 0, 0.5), "n must be an integer >= 1, got 0"),
    (lambda: binom_test_greater(3, 10.5, 0.5), "n must be an integer, got 10.5"),
    (lambda: binom_test_greater(2.5, 10, 0.5), "k must be an integer, got 2.5"),
    (lambda: binom_test_greater(3, 10, 1.5), "p must be in [0, 1], got 1.5"),
    (lambda: binom_test_greater("3", 10, 0.5), "k must be a real number"),
    (lambda: holm([0.1, -0.2], 0.05), "pvalues must be in [0, 1], got -0.2"),
    (lambda: holm([0.1, float("nan")], 0.05), "pvalues must be in [0, 1], got nan"),
    (lambda: bonferroni([0.1], 1.5), "alpha must be in (0, 1), got 1.5"),
    (lambda: holm([0.1], [0.05, 0.1]), "alpha must be a single number"),
    (lambda: min_samples_to_certify(1.0, 0.05, 10), "tau must be in (0, 1), got 1.0"),
    (lambda: min_samples_to_certify(0.75, 0.0, 10), "alpha must be in (0, 1), got 0.0"),
    (lambda: min_samples_to_certify(0.75, 0.05, 0), "num_tests must be an integer >= 1, got 0"),
])
def test_bad_arguments_raise_certlib_errors_naming_them(call, message):
    with pytest.raises(CertlibError) as info:
        call()
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def _exact_lower_tail(k, n, p, digits=80):
    """sum_{j <= k} C(n, j) p^j (1-p)^(n-j), exactly in decimal arithmetic."""
    with mpmath.workdps(digits):
        pm = mpmath.mpf(p)
        return mpmath.fsum(mpmath.binomial(n, j) * pm ** j * (1 - pm) ** (n - j) for j in range(0, k + 1))


@pytest.mark.parametrize("alpha", [1e-3, 1e-9, 1e-14, 1e-17, 1e-20])
@pytest.mark.parametrize("k, n", [(0, 31), (1, 256), (100, 256), (250, 256), (900, 1000)])
def test_clopper_pearson_upper_is_exact_down_to_tiny_alpha(k, n, alpha):
    # U solves P[Bin(n, U) <= k] = alpha. 1 - alpha is 1.0 in float64 below ~1e-16, so an inverse CDF at
    # 1 - alpha returns 1 (vacuous) there; the inverse survival function keeps full relative accuracy.
    hi = clopper_pearson_upper(k, n, alpha)
    assert 0 < hi < 1
    assert float(_exact_lower_tail(k, n, hi)) == pytest.approx(alpha, rel=1e-7), (k, n, alpha, hi)
    # and the same bound by mpmath's own root finder
    with mpmath.workdps(60):
        root = mpmath.findroot(lambda p: _exact_lower_tail(k, n, p) - alpha, (mpmath.mpf(hi) * (1 - 1e-6),
                                                                            mpmath.mpf(hi) * (1 + 1e-6)),
                               solver="anderson")
    assert hi == pytest.approx(float(root), rel=1e-9)
