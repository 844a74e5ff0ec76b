"""`certlib.certify_uniform`: the uniformly smoothed attribution (Wang & Kong 2024; design §4) in one call —
`uniform_sampling.sample_uniform_mean` then `uniform_cert.certify_uniform`, as the Uniform smoothing page."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from certlib import validate, viz
from certlib.uniform import cert as uniform_cert, viz as uniform_viz
from certlib.smoothing import uniform_sampling
from certlib.api import common, store
from certlib.api.sources import prepared
from certlib.uniform.cert import UniformCertificate
from certlib.smoothing.uniform_sampling import SmoothedMap

store.storable(SmoothedMap)
store.storable(UniformCertificate)
DEFAULT_EPS_SHARE = 0.05        # the page's default ε: 5% of the range where any bound is above 0


@store.storable
@dataclass(frozen=True, eq=False)
class UniformResult(common.Saving):
    """ĥ(x), the mean of n bounded attributions uniformly in the ℓ2 ball of radius r, and what it certifies: with
    probability ≥ 1 − δ_conf, cos(h(x), h(x + δ)) ≥ `bound` for every ‖δ‖₂ ≤ `radius` (= ε)."""

    smoothed: SmoothedMap
    certificate: UniformCertificate
    input: np.ndarray                  # [C,H,W] float32
    config: dict
    prediction: None = None            # uniform noise has no class votes: no prediction certificate

    @property
    def mean(self) -> np.ndarray:
        """ĥ(x), [H,W] float64."""
        return self.smoothed.mean

    @property
    def radius(self) -> float:
        """ε, the perturbation size the bound is stated for."""
        return self.config["eps"]

    @property
    def bound(self) -> float:
        """T(ε): the certified lower bound on the cosine (of the config's kind)."""
        return self.certificate.bound(self.radius, self.config["kind"])

    def redecide(self, eps: float | None = None, delta: float | None = None, kind: str | None = None,
                 T: float | None = None) -> "UniformResult":
        """The certificate of the same ĥ at another ε, confidence δ, bound kind or target cosine (no sampling)."""
        c = self.config
        delta = c["delta"] if delta is None else validate.alpha(delta)
        cert = uniform_cert.certify_uniform(self.smoothed, self.certificate.d, delta)
        config = {**c, "eps": c["eps"] if eps is None else validate.eps(eps), "delta": float(delta),
                  "kind": c["kind"] if kind is None else common.choice("kind", kind, uniform_cert.KINDS),
                  "T": c["T"] if T is None else float(T)}
        return replace(self, certificate=cert, config=config)

    def verdict(self) -> str:
        return uniform_cert.guarantee_sentence(self.certificate, self.radius, self.config["kind"])

    def overlay(self) -> np.ndarray:
        """uint8 [H,W,4] RGBA: ĥ(x) in the app's attribution colours."""
        return common.rgba(viz.attribution_rgb(self.mean))

    def figure(self):
        """The certified cosine bounds (proven and as published) against ε, ε of this result marked."""
        axis = uniform_cert.eps_axis(self.certificate.d, self.certificate.r)
        curves = {k: self.certificate.curve(axis, k) for k in uniform_cert.KINDS}
        return uniform_viz.bound_figure(axis, curves, (), marked_eps=self.radius)

    def summary(self) -> dict[str, Any]:
        cert, c = self.certificate, self.config
        return {"certificate": "uniform", "model": c["model"].get("key") or c["model"].get("class"),
                "image": c["image"]["key"], "target": c["target"], "target_name": c["target_name"],
                "method": c["method"], "r": cert.r, "n": cert.n, "M": cert.M, "bound_mode": c["bound_mode"],
                "d": cert.d, "seed": c["seed"], "eps": self.radius, "delta": cert.delta, "kind": c["kind"],
                "h_hat_norm": cert.h_hat_norm, "h_norm_lower": cert.h_norm_lower,
                "cosine_bound": {k: cert.bound(self.radius, k) for k in uniform_cert.KINDS},
                "max_eps_at_T": {"T": c["T"], **{k: cert.max_eps(c["T"], k) for k in uniform_cert.KINDS}},
                "verdict": self.verdict()}

    def _repr_html_(self) -> str:
        c = self.config
        rows = {"target": f"{c['target']} ({c['target_name']})", "method": c["method"],
                "r, n, M": f"{self.certificate.r:g}, {self.certificate.n}, {self.certificate.M:g}",
                "ε": f"{self.radius:.4g}", f"T(ε), {c['kind']}": uniform_cert.bound_text(self.certificate,
                                                                                          self.radius, c["kind"])}
        return common.html_view(self.overlay(), self.verdict(), rows, "Uniformly smoothed attribution ĥ(x)")


def certify_uniform(model: Any, image: Any, *, method: Any = "gradient", target: int | None = None,
                    r: float = 4.0, eps: float | None = None, n: int = 512, M: float = 1.0,
                    bound_mode: str = "normalise", delta: float = uniform_cert.DEFAULT_CONFIDENCE,
                    kind: str = "strict", T: float = 0.9, seed: int = 0, device: str | None = None,
                    batch_size: int | str = "auto", progress: bool = True,
                    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
                    input_size: Sequence[int] | None = None, in_channels: int | None = None,
                    class_names: Sequence[str] | None = None) -> UniformResult:
    """Smooth `model`'s attribution of `image` uniformly over the ℓ2 ball of radius `r` and certify the cosine
    between h(x) and h(x + δ) for every ‖δ‖₂ ≤ eps (default: 5% of the range where a bound is above 0).
    `model`, `image`, `method` and the other arguments are those of `certify_pixels`; `M` bounds every map's norm
    (`bound_mode` "normalise" or "clip"), `delta` is the confidence of ‖h‖'s lower bound, `kind` the bound in the
    headline ("strict": proven; "paper": as published), `T` the target cosine whose largest ε the summary states."""
    validate.radius(r, "r")
    validate.count("n", n)
    validate.positive("M", M)
    common.choice("bound_mode", bound_mode, uniform_sampling.BOUND_MODES)
    validate.alpha(delta)
    common.choice("kind", kind, uniform_cert.KINDS)
    if eps is not None:
        validate.eps(eps)
    bs = common.batch_size_arg(batch_size)
    with prepared(model, image, method, target, seed=seed, device=device, normalize=normalize,
                  input_size=input_size, in_channels=in_channels, class_names=class_names) as subject:
        bar = common.Progress(progress, "certify_uniform")
        try:
            smoothed = uniform_sampling.sample_uniform_mean(subject.attribute, subject.x, r, n, M, bound_mode, seed,
                                                            batch_size=bs, progress=bar)
        finally:
            bar.close()
    d = int(subject.x[0].numel())
    eps = float(eps) if eps is not None else float(DEFAULT_EPS_SHARE * uniform_cert.eps_axis(d, r)[-1])
    config = common.run_config("uniform", subject.described, r=float(r), n=int(n), M=float(M),
                               bound_mode=bound_mode, delta=float(delta), kind=kind, T=float(T), eps=eps,
                               seed=int(seed), batch_size=bs)
    return UniformResult(smoothed, uniform_cert.certify_uniform(smoothed, d, delta),
                         subject.x[0].detach().cpu().numpy(), config)
