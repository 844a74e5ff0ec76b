"""`certlib.certify_topk`: Sparsified SmoothGrad's certified top-K (Levine et al. 2019; design §5) in one call —
`sparse_smoothgrad.sample_smoothgrad` then `sparse_smoothgrad.certify_topk`, as the Sparsified SmoothGrad page."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from certlib import stats, validate
from certlib.data import images
from certlib.sparse import viz as sparse_viz
from certlib.sparse import smoothgrad as S
from certlib.api import common, store
from certlib.api.sources import prepared

store.storable(S.SmoothGradSamples)
store.storable(S.TopKCertificate)


@store.storable
@dataclass(frozen=True, eq=False)
class TopKResult(common.Saving):
    """The top K% pixels of the smoothed sparsified map ĝ(x) and which of them are certified: with probability
    ≥ 1 − α, every pixel of `certified_mask` stays in the top K of ĝ(x + δ) for every ‖δ‖₂ ≤ `radius` (= ε)."""

    samples: S.SmoothGradSamples       # the sampled sums (every sparsification level κ of the page)
    certificate: S.TopKCertificate     # the engine's decision at (variant, κ, K, ε, α)
    input: np.ndarray                  # [C,H,W] float32
    config: dict
    prediction: None = None            # SmoothGrad's sampler counts no class votes: no prediction certificate

    @property
    def top_mask(self) -> np.ndarray:
        return self.certificate.top_mask

    @property
    def certified_mask(self) -> np.ndarray:
        return self.certificate.certified_mask

    @property
    def radius(self) -> float:
        return self.certificate.eps

    @property
    def overlap(self) -> float:
        """Certified share of the top K at ε, per pixel (`certified_topk_overlap`)."""
        return self.certificate.overlap

    def redecide(self, eps: float | None = None, k: float | None = None, level: float | None = None,
                 variant: str | None = None, alpha: float | None = None, bound: str | None = None) -> "TopKResult":
        """The certificate of the same samples at another ε, K%, sampled κ, variant, α or bound (no sampling)."""
        c = self.config
        new = {"eps": eps, "k": k, "level": level, "variant": variant, "alpha": alpha, "bound": bound}
        config = {**c, **{name: value for name, value in new.items() if value is not None}}
        cert = S.certify_topk(self.samples, config["variant"], config["level"], config["k"], config["eps"],
                              config["alpha"], config["bound"])
        return replace(self, certificate=cert, config=config)

    def verdict(self) -> str:
        cert = self.certificate
        return (f"{cert.overlap:.1%} of the top {self.config['k']:g}% ({cert.k:,} pixels) are certified to stay in "
                f"the top K for every ‖δ‖₂ ≤ ε = {cert.eps:.4g} (per pixel; paired count {cert.paired_overlap:.1%}), "
                f"with probability ≥ {1 - cert.alpha:.4g}.")

    def overlay(self) -> np.ndarray:
        """uint8 [H,W,4] RGBA: the top-K pixels in blue (certified at ε) or vermillion (not certified)."""
        base = images.to_display_rgb(self.input)
        return common.rgba(sparse_viz.topk_certified_overlay(base, self.top_mask, self.certified_mask))

    def figure(self):
        """The overlay; hover shows ĝ, its confidence interval and each pixel's certified radius."""
        cert = self.certificate
        return sparse_viz.topk_overlay_figure(self.overlay()[..., :3], cert.mean, cert.lower, cert.upper, cert.radii,
                                              cert.top_mask)

    def summary(self) -> dict[str, Any]:
        cert, c = self.certificate, self.config
        return {"certificate": "topk", "model": c["model"].get("key") or c["model"].get("class"),
                "image": c["image"]["key"], "target": c["target"], "target_name": c["target_name"],
                "method": c["method"], "sigma": cert.sigma, "n": self.samples.n, "seed": c["seed"],
                "variant": cert.variant, "level": cert.level, "k_percent": c["k"], "k": cert.k, "eps": cert.eps,
                "alpha": cert.alpha, "bound": cert.bound, "overlap": cert.overlap,
                "paired_overlap": cert.paired_overlap, "verdict": self.verdict()}

    def _repr_html_(self) -> str:
        c = self.config
        rows = {"target": f"{c['target']} ({c['target_name']})", "method": c["method"],
                "σ, n, κ": f"{self.certificate.sigma:g}, {self.samples.n}, {self.certificate.level:g}%",
                "K, ε": f"{c['k']:g}%, {self.radius:.4g}", "certified overlap": f"{self.overlap:.1%}"}
        return common.html_view(self.overlay(), self.verdict(), rows, "Sparsified SmoothGrad: certified top K")


def certify_topk(model: Any, image: Any, *, method: Any = "gradient", target: int | None = None,
                 sigma: float = 0.25, k: float = 10.0, eps: float = 0.02, n: int = 500, level: float = 20.0,
                 variant: str = "sparsified", alpha: float = 1e-3, bound: str = "bernstein", seed: int = 0,
                 device: str | None = None, batch_size: int | str = "auto", progress: bool = True,
                 normalize: tuple[Sequence[float], Sequence[float]] | None = None,
                 input_size: Sequence[int] | None = None, in_channels: int | None = None,
                 class_names: Sequence[str] | None = None) -> TopKResult:
    """Certify which of the top `k` percent of pixels of Sparsified SmoothGrad (each noisy map keeps its top `level`
    percent, "sparsified" → 1 or "scaled" by magnitude) stay in the top k for every ‖δ‖₂ ≤ `eps`, at confidence
    1 − α (`bound`: the scaled variant's interval, "bernstein" or "hoeffding"). `model`, `image`, `method` and the
    other arguments are those of `certify_pixels`."""
    validate.sigma(sigma)
    validate.count("n", n)
    validate.eps(eps)
    stats.check_scalar_alpha(alpha)
    common.choice("variant", variant, S.VARIANTS)
    common.choice("bound", bound, S.SCALED_BOUNDS)
    validate.k_percents((k,), "k")
    validate.k_percents((level,), "level")
    levels = S.DEFAULT_LEVELS if float(level) in S.DEFAULT_LEVELS else (*S.DEFAULT_LEVELS, float(level))
    bs = common.batch_size_arg(batch_size)
    with prepared(model, image, method, target, seed=seed, device=device, normalize=normalize,
                  input_size=input_size, in_channels=in_channels, class_names=class_names) as subject:
        bar = common.Progress(progress, "certify_topk")
        try:
            samples = S.sample_smoothgrad(subject.attribute, subject.x, sigma, n, levels, seed=seed, batch_size=bs,
                                          progress=bar)
        finally:
            bar.close()
    config = common.run_config("topk", subject.described, sigma=float(sigma), n=int(n), seed=int(seed),
                               variant=variant, level=float(level), k=float(k), eps=float(eps), alpha=float(alpha),
                               bound=bound, batch_size=bs)
    cert = S.certify_topk(samples, variant, level, k, eps, alpha, bound)
    return TopKResult(samples, cert, subject.x[0].detach().cpu().numpy(), config)
