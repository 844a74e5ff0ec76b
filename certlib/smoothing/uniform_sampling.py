"""The expensive stage of the uniform-smoothing certificate (Wang & Kong 2024; docs/design.md §4): stream n
attributions at x + η, η uniform in the ℓ2 ball of radius r, each bounded to ‖g‖₂ ≤ M, into their mean ĥ(x).

What depends on ε, the target cosine or the confidence level is decided later from `SmoothedMap`
(certlib.uniform.cert), so moving those sliders never resamples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from certlib import validate
from certlib.smoothing import engine
from certlib.smoothing.engine import AttributionFn, ProgressFn, resolve_batch_size
from certlib.errors import CertlibError
from certlib.smoothing.noise import UNIFORM, NoiseStream

BOUND_MODES = ("normalise", "clip")


@dataclass(frozen=True)
class SmoothedMap:
    """ĥ(x): the mean of n attributions g(x + η), η ~ U(B(0, r)), each bounded to ‖g‖₂ ≤ M."""

    mean: np.ndarray          # [H,W] float64
    n: int
    radius: float
    M: float
    bound_mode: str           # "normalise": g·M/‖g‖ (every map has norm M); "clip": g·min(1, M/‖g‖)
    seed: int

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.mean))


def bound_maps(attr: torch.Tensor, M: float, mode: str) -> torch.Tensor:
    """Enforce ‖g‖₂ ≤ M per map of attr [B,H,W] (the bound's premise); all-zero maps stay zero."""
    if mode not in BOUND_MODES:
        raise CertlibError(f"bound_mode must be one of {BOUND_MODES}, got {mode!r}")
    norms = attr.flatten(1).norm(dim=1).clamp(min=torch.finfo(attr.dtype).tiny).view(-1, 1, 1)
    factor = M / norms if mode == "normalise" else torch.clamp(M / norms, max=1.0)
    return attr * factor


class BoundedSum:
    """Reducer: the float64 sum of the bounded maps g·min(1, M/‖g‖) (or g·M/‖g‖), [H,W] on the model's device."""

    def __init__(self, x: torch.Tensor, M: float, mode: str) -> None:
        self.M, self.mode = M, mode
        self.total = torch.zeros(x.shape[-2:], dtype=torch.float64, device=x.device)

    def update(self, noisy: torch.Tensor, attr: torch.Tensor) -> None:
        self.total += bound_maps(attr, self.M, self.mode).sum(0, dtype=torch.float64)


def sample_uniform_mean(attribute: AttributionFn, x: torch.Tensor, radius: float, n: int, M: float = 1.0,
                        bound_mode: str = "normalise", seed: int = 0, batch_size: int | None = None,
                        progress: ProgressFn | None = None) -> SmoothedMap:
    """Stream n attributions at x + η, η uniform in the l2 ball of `radius` ([0,1] pixel space), into their mean."""
    n = validate.count("n", n)
    validate.positive("M", M)
    validate.radius(radius)
    if bound_mode not in BOUND_MODES:
        raise CertlibError(f"bound_mode must be one of {BOUND_MODES}, got {bound_mode!r}")
    bs = resolve_batch_size(batch_size, x)
    noise = engine.UniformBallNoise(radius, NoiseStream(tuple(x.shape[1:]), seed, UNIFORM, x.device, x.dtype))
    reducer = BoundedSum(x, M, bound_mode)
    engine.stream(attribute, x, noise, n, [reducer], bs, progress)
    return SmoothedMap(mean=(reducer.total / n).cpu().numpy(), n=int(n), radius=float(radius), M=float(M),
                       bound_mode=bound_mode, seed=int(seed))
