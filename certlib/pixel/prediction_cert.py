"""Is the class being explained itself stable? Cohen, Rosenfeld & Kolter (2019)'s CERTIFY of the smoothed classifier
g(x) = argmax_c P[f(x + ε) = c], ε ~ N(0, σ²I), from the same noisy copies the pixel certificate sampled.

The pixel certificate explains a *fixed* target class; it says nothing about whether the model's prediction can
change within R. This one does: with probability ≥ 1 − α_pred, g predicts ĉ_A at every x + δ with ‖δ‖₂ < R_pred.

    c_A     = the most frequent class among the n0 selection copies
    n_A     = how many of the n separate estimation copies vote c_A
    p_A     = the one-sided (1 − α) Clopper–Pearson lower bound on P[f(x + ε) = c_A]
    R_pred  = σ·Φ⁻¹(p_A) if p_A > 1/2, else abstain

Sharing the copies with the explanation is valid: each certificate only needs its own selection and estimation
samples to be independent. Both hold together with probability ≥ 1 − α − α_pred (union bound).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from certlib import stats, validate
from certlib.errors import CertlibError


@dataclass(frozen=True)
class PredictionCertificate:
    top_class: int            # c_A, from the selection copies
    votes: int                # n_A among the n estimation copies
    n: int
    p_lower: float            # p_A
    radius: float | None      # R_pred; None = abstain (p_A <= 1/2)
    sigma: float
    alpha: float

    @property
    def certified(self) -> bool:
        return self.radius is not None

    def covers(self, target: int, radius: float) -> bool:
        """True iff the smoothed prediction is certified to stay `target` for every ‖δ‖₂ ≤ radius."""
        return self.certified and self.top_class == int(target) and self.radius > radius


def _class_votes(votes: object, name: str) -> np.ndarray:
    arr = np.asarray(votes)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer) or (arr < 0).any():
        raise CertlibError(f"{name} must be a non-empty 1-D array of non-negative integer counts, got {votes!r}")
    return arr.astype(np.int64)


def certify_prediction(selection_votes: np.ndarray, estimation_votes: np.ndarray, sigma: float,
                       alpha: float, test: str = "fixed") -> PredictionCertificate:
    """CERTIFY from per-class vote counts: `selection_votes` [classes] (n0 copies) picks c_A (ties: the smallest
    class index), `estimation_votes` [classes] (n copies) estimates its probability. `test="anytime"` bounds it with
    the anytime-valid lower confidence bound instead of Clopper–Pearson: required when n was not fixed in advance
    (progressive sampling stops when the pixel votes say so, and those votes depend on the same copies)."""
    if test not in ("fixed", "anytime"):
        raise CertlibError(f"test must be 'fixed' or 'anytime', got {test!r}")
    sel = _class_votes(selection_votes, "selection_votes")
    est = _class_votes(estimation_votes, "estimation_votes")
    if sel.shape != est.shape:
        raise CertlibError(f"selection_votes {sel.shape} and estimation_votes {est.shape} must have one count per "
                           "class")
    if sel.sum() < 1 or est.sum() < 1:
        raise CertlibError("certify_prediction needs at least one selection and one estimation copy")
    s = validate.sigma(sigma)
    a = stats.check_scalar_alpha(alpha)
    top = int(np.argmax(sel))
    n, n_a = int(est.sum()), int(est[top])
    if test == "anytime":
        from certlib.pixel import anytime
        p_lower = anytime.lower_confidence_bound(n_a, n, a)
    else:
        p_lower = float(stats.clopper_pearson_lower(n_a, n, a))
    radius = s * float(norm.ppf(p_lower)) if p_lower > 0.5 else None
    return PredictionCertificate(top_class=top, votes=n_a, n=n, p_lower=p_lower, radius=radius, sigma=s, alpha=a)


def from_counts(counts, alpha: float, test: str = "fixed") -> PredictionCertificate | None:
    """The prediction certificate of a `sampling.TopKCounts` sampled with logits, else None."""
    if counts.selection_classes is None or counts.estimation_classes is None:
        return None
    return certify_prediction(counts.selection_classes, counts.estimation_classes, counts.sigma, alpha, test)
