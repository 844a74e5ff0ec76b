"""Progressive pixel certification: a valid certificate after every batch, stopping once every pixel is decided.

    for frame in certify_progressively(attribute, x, sigma, StopRule(tau, alpha, levels), n_max=1000):
        show(frame.certificate)            # valid at α now, whatever made the sampler stop here

The n0 selection copies fix each pixel's mode once; estimation copies then arrive in batches, and after each batch
the pixels are decided with the anytime-valid test (certlib.anytime). Its p-values are valid at any data-dependent
stopping time, so every frame is a certificate at α, and stopping as soon as the frame looks good is allowed.
Stronger: for a Holm (or Bonferroni) decision, with probability ≥ 1 − α *no frame ever* certifies a wrong pixel
(Ville's inequality holds for all n at once; see docs/design.md §15), so a pixel that an earlier frame certified and a
later frame does not (its later votes weakened the evidence) is reported in `Frame.lost`, not hidden.

Stops: "decided" — every pixel of the decided levels is certified or futile (certlib.anytime.futile), "budget" —
n reached n_max. The caller may stop between frames at any time (break, or `cancel`). Counts continue exactly from
an earlier stop (`start=`), because copy j of the estimation stream depends on j only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from certlib import anytime, pixel_cert, sampling, stats, validate
from certlib.engine import AttributionFn, CancelFn, LogitsFn, ProgressFn
from certlib.errors import CertlibError
from certlib.pixel_cert import ABSTAIN, PixelCertificate
from certlib.sampling import TopKCounts

TESTS = ("anytime", "fixed")
TEST_LABELS = {"anytime": "anytime-valid test (stop when decided)", "fixed": "fixed n, exact binomial test"}
STOP_REASONS = {"decided": "every pixel is decided (certified, shown to fall short of τ, or out of reach within the "
                           "budget), up to the rule's tolerance",
                "budget": "the budget n_max was reached"}


def check_test(test: object) -> str:
    if test not in TESTS:
        raise CertlibError(f"test must be one of {TESTS}, got {test!r}")
    return str(test)


def decide(counts: TopKCounts, test: str, tau: float, alpha: float, correction: str = "holm") -> PixelCertificate:
    """The certificate of `counts` (all its levels, one correction over them) under either test."""
    decide_with = anytime.decide if check_test(test) == "anytime" else pixel_cert.decide
    return decide_with(counts.votes_for_mode, counts.modes, counts.n, counts.sigma, tau, alpha, correction)


def too_few_samples(test: str, n: int, tau: float, alpha: float, num_tests: int) -> str | None:
    """pixel_cert.too_few_samples for either test: the warning when even n agreeing votes out of n cannot pass."""
    if check_test(test) == "fixed":
        return pixel_cert.too_few_samples(n, tau, alpha, num_tests)
    n_min = anytime.min_samples_to_certify(tau, alpha, num_tests)
    if validate.count("n", n) >= n_min:
        return None
    return (f"With a budget of n = {n}, the anytime-valid test cannot certify any pixel at τ = {tau:g} and "
            f"α = {alpha:g} over {num_tests} tests: even n votes out of n give a p-value above α/{num_tests}. "
            f"Choose n ≥ {n_min} (or a larger α / smaller τ); until then every pixel abstains.")


@dataclass(frozen=True)
class StopRule:
    """When the sampler may stop: the decision it aims at (τ, α, the decided K levels, the correction)."""

    tau: float = 0.75
    alpha: float = 1e-3
    levels: tuple[float, ...] = (5.0, 25.0, 50.0)
    correction: str = "holm"
    # Stop once at most this share of pixels × levels is undecided (0: all decided). Pixels whose probability sits
    # near τ take thousands of votes to decide either way; they abstain whenever sampling stops.
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        validate.tau(self.tau)
        stats.check_scalar_alpha(self.alpha)
        validate.k_percents(self.levels, "levels")
        pixel_cert._check_correction(self.correction)
        if not (isinstance(self.tolerance, (int, float)) and 0.0 <= self.tolerance < 1.0):
            raise CertlibError(f"tolerance must be a share in [0, 1), got {self.tolerance!r}")

    def as_key(self) -> tuple:
        """What the stored counts depend on (the store key of an anytime run)."""
        key = (self.tau, self.alpha, tuple(sorted(self.levels)), self.correction)
        return key + ((self.tolerance,) if self.tolerance else ())

    def status(self, counts: TopKCounts, n_max: int | None = None) -> tuple[PixelCertificate, np.ndarray]:
        """(the anytime certificate of the decided levels, mask of pixels not decided yet). A pixel is decided when
        certified, futile, or (given the budget n_max) unable to pass even if every remaining vote agreed."""
        sub = counts.select_levels(sorted(self.levels))
        cert = decide(sub, "anytime", self.tau, self.alpha, self.correction)
        return cert, self.undecided(sub, cert, n_max)

    def undecided(self, sub: TopKCounts, cert: PixelCertificate, n_max: int | None = None) -> np.ndarray:
        """Mask of the pixel tests of `sub` (counts of the rule's levels) that `cert`, their anytime certificate
        under this rule, leaves undecided: neither certified, futile, nor out of reach by n_max."""
        k = sub.votes_for_mode
        open_ = (cert.classes == ABSTAIN) & ~anytime.futile(k, sub.n, self.tau, self.alpha)
        if n_max is not None and n_max > sub.n:
            # the loosest Holm level is α itself: a pixel that cannot reach it by n_max is out of reach
            reachable, where = np.unique(np.minimum(k + (n_max - sub.n), n_max), return_inverse=True)
            best_case = np.asarray(anytime.anytime_pvalue(reachable, n_max, self.tau))[where.reshape(k.shape)]
            open_ &= best_case <= self.alpha
        return open_

    def done(self, open_: np.ndarray) -> bool:
        return float(open_.mean()) <= self.tolerance if self.tolerance else not open_.any()


@dataclass(frozen=True)
class Frame:
    """The state after one batch: counts so far, their anytime certificate, and why sampling stopped (if it did)."""

    counts: TopKCounts
    certificate: PixelCertificate     # of rule.levels, anytime-valid at rule.alpha
    undecided: int                    # pixels × levels neither certified nor futile
    lost: int                         # certified in the previous frame, not in this one
    stop: str | None                  # None: sampling goes on; else a key of STOP_REASONS
    seconds: float                    # since the call started (model passes of this call only)

    @property
    def passes(self) -> int:
        """Noisy copies attributed so far, n0 + n (earlier sessions' included)."""
        return self.counts.n0 + self.counts.n


def lost_certificates(previous: np.ndarray | None, current: np.ndarray) -> np.ndarray:
    """Mask of pixels certified (class ≠ −1) in `previous` whose certificate `current` no longer has."""
    if previous is None:
        return np.zeros(current.shape, dtype=bool)
    return (previous != ABSTAIN) & (current != previous)


def certify_progressively(attribute: AttributionFn, x: torch.Tensor, sigma: float, rule: StopRule,
                          n_max: int = 1000, n0: int = 32, k_percents: Sequence[float] = sampling.DEFAULT_K_PERCENTS,
                          seed: int = 0, frame_size: int | None = None, start: TopKCounts | None = None,
                          logits: LogitsFn | None = None, normalisation: str = pixel_cert.DEFAULT_NORMALISATION,
                          batch_size: int | None = None, progress: ProgressFn | None = None,
                          cancel: CancelFn | None = None) -> Iterator[Frame]:
    """Yield a Frame after the selection copies and the first estimation batch, then after every further batch of
    `frame_size` copies (default: one attribution batch), until the rule's pixels are all decided or n = n_max.

    With `start` (counts of an earlier, interrupted call with this configuration) sampling continues from its n:
    the frames are those the uninterrupted call would have produced. A start that is already decided or at n_max
    yields one frame and stops. Progress reports (estimation copies so far, n_max)."""
    n_max = validate.count("n_max", n_max)
    missing = [k for k in rule.levels if float(k) not in [float(v) for v in k_percents]]
    if missing:
        raise CertlibError(f"the stop rule decides levels {missing} that are not sampled ({list(k_percents)})")
    step = sampling.resolve_batch_size(frame_size if frame_size is not None else batch_size, x)
    began = time.perf_counter()
    counts = start
    if counts is None:
        counts = sampling.sample_topk_counts(attribute, x, sigma, n0, min(step, n_max), k_percents, seed=seed,
                                             batch_size=batch_size, normalisation=normalisation, logits=logits)
    else:
        _check_start(counts, sigma, n0, k_percents, seed, normalisation)
    previous = None
    while True:
        cert, open_ = rule.status(counts, n_max)
        stop = "decided" if rule.done(open_) else "budget" if counts.n >= n_max else None
        lost = int(lost_certificates(previous, cert.classes).sum())
        if progress is not None:
            progress(min(counts.n, n_max), n_max)
        yield Frame(counts, cert, int(open_.sum()), lost, stop, time.perf_counter() - began)
        if stop is not None:
            return
        previous = cert.classes
        counts = sampling.extend_counts(attribute, x, counts, min(step, n_max - counts.n), logits=logits,
                                        batch_size=batch_size, cancel=cancel)


def _check_start(counts: TopKCounts, sigma: float, n0: int, k_percents: Sequence[float], seed: int,
                 normalisation: str) -> None:
    expected = (float(sigma), int(n0), tuple(float(k) for k in k_percents), int(seed), normalisation)
    found = (counts.sigma, counts.n0, tuple(counts.k_percents), counts.seed, counts.normalisation)
    if expected != found:
        raise CertlibError(f"cannot continue counts sampled with (σ, n0, K, seed, normalisation) = {found} as "
                           f"{expected}")
