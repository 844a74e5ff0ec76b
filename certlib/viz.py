"""Figures and overlays: pure functions from numpy arrays to numpy images or plotly figures.

Each figure is built in one `go.Figure(traces, layout)` call with its traces as plain dicts: every `update_layout` /
`update_xaxes` / `add_trace` re-validates the figure, and a `go.Bar(...)` passed to `go.Figure` is validated twice,
which made building a figure cost several times more than the decision it shows (a slider move redraws them; see
bench/interactivity.py).

This module holds the figures every page shares (class probabilities, an attribution map); each certificate's own
figures are in pixel_viz, uniform_viz and sparse_viz, the dashboard's in metrics_viz."""
from __future__ import annotations

import base64
import io

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from certlib import palette


def top_k_classes(probs: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """[(class index, probability)] of the k most probable classes, most probable first."""
    probs = np.asarray(probs, dtype=np.float64).ravel()
    order = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), float(probs[i])) for i in order]


def probability_bar(probs: np.ndarray, class_names: tuple[str, ...], k: int = 5,
                    highlight: int | None = None) -> go.Figure:
    """Horizontal bar chart of the top-k class probabilities, the `highlight` class (target) in a second colour."""
    top = top_k_classes(probs, k)
    labels = [f"{i}: {class_names[i]}" for i, _ in top]
    values = [p for _, p in top]
    colours = [palette.HIGHLIGHT if i == highlight else palette.NEUTRAL for i, _ in top]
    bar = dict(type="bar", x=values, y=labels, orientation="h", marker_color=colours,
               text=[f"{p:.1%}" for p in values], textposition="auto", hovertemplate="%{y}: %{x:.4f}<extra></extra>")
    return go.Figure(bar, layout=dict(xaxis=dict(range=[0, 1], title="probability", tickformat=".0%"),
                                      yaxis=dict(autorange="reversed"), height=60 + 32 * len(top),
                                      margin=dict(l=10, r=10, t=10, b=40)))


# ------------------------------------------------------------------------------------- pixel certificate (§3.3)


def attribution_figure(attr: np.ndarray, title: str = "") -> go.Figure:
    """An attribution map: a signed map on a symmetric diverging scale (blue < 0 < red), an unsigned one (no value
    below 0, e.g. |gradient| or a CAM) on a one-sided sequential scale from 0. The colour bar is as tall as the map
    and sits beside it."""
    attr = np.asarray(attr)
    top = float(np.nanmax(attr)) if attr.size else 0.0
    unsigned = attr.size == 0 or float(np.nanmin(attr)) >= 0
    if unsigned:
        scale = dict(colorscale="Viridis", zmin=0.0, zmax=top or 1.0)
    else:
        lim = float(np.nanmax(np.abs(attr))) or 1.0
        scale = dict(colorscale="RdBu_r", zmin=-lim, zmax=lim)
    heatmap = dict(type="heatmap", z=attr, **scale, hovertemplate="row %{y}, col %{x}: %{z:.4g}<extra></extra>",
                   colorbar=dict(len=1.0, lenmode="fraction", y=0.5, yanchor="middle", thickness=12,
                                 tickformat=".2g", outlinewidth=0))
    return go.Figure(heatmap, layout=dict(title=dict(text=title or "attribution", x=0.5, xanchor="center"),
                                          height=420, margin=dict(l=0, r=0, t=36, b=0),
                                          yaxis=dict(autorange="reversed", visible=False, scaleanchor="x",
                                                     constrain="domain"),
                                          xaxis=dict(visible=False, constrain="domain")))


def _colour_stops(colours: list[str]) -> np.ndarray:
    """[n,3] floats in [0,1] from plotly's colour list (hex or 'rgb(r, g, b)' strings)."""
    from plotly.colors import hex_to_rgb, unlabel_rgb

    return np.array([hex_to_rgb(c) if c.startswith("#") else unlabel_rgb(c) for c in colours], dtype=np.float64) / 255


def attribution_rgb(attr: np.ndarray) -> np.ndarray:
    """uint8 [H,W,3]: the attribution map in the colours of `attribution_figure` (Viridis from 0 for an unsigned
    map, RdBu_r symmetric about 0 for a signed one), as a plain image: it draws at once, where a heatmap figure
    waits for the browser's plotting library. Interpolated from plotly's own scales (no matplotlib import, which
    costs ~0.2 s on the first picture)."""
    from plotly.colors import diverging, sequential

    attr = np.nan_to_num(np.asarray(attr, dtype=np.float64))
    if attr.size and attr.min() >= 0:
        stops, t = _colour_stops(sequential.Viridis), attr / (float(attr.max()) or 1.0)
    else:
        stops = _colour_stops(diverging.RdBu[::-1])
        t = 0.5 + 0.5 * attr / (float(np.abs(attr).max()) or 1.0)
    grid = np.linspace(0.0, 1.0, len(stops))
    rgb = np.stack([np.interp(t, grid, stops[:, c]) for c in range(3)], axis=-1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def png_source(rgb: np.ndarray) -> str:
    """An RGB uint8 image as a PNG data URI for plotly's image trace (`source`): the browser decodes it natively,
    where an image trace given `z` is painted pixel by pixel onto a canvas (~0.1 s per 224² redraw in chromium)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
