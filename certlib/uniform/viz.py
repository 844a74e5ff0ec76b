"""Figures and downloads for the uniform-smoothing certificate: bound curves T(ε) beside measured cosines."""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from certlib import palette

from certlib.uniform.cert import KINDS

CURVE_STYLE = {"strict": dict(color=palette.HIGHLIGHT, dash="solid"), "paper": dict(color="#CC79A7", dash="dash")}
POINT_STYLE = {"random": dict(color=palette.RANDOM_POINT, symbol="circle"),
               "attack": dict(color=palette.ATTACK_POINT, symbol="x")}


def bound_figure(eps: np.ndarray, curves: dict[str, np.ndarray], points: Sequence = (),
                 marked_eps: float | None = None) -> go.Figure:
    """Bound curves (kind -> values over eps) and empirical CosinePoints; cosines below −1 cannot occur, so the
    y axis spans [−1, 1] and a curve at −1 reads "nothing certified"."""
    # Built in one go.Figure call from plain dicts: each add_trace / add_vline / update_layout re-validates the
    # whole figure (see certlib/viz.py).
    traces = [dict(type="scatter", x=eps, y=values, mode="lines", name=f"bound: {KINDS[kind]}",
                   line=CURVE_STYLE[kind], hovertemplate="ε = %{x:.4g}<br>T = %{y:.4f}<extra>" + kind + "</extra>")
              for kind, values in curves.items()]
    for kind in ("random", "attack"):
        chosen = [p for p in points if p.kind == kind]
        if chosen:
            traces.append(dict(
                type="scatter", x=[p.eps for p in chosen], y=[p.cosine for p in chosen], mode="markers",
                name="measured: random δ" if kind == "random" else "measured: attacked δ",
                marker=dict(size=10, **POINT_STYLE[kind]),
                customdata=[[p.base_cosine, "yes" if p.label_kept else "no"] for p in chosen],
                hovertemplate="ε = %{x:.4g}<br>cos(ĥ(x), ĥ(x+δ)) = %{y:.5f}<br>base map cosine = "
                              "%{customdata[0]:.4f}<br>label kept: %{customdata[1]}<extra></extra>"))
    layout = dict(xaxis=dict(title="ε (ℓ2 norm of the perturbation, [0,1] pixel units)"),
                  yaxis=dict(title="cosine similarity of smoothed maps", range=[-1.05, 1.05]),
                  height=420, margin=dict(l=10, r=10, t=30, b=40), legend=dict(orientation="h", y=-0.25))
    if marked_eps is not None:   # a vertical line at ε across the plot (what fig.add_vline draws)
        layout["shapes"] = [dict(type="line", x0=marked_eps, x1=marked_eps, xref="x", y0=0, y1=1, yref="y domain",
                                 line=dict(color="#888", dash="dot"))]
    return go.Figure(traces, layout=layout)


def bound_png(eps: np.ndarray, curves: dict[str, np.ndarray], points: Sequence = ()) -> bytes:
    """The same plot as a PNG (matplotlib: plotly's image export needs a browser engine we do not ship)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for kind, values in curves.items():
        ax.plot(eps, values, color=CURVE_STYLE[kind]["color"], linestyle="-" if kind == "strict" else "--",
                label=f"bound: {KINDS[kind]}")
    for kind, marker in (("random", "o"), ("attack", "x")):
        chosen = [p for p in points if p.kind == kind]
        if chosen:
            ax.scatter([p.eps for p in chosen], [p.cosine for p in chosen], marker=marker,
                       color=POINT_STYLE[kind]["color"], label=f"measured: {kind} δ", zorder=3)
    ax.set(xlabel="ε (ℓ2, [0,1] pixel units)", ylabel="cosine of smoothed maps", ylim=(-1.05, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
