"""Pixel-level certified explanations (Anani et al. 2025, on SegCertify / Fischer et al. 2021) — DESIGN §3.

Two halves, matching the two caching stages of the app:
- the base function h^K (§3.1): `clean_scale`, `top_k_mask(s)`, run on every batch of noisy attributions by
  `certlib.sampling` (torch, on the model's device);
- the decision (§3.2): `pixel_pvalues`, `certify_pixels`, `decide`, re-run from cached vote counts on every
  τ / α / correction change (numpy; no resampling).

Notation: n estimation samples, k_i = votes for the selected class c_i (the mode of n0 separate selection samples),
τ the vote threshold, α the family-wise error, R = σ·Φ⁻¹(τ).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.stats import norm

from certlib import stats
from certlib.errors import CertlibError

SCALE_PERCENTILE = 99.5
# How a noisy map becomes the values that h^K ranks (§3.1 step 2). The first two are functions of the noisy map
# alone, so h^K is a function of the noisy input and the guarantee at x + δ holds. "paper" divides every noisy map
# by s(x), the 99.5th percentile of the *clean* map at x (as the paper's released code does): h then depends on x
# itself, and at x + δ the pipeline certifies a different function. Kept only to reproduce the paper.
NORMALISATIONS = ("rank", "own_scale", "paper")
DEFAULT_NORMALISATION = "rank"
NORMALISATION_LABELS = {
    "rank": "rank |a| (default)",
    "own_scale": "each noisy map's own 99.5th percentile, clipped",
    "paper": "paper: the clean map's 99.5th percentile (not a function of the noisy input alone)",
}
PAPER_WARNING = ("not a function of the noisy input alone: the guarantee at x + δ does not hold (each noisy map is "
                 "divided by a scale of the clean map at x, which a model can change at x + δ)")
CORRECTIONS = ("holm", "bonferroni")
ABSTAIN = -1


# ---------------------------------------------------------------------------------------------- radius

def _check_sigma(sigma: object) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(sigma) and sigma > 0):
        raise CertlibError(f"sigma must be a positive number, got {sigma!r}")
    return float(sigma)


def _check_tau(tau: object) -> float:
    # τ < 0.5 would not even make the certified class the majority under attack (R would be negative).
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)) or not 0.5 <= tau < 1:
        raise CertlibError(f"tau must be in [0.5, 1), got {tau!r}")
    return float(tau)


def certified_radius(sigma: float, tau: float) -> float:
    """R = σ·Φ⁻¹(τ): a class whose smoothed probability is at least τ keeps probability ≥ 1/2 for ‖δ‖₂ ≤ R."""
    return _check_sigma(sigma) * float(norm.ppf(_check_tau(tau)))


# ---------------------------------------------------------------------------------------------- base function h^K

def _check_attr(attr: object) -> torch.Tensor:
    if not isinstance(attr, torch.Tensor) or attr.dim() != 3:
        shape = tuple(attr.shape) if hasattr(attr, "shape") else type(attr).__name__
        raise CertlibError(f"attr must be a torch tensor [B,H,W], got {shape}")
    if not attr.is_floating_point():
        raise CertlibError(f"attr must be a floating-point tensor, got dtype {attr.dtype}")
    if attr.numel() == 0:
        raise CertlibError(f"attr must not be empty, got shape {tuple(attr.shape)}")
    if not all_finite(attr):
        # A NaN would silently fall out of every top-K set; better to say so.
        raise CertlibError("attr contains non-finite values (NaN or inf)")
    # Half precision has too few bits for percentile interpolation between close values.
    return attr if attr.dtype in (torch.float32, torch.float64) else attr.float()


def _is_percent(k: object) -> bool:
    return isinstance(k, (int, float, np.integer, np.floating)) and not isinstance(k, bool) and 0 < k <= 100


def _check_k_percents(k_percents: Sequence[float]) -> tuple[float, ...]:
    is_sequence = isinstance(k_percents, (Sequence, np.ndarray)) and not isinstance(k_percents, str)
    values = tuple(k_percents) if is_sequence else ()
    if not values or not all(_is_percent(k) for k in values):
        raise CertlibError(f"k_percents must be a non-empty sequence of numbers in (0, 100], got {k_percents!r}")
    return tuple(float(k) for k in values)


def all_finite(t: torch.Tensor) -> bool:
    """True iff no value is NaN or ±inf. A finite sum proves it at the cost of one reduction (an inf or NaN anywhere
    makes the sum inf or NaN); only a non-finite sum, e.g. an overflow of huge finite values, needs the exact test."""
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def _percentiles_of_sorted(sorted_vals: torch.Tensor, percents: Sequence[float]) -> torch.Tensor:
    """Per-row percentiles of row-sorted values [B,N] -> [B,P], with numpy's / torch's default 'linear' rule:
    position q·(N−1), interpolated between its two neighbours with the same lerp formula both libraries use."""
    lo, hi, frac = _percentile_positions(sorted_vals.shape[-1], percents, sorted_vals)
    return torch.lerp(sorted_vals[:, lo], sorted_vals[:, hi], frac)


def _percentile_positions(n: int, percents: Sequence[float], like: torch.Tensor):
    pos = torch.tensor([p / 100.0 * (n - 1) for p in percents], dtype=torch.float64)
    lo = pos.floor().long()
    hi = torch.clamp(lo + 1, max=n - 1)
    frac = (pos - lo).to(like.dtype).to(like.device)
    return lo.to(like.device), hi.to(like.device), frac


def _percentiles(vals: torch.Tensor, percents: Sequence[float]) -> torch.Tensor:
    """Per-row percentiles of unsorted values [B,N] -> [B,P], the same numbers as `_percentiles_of_sorted` of the
    sorted rows. Only the upper order statistics are needed for top-K% thresholds (K <= 50%) and for the 99.5th
    percentile, so a partial `topk` of the largest values replaces the full sort (8 maps of 224x224 on 2 cores:
    24 ms instead of 64 ms)."""
    n = vals.shape[-1]
    lo, hi, frac = _percentile_positions(n, percents, vals)
    need = n - int(lo.min())               # ascending positions lo.min() .. n-1 are the `need` largest values
    if need > n // 2 + 1:
        return _percentiles_of_sorted(vals.sort(dim=-1).values, percents)
    top = vals.topk(need, dim=-1, largest=True, sorted=True).values     # descending: ascending position p is
    return torch.lerp(top[:, n - 1 - lo], top[:, n - 1 - hi], frac)     # at index n-1-p


def _map_scales(flat: torch.Tensor) -> torch.Tensor:
    """s per map [B] from signed maps [B,N]: the 99.5th percentile of the values.

    Fallbacks (documented behaviour, not in the paper): a map whose 99.5th percentile is <= 0 (mostly negative
    attributions) would flip or break clip(a/s); it uses the 99.5th percentile of |a| instead, and an all-zero
    map uses s = 1 (every value is 0 either way)."""
    s = _percentiles(flat, [SCALE_PERCENTILE])[:, 0]
    s_abs = _percentiles(flat.abs(), [SCALE_PERCENTILE])[:, 0]
    s = torch.where(s > 0, s, s_abs)
    return torch.where(s > 0, s, torch.ones_like(s))


def clean_scale(clean_attr: torch.Tensor | np.ndarray) -> float:
    """s(x) of the "paper" normalisation for one clean attribution map [H,W] (tensor or array): its 99.5th
    percentile, with the fallbacks of `_map_scales` (99.5th percentile of |a| when that is <= 0, then 1.0)."""
    attr = torch.as_tensor(clean_attr)
    if attr.dim() != 2:
        raise CertlibError(f"clean_attr must be one map [H,W], got shape {tuple(attr.shape)}")
    attr = _check_attr(attr[None].double() if not attr.is_floating_point() else attr[None])
    return float(_map_scales(attr.flatten(1).double())[0])


def _check_scale(scale: object) -> float:
    try:
        value = float(scale) if not isinstance(scale, bool) else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise CertlibError(f"scale must be a positive number, got {scale!r}")
    return value


def check_normalisation(normalisation: object) -> str:
    if normalisation not in NORMALISATIONS:
        raise CertlibError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    return str(normalisation)


def _post_process(flat: torch.Tensor, normalisation: str, scale: float | None) -> torch.Tensor:
    """The values ranked by h^K, per map [B,N], in float64:
    "rank": |a|; "own_scale": |clip(a / s(a), −1, 1)| with each map's own s; "paper": |clip(a / s, −1, 1)| with
    the given s (the clean map's)."""
    a = flat.double()
    if normalisation == "rank":
        return a.abs()
    s = _map_scales(a)[:, None] if normalisation == "own_scale" else torch.tensor(scale, dtype=a.dtype,
                                                                                  device=a.device)
    return (a / s).clamp(-1.0, 1.0).abs()


def top_k_masks(attr: torch.Tensor, k_percents: Sequence[float], normalisation: str = DEFAULT_NORMALISATION,
                scale: float | None = None) -> torch.Tensor:
    """h^K for every K at once: bool [len(K), B, H, W] on attr's device.

    Pixel i of map b is in the top K% iff its value (after `normalisation`, see `_post_process`) is strictly above
    the (100−K)-th percentile of its own map, both in float64 (float32 would round a percentile that falls between
    two adjacent float32 values onto one of them and drop a pixel). Ties at the percentile make the set smaller
    than K%: a constant or all-zero map has no top pixels at any K (nothing is strictly above its only value), and
    under "own_scale" / "paper" every value clipped to 1 ties. K = 100 keeps every pixel above the map's minimum.

    `normalisation="paper"` needs `scale`, the 99.5th percentile of the clean map (`clean_scale`): the paper's
    variant, *not* a function of the noisy input alone (see NORMALISATIONS)."""
    a = _check_attr(attr)
    ks = _check_k_percents(k_percents)
    norm_kind = check_normalisation(normalisation)
    if norm_kind == "paper":
        if scale is None:
            raise CertlibError("normalisation 'paper' needs scale, the clean map's 99.5th percentile (clean_scale)")
        scale = _check_scale(scale)
    elif scale is not None:
        raise CertlibError(f"scale is only used by normalisation 'paper', got scale={scale!r} with {norm_kind!r}")
    b, h, w = a.shape
    values = _post_process(a.reshape(b, h * w), norm_kind, scale)
    thresholds = _percentiles(values, [100.0 - k for k in ks])                                 # [B,K] float64
    masks = values[None, :, :] > thresholds.T[:, :, None]                                       # [K,B,N]
    return masks.reshape(len(ks), b, h, w)


def top_k_mask(attr: torch.Tensor, k_percent: float, normalisation: str = DEFAULT_NORMALISATION,
               scale: float | None = None) -> torch.Tensor:
    """h^K for one K: bool [B,H,W]; the slice of `top_k_masks` for that K."""
    if not _is_percent(k_percent):
        raise CertlibError(f"k_percent must be in (0, 100], got {k_percent!r}")
    return top_k_masks(attr, (float(k_percent),), normalisation, scale)[0]


# ---------------------------------------------------------------------------------------------- decision

# The decision tabulates the binomial tail for k = 0..n; far beyond any sampling budget, and bounded so that a
# typo (n = 10**10) is an error message rather than a 80 GB allocation.
MAX_N = 10_000_000


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_N:
        raise CertlibError(f"n must be an integer in [1, {MAX_N:,}], got {n!r}")
    return int(n)


def _check_correction(correction: object) -> str:
    if correction not in CORRECTIONS:
        raise CertlibError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    return str(correction)


def _check_votes_and_modes(votes_for_mode: object, modes: object, n: int) -> tuple[np.ndarray, np.ndarray]:
    votes, cls = np.asarray(votes_for_mode), np.asarray(modes)
    if votes.shape != cls.shape:
        raise CertlibError(f"votes_for_mode shape {votes.shape} and modes shape {cls.shape} must be equal")
    if votes.ndim not in (2, 3):
        raise CertlibError(f"votes_for_mode must be [H,W] or [K,H,W], got shape {votes.shape}")
    ok = (cls == 0) | (cls == 1)
    if not ok.all():
        raise CertlibError(f"modes must be 0 or 1, got {stats.first_bad(cls, ok)!r}")
    k, _ = stats.check_counts(votes, n)
    return k, cls.astype(np.int8)


def _tail_table(n: int, tau: float) -> np.ndarray:
    """P[Bin(n, τ) >= k] for k = 0..n, from the one implementation of the tail in `stats`."""
    return stats.binom_test_greater(np.arange(n + 1), n, tau)


def pixel_pvalues(votes_for_mode: np.ndarray, n: int, tau: float) -> np.ndarray:
    """p-value_i = P[Bin(n, τ) >= k_i] (one-sided test of H0: p_i <= τ), float64 of the input's shape.

    The votes take only the n + 1 values 0..n, so the tail is evaluated n + 1 times and looked up, not once per
    pixel: this keeps `decide` fast enough to rerun on every slider move."""
    n = _check_n(n)
    t = _check_tau(tau)
    k, _ = stats.check_counts(votes_for_mode, n)
    return _tail_table(n, t)[k]


def _certify(k: np.ndarray, cls: np.ndarray, n: int, tau: float, alpha: float,
             correction: str) -> tuple[np.ndarray, np.ndarray]:
    """(classes int8, p-values) from validated inputs; one correction over every element."""
    pvalues = _tail_table(n, tau)[k]
    rejected = stats.holm(pvalues, alpha) if correction == "holm" else stats.bonferroni(pvalues, alpha)
    return np.where(rejected, cls, np.int8(ABSTAIN)).astype(np.int8), pvalues


def _check_decision(votes_for_mode: object, modes: object, n: object, tau: object, alpha: object,
                    correction: object) -> tuple[np.ndarray, np.ndarray, int, float, float, str]:
    n = _check_n(n)
    k, cls = _check_votes_and_modes(votes_for_mode, modes, n)
    return k, cls, n, _check_tau(tau), stats.check_scalar_alpha(alpha), _check_correction(correction)


def certify_pixels(votes_for_mode: np.ndarray, modes: np.ndarray, n: int, tau: float, alpha: float,
                   correction: str = "holm") -> np.ndarray:
    """int8 of the input's shape ([H,W] or [K,H,W]): the mode c_i (1 = in top K%, 0 = not) where H0: p_i <= τ is
    rejected, −1 (abstain) elsewhere. The correction runs jointly over every element passed in, so passing all K
    levels at once is "Holm over all pixels × K levels"."""
    classes, _ = _certify(*_check_decision(votes_for_mode, modes, n, tau, alpha, correction))
    return classes


FRACTION_NAMES = ("certified top-K", "certified not top-K", "abstain")


@dataclass(frozen=True, eq=False)
class PixelCertificate:
    """The decision for one (τ, α, correction) from cached votes; arrays keep the input's shape."""

    classes: np.ndarray        # int8: 1 certified top-K, 0 certified not top-K, −1 abstain
    pvalues: np.ndarray        # float64: P[Bin(n, τ) >= k_i]
    radius: float              # R = σ·Φ⁻¹(τ)
    sigma: float
    tau: float
    alpha: float
    correction: str
    n: int
    num_tests: int             # every pixel × every K level passed in
    min_n: int                 # smallest n for which anything can be certified at (τ, α, num_tests)
    fractions: dict[str, np.ndarray]   # FRACTION_NAMES -> float64 [levels] (one level for an [H,W] input)

    @property
    def certifiable(self) -> bool:
        """False when n is too small for any pixel to pass, whatever its votes."""
        return self.n >= self.min_n


def _fractions(classes: np.ndarray) -> dict[str, np.ndarray]:
    per_level = classes.reshape(classes.shape[0] if classes.ndim == 3 else 1, -1)
    return {name: (per_level == value).mean(axis=1) for name, value in zip(FRACTION_NAMES, (1, 0, ABSTAIN))}


def decide(votes_for_mode: np.ndarray, modes: np.ndarray, n: int, sigma: float, tau: float, alpha: float,
           correction: str = "holm") -> PixelCertificate:
    """Certify every pixel (and level) and bundle what the page shows: classes, p-values, R and, per level, the
    shares certified top-K / certified not top-K / abstain. Cheap: reruns on every τ / α slider move."""
    radius = certified_radius(sigma, tau)
    k, cls, n, t, a, corr = _check_decision(votes_for_mode, modes, n, tau, alpha, correction)
    classes, pvalues = _certify(k, cls, n, t, a, corr)
    return PixelCertificate(
        classes=classes, pvalues=pvalues, radius=radius, sigma=float(sigma), tau=t, alpha=a, correction=corr, n=n,
        num_tests=int(classes.size), min_n=stats.min_samples_to_certify(t, a, int(classes.size)),
        fractions=_fractions(classes),
    )
