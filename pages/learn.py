"""Learn (design §7): four model-free lessons, each a few sliders over an instant toy from certlib.teaching.lessons."""
import streamlit as st

from ui.frame import loading

_loading = loading("Learn")   # shown while the imports below load (cold start)
import numpy as np

from certlib import CertlibError
from certlib.teaching import lessons as teaching
from certlib.teaching import viz as tv
from ui import share
from ui.workbench import remember, render_sidebar
from ui.controls import ALPHAS

PLANE_N = [50, 100, 200, 500, 1000, 2000]
PIXEL_N = [10, 20, 50, 100, 200, 500, 1000, 2000]
DIMS = sorted({*teaching.dimension_ladder().tolist(), 2, 3, 784, 1024, 3072, 150_528})

_loading.empty()
render_sidebar()   # the shared sidebar; nothing below uses its model
remember(learn_x1=-1.0, learn_x2=-0.5, learn_sigma=0.5, learn_tau=0.75, learn_n=500, learn_seed=0, learn_alpha=1e-3,
         learn_regions="base classifier f",
         learn_flip=0.3, learn_px_n=200, learn_px_tau=0.75, learn_px_alpha=1e-3, learn_px_correction="holm",
         learn_px_seed=0,
         learn_ratio=0.2, learn_d=1024, learn_view="d = 2",
         learn_tk_eps=0.1, learn_tk_sigma=0.25, learn_tk_k=10, learn_tk_width=0.0,
         learn_rd_sigma=0.25, learn_rd_n=500, learn_rd_alpha=1e-3, learn_rd_tau=0.75,
         choices={"learn_x1": (-2.5, 2.5), "learn_x2": (-2.5, 2.5), "learn_sigma": (0.05, 1.5),
                  "learn_tau": (0.5, 0.99), "learn_n": PLANE_N, "learn_seed": (0, 2**31 - 1), "learn_alpha": ALPHAS,
                  "learn_regions": ["base classifier f", "smoothed classifier g"], "learn_flip": (0.0, 0.6),
                  "learn_px_n": PIXEL_N, "learn_px_tau": (0.5, 0.99), "learn_px_alpha": ALPHAS,
                  "learn_px_correction": ["holm", "bonferroni"], "learn_px_seed": (0, 2**31 - 1),
                  "learn_ratio": (0.0, 1.99), "learn_d": DIMS, "learn_view": ["d = 2", "d = 3"],
                  "learn_tk_eps": (0.0, 1.0), "learn_tk_sigma": (0.05, 1.0), "learn_tk_k": (1, 32),
                  "learn_tk_width": (0.0, 0.2), "learn_rd_sigma": (0.05, 1.0), "learn_rd_n": PIXEL_N,
                  "learn_rd_alpha": ALPHAS, "learn_rd_tau": (0.5, 0.99)})
share.publish("learn_")

st.title("Learn")
st.caption("Five small, exact toys that show what the certificates on the other pages mean. No model is used; "
           "everything is recomputed instantly as you move a slider.")


def _fmt_radius(radius: float | None) -> str:
    return "abstain" if radius is None else f"{radius:.3f}"


@st.cache_data(show_spinner=False, max_entries=32)
def _smoothed_regions(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    return teaching.smoothed_class_grid(teaching.TOY_CLASSIFIER, sigma, resolution=51, samples=300)


def smoothing_lesson() -> None:
    st.markdown("A base classifier *f* splits the plane into regions. Randomized smoothing predicts, at *x*, the "
                "class *f* gives most often to *x + noise*; if that class wins with probability $p_A > 1/2$, no "
                "ℓ2 perturbation smaller than $\\sigma\\,\\Phi^{-1}(p_A)$ can change the smoothed prediction. From "
                "samples we only know a lower confidence bound on $p_A$, so the certified disc uses that bound, or the "
                "point abstains.")
    st.latex(r"g(x)=\arg\max_c \Pr_{z\sim\mathcal N(0,I)}[f(x+\sigma z)=c],\qquad "
             r"R=\sigma\,\Phi^{-1}(\underline{p_A}),\qquad "
             r"R_\tau=\sigma\,\Phi^{-1}(\tau)\ \text{if}\ \Pr[\mathrm{Bin}(n,\tau)\ge k_A]\le\alpha")
    c1, c2, c3, c4 = st.columns(4)
    x1 = c1.slider("x₁ (horizontal)", -2.5, 2.5, step=0.05, key="learn_x1")
    x2 = c1.slider("x₂ (vertical)", -2.5, 2.5, step=0.05, key="learn_x2")
    sigma = c2.slider("σ (noise level)", 0.05, 1.5, step=0.05, key="learn_sigma")
    tau = c2.slider("τ (vote threshold)", 0.5, 0.99, step=0.01, key="learn_tau")
    n = c3.select_slider("n (samples)", PLANE_N, key="learn_n")
    alpha = c3.select_slider("α (error probability)", ALPHAS, key="learn_alpha", format_func=lambda a: f"{a:g}")
    seed = int(c4.number_input("seed", 0, 2**31 - 1, key="learn_seed"))
    regions = c4.radio("colour the plane by", ["base classifier f", "smoothed classifier g"], key="learn_regions")
    result = teaching.smooth_on_plane(teaching.TOY_CLASSIFIER, (x1, x2), sigma, n, tau, alpha, seed)
    names = teaching.TOY_CLASSIFIER.names
    base_class = names[int(teaching.TOY_CLASSIFIER.predict(np.array([x1, x2])))]
    m1, m2, m3, m4, m5 = st.columns(5)
    m1.metric("smoothed class g(x)", names[result.top_class], help=f"the base classifier says f(x) = {base_class}")
    m2.metric("p̂_A (votes / n)", f"{result.p_hat:.3f}", help=f"{result.votes} of {n} samples")
    m3.metric("p_A lower bound", f"{result.p_lower:.3f}", help=f"one-sided Clopper–Pearson at α = {alpha:g}")
    m4.metric("certified radius σ·Φ⁻¹(p_A)", _fmt_radius(result.cohen_radius),
              help="abstain when the lower bound on p_A is not above 1/2")
    m5.metric("τ-form radius σ·Φ⁻¹(τ)", _fmt_radius(result.tau_radius),
              help=f"p-value {result.tau_pvalue:.2g}: abstain unless the votes show p_A > τ at level α")
    if regions == "base classifier f":
        axis, background = teaching.base_class_grid(teaching.TOY_CLASSIFIER)
    else:
        axis, background = _smoothed_regions(float(sigma))
    st.plotly_chart(tv.plane_figure(teaching.TOY_CLASSIFIER, result, axis, background, regions), key="learn_plane")
    st.caption("The τ-form is the one the certified-pixels page uses for every pixel: it certifies the fixed radius "
               "σ·Φ⁻¹(τ) whenever the votes beat τ, so a larger τ buys a larger radius at the price of more "
               "abstentions. Put x on the island (x = (1.2, 1.2)) and raise σ past about 0.4: the smoothed "
               "classifier no longer sees it.")


def pixel_lesson() -> None:
    st.markdown("An explanation is certified pixel by pixel. Each pixel's answer — *is it in the top 25%?* — is "
                "re-computed on noisy copies; a pixel is certified when its usual answer wins clearly more than a "
                "fraction τ of the votes. With 64 pixels tested at once, Holm's correction keeps the chance of *any* "
                "wrong certificate below α; pixels that fail abstain, and are shown as such.")
    st.latex(r"p_i=\Pr[\mathrm{Bin}(n,\tau)\ge k_i],\qquad \text{Holm: reject } p_{(1)},\dots,p_{(j)} "
             r"\text{ while } p_{(j)}\le \frac{\alpha}{m-j+1}")
    c1, c2, c3, c4 = st.columns(4)
    flip = c1.slider("flip probability at the top-K border", 0.0, 0.6, step=0.01, key="learn_flip")
    n = c2.select_slider("n (noisy copies)", PIXEL_N, key="learn_px_n")
    tau = c2.slider("τ (vote threshold)", 0.5, 0.99, step=0.01, key="learn_px_tau")
    alpha = c3.select_slider("α (error probability)", ALPHAS, key="learn_px_alpha", format_func=lambda a: f"{a:g}")
    correction = c3.radio("correction", ["holm", "bonferroni"], key="learn_px_correction", horizontal=True)
    seed = int(c4.number_input("seed", 0, 2**31 - 1, key="learn_px_seed"))
    cert = teaching.pixel_toy_certificate(flip, n, tau, alpha, seed, correction=correction)
    n_min = cert.samples_needed
    if n < n_min:
        st.warning(f"With n = {n} nothing can be certified: even {n} votes out of {n} give the p-value τⁿ, "
                   f"above α/{cert.pvalues.size} at τ = {tau:g}, α = {alpha:g}. It needs n ≥ {n_min}.")
    m1, m2, m3 = st.columns(3)
    m1.metric("certified top-K", int((cert.classes == 1).sum()), help=f"of {int(cert.clean_top.sum())} clean top-K")
    m2.metric("certified not top-K", int((cert.classes == 0).sum()))
    m3.metric("abstain", int((cert.classes == -1).sum()))
    a = teaching.toy_attribution()
    top_text = np.where(cert.clean_top, "top", "")
    g1, g2, g3 = st.columns(3)
    g1.plotly_chart(tv.value_grid_figure(a, "clean attribution (top 25% marked)", "Greys", 0, 1, top_text),
                    key="learn_px_attr")
    g2.plotly_chart(tv.value_grid_figure(cert.flip_prob, "flip probability", "Oranges", 0, 1), key="learn_px_flip")
    g3.plotly_chart(tv.value_grid_figure(cert.vote_fraction, f"votes for the mode k/n (n = {n})", "Blues", 0, 1),
                    key="learn_px_votes")
    h1, h2, h3 = st.columns(3)
    h1.plotly_chart(tv.pvalue_grid_figure(cert.pvalues), key="learn_px_p")
    h2.plotly_chart(tv.holm_staircase_figure(cert), key="learn_px_holm")
    h3.plotly_chart(tv.pixel_decision_figure(cert), key="learn_px_decision")


def overlap_lesson() -> None:
    st.markdown("Uniform smoothing averages an attribution over a ball of radius r around x. Moving x by ε only "
                "swaps the part of the ball the two positions do not share, so the change is bounded by that part's "
                "volume. In d dimensions almost all of a ball's volume lies near its surface, and the shared part "
                "collapses unless ε/r shrinks like 1/√d.")
    st.latex(r"\frac{V_\cap}{V}=I_{1-(\varepsilon/2r)^2}\!\Big(\frac{d+1}{2},\frac12\Big),\qquad "
             r"\|h(x+\delta)-h(x)\|\le M\,\frac{V_U}{V}=2M\Big(1-\frac{V_\cap}{V}\Big)")
    c1, c2, c3 = st.columns([2, 3, 1])
    ratio = c1.slider("ε / r", 0.0, 1.99, step=0.01, key="learn_ratio")
    d = c2.select_slider("dimension d", DIMS, key="learn_d")
    view = c3.radio("drawing", ["d = 2", "d = 3"], key="learn_view")
    fraction = teaching.overlap_versus_dimension(ratio, [d])[0]
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("shared volume in d = 2", f"{teaching.overlap_versus_dimension(ratio, [2])[0]:.4f}")
    m2.metric(f"shared volume V∩/V in d = {d}", f"{fraction:.4g}")
    m3.metric("bound factor V_U/V", f"{teaching.bound_factor(d, ratio):.4g}",
              help="‖h(x+δ) − h(x)‖ ≤ M times this (computed without cancellation when V∩/V is near 1)")
    m4.metric(f"ε/r keeping half the volume (d = {d})", f"{teaching.eps_over_r_for_overlap(d, 0.5):.4g}")
    left, right = st.columns(2)
    drawing = tv.lens_figure(1.0, ratio) if view == "d = 2" else tv.spheres_figure(1.0, ratio)
    left.plotly_chart(drawing, key="learn_ball_drawing")
    dims = teaching.dimension_ladder()
    right.plotly_chart(tv.overlap_versus_dimension_figure(dims, teaching.overlap_versus_dimension(ratio, dims),
                                                          ratio, d, fraction), key="learn_ball_curve")


def topk_lesson() -> None:
    st.markdown("Sparsified SmoothGrad averages, over noisy copies, maps that keep only the most salient pixels; "
                "each averaged value ḡᵢ lies in [0, 1]. Such an average can only move so fast: after a perturbation "
                "of size ε it stays in a known interval. A top-K pixel is certified when fewer than K other pixels "
                "can climb as high as it can fall.")
    st.latex(r"\bar g_i(x+\delta)\in\Big[\Phi\big(\Phi^{-1}(L_i)-\tfrac{\varepsilon}{\sigma}\big),\ "
             r"\Phi\big(\Phi^{-1}(U_i)+\tfrac{\varepsilon}{\sigma}\big)\Big]\quad \text{for all } "
             r"\|\delta\|_2\le\varepsilon")
    c1, c2, c3, c4 = st.columns(4)
    eps = c1.slider("ε (perturbation size)", 0.0, 1.0, step=0.01, key="learn_tk_eps")
    sigma = c2.slider("σ (smoothing noise)", 0.05, 1.0, step=0.05, key="learn_tk_sigma")
    k = c3.slider("K (top pixels)", 1, 32, key="learn_tk_k")
    width = c4.slider("estimation error ± (L, U)", 0.0, 0.2, step=0.01, key="learn_tk_width",
                      help="0 treats ḡ as known exactly; on the real page L and U are confidence bounds")
    toy = teaching.topk_toy_certificate(eps, sigma, k, width)
    eps_axis = teaching.toy_eps_axis(sigma, eps)
    curve = teaching.topk_overlap_curve(eps_axis, sigma, k, width)
    m1, m2 = st.columns(2)
    m1.metric("certified top-K overlap", f"{toy.overlap:.0%}")
    m2.metric("certified pixels", f"{int(toy.certified.sum())} of {k}")
    g1, g2, g3 = st.columns(3)
    g1.plotly_chart(tv.topk_map_figure(toy), key="learn_tk_map")
    g2.plotly_chart(tv.topk_intervals_figure(toy), key="learn_tk_intervals")
    g3.plotly_chart(tv.overlap_curve_figure(eps_axis, curve, eps, toy.overlap), key="learn_tk_curve")


def radius_lesson() -> None:
    st.markdown("The per-pixel certificate above asks one question: *does the pixel keep its class up to the radius "
                "R(τ) = σ·Φ⁻¹(τ)?* The same votes answer a better one: *how far does it keep it?* A lower confidence "
                "bound p̲ᵢ on the probability of the pixel's usual answer gives its own radius Rᵢ. For the whole map "
                "to be read at once — any ε, chosen after looking — every bound must hold together: each is taken "
                "at α/m over the m pixels (Bonferroni). The curve below shows every radius at once; the one point "
                "that τ picks is the dashed line. That is why the curve, not one number, is the honest summary.")
    st.latex(r"R_i=\sigma\,\Phi^{-1}(\underline{p}_i),\qquad \underline{p}_i=\mathrm{Beta}^{-1}\!\Big("
             r"\tfrac{\alpha}{m};\,k_i,\,n-k_i+1\Big)\quad(\text{no radius when }\underline{p}_i\le\tfrac12)")
    c1, c2, c3, c4 = st.columns(4)
    sigma = c1.slider("σ (noise level)", 0.05, 1.0, step=0.05, key="learn_rd_sigma")
    n = c2.select_slider("n (noisy copies)", PIXEL_N, key="learn_rd_n")
    alpha = c3.select_slider("α (error probability)", ALPHAS, key="learn_rd_alpha", format_func=lambda a: f"{a:g}")
    tau = c4.slider("τ (marks R(τ) on the curve)", 0.5, 0.99, step=0.01, key="learn_rd_tau")
    toy = teaching.radius_toy(n, sigma, alpha, tau)
    m1, m2 = st.columns(2)
    m1.metric("pixels with a radius", f"{toy.with_radius} of {toy.pixels}")
    m2.metric(f"certified at R(τ) = {toy.r_tau:.3f}", toy.certified_at_tau,
              help="the same pixels Bonferroni certifies at τ")
    radius_map, radius_curve = tv.radius_toy_figures(toy)
    g1, g2 = st.columns(2)
    g1.plotly_chart(radius_map, key="learn_rd_map")
    g2.plotly_chart(radius_curve, key="learn_rd_curve")


LESSONS = {"Smoothing in 2-D": smoothing_lesson, "A per-pixel certificate": pixel_lesson,
           "A pixel's own radius": radius_lesson,
           "Ball overlap vs dimension": overlap_lesson, "Top-K overlap": topk_lesson}

for tab, (title, lesson) in zip(st.tabs(list(LESSONS)), LESSONS.items()):
    with tab:
        try:
            lesson()
        except CertlibError as exc:  # sliders keep inputs valid; this only guards edits of session state
            st.error(f"{title}: {exc}")
