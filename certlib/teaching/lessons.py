"""Toy computations behind the Learn page (design §7): small, exact, instant (numpy/scipy only).

Five lessons, one per section of this module:
1. randomized smoothing on the plane (Cohen et al. 2019): a hand-made classifier f on R², the smoothed classifier
   g(x) = argmax_c P[f(x + N(0, σ²I)) = c], its certified ℓ2 radius σ·Φ⁻¹(p_A) and the τ-threshold radius σ·Φ⁻¹(τ)
   of the segmentation form (Fischer et al. 2021) that the pixel certificate of design §3 uses;
2. a per-pixel certificate on an 8×8 toy "attribution" whose top-K pixels flip under noise: votes, p-values, Holm;
3. the ball-overlap geometry behind the uniform-smoothing bound (design §4);
4. the certified top-K overlap of sparsified SmoothGrad (design §5) on a toy map of per-pixel values in [0, 1];
5. every pixel's own radius (design §18), from the votes of lesson 2's toy (certlib.pixel.radius).

Nothing here touches a model; every sample is drawn from a seeded numpy generator, so the page is reproducible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from certlib import stats
from certlib import validate
from certlib.errors import CertlibError
from certlib.pixel import cert as pixel_cert, radius as pixel_radius
from certlib.uniform.bound import ball_overlap_fraction, difference_bound

SELECTION_SAMPLES = 31   # n0: odd, so a per-pixel majority never ties


# ---------------------------------------------------------------------------------------------- validation

def _positive(name: str, value: object) -> float:
    return validate.positive(name, value)


def _non_negative(name: str, value: object) -> float:
    return validate.positive(name, value, allow_zero=True)


def _count(name: str, value: object, minimum: int = 1) -> int:
    return validate.count(name, value, low=minimum)


_tau = validate.tau
_alpha = validate.alpha


# ------------------------------------------------------------------------------------ 1. smoothing on the plane

@dataclass(frozen=True)
class PlaneClassifier:
    """A hand-made base classifier f on R²: the nearest of `centres` (Voronoi cells, piecewise-linear borders),
    except inside an optional disc ("island"), which is its own class, the last one."""

    centres: tuple[tuple[float, float], ...]
    names: tuple[str, ...]
    island_centre: tuple[float, float] | None = None
    island_radius: float = 0.0

    def __post_init__(self) -> None:
        expected = len(self.centres) + (self.island_centre is not None)
        if len(self.centres) < 1 or len(self.names) != expected:
            raise CertlibError(f"names must name {expected} classes, got {self.names!r}")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def predict(self, points: np.ndarray) -> np.ndarray:
        """Class index (int64) of each point of `points` [..., 2]."""
        z = np.asarray(points, dtype=np.float64)
        if z.shape[-1] != 2:
            raise CertlibError(f"points must have shape [..., 2], got {z.shape}")
        # One centre at a time: no [..., centres, 2] temporary, which matters for the smoothed-class grid.
        label = np.zeros(z.shape[:-1], dtype=np.int64)
        best = np.full(z.shape[:-1], np.inf)
        for index, (cx, cy) in enumerate(self.centres):
            squared = (z[..., 0] - cx) ** 2 + (z[..., 1] - cy) ** 2
            label = np.where(squared < best, index, label)
            best = np.minimum(best, squared)
        if self.island_centre is not None:
            inside = ((z - np.asarray(self.island_centre)) ** 2).sum(-1) < self.island_radius ** 2
            label = np.where(inside, len(self.centres), label)
        return label.astype(np.int64)


# Three Voronoi cells and a small island, on the square [-3, 3]²: large enough σ makes the island vanish from g.
TOY_CLASSIFIER = PlaneClassifier(centres=((-1.6, -0.9), (1.6, -0.9), (0.0, 1.6)),
                                 names=("A", "B", "C", "island"), island_centre=(1.2, 1.2), island_radius=0.45)
PLANE_LIMIT = 3.0


@dataclass(frozen=True)
class PlaneSmoothing:
    """The smoothed prediction at one point x: Cohen et al.'s CERTIFY and the τ-threshold test, side by side."""

    x: np.ndarray                 # [2]
    sigma: float
    samples: np.ndarray           # [n, 2] estimation samples x + σ·z
    labels: np.ndarray            # [n] f(samples)
    counts: np.ndarray            # [num_classes] votes among the n estimation samples
    top_class: int                # ĉ_A: the most frequent class of n0 separate selection samples
    n: int
    tau: float
    alpha: float

    @property
    def votes(self) -> int:
        return int(self.counts[self.top_class])

    @property
    def p_hat(self) -> float:
        """Point estimate of p_A = P[f(x + σz) = ĉ_A] (not used for a certificate: it is not a bound)."""
        return self.votes / self.n

    @property
    def p_lower(self) -> float:
        """One-sided (1 − α) Clopper–Pearson lower bound on p_A."""
        return float(stats.clopper_pearson_lower(self.votes, self.n, self.alpha))

    @property
    def cohen_radius(self) -> float | None:
        """σ·Φ⁻¹(p_A lower bound) when that bound exceeds 1/2, else None (abstain)."""
        return self.sigma * float(norm.ppf(self.p_lower)) if self.p_lower > 0.5 else None

    @property
    def tau_pvalue(self) -> float:
        """p-value of H0: p_A ≤ τ, i.e. P[Bin(n, τ) ≥ votes]."""
        return float(stats.binom_test_greater(self.votes, self.n, self.tau))

    @property
    def tau_radius(self) -> float | None:
        """σ·Φ⁻¹(τ) when the test shows p_A > τ at level α, else None (abstain)."""
        return self.sigma * float(norm.ppf(self.tau)) if self.tau_pvalue <= self.alpha else None


def smooth_on_plane(classifier: PlaneClassifier, x: Sequence[float], sigma: float, n: int, tau: float,
                    alpha: float, seed: int = 0, n0: int = SELECTION_SAMPLES) -> PlaneSmoothing:
    """Draw n0 selection samples to pick ĉ_A and n separate estimation samples to count its votes (Cohen et al.'s
    CERTIFY: choosing and estimating on the same samples would bias the bound upwards)."""
    point = np.asarray(x, dtype=np.float64)
    if point.shape != (2,) or not np.isfinite(point).all():
        raise CertlibError(f"x must be a finite point of the plane, got {x!r}")
    s, n, n0 = _positive("sigma", sigma), _count("n", n), _count("n0", n0)
    tau, alpha = _tau(tau), _alpha(alpha)
    seed = _count("seed", seed, minimum=0)
    selection = point + s * np.random.default_rng([seed, 0]).standard_normal((n0, 2))
    top_class = int(np.bincount(classifier.predict(selection), minlength=classifier.num_classes).argmax())
    samples = point + s * np.random.default_rng([seed, 1]).standard_normal((n, 2))
    labels = classifier.predict(samples)
    counts = np.bincount(labels, minlength=classifier.num_classes)
    return PlaneSmoothing(point, s, samples, labels, counts, top_class, n, tau, alpha)


def base_class_grid(classifier: PlaneClassifier, resolution: int = 201,
                    limit: float = PLANE_LIMIT) -> tuple[np.ndarray, np.ndarray]:
    """(axis [resolution], class [resolution, resolution]) of the base classifier f on a grid; rows are y."""
    axis = np.linspace(-limit, limit, _count("resolution", resolution, 2))
    return axis, classifier.predict(np.stack(np.meshgrid(axis, axis), axis=-1))


def smoothed_class_grid(classifier: PlaneClassifier, sigma: float, resolution: int = 61, samples: int = 400,
                        seed: int = 0, limit: float = PLANE_LIMIT) -> tuple[np.ndarray, np.ndarray]:
    """(axis [resolution], class [resolution, resolution]) of the smoothed classifier g on a grid, each cell's
    argmax over `samples` shared noise draws (common random numbers keep the picture free of speckle); rows are y."""
    s = _positive("sigma", sigma)
    resolution, samples = _count("resolution", resolution, 2), _count("samples", samples)
    axis = np.linspace(-limit, limit, resolution)
    grid = np.stack(np.meshgrid(axis, axis), axis=-1)                       # [y, x, 2]
    noise = s * np.random.default_rng([seed, 2]).standard_normal((samples, 2))
    labels = classifier.predict(grid[:, :, None, :] + noise)              # [y, x, samples]
    cells = np.arange(resolution * resolution).reshape(resolution, resolution, 1)
    counts = np.bincount((cells * classifier.num_classes + labels).ravel(),
                         minlength=resolution * resolution * classifier.num_classes)
    return axis, counts.reshape(resolution, resolution, classifier.num_classes).argmax(-1)


# ------------------------------------------------------------------------------------ 2. per-pixel certificate

def toy_attribution(size: int = 8) -> np.ndarray:
    """A fixed size×size "attribution" in [0, 1]: a strong and a weak bump on a faint slope; all values distinct."""
    size = _count("size", size, 2)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    strong = np.exp(-((xx - 0.3) ** 2 + (yy - 0.35) ** 2) / 0.06)
    weak = 0.7 * np.exp(-((xx - 0.75) ** 2 + (yy - 0.7) ** 2) / 0.03)
    values = strong + weak + 0.05 * xx + 0.013 * yy
    return (values - values.min()) / (values.max() - values.min())


def top_k_count(k_percent: float, num_pixels: int) -> int:
    """How many pixels "top K%" keeps: round(K% of the pixels), at least 1."""
    k = _positive("k_percent", k_percent)
    if k > 100:
        raise CertlibError(f"k_percent must be in (0, 100], got {k_percent!r}")
    return max(1, int(round(k / 100 * num_pixels)))


def flip_probabilities(attr: np.ndarray, k_percent: float, flip: float, width: float = 0.1) -> tuple[np.ndarray,
                                                                                                       np.ndarray]:
    """(clean top-K membership bool, per-pixel flip probability) for the toy: a pixel whose value sits on the top-K
    border flips with probability `flip`, one further away less, as flip·exp(−|a − t|/width) with t the border."""
    a = np.asarray(attr, dtype=np.float64)
    f = _non_negative("flip", flip)
    if f > 1:
        raise CertlibError(f"flip must be in [0, 1], got {flip!r}")
    k = top_k_count(k_percent, a.size)
    ordered = np.sort(a.ravel())[::-1]
    border = (ordered[k - 1] + ordered[k]) / 2 if k < a.size else ordered[-1] - 1.0
    return a > border, f * np.exp(-np.abs(a - border) / _positive("width", width))


@dataclass(frozen=True)
class PixelToyCertificate:
    """The toy's votes and decisions; `classes` is 1 (certified top-K), 0 (certified not top-K) or -1 (abstain)."""

    clean_top: np.ndarray     # bool [H,W]
    flip_prob: np.ndarray     # [H,W]
    mode: np.ndarray          # bool [H,W]: majority membership of the n0 selection draws
    votes: np.ndarray         # int [H,W]: estimation draws agreeing with the mode
    n: int
    pvalues: np.ndarray       # [H,W]: P[Bin(n, τ) ≥ votes]
    certified: np.ndarray     # bool [H,W]: rejected by the multiple-testing correction
    tau: float
    alpha: float
    correction: str

    @property
    def classes(self) -> np.ndarray:
        return np.where(self.certified, self.mode.astype(np.int64), -1)

    @property
    def vote_fraction(self) -> np.ndarray:
        return self.votes / self.n

    @property
    def samples_needed(self) -> int:
        """The smallest n at which anything can be certified at this τ and α over the toy's pixels."""
        return stats.min_samples_to_certify(self.tau, self.alpha, self.pvalues.size)


def _noisy_memberships(clean_top: np.ndarray, flip_prob: np.ndarray, draws: int, rng: np.random.Generator):
    flips = rng.random((draws, *clean_top.shape)) < flip_prob
    return clean_top ^ flips                                               # [draws, H, W]


def pixel_toy_certificate(flip: float, n: int, tau: float, alpha: float, seed: int = 0, k_percent: float = 25.0,
                          correction: str = "holm", attr: np.ndarray | None = None,
                          n0: int = SELECTION_SAMPLES) -> PixelToyCertificate:
    """The §3.2 certificate on the toy: under noise each pixel's top-K membership flips independently with its
    flip probability; the mode of n0 draws is the pixel's candidate class, its votes among n fresh draws give the
    p-value of H0: P[keeps the mode] ≤ τ, and Holm (or Bonferroni) over all pixels at α decides."""
    a = toy_attribution() if attr is None else np.asarray(attr, dtype=np.float64)
    n, n0, tau, alpha = _count("n", n), _count("n0", n0), _tau(tau), _alpha(alpha)
    if correction not in ("holm", "bonferroni"):
        raise CertlibError(f"correction must be 'holm' or 'bonferroni', got {correction!r}")
    seed = _count("seed", seed, minimum=0)
    clean_top, flip_prob = flip_probabilities(a, k_percent, flip)
    selection = _noisy_memberships(clean_top, flip_prob, n0, np.random.default_rng([seed, 3]))
    mode = 2 * selection.sum(0) > n0
    estimation = _noisy_memberships(clean_top, flip_prob, n, np.random.default_rng([seed, 4]))
    votes = (estimation == mode).sum(0)
    pvalues = np.asarray(stats.binom_test_greater(votes, n, tau))
    decide = stats.holm if correction == "holm" else stats.bonferroni
    return PixelToyCertificate(clean_top, flip_prob, mode, votes, n, pvalues, decide(pvalues, alpha), tau, alpha,
                               correction)


def holm_thresholds(num_tests: int, alpha: float) -> np.ndarray:
    """Holm's step-down thresholds α/(m − j + 1) for the sorted p-values, j = 1..m."""
    m = _count("num_tests", num_tests)
    return _alpha(alpha) / (m - np.arange(m))


# ------------------------------------------------------------------------------------ 3. ball overlap

def lens_outline(r: float, eps: float, points: int = 200) -> np.ndarray:
    """[2·points, 2] closed polygon around B((0,0), r) ∩ B((ε,0), r) in the plane (empty [0, 2] when ε ≥ 2r):
    the arc of the first circle right of x = ε/2, then the arc of the second circle left of it."""
    r, eps, points = _positive("r", r), _non_negative("eps", eps), _count("points", points, 2)
    if eps >= 2 * r:
        return np.zeros((0, 2))
    half_angle = math.acos(eps / (2 * r))
    first = np.linspace(-half_angle, half_angle, points)
    second = np.linspace(math.pi - half_angle, math.pi + half_angle, points)
    arc1 = np.stack([r * np.cos(first), r * np.sin(first)], axis=1)
    arc2 = np.stack([eps + r * np.cos(second), r * np.sin(second)], axis=1)
    return np.concatenate([arc1, arc2])


def overlap_versus_dimension(eps_over_r: float, dims: Sequence[int]) -> np.ndarray:
    """vol(B(0,1) ∩ B(ε/r·e1, 1)) / vol(B(0,1)) for each d in `dims` (the fraction depends on ε/r only)."""
    ratio = _non_negative("eps_over_r", eps_over_r)
    return np.array([ball_overlap_fraction(int(d), 1.0, ratio) for d in dims])


def bound_factor(d: int, eps_over_r: float) -> float:
    """V_U/V: ‖h(x+δ) − h(x)‖ ≤ M times this for ‖δ‖₂ ≤ ε (certlib.uniform.bound, computed without cancellation
    when V∩/V is near 1)."""
    return difference_bound(1.0, d, 1.0, eps_over_r)


def eps_over_r_for_overlap(d: int, overlap: float = 0.5) -> float:
    """The ε/r at which two balls in R^d share exactly `overlap` of their volume (the fraction falls from 1 at
    ε = 0 to 0 at ε = 2r, strictly, so the root is unique)."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise CertlibError(f"d must be a positive integer, got {d!r}")
    if not (isinstance(overlap, (int, float)) and 0 < overlap < 1):
        raise CertlibError(f"overlap must be in (0, 1), got {overlap!r}")
    return float(brentq(lambda e: ball_overlap_fraction(int(d), 1.0, e) - overlap, 0.0, 2.0, xtol=1e-14))


def dimension_ladder(max_dim: int = 150_528, per_decade: int = 6) -> np.ndarray:
    """Integer dimensions from 1 to max_dim, about evenly spaced on a log axis, with max_dim last."""
    d = np.unique(np.round(np.logspace(0, math.log10(_count("max_dim", max_dim)),
                                       int(per_decade * math.log10(max_dim)) + 1)).astype(np.int64))
    return np.unique(np.append(d, max_dim))


# ------------------------------------------------------------------------------------ 4. top-K overlap

def toy_smoothgrad(size: int = 8) -> np.ndarray:
    """A toy smoothed sparsified map ḡ in [0.02, 0.98]: the toy attribution squeezed away from 0 and 1, where
    Φ⁻¹ would be infinite."""
    return 0.02 + 0.96 * toy_attribution(size)


def value_interval(lower: np.ndarray, upper: np.ndarray, eps: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Where ḡ_i(x + δ) can lie for any ‖δ‖₂ ≤ ε, given L_i ≤ ḡ_i(x) ≤ U_i and a base map with values in [0, 1]:
    [Φ(Φ⁻¹(L_i) − ε/σ), Φ(Φ⁻¹(U_i) + ε/σ)] (Φ⁻¹∘ḡ_i is 1/σ-Lipschitz; Salman et al. 2019, Levine et al. 2019)."""
    lo, up = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    if lo.shape != up.shape or not ((0 <= lo) & (lo <= up) & (up <= 1)).all():
        raise CertlibError("lower and upper must have one shape and satisfy 0 <= lower <= upper <= 1")
    shift = _non_negative("eps", eps) / _positive("sigma", sigma)
    return norm.cdf(norm.ppf(lo) - shift), norm.cdf(norm.ppf(up) + shift)


@dataclass(frozen=True)
class TopKToy:
    """The toy certificate: the estimated top K of ḡ and which of them provably stay in the top K."""

    values: np.ndarray        # ḡ [H,W] (estimate)
    lower: np.ndarray         # L [H,W]
    upper: np.ndarray         # U [H,W]
    low_after: np.ndarray     # lowest value each pixel can fall to under ‖δ‖ ≤ ε
    high_after: np.ndarray    # highest value each pixel can rise to
    top: np.ndarray           # bool [H,W]: the K largest estimates
    certified: np.ndarray     # bool [H,W]
    k: int

    @property
    def overlap(self) -> float:
        """Certified top-K overlap: the fraction of the top K guaranteed to stay in the top K."""
        return float(self.certified.sum()) / self.k


def topk_toy_certificate(eps: float, sigma: float, k: int, half_width: float = 0.0,
                         values: np.ndarray | None = None) -> TopKToy:
    """Certified top-K overlap on a toy map (a teaching re-derivation of design §5, kept apart from
    certlib.sparse.smoothgrad on purpose). The bounds are the map ± half_width, clipped to [0, 1] (on the real page
    they are Bonferroni confidence bounds from samples). Pixel j is certified when fewer than K other pixels i can
    rise at least as high as j can fall: #{i ≠ j : high_after_i ≥ low_after_j} < K — ties count against j, so j
    stays in the top K under every tie-break. Counted pair by pair (64² pairs for the 8×8 toy)."""
    g = toy_smoothgrad() if values is None else np.asarray(values, dtype=np.float64)
    k = _count("k", k)
    if k > g.size:
        raise CertlibError(f"k must be at most the number of pixels ({g.size}), got {k}")
    w = _non_negative("half_width", half_width)
    lower, upper = np.clip(g - w, 0.0, 1.0), np.clip(g + w, 0.0, 1.0)
    low_after, high_after = value_interval(lower, upper, eps, sigma)
    top = np.zeros(g.size, dtype=bool)
    top[np.argsort(-g.ravel(), kind="stable")[:k]] = True
    certified = _stays_in_top_k(low_after.ravel(), high_after.ravel(), k)
    return TopKToy(g, lower, upper, low_after, high_after, top.reshape(g.shape), certified.reshape(g.shape), k)


def _stays_in_top_k(low: np.ndarray, high: np.ndarray, k: int) -> np.ndarray:
    """bool [..., N]: fewer than k other pixels i have high_i ≥ low_j (pairwise over the last axis)."""
    rivals = (high[..., None, :] >= low[..., :, None]).sum(-1) - (high >= low)   # drop i = j from each row
    return rivals < k


def toy_eps_axis(sigma: float, eps_now: float = 0.0, points: int = 81) -> np.ndarray:
    """ε from 0 to past where the toy's overlap reaches 0: a pixel's certified ε is at most
    σ·(Φ⁻¹(0.98) − Φ⁻¹(0.02))/2 ≈ 2.05σ for values in [0.02, 0.98]."""
    top = max(2.1 * _positive("sigma", sigma), _non_negative("eps_now", eps_now))
    return np.linspace(0.0, top, _count("points", points, 2))


def topk_overlap_curve(eps_values: Sequence[float], sigma: float, k: int, half_width: float = 0.0,
                       values: np.ndarray | None = None) -> np.ndarray:
    """Certified top-K overlap of the toy at each ε (all ε at once: the page redraws this on every slider move)."""
    toy = topk_toy_certificate(0.0, sigma, k, half_width, values)             # validates the arguments
    eps = np.array([_non_negative("eps", float(e)) for e in eps_values])[:, None]
    shift = eps / _positive("sigma", sigma)
    low = norm.cdf(norm.ppf(toy.lower.ravel()) - shift)                       # [E, N]
    high = norm.cdf(norm.ppf(toy.upper.ravel()) + shift)
    return _stays_in_top_k(low, high, toy.k).sum(-1) / toy.k


# ------------------------------------------------------------------------------------ 5. a pixel's own radius

RADIUS_TOY_LEVEL = 25.0        # the toy's top-K% level
RADIUS_TOY_FLIP = 0.3


@dataclass(frozen=True)
class RadiusToy:
    """Every pixel's own radius from the toy's votes (Clopper–Pearson at α/m, Bonferroni: all hold together)."""

    radii: pixel_radius.PixelRadii
    r_tau: float              # R(τ) = σ·Φ⁻¹(τ), the one radius the τ-decision certifies
    pixels: int
    with_radius: int          # pixels whose lower bound is above 1/2
    certified_at_tau: int     # pixels certified at R(τ): the ones Bonferroni certifies at τ
    level: float = RADIUS_TOY_LEVEL


def radius_toy(n: int, sigma: float, alpha: float, tau: float) -> RadiusToy:
    """The radii of lesson 2's toy (flip probability 0.3, seed 0) at noise level σ, and R(τ) marked among them."""
    toy = pixel_toy_certificate(RADIUS_TOY_FLIP, n, tau, alpha, 0, correction="bonferroni")
    radii = pixel_radius.radii_from_votes(toy.votes[None], toy.mode[None].astype(np.int8), n, sigma, alpha,
                                          (RADIUS_TOY_LEVEL,))
    r_tau = pixel_cert.certified_radius(sigma, tau)
    return RadiusToy(radii, r_tau, int(toy.votes.size), int(np.isfinite(radii.radii).sum()),
                     int((radii.certified_at(r_tau) >= 0).sum()))
