"""Figures and overlays: pure functions from numpy arrays to numpy images or plotly figures.

Each figure is built in one `go.Figure(traces, layout)` call with its traces as plain dicts: every `update_layout` /
`update_xaxes` / `add_trace` re-validates the figure, and a `go.Bar(...)` passed to `go.Figure` is validated twice,
which made building a figure cost several times more than the decision it shows (a slider move redraws them; see
bench/interactivity.py)."""
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
    bar = dict(type="bar", x=values, y=labels, orientation="h", marker_color=colours,
               text=[f"{p:.1%}" for p in values], textposition="auto", hovertemplate="%{y}: %{x:.4f}<extra></extra>")
    return go.Figure(bar, layout=dict(xaxis=dict(range=[0, 1], title="probability", tickformat=".0%"),
                                      yaxis=dict(autorange="reversed"), height=60 + 32 * len(top),
                                      margin=dict(l=10, r=10, t=10, b=40)))


# ------------------------------------------------------------------------------------- pixel certificate (§3.3)

ABSTAIN_RGB = (255, 191, 0)                       # amber: "no certificate here", never hidden
LEVEL_RGB = ((214, 39, 40), (255, 127, 14), (148, 103, 189), (31, 119, 180), (23, 190, 207), (44, 160, 44),
             (140, 86, 75), (227, 119, 194))      # one colour per K level, smallest K first


def certified_levels(classes: np.ndarray, k_percents: tuple[float, ...]) -> np.ndarray:
    """Per pixel: index of the smallest K whose certified class is 1 (top-K), -1 if abstaining at some level and
    certified 1 nowhere, -2 if certified 0 ('not top') at every level. classes: [K,H,W] in {1, 0, -1}."""
    order = np.argsort(k_percents)
    cls = np.asarray(classes)[order]
    top = cls == 1
    first_top = np.where(top.any(0), order[np.argmax(top, axis=0)], -2)
    abstain = (cls == -1).any(0)
    return np.where(top.any(0), first_top, np.where(abstain, -1, -2))


def certified_overlay(base_rgb: np.ndarray, classes: np.ndarray, k_percents: tuple[float, ...],
                      alpha: float = 0.75) -> np.ndarray:
    """uint8 [H,W,3]: base image with certified top-K pixels coloured by their smallest K, abstain in amber,
    certified-not-top left transparent (the base image shows through)."""
    levels = certified_levels(classes, k_percents)
    rank = {int(i): r for r, i in enumerate(np.argsort(k_percents))}
    colour = np.zeros((*levels.shape, 3), dtype=np.float32)
    weight = np.zeros(levels.shape, dtype=np.float32)
    for i in range(len(k_percents)):
        colour[levels == i] = LEVEL_RGB[rank[i] % len(LEVEL_RGB)]
        weight[levels == i] = alpha
    colour[levels == -1] = ABSTAIN_RGB
    weight[levels == -1] = alpha
    out = base_rgb.astype(np.float32) * (1 - weight[..., None]) + colour * weight[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def overlay_figure(overlay_rgb: np.ndarray, top_frequency: np.ndarray, k_percents: tuple[float, ...],
                   levels: np.ndarray) -> go.Figure:
    """The overlay as an image; hover shows each K's vote frequency (share of noisy copies in the top K%)."""
    order = np.argsort(k_percents)
    names = {-1: "abstain", -2: "certified not top"}
    level_text = np.vectorize(lambda v: names.get(int(v), f"certified top-{k_percents[int(v)]:g}%"))(levels)
    custom = np.stack([level_text] + [np.char.mod("%.3f", top_frequency[i]) for i in order], axis=-1)
    hover = "row %{y}, col %{x}<br>%{customdata[0]}<br>" + "<br>".join(
        f"in top-{k_percents[i]:g}%: %{{customdata[{j + 1}]}}" for j, i in enumerate(order)) + "<extra></extra>"
    return go.Figure(dict(type="image", z=overlay_rgb, customdata=custom, hovertemplate=hover),
                     layout=dict(margin=dict(l=0, r=0, t=0, b=0), height=420, xaxis=dict(visible=False),
                                 yaxis=dict(visible=False)))


def certificate_bars(k_percents: tuple[float, ...], fractions: dict[str, np.ndarray]) -> go.Figure:
    """Stacked bars per K of the share of pixels certified top / certified not top / abstaining."""
    order = np.argsort(k_percents)
    x = [f"top {k_percents[i]:g}%" for i in order]
    colours = {"certified top-K": "#d62728", "certified not top-K": "#c7c7c7", "abstain": "#ffbf00"}
    bars = [dict(type="bar", name=name, x=x, y=np.asarray(fractions[name])[order], marker_color=colours[name],
                 hovertemplate="%{x}: %{y:.1%}<extra>" + name + "</extra>") for name in colours]
    return go.Figure(bars, layout=dict(barmode="stack",
                                       yaxis=dict(tickformat=".0%", range=[0, 1], title="share of pixels"),
                                       height=320, margin=dict(l=10, r=10, t=10, b=10), legend=dict(orientation="h")))


def attribution_figure(attr: np.ndarray, title: str = "") -> go.Figure:
    """A signed attribution map with a symmetric diverging colour scale."""
    lim = float(np.max(np.abs(attr))) or 1.0
    heatmap = dict(type="heatmap", z=attr, colorscale="RdBu_r", zmin=-lim, zmax=lim,
                   hovertemplate="row %{y}, col %{x}: %{z:.4g}<extra></extra>")
    return go.Figure(heatmap, layout=dict(title=title, height=420, margin=dict(l=0, r=0, t=30 if title else 0, b=0),
                                          yaxis=dict(autorange="reversed", visible=False, scaleanchor="x"),
                                          xaxis=dict(visible=False)))


# ------------------------------------------------------------------------------------- metrics dashboard (§6)

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
    """Grouped bars of one metric from `certlib.sweep.summarise` rows (one σ): groups are the K levels (or one
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
    return go.Figure(lines, layout=dict(title=title, height=340, margin=dict(l=10, r=10, t=40, b=10),
                                        xaxis=dict(title="σ (noise level)"),
                                        yaxis=dict(tickformat=".0%", rangemode="tozero")))


def faithfulness_figure(mean_curves: list[dict], kind: str, families: dict[str, str],
                        labels: dict[str, str]) -> go.Figure:
    """Mean deletion (or insertion) curves of `certlib.sweep.mean_curves` (one σ): target probability against the
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
