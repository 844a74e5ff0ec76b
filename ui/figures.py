"""Figures that no decision control changes, built once per session and reused while their source is shown."""
from __future__ import annotations

from typing import Callable

import plotly.graph_objects as go
import streamlit as st

from certlib import viz


def remembered(name: str, source: object, build: Callable[[], go.Figure]) -> go.Figure:
    """`build()`'s figure of `source` (a cached result object: sampled counts, a smoothed map), rebuilt only when
    `source` is another object. A slider move that only re-decides reuses it instead of building it again; holding
    `source` here keeps its identity from being reused by a new object."""
    memo: dict = st.session_state.setdefault("_remembered_figures", {})
    held = memo.get(name)
    if held is not None and held[0] is source:
        return held[1]
    figure = build()
    memo[name] = (source, figure)
    return figure


def attribution(name: str, source: object, values, title: str) -> go.Figure:
    """The attribution map `values` as a heatmap (certlib.viz), remembered while `source` is shown."""
    return remembered(name, source, lambda: viz.attribution_figure(values, title))
