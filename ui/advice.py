"""Say what is certified, and what would help when a level certifies nothing (issue #26, item 5).

Each suggestion is computed from the counts on screen (certlib.pixel.advice) and is one click: the button's callback sets
the widget's value before the next run, and asks for a rerun of the whole page when the change needs new samples
(the decision fragment alone cannot sample)."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import streamlit as st

from certlib.pixel import advice, cert as pixel_cert
from certlib.attributions import methods as attributions, cost, defaults
from certlib.errors import SHOWN_ERRORS
from certlib.pixel.prediction_cert import PredictionCertificate
from certlib.smoothing.sampling import TopKCounts
from ui import looks
from ui.workbench import Workbench

FULL_RERUN = "_cp_full_rerun"


def rerun_page_if_asked() -> None:
    """Call first in the decision fragment: a suggestion that needs sampling reruns the page, not the fragment."""
    if st.session_state.pop(FULL_RERUN, False):
        st.rerun(scope="app")


def _set(values: dict, full: bool = False, new_n_key: str | None = None) -> None:
    st.session_state.update(values)
    if new_n_key is not None:        # a fixed-n test at a new n draws fresh noise (ui.looks)
        looks.on_new_n(new_n_key)
    if full:
        st.session_state[FULL_RERUN] = True


def smoothed_class(wb: Workbench, pred: PredictionCertificate | None) -> None:
    """One sentence when the smoothed classifier's vote differs from the explained class, and a button to explain
    that class instead."""
    if pred is None or pred.top_class == wb.target:
        return
    names = wb.model.spec.class_names
    st.info(f"Under this noise the smoothed classifier votes **{names[pred.top_class]}** ({pred.votes:,} of "
            f"{pred.n:,} noisy copies), not the explained class **{names[wb.target]}** (the clean photo's "
            f"{'prediction' if wb.prediction == wb.target else 'chosen target'}, {wb.probs[wb.target]:.1%}). The "
            f"certificate is about the explanation of “{names[wb.target]}”; explaining "
            f"“{names[pred.top_class]}” certifies what the noisy model actually decides.", icon=":material/info:")
    st.button(f"Explain “{names[pred.top_class]}” instead", key="cp_explain_smoothed", icon=":material/swap_horiz:",
              on_click=_set, args=({"target": int(pred.top_class)}, True))


def _budget_choice(n_needed: int, choices: Sequence[int]) -> int | None:
    return next((c for c in choices if c >= n_needed), None)


def _seconds(wb: Workbench, copies: int) -> str:
    try:
        return f", about {cost.describe_seconds(cost.seconds_per_copy(wb.model, wb.method, wb.x, wb.target) * copies)}"
    except SHOWN_ERRORS:
        return ""


def empty_levels(wb: Workbench, sub: TopKCounts, cert: pixel_cert.PixelCertificate, test: str,
                 decide_at: Callable[[float], pixel_cert.PixelCertificate], n_key: str,
                 n_choices: Sequence[int], paths: Sequence[tuple[str, float]] = (("fixed", 1.0),)) -> None:
    """For every level whose certificate has no top-K pixel: the best pixel's votes, the τ at which these counts
    certify one (confirmed by re-deciding), and the n at which it would if its vote share held — each a button.
    `paths`: the tests behind the certificate and their shares of α (certlib.pixel.advice.advise_level)."""
    ks = sub.k_percents
    for i, k in enumerate(ks):
        if (cert.classes[i] == 1).any():
            continue

        def certifies_at(t: float, i: int = i) -> bool:
            return bool((decide_at(t).classes[i] == 1).any())

        adv = advice.advise_level(sub.modes[i], sub.votes_for_mode[i], sub.n, k, cert.tau, cert.alpha,
                                  cert.num_tests, paths, certifies_at)
        _show_level(wb, k, adv, cert, test, certifies_at, n_key, n_choices, sub.n0)


def _show_level(wb, k: float, adv: advice.LevelAdvice, cert, test: str, certifies_at, n_key: str,
                n_choices: Sequence[int], cert_n0: int) -> None:
    if adv.best is None:
        st.warning(f"Top {k:g}%: no pixel is in the top {k:g}% in a majority of the {cert_n0} selection copies: "
                   f"the top {k:g}% changes from copy to copy under this noise, so no pixel can be certified in it. "
                   "A smaller σ (less noise, a smaller R) or a larger level would.", icon=":material/lightbulb:")
        return
    best = adv.best
    lines = [f"**Top {k:g}%: nothing certified yet.** Its best pixel is in the top {k:g}% in {best.votes:,} of "
             f"{best.n:,} noisy copies ({best.share:.0%}); certifying it needs a p-value ≤ α/m = "
             f"{cert.alpha / cert.num_tests:.2g} at τ = {cert.tau:g}."]
    tau = None if adv.tau is None else math.floor(adv.tau * 100) / 100       # the slider's step, rounded down
    if tau is not None and (tau <= 0.5 or not certifies_at(tau)):
        tau = None
    if tau is not None:
        radius = pixel_cert.certified_radius(cert.sigma, tau)
        lines.append(f"τ = {tau:.2f} certifies it on these counts (R = {radius:.3g} instead of {cert.radius:.3g}; "
                     "no new samples).")
    budget = None if adv.n is None else _budget_choice(adv.n, n_choices)
    if adv.n is None:
        lines.append(f"More samples cannot help at τ = {cert.tau:g}: its vote share is not above τ."
                     if best.share <= cert.tau else "More samples would take over "
                     f"{advice.N_LIMIT:,} copies at this τ.")
    else:
        more = f"n ≈ {adv.n:,}" + ("" if budget is None else f"; the next budget is {budget:,}"
                                   + _seconds(wb, max(0, budget - best.n)))
        fresh = " (fresh noise for a fixed-n test)" if test == "fixed" else ""
        lines.append(f"If its vote share holds, it certifies at {more}{fresh}.")
    switch = _measured_default(wb)
    if switch is not None:
        lines.append(switch[1])
    st.warning(" ".join(lines), icon=":material/lightbulb:")
    cols = st.columns(3)
    if switch is not None:
        cols[2].button(f"Switch to {attributions.METHODS[switch[0]].label}", key=f"cp_advice_method_{k:g}",
                       on_click=_set, args=({"method": switch[0]}, True))
    if tau is not None:
        cols[0].button(f"Set τ = {tau:.2f}", key=f"cp_advice_tau_{k:g}", on_click=_set, args=({"cp_tau": tau},))
    if budget is not None:
        cols[1].button(f"Sample up to n = {budget:,}", key=f"cp_advice_n_{k:g}", on_click=_set,
                       args=({n_key: budget}, True, n_key if test == "fixed" else None))


def default_n0(wb: Workbench) -> int:
    """The selection samples n0 measured as the model family's default (certlib.attributions.defaults)."""
    return defaults.for_family(wb.model.spec.family).n0


def why_the_defaults(wb: Workbench) -> None:
    """An expander saying why the family's default method and n0 are what they are (measured on the bench)."""
    family = wb.model.spec.family
    if family not in defaults.DEFAULTS:
        return
    with st.expander(f"Why {defaults.method_label(family)} and n0 = {defaults.for_family(family).n0} are this "
                     "model family's defaults (measured)"):
        st.caption(defaults.why(family))


def _measured_default(wb: Workbench) -> tuple[str, str] | None:
    """(method, sentence) when the model family's measured default is another method that applies here: what it
    certified on the bench's images (bench/results/defaults.json), at the page's default decision."""
    family = wb.model.spec.family
    if family not in defaults.DEFAULTS:
        return None
    method = defaults.for_family(family).method
    if method == wb.method or attributions.unavailable_reason(method, wb.model.spec) is not None:
        return None
    results = defaults.load_results()
    rows = [] if results is None else defaults.ranking(results, family, defaults.REFERENCE_SIGMA)
    row = next((r for r in rows if r["method"] == method), None)
    if row is None:
        return None
    here = next((r for r in rows if r["method"] == wb.method), None)
    versus = "" if here is None else f" (this method: {here['certified_share']:.0%})"
    return method, (f"{attributions.METHODS[method].label} certified {row['certified_share']:.0%} of the pixel tests "
                    f"on the bench's {row['images']} {defaults.FAMILY_NOUNS.get(family, 'images')} at σ = "
                    f"{defaults.REFERENCE_SIGMA:g}{versus}.")


def nothing_certified(classes: np.ndarray) -> bool:
    """No pixel is certified in the top K at any level: the headline must not read as a success."""
    return not (np.asarray(classes) == 1).any()
