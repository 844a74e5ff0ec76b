"""Perturbations that try to break an explanation: random directions and gradient-guided directions of a given
l2 norm, in [0,1] pixel space (no clipping: the certificates are stated for unclipped inputs)."""
from __future__ import annotations

from typing import Callable

import torch

from certlib.errors import CertlibError
from certlib.noise import NoiseStream

RANDOM_STREAM = 7


def random_directions(x: torch.Tensor, radius: float, count: int, seed: int = 0) -> torch.Tensor:
    """`count` perturbations [count,C,H,W] of l2 norm exactly `radius`, uniformly distributed directions."""
    if radius < 0:
        raise CertlibError(f"radius must be >= 0, got {radius!r}")
    if count < 1:
        raise CertlibError(f"count must be >= 1, got {count!r}")
    z = NoiseStream(tuple(x.shape[1:]), seed, RANDOM_STREAM, x.device, x.dtype).standard_normal(0, count)
    norms = z.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))
    return radius * z / norms


def topk_flip_direction(attribute: Callable[[torch.Tensor], torch.Tensor], logit: Callable[[torch.Tensor], torch.Tensor],
                        x: torch.Tensor, mask: torch.Tensor, radius: float) -> tuple[torch.Tensor, str]:
    """One perturbation of norm `radius` that tries to push the clean top-K pixels (`mask` [H,W]) out of the top K.

    Ascends the margin 'attribution outside the mask minus attribution inside' through the attribution itself
    (double backpropagation). Piecewise-linear networks often give that margin no gradient (and perturbation
    methods have none); then the direction falls back to the target logit's input gradient, and says so.
    """
    xv = x.detach().clone().requires_grad_(True)
    how = "attribution gradient"
    grad = None
    try:
        a = attribute(xv)[0]
        m = mask.to(a.dtype)
        margin = (a.abs() * (1 - m)).sum() / (1 - m).sum().clamp(min=1) - (a.abs() * m).sum() / m.sum().clamp(min=1)
        if margin.requires_grad:
            grad = torch.autograd.grad(margin, xv, allow_unused=True)[0]
    except RuntimeError:
        grad = None
    if grad is None or not torch.isfinite(grad).all() or float(grad.norm()) == 0.0:
        how = "target-logit gradient (the attribution gives no usable gradient)"
        xv = x.detach().clone().requires_grad_(True)
        grad = -torch.autograd.grad(logit(xv).sum(), xv)[0]  # lower the target score
    norm = float(grad.norm())
    if norm == 0.0:
        return torch.zeros_like(x), "none (zero gradient)"
    return (radius * grad / norm).detach(), how
