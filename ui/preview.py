"""A picture before sampling: the clean attribution map and the prediction, shown as soon as the image is chosen
and labelled "not certified yet"; the first certified frame replaces it (issue #26, item 4)."""
from __future__ import annotations

import streamlit as st

from certlib import attributions, engine, images, viz
from ui import cache, runs
from ui.workbench import Workbench

KIND = "clean_attribution"


def clean_attribution(wb: Workbench, seed: int):
    """The method's map of the unperturbed input, [H,W] numpy; one attribution pass, cached per configuration."""
    results, key = cache.sampling_results(), runs.run_key(wb, KIND, seed)
    attr = results.get(key)
    if attr is None:
        attribute, _ = attributions.for_target(wb.model, wb.method, wb.target, seed)
        with runs.shown_in_page():
            attr = engine.clean_attribution(attribute, wb.x.to(wb.model.device))[0].float().cpu().numpy()
        results.put(key, attr)
    return attr


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
