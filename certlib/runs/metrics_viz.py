"""Figures of the metrics dashboard (design §6): bars per method and K, robustness against σ, faithfulness curves
and the ranking heat map. Pure functions of the rows `certlib.runs.sweep` makes."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

# One hue per attribution family, one shade per method inside it (darkest first).
FAMILY_SHADES = {"gradient": ("#08306b", "#2171b5", "#4292c6", "#6baed6", "#9ecae1"),
                 "perturbation": ("#00441b", "#41ab5d"),
                 "activation": ("#7f2704", "#d94801", "#f16913", "#fd8d3c", "#fdae6b")}


def method_colours(method_families: dict[str, str]) -> dict[str, str]:
    """{method: colour}: the family's hue, a different shade per method of that family (in the given order)."""
    used: dict[str, int] = {}
    colours = {}
    for method, family in method_families.items():
        shades = FAMILY_SHADES.get(family, ("#636363", "#969696", "#bdbdbd"))
        colours[method] = shades[used.get(family, 0) % len(shades)]
        used[family] = used.get(family, 0) + 1
    return colours


def _families(summary: list[dict]) -> dict[str, str]:
    return {s["method"]: s["family"] for s in summary}


def metric_bars(summary: list[dict], metric: str, title: str, per_k: bool = True, percent: bool = True) -> go.Figure:
    """Grouped bars of one metric from `certlib.runs.sweep.summarise` rows (one σ): groups are the K levels (or one
    group for per-run metrics), one bar per method coloured by family; hover gives mean ± standard error."""
    colours = method_colours(_families(summary))
    bars = []
    for method, colour in colours.items():
        rows = [s for s in summary if s["method"] == method]
        if not per_k:
            rows = rows[:1]
        x = [f"top {s['k_percent']:g}%" for s in rows] if per_k else ["all images"]
        y = [s[metric] for s in rows]
        sem = [s.get(f"{metric}_sem", np.nan) for s in rows]
        count = [s.get(f"{metric}_count", s["runs"]) for s in rows]
        label = rows[0]["method_label"] if rows else method
        bars.append(dict(type="bar", name=f"{label} ({rows[0]['family'] if rows else ''})", x=x, y=y,
                         marker_color=colour,
                         error_y=dict(type="data", array=[0 if np.isnan(v) else v for v in sem], visible=True,
                                      thickness=1),
                         customdata=np.stack([sem, count], axis=-1) if rows else None,
                         hovertemplate=f"<b>{label}</b> %{{x}}<br>{title}: %{{y:.4f}} ± %{{customdata[0]:.4f}} "
                                       "(standard error, %{customdata[1]} runs)<extra></extra>"))
    return go.Figure(bars, layout=dict(barmode="group", title=title, height=340, margin=dict(l=10, r=10, t=40, b=10),
                                       yaxis=dict(tickformat=".0%" if percent else ".2f", rangemode="tozero"),
                                       legend=dict(orientation="h", y=-0.15)))


def sigma_lines(summary: list[dict], metric: str, k_percent: float, title: str) -> go.Figure:
    """One line per method: `metric` at top-`k_percent`% against σ (mean over images and targets)."""
    colours = method_colours(_families(summary))
    lines = []
    for method, colour in colours.items():
        rows = sorted((s for s in summary if s["method"] == method and s["k_percent"] == k_percent),
                      key=lambda s: s["sigma"])
        if not rows:
            continue
        lines.append(dict(type="scatter", x=[s["sigma"] for s in rows], y=[s[metric] for s in rows],
                          mode="lines+markers", name=rows[0]["method_label"], line=dict(color=colour),
                          hovertemplate=f"<b>{rows[0]['method_label']}</b> σ=%{{x}}: %{{y:.4f}}<extra></extra>"))
    top = max((s["sigma"] for s in summary), default=1.0)
    # From σ = 0 (no noise, nothing certified beyond the image) to just past the largest σ, also for a single σ.
    return go.Figure(lines, layout=dict(title=title, height=340, margin=dict(l=10, r=10, t=40, b=10),
                                        xaxis=dict(title="σ (noise level)", range=[0, top * 1.15]),
                                        yaxis=dict(tickformat=".0%", rangemode="tozero")))


def faithfulness_figure(mean_curves: list[dict], kind: str, families: dict[str, str],
                        labels: dict[str, str]) -> go.Figure:
    """Mean deletion (or insertion) curves of `certlib.runs.sweep.mean_curves` (one σ): target probability against the
    nominal top-K budget of each step."""
    colours = method_colours(families)
    lines = []
    for c in mean_curves:
        if c["kind"] != kind:
            continue
        label = labels.get(c["method"], c["method"])
        lines.append(dict(type="scatter", x=np.asarray(c["budget"]) * 100, y=c["probability"], mode="lines+markers",
                          name=label, line=dict(color=colours.get(c["method"], "#636363")),
                          hovertemplate=f"<b>{label}</b> after certified top-%{{x:g}}%: p = %{{y:.4f}} "
                                        f"({c['runs']} runs)<extra></extra>"))
    what = "removed" if kind == "deletion" else "restored"
    return go.Figure(lines, layout=dict(title=f"{kind} curves (certified top-K pixels {what}, smallest K first)",
                                        height=340, margin=dict(l=10, r=10, t=40, b=10),
                                        xaxis=dict(title="top-K% budget", ticksuffix="%"),
                                        yaxis=dict(title="target probability", range=[0, 1])))


def ranking_heatmap(scores: dict[str, dict[str, float]], metric_labels: dict[str, str],
                    better: dict[str, int], method_labels: dict[str, str]) -> go.Figure:
    """Methods × metrics: colour is the rank (1 = best, by each metric's direction), text and hover the value."""
    methods = list(scores)
    metrics = [m for m in metric_labels if any(not np.isnan(scores[me].get(m, np.nan)) for me in methods)]
    values = np.array([[scores[me].get(m, np.nan) for m in metrics] for me in methods], dtype=np.float64)
    ranks = np.full(values.shape, np.nan)
    for j, m in enumerate(metrics):
        col = values[:, j] * better[m]
        ok = ~np.isnan(col)
        order = np.argsort(-col[ok], kind="stable")
        ranks[np.flatnonzero(ok)[order], j] = np.arange(1, ok.sum() + 1)
    text = np.vectorize(lambda v: "—" if np.isnan(v) else f"{v:.3f}")(values)
    heatmap = dict(
        type="heatmap", z=ranks, x=[metric_labels[m] for m in metrics], y=[method_labels.get(m, m) for m in methods],
        text=text, texttemplate="%{text}", colorscale="RdYlGn_r", colorbar=dict(title="rank"),
        customdata=np.stack([text, np.vectorize(lambda r: "—" if np.isnan(r) else f"{int(r)}")(ranks)], axis=-1),
        hovertemplate="<b>%{y}</b><br>%{x}: %{customdata[0]} (rank %{customdata[1]})<extra></extra>")
    return go.Figure(heatmap, layout=dict(title="ranking (1 = best; deletion AUC: lower is better)",
                                          height=80 + 34 * len(methods), margin=dict(l=10, r=10, t=40, b=10),
                                          yaxis=dict(autorange="reversed")))
