"""Glue between the workbench and the expensive stages of Sparsified SmoothGrad (design §5): cached sampling at x
and at perturbed inputs (certlib.sparse.check), with progress bars. Everything that K, ε, τ, the variant or α
change is recomputed by the page from these cached sums; nothing here depends on them (the attack's K% target
excepted)."""
from __future__ import annotations

from dataclasses import dataclass

from certlib.sparse import check as sparse_check
from certlib.sparse import smoothgrad as S
from certlib.sparse.check import PerturbedRun
from ui import cache
from ui.runs import attribution_fn, cached_run, progress_bar, run_key, shown_in_page
from ui.workbench import Workbench


@dataclass(frozen=True)
class SmoothGradParams:
    sigma: float
    n: int
    seed: int
    levels: tuple[float, ...] = S.DEFAULT_LEVELS

    @property
    def eps_values(self) -> tuple[float, ...]:
        return sparse_check.eps_values(self.sigma)


def samples(wb: Workbench, params: SmoothGradParams) -> S.SmoothGradSamples:
    """ĝ(x): sampled once per config (progress bar), then served from the shared result cache."""
    return cached_run(wb, "sg_samples", params, lambda progress: S.sample_smoothgrad(
        attribution_fn(wb, params.seed), wb.x.to(wb.model.device), params.sigma, params.n, params.levels,
        seed=params.seed, progress=progress), f"Sampling {params.n} noisy attributions (σ = {params.sigma:g}):")


def _stage_bar(text: str):
    bar, _ = progress_bar(text)
    return bar, lambda done, total, what: bar.progress(min(1.0, done / total), text=f"{text} {what}")


def random_runs(wb: Workbench, params: SmoothGradParams) -> list[PerturbedRun]:
    """ĝ(x + δ) for random directions at each ε of `params.eps_values`; the same directions for every ε."""
    def compute(_progress) -> list[PerturbedRun]:
        bar, progress = _stage_bar("Random perturbations:")
        with shown_in_page(bar):
            return sparse_check.random_runs(attribution_fn(wb, params.seed), wb.x.to(wb.model.device), params.sigma,
                                            params.n, params.levels, params.seed, params.eps_values,
                                            progress=progress)
    return cached_run(wb, "sg_random", params, compute)


def attack_runs(wb: Workbench, params: SmoothGradParams) -> dict[float, list[PerturbedRun]]:
    """The attacks already run for this config, by the K% they targeted (empty if none)."""
    return cache.sampling_results().get(run_key(wb, "sg_attack", params)) or {}


def run_attacks(wb: Workbench, params: SmoothGradParams, k_percent: float) -> list[PerturbedRun]:
    """Top-K% attribution attack at each ε, then ĝ at each attacked input; stored beside the attacks for other K%
    of the same config."""
    done = attack_runs(wb, params)
    if float(k_percent) in done:
        return done[float(k_percent)]
    bar, progress = _stage_bar("Attacking:")
    with shown_in_page(bar):
        runs = sparse_check.attacked_runs(wb.model, wb.method, attribution_fn(wb, params.seed),
                                          wb.x.to(wb.model.device), wb.target, params.sigma, params.n, params.levels,
                                          params.seed, params.eps_values, float(k_percent), progress=progress)
    cache.sampling_results().put(run_key(wb, "sg_attack", params), {**done, float(k_percent): runs})
    return runs
