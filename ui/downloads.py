"""Download buttons whose files are built only when clicked, never on a slider move; and each page's set of them
(the bytes come from certlib.runs.export and the pages' figure modules, looked up when the buttons are drawn)."""
from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
import streamlit as st

from certlib.runs import export
from certlib.uniform import viz as uniform_viz


def button(where, label: str, build: Callable[[], bytes], file_name: str, mime: str, key: str):
    """A download button in `where` (st, a column, a container) that calls `build()` only when clicked.

    Streamlit runs a callable `data` in a server thread on click, so a rerun never builds a PNG or CSV nobody asked
    for. on_click="ignore": a click must not rerun the page, because the rerun would replace this button's deferred
    file while the browser is still fetching it (the server then answers "Deferred file … not found")."""
    return where.download_button(label, build, file_name, mime, key=key, on_click="ignore")


def _overlay_png(overlay: np.ndarray) -> Callable[[], bytes]:
    """An overlay as a PNG, small ones (digits) upscaled 8× so that they can be seen."""
    return partial(export.png_bytes, overlay, upscale=8 if overlay.shape[0] < 128 else 1)


def pixel_certificate(config: dict, sub, cert, said, overlay: np.ndarray) -> None:
    """Certified pixels: the overlay PNG, the per-pixel CSV and the config + summary JSON of the certificate `cert`
    of the counts `sub`, described by `said` (certlib.pixel.guarantee)."""
    ks = sub.k_percents
    summary = {"radius": cert.radius, "radius_image_pixels": said.radius_image, "rms_per_pixel": said.rms,
               "prediction": None if said.prediction is None else said.prediction.__dict__,
               "prediction_covers_R": said.prediction_covers,
               **{name: dict(zip(map(str, ks), np.round(v, 5).tolist())) for name, v in cert.fractions.items()}}
    b1, b2, b3 = st.columns(3)
    button(b1, "overlay PNG", _overlay_png(overlay), "certified_overlay.png", "image/png", key="cp_dl_png")
    button(b2, "per-pixel CSV", partial(export.pixel_csv, sub.clean_attr, ks, cert.classes, sub.votes_for_mode,
                                        sub.top_frequency, cert.pvalues, sub.n),
           "certified_pixels.csv", "text/csv", key="cp_dl_csv")
    button(b3, "config + summary JSON", partial(export.summary_json, config, summary), "certificate.json",
           "application/json", key="cp_dl_json")


def uniform_bound(eps_axis, curves: dict, points) -> None:
    """Uniform smoothing: the plot of the bounds (PNG) and its curves and measured points (CSV)."""
    b1, b2 = st.columns(2)
    button(b1, "plot PNG", partial(uniform_viz.bound_png, eps_axis, curves, points), "uniform_bound.png",
           "image/png", key="us_dl_png")
    button(b2, "curves + points CSV", partial(export.uniform_curves_csv, eps_axis, curves, points),
           "uniform_bound.csv", "text/csv", key="us_dl_csv")


def smoothgrad(smoothgrad_map, cert, overlay: np.ndarray, curves, checks) -> None:
    """Sparsified SmoothGrad: the overlay PNG, the per-pixel CSV of the certificate `cert` beside the plain
    SmoothGrad map, and the certified curves with their empirical points (CSV)."""
    b1, b2, b3 = st.columns(3)
    button(b1, "overlay PNG", _overlay_png(overlay), "topk_certified_overlay.png", "image/png", key="sg_dl_png")
    button(b2, "per-pixel CSV", partial(export.smoothgrad_pixel_csv, smoothgrad_map, cert.mean, cert.lower,
                                        cert.upper, cert.top_mask, cert.certified_mask, cert.radii),
           "sparsified_smoothgrad.csv", "text/csv", key="sg_dl_csv")
    rows = [(c.label, c.kind, c.eps, c.empirical, c.certified) for c in checks]
    button(b3, "curve + points CSV",
           partial(export.overlap_curve_csv, [(f"{c.kind} {c.label}", c.eps, c.certified) for c in curves], rows),
           "certified_overlap_curve.csv", "text/csv", key="sg_dl_curve")


def metrics(rows: list[dict]) -> None:
    """Metrics: one CSV row per run and top-K% level."""
    button(st, "metrics CSV (one row per run and K)", partial(export.metrics_csv, rows), "certified_metrics.csv",
           "text/csv", key="mx_dl_csv")
