"""A picture before sampling: the clean attribution map and the prediction, shown as soon as the image is chosen
and labelled "not certified yet"; the first certified frame replaces it (issue #26, item 4)."""
from __future__ import annotations

import time

import streamlit as st

from certlib import viz
from certlib.attributions import methods as attributions
from certlib.smoothing import engine
from certlib.data import images
from ui import cache, runs
from ui.workbench import Workbench

KIND = "clean_attribution"
# `make run` serves and browses on the same cores: sampling's torch threads, started right after the first picture is
# sent, starve the browser that draws it. Measured in chromium on 2 cores, click to first picture: 0.80–1.26 s
# without a pause, 0.65–0.70 s with 0.4 s. A browser on another machine does not wait.
LOCAL_BROWSER_PAUSE_S = 0.4


def compute_clean_attribution(wb: Workbench, seed: int):
    """The method's map of the unperturbed input, [H,W] numpy; one attribution pass, cached per configuration in
    the process-wide results (ui.warmup fills the front door's entry before anyone asks)."""
    results, key = cache.sampling_results(), runs.run_key(wb, KIND, seed)
    attr = results.get(key)
    if attr is None:
        attribute, _ = attributions.for_target(wb.model, wb.method, wb.target, seed)
        attr = engine.clean_attribution(attribute, wb.x.to(wb.model.device))[0].float().cpu().numpy()
        results.put(key, attr)
    return attr


def clean_attribution(wb: Workbench, seed: int):
    """compute_clean_attribution, its errors shown in the page."""
    with runs.shown_in_page():
        return compute_clean_attribution(wb, seed)


def show(wb: Workbench, seed: int) -> None:
    """Input with its prediction beside the clean attribution, both marked as not certified yet."""
    names = wb.model.spec.class_names
    base = images.to_display_rgb(wb.x[0].cpu().numpy())
    attr = clean_attribution(wb, seed)
    st.caption(f"**Not certified yet** · the model predicts **{names[wb.prediction]}** "
               f"({wb.probs[wb.prediction]:.1%}); the map below is the plain {attributions.METHODS[wb.method].label} "
               f"explanation of “{names[wb.target]}”, before any noise. The certificate replaces it as soon as the "
               "first noisy copies are counted.")
    width = min(320, max(160, base.shape[1]))
    left, right = st.columns(2)
    left.image(base, caption=f"input · predicted {names[wb.prediction]} ({wb.probs[wb.prediction]:.1%})", width=width)
    right.image(viz.attribution_rgb(attr), caption="clean attribution — not certified yet", width=width)


def let_a_local_browser_draw() -> None:
    """Pause before sampling when the browser runs on this machine (a loopback connection), so it can draw the
    first picture before the sampling threads take the cores."""
    if st.context.ip_address is None and st.context.headers.get("Host"):
        time.sleep(LOCAL_BROWSER_PAUSE_S)
