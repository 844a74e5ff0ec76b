"""Figures of the pixel certificate (design §3.3): the certified / abstain overlay, its hover map and the bars of
certified shares per K. Pure functions of numpy arrays (see certlib.viz for how figures are built)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from certlib import palette, viz

ABSTAIN_RGB = palette.ABSTAIN                     # "no certificate here", never hidden
LEVEL_RGB = palette.CERTIFIED_IN_SHADES           # certified in the top K: darker blue for a smaller K


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
        colour[levels == i] = palette.level_colour(rank[i])
        weight[levels == i] = alpha
    colour[levels == -1] = ABSTAIN_RGB
    weight[levels == -1] = alpha
    out = base_rgb.astype(np.float32) * (1 - weight[..., None]) + colour * weight[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def overlay_figure(overlay_rgb: np.ndarray, top_frequency: np.ndarray, k_percents: tuple[float, ...],
                   levels: np.ndarray, title: str = "certified pixels") -> go.Figure:
    """The overlay as an image with its legend inside the figure; hover shows each K's vote frequency (the percentage
    of noisy copies with the pixel in the top K%). The hover data are whole percentages in a uint8 array, which
    plotly sends as one base64 block: per-pixel strings made a 224² photo's figure 2.4 MB of JSON and ~1 s per
    slider move; this one is 0.4 MB and milliseconds. (`levels` stays in the signature: the colours carry it.)"""
    order = np.argsort(k_percents)
    custom = np.stack([np.rint(100.0 * np.asarray(top_frequency[i], dtype=np.float64)).astype(np.uint8)
                       for i in order], axis=-1)
    hover = "row %{y}, col %{x}<br>" + "<br>".join(
        f"in the top {k_percents[i]:g}% in %{{customdata[{j}]}}% of noisy copies" for j, i in enumerate(order)) \
        + "<extra></extra>"
    image = dict(type="image", source=viz.png_source(overlay_rgb[..., :3]), customdata=custom, hovertemplate=hover)
    keys = [(f"certified top {k_percents[i]:g}%", palette.level_colour(r)) for r, i in enumerate(order)]
    keys += [("abstain", palette.ABSTAIN), ("certified not top (clear)", palette.CERTIFIED_OUT)]
    legend = [dict(type="scatter", x=[None], y=[None], mode="markers", name=name, hoverinfo="skip",
                   marker=dict(symbol="square", size=12, color=palette.hex_colour(rgb))) for name, rgb in keys]
    return go.Figure([image, *legend], layout=dict(
        title=dict(text=title, x=0.5, xanchor="center"), margin=dict(l=0, r=0, t=36, b=0), height=460,
        xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x", autorange="reversed"),
        legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.02, yanchor="top"), plot_bgcolor="white"))


def certificate_bars(k_percents: tuple[float, ...], fractions: dict[str, np.ndarray]) -> go.Figure:
    """Stacked bars per K of the share of pixels certified top / certified not top / abstaining."""
    order = np.argsort(k_percents)
    x = [f"top {k_percents[i]:g}%" for i in order]
    colours = {"certified top-K": palette.hex_colour(palette.CERTIFIED_IN),
               "certified not top-K": palette.hex_colour(palette.CERTIFIED_OUT),
               "abstain": palette.hex_colour(palette.ABSTAIN)}
    bars = [dict(type="bar", name=name, x=x, y=np.asarray(fractions[name])[order], marker_color=colours[name],
                 hovertemplate="%{x}: %{y:.1%}<extra>" + name + "</extra>") for name in colours]
    return go.Figure(bars, layout=dict(barmode="stack", title=dict(text="share of pixels per level", x=0.5,
                                                                    xanchor="center"),
                                       yaxis=dict(tickformat=".0%", range=[0, 1], title="share of pixels"),
                                       height=360, margin=dict(l=10, r=10, t=36, b=10),
                                       legend=dict(orientation="h", y=-0.12, yanchor="top")))


def shares_table(k_percents: tuple[float, ...], fractions: dict[str, np.ndarray]) -> str:
    """The shares of certificate_bars as a Markdown table, one row per K: what a live frame shows. A frame is
    replaced every few seconds in every watching session; a table costs a browser next to nothing to draw, a new
    plotly chart a noticeable share of a core (bench/load.py: eight sessions watching one run on 2 cores)."""
    order = np.argsort(k_percents)
    names = ("certified top-K", "certified not top-K", "abstain")
    rows = ["| level | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for i in order:
        rows.append(f"| top {k_percents[i]:g}% | "
                    + " | ".join(f"{float(np.asarray(fractions[name])[i]):.1%}" for name in names) + " |")
    return "\n".join(rows)


def greyed(rgb: np.ndarray) -> np.ndarray:
    """An RGB uint8 overlay in grey (BT.601 luma, lightened): shown when the certificate is vacuous."""
    luma = rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grey = (0.5 * luma + 0.5 * 235.0).clip(0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def growth_figure(history: Sequence[tuple[int, Sequence[float]]], k_percents: tuple[float, ...]) -> go.Figure:
    """Certified share per K level against model passes (n0 + n), one point per progressive frame (the shares never
    fall: a progressive certificate only grows)."""
    fig = go.Figure()
    passes = [h[0] for h in history]
    for i, k in enumerate(k_percents):
        fig.add_trace(go.Scatter(x=passes, y=[h[1][i] for h in history], mode="lines+markers", name=f"top {k:g}%",
                                 line={"color": "rgb" + str(LEVEL_RGB[min(i, len(LEVEL_RGB) - 1)])}))
    fig.update_layout(title="certified share as the copies arrive", xaxis_title="model passes (n0 + n)",
                      yaxis_title="certified share", yaxis_range=[0, 1], height=300,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"orientation": "h", "y": -0.3})
    return fig
