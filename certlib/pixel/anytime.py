"""Anytime-valid p-values for the pixel certificate's vote test (design §9 of the shared DESIGN; issue #18).

The fixed-n test asks whether k votes out of n for a pixel's guessed class show p > τ. Its binomial tail is valid
only when n is fixed in advance: a sampler that stops as soon as the p-value dips below α rejects true nulls far
more often than α. Here the evidence against H0: p ≤ τ is a test supermartingale,

    M_n = ∫_τ^1 L_n(q) dq / (1 − τ),    L_n(q) = (q/τ)^k ((1 − q)/(1 − τ))^(n − k),

the likelihood ratio of "votes are Bernoulli(q)" against "Bernoulli(τ)", mixed over q uniform on (τ, 1]. For every
q > τ and every true p ≤ τ, one more vote multiplies L by a factor whose mean is p·q/τ + (1 − p)(1 − q)/(1 − τ) ≤ 1,
so each L_n(q), and their mixture, is a nonnegative supermartingale with M_0 = 1. Ville's inequality gives
P(sup_n M_n ≥ 1/α) ≤ α, so p_n = min(1, 1/M_n) is a valid p-value at *any* stopping time, however the stopping
depends on the data — and it is a function of the final (k, n, τ) alone, so τ, α, K and the correction still
re-decide from cached counts.

Closed form: ∫_τ^1 q^k (1 − q)^(n−k) dq = B(k + 1, n − k + 1) · (1 − I_τ(k + 1, n − k + 1)), evaluated in log space
(scipy's betaln and beta.logsf), so neither the powers nor the beta function underflow for n in the millions.
"""
from __future__ import annotations

import functools

import numpy as np
from scipy.special import betaincc, betaln, gammaln

from certlib import stats
from certlib.errors import CertlibError

ArrayLike = float | int | np.ndarray


def log_evalue(k: ArrayLike, n: ArrayLike, tau: ArrayLike) -> float | np.ndarray:
    """log M_n for k votes out of n against H0: p ≤ τ (τ in (0, 1)); 0 at n = 0."""
    n_in = np.asarray(n)
    # n = 0 (no estimation vote yet) is allowed: M_0 = 1. Everything else is checked as for the fixed-n test.
    k_arr, n_arr = stats.check_counts(k, np.where(n_in == 0, 1, n_in))
    n_arr = np.where(n_in == 0, 0, n_arr)
    t = np.asarray(tau, dtype=np.float64)
    if not ((t > 0) & (t < 1)).all():
        raise CertlibError(f"tau must be in (0, 1), got {stats.first_bad(t, (t > 0) & (t < 1))!r}")
    k_f, n_f = k_arr.astype(np.float64), n_arr.astype(np.float64)
    a, b = k_f + 1.0, n_f - k_f + 1.0
    upper_tail = _log_upper_tail(t, a, b)                      # log(1 − I_τ(k + 1, n − k + 1))
    log_m = betaln(a, b) + upper_tail - np.log1p(-t) - k_f * np.log(t) - (n_f - k_f) * np.log1p(-t)
    return stats._scalar_or_array(np.where(n_arr == 0, 0.0, log_m), k, n, tau)


def _log_upper_tail(t: ArrayLike, a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """log(1 − I_t(a, b)), the upper tail of Beta(a, b) at t: scipy's complementary regularised incomplete beta is
    accurate near 0 and near 1 by itself. (scipy.stats' beta.logsf adds argument checks and a median search per
    call, which cost more than the tail on the small tables here: the τ slider re-decides through them.)"""
    with np.errstate(divide="ignore"):
        return np.log(betaincc(a, b, t))


def anytime_pvalue(k: ArrayLike, n: ArrayLike, tau: ArrayLike) -> float | np.ndarray:
    """p = min(1, 1/M_n): valid for H0: p ≤ τ at any data-dependent stopping time (Ville's inequality)."""
    log_m = np.asarray(log_evalue(k, n, tau), dtype=np.float64)
    return stats._scalar_or_array(np.exp(-np.maximum(log_m, 0.0)), k, n, tau)


# ---------------------------------------------------------------------------------------------- selection prior
#
# The uniform prior spreads the mixture over all of (τ, 1]. A pixel's n0 selection votes say roughly where its q is,
# and they come from their own noise stream: fixing each pixel's prior from them *before* any estimation vote keeps
# every L_n(q) a supermartingale under H0, so the mixture is one too and Ville applies unchanged. The prior is
# floor · uniform + (1 − floor) · Beta(s + 1, n0 − s + 1) truncated to (τ, 1] (the posterior of q after the s of n0
# selection votes for the mode): the floor bounds the loss when the selection votes mislead to a factor 1/floor.


def log_binomial_cdf(trials: int, tau: float) -> np.ndarray:
    """log P(Bin(trials, τ) ≤ m) for m = 0..trials, from the log pmf summed in log space (no underflow, ~trials·ε
    relative error). With integers a + b − 1 = trials it is the beta upper tail the e-values need:
    1 − I_τ(a, b) = P(Bin(a + b − 1, τ) ≤ a − 1). One gammaln pass per table instead of one incomplete beta per entry:
    the τ slider re-decides a run through a table per look."""
    m = np.arange(trials + 1, dtype=np.float64)
    log_pmf = (gammaln(trials + 1.0) - gammaln(m + 1.0) - gammaln(trials - m + 1.0)
               + m * np.log(tau) + (trials - m) * np.log1p(-tau))
    return np.minimum(np.logaddexp.accumulate(log_pmf), 0.0)        # a sum of probabilities is at most 1


def log_evalue_beta_table(n: int, tau: float, n0: int, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """log M_n under the prior Beta(s + 1, n0 − s + 1) truncated to (τ, 1], for s in `rows` and k in `columns`
    ([len(rows), len(columns)]). Closed form: the integral of (q/τ)^k ((1 − q)/(1 − τ))^(n − k) against the truncated
    beta density is B(a + k, b + n − k)(1 − I_τ(a + k, b + n − k)) / (B(a, b)(1 − I_τ(a, b)) τ^k (1 − τ)^(n − k)) with
    a = s + 1, b = n0 − s + 1; both tails are binomial CDFs (log_binomial_cdf): 1 − I_τ(a + k, b + n − k) =
    P(Bin(n0 + n + 1, τ) ≤ s + k) and 1 − I_τ(a, b) = P(Bin(n0 + 1, τ) ≤ s)."""
    s = np.asarray(rows, dtype=np.int64)[:, None]
    k = np.asarray(columns, dtype=np.int64)[None, :]
    a, b = s + 1.0, n0 - s + 1.0
    mass = betaln(a, b) + log_binomial_cdf(n0 + 1, tau)[s]                # log ∫_τ^1 prior before normalising
    joint = betaln(a + k, b + n - k) + log_binomial_cdf(n0 + n + 1, tau)[s + k]
    return joint - mass - k * np.log(tau) - (n - k) * np.log1p(-tau)


def _log_evalue_uniform_table(n: int, tau: float, columns: np.ndarray) -> np.ndarray:
    """log_evalue(k, n, τ) for k in `columns` (0 ≤ k ≤ n, n ≥ 1), its beta tail as a binomial CDF:
    1 − I_τ(k + 1, n − k + 1) = P(Bin(n + 1, τ) ≤ k)."""
    k = np.asarray(columns, dtype=np.int64)
    return (betaln(k + 1.0, n - k + 1.0) + log_binomial_cdf(n + 1, tau)[k] - np.log1p(-tau)
            - k * np.log(tau) - (n - k) * np.log1p(-tau))


def check_floor(floor: object) -> float:
    """The uniform share of the selection-informed prior: in (0, 1] (1: the uniform prior alone)."""
    if isinstance(floor, bool) or not isinstance(floor, (int, float, np.floating)) or not 0.0 < floor <= 1.0:
        raise CertlibError(f"prior floor must be a share in (0, 1], got {floor!r}")
    return float(floor)


def log_evalue_table(n: int, tau: float, n0: int = 0, floor: float = 1.0, rows: np.ndarray | None = None,
                     columns: np.ndarray | None = None) -> np.ndarray:
    """log M_n for every (s, k): s selection votes for the mode out of n0 (the values in `rows`, default 0..n0) and k
    estimation votes (the values in `columns`, default 0..n), [len(rows), len(columns)]. floor = 1 (or n0 = 0) is the
    uniform prior, the same row for every s."""
    s = np.arange(n0 + 1) if rows is None else np.asarray(rows)
    k = np.arange(n + 1) if columns is None else np.asarray(columns)
    if not 0.0 < float(tau) < 1.0:
        raise CertlibError(f"tau must be in (0, 1), got {tau!r}")
    if k.size and not (0 <= k.min() and k.max() <= n) or s.size and not (0 <= s.min() and s.max() <= n0):
        raise CertlibError(f"votes out of range: k in [0, {n}] and s in [0, {n0}] are needed")
    uniform = _log_evalue_uniform_table(n, tau, k) if n else np.zeros(len(k))
    if check_floor(floor) == 1.0 or n0 == 0 or n == 0:
        return np.broadcast_to(uniform, (len(s), len(k)))
    informed = log_evalue_beta_table(n, tau, n0, s, k)
    return np.logaddexp(np.log(floor) + uniform[None, :], np.log1p(-floor) + informed)


def pvalues(k: np.ndarray, n: int, tau: float, s: np.ndarray | None = None, n0: int = 0,
            floor: float = 1.0) -> np.ndarray:
    """min(1, 1/M_n) for every test: k estimation votes for the mode out of n, and s of n0 selection votes for it
    (the prior's input; unused when floor = 1)."""
    return np.exp(-np.maximum(log_evalues(k, n, tau, s, n0, floor), 0.0))


def log_evalues(k: np.ndarray, n: int, tau: float, s: np.ndarray | None = None, n0: int = 0,
                floor: float = 1.0) -> np.ndarray:
    """log M_n for every test (as pvalues, before min(1, 1/M)). A lookup: only the table's rows and columns between
    the smallest and largest s and k present are evaluated (the mode is the majority: at most n0/2 + 1 rows),
    whatever the number of pixels; the lookup is one flat gather."""
    k = np.asarray(k)
    k_low, k_high = int(k.min(initial=0)), int(k.max(initial=0))
    columns = np.arange(k_low, k_high + 1)
    if s is None or check_floor(floor) == 1.0 or n0 == 0:
        return log_evalue_table(n, tau, columns=columns)[0][k - k_low]
    s = np.asarray(s)
    s_low, s_high = int(s.min(initial=0)), int(s.max(initial=0))
    table = log_evalue_table(n, tau, n0, floor, np.arange(s_low, s_high + 1), columns)
    flat = (s - s_low).astype(np.intp) * len(columns) + (k - k_low)
    return np.ascontiguousarray(table).ravel()[flat]


def pvalue_table(n: int, tau: float) -> np.ndarray:
    """anytime_pvalue(k, n, τ) for k = 0..n: the votes take only n + 1 values, so a decision over a 224² map × K
    levels evaluates the beta function n + 1 times and looks the rest up."""
    return np.asarray(anytime_pvalue(np.arange(n + 1), n, tau), dtype=np.float64)


def futile(votes_for_mode: np.ndarray, n: int, tau: float, alpha: float) -> np.ndarray:
    """Pixels whose probability of their mode is shown to be below τ: the mirrored test of H0: p ≥ τ (the votes
    *against* the mode, against 1 − τ) rejects at α. Such a pixel will almost surely never be certified, so the
    sampler may stop waiting for it. Only the stopping uses this; the certificate never does, so its level needs
    no correction (a wrong "futile" costs power, never validity)."""
    k = np.asarray(votes_for_mode, dtype=np.int64)
    if n == 0:
        return np.zeros(k.shape, dtype=bool)
    return pvalue_table(n, 1.0 - tau)[n - k] <= alpha


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """The anytime-valid (1 − α) lower confidence bound on a Bernoulli probability from k successes in n: the
    smallest q that H0: p ≤ q is not rejected at α. By Ville's inequality the true p stays above it at every n at
    once with probability ≥ 1 − α, so it may be read at a data-dependent stopping time (Clopper–Pearson may not).
    The p-value grows with q (checked on a grid in tests), so the bound is found by bisection to 1e-12."""
    a = stats.check_scalar_alpha(alpha)
    k_arr, n_arr = stats.check_counts(k, n)
    k, n = int(k_arr), int(n_arr)
    if k == 0 or anytime_pvalue(k, n, 1e-12) > a:
        return 0.0
    low, high = 1e-12, 1.0 - 1e-12           # pvalue(low) ≤ α; pvalue(q) → 1 as q → 1
    if anytime_pvalue(k, n, high) <= a:
        return high
    while high - low > 1e-12:
        mid = 0.5 * (low + high)
        if anytime_pvalue(k, n, mid) <= a:
            low = mid
        else:
            high = mid
    return low


def min_samples_to_certify(tau: float, alpha: float, num_tests: int, n_max: int = 10**6) -> int:
    """Smallest n at which n agreeing votes out of n pass the anytime test at α / num_tests (the first level of
    Holm); n_max + 1 when none up to n_max does."""
    from certlib.pixel import cert as pixel_cert

    t, a = pixel_cert._check_tau(tau), stats.check_scalar_alpha(alpha)
    return _min_samples(t, a / stats._check_num_tests(num_tests), int(n_max))


@functools.lru_cache(maxsize=256)
def _min_samples(t: float, level: float, n_max: int) -> int:
    # every frame's certificate asks for it, and the bisection costs ~20 beta-function evaluations: memoised
    low, high = 1, n_max + 1
    while low < high:                       # anytime_pvalue(n, n, τ) decreases in n: bisect on it
        mid = (low + high) // 2
        if anytime_pvalue(mid, mid, t) <= level:
            high = mid
        else:
            low = mid + 1
    return low


def decide(votes_for_mode: np.ndarray, modes: np.ndarray, n: int, sigma: float, tau: float, alpha: float,
           correction: str = "holm"):
    """pixel_cert.decide with anytime-valid p-values: the same certificate (classes, R, shares), valid at any
    stopping time of the estimation sampling, not only at an n fixed in advance. Its p-values are never smaller than
    the fixed-n test's, so it certifies a subset of what that test would certify at the same counts."""
    from certlib.pixel import cert as pixel_cert

    radius = pixel_cert.certified_radius(sigma, tau)
    k, cls, n, t, a, corr = pixel_cert._check_decision(votes_for_mode, modes, n, tau, alpha, correction)
    pvalues = pvalue_table(n, t)[k]
    rejected = stats.holm(pvalues, a) if corr == "holm" else stats.bonferroni(pvalues, a)
    classes = np.where(rejected, cls, np.int8(pixel_cert.ABSTAIN)).astype(np.int8)
    return pixel_cert.PixelCertificate(
        classes=classes, pvalues=pvalues, radius=radius, sigma=float(sigma), tau=t, alpha=a, correction=corr, n=n,
        num_tests=int(classes.size), min_n=min_samples_to_certify(t, a, int(classes.size)),
        fractions=pixel_cert._fractions(classes))
