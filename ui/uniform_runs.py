"""Cached stages of the uniform-smoothing page: ĥ(x) (resampled only when r, n, M, mode or seed change) and the
measured cosines (computed only on request)."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from certlib import sampling, uniform_check
from certlib.sampling import SmoothedMap
from ui import cache, runs
from ui.workbench import Workbench


@dataclass(frozen=True)
class UniformParams:
    radius: float
    n: int
    M: float
    bound_mode: str
    seed: int


def _bar(text: str):
    bar = st.progress(0.0, text=text)
    return bar, lambda done, total: bar.progress(min(1.0, done / total), text=f"{text} {done}/{total}")


def smoothed_map(wb: Workbench, params: UniformParams) -> SmoothedMap:
    results = cache.sampling_results()
    key = runs.run_key(wb, "uniform_mean", params)
    hit = results.get(key)
    if hit is not None:
        return hit
    bar, progress = _bar("Sampling attributions uniformly in the ball:")
    with runs.shown_in_page(bar):
        smoothed = sampling.sample_uniform_mean(runs.attribution_fn(wb, params.seed), wb.x.to(wb.model.device),
                                                params.radius, params.n, params.M, params.bound_mode, params.seed,
                                                progress=progress)
    results.put(key, smoothed)
    return smoothed


def point_key(wb: Workbench, params: UniformParams, eps_values: tuple[float, ...]) -> tuple:
    return runs.run_key(wb, "uniform_points", (params, eps_values))


def cached_points(wb: Workbench, params: UniformParams, eps_values: tuple[float, ...]):
    return cache.sampling_results().get(point_key(wb, params, eps_values))


def measure_points(wb: Workbench, params: UniformParams, smoothed: SmoothedMap, eps_values: tuple[float, ...]):
    bar, progress = _bar("Perturbing (random and attacked) and re-smoothing:")
    with runs.shown_in_page(bar):
        points = uniform_check.empirical_cosines(wb.model, wb.method, wb.x, wb.target, smoothed, eps_values,
                                                 progress=progress)
    cache.sampling_results().put(point_key(wb, params, eps_values), points)
    return points


def clean_map(wb: Workbench, seed: int):
    """g(x) as a numpy [H,W] map (cached: one attribution call)."""
    results = cache.sampling_results()
    key = runs.run_key(wb, "clean_map", seed)
    hit = results.get(key)
    if hit is None:
        with runs.shown_in_page():
            hit = runs.attribution_fn(wb, seed)(wb.x.to(wb.model.device))[0].cpu().numpy()
        results.put(key, hit)
    return hit
