"""Sparsified SmoothGrad and its certified top-K overlap (Levine, Singla & Feizi 2019, arXiv 1905.12105) — design §5.

Three stages, matching the app's caching:
- the base map f(x') ∈ [0,1]^{H×W} of one noisy input (`sparsify`): the attribution's top κ% pixels, either set to 1
  ("sparsified", the paper's Sparsified SmoothGrad) or kept at |a| / max|a| ("scaled"; at κ = 100% this is the
  paper's Scaled SmoothGrad), every other pixel 0;
- the expensive stage (`sample_smoothgrad`): stream n noisy copies x + N(0, σ²I) into per-pixel sums for every κ of
  a ladder and both variants at once, so moving κ, the variant, K or ε never resamples;
- the cheap stage: simultaneous confidence bounds [L_i, U_i] on ḡ_i(x) = E f_i(x + N(0, σ²I)) (`confidence_bounds`,
  Bonferroni over pixels) and two certificates, each with its curve and its inverse in ε: per pixel
  (`certified_topk_overlap`, design §5) and paired (`paired_topk_overlap`, the paper's count).

Why they hold: f_i ∈ [0,1], so x ↦ Φ⁻¹(ḡ_i(x)) is 1/σ-Lipschitz (Salman et al. 2019, Lemma 2; Levine et al. use the
same fact), hence for ‖δ‖₂ ≤ ε, ḡ_i(x+δ) ∈ [Φ(Φ⁻¹(L_i) − ε/σ), Φ(Φ⁻¹(U_i) + ε/σ)]. A pixel j stays in the top K of
ḡ(x+δ) — for every tie-break — when fewer than K other pixels can reach the lowest value j can fall to (per pixel);
q pixels of the top set can only be replaced if its q-th weakest can fall to the q-th strongest outsider (paired).

The base map is a function of the noisy input alone (each map is scaled by its own statistics, never the clean
map's): a clean-map scale would make f depend on x, and ḡ(x + δ) would then be the mean of a different function.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.stats import norm

from certlib import stats, validate
from certlib.smoothing import engine
from certlib.smoothing.engine import AttributionFn, ProgressFn, clean_attribution, resolve_batch_size
from certlib.errors import CertlibError
from certlib.smoothing.noise import ESTIMATION, NoiseStream
from certlib.smoothing.topk import top_k_masks

VARIANTS = ("sparsified", "scaled")
VARIANT_LABELS = {"sparsified": "Sparsified SmoothGrad (top κ% → 1, rest 0)",
                  "scaled": "Scaled SmoothGrad (top κ% → |a|/max|a|, rest 0)"}
SCALED_BOUNDS = ("bernstein", "hoeffding")
DEFAULT_LEVELS = (5.0, 10.0, 20.0, 50.0, 100.0)   # κ: % of pixels each noisy map keeps


# ---------------------------------------------------------------------------------------------- base map f

def _check_variant(variant: object) -> str:
    if variant not in VARIANTS:
        raise CertlibError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return str(variant)


def _unit_magnitude(attr: torch.Tensor) -> torch.Tensor:
    """|a| / max|a| per map [B,H,W] (float32, in [0,1]); an all-zero map stays 0."""
    magnitude = attr.abs().to(torch.float32)
    peak = magnitude.flatten(1).amax(dim=1).view(-1, 1, 1)
    return torch.where(peak > 0, magnitude / peak.clamp(min=torch.finfo(torch.float32).tiny), 0.0)


def sparsify(attr: torch.Tensor, level_percents: Sequence[float], variant: str) -> torch.Tensor:
    """f for every κ at once: float [L,B,H,W] in [0,1] from attributions [B,H,W].

    The kept pixels are exactly the §3.1 top-κ% indicator of `pixel_cert.top_k_masks` with each map's own scale
    (|a| ranks them; ties at the percentile keep fewer than κ%). "sparsified" is that indicator; "scaled" multiplies
    it by |a| / max|a| of the same map (an all-zero map stays 0)."""
    kind = _check_variant(variant)
    masks = top_k_masks(attr, level_percents, "own_scale")              # validates attr and the levels
    if kind == "sparsified":
        return masks.to(torch.float32)
    return masks * _unit_magnitude(attr)[None]


# ---------------------------------------------------------------------------------------------- sampling

@dataclass(frozen=True, eq=False)
class SmoothGradSamples:
    """Per-pixel sums over n noisy copies of one input, for each κ in `levels` and both variants."""

    levels: tuple[float, ...]
    sigma: float
    n: int
    seed: int
    clean_attr: np.ndarray        # [H,W] float32, attribution of the input itself
    smoothgrad: np.ndarray        # [H,W] float64, plain SmoothGrad: the mean of the n attributions
    ones: np.ndarray              # [L,H,W] int32, how often each pixel was in the top κ% ("sparsified")
    scaled_sum: np.ndarray        # [L,H,W] float64, Σ of the "scaled" values
    scaled_sq_sum: np.ndarray     # [L,H,W] float64, Σ of their squares (for the empirical-Bernstein bound)

    def level_index(self, level: float) -> int:
        if float(level) not in self.levels:
            raise CertlibError(f"level {level!r} was not sampled; sampled: {list(self.levels)}")
        return self.levels.index(float(level))

    def mean(self, variant: str, level: float) -> np.ndarray:
        """ĝ(x): the estimate of the smoothed map, [H,W] float64 in [0,1]."""
        i = self.level_index(level)
        total = self.ones[i] if _check_variant(variant) == "sparsified" else self.scaled_sum[i]
        return total / float(self.n)


_check_sigma = validate.sigma


def _check_positive_int(name: str, value: object) -> int:
    return validate.count(name, value)


class SparsifiedSums:
    """Reducer: the sums behind `SmoothGradSamples` (plain SmoothGrad, and per level the kept-pixel counts and the
    scaled variant's sum and sum of squares), float64 / int32 on the model's device."""

    def __init__(self, x: torch.Tensor, levels: tuple[float, ...]) -> None:
        hw = tuple(x.shape[-2:])
        self.levels = levels
        self.attr_sum = torch.zeros(hw, dtype=torch.float64, device=x.device)
        self.ones = torch.zeros((len(levels), *hw), dtype=torch.int32, device=x.device)
        self.scaled_sum = torch.zeros((len(levels), *hw), dtype=torch.float64, device=x.device)
        self.scaled_sq = torch.zeros_like(self.scaled_sum)

    def update(self, noisy: torch.Tensor, attr: torch.Tensor) -> None:
        self.attr_sum += attr.sum(0, dtype=torch.float64)
        masks = top_k_masks(attr, self.levels, "own_scale")             # both variants keep the same pixels
        self.ones += masks.sum(1, dtype=torch.int32)
        scaled = (masks * _unit_magnitude(attr)[None]).double()
        self.scaled_sum += scaled.sum(1)
        self.scaled_sq += (scaled * scaled).sum(1)


def sample_smoothgrad(attribute: AttributionFn, x: torch.Tensor, sigma: float, n: int,
                      levels: Sequence[float] = DEFAULT_LEVELS, seed: int = 0, batch_size: int | None = None,
                      progress: ProgressFn | None = None) -> SmoothGradSamples:
    """Stream n copies x + N(0, σ²I) of one image x [1,C,H,W] (seeded, batch-size invariant) into the sums of
    `SmoothGradSamples`. Memory O(L·H·W) whatever n. The same seed at x + δ reuses the same noise draws (common
    random numbers), which makes ĝ(x + δ) − ĝ(x) far less noisy than independent draws would."""
    _check_sigma(sigma)
    n = _check_positive_int("n", n)
    lv = tuple(float(v) for v in levels)
    bs = resolve_batch_size(batch_size, x)
    clean = clean_attribution(attribute, x)
    top_k_masks(clean, lv)                                       # validates the levels before any sampling
    noise = engine.GaussianNoise(sigma, NoiseStream(tuple(x.shape[1:]), seed, ESTIMATION, x.device, x.dtype))
    sums = SparsifiedSums(x, lv)
    engine.stream(attribute, x, noise, n, [sums], bs, progress)
    return SmoothGradSamples(
        levels=lv, sigma=float(sigma), n=n, seed=int(seed), clean_attr=clean[0].float().cpu().numpy(),
        smoothgrad=(sums.attr_sum / n).cpu().numpy(), ones=sums.ones.cpu().numpy(),
        scaled_sum=sums.scaled_sum.cpu().numpy(), scaled_sq_sum=sums.scaled_sq.cpu().numpy(),
    )


# ---------------------------------------------------------------------------------------------- confidence bounds

def _per_side_alpha(alpha: float, num_pixels: int) -> float:
    """Bonferroni: 2 one-sided bounds per pixel, so each gets α / (2·pixels); all hold together w.p. ≥ 1 − α."""
    return stats.check_scalar_alpha(alpha) / (2.0 * num_pixels)


def binomial_bounds(ones: np.ndarray, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Simultaneous Clopper–Pearson [L_i, U_i] for the "sparsified" variant (f_i ∈ {0,1}: ones_i ~ Bin(n, ḡ_i))."""
    counts = np.asarray(ones)
    a = _per_side_alpha(alpha, max(counts.size, 1))
    lower = np.asarray(stats.clopper_pearson_lower(counts, n, a), dtype=np.float64)
    upper = np.asarray(stats.clopper_pearson_upper(counts, n, a), dtype=np.float64)
    return lower.reshape(counts.shape), upper.reshape(counts.shape)


def hoeffding_bounds(total: np.ndarray, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Simultaneous Hoeffding intervals for means of n i.i.d. values in [0,1]: mean ± sqrt(ln(1/a) / (2n))."""
    n = _check_positive_int("n", n)
    mean = np.asarray(total, dtype=np.float64) / n
    half = math.sqrt(math.log(1.0 / _per_side_alpha(alpha, max(mean.size, 1))) / (2.0 * n))
    return np.clip(mean - half, 0.0, 1.0), np.clip(mean + half, 0.0, 1.0)


def bernstein_bounds(total: np.ndarray, sq_total: np.ndarray, n: int,
                     alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Simultaneous empirical-Bernstein intervals (Maurer & Pontil 2009, Thm 4) for means of n ≥ 2 i.i.d. values in
    [0,1]: mean ± (sqrt(2·V·ln(2/a)/n) + 7·ln(2/a) / (3(n−1))), V the unbiased sample variance.

    Why not only Hoeffding: most pixels of a scaled sparsified map are 0 in nearly every sample, so their variance
    is tiny and this interval is far narrower than Hoeffding's variance-free ±sqrt(ln(1/a)/2n)."""
    n = _check_positive_int("n", n)
    if n < 2:
        raise CertlibError(f"n must be >= 2 for the empirical-Bernstein bound, got {n}")
    s, s2 = np.asarray(total, dtype=np.float64), np.asarray(sq_total, dtype=np.float64)
    mean = s / n
    variance = np.maximum(0.0, (s2 - n * mean * mean) / (n - 1))
    log_term = math.log(2.0 / _per_side_alpha(alpha, max(mean.size, 1)))
    half = np.sqrt(2.0 * variance * log_term / n) + 7.0 * log_term / (3.0 * (n - 1))
    return np.clip(mean - half, 0.0, 1.0), np.clip(mean + half, 0.0, 1.0)


def confidence_bounds(samples: SmoothGradSamples, variant: str, level: float, alpha: float,
                      scaled_bound: str = "bernstein") -> tuple[np.ndarray, np.ndarray]:
    """[L, U] ([H,W] each) holding for every pixel at once with probability ≥ 1 − α: Clopper–Pearson for the
    binary variant, empirical Bernstein (or Hoeffding) for the scaled one; Bonferroni over the H·W pixels."""
    i = samples.level_index(level)
    if _check_variant(variant) == "sparsified":
        return binomial_bounds(samples.ones[i], samples.n, alpha)
    if scaled_bound == "bernstein":
        return bernstein_bounds(samples.scaled_sum[i], samples.scaled_sq_sum[i], samples.n, alpha)
    if scaled_bound == "hoeffding":
        return hoeffding_bounds(samples.scaled_sum[i], samples.n, alpha)
    raise CertlibError(f"scaled_bound must be one of {SCALED_BOUNDS}, got {scaled_bound!r}")


# ---------------------------------------------------------------------------------------------- certificate

def _check_bounds(lower: object, upper: object) -> tuple[np.ndarray, np.ndarray]:
    lo, up = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    if lo.shape != up.shape:
        raise CertlibError(f"lower shape {lo.shape} and upper shape {up.shape} must be equal")
    if lo.size == 0:
        raise CertlibError("lower and upper must not be empty")
    for name, arr in (("lower", lo), ("upper", up)):
        ok = (arr >= 0) & (arr <= 1)          # NaN fails both
        if not ok.all():
            raise CertlibError(f"{name} must be in [0, 1], got {stats.first_bad(arr, ok)!r}")
    ok = lo <= up
    if not ok.all():
        raise CertlibError(f"lower must not exceed upper, got lower = {stats.first_bad(lo, ok)!r} "
                           f"> upper = {stats.first_bad(up, ok)!r}")
    return lo.ravel(), up.ravel()


def _check_k(k: object, num_pixels: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_pixels:
        raise CertlibError(f"k must be an integer in [1, {num_pixels}] (the number of pixels), got {k!r}")
    return int(k)


_check_eps = validate.eps


def _threshold_z(upper_z: np.ndarray, k: int) -> float:
    """Φ⁻¹ of the (k+1)-th largest upper bound: pixel j is out-reached by K others iff that value (moved up) reaches
    j's lowest value. −∞ when k = all pixels (the top H·W is everything)."""
    if k >= upper_z.size:
        return -math.inf
    return float(np.partition(upper_z, upper_z.size - k - 1)[upper_z.size - k - 1])


def pixel_certified_eps(lower: np.ndarray, upper: np.ndarray, k: int, sigma: float) -> np.ndarray:
    """ε_j per pixel (input's shape): pixel j is certified to stay in the top k of ḡ(x + δ) for every ‖δ‖₂ < ε_j.
    ε_j = σ·(Φ⁻¹(L_j) − Φ⁻¹(U_(k+1))) / 2 with U_(k+1) the (k+1)-th largest upper bound; ε_j ≤ 0 means not even at
    δ = 0 (−∞ where L_j = 0 or the bounds leave no room at all)."""
    shape = np.shape(lower)
    lo, up = _check_bounds(lower, upper)
    k = _check_k(k, lo.size)
    s = _check_sigma(sigma)
    rival = _threshold_z(norm.ppf(up), k)
    with np.errstate(invalid="ignore"):
        radius = s * (norm.ppf(lo) - rival) / 2.0
    # ∞ − ∞ (L_j = 1 against a rival bound of 1) and −∞ − (−∞) (both 0) are ties: never certified.
    return np.where(np.isnan(radius), -math.inf, radius).reshape(shape)


def certified_topk_mask(lower: np.ndarray, upper: np.ndarray, k: int, eps: float, sigma: float) -> np.ndarray:
    """bool (input's shape): the pixels certified to be in the top k of ḡ(x + δ) for every ‖δ‖₂ ≤ ε.

    Pixel j is certified iff Φ⁻¹(L_j) − ε/σ > Φ⁻¹(U_i) + ε/σ for all but at most k − 1 other pixels i (ties count
    against j). The certified pixels lie in the top k of every map inside the bounds, so they are a subset of the
    estimated top k, and there are at most k of them."""
    shape = np.shape(lower)
    lo, up = _check_bounds(lower, upper)
    k = _check_k(k, lo.size)
    shift = _check_eps(eps) / _check_sigma(sigma)
    rival = _threshold_z(norm.ppf(up), k)
    return (norm.ppf(lo) - shift > rival + shift).reshape(shape)


def certified_topk_overlap(lower: np.ndarray, upper: np.ndarray, k: int, eps: float, sigma: float) -> float:
    """Certified top-k overlap (design §5): the fraction of the top k pixels that provably stay in the top k of
    ḡ(x + δ) for every ‖δ‖₂ ≤ ε, given simultaneous bounds lower ≤ ḡ(x) ≤ upper (any shape, flattened)."""
    return float(certified_topk_mask(lower, upper, k, eps, sigma).sum()) / int(k)


def _overlap_from_radii(radii: np.ndarray, k: int, eps_values: Sequence[float]) -> np.ndarray:
    """#{radii > ε} / k for each ε: the overlap certified at ε when each radius is where one pixel stops counting."""
    eps = np.array([_check_eps(e) for e in np.ravel(eps_values)], dtype=np.float64)
    return (np.ravel(radii)[None, :] > eps[:, None]).sum(axis=1) / float(k)


def _check_overlap(overlap: object) -> float:
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float, np.integer, np.floating)) \
            or not 0 < overlap <= 1:
        raise CertlibError(f"overlap must be in (0, 1], got {overlap!r}")
    return float(overlap)


def _max_eps_from_radii(radii: np.ndarray, k: int, overlap: float) -> float:
    """Supremum of the ε with #{radii > ε} / k >= overlap: the ⌈overlap·k⌉-th largest radius (0.0 if not even ε = 0
    qualifies). The certified overlap is a non-increasing step function of ε, so this inverts it exactly."""
    target = _check_overlap(overlap)
    ordered = np.sort(np.ravel(radii))[::-1]
    # pixels that must stay; the 1e-9 absorbs float products such as 0.3·10 = 3.0000000000000004
    need = max(1, math.ceil(target * k - 1e-9))
    return max(0.0, float(ordered[need - 1])) if need <= ordered.size else 0.0


def certified_overlap_curve(lower: np.ndarray, upper: np.ndarray, k: int, eps_values: Sequence[float],
                            sigma: float) -> np.ndarray:
    """certified_topk_overlap at each ε of `eps_values` (non-increasing in ε), float64 [len(eps_values)]."""
    return _overlap_from_radii(pixel_certified_eps(lower, upper, k, sigma), int(k), eps_values)


def max_certified_eps(lower: np.ndarray, upper: np.ndarray, k: int, sigma: float, overlap: float) -> float:
    """The supremum of the ε at which the certified overlap is still >= `overlap`: certified for every ε strictly
    below it; 0.0 when `overlap` is not certified even at ε = 0."""
    return _max_eps_from_radii(pixel_certified_eps(lower, upper, k, sigma), int(k), overlap)


# ---------------------------------------------------------------------------------------------- paired (count) form

def _check_top_mask(top_mask: object, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(top_mask)
    if mask.dtype != bool or mask.shape != shape:
        raise CertlibError(f"top_mask must be a bool array of shape {shape}, got {mask.dtype} {mask.shape}")
    if not mask.any():
        raise CertlibError("top_mask must select at least one pixel")
    return mask.ravel()


def paired_certified_eps(lower: np.ndarray, upper: np.ndarray, top_mask: np.ndarray, sigma: float) -> np.ndarray:
    """Radii ρ_1 >= ... >= ρ_k for the set S = top_mask (k = |S|): S keeps at least m of its pixels in the top k of
    ḡ(x + δ) for every ‖δ‖₂ < ρ_m.

    Levine et al.'s pairing: q pixels of S can only be swapped out for q others if the q-th weakest pixel of S can
    fall to the q-th strongest outsider, so the i-th strongest lower bound of S is paired with the (k−i+1)-th
    strongest outside upper bound: ρ_i = σ·(Φ⁻¹(L_S,(i)) − Φ⁻¹(U_out,(k−i+1))) / 2 (∞ when there is no such
    outsider). This is the exact worst case over all maps inside the bounds, so it is never below the per-pixel
    certificate, but it says how many pixels stay, not which."""
    lo, up = _check_bounds(lower, upper)
    mask = _check_top_mask(top_mask, np.shape(lower))
    s = _check_sigma(sigma)
    k = int(mask.sum())
    strong_in = np.sort(norm.ppf(lo[mask]))[::-1]                                  # L of S, strongest first
    outsiders = np.sort(norm.ppf(up[~mask]))[::-1]
    rival = np.full(k, -math.inf)
    exists = np.arange(k) < outsiders.size
    rival[exists] = outsiders[:k]
    rival, exists = rival[::-1], exists[::-1]                                      # i-th of S meets (k−i+1)-th out
    with np.errstate(invalid="ignore"):
        radius = s * (strong_in - rival) / 2.0
    radius = np.where(np.isnan(radius), -math.inf, radius)                         # ∞ − ∞, −∞ + ∞: ties
    return np.where(exists, radius, math.inf)                                      # nobody to swap in


def paired_topk_overlap(lower: np.ndarray, upper: np.ndarray, top_mask: np.ndarray, eps: float,
                        sigma: float) -> float:
    """The smallest |S ∩ top-k(ḡ(x + δ))| / k over every ‖δ‖₂ <= ε that the bounds allow, S = top_mask."""
    radii = paired_certified_eps(lower, upper, top_mask, sigma)
    return float(_overlap_from_radii(radii, radii.size, [eps])[0])


def max_paired_eps(lower: np.ndarray, upper: np.ndarray, top_mask: np.ndarray, sigma: float,
                   overlap: float) -> float:
    radii = paired_certified_eps(lower, upper, top_mask, sigma)
    return _max_eps_from_radii(radii, radii.size, overlap)


def eps_axis(radii: Sequence[np.ndarray], sigma: float, points: int = 101) -> np.ndarray:
    """A grid of ε from 0 to a little past the largest finite radius among `radii` (per-pixel and/or paired), where
    the certified overlaps reach their floor."""
    finite = [r[np.isfinite(r)] for r in (np.ravel(a) for a in radii)]
    top = max((float(f.max()) for f in finite if f.size), default=0.0)
    stop = 1.2 * top if top > 0 else 0.25 * _check_sigma(sigma)
    return np.linspace(0.0, stop, points)


# ---------------------------------------------------------------------------------------------- empirical side

def k_from_percent(k_percent: float, num_pixels: int) -> int:
    """K% of the pixels as a count (at least 1)."""
    if isinstance(k_percent, bool) or not isinstance(k_percent, (int, float, np.integer, np.floating)) \
            or not 0 < k_percent <= 100:
        raise CertlibError(f"k_percent must be in (0, 100], got {k_percent!r}")
    return max(1, min(int(num_pixels), int(round(k_percent / 100.0 * num_pixels))))


def topk_membership(values: np.ndarray, k: int) -> np.ndarray:
    """Probability that each pixel is in the top k when ties are broken uniformly at random (input's shape):
    1 above the k-th largest value, 0 below, and the remaining slots shared equally by the pixels tied with it.
    The binary variant's estimates are multiples of 1/n, so ties at the boundary are common."""
    v = np.asarray(values, dtype=np.float64)
    flat = v.ravel()
    k = _check_k(k, flat.size)
    kth = np.partition(flat, flat.size - k)[flat.size - k]
    above, tied = flat > kth, flat == kth
    share = (k - above.sum()) / tied.sum()
    return np.where(above, 1.0, np.where(tied, share, 0.0)).reshape(v.shape)


def empirical_topk_overlap(clean_values: np.ndarray, perturbed_values: np.ndarray, k: int) -> float:
    """|top-k(clean) ∩ top-k(perturbed)| / k of two maps, in expectation over random tie-breaking in each."""
    a, b = np.asarray(clean_values), np.asarray(perturbed_values)
    if a.shape != b.shape:
        raise CertlibError(f"clean shape {a.shape} and perturbed shape {b.shape} must be equal")
    return float((topk_membership(a, k) * topk_membership(b, k)).sum() / k)


def estimated_topk(mean: np.ndarray, tie_break: np.ndarray, k: int) -> np.ndarray:
    """bool (mean's shape): the k pixels with the largest estimate, ties broken by the larger |tie_break|, then by
    position — the "top-K pixels" the page colours. Certified pixels are always among them."""
    m = np.asarray(mean, dtype=np.float64).ravel()
    k = _check_k(k, m.size)
    order = np.lexsort((np.arange(m.size), -np.abs(np.asarray(tie_break, dtype=np.float64).ravel()), -m))
    out = np.zeros(m.size, dtype=bool)
    out[order[:k]] = True
    return out.reshape(np.shape(mean))


# ---------------------------------------------------------------------------------------------- decision bundle

@dataclass(frozen=True, eq=False)
class TopKCertificate:
    """Everything the page shows for one (variant, κ, K, ε, α) from cached sums; maps are [H,W].

    Two certified overlaps of the estimated top k: per pixel (design §5 — which pixels provably stay) and paired
    (Levine et al.'s count — how many provably stay; never lower)."""

    variant: str
    level: float
    k: int
    eps: float
    sigma: float
    alpha: float
    bound: str                  # "clopper-pearson", "bernstein" or "hoeffding"
    mean: np.ndarray            # ĝ(x)
    lower: np.ndarray
    upper: np.ndarray
    radii: np.ndarray           # ε_j: pixel j certified for every ε < ε_j
    paired_radii: np.ndarray    # [k] ρ_m: at least m pixels of the top k stay for every ε < ρ_m
    top_mask: np.ndarray        # the estimated top k (ties broken by |plain SmoothGrad|)
    certified_mask: np.ndarray  # certified at eps (a subset of top_mask)

    @property
    def overlap(self) -> float:
        """Per-pixel certified overlap at eps (`certified_topk_overlap`)."""
        return float(self.certified_mask.sum()) / self.k

    @property
    def paired_overlap(self) -> float:
        return float(self.paired_at([self.eps])[0])

    def overlap_at(self, eps_values: Sequence[float]) -> np.ndarray:
        return _overlap_from_radii(self.radii, self.k, eps_values)

    def paired_at(self, eps_values: Sequence[float]) -> np.ndarray:
        return _overlap_from_radii(self.paired_radii, self.k, eps_values)

    def max_eps(self, overlap: float) -> float:
        return _max_eps_from_radii(self.radii, self.k, overlap)

    def max_paired_eps(self, overlap: float) -> float:
        return _max_eps_from_radii(self.paired_radii, self.k, overlap)

    def eps_axis(self, points: int = 101) -> np.ndarray:
        return eps_axis([self.radii, self.paired_radii], self.sigma, points)


def certify_topk(samples: SmoothGradSamples, variant: str, level: float, k_percent: float, eps: float,
                 alpha: float, scaled_bound: str = "bernstein") -> TopKCertificate:
    """Bound ĝ(x), pick the top K% and certify them at ε — the cheap stage, rerun on every slider move.

    Guarantee: with probability ≥ 1 − α, at least `paired_overlap` of the top-K pixels of the estimated ĝ(x) stay in
    the top K of ĝ(x + δ) for every ‖δ‖₂ ≤ ε, and each pixel of `certified_mask` stays there itself (design §5)."""
    lower, upper = confidence_bounds(samples, variant, level, alpha, scaled_bound)
    k = k_from_percent(k_percent, lower.size)
    mean = samples.mean(variant, level)
    top = estimated_topk(mean, samples.smoothgrad, k)
    return TopKCertificate(
        variant=variant, level=float(level), k=k, eps=_check_eps(eps), sigma=samples.sigma, alpha=float(alpha),
        bound="clopper-pearson" if variant == "sparsified" else scaled_bound, mean=mean, lower=lower, upper=upper,
        radii=pixel_certified_eps(lower, upper, k, samples.sigma),
        paired_radii=paired_certified_eps(lower, upper, top, samples.sigma), top_mask=top,
        certified_mask=certified_topk_mask(lower, upper, k, eps, samples.sigma),
    )
