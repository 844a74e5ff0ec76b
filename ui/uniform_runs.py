"""Cached stages of the uniform-smoothing page: ĥ(x) (resampled only when r, n, M, mode or seed change) and the
measured cosines (computed only on request)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from certlib.uniform import check as uniform_check
from certlib.smoothing import uniform_sampling
from certlib.smoothing.uniform_sampling import SmoothedMap
from ui import cache, runs
from ui.workbench import Workbench


@dataclass(frozen=True)
class UniformParams:
    radius: float
    n: int
    M: float
    bound_mode: str
    seed: int


def smoothed_map(wb: Workbench, params: UniformParams) -> SmoothedMap:
    return runs.cached_run(wb, "uniform_mean", params, lambda progress: uniform_sampling.sample_uniform_mean(
        runs.attribution_fn(wb, params.seed), wb.x.to(wb.model.device), params.radius, params.n, params.M,
        params.bound_mode, params.seed, progress=progress), "Sampling attributions uniformly in the ball:")


def point_key(wb: Workbench, params: UniformParams, eps_values: tuple[float, ...]) -> tuple:
    return runs.run_key(wb, "uniform_points", (params, eps_values))


def cached_points(wb: Workbench, params: UniformParams, eps_values: tuple[float, ...]):
    return cache.sampling_results().get(point_key(wb, params, eps_values))


def measure_points(wb: Workbench, params: UniformParams, smoothed: SmoothedMap, eps_values: tuple[float, ...]):
    return runs.cached_run(wb, "uniform_points", (params, eps_values), lambda progress: uniform_check.empirical_cosines(
        wb.model, wb.method, wb.x, wb.target, smoothed, eps_values, progress=progress),
        "Perturbing (random and attacked) and re-smoothing:")


def clean_map(wb: Workbench, seed: int):
    """g(x) as a numpy [H,W] map (cached: one attribution call)."""
    return runs.cached_run(wb, "clean_map", seed,
                           lambda _: runs.attribution_fn(wb, seed)(wb.x.to(wb.model.device))[0].cpu().numpy())


def clip_bound(clean, factor: float) -> float:
    """M for the clip mode: `factor` times the clean map's norm (1 for an all-zero map)."""
    return float(factor * np.linalg.norm(clean)) or 1.0
