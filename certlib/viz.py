"""Figures and overlays: pure functions from numpy arrays to numpy images or plotly figures."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


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
    colours = ["#d62728" if i == highlight else "#1f77b4" for i, _ in top]
    fig = go.Figure(go.Bar(x=values, y=labels, orientation="h", marker_color=colours,
                           text=[f"{p:.1%}" for p in values], textposition="auto",
                           hovertemplate="%{y}: %{x:.4f}<extra></extra>"))
    fig.update_layout(xaxis=dict(range=[0, 1], title="probability", tickformat=".0%"),
                      yaxis=dict(autorange="reversed"), height=60 + 32 * len(top),
                      margin=dict(l=10, r=10, t=10, b=40))
    return fig
