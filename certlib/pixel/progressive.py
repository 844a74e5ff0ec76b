"""Progressive pixel certification: a valid certificate after every batch that only grows, ending as strong as a
test planned for the budget.

    for frame in certify_progressively(attribute, x, sigma, StopRule(tau, alpha, levels), n_max=256):
        show(frame.certificate)            # valid at α now, whatever made the sampler stop here

The n0 selection copies fix each pixel's mode once; estimation copies then arrive in batches. Each pixel test's
p-value combines two valid p-values (docs/design.md §15):
- the running minimum p̃ over the frames so far of the anytime-valid p-value (certlib.pixel.anytime, mixture prior informed
  by the pixel's selection votes) — valid at any stopping time by Ville's inequality, and never increasing;
- once the estimation count reaches the budget fixed before the first estimation vote (`Trajectory.plan_n`), the
  exact fixed-n binomial p-value at that n.
p = min(1, p̃ / (1 − s), p_plan / s) with s = plan_share is valid (a weighted Bonferroni over the two), Holm on it
certifies at least the union of "Holm on p̃ at (1 − s)α" and "the fixed-n test at sα", and it never increases from
frame to frame, so every frame's certified set contains the previous one's (Holm is monotone in the p-values).

Stops: "decided" — every pixel of the decided levels is certified, futile (certlib.pixel.anytime.futile), or out of reach
of both tests within the budget; "budget" — n reached n_max. The caller may stop between frames at any time (break,
or `cancel`). Runs continue exactly from an earlier stop (`start=` the last frame's Trajectory), because copy j of
the estimation stream depends on j only, and the trajectory keeps the counts at every frame boundary, so τ, α, K and
the correction re-decide the whole run without resampling.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import numpy as np
import torch
from scipy.stats import binom

from certlib import stats, validate
from certlib.pixel import anytime, cert as pixel_cert
from certlib.smoothing import sampling
from certlib.smoothing.engine import AttributionFn, CancelFn, LogitsFn, ProgressFn
from certlib.errors import CertlibError
from certlib.pixel.cert import ABSTAIN, PixelCertificate
from certlib.smoothing.sampling import TopKCounts

TESTS = ("anytime", "fixed")
TEST_LABELS = {"anytime": "anytime-valid test (stop when decided)", "fixed": "fixed n, exact binomial test"}
STOP_REASONS = {"decided": "every pixel is decided (certified, shown to fall short of τ, or out of reach within the "
                           "budget), up to the rule's tolerance",
                "budget": "the budget n_max was reached"}
# Share of α for the fixed-n look at the budget; the live frames get the rest. Measured (bench/anytime.py,
# docs/performance.md §(h)): half is the smallest share tried whose final certificate is ≥ 0.99 of the fixed-n test
# at full α on every case (0.4 and 0.25 reach 0.98), and the live frames lose little to it (median 0.971 instead of
# 0.976 of the planned test on digits and GradCAM photos).
PLAN_SHARE = 0.5
# Uniform share of each pixel's mixture prior (1: the uniform prior; below 1: the rest informed by its selection
# votes). Half: the first certified frame comes one frame after the planned test's first instead of two, and the
# worst live frame rises (0.43 → 0.53 of the planned test with n0 = 32); a misleading selection costs at most 2×.
PRIOR_FLOOR = 0.5


def check_test(test: object) -> str:
    if test not in TESTS:
        raise CertlibError(f"test must be one of {TESTS}, got {test!r}")
    return str(test)


def check_plan_share(share: object) -> float:
    if isinstance(share, bool) or not isinstance(share, (int, float, np.floating)) or not 0.0 <= share < 1.0:
        raise CertlibError(f"plan_share must be a share in [0, 1), got {share!r}")
    return float(share)


def decide(counts: TopKCounts, test: str, tau: float, alpha: float, correction: str = "holm") -> PixelCertificate:
    """The certificate of `counts` alone (all its levels, one correction over them) under either test. For the
    anytime test: the uniform-prior anytime p-value at the last n, at full α — valid at any stopping time, but
    without the run's history (no running minimum, no look at the budget): what stored runs are decided by. A
    progressive run with its trajectory is decided by decide_trajectory."""
    decide_with = anytime.decide if check_test(test) == "anytime" else pixel_cert.decide
    return decide_with(counts.votes_for_mode, counts.modes, counts.n, counts.sigma, tau, alpha, correction)


def too_few_samples(test: str, n: int, tau: float, alpha: float, num_tests: int,
                    plan_share: float = PLAN_SHARE) -> str | None:
    """pixel_cert.too_few_samples for either test: the warning when even n agreeing votes out of n cannot pass.
    For the anytime test with budget n, the look at the budget (fixed-n test at plan_share·α) counts too."""
    if check_test(test) == "fixed":
        return pixel_cert.too_few_samples(n, tau, alpha, num_tests)
    share = check_plan_share(plan_share)
    n_min = anytime.min_samples_to_certify(tau, alpha * (1.0 - share), num_tests)
    if share > 0:
        n_min = min(n_min, stats.min_samples_to_certify(tau, alpha * share, num_tests))
    if validate.count("n", n) >= n_min:
        return None
    return (f"With a budget of n = {n}, the anytime-valid test cannot certify any pixel at τ = {tau:g} and "
            f"α = {alpha:g} over {num_tests} tests: even n votes out of n give a p-value above α/{num_tests}. "
            f"Choose n ≥ {n_min} (or a larger α / smaller τ); until then every pixel abstains.")


_MEMO_LOCK = threading.Lock()


def _compact(ones: np.ndarray) -> np.ndarray:
    """Counts in the smallest unsigned type that holds them (a frame of ≤ 255 copies: one byte per test)."""
    return ones.astype(np.min_scalar_type(int(ones.max(initial=0))))


@dataclass(frozen=True, eq=False)
class Trajectory:
    """A progressive run's counts at every frame boundary: what re-deciding it at another τ, α, K or correction needs
    (the running minimum depends on the whole path), in compact form — the estimation votes each frame added.

    `plan_n` is the budget in force when the first estimation vote was drawn (None when unknown: a run continued
    from bare counts). The fixed-n test at plan_n is valid because plan_n was fixed before any vote; it is used once
    n reaches it, and stays in every later frame."""

    counts: TopKCounts                   # at the last boundary
    n: tuple[int, ...]                   # estimation copies at each boundary, increasing; n[-1] == counts.n
    steps: tuple[np.ndarray, ...]        # [K,H,W] estimation_ones added since the previous boundary (from 0 first)
    plan_n: int | None
    # running minima of the anytime p-value already computed, keyed (τ, prior floor): a later frame updates them
    # from its own counts only, a slider move at a τ seen before costs no recomputation
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def begin(cls, counts: TopKCounts, plan_n: int | None) -> "Trajectory":
        return cls(counts, (counts.n,), (_compact(counts.estimation_ones),), plan_n)

    def extend(self, counts: TopKCounts) -> "Trajectory":
        """This trajectory with one more boundary at `counts` (the same run, more copies)."""
        if counts.n <= self.counts.n:
            raise CertlibError(f"a trajectory grows: n = {counts.n} after n = {self.counts.n}")
        step = _compact(counts.estimation_ones.astype(np.int64) - self.counts.estimation_ones)
        grown = Trajectory(counts, self.n + (counts.n,), self.steps + (step,), self.plan_n)
        with _MEMO_LOCK:
            latest = list(self._memo.items())[-1:]
        for (tau, floor), p_min in latest:                              # the live rule's, the most recent
            grown._memo[(tau, floor)] = np.minimum(p_min, _pvalues_at(counts, counts.estimation_ones, counts.n,
                                                                      tau, floor))
        return grown

    @property
    def looked(self) -> bool:
        """Whether the fixed-n look at the planned budget is part of the certificate (n has reached plan_n)."""
        return self.plan_n is not None and self.plan_n in self.n

    @property
    def nbytes(self) -> int:
        return sum(step.nbytes for step in self.steps)

    def ones(self) -> Iterator[tuple[int, np.ndarray]]:
        """(n, estimation_ones) at every boundary, in order."""
        total = np.zeros(self.counts.estimation_ones.shape, dtype=np.int64)
        for n, step in zip(self.n, self.steps):
            total += step
            yield n, total

    def running_min(self, tau: float, floor: float = PRIOR_FLOOR) -> np.ndarray:
        """p̃ = min over the boundaries of the anytime p-value ([K,H,W], every sampled level)."""
        key = (float(tau), float(floor))
        p_min = self._memo.get(key)
        if p_min is None:
            p_min = self._running_min(tau, floor)
        with _MEMO_LOCK:                   # a cached trajectory is shared by every session of the app
            self._memo.pop(key, None)
            self._memo[key] = p_min        # most recently used last: the one a later frame carries on
            while len(self._memo) > 4:
                self._memo.pop(next(iter(self._memo)), None)
        return p_min

    def _running_min(self, tau: float, floor: float) -> np.ndarray:
        # min over boundaries of exp(−max(log M, 0)) is exp(−max(max log M, 0)): one exp at the end, and the
        # selection votes for the mode (the prior's input) are the same at every boundary.
        counts = self.counts
        is_one = counts.modes == 1
        s = np.where(is_one, counts.selection_ones, counts.n0 - counts.selection_ones)
        best = np.zeros(counts.estimation_ones.shape)                  # log M_0 = 0: p = 1 before any vote
        for n, ones in self.ones():
            k = np.where(is_one, ones, n - ones)
            np.maximum(best, anytime.log_evalues(k, n, tau, s, counts.n0, floor), out=best)
        return np.exp(-best)

    def planned_pvalues(self, tau: float) -> np.ndarray | None:
        """The exact fixed-n p-values at n = plan_n ([K,H,W]), or None before n reaches plan_n."""
        if not self.looked:
            return None
        at = self.n.index(self.plan_n)
        ones = next(o for i, (_, o) in enumerate(self.ones()) if i == at)
        k = np.where(self.counts.modes == 1, ones, self.plan_n - ones)
        return binom.sf(np.arange(self.plan_n + 1) - 1, self.plan_n, tau)[k]


def _pvalues_at(counts: TopKCounts, ones: np.ndarray, n: int, tau: float, floor: float) -> np.ndarray:
    """The anytime p-values of every test of `counts` (its modes and selection votes) with `ones` out of n."""
    modes = counts.modes
    k = np.where(modes == 1, ones, n - ones)
    s = np.where(modes == 1, counts.selection_ones, counts.n0 - counts.selection_ones)
    return anytime.pvalues(k, n, tau, s, counts.n0, floor)


def combined_pvalues(trajectory: Trajectory, tau: float, plan_share: float = PLAN_SHARE,
                     prior_floor: float = PRIOR_FLOOR) -> np.ndarray:
    """min(1, p̃/(1 − s), p_plan/s) per test ([K,H,W], every sampled level): valid because P(p ≤ u) ≤ (1 − s)u + su
    (Ville for p̃ at any stopping time, the exact binomial tail for p_plan at the n fixed in advance)."""
    share = check_plan_share(plan_share)
    p = np.minimum(1.0, trajectory.running_min(tau, prior_floor) / (1.0 - share))
    planned = trajectory.planned_pvalues(tau) if share > 0 else None
    return p if planned is None else np.minimum(p, planned / share)


def decide_trajectory(trajectory: Trajectory, tau: float, alpha: float, correction: str = "holm",
                      levels: Sequence[float] | None = None, plan_share: float = PLAN_SHARE,
                      prior_floor: float = PRIOR_FLOOR) -> PixelCertificate:
    """The certificate of a progressive run at its last frame, from its trajectory alone: Holm (or Bonferroni) at α
    over the combined p-values of the `levels` (default: all sampled). Valid at α whatever made sampling stop, and
    containing the certificate of every earlier frame under the same decision."""
    counts = trajectory.counts
    ks = tuple(float(k) for k in (levels if levels is not None else counts.k_percents))
    sub = counts.select_levels(ks)
    t, a, corr = pixel_cert._check_tau(tau), stats.check_scalar_alpha(alpha), pixel_cert._check_correction(correction)
    share = check_plan_share(plan_share)
    idx = [counts.k_percents.index(k) for k in ks]
    p = combined_pvalues(trajectory, t, share, anytime.check_floor(prior_floor))[idx]
    rejected = stats.holm(p, a) if corr == "holm" else stats.bonferroni(p, a)
    classes = np.where(rejected, sub.modes, np.int8(ABSTAIN)).astype(np.int8)
    m = int(classes.size)
    min_n = anytime.min_samples_to_certify(t, a * (1.0 - share), m)
    if trajectory.looked and share > 0:
        min_n = min(min_n, stats.min_samples_to_certify(t, a * share, m))
    return PixelCertificate(classes=classes, pvalues=p, radius=pixel_cert.certified_radius(counts.sigma, t),
                            sigma=counts.sigma, tau=t, alpha=a, correction=corr, n=counts.n, num_tests=m, min_n=min_n,
                            fractions=pixel_cert._fractions(classes))


@dataclass(frozen=True)
class StopRule:
    """When the sampler may stop: the decision it aims at (τ, α, the decided K levels, the correction, how α is
    split between the live frames and the look at the budget, the prior's uniform share)."""

    tau: float = 0.75
    alpha: float = 1e-3
    levels: tuple[float, ...] = (5.0, 25.0, 50.0)
    correction: str = "holm"
    # Stop once at most this share of pixels × levels is undecided (0: all decided). Pixels whose probability sits
    # near τ take thousands of votes to decide either way; they abstain whenever sampling stops.
    tolerance: float = 0.0
    plan_share: float = PLAN_SHARE
    prior_floor: float = PRIOR_FLOOR

    def __post_init__(self) -> None:
        validate.tau(self.tau)
        stats.check_scalar_alpha(self.alpha)
        validate.k_percents(self.levels, "levels")
        pixel_cert._check_correction(self.correction)
        if not (isinstance(self.tolerance, (int, float)) and 0.0 <= self.tolerance < 1.0):
            raise CertlibError(f"tolerance must be a share in [0, 1), got {self.tolerance!r}")
        check_plan_share(self.plan_share)
        anytime.check_floor(self.prior_floor)

    def as_key(self) -> tuple:
        """What the stored counts depend on (the store key of an anytime run)."""
        key = (self.tau, self.alpha, tuple(sorted(self.levels)), self.correction)
        key += (self.tolerance,) if self.tolerance else ()
        changed = (self.plan_share, self.prior_floor) != (PLAN_SHARE, PRIOR_FLOOR)
        return key + ((self.plan_share, self.prior_floor) if changed else ())

    def certificate(self, trajectory: Trajectory) -> PixelCertificate:
        """The certificate of the rule's levels at the trajectory's last frame."""
        return decide_trajectory(trajectory, self.tau, self.alpha, self.correction, sorted(self.levels),
                                 self.plan_share, self.prior_floor)

    def status(self, trajectory: Trajectory, n_max: int | None = None) -> tuple[PixelCertificate, np.ndarray]:
        """(the certificate of the decided levels, mask of their tests not decided yet). A test is decided when
        certified, futile, or (given the budget n_max) out of reach of both tests even if every remaining vote
        agreed."""
        cert = self.certificate(trajectory)
        return cert, self.undecided(trajectory.counts.select_levels(sorted(self.levels)), cert, n_max, trajectory)

    def undecided(self, sub: TopKCounts, cert: PixelCertificate, n_max: int | None = None,
                  trajectory: Trajectory | None = None) -> np.ndarray:
        """Mask of the pixel tests of `sub` (counts of the rule's levels) that `cert`, their certificate under this
        rule, leaves undecided: neither certified, futile, nor out of reach by n_max. Without a trajectory, reach is
        judged by the uniform-prior anytime test alone."""
        k, n = sub.votes_for_mode, sub.n
        open_ = (cert.classes == ABSTAIN) & ~anytime.futile(k, n, self.tau, self.alpha)
        if n_max is None or n_max <= n:
            return open_
        # the loosest Holm level is α itself: a test that cannot reach it by n_max is out of reach
        live = self.alpha * (1.0 - self.plan_share)
        best = np.minimum(k + (n_max - n), n_max)
        if trajectory is None:
            reach = anytime.pvalues(best, n_max, self.tau) <= live
        else:
            s = np.where(sub.modes == 1, sub.selection_ones, sub.n0 - sub.selection_ones)
            reach = anytime.pvalues(best, n_max, self.tau, s, sub.n0, self.prior_floor) <= live
            plan = trajectory.plan_n
            if self.plan_share > 0 and plan is not None and n < plan <= n_max:
                tail = binom.sf(np.arange(plan + 1) - 1, plan, self.tau)
                reach |= tail[k + (plan - n)] <= self.alpha * self.plan_share
        return open_ & reach

    def done(self, open_: np.ndarray) -> bool:
        return float(open_.mean()) <= self.tolerance if self.tolerance else not open_.any()


@dataclass(frozen=True)
class Frame:
    """The state after one batch: the run's trajectory (counts at every boundary so far), the certificate of the
    rule's levels, and why sampling stopped (if it did). Certificates of later frames contain this one's."""

    trajectory: Trajectory
    certificate: PixelCertificate     # of rule.levels, valid at rule.alpha
    undecided: int                    # pixels × levels neither certified, futile nor out of reach
    stop: str | None                  # None: sampling goes on; else a key of STOP_REASONS
    seconds: float                    # since the call started (model passes of this call only)

    @property
    def counts(self) -> TopKCounts:
        return self.trajectory.counts

    @property
    def passes(self) -> int:
        """Noisy copies attributed so far, n0 + n (earlier sessions' included)."""
        return self.counts.n0 + self.counts.n


def certify_progressively(attribute: AttributionFn, x: torch.Tensor, sigma: float, rule: StopRule,
                          n_max: int = 1000, n0: int = 32, k_percents: Sequence[float] = sampling.DEFAULT_K_PERCENTS,
                          seed: int = 0, frame_size: int | None = None,
                          start: Trajectory | TopKCounts | None = None, logits: LogitsFn | None = None,
                          normalisation: str = pixel_cert.DEFAULT_NORMALISATION, batch_size: int | None = None,
                          progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> Iterator[Frame]:
    """Yield a Frame after the selection copies and the first estimation batch, then after every further batch of
    `frame_size` copies (default: one attribution batch), until the rule's pixels are all decided or n = n_max.
    A fresh run plans the fixed-n look at n_max; frames always land on the planned n.

    With `start` (the Trajectory of an earlier, interrupted call with this configuration) sampling continues from
    its n with its history and plan: the frames are those the uninterrupted call would have produced. Bare counts
    are accepted too (the history then begins there, without a planned look). A start that is already decided or at
    n_max yields one frame and stops. Progress reports (estimation copies so far, n_max)."""
    n_max = validate.count("n_max", n_max)
    missing = [k for k in rule.levels if float(k) not in [float(v) for v in k_percents]]
    if missing:
        raise CertlibError(f"the stop rule decides levels {missing} that are not sampled ({list(k_percents)})")
    step = sampling.resolve_batch_size(frame_size if frame_size is not None else batch_size, x)
    began = time.perf_counter()
    if start is None:
        counts = sampling.sample_topk_counts(attribute, x, sigma, n0, min(step, n_max), k_percents, seed=seed,
                                             batch_size=batch_size, normalisation=normalisation, logits=logits)
        trajectory = Trajectory.begin(counts, plan_n=n_max)
    else:
        trajectory = start if isinstance(start, Trajectory) else Trajectory.begin(start, plan_n=None)
        _check_start(trajectory.counts, sigma, n0, k_percents, seed, normalisation)
    while True:
        cert, open_ = rule.status(trajectory, n_max)
        n = trajectory.counts.n
        stop = "decided" if rule.done(open_) else "budget" if n >= n_max else None
        if progress is not None:
            progress(min(n, n_max), n_max)
        yield Frame(trajectory, cert, int(open_.sum()), stop, time.perf_counter() - began)
        if stop is not None:
            return
        more = min(step, n_max - n)
        if trajectory.plan_n is not None and n < trajectory.plan_n:
            more = min(more, trajectory.plan_n - n)          # a frame on the planned n, whatever the frame size
        counts = sampling.extend_counts(attribute, x, trajectory.counts, more, logits=logits,
                                        batch_size=batch_size, cancel=cancel)
        trajectory = trajectory.extend(counts)


def replay(trajectory: Trajectory, rule: StopRule) -> Iterator[PixelCertificate]:
    """The certificate every frame of `trajectory` showed (or would show) under `rule`, in order: what a page that
    re-decides a run draws for its growth, and what the tests and the bench check for nestedness."""
    sub_counts = trajectory.counts
    total = np.zeros(sub_counts.estimation_ones.shape, dtype=np.int64)
    partial = None
    for n, step in zip(trajectory.n, trajectory.steps):
        total = total + step
        counts = replace(sub_counts, n=n, estimation_ones=total.astype(np.int32))
        partial = Trajectory.begin(counts, trajectory.plan_n) if partial is None else partial.extend(counts)
        yield rule.certificate(partial)


def _check_start(counts: TopKCounts, sigma: float, n0: int, k_percents: Sequence[float], seed: int,
                 normalisation: str) -> None:
    expected = (float(sigma), int(n0), tuple(float(k) for k in k_percents), int(seed), normalisation)
    found = (counts.sigma, counts.n0, tuple(counts.k_percents), counts.seed, counts.normalisation)
    if expected != found:
        raise CertlibError(f"cannot continue counts sampled with (σ, n0, K, seed, normalisation) = {found} as "
                           f"{expected}")
