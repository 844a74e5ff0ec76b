"""Exact binomial statistics for the certificates: Clopper–Pearson bounds, the one-sided binomial test, and the
Holm / Bonferroni corrections (design §3.2, §5).

Everything is vectorised over numpy arrays (broadcasting like numpy) and returns a Python float when every input
is a scalar. scipy's `binom.sf` and `beta.ppf` evaluate the regularised incomplete beta function with relative
accuracy far into the tails (tests/test_stats.py checks them against exact mpmath sums down to ~1e-159), so tiny
p-values are meaningful, not rounding noise.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta, binom

from certlib.errors import CertlibError

ArrayLike = float | int | np.ndarray


# ---------------------------------------------------------------------------------------------- validation

def first_bad(values: np.ndarray, ok: np.ndarray) -> object:
    """The first offending value, for the message (a whole 224×224 array would be unreadable)."""
    bad = np.asarray(values)[~np.asarray(ok)]
    return bad.ravel()[0].item() if bad.size else values


def _real_array(value: object, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise CertlibError(f"{name} must be a real number or array of them, got {value!r}")
    return arr


def check_alpha(alpha: object) -> np.ndarray:
    """alpha in the open interval (0, 1) (scalar or array)."""
    a = _real_array(alpha, "alpha").astype(np.float64)
    ok = (a > 0) & (a < 1)  # NaN fails both comparisons, so it is rejected too
    if not ok.all():
        raise CertlibError(f"alpha must be in (0, 1), got {first_bad(a, ok)!r}")
    return a


def check_probability(p: object, name: str = "p") -> np.ndarray:
    """p in the closed interval [0, 1] (scalar or array)."""
    arr = _real_array(p, name).astype(np.float64)
    ok = (arr >= 0) & (arr <= 1)
    if not ok.all():
        raise CertlibError(f"{name} must be in [0, 1], got {first_bad(arr, ok)!r}")
    return arr


def _integer_array(value: object, name: str) -> np.ndarray:
    # Integral floats (e.g. counts stored as float) are accepted; 2.5 votes are not.
    arr = _real_array(value, name)
    if np.issubdtype(arr.dtype, np.floating):
        ok = np.isfinite(arr) & (arr == np.round(arr))
        if not ok.all():
            raise CertlibError(f"{name} must be an integer, got {first_bad(arr, ok)!r}")
    return arr.astype(np.int64)


def check_counts(k: object, n: object) -> tuple[np.ndarray, np.ndarray]:
    """n >= 1 and 0 <= k <= n, integers (broadcast together)."""
    n_arr = _integer_array(n, "n")
    if not (n_arr >= 1).all():
        raise CertlibError(f"n must be an integer >= 1, got {first_bad(n_arr, n_arr >= 1)!r}")
    k_arr = _integer_array(k, "k")
    try:
        k_b, n_b = np.broadcast_arrays(k_arr, n_arr)
    except ValueError:
        raise CertlibError(f"k and n must broadcast together, got shapes {k_arr.shape} and {n_arr.shape}") from None
    ok = (k_b >= 0) & (k_b <= n_b)
    if not ok.all():
        raise CertlibError(f"k must satisfy 0 <= k <= n, got k = {first_bad(k_b, ok)!r} "
                           f"(n = {first_bad(n_b, ok)!r})")
    return k_arr, n_arr


def _scalar_or_array(result: np.ndarray, *inputs: object) -> float | np.ndarray:
    return float(result) if all(np.ndim(x) == 0 for x in inputs) else np.asarray(result, dtype=np.float64)


# ---------------------------------------------------------------------------------------------- binomial

def clopper_pearson_lower(k: ArrayLike, n: ArrayLike, alpha: ArrayLike) -> float | np.ndarray:
    """One-sided (1 - alpha) Clopper–Pearson lower bound on p from k successes in n trials.

    p_lower = Beta⁻¹(alpha; k, n - k + 1), and 0 when k = 0 (no success bounds p by nothing but 0)."""
    k_arr, n_arr = check_counts(k, n)
    a = check_alpha(alpha)
    with np.errstate(invalid="ignore"):  # beta(0, ·) is undefined; those entries are replaced below
        p_lower = beta.ppf(a, k_arr, n_arr - k_arr + 1)
    p_lower = np.where(k_arr == 0, 0.0, p_lower)
    return _scalar_or_array(p_lower, k, n, alpha)


def clopper_pearson_upper(k: ArrayLike, n: ArrayLike, alpha: ArrayLike) -> float | np.ndarray:
    """One-sided (1 - alpha) Clopper–Pearson upper bound on p from k successes in n trials.

    p_upper = Beta⁻¹(1 - alpha; k + 1, n - k), and 1 when k = n. Computed as the inverse *survival* function at
    alpha: 1 - alpha rounds to 1 in float64 for alpha below ~1e-16 (and loses digits long before), isf does not."""
    k_arr, n_arr = check_counts(k, n)
    a = check_alpha(alpha)
    with np.errstate(invalid="ignore"):
        p_upper = beta.isf(a, k_arr + 1, n_arr - k_arr)
    p_upper = np.where(k_arr == n_arr, 1.0, p_upper)
    return _scalar_or_array(p_upper, k, n, alpha)


def binom_test_greater(k: ArrayLike, n: ArrayLike, p: ArrayLike) -> float | np.ndarray:
    """p-value of the one-sided test of H0: prob <= p against prob > p, from k successes in n trials:
    P[Bin(n, p) >= k] = sf(k - 1) (the survival function is P[X > x], hence the - 1)."""
    k_arr, n_arr = check_counts(k, n)
    prob = check_probability(p, "p")
    return _scalar_or_array(binom.sf(k_arr - 1, n_arr, prob), k, n, p)


# ---------------------------------------------------------------------------------------------- multiple testing

def _check_pvalues(pvalues: object) -> np.ndarray:
    return check_probability(pvalues, "pvalues")


def check_scalar_alpha(alpha: object) -> float:
    if np.ndim(alpha) != 0:
        raise CertlibError(f"alpha must be a single number, got shape {np.shape(alpha)}")
    return float(check_alpha(alpha))


def holm(pvalues: ArrayLike, alpha: float) -> np.ndarray:
    """Holm's step-down procedure at family-wise error alpha over all entries of `pvalues` (any shape).

    With p_(1) <= ... <= p_(m) sorted, reject H_(1..r) where r + 1 is the first j with p_(j) > alpha / (m - j + 1).
    Returns a bool array of the input's shape, True = rejected (certified). Ties get the same decision: the
    thresholds grow with j, so once a tied value passes, all its copies pass."""
    p = _check_pvalues(pvalues)
    a = check_scalar_alpha(alpha)
    flat = p.ravel()
    m = flat.size
    order = np.argsort(flat, kind="stable")
    thresholds = a / (m - np.arange(m))          # alpha / (m - j + 1) for the 1-based rank j
    passed = flat[order] <= thresholds
    r = m if passed.all() else int(np.argmin(passed))  # number rejected = index of the first failure
    rejected = np.zeros(m, dtype=bool)
    rejected[order[:r]] = True
    return rejected.reshape(p.shape)


def bonferroni(pvalues: ArrayLike, alpha: float) -> np.ndarray:
    """Bonferroni at family-wise error alpha over all entries: reject p <= alpha / m. Same shape, True = rejected."""
    p = _check_pvalues(pvalues)
    a = check_scalar_alpha(alpha)
    return p <= a / max(p.size, 1)


# ---------------------------------------------------------------------------------------------- planning

def _check_num_tests(num_tests: object) -> int:
    if isinstance(num_tests, bool) or not isinstance(num_tests, (int, np.integer)) or num_tests < 1:
        raise CertlibError(f"num_tests must be an integer >= 1, got {num_tests!r}")
    return int(num_tests)


def min_samples_to_certify(tau: float, alpha: float, num_tests: int) -> int:
    """Smallest n with tau^n <= alpha / num_tests: below it even n votes out of n (p-value tau^n) cannot pass the
    first Holm / Bonferroni step, so nothing can be certified. Shown by the UI before sampling.

    tau^n is evaluated as P[Bin(n, tau) >= n], the very p-value the certificate computes, so this bound and the
    decision agree to the last bit (the two differ by a few ulps)."""
    t = float(_real_array(tau, "tau")) if np.ndim(tau) == 0 else math.nan
    if not 0 < t < 1:
        raise CertlibError(f"tau must be in (0, 1), got {tau!r}")
    a = check_scalar_alpha(alpha)
    target = a / _check_num_tests(num_tests)
    n = max(1, math.ceil(math.log(target) / math.log(t)))

    def passes(m: int) -> bool:
        return binom_test_greater(m, m, t) <= target

    # The logarithm is within a step of the answer; settle the boundary with the exact tail.
    while n > 1 and passes(n - 1):
        n -= 1
    while not passes(n):
        n += 1
    return n
