"""Perturbations that try to break an explanation: random directions and gradient-guided directions of a given
l2 norm, in [0,1] pixel space (no clipping: the certificates are stated for unclipped inputs)."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from certlib.attributions.methods import make_attribution
from certlib import validate
from certlib.errors import CertlibError
from certlib.models.registry import LoadedModel
from certlib.smoothing.noise import NoiseStream, uniform_ball
from certlib.smoothing.topk import top_k_mask

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


# --------------------------------------------------------------------------------- attribution attack (PGD)

ATTACK_STREAM = 8
ATTACK_LOSSES = ("cosine", "topk")
# Methods whose map the attack can differentiate on the smooth surrogate; the others are attacked by transfer
# from the surrogate's gradient map (their own maps have no useful input gradient: perturbation masks, CAM
# layers at a coarse resolution, LRP rules, guided ReLUs).
DIFFERENTIABLE = ("grad", "input_x_gradient", "integrated_gradients")
SOFTPLUS_BETA = 10.0
IG_STEPS = 8


@dataclass(frozen=True)
class AttackResult:
    """The best label-preserving perturbation found (‖delta‖₂ ≤ eps) and how similar the base attribution stayed."""

    delta: torch.Tensor          # [1,C,H,W] on x's device
    eps: float
    loss: str                    # "cosine" | "topk"
    label_kept: bool             # argmax of the model at x + delta equals the one at x
    base_similarity: float       # cosine, or top-K% overlap |S ∩ S'|/|S|, of the real maps at x + delta vs x
    gradient_source: str
    steps: int


def softplus_surrogate(module: nn.Module, beta: float = SOFTPLUS_BETA) -> nn.Module:
    """A copy of `module` with each nn.ReLU replaced by Softplus(β): ReLU networks have piecewise-constant input
    gradients, so an attribution of them has no gradient to follow (Dombrowski et al. 2019 attack through this
    smooth twin). Modules without nn.ReLU (TorchScript, functional ReLUs) are returned as a plain copy."""
    twin = copy.deepcopy(module)
    if isinstance(twin, torch.jit.ScriptModule):
        return twin.requires_grad_(False)
    for parent in twin.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Softplus(beta=beta))
    return twin.eval().requires_grad_(False)


def _surrogate_map(module: nn.Module, method: str, x: torch.Tensor, target: int) -> torch.Tensor:
    """The surrogate's attribution [B,H,W] of x [B,C,H,W], differentiable in x (double backpropagation)."""
    def grad_of(z: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(module(z)[:, target].sum(), z, create_graph=True)[0]

    if method == "input_x_gradient":
        return (x * grad_of(x)).sum(1)
    if method == "integrated_gradients":
        total = sum(grad_of(x * ((i + 0.5) / IG_STEPS)) for i in range(IG_STEPS))
        return (x * total / IG_STEPS).sum(1)
    return grad_of(x).abs().sum(1)          # "grad", and the transfer proxy for every other method


def _similarity(maps: torch.Tensor, clean: torch.Tensor, loss: str, clean_mask: torch.Tensor,
                k_percent: float) -> torch.Tensor:
    """Per-row similarity of maps [B,H,W] to the clean map: cosine, or the top-K% overlap with the clean top-K%."""
    if loss == "cosine":
        return F.cosine_similarity(maps.flatten(1), clean.flatten(1).expand(maps.shape[0], -1), dim=1)
    masks = top_k_mask(maps.detach(), k_percent)
    return (masks & clean_mask).flatten(1).sum(1) / clean_mask.sum().clamp(min=1)


def _soft_loss(maps: torch.Tensor, clean: torch.Tensor, loss: str, clean_mask: torch.Tensor) -> torch.Tensor:
    """What PGD descends: the cosine to the clean map, or (Ghorbani et al. 2019) the share of attribution mass
    that stays on the clean top-K% pixels."""
    if loss == "cosine":
        return F.cosine_similarity(maps.flatten(1), clean.flatten(1).expand(maps.shape[0], -1), dim=1).sum()
    mass = maps.abs().flatten(1)
    return ((mass * clean_mask.flatten()).sum(1) / mass.sum(1).clamp(min=1e-12)).sum()


def _project(delta: torch.Tensor, eps: float) -> torch.Tensor:
    norms = delta.flatten(1).norm(dim=1).clamp(min=1e-30).view(-1, *([1] * (delta.dim() - 1)))
    return delta * torch.clamp(eps / norms, max=1.0)


def attribution_attack(model: LoadedModel, method: str, x: torch.Tensor, target: int, eps: float, *,
                       loss: str = "cosine", k_percent: float = 10.0, steps: int = 20, restarts: int = 4,
                       seed: int = 0, progress: Callable[[int, int], None] | None = None) -> AttackResult:
    """ℓ2 PGD on δ (‖δ‖₂ ≤ ε) that makes the base attribution at x + δ unlike the clean one while the predicted
    class stays. Restarts run as one batch (restart 0 from δ = 0, the others from uniform points of the ball);
    every iterate is scored with the *real* method, and the least similar label-preserving one is returned.
    No clipping to [0, 1]: the certificates hold for every δ, inside the image range or not."""
    if loss not in ATTACK_LOSSES:
        raise CertlibError(f"loss must be one of {ATTACK_LOSSES}, got {loss!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise CertlibError(f"eps must be a non-negative number, got {eps!r}")
    validate.count("steps", steps, high=10_000)
    validate.count("restarts", restarts, high=1_000)
    if x.dim() != 4 or x.shape[0] != 1:
        raise CertlibError(f"x must be one image [1,C,H,W], got shape {tuple(x.shape)}")
    x = x.detach().to(model.device)
    real = make_attribution(method, model, seed=seed)
    with torch.no_grad(), model.lock:
        label = int(model.module(x).argmax(1))
    clean = real.attribute(x, target).detach()
    clean_mask = top_k_mask(clean, k_percent)[0]
    if eps == 0:
        return AttackResult(torch.zeros_like(x), 0.0, loss, True, 1.0, "none (eps = 0)", 0)
    with model.lock:
        twin = softplus_surrogate(model.module)
    source = (f"surrogate {method} map (ReLU → Softplus β={SOFTPLUS_BETA:g})" if method in DIFFERENTIABLE else
              f"transfer: surrogate gradient map (ReLU → Softplus β={SOFTPLUS_BETA:g}); {method} has no usable "
              "input gradient")
    stream = NoiseStream(tuple(x.shape[1:]), seed, ATTACK_STREAM, x.device, x.dtype)
    delta = uniform_ball(stream, 0, restarts, eps) if restarts > 1 else torch.zeros_like(x)
    delta[0] = 0.0
    step_size = 2.5 * eps / steps
    best_delta, best_sim = torch.zeros_like(x), 1.0      # δ = 0 keeps the label and the map
    for step in range(steps):
        d = delta.clone().requires_grad_(True)
        objective = _soft_loss(_surrogate_map(twin, method, x + d, target), clean, loss, clean_mask)
        grad = torch.autograd.grad(objective, d)[0]
        norms = grad.flatten(1).norm(dim=1).clamp(min=1e-30).view(-1, 1, 1, 1)
        delta = _project(delta - step_size * grad / norms, eps).detach()
        candidates = x + delta
        with torch.no_grad(), model.lock:
            kept = model.module(candidates).argmax(1) == label
        sims = _similarity(real.attribute(candidates, target), clean, loss, clean_mask, k_percent)
        for i in torch.nonzero(kept).flatten().tolist():
            if float(sims[i]) < best_sim:
                best_sim, best_delta = float(sims[i]), delta[i:i + 1].clone()
        if progress is not None:
            progress(step + 1, steps)
    return AttackResult(best_delta, float(eps), loss, True, best_sim, source, steps)
