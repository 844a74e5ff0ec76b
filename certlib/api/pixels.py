"""`certlib.certify_pixels`: the pixel-level certificate (Anani et al. 2025; design §3, §15) in one call, and its
result. The call is the engine's own pipeline — `sampling.sample_topk_counts` and `pixel_cert.decide` for the fixed-n
test, `progressive.certify_progressively` and `progressive.decide_trajectory` for the anytime-valid one,
`prediction_cert.from_counts` for the prediction — the same calls, in the same order, as the Certified pixels page.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from certlib.pixel import (guarantee, cert as pixel_cert, radius as pixel_radius, viz as pixel_viz, prediction_cert,
                           progressive, radius_viz)
from certlib.data import images
from certlib import stats, validate
from certlib.smoothing import sampling
from certlib.api import common, store
from certlib.api.sources import prepared
from certlib.errors import CertlibError
from certlib.pixel.cert import PixelCertificate
from certlib.pixel.prediction_cert import PredictionCertificate
from certlib.pixel.progressive import Trajectory
from certlib.smoothing.sampling import TopKCounts

MODES = ("fixed", "anytime")
for _cls in (TopKCounts, Trajectory, PixelCertificate, PredictionCertificate):
    store.storable(_cls)


@store.storable
@dataclass(frozen=True, eq=False)
class PixelResult(common.Saving):
    """A pixel certificate with everything needed to show it, re-decide it and save it.

    `classes` is [K,H,W] (one map per top-K% level, in `k_percents` order, ascending), or [H,W] when one level was
    asked for as a number: 1 = certified in the top K%, 0 = certified not in it, −1 = abstain. Each certified pixel
    keeps its class for every ‖δ‖₂ ≤ `radius` in the model's [0,1] input, all at once with probability ≥ 1 − α."""

    certificate: PixelCertificate          # the engine's decision: classes, p-values, radius, τ, α, shares
    counts: TopKCounts                     # the sampled statistics `redecide` reads (no resampling)
    prediction: PredictionCertificate | None   # Cohen et al.'s CERTIFY of the model's prediction, same copies
    input: np.ndarray                      # [C,H,W] float32: the model input that was certified
    config: dict                           # JSON-able: model, image, target, method and every parameter
    trajectory: Trajectory | None = None   # mode "anytime": the counts at every frame (the running minimum needs them)
    stop: str | None = None                # mode "anytime": why sampling ended (progressive.STOP_REASONS)

    @property
    def classes(self) -> np.ndarray:
        c = self.certificate.classes
        return c[0] if self.config.get("single_level") else c

    @property
    def radius(self) -> float:
        return self.certificate.radius

    @property
    def k_percents(self) -> tuple[float, ...]:
        return self.counts.k_percents

    @property
    def pvalues(self) -> np.ndarray:
        return self.certificate.pvalues

    @functools.cached_property
    def radii(self) -> pixel_radius.PixelRadii:
        """Every test's own certified radius (design §18): `.radii` [K,H,W] (NaN = no radius), `.classes`,
        `.certified_at(eps)`, all valid together at 1 − α — Clopper–Pearson at α/m for the fixed-n test, the
        running maximum of anytime-valid bounds (and the budget's look) for the anytime one. From the stored counts."""
        alpha = self.certificate.alpha
        if self.trajectory is not None:
            return pixel_radius.trajectory_radii(self.trajectory, alpha, self.k_percents)
        return pixel_radius.fixed_n_radii(self.counts, alpha)

    def radius_curve(self, eps: Sequence[float] | None = None) -> dict[str, np.ndarray]:
        """The share certified against ε per level: {"eps", "top" (the level's top-K pixels certified in the top K),
        "tests" (all its tests, either class)}, arrays [len(eps), K]; ε from 0 past the largest radius by default."""
        return self.radii.curve(radius_viz.eps_grid(self.radii) if eps is None else eps)

    def redecide(self, tau: float | None = None, alpha: float | None = None, correction: str | None = None,
                 k_percents: Sequence[float] | float | None = None,
                 alpha_prediction: float | None = None) -> "PixelResult":
        """The certificate of the same samples at another τ, α, correction or subset of the sampled levels: a new
        result, computed from the stored counts (milliseconds; nothing is sampled)."""
        c = self.config
        tau = c["tau"] if tau is None else tau
        alpha = c["alpha"] if alpha is None else alpha
        correction = c["correction"] if correction is None else correction
        ks, single = _levels(c["k_percents"] if k_percents is None else k_percents)
        if k_percents is None:
            single = c.get("single_level", False)
        alpha_pred = alpha_prediction if alpha_prediction is not None else c.get("alpha_prediction_given")
        counts = self.counts.select_levels(ks)
        cert = _decide(counts, self.trajectory, c["mode"], tau, alpha, correction)
        prediction = prediction_cert.from_counts(counts, alpha if alpha_pred is None else alpha_pred, c["mode"])
        config = {**c, "tau": float(tau), "alpha": float(alpha), "correction": correction, "k_percents": list(ks),
                  "single_level": single, "alpha_prediction_given": alpha_pred}
        return replace(self, certificate=cert, counts=counts, prediction=prediction, config=config)

    def verdict(self) -> guarantee.Verdict:
        """One sentence of what is certified (the page's headline), and whether it is a warning."""
        cert = self.certificate
        shortfall = progressive.too_few_samples(self.config["mode"], self.config["n"], cert.tau, cert.alpha,
                                                cert.num_tests)
        return guarantee.verdict(cert.classes, self.k_percents, cert.radius,
                                 cert.radius / math.sqrt(self.input.size), shortfall, self.counts.normalisation)

    def overlay(self) -> np.ndarray:
        """uint8 [H,W,4] RGBA: the input with certified top-K pixels in blue (darker = smaller K), abstaining pixels
        in orange, certified-not-top left as the image; greyed when the certificate is vacuous (as the page)."""
        rgb = pixel_viz.certified_overlay(images.to_display_rgb(self.input), self.certificate.classes,
                                          self.k_percents)
        return common.rgba(pixel_viz.greyed(rgb) if self.verdict().vacuous else rgb)

    def figure(self, kind: str = "overlay"):
        """A plotly figure: "overlay" (hover shows each level's vote share), "bars" (certified shares per K),
        "radius_map" (each pixel's own radius, smallest level) or "radius_curve" (share certified against ε)."""
        kind = common.choice("kind", kind, ("overlay", "bars", "radius_map", "radius_curve"))
        if kind == "bars":
            return pixel_viz.certificate_bars(self.k_percents, self.certificate.fractions)
        if kind == "radius_map":
            return radius_viz.radius_map(self.radii, self.k_percents[0])
        if kind == "radius_curve":
            return radius_viz.radius_curve({"": self.radii}, self.radius, self.k_percents)
        cert = self.certificate
        return pixel_viz.overlay_figure(self.overlay()[..., :3], self.counts.top_frequency, self.k_percents,
                                        pixel_viz.certified_levels(cert.classes, self.k_percents),
                                        f"certified for every ‖δ‖₂ ≤ R = {cert.radius:.3g}")

    def summary(self) -> dict[str, Any]:
        """The numbers of the result as a plain dict (JSON-able)."""
        cert, c = self.certificate, self.config
        shares = {name.replace(" ", "_").replace("-", "_"): common.rounded(v, self.k_percents)
                  for name, v in cert.fractions.items()}
        return {"certificate": "pixels", "model": c["model"].get("key") or c["model"].get("class") or
                c["model"].get("name"), "image": c["image"]["key"], "target": c["target"],
                "target_name": c["target_name"], "method": c["method"], "mode": c["mode"], "sigma": c["sigma"],
                "tau": cert.tau, "alpha": cert.alpha, "correction": cert.correction, "n": self.counts.n,
                "n0": self.counts.n0, "seed": c["seed"], "k_percents": list(self.k_percents),
                "radius": cert.radius, **shares,
                "radii": dict(zip(map(str, self.k_percents), pixel_radius.level_columns(self.radii))),
                "prediction": _prediction_summary(self.prediction, c),
                "verdict": self.verdict().text, **({"stop": self.stop} if self.stop else {})}

    def _repr_html_(self) -> str:
        said = self.verdict()
        rows = {"target": f"{self.config['target']} ({self.config['target_name']})", "method": self.config["method"],
                "test": f"{self.config['mode']}, n = {self.counts.n}, n0 = {self.counts.n0}",
                "σ, τ, α": f"{self.certificate.sigma:g}, {self.certificate.tau:g}, {self.certificate.alpha:g}",
                "R": f"{self.radius:.4g}", "prediction": _prediction_text(self.prediction, self.config)}
        return common.html_view(self.overlay(), ("⚠ " if said.amber else "") + said.text, rows, "Certified pixels")


def _prediction_summary(pred: PredictionCertificate | None, config: dict) -> dict | None:
    if pred is None:
        return None
    return {"class": pred.top_class, "certified": pred.certified, "radius": pred.radius, "p_lower": pred.p_lower,
            "votes": pred.votes, "n": pred.n, "alpha": pred.alpha}


def _prediction_text(pred: PredictionCertificate | None, config: dict) -> str:
    if pred is None:
        return "not available (no classifier)"
    said = f"class {pred.top_class}"
    return said + (f", certified up to R = {pred.radius:.3g}" if pred.certified else ", not certified")


def _levels(k_percents: Sequence[float] | float) -> tuple[tuple[float, ...], bool]:
    """(the levels ascending, whether one level was given as a number: then `classes` is [H,W])."""
    single = isinstance(k_percents, (int, float, np.integer, np.floating)) and not isinstance(k_percents, bool)
    ks = validate.k_percents((k_percents,) if single else k_percents)
    if len(set(ks)) != len(ks):
        raise CertlibError(f"k_percents must not repeat a level, got {k_percents!r}")
    return tuple(sorted(ks)), single


def _decide(counts: TopKCounts, trajectory: Trajectory | None, mode: str, tau: float, alpha: float,
            correction: str) -> PixelCertificate:
    """The page's decision: the fixed-n test on the counts, or the anytime run's whole trajectory."""
    if trajectory is None:
        return progressive.decide(counts, mode, tau, alpha, correction)
    return progressive.decide_trajectory(trajectory, tau, alpha, correction, counts.k_percents)


def _check(sigma, tau, alpha, n, n0, mode, correction, normalisation, alpha_prediction) -> None:
    """Every argument checked before a model is loaded or a copy sampled."""
    validate.sigma(sigma)
    validate.tau(tau)
    stats.check_scalar_alpha(alpha)
    validate.count("n", n)
    validate.count("n0", n0)
    common.choice("mode", mode, MODES)
    common.choice("correction", correction, pixel_cert.CORRECTIONS)
    pixel_cert.check_normalisation(normalisation)
    if alpha_prediction is not None:
        stats.check_scalar_alpha(alpha_prediction)
    if progressive.too_few_samples(mode, n, tau, alpha, 1):
        # not even one pixel tested alone could pass: an n that cannot certify anything at this α
        raise CertlibError(f"n = {n} is too small for α = {alpha:g} at τ = {tau:g}: even {n} agreeing votes of {n} "
                           f"give a p-value above α (n ≥ {stats.min_samples_to_certify(tau, alpha, 1)} needed)")


def certify_pixels(model: Any, image: Any, *, method: Any = "gradcam", target: int | None = None,
                   sigma: float = 0.25, tau: float = 0.75, alpha: float = 1e-3, n: int = 256, n0: int = 32,
                   k_percents: Sequence[float] | float = (50, 25, 5), mode: str = "fixed", seed: int = 0,
                   device: str | None = None, batch_size: int | str = "auto", progress: bool = True,
                   normalize: tuple[Sequence[float], Sequence[float]] | None = None, correction: str = "holm",
                   normalisation: str = pixel_cert.DEFAULT_NORMALISATION, alpha_prediction: float | None = None,
                   input_size: Sequence[int] | None = None, in_channels: int | None = None,
                   class_names: Sequence[str] | None = None) -> PixelResult:
    """Certify which pixels are in the top K% of `model`'s explanation of `image` (design §3).

    model: a registry key ("efficientnet_lite0", "digits_cnn", "resnet18" when its weights are on disk), any
    `torch.nn.Module` (trusted, run in this process; timm and torchvision models bring their own normalisation,
    others take [0,1] pixels unless `normalize=(mean, std)`), or a callable attribute(x_batch, target) -> maps.
    image: a bundled key ("chelsea", "digit:2"), a path, a PIL image, a numpy array or a tensor.
    method: a key of certlib.attributions.methods.METHODS (or "gradient"), a captum Attribution, a torch-cam CAM, or an
    object called as pytorch-grad-cam's cam(input_tensor=..., targets=[...]).
    mode "fixed": n estimation copies and the exact binomial test; "anytime": n is the budget n_max, the run stops
    when every pixel test is decided, and the certificate is valid whenever it stops (design §15).
    Raises CertlibError (a ValueError) naming a bad argument, before any sampling."""
    _check(sigma, tau, alpha, n, n0, mode, correction, normalisation, alpha_prediction)
    ks, single = _levels(k_percents)
    bs = common.batch_size_arg(batch_size)
    with prepared(model, image, method, target, seed=seed, device=device, normalize=normalize,
                  input_size=input_size, in_channels=in_channels, class_names=class_names) as subject:
        shortfall = progressive.too_few_samples(mode, n, tau, alpha, int(np.prod(subject.x.shape[-2:])) * len(ks))
        if shortfall:        # as the page: say so before sampling; the result's verdict says it again
            warnings.warn(shortfall, UserWarning, stacklevel=2)
        bar = common.Progress(progress, "certify_pixels")
        try:
            counts, trajectory, stop = _sample(subject, sigma, n, n0, ks, mode, seed, bs, bar, normalisation,
                                               tau, alpha, correction)
        finally:
            bar.close()
    cert = _decide(counts, trajectory, mode, tau, alpha, correction)
    prediction = prediction_cert.from_counts(counts, alpha if alpha_prediction is None else alpha_prediction, mode)
    config = common.run_config("pixels", subject.described, sigma=float(sigma), tau=float(tau), alpha=float(alpha),
                               n=int(n), n0=int(n0), k_percents=list(ks), single_level=single, mode=mode,
                               seed=int(seed), batch_size=counts.extra.get("batch_size"), correction=correction,
                               normalisation=normalisation, alpha_prediction_given=alpha_prediction)
    return PixelResult(cert, counts, prediction, subject.x[0].detach().cpu().numpy(), config, trajectory, stop)


def _sample(subject, sigma, n, n0, ks, mode, seed, bs, bar, normalisation, tau, alpha, correction):
    """(counts, trajectory or None, stop reason or None): the page's sampling for either test."""
    if mode == "fixed":
        counts = sampling.sample_topk_counts(subject.attribute, subject.x, sigma, n0, n, ks, seed=seed,
                                             batch_size=bs, progress=bar, normalisation=normalisation,
                                             logits=subject.logits)
        return counts, None, None
    rule = progressive.StopRule(tau, alpha, ks, correction)
    last = None
    for last in progressive.certify_progressively(subject.attribute, subject.x, sigma, rule, n_max=n, n0=n0,
                                                  k_percents=ks, seed=seed, logits=subject.logits,
                                                  normalisation=normalisation, batch_size=bs, progress=bar):
        pass
    return last.counts, last.trajectory, last.stop
