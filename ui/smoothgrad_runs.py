"""Glue between the workbench and the expensive stages of Sparsified SmoothGrad (design §5): cached sampling at x
and at perturbed inputs, the attribution attack, progress bars. Everything that K, ε, τ, the variant or α change is
recomputed by the page from these cached sums; nothing here depends on them (the attack's K% target excepted)."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
import torch

from certlib import attacks
from certlib import sparse_smoothgrad as S
from ui import cache
from ui.runs import attribution_fn, run_key
from ui.workbench import Workbench

# Perturbation sizes for the empirical points, relative to σ: the certificate is non-trivial up to a fraction of σ,
# and 0.5σ / σ show what happens beyond it.
EPS_OVER_SIGMA = (0.1, 0.25, 0.5, 1.0)
RANDOM_DIRECTIONS = 1
ATTACK_STEPS, ATTACK_RESTARTS = 20, 4


@dataclass(frozen=True)
class SmoothGradParams:
    sigma: float
    n: int
    seed: int
    levels: tuple[float, ...] = S.DEFAULT_LEVELS

    @property
    def eps_values(self) -> tuple[float, ...]:
        return tuple(round(r * self.sigma, 6) for r in EPS_OVER_SIGMA)


@dataclass(frozen=True)
class PerturbedRun:
    """ĝ at x + δ (same noise seed as at x) for one perturbation of norm ‖δ‖₂ = eps."""

    kind: str                  # "random" | "attack"
    eps: float
    samples: S.SmoothGradSamples
    note: str


def _bar(text: str):
    bar = st.progress(0.0, text=text)
    return bar, lambda done, total: bar.progress(min(1.0, done / total), text=f"{text} {done}/{total}")


def _sample(wb: Workbench, params: SmoothGradParams, x: torch.Tensor, progress) -> S.SmoothGradSamples:
    return S.sample_smoothgrad(attribution_fn(wb, params.seed), x, params.sigma, params.n, params.levels,
                               seed=params.seed, progress=progress)


def samples(wb: Workbench, params: SmoothGradParams) -> S.SmoothGradSamples:
    """ĝ(x): sampled once per config (progress bar), then served from the shared result cache."""
    results = cache.sampling_results()
    key = run_key(wb, "sg_samples", params)
    hit = results.get(key)
    if hit is not None:
        return hit
    bar, progress = _bar(f"Sampling {params.n} noisy attributions (σ = {params.sigma:g})…")
    out = _sample(wb, params, wb.x.to(wb.model.device), progress)
    bar.empty()
    results.put(key, out)
    return out


def random_runs(wb: Workbench, params: SmoothGradParams) -> list[PerturbedRun]:
    """ĝ(x + δ) for random directions at each ε of `params.eps_values`; the same directions for every ε."""
    results = cache.sampling_results()
    key = run_key(wb, "sg_random", params)
    hit = results.get(key)
    if hit is not None:
        return hit
    x = wb.x.to(wb.model.device)
    unit = attacks.random_directions(x, 1.0, RANDOM_DIRECTIONS, seed=params.seed)
    jobs = [(eps, j) for eps in params.eps_values for j in range(RANDOM_DIRECTIONS)]
    bar = st.progress(0.0, text="Random perturbations…")
    runs = []
    for i, (eps, j) in enumerate(jobs):
        def progress(done: int, total: int, i=i) -> None:
            bar.progress((i + done / total) / len(jobs), text=f"Random perturbations: ε = {eps:g} ({i + 1}/{len(jobs)})")
        runs.append(PerturbedRun("random", eps, _sample(wb, params, x + eps * unit[j:j + 1], progress),
                                 f"random direction {j + 1}"))
    bar.empty()
    results.put(key, runs)
    return runs


def attack_runs(wb: Workbench, params: SmoothGradParams) -> dict[float, list[PerturbedRun]]:
    """The attacks already run for this config, by the K% they targeted (empty if none)."""
    return cache.sampling_results().get(run_key(wb, "sg_attack", params)) or {}


def run_attacks(wb: Workbench, params: SmoothGradParams, k_percent: float) -> list[PerturbedRun]:
    """Top-K% attribution attack (PGD on the base map, label kept) at each ε, then ĝ at each attacked input.
    Stored beside the attacks for other K% of the same config."""
    done = attack_runs(wb, params)
    if float(k_percent) in done:
        return done[float(k_percent)]
    x = wb.x.to(wb.model.device)
    eps_values = params.eps_values
    bar = st.progress(0.0, text="Attacking…")
    runs = []
    for i, eps in enumerate(eps_values):
        def attack_progress(step: int, steps: int, i=i, eps=eps) -> None:
            bar.progress((i + 0.5 * step / steps) / len(eps_values),
                         text=f"Attack at ε = {eps:g}: PGD step {step}/{steps}")

        def sample_progress(n_done: int, n: int, i=i, eps=eps) -> None:
            bar.progress((i + 0.5 + 0.5 * n_done / n) / len(eps_values),
                         text=f"Attack at ε = {eps:g}: sampling ĝ(x + δ) {n_done}/{n}")
        hit = attacks.attribution_attack(wb.model, wb.method, x, wb.target, eps, loss="topk",
                                         k_percent=float(k_percent), steps=ATTACK_STEPS, restarts=ATTACK_RESTARTS,
                                         seed=params.seed, progress=attack_progress)
        note = (f"top-{k_percent:g}% attack; base-map overlap {hit.base_similarity:.1%}; "
                f"{hit.gradient_source}")
        runs.append(PerturbedRun("attack", eps, _sample(wb, params, x + hit.delta, sample_progress), note))
    bar.empty()
    cache.sampling_results().put(run_key(wb, "sg_attack", params), {**done, float(k_percent): runs})
    return runs
