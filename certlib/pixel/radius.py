"""Every pixel's own certified radius, from the counts already sampled (issue #29; design §18).

The pixel certificate answers one radius at a time: at R(τ) = σ·Φ⁻¹(τ), which pixels keep their class. The same
counts say more. If p̲_i is a lower confidence bound on the probability that pixel i's noisy top-K membership equals
its mode ĉ_i, then (Cohen et al.'s argument, per pixel, as in SegCertify) its class is certified for every ℓ2
perturbation up to

    R_i = σ·Φ⁻¹(p̲_i)    when p̲_i > ½,   and no radius (abstain) otherwise.

For the map of all R_i to be read at once — a heat map, a share-versus-ε curve, any ε chosen after looking — the
bounds must hold *simultaneously* for all m = pixels × levels tests with probability ≥ 1 − α:

* **fixed n** — one-sided Clopper–Pearson bounds at α/m (Bonferroni). CP at level α' exceeds τ exactly when the
  binomial test P[Bin(n, τ) ≥ k] < α', so at R(τ) the radii certify what Bonferroni at τ certifies; Holm may certify a
  few more there (it is a step-down test for one τ, not a set of simultaneous bounds).
* **anytime** — the anytime-valid bound of certlib.pixel.anytime (the uniform-mixture e-process inverted in q) at
  α·(1 − s)/m, maximised over the frames so far: Ville's inequality holds for all n at once, so the running maximum
  is still a valid bound and no radius ever shrinks. When sampling reached the planned budget (the fixed n that was
  set before the first vote), the Clopper–Pearson bound at α·s/m on those counts joins by taking the larger bound:
  the two families fail with probability at most α(1 − s) + α·s = α (union bound), the split s of the α-split that
  the live certificate uses (certlib.pixel.progressive.PLAN_SHARE).

The uniform mixture (not the selection-informed prior of the live certificate) is used here because its p-value
increases with q, so "reject H0: p ≤ q" for one q implies it for every smaller q and the confidence set is an interval.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import beta, norm

from certlib import stats
from certlib.pixel import anytime
from certlib.errors import CertlibError
from certlib.pixel.cert import ABSTAIN, _check_sigma
from certlib.pixel.progressive import PLAN_SHARE, Trajectory, check_plan_share
from certlib.smoothing.sampling import TopKCounts

SCHEMES = ("bonferroni", "anytime")
_BISECTION_STEPS = 48          # the bound to 2⁻⁴⁸ in q: far below the width of any bound at n ≤ 10⁶


@dataclass(frozen=True)
class PixelRadii:
    """Per test (level × pixel): the class it keeps and the radius up to which it keeps it, all valid together."""

    k_percents: tuple[float, ...]
    radii: np.ndarray              # [K,H,W] float64: R_i = σ·Φ⁻¹(p̲_i); NaN where p̲_i ≤ ½ (no radius: abstain)
    classes: np.ndarray            # [K,H,W] int8: the mode ĉ_i where a radius exists, −1 (ABSTAIN) elsewhere
    lower_bounds: np.ndarray       # [K,H,W] float64: p̲_i
    sigma: float
    alpha: float
    num_tests: int                 # m: every pixel × every level, the Bonferroni divisor
    scheme: str                    # "bonferroni" (fixed n) | "anytime" (live frames, plus the budget's look)
    n: int

    def certified_at(self, eps: float) -> np.ndarray:
        """[K,H,W] int8: the classes certified for every ‖δ‖₂ ≤ ε (−1 where R_i < ε or no radius)."""
        if not np.isfinite(eps) or eps < 0:
            raise CertlibError(f"eps must be a finite radius ≥ 0, got {eps!r}")
        kept = np.nan_to_num(self.radii, nan=-1.0) >= eps
        return np.where(kept, self.classes, np.int8(ABSTAIN)).astype(np.int8)

    def curve(self, eps: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
        """Shares against ε, per level ([len(eps), K]): `top`, the level's top-K pixels (by their mode) certified in
        the top K; `tests`, all the level's pixels certified in either class. Sorted radii and a binary search per
        level: a 224² map × 3 levels on 121 radii costs milliseconds."""
        grid = np.asarray(eps, dtype=np.float64)
        flat = np.nan_to_num(self.radii, nan=-1.0).reshape(len(self.k_percents), -1)
        is_top = self.classes.reshape(len(self.k_percents), -1) == 1
        pixels = flat.shape[1]
        tests, top = np.empty((grid.size, flat.shape[0])), np.empty((grid.size, flat.shape[0]))
        for j, k in enumerate(self.k_percents):
            every, ins = np.sort(flat[j]), np.sort(flat[j][is_top[j]])
            tests[:, j] = (pixels - np.searchsorted(every, grid, side="left")) / pixels
            top[:, j] = (ins.size - np.searchsorted(ins, grid, side="left")) / max(1.0, k / 100.0 * pixels)
        return {"eps": grid, "tests": tests, "top": top}


def radius_from_bound(lower: np.ndarray, sigma: float) -> np.ndarray:
    """σ·Φ⁻¹(p̲) where p̲ > ½, NaN elsewhere (no radius)."""
    lower = np.asarray(lower, dtype=np.float64)
    with np.errstate(divide="ignore"):
        r = _check_sigma(sigma) * norm.ppf(lower)
    return np.where(lower > 0.5, r, np.nan)


@functools.lru_cache(maxsize=512)
def clopper_pearson_table(n: int, level: float) -> np.ndarray:
    """The one-sided Clopper–Pearson lower bound at `level` for k = 0..n (a decision looks the votes up)."""
    k = np.arange(n + 1, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        low = beta.ppf(level, k, n - k + 1.0)
    low = np.where(k == 0, 0.0, low)
    low.flags.writeable = False
    return low


def anytime_bound_table(n: int, level: float) -> np.ndarray:
    """certlib.pixel.anytime's anytime-valid lower bound at `level` for k = 0..n (see anytime_bound_tables)."""
    return anytime_bound_tables((n,), level)[0]


_ANYTIME_TABLES: dict[tuple[int, float], np.ndarray] = {}
_ANYTIME_TABLES_MAX = 2048


def anytime_bound_tables(ns: Sequence[int], level: float) -> list[np.ndarray]:
    """The anytime-valid lower bounds at `level` for k = 0..n, one table per n, by one bisection in q over every
    (n, k) not computed before (the uniform-mixture p-value increases with q, so each bound is where it crosses
    `level`). Only k > n/2 can bound p above ½ (the bound stays below k/n), and only such a bound gives a radius:
    the others are set to 0, which claims nothing. Tables are kept (read-only) for later frames and sliders."""
    missing = sorted({int(n) for n in ns if (int(n), level) not in _ANYTIME_TABLES})
    if missing:
        k = np.concatenate([np.arange(n // 2 + 1, n + 1) for n in missing])
        n_of = np.concatenate([np.full(n - n // 2, n) for n in missing])
        low, high = np.full(k.size, 1e-12), np.full(k.size, 1.0 - 1e-12)
        rejected_low = np.asarray(anytime.anytime_pvalue(k, n_of, low)) <= level
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (low + high)
            below = np.asarray(anytime.anytime_pvalue(k, n_of, mid)) <= level
            low, high = np.where(below, mid, low), np.where(below, high, mid)
        bound = np.where(rejected_low, low, 0.0)
        if len(_ANYTIME_TABLES) + len(missing) > _ANYTIME_TABLES_MAX:
            _ANYTIME_TABLES.clear()
        for n in missing:
            table = np.zeros(n + 1)
            table[n // 2 + 1:] = bound[n_of == n]
            table.flags.writeable = False
            _ANYTIME_TABLES[(n, level)] = table
    return [_ANYTIME_TABLES[(int(n), level)] for n in ns]


def _radius_table(bounds: np.ndarray, sigma: float) -> np.ndarray:
    """radius_from_bound for a table of n + 1 bounds, −inf for "no radius" so that tables combine by maximum."""
    return np.nan_to_num(radius_from_bound(bounds, sigma), nan=-np.inf)


def _result(counts: TopKCounts, lower: np.ndarray, radius: np.ndarray, alpha: float, m: int,
            scheme: str) -> PixelRadii:
    radii = np.where(np.isfinite(radius), radius, np.nan)
    classes = np.where(np.isfinite(radius), counts.modes, np.int8(ABSTAIN)).astype(np.int8)
    return PixelRadii(counts.k_percents, radii, classes, lower, counts.sigma, alpha, m, scheme, counts.n)


def radii_from_votes(votes_for_mode: np.ndarray, modes: np.ndarray, n: int, sigma: float, alpha: float,
                     k_percents: Sequence[float]) -> PixelRadii:
    """Radii of fixed-n votes ([K,H,W] votes for each test's mode among n, and the modes): Clopper–Pearson at α/m
    on every test, valid together at 1 − α."""
    a = stats.check_scalar_alpha(alpha)
    k = np.asarray(votes_for_mode, dtype=np.int64)
    if n < 1:
        raise CertlibError(f"radii need estimation samples, got n = {n}")
    m = int(k.size)
    bounds = clopper_pearson_table(int(n), a / m)
    radius = _radius_table(bounds, sigma)[k]
    classes = np.where(np.isfinite(radius), np.asarray(modes), np.int8(ABSTAIN)).astype(np.int8)
    return PixelRadii(tuple(float(v) for v in k_percents), np.where(np.isfinite(radius), radius, np.nan), classes,
                      bounds[k], float(sigma), a, m, "bonferroni", int(n))


def fixed_n_radii(counts: TopKCounts, alpha: float, levels: Sequence[float] | None = None) -> PixelRadii:
    """Radii of a fixed-n run: Clopper–Pearson at α/m on every level × pixel, valid together at 1 − α."""
    sub = counts if levels is None else counts.select_levels(levels)
    return radii_from_votes(sub.votes_for_mode, sub.modes, sub.n, sub.sigma, alpha, sub.k_percents)


def trajectory_radii(trajectory: Trajectory, alpha: float, levels: Sequence[float] | None = None,
                     plan_share: float = PLAN_SHARE) -> PixelRadii:
    """Radii of a progressive run at its last frame: the running maximum over frames of the anytime bound at
    α(1 − s)/m, joined by Clopper–Pearson at α·s/m at the planned budget once n has reached it."""
    a, share = stats.check_scalar_alpha(alpha), check_plan_share(plan_share)
    counts = trajectory.counts
    ks = tuple(float(k) for k in (levels if levels is not None else counts.k_percents))
    idx = [counts.k_percents.index(k) for k in ks]
    sub = counts.select_levels(ks)
    modes, m = sub.modes == 1, int(sub.modes.size)
    lower, radius = np.zeros(modes.shape), np.full(modes.shape, -np.inf)
    live = dict(zip(trajectory.n, anytime_bound_tables(trajectory.n, a * (1.0 - share) / m)))
    for n, ones in trajectory.ones():
        tables = [live[n]] if n > 0 else []
        if share > 0 and trajectory.looked and n == trajectory.plan_n:
            tables.append(clopper_pearson_table(n, a * share / m))
        if not tables:
            continue
        k = np.where(modes, ones[idx], n - ones[idx])
        for bounds in tables:
            np.maximum(lower, bounds[k], out=lower)
            np.maximum(radius, _radius_table(bounds, sub.sigma)[k], out=radius)
    return _result(sub, lower, radius, a, m, "anytime")


def counts_radii(counts: TopKCounts, test: str, alpha: float, levels: Sequence[float] | None = None) -> PixelRadii:
    """Radii of stored counts by the test they were sampled for: Clopper–Pearson for a fixed n; for counts of an
    anytime run (stopped at a data-dependent n, no trajectory kept) the anytime bound at their n, at the full α."""
    if test == "fixed":
        return fixed_n_radii(counts, alpha, levels)
    if test != "anytime":
        raise CertlibError(f"test must be 'fixed' or 'anytime', got {test!r}")
    return trajectory_radii(Trajectory.begin(counts, None), alpha, levels, plan_share=0.0)


def level_columns(radii: PixelRadii) -> list[dict[str, float]]:
    """Per level: the share of its tests with a radius, and the median and 90th percentile of those radii (NaN when
    none): the CLI's and the store's per-run figures."""
    out = []
    for i in range(len(radii.k_percents)):
        r = radii.radii[i][np.isfinite(radii.radii[i])]
        out.append({"with_radius": r.size / radii.radii[i].size,
                    "radius_median": float(np.median(r)) if r.size else float("nan"),
                    "radius_p90": float(np.quantile(r, 0.9)) if r.size else float("nan")})
    return out
