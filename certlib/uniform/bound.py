"""Closed-form bounds for uniformly smoothed attributions (Wang & Kong 2024; design §4).

h(x) = E_{η ~ U(B(0, r))}[g(x + η)] with ‖g‖₂ ≤ M. Moving x by δ (‖δ‖₂ = ε) only exchanges the two caps that the
balls B(x, r) and B(x + δ, r) do not share, so ‖h(x + δ) − h(x)‖ ≤ a := M · V_U / V_S with V_U = 2 (V_S − V_∩).

V_∩ / V_S is two hyperspherical caps of height r − ε/2: I_{1 − (ε/2r)²}((d+1)/2, 1/2). Its complement is computed
directly as I_{(ε/2r)²}(1/2, (d+1)/2) so that tiny non-overlaps in d ~ 10⁵ keep full relative precision.

Two cosine bounds from a:
- "paper": T = ‖h‖ / sqrt(‖h‖² + a²), the published form (exact when the change is orthogonal to h);
- "strict": sqrt(1 − (a/‖h‖)²) for a < ‖h‖ — the worst case over every change of norm ≤ a. For a > ‖h‖ the moved
  map can point anywhere (h + Δ = −t·h is reachable), so the only true bound is −1; it is returned as such rather
  than clamped to 0, which would claim "never opposite" without proof (a = ‖h‖ exactly gives 0).
The strict one is never larger. The published one is *not* a valid bound: docs/uniform_bound.md constructs bounded
g for which cos(h(x), h(x+δ)) falls below it, in every dimension.
"""
from __future__ import annotations

import math

from scipy.optimize import brentq
from scipy.special import betainc

from certlib import validate
from certlib.errors import CertlibError

BOUNDS = ("paper", "strict")


_positive = validate.positive


def _dimension(d: int) -> int:
    return validate.count("d", d, high=10**9)


def ball_non_overlap_fraction(d: int, r: float, eps: float) -> float:
    """1 − vol(B(0,r) ∩ B(ε·e1,r)) / vol(B(0,r)), accurate even when it is tiny."""
    d, r, eps = _dimension(d), _positive("r", r), _positive("eps", eps, allow_zero=True)
    if eps >= 2 * r:
        return 1.0
    return float(betainc(0.5, (d + 1) / 2, (eps / (2 * r)) ** 2))


def ball_overlap_fraction(d: int, r: float, eps: float) -> float:
    """vol(B(0,r) ∩ B(ε·e1,r)) / vol(B(0,r)) for balls in R^d."""
    d, r, eps = _dimension(d), _positive("r", r), _positive("eps", eps, allow_zero=True)
    if eps >= 2 * r:
        return 0.0
    # scipy's I_x(a, 1/2) loses ~1e-9 relative accuracy for x near 1 and a ~ 1e5 (checked against mpmath); there
    # the complement is exact to rounding. Where the overlap itself is small, the direct form keeps its precision.
    non_overlap = ball_non_overlap_fraction(d, r, eps)
    if non_overlap < 1.0 - 1e-3:  # complement accurate to ~1e-13 relative
        return 1.0 - non_overlap
    return float(betainc((d + 1) / 2, 0.5, 1.0 - (eps / (2 * r)) ** 2))


def difference_bound(M: float, d: int, r: float, eps: float) -> float:
    """a = M · V_U / V_S: the largest ‖h(x+δ) − h(x)‖ for any ‖δ‖ ≤ ε."""
    return _positive("M", M) * 2.0 * ball_non_overlap_fraction(d, r, eps)


def cosine_lower_bound(h_norm: float, M: float, d: int, r: float, eps: float, bound: str = "paper") -> float:
    """Lower bound T on cos(h(x), h(x+δ)) for every ‖δ‖₂ ≤ ε: in (0, 1] for "paper", in [−1, 1] for "strict"
    (−1 = nothing certified)."""
    h = _positive("h_norm", h_norm)
    a = difference_bound(M, d, r, eps)
    if bound == "paper":
        return h / math.hypot(h, a)
    if bound == "strict":
        if a > h:
            return -1.0
        return math.sqrt(max(0.0, 1.0 - (a / h) ** 2))
    raise CertlibError(f"bound must be one of {BOUNDS}, got {bound!r}")


def _check_target(T: float) -> float:
    if not (isinstance(T, (int, float)) and 0 < T < 1):
        raise CertlibError(f"T must be in (0, 1), got {T!r}")
    return float(T)


def max_certified_eps(h_norm: float, M: float, d: int, r: float, T: float, bound: str = "paper") -> float:
    """Largest ε with cosine_lower_bound ≥ T (the bound falls monotonically in ε); 0 if even ε → 0 fails."""
    T = _check_target(T)
    gap = lambda e: cosine_lower_bound(h_norm, M, d, r, e, bound) - T  # noqa: E731
    if gap(0.0) < 0:
        return 0.0
    if gap(2 * r) >= 0:
        return 2 * r  # beyond 2r the balls are disjoint and the bound stays constant: report where it saturates
    return brentq(gap, 0.0, 2 * r, xtol=1e-12 * r, rtol=1e-12)


def min_smoothing_radius(h_norm: float, M: float, d: int, eps: float, T: float, bound: str = "paper") -> float:
    """Smallest r with cosine_lower_bound ≥ T for this ε (the bound rises monotonically in r), h_norm held fixed."""
    T, eps = _check_target(T), _positive("eps", eps)
    gap = lambda r: cosine_lower_bound(h_norm, M, d, r, eps, bound) - T  # noqa: E731
    lo, hi = eps / 2, eps
    if gap(lo) >= 0:
        return lo
    while gap(hi) < 0:
        hi *= 2
        if hi > 1e12 * eps:
            raise CertlibError(f"no radius reaches T={T} for eps={eps}: ‖h‖={h_norm} is too small against M={M}")
    return brentq(gap, lo, hi, xtol=1e-12 * eps, rtol=1e-12)


def h_norm_lower_confidence(h_hat_norm: float, M: float, n: int, delta: float) -> float:
    """With probability ≥ 1 − δ, ‖h(x)‖ ≥ ‖ĥ(x)‖ − t, where ĥ is the mean of n i.i.d. maps with ‖g‖ ≤ M and
    t = M/√n + M·sqrt(2 ln(1/δ)/n): E‖ĥ − h‖ ≤ M/√n (variance of the mean), and ‖ĥ − h‖ changes by at most 2M/n
    when one sample changes, so McDiarmid's inequality adds the deviation term. Clipped at 0."""
    h_hat, M = _positive("h_hat_norm", h_hat_norm, allow_zero=True), _positive("M", M)
    validate.count("n", n)
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise CertlibError(f"delta must be in (0, 1), got {delta!r}")
    t = M / math.sqrt(n) + M * math.sqrt(2 * math.log(1 / delta) / n)
    return max(0.0, h_hat - t)
