"""Figures for Sparsified SmoothGrad (design §5): pure functions from numpy arrays to images and plotly figures."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from certlib import palette, viz

CERTIFIED_RGB = palette.CERTIFIED_IN       # blue: provably stays in the top K for every ‖δ‖ ≤ ε
UNCERTIFIED_RGB = palette.NOT_CERTIFIED    # vermillion: in the estimated top K, no guarantee at this ε
POINT_STYLE = {"random": ("circle", palette.RANDOM_POINT), "attack": ("x", palette.ATTACK_POINT)}
CURVE_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def topk_certified_overlay(base_rgb: np.ndarray, top_mask: np.ndarray, certified_mask: np.ndarray,
                           alpha: float = 0.75) -> np.ndarray:
    """uint8 [H,W,3]: the image with its top-K pixels in blue (certified) or vermillion (not certified); others
    untouched (certlib.palette)."""
    top = np.asarray(top_mask, dtype=bool)
    certified = np.asarray(certified_mask, dtype=bool) & top
    colour = np.zeros((*top.shape, 3), dtype=np.float32)
    colour[certified] = CERTIFIED_RGB
    colour[top & ~certified] = UNCERTIFIED_RGB
    weight = np.where(top, alpha, 0.0).astype(np.float32)[..., None]
    out = base_rgb.astype(np.float32) * (1 - weight) + colour * weight
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def topk_overlay_figure(overlay_rgb: np.ndarray, mean: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                        radii: np.ndarray, top_mask: np.ndarray) -> go.Figure:
    """The overlay as an image; hover shows ĝ, its confidence interval and the pixel's certified radius ε_j."""
    status = np.where(~np.asarray(top_mask, dtype=bool), "not in the top K",
                      np.where(radii > 0, "top K", "top K, never certified"))
    radius_text = np.where(np.isfinite(radii) & (radii > 0), np.char.mod("%.4f", np.maximum(radii, 0)), "–")
    custom = np.stack([status, np.char.mod("%.3f", mean), np.char.mod("%.3f", lower), np.char.mod("%.3f", upper),
                       radius_text], axis=-1)
    hover = ("row %{y}, col %{x}<br>%{customdata[0]}<br>ĝ = %{customdata[1]} in [%{customdata[2]}, "
             "%{customdata[3]}]<br>certified while ε < %{customdata[4]}<extra></extra>")
    legend = [dict(type="scatter", x=[None], y=[None], mode="markers", name=name, hoverinfo="skip",
                   marker=dict(symbol="square", size=12, color=palette.hex_colour(rgb)))
              for name, rgb in (("certified at ε (per pixel)", CERTIFIED_RGB), ("top K, not certified", UNCERTIFIED_RGB))]
    return go.Figure([dict(type="image", source=viz.png_source(overlay_rgb), customdata=custom, hovertemplate=hover), *legend],
                     layout=dict(margin=dict(l=0, r=0, t=36, b=0), height=420,
                                 title=dict(text="top-K pixels at ε", x=0.5, xanchor="center"),
                                 xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x",
                                                                       autorange="reversed"),
                                 legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.02, yanchor="top"),
                                 plot_bgcolor="white"))


def unit_map_figure(values: np.ndarray, title: str = "") -> go.Figure:
    """A map with values in [0, 1] (the smoothed sparsified map) on a fixed sequential colour scale."""
    heatmap = dict(type="heatmap", z=values, colorscale="Viridis", zmin=0.0, zmax=1.0,
                   hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra></extra>")
    return go.Figure(heatmap, layout=dict(title=title, height=380, margin=dict(l=0, r=0, t=30 if title else 0, b=0),
                                          yaxis=dict(autorange="reversed", visible=False, scaleanchor="x"),
                                          xaxis=dict(visible=False)))


@dataclass(frozen=True)
class OverlapCurve:
    label: str           # legend group, e.g. "σ = 0.25": curves and points of one label share a colour
    eps: np.ndarray
    certified: np.ndarray
    kind: str = "paired"     # "paired" (solid) | "per pixel" (dashed)


@dataclass(frozen=True)
class OverlapPoint:
    kind: str            # "random" | "attack"
    eps: float
    empirical: float
    label: str           # legend group, e.g. "σ = 0.25"
    note: str = ""


def overlap_curve_figure(curves: list[OverlapCurve], points: list[OverlapPoint],
                         eps_marker: float | None = None) -> go.Figure:
    """Certified top-K overlap against ε (step curves: paired solid, per pixel dashed; one colour per σ) with the
    empirical overlaps of perturbed inputs as markers (circles random, crosses attacked; colour = their σ)."""
    labels = dict.fromkeys(c.label for c in curves)
    colours = {label: CURVE_COLOURS[i % len(CURVE_COLOURS)] for i, label in enumerate(labels)}
    # Built in one go.Figure call from plain dicts: each add_trace / add_vline / update_layout re-validates the
    # whole figure (see certlib/viz.py).
    traces = [dict(type="scatter", x=c.eps, y=c.certified, mode="lines",
                   line=dict(shape="hv", color=colours[c.label], dash="solid" if c.kind == "paired" else "dash"),
                   name=f"certified ({c.kind}), {c.label}",
                   hovertemplate="ε %{x:.4f}: certified %{y:.1%}<extra></extra>") for c in curves]
    for kind in ("random", "attack"):
        for label in dict.fromkeys(p.label for p in points if p.kind == kind):
            chosen = [p for p in points if p.kind == kind and p.label == label]
            symbol, default = POINT_STYLE[kind]
            traces.append(dict(
                type="scatter", x=[p.eps for p in chosen], y=[p.empirical for p in chosen], mode="markers",
                marker=dict(symbol=symbol, size=10, color=colours.get(label, default),
                            line=dict(width=1, color=default)),
                name=f"{kind} δ, {label}", customdata=[p.note for p in chosen],
                hovertemplate="ε %{x:.4f}: empirical %{y:.1%}<br>%{customdata}<extra></extra>"))
    layout = dict(xaxis=dict(title="ε (ℓ2 norm of the perturbation, [0,1] pixel space)"),
                  yaxis=dict(title="top-K overlap", range=[-0.02, 1.02], tickformat=".0%"), height=420,
                  margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h", y=-0.25))
    if eps_marker is not None:   # a labelled vertical line at ε across the plot (what fig.add_vline draws)
        layout["shapes"] = [dict(type="line", x0=eps_marker, x1=eps_marker, xref="x", y0=0, y1=1, yref="y domain",
                                 line=dict(color="#7f7f7f", dash="dot"))]
        layout["annotations"] = [dict(text="ε", showarrow=False, x=eps_marker, xref="x", xanchor="left", y=1,
                                      yref="y domain", yanchor="top")]
    return go.Figure(traces, layout=layout)
