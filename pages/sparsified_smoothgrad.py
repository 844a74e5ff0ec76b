"""Sparsified SmoothGrad (Levine, Singla & Feizi 2019): σ, n and the seed resample; the variant, κ, K, ε and α only
re-decide from the cached sums."""
import streamlit as st

from ui.frame import loading

_loading = loading("Sparsified SmoothGrad")   # shown while the imports below load (cold start)
from certlib import SHOWN_ERRORS, describe_error
from certlib.sparse import check as sparse_check
from certlib.sparse import viz as sv
from certlib.sparse import smoothgrad as S
from ui import downloads, figures, share
from ui import smoothgrad_runs as runs
from ui.controls import ALPHAS, help_for
from ui.runs import announce_cost, keep_view, stale_view
from ui.workbench import current, remember

N_CHOICES = [32, 64, 128, 256, 500, 1000, 2000, 4000]
SIGMA_CHOICES = [0.12, 0.25, 0.5, 0.75, 1.0]

_loading.empty()
wb = current()
remember(sg_sigma=0.25, sg_n=500, sg_seed=0, sg_compare=[], sg_variant="sparsified", sg_level=20.0, sg_k=10.0,
         sg_eps=0.02, sg_alpha=1e-3, sg_bound="bernstein", sg_target=0.5,
         choices={"sg_sigma": SIGMA_CHOICES, "sg_n": N_CHOICES, "sg_seed": (0, 2**31 - 1), "sg_compare": SIGMA_CHOICES,
                  "sg_variant": list(S.VARIANTS), "sg_level": list(S.DEFAULT_LEVELS), "sg_k": (1.0, 50.0),
                  "sg_eps": (0.0, 1.0), "sg_alpha": ALPHAS, "sg_bound": list(S.SCALED_BOUNDS),
                  "sg_target": (0.05, 1.0)})
st.title("Sparsified SmoothGrad")
st.caption("Levine, Singla & Feizi (2019): each noisy gradient map keeps only its top κ% pixels, mapped into [0, 1]; "
           "averaged under Gaussian noise, every pixel's value can move only a bounded amount under an ℓ2 "
           "perturbation of size ε, so part of the top K% provably stays in the top K%.")

with st.container(border=True):
    st.markdown("**Sampling** — changing these draws new noisy samples")
    c1, c2, c3, c4 = st.columns([3, 3, 2, 3])
    sigma = c1.select_slider("σ (noise level)", SIGMA_CHOICES, key="sg_sigma", help=help_for("sg_sigma"))
    n = c2.select_slider("n (noisy samples)", N_CHOICES, key="sg_n", help=help_for("sg_n"))
    seed = int(c3.number_input("seed", 0, 2**31 - 1, key="sg_seed", help=help_for("sg_seed")))
    options = [s for s in SIGMA_CHOICES if s != sigma]
    st.session_state["sg_compare"] = [s for s in st.session_state["sg_compare"] if s in options]  # σ moved onto one
    compare = c4.multiselect("also plot σ", options, key="sg_compare", help=help_for("sg_compare"))

share.publish("sg_")
params = runs.SmoothGradParams(float(sigma), int(n), seed)
per_sigma = n * (1 + len(params.eps_values) * sparse_check.RANDOM_DIRECTIONS)
st.caption(f"Each σ draws {per_sigma} noisy attributions: n at x and n at each of {len(params.eps_values)} randomly "
           "perturbed inputs (ε = " + ", ".join(f"{e:g}" for e in params.eps_values) + "). Each is sampled once and "
           "cached; the decision below never resamples.")
notice = announce_cost(wb, "sg_samples", params, per_sigma * (1 + len(compare)))
stale = stale_view("sg", wb, params, "sg_samples")
try:
    samples = runs.samples(wb, params)
    randoms = runs.random_runs(wb, params)
    others = [(p, runs.samples(wb, p), runs.random_runs(wb, p))
              for p in (runs.SmoothGradParams(float(s), int(n), seed) for s in sorted(compare))]
except SHOWN_ERRORS as exc:
    st.error(f"Sampling failed: {describe_error(exc)}")
    st.stop()
notice.empty()
stale.empty()

with st.expander("Attack: try to push the top-K pixels out (PGD on the base attribution)"):
    st.caption(f"For each ε in {', '.join(f'{e:g}' for e in params.eps_values)} an ℓ2 PGD attack "
               f"({sparse_check.ATTACK_STEPS} steps, {sparse_check.ATTACK_RESTARTS} restarts, label kept) drives the top "
               f"{st.session_state['sg_k']:g}% of the plain attribution away; the smoothed map is then re-sampled "
               "at the attacked input. The certificate says no attacked point can fall below the curve.")
    if st.button("Run the attack", key="sg_attack"):
        try:
            runs.run_attacks(wb, params, float(st.session_state["sg_k"]))
        except SHOWN_ERRORS as exc:
            st.error(f"Attack failed: {describe_error(exc)}")


def _controls():
    st.markdown("**Decision** — from the cached sums, no resampling")
    d1, d2, d3, d4, d5 = st.columns([3, 2, 2, 2, 2])
    variant = d1.radio("variant", S.VARIANTS, key="sg_variant", help=help_for("sg_variant"), format_func=S.VARIANT_LABELS.get)
    level = d2.select_slider("κ: % kept per noisy map (sparsification)", list(samples.levels), key="sg_level", help=help_for("sg_level"),
                             format_func=lambda v: f"{v:g}%")
    k_percent = d3.slider("K: top-K% pixels", 1.0, 50.0, step=1.0, key="sg_k", help=help_for("sg_k"), format="%.0f%%")
    eps = d4.slider("ε (ℓ2 radius)", 0.0, 1.0, step=0.005, key="sg_eps", help=help_for("sg_eps"), format="%.3f")
    alpha = d5.select_slider("α (error probability)", ALPHAS, key="sg_alpha", help=help_for("sg_alpha"), format_func=lambda a: f"{a:g}")
    e1, e2 = st.columns([3, 4])
    bound = e1.radio("bound for the scaled variant", S.SCALED_BOUNDS, key="sg_bound", help=help_for("sg_bound"), horizontal=True,
                     disabled=variant != "scaled")
    target = e2.slider("certify at least this overlap", 0.05, 1.0, step=0.05, key="sg_target", help=help_for("sg_target"))
    return variant, level, k_percent, eps, alpha, bound, target


def _metrics(cert: S.TopKCertificate, eps: float, target: float) -> None:
    nothing = cert.paired_at([0.0])[0] == 0
    if nothing:
        st.warning("Nothing is certified, not even at ε = 0: the confidence intervals of the top K overlap those of "
                   "the others. More samples n, a larger α, a smaller K or a larger κ help.", icon=":material/warning:")
    else:
        (st.success if cert.paired_overlap > 0 else st.warning)(
            f"At least {cert.paired_overlap:.0%} of the top {cert.k:,} pixels stay in the top {cert.k:,} for every "
            f"change of the image with ‖δ‖₂ ≤ ε = {eps:g} ([0, 1] pixel units), with probability ≥ 1 − α.",
            icon=":material/verified:" if cert.paired_overlap > 0 else ":material/warning:")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(f"certified overlap at ε = {eps:g}", f"{cert.paired_overlap:.1%}",
              help=f"At least this share of the top {cert.k} pixels stays in the top {cert.k} for every ‖δ‖₂ ≤ ε "
                   f"(Levine et al.'s pairing), with probability ≥ 1 − α ({cert.bound} bounds, Bonferroni over "
                   f"{cert.mean.size} pixels).")
    m2.metric("per pixel", f"{cert.overlap:.1%}",
              help=f"{int(cert.certified_mask.sum())} named pixels (green) each provably stay in the top {cert.k} "
                   "(design §5): fewer than K others can reach their lowest value. Never above the paired share.")
    m3.metric(f"largest ε for ≥ {target:.0%}", f"{cert.max_paired_eps(target):.4f}",
              help="Paired: certified for every ε strictly below this value; 0 means not even at ε = 0.")
    m4.metric("per pixel", f"{cert.max_eps(target):.4f}", help="The same for the per-pixel certificate.")


def _maps(cert: S.TopKCertificate, variant: str, level: float):
    overlay = sv.topk_certified_overlay(wb.display_rgb(), cert.top_mask, cert.certified_mask)
    left, mid, right = st.columns(3)
    plain = figures.attribution("sg_plain", samples, samples.smoothgrad, f"plain SmoothGrad (mean of {samples.n} maps)")
    left.plotly_chart(plain, key="sg_plain")
    mid.plotly_chart(sv.unit_map_figure(cert.mean, f"{variant} SmoothGrad ĝ, κ = {level:g}%"), key="sg_sparse")
    right.plotly_chart(sv.topk_overlay_figure(overlay, cert.mean, cert.lower, cert.upper, cert.radii, cert.top_mask),
                       key="sg_overlay")
    keep_view("sg", wb, params, [("figure", plain), ("image", overlay, "certified top-K overlay")])
    return overlay


def _empirical(decided, eps: float):
    """Certified curves of every σ with their empirical points; says so when a point falls below its curve."""
    attacked = runs.attack_runs(wb, params)
    curves, checks = [], []
    for p, c, s, perturbed in decided:
        label = f"σ = {p.sigma:g}"
        grid = c.eps_axis()
        curves.append(sv.OverlapCurve(label, grid, c.paired_at(grid), "paired"))
        curves.append(sv.OverlapCurve(label, grid, c.overlap_at(grid), "per pixel"))
        checks += sparse_check.overlap_checks(c, s, perturbed, label)
    points = [sv.OverlapPoint(c.kind, c.eps, c.empirical, c.label, c.note) for c in checks]
    st.plotly_chart(sv.overlap_curve_figure(curves, points, eps), key="sg_curve")
    problem = sparse_check.violation_summary(checks)
    if problem:
        st.error(problem)
    else:
        st.caption(f"All {len(checks)} empirical overlaps lie on or above the certified curve of their σ "
                   f"(random directions{'; attacks' if attacked else '; run the attack above for attacked points'}).")
    return curves, checks


@st.fragment
def decision() -> None:
    variant, level, k_percent, eps, alpha, bound, target = _controls()
    share.publish("sg_")
    try:
        cert = S.certify_topk(samples, variant, level, k_percent, eps, alpha, bound)
        more = [(p, S.certify_topk(s, variant, level, k_percent, eps, alpha, bound), s, r) for p, s, r in others]
    except SHOWN_ERRORS as exc:
        st.error(describe_error(exc))
        return
    _metrics(cert, eps, target)
    overlay = _maps(cert, variant, level)
    attacked = [a for v in runs.attack_runs(wb, params).values() for a in v]
    curves, checks = _empirical([(params, cert, samples, randoms + attacked)] + more, eps)
    downloads.smoothgrad(samples.smoothgrad, cert, overlay, curves, checks)   # built only when a button is clicked


with st.container(border=True):
    decision()
