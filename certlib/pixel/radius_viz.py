"""Figures of per-pixel certified radii (certlib.pixel.radius): a radius map per level and the share certified
against ε, with R(τ) marked. Plotly only; no streamlit."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import plotly.graph_objects as go

from certlib import palette
from certlib.pixel.radius import PixelRadii

CURVE_KINDS = {"top": "share of the level's top-K pixels certified in the top K",
               "tests": "share of the level's pixel tests certified (either class)"}
_LINE_COLOURS = ("#1f4e99", "#c0392b", "#2e8b57", "#8e44ad", "#d35400", "#16a085")


def eps_grid(radii: PixelRadii | list[PixelRadii], points: int = 121) -> np.ndarray:
    """0 … a little past the largest radius of any of `radii` (at least R = σ·Φ⁻¹(0.99) when none has one)."""
    items = radii if isinstance(radii, list) else [radii]
    finite = [float(np.nanmax(r.radii)) for r in items if np.isfinite(r.radii).any()]
    top = max(finite) if finite else 2.33 * items[0].sigma
    return np.linspace(0.0, 1.05 * top, points)


BELOW_EPS_COLOUR = "#d9d9d9"


def _flat_layer(mask: np.ndarray, colour: str, label: str) -> dict:
    """One colour where `mask` holds, transparent elsewhere; hover names what it is. (Traces are plain dicts given
    to go.Figure: a go.Heatmap object is validated twice, which tripled the cost of this figure; see certlib.viz.)"""
    return dict(type="heatmap", z=np.where(mask, 1.0, np.nan).astype(np.float32), showscale=False,
                colorscale=[[0.0, colour], [1.0, colour]], zmin=0.0, zmax=1.0,
                hovertemplate=f"x %{{x}}, y %{{y}}: {label}<extra></extra>")


def radius_map(radii: PixelRadii, level: float, eps: float | None = None) -> go.Figure:
    """Heat map of R_i at one level; pixels with no radius (abstain) in the abstain colour. With `eps`, pixels
    whose radius is below ε are drawn as not certified at ε (greyed), so the map shows what holds at that ε."""
    i = radii.k_percents.index(float(level))
    z = radii.radii[i].copy()
    if eps is not None:
        z = np.where(z >= eps, z, np.nan)
    # numeric hover data (one base64 block), not a string per pixel: see pixel.viz.overlay_figure
    member = (radii.classes[i] == 1).astype(np.uint8)
    heat = dict(type="heatmap", z=z.astype(np.float32), customdata=member, colorscale="Viridis", zmin=0.0,
                zmax=float(np.nanmax(radii.radii)) if np.isfinite(radii.radii).any() else 1.0,
                colorbar=dict(title="R_i", thickness=12),
                hovertemplate=f"x %{{x}}, y %{{y}}: in the top {level:g}% = %{{customdata}} (1 yes, 0 no), "
                              "certified up to R = %{z:.3f}<extra></extra>")
    h, w = z.shape
    abstain = palette.hex_colour(palette.ABSTAIN)
    # "no radius" (abstain) and "a radius below ε" drawn as their own layers under the radii, exactly on the map's
    # pixels (a background colour would also fill the margins that the equal-aspect axes leave)
    none = np.isnan(radii.radii[i])
    absent = _flat_layer(none, abstain, "no radius (abstain)")
    below = _flat_layer(~none & np.isnan(z), BELOW_EPS_COLOUR, f"a radius below ε = {eps:.3f}" if eps else "")
    title = f"certified radius per pixel, top {level:g}%" + ("" if eps is None else f" (radius ≥ ε = {eps:.3f})")
    return go.Figure([absent, below, heat], layout=dict(
        title=dict(text=title, x=0.5, xanchor="center"), plot_bgcolor="white", height=380,
        xaxis=dict(showgrid=False, visible=False, range=[-0.5, w - 0.5], constrain="domain"),
        yaxis=dict(showgrid=False, visible=False, autorange="reversed", scaleanchor="x", constrain="domain"),
        margin=dict(l=10, r=10, t=36, b=10)))


def radius_curve(curves: Mapping[str, PixelRadii], radius_tau: float | None, levels: tuple[float, ...],
                 kind: str = "top", eps: np.ndarray | None = None, marked_eps: float | None = None) -> go.Figure:
    """Share certified against ε: one line per (label, level); R(τ) and an optional chosen ε marked."""
    if kind not in CURVE_KINDS:
        raise ValueError(f"kind must be one of {sorted(CURVE_KINDS)}, got {kind!r}")
    grid = eps_grid(list(curves.values())) if eps is None else np.asarray(eps, dtype=np.float64)
    traces, dashes = [], ("solid", "dash", "dot", "dashdot")
    for c, (label, radii) in enumerate(curves.items()):
        shares = radii.curve(grid)[kind]
        for j, level in enumerate(levels):
            col = radii.k_percents.index(float(level))
            name = f"{label} · top {level:g}%" if len(curves) > 1 else f"top {level:g}%"
            traces.append(dict(type="scatter", x=grid, y=shares[:, col], mode="lines", name=name,
                               line=dict(color=_LINE_COLOURS[(c if len(curves) > 1 else j) % 6],
                                         dash=dashes[j % 4] if len(curves) > 1 else "solid"),
                               hovertemplate="ε = %{x:.3f}: %{y:.1%}<extra>" + name + "</extra>"))
    # One go.Figure(traces, layout) call and the markers as plain layout shapes: add_trace and add_vline
    # re-validate the figure (~20 ms each), paid on every τ or ε move.
    marks = [(x, text) for x, text in ((radius_tau, "R(τ)"), (marked_eps, "ε")) if x is not None]
    return go.Figure(traces, layout=dict(
        shapes=[dict(type="line", xref="x", yref="paper", x0=x, x1=x, y0=0, y1=1,
                     line=dict(color="#555", dash="dash", width=1)) for x, _ in marks],
        annotations=[dict(x=x, xref="x", y=1, yref="paper", text=text, showarrow=False, xanchor="left",
                          yanchor="top") for x, text in marks],
        title=dict(text=CURVE_KINDS[kind] + " against ε", x=0.5, xanchor="center", font=dict(size=13)),
        xaxis=dict(title="ε (ℓ2 radius in the model's input)", rangemode="tozero"),
        yaxis=dict(title="share certified", tickformat=".0%", range=[0, 1.02]),
        height=360, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.2, yanchor="top")))
