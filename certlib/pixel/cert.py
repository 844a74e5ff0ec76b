"""Pixel-level certified explanations (Anani et al. 2025, on SegCertify / Fischer et al. 2021) — design §3.

Two halves, matching the two caching stages of the app:
- the base function h^K (§3.1): `clean_scale`, `top_k_mask(s)`, run on every batch of noisy attributions by
  `certlib.smoothing.sampling` (torch, on the model's device);
- the decision (§3.2): `pixel_pvalues`, `certify_pixels`, `decide`, re-run from cached vote counts on every
  τ / α / correction change (numpy; no resampling).

Notation: n estimation samples, k_i = votes for the selected class c_i (the mode of n0 separate selection samples),
τ the vote threshold, α the family-wise error, R = σ·Φ⁻¹(τ).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from certlib import stats, validate
from certlib.errors import CertlibError
# The base function h^K lives in certlib.smoothing.topk (shared with the other certificates); these names stay importable
# from here, the module of the public API (design §12).
from certlib.smoothing.topk import (DEFAULT_NORMALISATION, NORMALISATION_LABELS, NORMALISATIONS, PAPER_WARNING,  # noqa: F401
                          SCALE_PERCENTILE, check_normalisation, clean_scale, top_k_mask, top_k_masks)
from certlib.validate import MAX_N, all_finite  # noqa: F401

CORRECTIONS = ("holm", "bonferroni")
ABSTAIN = -1


# ---------------------------------------------------------------------------------------------- radius

_check_sigma = validate.sigma
_check_tau = validate.tau


def certified_radius(sigma: float, tau: float) -> float:
    """R = σ·Φ⁻¹(τ): a class whose smoothed probability is at least τ keeps probability ≥ 1/2 for ‖δ‖₂ ≤ R."""
    return _check_sigma(sigma) * float(norm.ppf(_check_tau(tau)))


# ---------------------------------------------------------------------------------------------- decision

def _check_n(n: object) -> int:
    # The decision tabulates the binomial tail for k = 0..n: bounded, so that a typo (n = 10**10) is an error
    # message rather than an 80 GB allocation.
    return validate.count("n", n)


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


def too_few_samples(n: int, tau: float, alpha: float, num_tests: int) -> str | None:
    """The warning to show when n is too small for anything to be certified at (τ, α) over `num_tests` tests (even
    n votes out of n give a p-value above α / num_tests), else None. Shown before sampling and after deciding."""
    n_min = stats.min_samples_to_certify(tau, alpha, num_tests)
    if _check_n(n) >= n_min:
        return None
    return (f"With n = {n}, no pixel can be certified at τ = {tau:g} and α = {alpha:g} over {num_tests} tests: even "
            f"n votes out of n give a p-value above α/{num_tests}. Choose n ≥ {n_min} (or a larger α / smaller τ); "
            "until then every pixel abstains.")


def decide(votes_for_mode: np.ndarray, modes: np.ndarray, n: int, sigma: float, tau: float, alpha: float,
           correction: str = "holm") -> PixelCertificate:
    """Certify every pixel (and level) and bundle what the page shows: classes, p-values, R and, per level, the
    shares certified top-K / certified not top-K / abstain. Cheap: reruns on every τ / α slider move.

    Guarantee: with probability ≥ 1 − α (over the estimation samples), every pixel not abstaining keeps its smoothed
    class h^K for every input perturbation ‖δ‖₂ ≤ R = σ·Φ⁻¹(τ) (design §3.2)."""
    radius = certified_radius(sigma, tau)
    k, cls, n, t, a, corr = _check_decision(votes_for_mode, modes, n, tau, alpha, correction)
    classes, pvalues = _certify(k, cls, n, t, a, corr)
    return PixelCertificate(
        classes=classes, pvalues=pvalues, radius=radius, sigma=float(sigma), tau=t, alpha=a, correction=corr, n=n,
        num_tests=int(classes.size), min_n=stats.min_samples_to_certify(t, a, int(classes.size)),
        fractions=_fractions(classes),
    )
