"""The empirical side of the uniform-smoothing bound (design §4.4): how similar ĥ(x+δ) stays to ĥ(x) when δ is a
random direction of norm ε, or an attribution attack within the ε-ball.

Both smoothed maps are estimated with the *same* noise draws η₁…η_n (common random numbers), so the measured
cosine reflects the move of x rather than two independent sampling errors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from certlib.attributions import attacks
from certlib.smoothing import uniform_sampling
from certlib.attributions.methods import make_attribution
from certlib.errors import CertlibError
from certlib.models.registry import LoadedModel
from certlib.smoothing.uniform_sampling import SmoothedMap

POINT_KINDS = ("random", "attack")


@dataclass(frozen=True)
class CosinePoint:
    eps: float
    kind: str                 # "random" | "attack"
    cosine: float             # cos(ĥ(x), ĥ(x+δ))
    base_cosine: float        # cos(g(x), g(x+δ)) of the unsmoothed attribution
    label_kept: bool
    how: str


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def empirical_cosines(model: LoadedModel, method: str, x: torch.Tensor, target: int, smoothed: SmoothedMap,
                      eps_values: Sequence[float], *, kinds: Sequence[str] = POINT_KINDS, random_count: int = 2,
                      attack_steps: int = 10, attack_restarts: int = 2, batch_size: int | None = None,
                      progress: Callable[[int, int], None] | None = None) -> list[CosinePoint]:
    """One point per (ε, random direction) and per (ε, attack): re-smooth at x + δ with smoothed's own parameters."""
    unknown = set(kinds) - set(POINT_KINDS)
    if unknown:
        raise CertlibError(f"kinds must be among {POINT_KINDS}, got {sorted(unknown)!r}")
    x = x.detach().to(model.device)
    method_fn = make_attribution(method, model, seed=smoothed.seed)
    attribute = lambda xb: method_fn.attribute(xb, target)  # noqa: E731
    clean_base = attribute(x)[0].cpu().numpy()
    with torch.no_grad(), model.lock:
        label = int(model.module(x).argmax(1))
    jobs = [(float(e), kind, i) for e in eps_values for kind in kinds
            for i in range(random_count if kind == "random" else 1)]
    points = []
    for done, (eps, kind, i) in enumerate(jobs):
        if kind == "random":
            delta = attacks.random_directions(x, eps, random_count, seed=smoothed.seed)[i:i + 1]
            how = "random direction"
        else:
            result = attacks.attribution_attack(model, method, x, target, eps, loss="cosine", steps=attack_steps,
                                                restarts=attack_restarts, seed=smoothed.seed)
            delta, how = result.delta, f"PGD on the base map's cosine, {result.gradient_source}"
        moved = uniform_sampling.sample_uniform_mean(attribute, x + delta, smoothed.radius, smoothed.n, smoothed.M,
                                             smoothed.bound_mode, smoothed.seed, batch_size)
        with torch.no_grad(), model.lock:
            kept = int(model.module(x + delta).argmax(1)) == label
        points.append(CosinePoint(eps, kind, cosine(smoothed.mean, moved.mean),
                                  cosine(clean_base, attribute(x + delta)[0].cpu().numpy()), kept, how))
        if progress is not None:
            progress(done + 1, len(jobs))
    return points


@dataclass(frozen=True)
class BoundCheck:
    """Measured cosines against one bound ("strict" = proven, "paper" = published) of a certificate."""

    kind: str
    below: int                 # points whose measured cosine is below the bound at their ε
    points: int
    smallest_margin: float     # min over points of (measured cosine − bound)


def check_bound(cert, points: Sequence[CosinePoint], kind: str) -> BoundCheck:
    """Compare measured cosines with `cert.bound(eps, kind)`; a point below the proven ("strict") bound would
    contradict the certificate beyond its δ_conf sampling risk, below the published one shows it is not valid."""
    margins = [p.cosine - cert.bound(p.eps, kind) for p in points]
    return BoundCheck(kind, sum(m < -1e-9 for m in margins), len(margins), min(margins, default=float("nan")))
