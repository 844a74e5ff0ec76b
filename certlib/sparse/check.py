"""The empirical side of Sparsified SmoothGrad (design §5): re-estimate ĝ at perturbed inputs (random directions
and a top-K attribution attack, same noise seed as at x, so the comparison uses common random numbers) and compare
the top-K overlap they reach with the certified one at the same ε.

The certificate says: with probability ≥ 1 − α no perturbation of norm ≤ ε brings the overlap below the certified
share; an empirical point below it (`OverlapCheck.violates`) is either a sampling fluke or a bug, and is shown.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from certlib.attributions import attacks
from certlib.sparse import smoothgrad as S
from certlib.smoothing.engine import AttributionFn, ProgressFn
from certlib.models.registry import LoadedModel

# Perturbation sizes for the empirical points, relative to σ: the certificate is non-trivial up to a fraction of σ,
# and 0.5σ / σ show what happens beyond it.
EPS_OVER_SIGMA = (0.1, 0.25, 0.5, 1.0)
RANDOM_DIRECTIONS = 1
ATTACK_STEPS, ATTACK_RESTARTS = 20, 4
StageProgress = Callable[[int, int, str], None]        # (done, total, what) across several sampling runs


def eps_values(sigma: float) -> tuple[float, ...]:
    return tuple(round(r * sigma, 6) for r in EPS_OVER_SIGMA)


@dataclass(frozen=True)
class PerturbedRun:
    """ĝ at x + δ (same noise seed as at x) for one perturbation of norm ‖δ‖₂ = eps."""

    kind: str                  # "random" | "attack"
    eps: float
    samples: S.SmoothGradSamples
    note: str
    base_similarity: float | None = None     # attacks: top-K overlap of the *base* maps at x + δ and at x


@dataclass(frozen=True)
class OverlapCheck:
    """One empirical top-K overlap beside the certified (paired) one at the same ε."""

    label: str
    kind: str
    eps: float
    empirical: float
    certified: float
    note: str = ""

    @property
    def violates(self) -> bool:
        return self.empirical < self.certified


def random_runs(attribute: AttributionFn, x: torch.Tensor, sigma: float, n: int, levels: Sequence[float],
                seed: int, eps: Sequence[float], directions: int = RANDOM_DIRECTIONS,
                progress: StageProgress | None = None) -> list[PerturbedRun]:
    """ĝ(x + ε·u) for `directions` random unit directions u (the same for every ε)."""
    unit = attacks.random_directions(x, 1.0, directions, seed=seed)
    jobs = [(e, j) for e in eps for j in range(directions)]
    runs = []
    for i, (e, j) in enumerate(jobs):
        step = _stage(progress, i, len(jobs), f"random perturbation ε = {e:g}")
        runs.append(PerturbedRun("random", e, S.sample_smoothgrad(attribute, x + e * unit[j:j + 1], sigma, n, levels,
                                                                  seed=seed, progress=step),
                                 f"random direction {j + 1}"))
    return runs


def attacked_runs(model: LoadedModel, method: str, attribute: AttributionFn, x: torch.Tensor, target: int,
                  sigma: float, n: int, levels: Sequence[float], seed: int, eps: Sequence[float], k_percent: float,
                  progress: StageProgress | None = None) -> list[PerturbedRun]:
    """A top-K% attribution attack (PGD on the base map, label kept) at each ε, then ĝ at each attacked input."""
    runs = []
    for i, e in enumerate(eps):
        attack_step = _stage(progress, 2 * i, 2 * len(eps), f"attack at ε = {e:g}: PGD step")
        hit = attacks.attribution_attack(model, method, x, target, e, loss="topk", k_percent=float(k_percent),
                                         steps=ATTACK_STEPS, restarts=ATTACK_RESTARTS, seed=seed,
                                         progress=attack_step)
        note = f"top-{k_percent:g}% attack; base-map overlap {hit.base_similarity:.1%}; {hit.gradient_source}"
        sample_step = _stage(progress, 2 * i + 1, 2 * len(eps), f"attack at ε = {e:g}: sampling ĝ(x + δ)")
        runs.append(PerturbedRun("attack", e, S.sample_smoothgrad(attribute, x + hit.delta, sigma, n, levels,
                                                                  seed=seed, progress=sample_step), note,
                                 hit.base_similarity))
    return runs


def _stage(progress: StageProgress | None, index: int, count: int, what: str) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda done, total: progress(index * total + done, count * total, what)


def overlap_checks(cert: S.TopKCertificate, base: S.SmoothGradSamples, perturbed: Sequence[PerturbedRun],
                   label: str = "") -> list[OverlapCheck]:
    """The empirical top-K overlap of each perturbed run under `cert`'s decision, with the certified (paired)
    overlap at the same ε — the stronger of the certificate's two claims."""
    clean = base.mean(cert.variant, cert.level)
    return [OverlapCheck(label, run.kind, run.eps,
                         S.empirical_topk_overlap(clean, run.samples.mean(cert.variant, cert.level), cert.k),
                         float(cert.paired_at([run.eps])[0]), run.note) for run in perturbed]


def violation_summary(checks: Sequence[OverlapCheck]) -> str | None:
    """One sentence listing the points below their certified overlap, or None when there is none."""
    below = [c for c in checks if c.violates]
    if not below:
        return None
    return (f"{len(below)} empirical overlap(s) fall below the (paired) certified one: "
            + "; ".join(f"{c.label} {c.kind} ε = {c.eps:g}: {c.empirical:.1%} < {c.certified:.1%}" for c in below))
