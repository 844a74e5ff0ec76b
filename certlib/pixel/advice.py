"""What would help when a top-K level certifies nothing: computed from the counts on screen, never guessed.

A pixel is certified when its vote p-value passes Holm over all m pixel tests. Holm's first step is the Bonferroni
level α/m, and Holm rejects everything Bonferroni rejects, so "the best top-K pixel's p-value ≤ α/m" is a
*sufficient* condition for at least one certified top-K pixel. Both knobs below are found from that condition:

- τ: the p-value of k votes out of n grows with τ, so the largest τ that certifies the best pixel is found by
  bisection. The caller re-decides at that τ to confirm (`TauAdvice.confirmed`) before offering it.
- n: if the best pixel's vote share k/n stays what it is, more votes make its p-value fall; the smallest such n is
  found by bisection on the p-value of round(share·n') out of n'. A share ≤ τ can never pass, whatever n.

Pure numpy/scipy: no streamlit here (pages call these and draw the buttons).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from certlib import stats
from certlib.pixel import anytime, cert as pixel_cert
from certlib.errors import CertlibError

PValueFn = Callable[[int, int, float], float]
TAU_FLOOR = 0.5 + 1e-3          # R = σ·Φ⁻¹(τ) must stay > 0
N_LIMIT = 100_000


def pvalue_function(test: str) -> PValueFn:
    """The vote p-value of each test: the exact binomial tail (fixed n) or the anytime-valid mixture p-value."""
    if test == "fixed":
        return lambda k, n, tau: float(stats.binom_test_greater(k, n, tau))
    if test == "anytime":
        return lambda k, n, tau: float(anytime.anytime_pvalue(k, n, tau))
    raise CertlibError(f"test must be 'fixed' or 'anytime', got {test!r}")


@dataclass(frozen=True)
class BestPixel:
    """The top-K pixel of one level with the most votes for being in the top K."""

    level: float            # K in percent
    votes: int              # k: estimation votes for "in the top K%"
    n: int

    @property
    def share(self) -> float:
        return self.votes / self.n


def best_top_pixel(modes: np.ndarray, votes_for_mode: np.ndarray, n: int, level: float) -> BestPixel | None:
    """The level's pixel whose mode is "in the top K%" with the most estimation votes; None when no pixel's mode is
    top-K (then neither τ nor n can certify one: more selection copies n0 could)."""
    top = np.asarray(modes) == 1
    if not top.any():
        return None
    return BestPixel(float(level), int(np.asarray(votes_for_mode)[top].max()), int(n))


def largest_tau(best: BestPixel, level_alpha: float, pvalue: PValueFn, tau_now: float) -> float | None:
    """The largest τ in (½, τ_now) at which the best pixel's p-value is ≤ level_alpha (α/m), to 1e-4; None when
    even τ just above ½ does not certify it."""
    if pvalue(best.votes, best.n, TAU_FLOOR) > level_alpha:
        return None
    low, high = TAU_FLOOR, float(tau_now)
    if pvalue(best.votes, best.n, high) <= level_alpha:
        return None                          # it passes at τ_now already: τ is not what holds it back
    while high - low > 1e-4:
        mid = 0.5 * (low + high)
        low, high = (mid, high) if pvalue(best.votes, best.n, mid) <= level_alpha else (low, mid)
    return math.floor(low * 1e4) / 1e4       # rounded down, so it still passes


def smallest_n(best: BestPixel, level_alpha: float, pvalue: PValueFn, tau: float,
               n_limit: int = N_LIMIT) -> int | None:
    """Smallest n' > n at which round(share·n') votes out of n' pass level_alpha at τ, if the best pixel's vote
    share holds; None when its share is ≤ τ (no n helps) or n' would exceed n_limit."""
    share = best.share
    if share <= tau:
        return None

    def passes(m: int) -> bool:
        return pvalue(int(round(share * m)), m, tau) <= level_alpha

    if not passes(n_limit):
        return None
    low, high = best.n, n_limit              # passes(high); the p-value falls with m for a share above τ
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if passes(mid) else (mid, high)
    return high


@dataclass(frozen=True)
class LevelAdvice:
    """For one top-K level that certifies no top-K pixel: the best pixel and the knobs that would certify it."""

    best: BestPixel | None
    tau: float | None              # a τ that certifies ≥ 1 top-K pixel on these counts (confirmed by re-deciding)
    n: int | None                  # the n at which the best pixel would certify if its vote share holds


def advise_level(modes: np.ndarray, votes_for_mode: np.ndarray, n: int, level: float, tau: float, alpha: float,
                 num_tests: int, paths: Sequence[tuple[str, float]] = (("fixed", 1.0),),
                 certifies_at: Callable[[float], bool] | None = None) -> LevelAdvice:
    """Advice for one level (modes, votes: that level's [H,W] arrays). `paths` are the tests whose p-value can
    certify a pixel, each with its share of α: the fixed-n test alone (("fixed", 1)), or, for a progressive run
    whose p-value is min(p̃/(1 − s), p_plan/s), ("anytime", 1 − s) and, once the budget was reached, ("fixed", s).
    The τ is the largest any path reaches; the n forecast uses the first path (the one more samples feed).
    `certifies_at(τ')` re-decides the whole certificate at τ' and says whether this level then has a certified
    top-K pixel; a τ suggestion that it does not confirm is dropped (Holm could spend its first steps elsewhere)."""
    pixel_cert._check_tau(tau)
    a, m = stats.check_scalar_alpha(alpha), stats._check_num_tests(num_tests)
    best = best_top_pixel(modes, votes_for_mode, n, level)
    if best is None or not paths:
        return LevelAdvice(best, None, None)
    taus = [largest_tau(best, a * share / m, pvalue_function(test), tau) for test, share in paths if share > 0]
    new_tau = max((t for t in taus if t is not None), default=None)
    if new_tau is not None and certifies_at is not None and not certifies_at(new_tau):
        new_tau = None
    test, share = paths[0]
    return LevelAdvice(best, new_tau, smallest_n(best, a * share / m, pvalue_function(test), tau))
