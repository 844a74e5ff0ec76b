"""Choices, help texts and the controls shared by the pages, so the same slider offers the same values and says
the same thing everywhere. Every control's tooltip says what it does and whether moving it samples again
("resamples": noisy copies are drawn, with a progress bar and an expected time) or only re-decides from what is
cached (instant). One name per symbol across pages: τ is always the vote threshold of the pixel certificate;
Levine et al.'s share of pixels kept per noisy map is κ."""
import streamlit as st

from certlib.pixel import cert as pixel_cert
from certlib.smoothing.sampling import DEFAULT_K_PERCENTS

ALPHAS = [0.1, 0.05, 0.01, 1e-3, 1e-4, 1e-5, 1e-6]        # error probabilities offered by every α slider
# The pixel certificate's choices (Certified pixels, Compare, Metrics), as certlib defines them
K_PERCENTS = list(DEFAULT_K_PERCENTS)                     # the top-K% levels that are sampled
CORRECTIONS = list(pixel_cert.CORRECTIONS)
NORMALISATIONS = list(pixel_cert.NORMALISATIONS)
DEFAULT_NORMALISATION = pixel_cert.DEFAULT_NORMALISATION

RESAMPLES = "Changing it samples again (cached afterwards)."
REDECIDES = "Re-decided from the cached samples: instant, nothing is resampled."

HELP: dict[str, str] = {
    # the workbench (sidebar)
    "device": "Where the model runs. Results are cached per device. " + RESAMPLES,
    "model_key": "The classifier to explain. Choosing an ImageNet model switches the image set to photos, a digits "
                 "model to digits. " + RESAMPLES,
    "image_source": "Which images to choose from. Photos select the bundled photo model, digits the digits model "
                    "(uploads keep the model).",
    "image": "The image to explain. " + RESAMPLES,
    "target": "The class whose attribution is explained (defaults to the prediction). " + RESAMPLES,
    "method": "The attribution method whose map is binned, smoothed and certified. " + RESAMPLES,
    # Certified pixels
    "cp_sigma": "σ: standard deviation of the Gaussian noise added to the image, in [0, 1] pixel units. Larger σ "
                "certifies a larger radius R = σ·Φ⁻¹(τ) but blurs the map. " + RESAMPLES,
    "cp_n": "n: noisy copies whose votes estimate each pixel's class probability; more copies certify more pixels "
            "and allow smaller α. " + RESAMPLES,
    "cp_test": "Which test certifies the pixels. Anytime-valid: a valid certificate after every batch that only "
               "grows (a pixel once certified stays certified); you may stop at any moment, and sampling stops by "
               "itself once every pixel is decided or the budget is reached. Half of α goes to the live frames, "
               "half to an exact fixed-n test at the budget, planned before sampling: a run that reaches its budget "
               "ends as strong as the fixed-n test. Fixed n: the exact binomial test at all of α, valid only for an "
               "n chosen before the counts are seen (a new n draws fresh noise). " + RESAMPLES,
    "cp_nmax": "n_max: the budget of estimation copies for the anytime-valid test, fixed before sampling: at it, an "
               "exact fixed-n test adds its certificates. Sampling stops earlier once every pixel is decided; "
               "raising it later continues from where it stopped (with the live test only). " + RESAMPLES,
    "cp_stop": "Stop after the current batch and keep the certificate of the last frame: it holds at α.",
    "cp_continue": "Sample more copies, continuing exactly from the cached counts, until every pixel is decided at "
                   "the current τ, α and levels or the budget n_max is reached.",
    "cp_n0": "n0: separate noisy copies that only choose each pixel's guessed class before the test. " + RESAMPLES,
    "cp_seed": "Seed of the noise: the same seed gives the same samples. " + RESAMPLES,
    "cp_normalisation": "How each noisy attribution map is turned into top-K% membership. 'rank' certifies a "
                        "function of the noisy input alone. " + RESAMPLES,
    "cp_tau": "τ: vote threshold. A pixel is certified when its class wins more than τ of the noisy votes "
              "(with confidence 1 − α); the radius is R = σ·Φ⁻¹(τ), so τ = 0.5 certifies nothing. " + REDECIDES,
    "cp_eps": "ε: an ℓ2 radius in the model's input. A pixel is certified at ε when its own radius R_i (from its "
              "votes; all radii hold together with probability ≥ 1 − α) is at least ε. R(τ) = σ·Φ⁻¹(τ) is the one "
              "radius the decision above uses; the curve shows every radius at once. " + REDECIDES,
    "cp_radius_level": "Which top-K% level the radius map shows. " + REDECIDES,
    "cp_alpha": "α: probability that any certified pixel is wrong (Holm or Bonferroni over all pixels and "
                "levels). " + REDECIDES,
    "cp_levels": "Top-K% levels shown: a pixel is 'top K%' when its |attribution| is among the K% largest. "
                 + REDECIDES,
    "cp_correction": "Multiple-testing correction over all pixels × levels: Holm is never weaker than "
                     "Bonferroni. " + REDECIDES,
    "cp_alpha_pred": "Error probability of the prediction's own certificate (Cohen et al.), on the same copies. "
                     + REDECIDES,
    # Uniform smoothing
    "us_radius": "r: radius of the ℓ2 ball the noise is drawn from uniformly, in [0, 1] pixel units. Larger r "
                 "certifies larger ε but blurs the map. " + RESAMPLES,
    "us_n": "n: noisy copies averaged into ĥ(x). " + RESAMPLES,
    "us_mode": "How every sampled map is bounded by M (the bound needs ‖g‖ ≤ M). normalise: rescaled to norm "
               "M = 1 (only directions count); clip: maps longer than M are shortened to M, M set relative to the "
               "clean map's norm. " + RESAMPLES,
    "us_seed": "Seed of the noise. " + RESAMPLES,
    "us_mfactor": "M as a multiple of the clean map's norm (clip mode). " + RESAMPLES,
    "us_eps": "ε: size ‖δ‖₂ of the perturbation the bound covers, in [0, 1] pixel units. " + REDECIDES,
    "us_T": "Target cosine: the smallest radius r and largest ε that keep the bound above T. " + REDECIDES,
    "us_delta": "δ_conf: probability that the sampling error of ĥ(x) exceeds its bound. " + REDECIDES,
    "us_kind": "Which form of the bound is shown in the headline numbers. " + REDECIDES,
    # Sparsified SmoothGrad
    "sg_sigma": "σ: standard deviation of the Gaussian noise, in [0, 1] pixel units. " + RESAMPLES,
    "sg_n": "n: noisy gradient maps averaged. " + RESAMPLES,
    "sg_seed": "Seed of the noise. " + RESAMPLES,
    "sg_compare": "Other σ to sample and plot beside this one (each cached). " + RESAMPLES,
    "sg_variant": "Sparsified (each noisy map's top κ% set to 1, the rest 0) or scaled (values kept in [0, 1]). "
                  + REDECIDES,
    "sg_level": "κ: share of pixels each noisy map keeps before averaging (Levine et al.'s sparsification; "
                "all levels are sampled together). " + REDECIDES,
    "sg_k": "K: the top-K% pixels of the smoothed map whose overlap is certified. " + REDECIDES,
    "sg_eps": "ε: size ‖δ‖₂ of the perturbation, in [0, 1] pixel units. " + REDECIDES,
    "sg_alpha": "α: probability that the confidence intervals of the smoothed values are wrong. " + REDECIDES,
    "sg_bound": "Confidence bounds for the scaled variant (Clopper–Pearson is used for the binary variant). "
                + REDECIDES,
    "sg_target": "The overlap the 'largest ε' metrics aim for. " + REDECIDES,
    # Compare
    "cmp_mode": "Compare attribution methods on this model, or this method on the three digits checkpoints trained "
                "with noise σ_train = 0, 0.25, 0.5. " + RESAMPLES,
    "cmp_methods": "Two to four methods, each a cell of the grid (cached like a Certified pixels run). " + RESAMPLES,
    "cmp_k": "The top-K% level every cell shows. " + REDECIDES,
    # Metrics
    "mx_methods": "Methods swept; each (method, image, σ) run is sampled once and stored. " + RESAMPLES,
    "mx_images": "The image set of the sweep; grids add localization. " + RESAMPLES,
    "mx_limit": "How many images of the set. " + RESAMPLES,
    "mx_sigmas": "Noise levels swept. " + RESAMPLES,
    "mx_n": "n of every run. " + RESAMPLES,
    "mx_n0": "n0 of every run. " + RESAMPLES,
    "mx_seed": "Seed of every run. " + RESAMPLES,
    "mx_normalisation": "How each noisy map is ranked (see Certified pixels). " + RESAMPLES,
    "mx_tau": "τ: vote threshold of every certificate. " + REDECIDES,
    "mx_alpha": "α of every certificate. " + REDECIDES,
    "mx_levels": "Top-K% levels in the tables and charts. " + REDECIDES,
    "mx_correction": "Multiple-testing correction. " + REDECIDES,
    "mx_replacement": "What deleted pixels become in the deletion and insertion curves: blur (the image blurred "
                      "with σ = 1/4 of its side), zero (black) or mean (the image's mean colour). " + REDECIDES,
    "mx_view_sigma": "σ shown in the bars, curves and ranking. " + REDECIDES,
    "mx_line_k": "Top-K% level of the robustness-vs-σ chart. " + REDECIDES,
}


def help_for(key: str) -> str:
    """The tooltip of the control with this session-state key."""
    return HELP[key]


def normalisation_picker(key: str) -> str:
    """How each noisy map is ranked into top-K% membership (h^K), with a warning under the paper's variant."""
    normalisation = st.selectbox("h^K: how each noisy attribution map is ranked", pixel_cert.NORMALISATIONS,
                                 format_func=pixel_cert.NORMALISATION_LABELS.get, key=key, help=help_for(key))
    if normalisation == "paper":
        st.warning(f"Paper variant — {pixel_cert.PAPER_WARNING}. Use it only to reproduce the paper's numbers.")
    return normalisation
