"""The uniform-smoothing certificate of one image (Wang & Kong 2024; design §4), from a sampled ĥ(x).

The closed-form bounds in `uniform_bound` take ‖h(x)‖, the norm of the *exact* smoothed map. We only have the mean ĥ
of n samples, so the certificate plugs in a lower confidence bound on ‖h(x)‖ instead (McDiarmid; see
`uniform_bound.h_norm_lower_confidence`). Both cosine bounds fall as ‖h‖ falls, so the statement
"cos(h(x), h(x+δ)) ≥ T for every ‖δ‖₂ ≤ ε" then holds with probability ≥ 1 − δ_conf over the sampling.

Bounds ("kind"):
- "strict": the worst case over every change ‖h(x+δ) − h(x)‖ ≤ a — proven (docs/uniform_bound.md); the default.
- "paper":  the published T = ‖h‖ / sqrt(‖h‖² + a²); exact only when the change is orthogonal to h(x), and
            docs/uniform_bound.md shows a g for which it fails. Shown as "as published".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from certlib.uniform import bound as ub
from certlib.errors import CertlibError
from certlib.smoothing.uniform_sampling import SmoothedMap

KINDS = {"strict": "proven worst case", "paper": "as published (Wang & Kong, Thm 1)"}
DEFAULT_CONFIDENCE = 1e-3


@dataclass(frozen=True)
class UniformCertificate:
    """What ĥ(x) lets us guarantee about h = E_{η ~ U(B(0,r))}[g(x+η)] with ‖g‖₂ ≤ M, in dimension d."""

    h_hat_norm: float     # ‖ĥ(x)‖ of the Monte-Carlo mean
    h_norm_lower: float   # ‖h(x)‖ ≥ this with probability ≥ 1 − delta
    delta: float          # δ_conf, the probability that the sampling misleads us
    M: float
    d: int
    r: float
    n: int

    @property
    def certifies_anything(self) -> bool:
        return self.h_norm_lower > 0.0

    def bound(self, eps: float, kind: str = "strict") -> float:
        """T(ε): lower bound on cos(h(x), h(x+δ)) for every ‖δ‖₂ ≤ ε (0 when ‖h‖ cannot be bounded away from 0)."""
        _check_kind(kind)
        if not self.certifies_anything:
            return 0.0
        return ub.cosine_lower_bound(self.h_norm_lower, self.M, self.d, self.r, float(eps), kind)

    def curve(self, eps_values: np.ndarray, kind: str = "strict") -> np.ndarray:
        return np.array([self.bound(float(e), kind) for e in np.asarray(eps_values, dtype=float)])

    def max_eps(self, T: float, kind: str = "strict") -> float:
        """Largest ε at which the bound still reaches T (0 if none)."""
        _check_kind(kind)
        if not self.certifies_anything:
            return 0.0
        return ub.max_certified_eps(self.h_norm_lower, self.M, self.d, self.r, T, kind)

    def min_radius(self, eps: float, T: float, kind: str = "strict") -> float:
        """Smallest smoothing radius reaching T at ε *with ‖h‖ held at its current value* (a larger r changes h,
        so this is a guide for the next sampling, not a certificate)."""
        _check_kind(kind)
        if not self.certifies_anything:
            raise CertlibError("‖h(x)‖ cannot be bounded away from 0 at this n: no radius certifies anything; "
                               "increase n")
        return ub.min_smoothing_radius(self.h_norm_lower, self.M, self.d, eps, T, kind)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise CertlibError(f"bound kind must be one of {tuple(KINDS)}, got {kind!r}")


def certify_uniform(smoothed: SmoothedMap, d: int, delta: float = DEFAULT_CONFIDENCE) -> UniformCertificate:
    """The certificate of a sampled ĥ(x) in input dimension d = C·H·W.

    Guarantee: with probability ≥ 1 − δ over the n samples, ‖h(x)‖ ≥ h_norm_lower, and then for every ‖δ‖₂ ≤ ε the
    cosine between h(x) and h(x + δ) is at least `bound(ε, "strict")` (design §4)."""
    lower = ub.h_norm_lower_confidence(smoothed.norm, smoothed.M, smoothed.n, delta)
    return UniformCertificate(h_hat_norm=smoothed.norm, h_norm_lower=lower, delta=float(delta), M=smoothed.M,
                              d=int(d), r=smoothed.radius, n=smoothed.n)


def eps_axis(d: int, r: float, points: int = 101) -> np.ndarray:
    """ε from 0 to where the non-overlap of the two balls reaches ~95% (ε ≈ 4r/√d): beyond it every bound is ~0.
    The scale r/√d is why certified ε shrinks with the input size."""
    return np.linspace(0.0, min(2.0 * r, 4.0 * r / np.sqrt(d)), points)


def empirical_eps_grid(d: int, r: float) -> np.ndarray:
    """The ε values at which the page measures empirical cosines: spread over the interesting part of `eps_axis`."""
    return eps_axis(d, r, 2)[-1] * np.array([0.05, 0.1, 0.2, 0.35, 0.5, 0.75])


def guarantee_sentence(cert: UniformCertificate, eps: float, kind: str = "strict") -> str:
    """One plain sentence of what is guaranteed at ε."""
    T = cert.bound(eps, kind)
    conf = f"with probability at least {1 - cert.delta:.4g} over the {cert.n} samples"
    if not cert.certifies_anything:
        return (f"Nothing is guaranteed: with n = {cert.n} samples the norm of the smoothed map (‖ĥ‖ = "
                f"{cert.h_hat_norm:.3f}) cannot be told apart from 0 {conf}. Increase n.")
    if T <= 0.0:
        return (f"Nothing is guaranteed at ε = {eps:.4g}: a perturbation of that size may move the smoothed map "
                f"anywhere, as far as this bound knows. Decrease ε or increase r.")
    return (f"For every perturbation δ of the input with ‖δ‖₂ ≤ {eps:.4g}, the uniformly smoothed attribution "
            f"h(x+δ) has cosine similarity at least {T:.3f} with h(x) ({KINDS[kind]} bound, {conf}).")


# ------------------------------------------------------------------------------------------------ said in words

NOTHING = "nothing certified"
_ALMOST_ZERO_T = 1e-9      # "some cosine > 0": the target at which a knob is said to start certifying


def bound_text(cert: UniformCertificate, eps: float, kind: str = "strict") -> str:
    """T(ε) for the page: the number, or "nothing certified" where the bound says nothing (a printed 0.0000 or
    −1.0000 read as a cosine, not as the absence of a guarantee)."""
    T = cert.bound(eps, kind)
    if T <= 0.0:
        return NOTHING
    return f"{T:.4f}" if T >= 1e-4 else f"{T:.2g}"


def n_to_certify(cert: UniformCertificate) -> int | None:
    """The n at which ‖h‖'s lower bound would leave 0 if ‖ĥ‖ stayed at its sampled value (None if ‖ĥ‖ = 0):
    ‖ĥ‖ > M (1 + √(2 ln(1/δ))) / √n, the inverse of uniform_bound.h_norm_lower_confidence."""
    if cert.h_hat_norm <= 0.0:
        return None
    per_root_n = cert.M * (1.0 + np.sqrt(2.0 * np.log(1.0 / cert.delta)))
    return int(np.floor((per_root_n / cert.h_hat_norm) ** 2)) + 1


def knob_hint(cert: UniformCertificate, eps: float, kind: str = "strict") -> str | None:
    """Which knob would make the bound at ε certify something, when it certifies nothing (None when it does)."""
    if not cert.certifies_anything:
        need = n_to_certify(cert)
        return "increase n" if need is None else f"n ≥ {need:,} would certify (at this ‖ĥ‖)"
    if cert.bound(eps, kind) > 0.0:
        return None
    smaller_eps = cert.max_eps(_ALMOST_ZERO_T, kind)
    try:
        larger_r = f" or r ≥ {cert.min_radius(eps, _ALMOST_ZERO_T, kind):.3g}"
    except CertlibError:       # no radius helps (‖h‖ too small against M)
        larger_r = ""
    return f"certifies at ε < {smaller_eps:.3g}{larger_r}"


def max_eps_text(cert: UniformCertificate, T: float, kind: str = "strict") -> str:
    """The largest certified ε at cosine T, or "nothing certified"."""
    value = cert.max_eps(T, kind)
    return NOTHING if value <= 0.0 else f"{value:.4g}"
