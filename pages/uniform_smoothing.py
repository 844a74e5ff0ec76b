"""Uniform smoothing (Wang & Kong 2024): r, n, M and the seed resample ĥ(x); ε, T and the confidence only re-bound."""
import streamlit as st

from ui.frame import loading

_loading = loading("Uniformly smoothed attributions")   # shown while the imports below load (cold start)
from certlib.uniform import cert as uniform_cert, check as uniform_check, viz as uniform_viz
from certlib.uniform.cert import KINDS
from ui import downloads, figures, runs, share, uniform_runs
from ui.uniform_runs import UniformParams
from ui.controls import help_for
from ui.workbench import current, remember

N_CHOICES = [64, 128, 256, 512, 1000, 2000, 5000]
EPS_FRACTIONS = [round(i / 100, 2) for i in range(101)]     # ε as a share of the plotted range, shown in real units
CONFIDENCES = [0.05, 0.01, 1e-3, 1e-4, 1e-6]

_loading.empty()
wb = current()
remember(us_radius=4.0, us_n=512, us_mode="normalise", us_mfactor=1.5, us_seed=0, us_eps_frac=0.05, us_T=0.9,
         us_delta=1e-3, us_kind="strict",
         choices={"us_radius": (0.25, 16.0), "us_n": N_CHOICES, "us_mode": ["normalise", "clip"],
                  "us_seed": (0, 2**31 - 1), "us_mfactor": (0.5, 4.0), "us_eps_frac": EPS_FRACTIONS,
                  "us_T": (0.5, 0.99), "us_delta": CONFIDENCES, "us_kind": list(KINDS)})
st.title("Uniformly smoothed attributions")
st.caption("Wang & Kong (2024): h(x) = E[g(x + η)] with η uniform in the ℓ2 ball of radius r and ‖g‖₂ ≤ M. "
           "Moving x by δ only exchanges the parts of the ball the shifted ball does not share, which bounds how far "
           "h can move — and so how low the cosine between h(x) and h(x + δ) can fall, for every ‖δ‖₂ ≤ ε.")

with st.container(border=True):
    st.markdown("**Sampling** — changing these draws new samples")
    c1, c2, c3, c4 = st.columns([3, 3, 3, 2])
    radius = c1.slider("r (ball radius, ℓ2 in [0,1] pixel units)", 0.25, 16.0, step=0.25, key="us_radius", help=help_for("us_radius"))
    n = c2.select_slider("n (samples)", N_CHOICES, key="us_n", help=help_for("us_n"))
    mode = c3.radio("bound ‖g‖ ≤ M by", ["normalise", "clip"], key="us_mode", help=help_for("us_mode"), horizontal=True)
    seed = int(c4.number_input("seed", 0, 2**31 - 1, key="us_seed", help=help_for("us_seed")))
    clean = uniform_runs.clean_map(wb, seed)
    if mode == "clip":
        factor = c3.slider("M / ‖g(x)‖", 0.5, 4.0, step=0.1, key="us_mfactor", help=help_for("us_mfactor"))
        M = uniform_runs.clip_bound(clean, factor)
    else:
        M = 1.0

share.publish("us_")
params = UniformParams(radius, n, M, mode, seed)
notice = runs.announce_cost(wb, "uniform_mean", params, n)
stale = runs.stale_view("us", wb, params, "uniform_mean")
smoothed = uniform_runs.smoothed_map(wb, params)
notice.empty()
stale.empty()
d = wb.input_dim

left, right = st.columns(2)
left.plotly_chart(figures.attribution("us_raw", clean, clean, "raw attribution g(x)"), key="us_raw")
smooth_figure = figures.attribution("us_smooth", smoothed, smoothed.mean, f"smoothed ĥ(x), n = {n}, r = {radius:g}")
right.plotly_chart(smooth_figure, key="us_smooth")
runs.keep_view("us", wb, params, [("figure", smooth_figure)])

eps_axis = uniform_cert.eps_axis(d, radius)
grid = tuple(float(e) for e in uniform_cert.empirical_eps_grid(d, radius))


@st.fragment
def certificate() -> None:
    st.markdown("**Certificate** — recomputed from the cached ĥ(x), no resampling")
    e1, e2, e3, e4 = st.columns([3, 2, 2, 3])
    eps_frac = e1.select_slider("ε (ℓ2 size of the perturbation, [0,1] pixel units)", EPS_FRACTIONS,
                                key="us_eps_frac", help=help_for("us_eps"),
                                format_func=lambda f: f"{f * eps_axis[-1]:.3g} ({f:.0%} of the plotted range)")
    eps = float(eps_frac * eps_axis[-1])
    T = e2.slider("target cosine T", 0.5, 0.99, step=0.01, key="us_T", help=help_for("us_T"))
    delta = e3.select_slider("δ_conf (sampling error)", CONFIDENCES, key="us_delta", help=help_for("us_delta"), format_func=lambda a: f"{a:g}")
    kind = e4.radio("headline bound", list(KINDS), key="us_kind", help=help_for("us_kind"), format_func=lambda k: KINDS[k])
    share.publish("us_")
    cert = uniform_cert.certify_uniform(smoothed, d, delta)
    (st.success if cert.certifies_anything and cert.bound(eps, kind) > 0 else st.warning)(
        uniform_cert.guarantee_sentence(cert, eps, kind))
    m1, m2, m3, m4, m5, m6 = st.columns(6)
    m1.metric("ε", f"{eps:.4g}")
    # In words where the bound gives nothing: "T = 0.0000" read as a (bad) cosine, not as no guarantee at all.
    hint = uniform_cert.knob_hint(cert, eps, kind)
    m2.metric(f"T(ε), {kind}", uniform_cert.bound_text(cert, eps, kind), delta=hint, delta_color="off",
              help="nothing certified: at this ε the bound allows any cosine" if hint else None)
    m3.metric("‖ĥ(x)‖ → lower bound on ‖h(x)‖", f"{cert.h_norm_lower:.3f}", delta=f"{cert.h_hat_norm:.3f} sampled",
              delta_color="off", help=f"McDiarmid: ‖h‖ ≥ ‖ĥ‖ − M/√n − M·√(2 ln(1/δ)/n) with probability ≥ 1 − δ")
    m4.metric("M (bound on ‖g‖)", f"{M:.4g}", help=f"mode: {mode}; d = {d} input dimensions")
    m5.metric(f"max certified ε for T = {T:g}", uniform_cert.max_eps_text(cert, T, kind))
    m6.metric(f"min r for ε and T (at this ‖h‖)", _min_radius_text(cert, eps, T, kind))
    points = uniform_runs.cached_points(wb, params, grid) or []
    curves = {k: cert.curve(eps_axis, k) for k in KINDS}
    st.plotly_chart(uniform_viz.bound_figure(eps_axis, curves, points, marked_eps=eps), key="us_curves")
    _verdict(cert, points)
    downloads.uniform_bound(eps_axis, curves, points)     # the files are built only when a button is clicked


def _min_radius_text(cert, eps: float, T: float, kind: str) -> str:
    if eps <= 0 or not cert.certifies_anything:
        return "—"
    return f"{cert.min_radius(eps, T, kind):.4g}"


def _verdict(cert, points) -> None:
    if not points:
        st.caption("No measured points yet: run the measurement below to set real cosines beside the bounds.")
        return
    checks = {kind: uniform_check.check_bound(cert, points, kind) for kind in KINDS}
    for kind, check in checks.items():
        if check.below and kind == "strict":
            st.error(f"{check.below} measured cosine(s) fall below the proven bound: this should not happen up to "
                     f"the δ_conf = {cert.delta:g} sampling risk. Please report it with the CSV.")
        elif check.below:
            st.warning(f"{check.below} measured cosine(s) fall below the published bound ({KINDS[kind]}): it is not "
                       "a valid lower bound here (see docs/uniform_bound.md).")
    st.caption(f"Smallest margin measured − proven bound over {len(points)} points: "
               f"{checks['strict'].smallest_margin:.4f}. Label kept at "
               f"{sum(p.label_kept for p in points)}/{len(points)} perturbed points.")


with st.container(border=True):
    certificate()

with st.container(border=True):
    st.markdown("**Measured cosines** — random directions and an attribution attack at "
                + ", ".join(f"{e:.3g}" for e in grid))
    st.caption("For each ε: two random directions of norm ε, and ℓ2 PGD (10 steps, 2 restarts) that drives the base "
               "attribution's cosine down while keeping the predicted class; then ĥ(x+δ) is re-estimated with the "
               "same noise draws. Gradient, Input×Gradient and IG are attacked through a Softplus twin of the "
               "model; other methods by transfer from its gradient map.")
    if uniform_runs.cached_points(wb, params, grid) is None:
        if st.button("Measure", key="us_measure"):
            uniform_runs.measure_points(wb, params, smoothed, grid)
            st.rerun()
    else:
        st.dataframe([{"ε": p.eps, "kind": p.kind, "cos(ĥ(x), ĥ(x+δ))": p.cosine, "base map cosine": p.base_cosine,
                       "label kept": p.label_kept, "how": p.how}
                      for p in uniform_runs.cached_points(wb, params, grid)], hide_index=True)
