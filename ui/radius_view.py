"""The Certified pixels page's radius view (issue #29): each pixel's own certified radius as a map, an ε slider that
shows what holds at ε, and the share certified against ε with R(τ) marked — from the counts on screen, no sampling."""
from __future__ import annotations

import threading

import numpy as np
import streamlit as st

from certlib.pixel import radius as pixel_radius, radius_viz
from certlib.pixel.progressive import Trajectory
from certlib.smoothing.sampling import TopKCounts
from ui.cache import ResultCache
from ui.controls import help_for



# Radii of the runs on screen, shared by every session of the app: the sessions of one run (single-flight) hold the
# very same counts and trajectory objects, so the room that certified one photo computes its radii once, not once a
# session (0.1-0.26 s each, serialised on the GIL while the last certificates are delivered; bench/load.py).
_RADII = ResultCache(max_entries=8)
_COMPUTING = threading.Lock()


def radii_for(counts: TopKCounts, levels: tuple[float, ...], trajectory: Trajectory | None,
              alpha: float) -> pixel_radius.PixelRadii:
    """The radii of the counts on screen at `levels` (the run's trajectory for the anytime test), kept while the
    same counts, levels and α are shown in any session: a slider that changes none of them costs nothing."""
    key = (id(counts), id(trajectory), tuple(levels), float(alpha))
    # One computation at a time: the sessions of a run reach this view within a second of each other, and the
    # first computes while the others wait for its result (the work holds the GIL anyway).
    with _COMPUTING:
        held = _RADII.get(key)
        if held is not None and held[0] is counts and held[1] is trajectory:   # ids of live objects: unique
            return held[2]
        if trajectory is None:
            radii = pixel_radius.fixed_n_radii(counts, alpha, levels)
        else:
            radii = pixel_radius.trajectory_radii(trajectory, alpha, levels)
        _RADII.put(key, (counts, trajectory, radii))   # held with the radii: their ids cannot be reused meanwhile
        return radii


def summary_sentence(radii: pixel_radius.PixelRadii, radius_tau: float) -> str:
    """How many tests hold at R(τ) and at some radius, with the radius quantiles, in words."""
    finite = radii.radii[np.isfinite(radii.radii)]
    at_tau = int((finite >= radius_tau).sum())
    if finite.size == 0:
        return (f"No pixel test has a certified radius at α = {radii.alpha:g} over all {radii.num_tests:,} tests: "
                "more samples or a larger α would give some.")
    capped = " — the largest n votes can show, all agreeing" if np.median(finite) >= finite.max() - 1e-12 else ""
    return (f"**{finite.size:,}** of {radii.num_tests:,} pixel tests are certified at *some* radius "
            f"({at_tau:,} of them up to R(τ) = {radius_tau:.3f}); median radius {np.median(finite):.3f}, "
            f"90th percentile {np.quantile(finite, 0.9):.3f}, largest {finite.max():.3f}{capped}. All radii hold together "
            f"with probability ≥ 1 − {radii.alpha:g} ({'Clopper–Pearson' if radii.scheme == 'bonferroni' else 'anytime-valid bounds'}"
            " at α/m).")


def show(counts: TopKCounts, levels: tuple[float, ...], trajectory: Trajectory | None, alpha: float,
         radius_tau: float) -> None:
    """Radius map, ε slider and curve for the decision's levels."""
    radii = radii_for(counts, levels, trajectory, alpha)
    st.markdown("**Every pixel's own radius** — how far each pixel's class holds, from the same votes")
    st.markdown(summary_sentence(radii, radius_tau))
    grid = radius_viz.eps_grid(radii)
    top = max(float(grid[-1]), 1e-3)
    if st.session_state.get("cp_eps") is None or st.session_state["cp_eps"] > top:
        st.session_state["cp_eps"] = min(round(radius_tau, 4), top)   # start at R(τ), the decision's radius
    if st.session_state.get("cp_radius_level") not in radii.k_percents:
        st.session_state["cp_radius_level"] = radii.k_percents[0]
    c1, c2 = st.columns([3, 1])
    eps = c1.slider("ε (radius to look at)", 0.0, top, step=max(top / 200, 1e-4), key="cp_eps",
                    format="%.3f", help=help_for("cp_eps"))
    level = c2.selectbox("level of the map", list(radii.k_percents), key="cp_radius_level",
                         format_func=lambda k: f"top {k:g}%", help=help_for("cp_radius_level"))
    at_eps = radii.certified_at(eps)
    shares = ", ".join(f"top {k:g}%: {int((at_eps[i] == 1).sum()):,} certified in, {int((at_eps[i] == 0).sum()):,} out"
                       for i, k in enumerate(radii.k_percents))
    st.caption(f"Certified for every ‖δ‖₂ ≤ ε = {eps:.3f}: {shares}. In the map: colour = the pixel's radius, grey = "
               "a radius below ε, orange = no radius (abstains at every ε).")
    left, right = st.columns(2)
    left.plotly_chart(radius_viz.radius_map(radii, level, eps), key="cp_radius_map")
    right.plotly_chart(radius_viz.radius_curve({"": radii}, radius_tau, radii.k_percents, marked_eps=eps,
                                               eps=grid), key="cp_radius_curve")
