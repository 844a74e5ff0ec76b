"""Certified pixels (Anani et al. 2025): σ, n, n0 resample; τ, α, K, correction only re-decide from cached counts."""
import streamlit as st

from ui.frame import loading

_loading = loading("Certified pixels")   # shown while the imports below load (cold start)
from certlib.pixel import TopKCounts, cert as pixel_cert, guarantee, prediction_cert, progressive, viz as pixel_viz
from certlib.pixel.check import COLUMN_LABELS, check_certificate
from ui import advice, downloads, fair_share, figures, looks, preview, progressive_runs, radius_view, runs, share
from ui.workbench import current, remember
from ui.controls import ALPHAS, K_PERCENTS, help_for, normalisation_picker

N_CHOICES = [32, 64, 100, 128, 200, 256, 500, 1000, 2000]
NMAX_CHOICES = [64, 128, 256, 500, 1000, 2000, 5000]
N0_CHOICES = [8, 16, 32, 64, 128]
_loading.empty()
wb = current()
remember(cp_sigma=0.25, cp_n=256, cp_nmax=256, cp_test="anytime", cp_n0=advice.default_n0(wb), cp_seed=0, cp_tau=0.75,
         cp_alpha=1e-3, cp_levels=[5.0, 25.0, 50.0], cp_correction="holm",
         cp_normalisation=pixel_cert.DEFAULT_NORMALISATION, cp_alpha_pred=1e-3,
         choices={"cp_sigma": (0.05, 1.0), "cp_n": N_CHOICES, "cp_nmax": NMAX_CHOICES, "cp_n0": N0_CHOICES,
                  "cp_test": list(progressive.TESTS), "cp_seed": (0, 2**31 - 1),
                  "cp_tau": (0.5, 0.99), "cp_alpha": ALPHAS, "cp_alpha_pred": ALPHAS,
                  "cp_levels": K_PERCENTS, "cp_correction": list(pixel_cert.CORRECTIONS),
                  "cp_normalisation": list(pixel_cert.NORMALISATIONS)})
st.title("Certified pixels")
st.caption("Anani, Lorenz, Fritz & Schiele (ICML 2025): each pixel's top-K% membership is smoothed under Gaussian "
           "noise and certified for every ℓ2 perturbation of radius R = σ·Φ⁻¹(τ), or the pixel abstains.")

advice.why_the_defaults(wb)

with st.container(border=True):
    st.markdown("**Sampling** — changing these draws new noisy samples")
    test = st.radio("test", progressive.TESTS, format_func=progressive.TEST_LABELS.get, key="cp_test",
                    horizontal=True, help=help_for("cp_test"))
    c1, c2, c3, c4 = st.columns(4)
    sigma = c1.slider("σ (noise level)", 0.05, 1.0, step=0.01, key="cp_sigma", help=help_for("cp_sigma"))
    if test == "fixed":
        n = c2.select_slider("n (estimation samples)", N_CHOICES, key="cp_n", help=help_for("cp_n"),
                             on_change=looks.on_new_n, args=("cp_n",))
    else:
        n = c2.select_slider("n_max (budget of estimation samples)", NMAX_CHOICES, key="cp_nmax",
                             help=help_for("cp_nmax"))
    n0 = c3.select_slider("n0 (selection samples)", N0_CHOICES, key="cp_n0", help=help_for("cp_n0"))
    seed = int(c4.number_input("seed", 0, 2**31 - 1, key="cp_seed", help=help_for("cp_seed")))
    normalisation = normalisation_picker("cp_normalisation")

# Before sampling, warn with the decision last chosen (the decision widgets below are drawn after sampling).
chosen = st.session_state
chosen_levels = tuple(sorted(chosen["cp_levels"] or [5.0]))
shortfall = progressive.too_few_samples(test, n, chosen["cp_tau"], chosen["cp_alpha"],
                                        wb.input_pixels * len(chosen_levels))
if shortfall:
    st.warning(shortfall)

share.publish("cp_")


def _live_frame(frame: progressive.Frame, state: progressive_runs.Progress) -> None:
    """One progressive frame: which test, the verdict, the overlay and the shares per level — a valid certificate
    at α. The shares are a table, not the final view's chart: frames are redrawn in every session watching the run."""
    cert, ks = frame.certificate, tuple(sorted(state.rule.levels))
    st.caption(f"Frame at n = {frame.counts.n:,} of at most {state.n_max:,} ({frame.passes:,} model passes, "
               f"{frame.seconds:.1f} s) · {progressive.TEST_LABELS['anytime']}: this frame is a valid certificate "
               f"at α = {cert.alpha:g} · {frame.undecided:,} pixel tests undecided")
    said = guarantee.verdict(cert.classes, ks, cert.radius, wb.rms(cert.radius),
                             progressive.too_few_samples("anytime", state.n_max, cert.tau, cert.alpha,
                                                         cert.num_tests))
    st.markdown(said.text)
    base = wb.display_rgb()
    left, right = st.columns(2)
    left.image(pixel_viz.certified_overlay(base, cert.classes, ks), caption="certified overlay (this frame)",
               width=min(320, max(160, base.shape[1])))
    right.markdown(pixel_viz.shares_table(ks, cert.fractions))


def _first_picture(wanted: bool):
    """Before sampling: the clean map and the prediction, labelled not certified yet (one attribution pass, well
    under a second on the photo model), in a slot the certificate replaces."""
    slot = st.empty()
    if wanted:
        with slot.container():
            preview.show(wb, seed)
        preview.let_a_local_browser_draw()
    return slot


def _continue_with(budget: int, params: progressive_runs.AnytimeParams) -> None:
    st.session_state["cp_nmax"] = budget
    progressive_runs.request_continue(wb, params)


def _decided(state: progressive_runs.Progress, params: progressive_runs.AnytimeParams) -> None:
    """A run that stopped because every pixel test was decided: Continue would draw nothing at this budget, so
    say so, and offer the smallest larger budget that re-opens some tests (if any does)."""
    head = (f"Sampling stopped at n = {state.counts.n:,} because every pixel test is decided at τ = "
            f"{state.rule.tau:g}, α = {state.rule.alpha:g}: certified, shown to fall short of τ, or out of reach "
            f"within the budget n_max = {state.n_max:,}.")
    found = progressive_runs.first_reopening_budget(state, [c for c in NMAX_CHOICES if c > state.n_max])
    if found is None:
        st.caption(head + " More samples cannot change this certificate: no larger budget on the slider brings an "
                   "undecided test within reach.")
        return
    budget, reopened = found
    st.info(f"{head} With a budget of {budget:,}, {reopened:,} pixel tests now out of reach could still certify.",
            icon=":material/info:")
    st.button(f"Continue with a budget of {budget:,}", key="cp_continue_budget", icon=":material/play_arrow:",
              on_click=_continue_with, args=(budget, params))


def _progressive_counts() -> tuple[TopKCounts, progressive_runs.AnytimeParams, progressive_runs.Progress]:
    params = progressive_runs.AnytimeParams(sigma, n0, seed, normalisation=normalisation)
    rule = progressive.StopRule(chosen["cp_tau"], chosen["cp_alpha"], chosen_levels, chosen["cp_correction"])
    if progressive_runs.needs_sampling(wb, params, n):
        first_picture = _first_picture(progressive_runs.stored(wb, params) is None)
        stale = runs.stale_view("cp", wb, params, progressive_runs.KIND)
        notice = st.empty()
        before = progressive_runs.stored(wb, params)
        remaining = n - (before.counts.n if before is not None else 0) + (0 if before is not None else n0)
        said = runs.expected_time(wb, max(1, remaining))
        if said:
            notice.info("At most: " + said[0].lower() + said[1:], icon=":material/schedule:")
        stop_slot = st.empty()         # removed when sampling ends; a click while sampling interrupts the run
        stop_slot.button("Stop sampling", key="cp_stop", icon=":material/stop_circle:", help=help_for("cp_stop"),
                         on_click=progressive_runs.request_stop, args=(wb, params))
        bar = st.progress(0.0, text="Anytime-valid sampling: selection copies …")
        live = st.empty()

        def on_frame(frame: progressive.Frame, state: progressive_runs.Progress) -> None:
            # the previous results stay, dimmed, above the live frames until the new certificate is final
            notice.empty()
            first_picture.empty()
            bar.progress(min(1.0, frame.counts.n / n), text=f"Anytime-valid sampling: n = {frame.counts.n:,} of at "
                         f"most {n:,}; {frame.undecided:,} pixel tests undecided")
            with live.container():
                _live_frame(frame, state)

        # another session computing this very run: wait for it (its frames are drawn here), said in the notice
        progressive_runs.sample(wb, params, rule, n, on_frame,
                                on_wait=lambda said: notice.info(said, icon=":material/group:"))
        for slot in (stop_slot, bar, live, stale, notice, first_picture):
            slot.empty()
    state = progressive_runs.stored(wb, params)
    stopped = progressive_runs.stopped_by_user(wb, params)
    if state.stop == "decided" and not stopped:
        _decided(state, params)
    elif state.counts.n < n and (state.stop != "budget" or stopped):
        st.button(f"Continue sampling (up to n = {n:,})", key="cp_continue", icon=":material/play_arrow:",
                  help=help_for("cp_continue"), on_click=progressive_runs.request_continue, args=(wb, params))
    return state.counts, params, state


if test == "fixed":
    view_params = runs.SamplingParams(sigma, n0, n, seed, normalisation=normalisation)
    look_config = (runs.view_token(wb), sigma, n0, normalisation)
    st.session_state[looks.CURRENT] = look_config
    looks.show_notice()
    looked = looks.earlier_ns(look_config, seed, n)
    if looked:       # a seed typed by hand: the same noise was certified at another n before
        st.warning(f"Seed {seed} was already certified here with n = {', '.join(map(str, looked))}. Keeping the "
                   "better of several n on the same noise is not a valid fixed-n test; use fresh noise or the "
                   "anytime-valid test, which allows looking again.", icon=":material/warning:")
        w1, w2 = st.columns(2)
        w1.button(f"Fresh noise (seed {looks.seed_for_new_n(look_config, seed, n)})", key="cp_fresh_seed",
                  on_click=st.session_state.update, args=({"cp_seed": looks.seed_for_new_n(look_config, seed, n)},))
        w2.button("Switch to the anytime-valid test", key="cp_to_anytime", on_click=st.session_state.update,
                  args=({"cp_test": "anytime", "cp_nmax": min(c for c in NMAX_CHOICES if c >= n)
                         if n <= NMAX_CHOICES[-1] else NMAX_CHOICES[-1]},))
    first_picture = _first_picture(not runs.is_cached(wb, "topk_counts", view_params))
    notice = runs.announce_cost(wb, "topk_counts", view_params, n0 + n)
    stale = runs.stale_view("cp", wb, view_params, "topk_counts")
    counts = runs.topk_counts(wb, view_params)
    for slot in (notice, stale, first_picture):
        slot.empty()
    progress_state = None
else:
    counts, view_params, progress_state = _progressive_counts()
gain = runs.preprocessing_gain(wb)


def _decision_controls(counts: TopKCounts) -> tuple[float, float, list[float], str, float]:
    """τ, α, the levels, the correction and the prediction's α: what re-decides without sampling."""
    d1, d2, d3, d4, d5 = st.columns([2, 2, 3, 2, 2])
    tau = d1.slider("τ (vote threshold)", 0.5, 0.99, step=0.01, key="cp_tau", help=help_for("cp_tau"))
    alpha = d2.select_slider("α (error probability)", ALPHAS, key="cp_alpha", help=help_for("cp_alpha"),
                             format_func=lambda a: f"{a:g}")
    levels = d3.multiselect("top-K% levels", list(counts.k_percents), key="cp_levels", help=help_for("cp_levels"),
                            format_func=lambda k: f"top {k:g}%")
    correction = d4.radio("correction", list(pixel_cert.CORRECTIONS), key="cp_correction",
                          help=help_for("cp_correction"), horizontal=True)
    alpha_pred = d5.select_slider("α (prediction)", ALPHAS, key="cp_alpha_pred", format_func=lambda a: f"{a:g}",
                                  help=help_for("cp_alpha_pred"))
    share.publish("cp_")
    return tau, alpha, levels, correction, alpha_pred


def _decide_at(sub: TopKCounts, tau: float, alpha: float, correction: str) -> pixel_cert.PixelCertificate:
    """The certificate of the counts on screen; for the anytime test, of the whole run's trajectory (it only grows
    and includes the look at the budget)."""
    if progress_state is None:
        return progressive.decide(sub, test, tau, alpha, correction)
    return progressive.decide_trajectory(progress_state.trajectory, tau, alpha, correction, sub.k_percents)


def _advise(sub: TopKCounts, cert: pixel_cert.PixelCertificate, alpha: float, correction: str) -> None:
    """Which knob would help a level that certifies nothing (ui.advice), from the counts on screen."""
    if cert.radius <= 0:
        return
    decide_at = lambda t: _decide_at(sub, t, alpha, correction)       # noqa: E731 — one τ, the rest fixed
    if progress_state is None:
        advice.empty_levels(wb, sub, cert, test, decide_at, "cp_n", N_CHOICES)
        return
    trajectory, plan = progress_state.trajectory, progress_state.rule.plan_share
    advice.empty_levels(wb, sub, cert, test, decide_at, "cp_nmax", NMAX_CHOICES,
                        (("anytime", 1 - plan),) + ((("fixed", plan),) if trajectory.looked else ()))


def _figures(counts, sub: TopKCounts, cert: pixel_cert.PixelCertificate, vacuous: bool):
    """Input and clean map, the certified overlay, the bars per level (and the growth of a progressive run);
    returns the overlay and the bars for the dimmed view and the downloads."""
    ks = sub.k_percents
    base = wb.display_rgb()
    overlay = pixel_viz.certified_overlay(base, cert.classes, ks)
    if vacuous:               # nothing is certified: grey, so it cannot be read as a result
        overlay = pixel_viz.greyed(overlay)
    left, mid, right = st.columns(3)
    with left:
        st.image(base, caption=f"input ({base.shape[1]}×{base.shape[0]}), target "
                 f"{wb.model.spec.class_names[wb.target]}", width=160)
        st.plotly_chart(figures.attribution("cp_attr", counts, counts.clean_attr, "clean attribution"), key="cp_attr")
    mid.plotly_chart(pixel_viz.overlay_figure(overlay, sub.top_frequency, ks, pixel_viz.certified_levels(cert.classes, ks),
                                              f"certified for every ‖δ‖₂ ≤ R = {cert.radius:.3g}"
                                              + (" (vacuous)" if vacuous else "")), key="cp_overlay")
    bars = pixel_viz.certificate_bars(ks, cert.fractions)
    right.plotly_chart(bars, key="cp_bars")
    if progress_state is not None and len(progress_state.history) > 1:
        st.plotly_chart(pixel_viz.growth_figure(progress_state.history, tuple(sorted(progress_state.rule.levels))),
                        key="cp_growth")
    return overlay, bars


def _downloads(counts, sub, cert, said, overlay, decided: dict) -> None:
    """Overlay PNG, per-pixel CSV and the config + summary JSON, built only when a button is clicked."""
    config = {"model": wb.model.spec.key, "weights_sha256": wb.model.weights_sha256, "image": wb.image.key,
              "image_sha256": wb.image.sha256, "target": wb.target, "method": wb.method, "sigma": counts.sigma,
              "n0": counts.n0, "n": counts.n, "test": test, "n_max": n if test == "anytime" else None,
              "seed": counts.seed, **decided, "k_percents": sub.k_percents, "normalisation": counts.normalisation,
              "scale_s": counts.scale}
    downloads.pixel_certificate(config, sub, cert, said, overlay)


@st.fragment
def decision(counts) -> None:
    with fair_share.FOREGROUND.work():          # sampling of other sessions waits at its next batch boundary
        _decision(counts)


def _decision(counts) -> None:
    advice.rerun_page_if_asked()
    st.markdown("**Decision** — re-decided from the cached counts, no resampling")
    tau, alpha, levels, correction, alpha_pred = _decision_controls(counts)
    if not levels:
        st.info("Choose at least one top-K% level.")
        return
    sub = counts.select_levels(sorted(levels))
    cert = _decide_at(sub, tau, alpha, correction)
    shortfall = progressive.too_few_samples(test, cert.n, tau, alpha, cert.num_tests)
    said = guarantee.describe(cert.radius, alpha, wb.input_shape, tuple(wb.image.pixels.shape), gain,
                              wb.target, wb.model.spec.class_names,
                              prediction_cert.from_counts(counts, alpha_pred, test))
    said_briefly = guarantee.verdict(cert.classes, sub.k_percents, cert.radius, said.rms, shortfall,
                                     counts.normalisation)
    amber = said_briefly.amber or advice.nothing_certified(cert.classes)   # "0 certified" is never a success
    (st.warning if amber else st.success)(said_briefly.text,
                                          icon=":material/warning:" if amber else ":material/verified:")
    advice.smoothed_class(wb, said.prediction)
    _advise(sub, cert, alpha, correction)
    if test == "fixed":
        looks.record(st.session_state[looks.CURRENT], counts.seed, counts.n)
    _which_test(sub, cert)
    _show_guarantee(said, cert.classes.size, counts.normalisation, said_briefly.vacuous)
    overlay, bars = _figures(counts, sub, cert, said_briefly.vacuous)
    with st.container(border=True):
        radius_view.show(counts, sub.k_percents, None if progress_state is None else progress_state.trajectory,
                         alpha, cert.radius)
    runs.keep_view("cp", wb, view_params, [("text", said_briefly.text),
                                           ("image", overlay, "certified overlay"), ("figure", bars)])
    _downloads(counts, sub, cert, said, overlay, {"tau": tau, "alpha": alpha, "correction": correction,
                                                  "alpha_prediction": alpha_pred})
    st.session_state["cp_last_certificate"] = (cert, sub)


def _which_test(sub: TopKCounts, cert: pixel_cert.PixelCertificate) -> None:
    """Which test produced the certificate below (`cert`, of the counts `sub`), at which n and why sampling ended;
    for the anytime test also how many pixel tests the current decision leaves undecided."""
    if progress_state is None:
        st.caption(f"**{progressive.TEST_LABELS['fixed']}** · n = {sub.n:,} estimation copies (+ {sub.n0} "
                   "selection), fixed in advance.")
        return
    stopped = progressive_runs.stopped_by_user(wb, view_params)
    open_ = progressive.StopRule(cert.tau, cert.alpha, sub.k_percents, cert.correction).undecided(
        sub, cert, n, progress_state.trajectory)
    undecided = f" At this τ, α and these levels {int(open_.sum()):,} pixel tests are undecided." if open_.any() else ""
    st.caption(progressive_runs.describe(progress_state, n, stopped) + undecided)


def _show_guarantee(said: guarantee.Guarantee, tests: int, normalisation: str, vacuous: bool) -> None:
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("certified radius R = σ·Φ⁻¹(τ)", f"{said.radius:.3f}",
              delta="vacuous: nothing is certified" if vacuous else None, delta_color="off", delta_arrow="off",
              help=f"ℓ2 norm in the model's [0,1] input space; Holm/Bonferroni over {tests} tests.")
    m2.metric("per-pixel RMS change R/√d", f"{said.rms:.4f}")
    if said.radius_image is not None:
        m3.metric("R in the image's own pixels", f"{said.radius_image:.3f}",
                  help="the image was resized for the model; preprocessing can stretch a perturbation")
    pred = said.prediction
    m4.metric("prediction certified up to", "not certified" if pred is None or not pred.certified
              else f"R_pred = {pred.radius:.3f}")
    st.markdown(said.sentence)
    (st.success if said.prediction_covers else st.warning)(said.prediction_sentence)
    if normalisation == "paper":
        st.warning(f"Paper variant of h^K: {pixel_cert.PAPER_WARNING}.")


with st.container(border=True):
    decision(counts)

with st.expander("Check it: perturb by exactly R and re-estimate"):
    st.caption("Draws three random directions and one gradient-guided direction of norm R, samples the smoothed "
               "classes again at x + δ with fresh noise, and counts certified pixels whose class changed. "
               "The certificate says: none (up to α and sampling error).")
    if st.button("Run the check", key="cp_check"):
        cert, sub = st.session_state["cp_last_certificate"]
        bar = st.progress(0.0, text="Checking…")
        with runs.shown_in_page(bar):
            checks = check_certificate(runs.attribution_fn(wb, counts.seed), runs.logit_fn(wb),
                                       wb.model_x(), sub, cert.classes, cert.radius,
                                       alpha=st.session_state["cp_alpha"],
                                       progress=lambda d, t: bar.progress(min(1.0, d / t), text=f"Checking: {d}/{t}"))
        for c in checks:
            (st.error if c.flipped_significant else st.success)(f"{c.kind}: {c.verdict}")
        st.dataframe([{COLUMN_LABELS[k]: v for k, v in c.__dict__.items()} for c in checks], hide_index=True)
