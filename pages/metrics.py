"""Metrics (Anani et al. 2025, design §6): certified robustness, certified localization and faithfulness of several
methods, sampled once into the on-disk store (shared with `python -m certlib run`) and re-decided for any τ, α, K."""
import streamlit as st

from ui.frame import loading

_loading = loading("Metrics")   # shown while the imports below load (cold start)
from functools import partial

from certlib import SHOWN_ERRORS, describe_error
from certlib.runs import metrics, metrics_viz, sweep
from ui import downloads, metrics_runs, share
from ui.workbench import current, method_label, method_label_with_family, remember, usable_methods
from ui.controls import (ALPHAS, CORRECTIONS, DEFAULT_NORMALISATION, K_PERCENTS, NORMALISATIONS, help_for,
                         normalisation_picker)

SIGMAS = [0.12, 0.15, 0.25, 0.33, 0.5, 0.75, 1.0]
N_CHOICES = [32, 64, 100, 128, 200, 256, 500, 1000]
RANKED = {"certified": "certified pixels", "certified_top": "certified top-K", "certified_gridpg": "certified GridPG",
          "deletion_auc": "deletion AUC", "insertion_auc": "insertion AUC"}

_loading.empty()
wb = current()
usable = usable_methods(wb.model.spec)
remember(mx_methods=[m for m in ("grad", "input_x_gradient", "gradcam", "layercam") if m in usable],
         mx_images="grids", mx_limit=4, mx_sigmas=[0.25], mx_n=100, mx_n0=32, mx_seed=0,
         mx_normalisation=DEFAULT_NORMALISATION, mx_tau=0.75,
         mx_alpha=1e-3, mx_levels=[5.0, 25.0, 50.0], mx_correction="holm", mx_replacement="blur",
         mx_view_sigma=0.25, mx_line_k=25.0,
         choices={"mx_methods": usable, "mx_images": list(metrics_runs.IMAGE_SETS), "mx_limit": (1, 40),
                  "mx_sigmas": SIGMAS, "mx_n": N_CHOICES, "mx_n0": [8, 16, 32, 64], "mx_seed": (0, 2**31 - 1),
                  "mx_normalisation": NORMALISATIONS, "mx_tau": (0.5, 0.99), "mx_alpha": ALPHAS,
                  "mx_levels": K_PERCENTS, "mx_correction": CORRECTIONS,
                  "mx_replacement": list(metrics.REPLACEMENTS), "mx_view_sigma": SIGMAS,
                  "mx_line_k": K_PERCENTS})
st.session_state["mx_methods"] = [m for m in st.session_state["mx_methods"] if m in usable]

st.title("Metrics")
st.caption("Anani et al. (ICML 2025) compare attribution methods on three certified metrics: how many pixels are "
           "certified (robustness), whether the certified top pixels fall on the explained cell of a 2×2 grid "
           "(localization), and how fast the target probability drops when they are removed (faithfulness). "
           "Samples are stored on disk and never drawn twice; τ, α and K only re-decide.")

with st.container(border=True):
    st.markdown("**Sweep** — methods × images × σ; each run is sampled once and stored")
    c1, c2, c3 = st.columns([3, 2, 2])
    methods = c1.multiselect("methods", usable, key="mx_methods", help=help_for("mx_methods"),
                             format_func=method_label_with_family)
    stored_sets = metrics_runs.stored_sets()
    offered = metrics_runs.image_sets_for(wb.model.spec.family, stored_sets)
    if st.session_state.get("mx_images") not in offered:     # another model family: its own first set
        st.session_state["mx_images"] = offered[0]
    image_set = c2.radio("images", offered, key="mx_images", help=help_for("mx_images"),
                         format_func=partial(metrics_runs.set_label, stored=stored_sets))
    stored_set = image_set.startswith(metrics_runs.STORED_PREFIX)
    limit = c3.slider("how many images", 1, 40, key="mx_limit", help=help_for("mx_limit"),
                      disabled=image_set == "current" or stored_set)
    c4, c5, c6, c7 = st.columns([3, 2, 2, 1])
    sigmas = c4.multiselect("σ (noise levels)", SIGMAS, key="mx_sigmas", help=help_for("mx_sigmas"))
    n = c5.select_slider("n (estimation samples)", N_CHOICES, key="mx_n", help=help_for("mx_n"))
    n0 = c6.select_slider("n0 (selection samples)", [8, 16, 32, 64], key="mx_n0", help=help_for("mx_n0"))
    seed = int(c7.number_input("seed", 0, 2**31 - 1, key="mx_seed", help=help_for("mx_seed")))
    normalisation = normalisation_picker("mx_normalisation")
    st.caption("A grid is explained once per cell (four targets); the time of the missing runs is stated on the "
               "Compute button, from this store's past runs or a timing of each method on this machine.")

share.publish("mx_")
slow = [method_label(m) for m in methods if m in metrics_runs.SLOW_ON_CPU]
if slow and wb.device == "cpu":
    st.info(f"{', '.join(slow)}: slow on the CPU — expect minutes per image. Results are stored, so this is paid once.")
if not methods or not sigmas:
    st.info("Choose at least one method and one σ.")
    st.stop()

choice = metrics_runs.SweepChoice(tuple(methods), image_set, int(limit), tuple(sorted(sigmas)), int(n), int(n0), seed,
                                  normalisation)
try:
    if stored_set:
        runs, held = metrics_runs.stored_runs(wb, choice)
    else:
        runs = metrics_runs.plan(wb, choice)
except SHOWN_ERRORS as exc:
    st.error(describe_error(exc))
    st.stop()
store = metrics_runs.open_store()
todo = sweep.missing(store, runs)
if stored_set:
    st.caption("A stored image set was swept with `python -m certlib run --images PATH`: the page shows its stored "
               "runs that match the model and the settings above; sample more with that command.")
    if not runs:
        st.info(f"None of its stored runs match this model and these settings. {held}.")
        st.stop()

if st.session_state.pop("_mx_running", False) and todo:
    st.warning("Sampling was interrupted. Every run finished before that is stored; compute again to continue.")
status = st.empty()
status.markdown(f"**{len(runs) - len(todo)} of {len(runs)} runs** are in the store (`{store.path}`).")
if todo:
    b1, b2 = st.columns([3, 1])
    estimate = metrics_runs.estimate_seconds(store, wb, todo)
    if b1.button(f"Compute the {len(todo)} missing runs (roughly {estimate / 60:.1f} min on {wb.device})",
                 key="mx_compute", type="primary"):
        b2.button("Cancel", key="mx_cancel", help="Stops after the current noisy batch; finished runs stay stored.")
        st.session_state["_mx_running"] = True
        try:
            metrics_runs.compute_missing(store, wb, runs)
        except SHOWN_ERRORS as exc:
            st.error(describe_error(exc))
        st.session_state["_mx_running"] = False
        st.rerun()          # redraw from the store: no Compute or Cancel button beside "all runs are stored"


def _decision_controls(runs) -> sweep.Decision | None:
    st.markdown("**Decision** — re-decided from the stored counts, no resampling")
    share.publish("mx_")    # in the fragment too: its reruns do not reach the page's publish
    d1, d2, d3, d4, d5 = st.columns([2, 2, 3, 2, 2])
    tau = d1.slider("τ (vote threshold)", 0.5, 0.99, step=0.01, key="mx_tau", help=help_for("mx_tau"))
    alpha = d2.select_slider("α (error probability)", ALPHAS, key="mx_alpha", help=help_for("mx_alpha"), format_func=lambda a: f"{a:g}")
    levels = d3.multiselect("top-K% levels", list(runs[0].config.k_percents), key="mx_levels", help=help_for("mx_levels"),
                            format_func=lambda k: f"top {k:g}%")
    correction = d4.radio("correction", CORRECTIONS, key="mx_correction", help=help_for("mx_correction"),
                          horizontal=True)
    replacement = d5.radio("deleted pixels become", list(metrics.REPLACEMENTS), key="mx_replacement", help=help_for("mx_replacement"),
                           horizontal=True)
    if not levels:
        st.info("Choose at least one top-K% level.")
        return None
    return sweep.Decision(tau, alpha, tuple(sorted(levels)), correction, replacement)


def _collect(runs, decision: sweep.Decision, faithfulness: bool):
    try:
        return metrics_runs.collect(store, wb, runs, decision, faithfulness=faithfulness)
    except SHOWN_ERRORS as exc:
        st.error(describe_error(exc))
        return None


def _view_controls(summary, decision: sweep.Decision):
    stored_sigmas = sorted({s["sigma"] for s in summary})
    if st.session_state.get("mx_view_sigma") not in stored_sigmas:
        st.session_state["mx_view_sigma"] = stored_sigmas[0]
    if st.session_state.get("mx_line_k") not in decision.levels:
        st.session_state["mx_line_k"] = decision.levels[-1]
    v1, v2 = st.columns(2)
    view_sigma = v1.selectbox("σ shown in the bars, curves and ranking", stored_sigmas, key="mx_view_sigma", help=help_for("mx_view_sigma"))
    line_k = v2.selectbox("top-K% of the robustness-vs-σ chart", list(decision.levels), key="mx_line_k", help=help_for("mx_line_k"),
                          format_func=lambda k: f"top {k:g}%")
    return view_sigma, line_k


def _robustness_and_localization(rows, summary, at_sigma, line_k) -> None:
    st.subheader("Certified robustness")
    r1, r2 = st.columns(2)
    r1.plotly_chart(metrics_viz.metric_bars(at_sigma, "certified", "certified pixels (top-K or not top-K)"), key="mx_rob")
    r2.plotly_chart(metrics_viz.sigma_lines(summary, "certified", line_k, f"certified pixels at top {line_k:g}% vs σ"),
                    key="mx_sigma")
    st.subheader("Certified localization")
    if any(r["cell"] is not None for r in rows):
        l1, l2 = st.columns(2)
        l1.plotly_chart(metrics_viz.metric_bars(at_sigma, "certified_gridpg", "certified GridPG (random = 25%)"),
                        key="mx_loc")
        l2.plotly_chart(metrics_viz.metric_bars(at_sigma, "gridpg_clean", "plain GridPG of the clean map", per_k=False),
                        key="mx_gridpg")
    else:
        st.caption("Localization needs 2×2 grids: choose a grid image set.")


def _faithfulness_and_ranking(curves, summary, view_sigma) -> None:
    at_sigma = [s for s in summary if s["sigma"] == view_sigma]
    labels = {s["method"]: s["method_label"] for s in summary}
    families = {s["method"]: s["family"] for s in summary}
    if image_set in metrics_runs.GRID_SETS:
        st.caption("On grids the target is a cell's class, to which the model often gives a low probability; "
                   "the deletion and insertion curves say most on single digits.")
    mean = [c for c in sweep.mean_curves(curves) if c["sigma"] == view_sigma]
    f1, f2 = st.columns(2)
    f1.plotly_chart(metrics_viz.faithfulness_figure(mean, "deletion", families, labels), key="mx_del")
    f2.plotly_chart(metrics_viz.faithfulness_figure(mean, "insertion", families, labels), key="mx_ins")
    a1, a2 = st.columns(2)
    a1.plotly_chart(metrics_viz.metric_bars(at_sigma, "deletion_auc", "deletion AUC (lower = more faithful)", per_k=False,
                                    percent=False), key="mx_del_auc")
    a2.plotly_chart(metrics_viz.metric_bars(at_sigma, "insertion_auc", "insertion AUC (higher = more faithful)",
                                    per_k=False, percent=False), key="mx_ins_auc")
    st.subheader("Ranking")
    st.plotly_chart(metrics_viz.ranking_heatmap(sweep.method_scores(summary, view_sigma), RANKED, sweep.RANKED_METRICS,
                                        labels), key="mx_rank")


@st.fragment
def results(runs) -> None:
    decision = _decision_controls(runs)
    if decision is None:
        return
    # faithfulness curves of a new decision are computed below, after the charts that need none are drawn
    got = _collect(runs, decision, faithfulness=False)
    if got is None:
        return
    rows, curves, absent = got
    if not rows:
        st.info("Nothing of this selection is stored yet: press *Compute* above (or run `python -m certlib run`).")
        return
    if absent:
        st.caption(f"{absent} of {len(runs)} runs are not computed yet; the charts show the stored ones.")
    if not all(r["certifiable"] for r in rows):
        st.warning(f"With n = {rows[0]['n']} nothing can be certified at α = {decision.alpha:g} over this many "
                   "tests: every pixel abstains. Choose a larger n (or α).")
    summary = sweep.summarise(rows)
    view_sigma, line_k = _view_controls(summary, decision)
    _robustness_and_localization(rows, summary, [s for s in summary if s["sigma"] == view_sigma], line_k)
    st.subheader("Faithfulness")
    if metrics_runs.faithfulness_missing(runs, curves, absent):
        with st.spinner("Deletion and insertion curves at this decision (the model on every step's image)…"):
            got = _collect(runs, decision, faithfulness=True)
        if got is None:
            return
        rows, curves, absent = got
        summary = sweep.summarise(rows)
    _faithfulness_and_ranking(curves, summary, view_sigma)
    downloads.metrics(rows)     # built on click


with st.container(border=True):
    results(runs)
