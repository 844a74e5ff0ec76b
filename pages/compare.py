"""Compare: 2–4 attribution methods, or the three σ_train checkpoints, certified side by side on the workbench's image
with one set of sampling and decision controls. Each cell is cached like a Certified pixels run (the same cache), so
a cell sampled there or here is never sampled again; the decision controls only re-decide."""
import streamlit as st

from ui.frame import loading

_loading = loading("Compare")   # shown while the imports below load (cold start)

from certlib.pixel import guarantee, cert as pixel_cert, radius as pixel_radius, viz as pixel_viz, radius_viz
from ui import compare, runs, share
from ui.controls import ALPHAS, K_PERCENTS, help_for
from ui.workbench import current, method_label, remember, usable_methods

N_CHOICES = [64, 100, 128, 200, 256, 500]
N0_CHOICES = [8, 16, 32, 64]

_loading.empty()
wb = current()
usable = usable_methods(wb.model.spec)
remember(cmp_mode="methods", cmp_methods=compare.default_methods(wb, usable),
         cmp_sigma=0.25, cmp_n=256, cmp_n0=32, cmp_tau=0.75, cmp_alpha=1e-3, cmp_k=25.0,
         choices={"cmp_mode": list(compare.MODES), "cmp_methods": usable, "cmp_sigma": (0.05, 1.0),
                  "cmp_n": N_CHOICES, "cmp_n0": N0_CHOICES, "cmp_tau": (0.5, 0.99), "cmp_alpha": ALPHAS,
                  "cmp_k": K_PERCENTS})
st.title("Compare")
st.caption("The same image, target class and settings, certified for several methods or models at once: which "
           "explanation keeps more pixels certified, and where.")

with st.container(border=True):
    st.markdown("**Sampling** — changing these draws new noisy samples for every cell")
    c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
    checkpoints_possible = wb.model.spec.family == "digits"
    mode = c1.radio("compare", list(compare.MODES) if checkpoints_possible else ["methods"], key="cmp_mode",
                    format_func=compare.MODES.get, horizontal=True, help=help_for("cmp_mode"))
    sigma = c2.slider("σ (noise level)", 0.05, 1.0, step=0.01, key="cmp_sigma", help=help_for("cp_sigma"))
    n = c3.select_slider("n (estimation samples)", N_CHOICES, key="cmp_n", help=help_for("cp_n"))
    n0 = c4.select_slider("n0 (selection samples)", N0_CHOICES, key="cmp_n0", help=help_for("cp_n0"))
    if mode == "methods":
        methods = st.multiselect("methods (2 to 4)", usable, key="cmp_methods", max_selections=4,
                                 format_func=method_label, help=help_for("cmp_methods"))
share.publish("cmp_")
if mode == "methods" and len(methods) < 2:
    st.info("Choose at least two methods.")
    st.stop()
cells = compare.method_cells(wb, methods) if mode == "methods" else compare.checkpoint_cells(wb)
params = runs.SamplingParams(float(sigma), int(n0), int(n), 0)
todo = compare.missing(cells, params)
if todo:
    where = "GPU" if wb.device == "cuda" else "CPU"
    st.info(f"{len(todo)} of {len(cells)} cells are not sampled yet: about {compare.expected_time(cells, params)} "
            f"on this machine's {where} ({len(todo)} × {n0 + n} noisy attributions).",
            icon=":material/schedule:")
    label = "Certify the missing cell" if len(todo) == 1 else f"Certify the {len(todo)} missing cells"
    if not st.button(label, key="cmp_go", type="primary"):
        st.stop()
counts = [runs.topk_counts(c.wb, params) for c in cells]


@st.fragment
def grid() -> None:
    st.markdown("**Decision** — shared by every cell, re-decided from the cached counts")
    d1, d2, d3 = st.columns(3)
    tau = d1.slider("τ (vote threshold)", 0.5, 0.99, step=0.01, key="cmp_tau", help=help_for("cp_tau"))
    alpha = d2.select_slider("α (error probability)", ALPHAS, key="cmp_alpha", format_func=lambda a: f"{a:g}",
                             help=help_for("cp_alpha"))
    k = d3.select_slider("top-K% level", K_PERCENTS, key="cmp_k",
                         format_func=lambda v: f"top {v:g}%", help=help_for("cmp_k"))
    share.publish("cmp_")
    columns = st.columns(len(cells))
    for column, cell, c in zip(columns, cells, counts):
        sub = c.select_levels([k])
        cert = pixel_cert.decide(sub.votes_for_mode, sub.modes, sub.n, sub.sigma, tau, alpha, "holm")
        shortfall = pixel_cert.too_few_samples(cert.n, tau, alpha, cert.num_tests)
        said = guarantee.verdict(cert.classes, sub.k_percents, cert.radius, cell.wb.rms(cert.radius), shortfall)
        overlay = pixel_viz.certified_overlay(cell.wb.display_rgb(), cert.classes, sub.k_percents)
        if said.vacuous:
            overlay = pixel_viz.greyed(overlay)
        with column:
            st.markdown(f"**{cell.title}**")
            st.plotly_chart(pixel_viz.overlay_figure(overlay, sub.top_frequency, sub.k_percents,
                                                     pixel_viz.certified_levels(cert.classes, sub.k_percents),
                                                     f"{cell.title}: top {k:g}% at R = {cert.radius:.3g}"),
                            key=f"cmp_overlay_{cell.title}")
            share_in = float((cert.classes == 1).mean())
            abstain = float((cert.classes == -1).mean())
            st.metric("certified in the top K", f"{share_in:.1%}", help="share of all pixels")
            st.caption(f"abstain {abstain:.1%} · {said.text}")
    # Every radius at once, from the same counts (Clopper–Pearson at α/m per cell; design §18)
    curves = {cell.title: pixel_radius.fixed_n_radii(c, alpha, [k]) for cell, c in zip(cells, counts)}
    radius_tau = pixel_cert.certified_radius(sigma, tau)
    st.plotly_chart(radius_viz.radius_curve(curves, radius_tau, (k,)), key="cmp_radius_curve")
    st.caption("Share of each cell's top-K pixels certified as top-K against the radius ε, every radius valid "
               f"together at 1 − α per cell; the dashed line is R(τ) = {radius_tau:.3f}.")


with st.container(border=True):
    grid()
