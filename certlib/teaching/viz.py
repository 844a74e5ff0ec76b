"""Plotly figures for the Learn page (certlib.teaching.lessons): pure functions from the toys' results to figures."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from certlib import palette
from certlib.teaching import lessons as teaching
from certlib.pixel import radius_viz
from certlib.pixel.viz import ABSTAIN_RGB, LEVEL_RGB

CLASS_FILL = ("#c6dbef", "#fdd0a2", "#c7e9c0", "#dadaeb")     # light: regions
CLASS_MARK = ("#2171b5", "#d94801", "#238b45", "#6a51a3")     # dark: samples
CERTIFIED_TOP = "rgb" + str(LEVEL_RGB[1])
ABSTAIN = "rgb" + str(ABSTAIN_RGB)
NOT_TOP = "#e8e8e8"
MARGIN = dict(l=10, r=10, t=40, b=10)


def _categorical_heatmap(z: np.ndarray, colours: tuple[str, ...], **kwargs) -> go.Heatmap:
    """Heatmap of integer categories 0..len(colours)-1, each in its own flat colour."""
    m = len(colours)
    scale = []
    for i, colour in enumerate(colours):
        scale += [[i / m, colour], [(i + 1) / m, colour]]
    return go.Heatmap(z=z, colorscale=scale, zmin=-0.5, zmax=m - 0.5, showscale=False, **kwargs)


# ------------------------------------------------------------------------------------ 1. smoothing on the plane

def _circle(centre: np.ndarray, radius: float, colour: str, dash: str, name: str) -> go.Scatter:
    angle = np.linspace(0, 2 * math.pi, 181)
    return go.Scatter(x=centre[0] + radius * np.cos(angle), y=centre[1] + radius * np.sin(angle), mode="lines",
                      line=dict(color=colour, width=2.5, dash=dash), name=name, hoverinfo="skip")


def plane_figure(classifier: teaching.PlaneClassifier, result: teaching.PlaneSmoothing, axis: np.ndarray,
                 background: np.ndarray, background_name: str, max_points: int = 1000) -> go.Figure:
    """The plane: `background` class regions (of f or of g), the noisy samples coloured by f, the point x, and the
    certified discs (solid: Cohen et al., dashed: τ-threshold form), when not abstaining."""
    # No per-cell hover text: 40 000 strings would dominate the page's rerun time; the regions are labelled.
    fig = go.Figure(_categorical_heatmap(background, CLASS_FILL[:classifier.num_classes], x=axis, y=axis,
                                         hoverinfo="skip"))
    shown = slice(0, min(max_points, result.n))
    for c, name in enumerate(classifier.names):
        pts = result.samples[shown][result.labels[shown] == c]
        fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", name=f"f = {name}",
                                 marker=dict(size=4, color=CLASS_MARK[c], opacity=0.7), hoverinfo="skip"))
    if result.cohen_radius is not None:
        fig.add_trace(_circle(result.x, result.cohen_radius, "black", "solid", "certified disc σ·Φ⁻¹(p_A)"))
    if result.tau_radius is not None:
        fig.add_trace(_circle(result.x, result.tau_radius, "#444", "dash", "τ-form disc σ·Φ⁻¹(τ)"))
    fig.add_trace(go.Scatter(x=[result.x[0]], y=[result.x[1]], mode="markers", name="x",
                             marker=dict(symbol="x", size=14, color="black", line=dict(width=1, color="white"))))
    anchors = [*classifier.centres, *([classifier.island_centre] if classifier.island_centre is not None else [])]
    for (ax, ay), name in zip(anchors, classifier.names):
        fig.add_annotation(x=ax, y=ay, text=f"<b>{name}</b>", showarrow=False, font=dict(size=14, color="#333"))
    lim = float(axis[-1])
    fig.update_layout(xaxis=dict(range=[-lim, lim], constrain="domain"),
                      yaxis=dict(range=[-lim, lim], scaleanchor="x", scaleratio=1),
                      height=520, margin=MARGIN, legend=dict(orientation="h", y=-0.08),
                      title=f"regions: {background_name}; samples coloured by f"
                            + (f" (first {max_points} of {result.n} shown)" if result.n > max_points else ""))
    return fig


# ------------------------------------------------------------------------------------ 2. per-pixel certificate

def value_grid_figure(values: np.ndarray, title: str, colorscale: str = "Viridis", zmin: float | None = None,
                      zmax: float | None = None, text: np.ndarray | None = None) -> go.Figure:
    """A small grid coloured by `values`, each cell annotated with its `text` (default: the value, 2 decimals)."""
    text = np.vectorize("{:.2f}".format)(values) if text is None else np.asarray(text)
    fig = go.Figure(go.Heatmap(z=values, colorscale=colorscale, zmin=zmin, zmax=zmax, text=text,
                               texttemplate="%{text}", textfont=dict(size=10),
                               hovertemplate="row %{y}, col %{x}: %{text}<extra></extra>"))
    fig.update_layout(title=title, height=330, margin=MARGIN, yaxis=dict(autorange="reversed", scaleanchor="x"))
    return fig


def pvalue_grid_figure(pvalues: np.ndarray) -> go.Figure:
    """p-values coloured on a log10 scale, each cell annotated in scientific notation."""
    return value_grid_figure(np.log10(np.maximum(pvalues, np.finfo(float).tiny)), "p-values (colour: log10)",
                             "Viridis", text=np.vectorize("{:.0e}".format)(pvalues))


def pixel_decision_figure(cert: teaching.PixelToyCertificate) -> go.Figure:
    """The toy's decision: certified top-K, certified not-top-K, abstain (never hidden)."""
    category = np.where(cert.classes == 1, 0, np.where(cert.classes == 0, 1, 2))
    words = np.array(["certified top-K", "certified not top-K", "abstain"], dtype=object)[category]
    fig = go.Figure(_categorical_heatmap(category, (CERTIFIED_TOP, NOT_TOP, ABSTAIN), customdata=words,
                                         hovertemplate="row %{y}, col %{x}: %{customdata}<extra></extra>"))
    for name, colour in (("certified top-K", CERTIFIED_TOP), ("certified not top-K", NOT_TOP), ("abstain", ABSTAIN)):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, hoverinfo="skip",
                                 marker=dict(symbol="square", size=12, color=colour, line=dict(color="#888", width=1))))
    fig.update_layout(title="decision", height=360, margin=dict(l=10, r=10, t=40, b=40), plot_bgcolor="white",
                      yaxis=dict(autorange="reversed", scaleanchor="x"),
                      legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.05, yanchor="top"))
    return fig


def holm_staircase_figure(cert: teaching.PixelToyCertificate) -> go.Figure:
    """Sorted p-values against the Holm staircase α/(m − j + 1) and the flat Bonferroni line α/m (log scale)."""
    p = np.sort(cert.pvalues.ravel(), kind="stable")
    order = np.argsort(cert.pvalues.ravel(), kind="stable")
    certified = cert.certified.ravel()[order]
    rank = np.arange(1, p.size + 1)
    floor = max(np.finfo(float).tiny, min(p.min(), cert.alpha / p.size) / 10)
    shown = np.maximum(p, floor)
    fig = go.Figure([
        go.Scatter(x=rank, y=teaching.holm_thresholds(p.size, cert.alpha), mode="lines", name="Holm α/(m−j+1)",
                   line=dict(color="black", shape="hv")),
        go.Scatter(x=rank, y=np.full(p.size, cert.alpha / p.size), mode="lines", name="Bonferroni α/m",
                   line=dict(color="grey", dash="dot")),
        go.Scatter(x=rank[certified], y=shown[certified], mode="markers", name="certified",
                   marker=dict(color=CERTIFIED_TOP, size=7)),
        go.Scatter(x=rank[~certified], y=shown[~certified], mode="markers", name="abstain",
                   marker=dict(color=ABSTAIN, size=7, line=dict(color="#555", width=1))),
    ])
    fig.update_layout(title=f"sorted p-values ({cert.correction})", height=380,
                      margin=dict(l=10, r=10, t=40, b=10), xaxis_title="rank j",
                      yaxis=dict(type="log", title="p-value", exponentformat="power", dtick=3, showexponent="all"),
                      legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.25, yanchor="top"))
    return fig


# ------------------------------------------------------------------------------------ 3. ball overlap

def lens_figure(r: float, eps: float) -> go.Figure:
    """Two discs of radius r at centre distance ε; the shared lens filled."""
    angle = np.linspace(0, 2 * math.pi, 181)
    fig = go.Figure()
    for cx, name in ((0.0, "B(x, r)"), (eps, "B(x + δ, r)")):
        fig.add_trace(go.Scatter(x=cx + r * np.cos(angle), y=r * np.sin(angle), mode="lines", name=name))
    lens = teaching.lens_outline(r, eps)
    if len(lens):
        fig.add_trace(go.Scatter(x=np.append(lens[:, 0], lens[0, 0]), y=np.append(lens[:, 1], lens[0, 1]),
                                 fill="toself", mode="lines", name="shared", line=dict(color="#6a51a3"),
                                 fillcolor="rgba(106,81,163,0.35)"))
    fig.update_layout(height=360, margin=MARGIN, title="d = 2", legend=dict(orientation="h"),
                      yaxis=dict(scaleanchor="x", scaleratio=1))
    return fig


def spheres_figure(r: float, eps: float) -> go.Figure:
    """Two translucent balls of radius r at centre distance ε in 3-D."""
    u, v = np.meshgrid(np.linspace(0, 2 * math.pi, 40), np.linspace(0, math.pi, 20))
    x, y, z = r * np.cos(u) * np.sin(v), r * np.sin(u) * np.sin(v), r * np.cos(v)
    fig = go.Figure([go.Surface(x=x + cx, y=y, z=z, opacity=0.45, showscale=False, hoverinfo="skip",
                                colorscale=[[0, colour], [1, colour]])
                     for cx, colour in ((0.0, "#1f77b4"), (eps, "#ff7f0e"))])
    fig.update_layout(height=360, margin=dict(l=0, r=0, t=40, b=0), title="d = 3", scene=dict(aspectmode="data"))
    return fig


LANDMARKS = {"digits 32×32": 1024, "CIFAR 32×32×3": 3072, "ImageNet 224×224×3": 150_528}


def overlap_versus_dimension_figure(dims: np.ndarray, fractions: np.ndarray, eps_over_r: float, d_now: int,
                                    fraction_now: float) -> go.Figure:
    """Shared-volume fraction against the dimension for fixed ε/r, with the chosen d and image sizes marked."""
    fig = go.Figure(go.Scatter(x=dims, y=fractions, mode="lines+markers", name=f"ε/r = {eps_over_r:g}",
                               marker=dict(size=4), hovertemplate="d = %{x}: %{y:.3g}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[d_now], y=[fraction_now], mode="markers", name=f"d = {d_now}",
                             marker=dict(size=12, color=palette.HIGHLIGHT)))
    # Landmarks as traces, not shapes: their positions then need no log10 conversion on the log axis.
    for label, d in LANDMARKS.items():
        fig.add_trace(go.Scatter(x=[d, d], y=[0, 1.05], mode="lines+text", text=["", label], textposition="top left",
                                 cliponaxis=False,
                                 line=dict(color="grey", dash="dot", width=1), showlegend=False, hoverinfo="skip"))
    fig.update_layout(height=400, margin=dict(l=10, r=30, t=60, b=10), title="shared volume fraction V∩/V vs d",
                      xaxis=dict(type="log", title="dimension d", exponentformat="power"),
                      yaxis=dict(range=[0, 1.12], title="V∩ / V"),
                      legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.25, yanchor="top"))
    return fig


# ------------------------------------------------------------------------------------ 4. top-K overlap

def topk_category(toy: teaching.TopKToy) -> np.ndarray:
    """0 certified top-K, 1 top-K but not certified, 2 outside the top K."""
    return np.where(toy.certified, 0, np.where(toy.top, 1, 2))


TOPK_COLOURS = (CERTIFIED_TOP, ABSTAIN, NOT_TOP)
TOPK_WORDS = ("certified to stay in the top K", "top K, not certified", "outside the top K")


def topk_map_figure(toy: teaching.TopKToy) -> go.Figure:
    category = topk_category(toy)
    words = np.array(TOPK_WORDS, dtype=object)[category]
    fig = go.Figure(_categorical_heatmap(category, TOPK_COLOURS, customdata=np.dstack([words, toy.values]),
                                         hovertemplate="row %{y}, col %{x}: ḡ = %{customdata[1]:.3f}, "
                                                       "%{customdata[0]}<extra></extra>"))
    fig.update_layout(title="top-K pixels of ḡ", height=330, margin=MARGIN,
                      yaxis=dict(autorange="reversed", scaleanchor="x"))
    return fig


def topk_intervals_figure(toy: teaching.TopKToy, shown: int | None = None) -> go.Figure:
    """The pixels in decreasing ḡ with the interval each can reach under ‖δ‖ ≤ ε; the dashed line is the K-th
    highest value any pixel can rise to — a top pixel whose low end stays above its rivals' is certified."""
    order = np.argsort(-toy.values.ravel(), kind="stable")[:shown or min(toy.values.size, 3 * toy.k)]
    category = topk_category(toy).ravel()[order]
    low, high, value = toy.low_after.ravel()[order], toy.high_after.ravel()[order], toy.values.ravel()[order]
    rank = np.arange(1, order.size + 1)
    fig = go.Figure()
    for c, (colour, word) in enumerate(zip(TOPK_COLOURS, TOPK_WORDS)):
        sel = category == c
        fig.add_trace(go.Scatter(x=rank[sel], y=value[sel], mode="markers", name=word,
                                 marker=dict(color=colour, size=8, line=dict(color="#555", width=1)),
                                 error_y=dict(type="data", symmetric=False, array=(high - value)[sel],
                                              arrayminus=(value - low)[sel], color="#777")))
    rival = np.sort(toy.high_after.ravel())[::-1][min(toy.k, toy.values.size - 1)]
    fig.add_hline(y=rival, line=dict(color="black", dash="dash"),
                  annotation_text="(K+1)-th highest reach", annotation_position="top right")
    fig.add_vline(x=toy.k + 0.5, line=dict(color="grey", dash="dot"))
    fig.update_layout(height=360, margin=MARGIN, title="values reachable under ‖δ‖₂ ≤ ε, by rank",
                      xaxis_title="rank of ḡ", yaxis=dict(range=[0, 1], title="ḡ"), legend=dict(orientation="h"))
    return fig


def overlap_curve_figure(eps_values: np.ndarray, overlaps: np.ndarray, eps_now: float,
                         overlap_now: float) -> go.Figure:
    fig = go.Figure(go.Scatter(x=eps_values, y=overlaps, mode="lines", line=dict(shape="hv"), name="certified"))
    fig.add_trace(go.Scatter(x=[eps_now], y=[overlap_now], mode="markers", name=f"ε = {eps_now:g}",
                             marker=dict(size=12, color="#d62728")))
    fig.update_layout(height=360, margin=MARGIN, title="certified top-K overlap vs ε", xaxis_title="ε (ℓ2)",
                      yaxis=dict(range=[0, 1.02], title="overlap", tickformat=".0%"), legend=dict(orientation="h"))
    return fig


# ------------------------------------------------------------------------------------ 5. a pixel's own radius

def radius_toy_figures(toy: teaching.RadiusToy) -> tuple[go.Figure, go.Figure]:
    """The toy's radius map and its curve: the Certified pixels page's own figures (certlib.pixel.radius_viz)."""
    return (radius_viz.radius_map(toy.radii, toy.level),
            radius_viz.radius_curve({"": toy.radii}, toy.r_tau, (toy.level,), kind="tests"))
