"""The three metrics of the dashboard (design §6), each a function of a decided pixel certificate.

Inputs are the certified classes of `certlib.pixel.cert.decide` ([K,H,W] int8 in {1, 0, −1}: certified top-K%,
certified not top-K%, abstain) with their K levels, plus what a metric needs besides (the clean attribution for
plain GridPG, a probability function for faithfulness). Nothing here samples; the expensive noisy attributions are
done once (`certlib.smoothing.sampling`) and these functions are re-run for every τ / α / K choice.

- certified robustness: per K, the share of pixels certified top-K / certified not top-K / abstaining;
- certified localization (certified GridPG, on a 2×2 grid of four distinct classes, explaining one cell's class):
  per K, (# certified top-K pixels inside the target cell) / (# certified top-K pixels anywhere); 1/4 is what a
  uniformly spread map gets. When no pixel is certified top-K the score is 0 (a certificate that says nothing
  localizes nothing; the official evaluation scores an empty map the same way). Plain GridPG of the clean map: the
  positive attribution inside the cell over the positive attribution in the whole grid;
- faithfulness: deletion replaces the certified top-K pixels of the smallest K first, then those of the next K,
  … by a replacement image (default: the input blurred, see `replacement_image`) and records the target class
  probability after each step; insertion starts from the replacement and puts the same pixels back. The curve's
  x-axis is the nominal budget K/100 of each step (0 before the first), so every method is measured over the same
  range whatever it certified; the area is the trapezoid area divided by the range, a mean probability in [0, 1].
  Lower deletion area and higher insertion area = more faithful.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from certlib.errors import CertlibError

GRID = 2
REPLACEMENTS = ("blur", "zero", "mean")
# Blur width of the "blur" replacement, as a fraction of the longer image side: 8 px on 32², 56 px on 224². Milder
# blurs leave the class visible: on the bundled digits (upsampled from 8×8, already smooth) a 2 px blur of the whole
# image keeps the target probability at 0.98, an 8 px blur brings it to 0.35 (docs/metrics.md).
BLUR_SIGMA_FRACTION = 1.0 / 4.0
ProbabilityFn = Callable[[torch.Tensor], torch.Tensor]   # [B,C,H,W] -> class probabilities [B, num_classes]


# ------------------------------------------------------------------------------------------------ validation

def _check_classes(classes: object, k_percents: Sequence[float]) -> tuple[np.ndarray, tuple[float, ...]]:
    cls = np.asarray(classes)
    if cls.ndim == 2:
        cls = cls[None]
    if cls.ndim != 3 or cls.size == 0:
        raise CertlibError(f"classes must be [K,H,W] (or [H,W] for one level), got shape {np.shape(classes)}")
    if not np.isin(cls, (-1, 0, 1)).all():
        bad = cls[~np.isin(cls, (-1, 0, 1))].ravel()[0]
        raise CertlibError(f"classes must be 1, 0 or -1 (abstain), got {bad!r}")
    ks = tuple(float(k) for k in k_percents)
    if len(ks) != cls.shape[0]:
        raise CertlibError(f"{len(ks)} K levels {list(ks)} given for {cls.shape[0]} levels of classes")
    if any(not 0 < k <= 100 for k in ks) or len(set(ks)) != len(ks):
        raise CertlibError(f"K levels must be distinct numbers in (0, 100], got {list(ks)}")
    return cls, ks


def _check_cell(cell: object, shape: tuple[int, ...]) -> int:
    if isinstance(cell, bool) or not isinstance(cell, (int, np.integer)) or not 0 <= cell < GRID * GRID:
        raise CertlibError(f"cell must be an int in 0..{GRID * GRID - 1} (row-major), got {cell!r}")
    h, w = shape[-2:]
    if h % GRID or w % GRID:
        raise CertlibError(f"a {GRID}×{GRID} grid needs a height and width divisible by {GRID}, got {h}×{w}")
    return int(cell)


# ------------------------------------------------------------------------------------------------ robustness

@dataclass(frozen=True)
class Robustness:
    """Per K level (in the given order): shares of pixels in each certified class; they add up to 1."""

    k_percents: tuple[float, ...]
    certified_top: np.ndarray        # [K]
    certified_not_top: np.ndarray    # [K]
    abstain: np.ndarray              # [K]

    @property
    def certified(self) -> np.ndarray:
        """Share of pixels with any certificate (top or not top) per K."""
        return self.certified_top + self.certified_not_top


def certified_robustness(classes: np.ndarray, k_percents: Sequence[float]) -> Robustness:
    """Shares of certified top-K / certified not-top-K / abstaining pixels for each K level of classes [K,H,W]."""
    cls, ks = _check_classes(classes, k_percents)
    pixels = cls.shape[1] * cls.shape[2]
    counts = {v: (cls == v).reshape(len(ks), -1).sum(axis=1) / pixels for v in (1, 0, -1)}
    return Robustness(ks, counts[1], counts[0], counts[-1])


# ------------------------------------------------------------------------------------------------ localization

def cell_mask(shape: tuple[int, int], cell: int) -> np.ndarray:
    """bool [H,W]: the pixels of grid cell `cell` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    c = _check_cell(cell, shape)
    h, w = shape[-2:]
    row, col = divmod(c, GRID)
    mask = np.zeros((h, w), dtype=bool)
    mask[row * h // GRID:(row + 1) * h // GRID, col * w // GRID:(col + 1) * w // GRID] = True
    return mask


@dataclass(frozen=True)
class Localization:
    """Certified GridPG per K level: inside / total certified top-K pixels (0 where total is 0)."""

    k_percents: tuple[float, ...]
    score: np.ndarray       # [K] in [0, 1]
    inside: np.ndarray      # [K] certified top-K pixels inside the target cell
    total: np.ndarray       # [K] certified top-K pixels in the whole grid


def certified_gridpg(classes: np.ndarray, k_percents: Sequence[float], cell: int) -> Localization:
    """Certified localization of classes [K,H,W] for the target in grid cell `cell`."""
    cls, ks = _check_classes(classes, k_percents)
    inside_mask = cell_mask(cls.shape[1:], cell)
    top = cls == 1
    inside = top[:, inside_mask].sum(axis=1)
    total = top.reshape(len(ks), -1).sum(axis=1)
    score = np.divide(inside, total, out=np.zeros(len(ks)), where=total > 0)
    return Localization(ks, score, inside, total)


def gridpg(attr: np.ndarray, cell: int) -> float:
    """Plain GridPG of a signed attribution map [H,W]: positive mass inside the cell / positive mass overall
    (0 for a map without positive values)."""
    a = np.asarray(attr, dtype=np.float64)
    if a.ndim != 2 or not np.isfinite(a).all():
        raise CertlibError(f"attr must be a finite map [H,W], got shape {a.shape}")
    positive = np.clip(a, 0.0, None)
    total = positive.sum()
    return float(positive[cell_mask(a.shape, cell)].sum() / total) if total > 0 else 0.0


# ------------------------------------------------------------------------------------------------ faithfulness

def _check_image(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] != 1 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise CertlibError(f"x must be one floating-point image [1,C,H,W], got {got}")
    return x


def blur_sigma(height: int, width: int) -> float:
    """Standard deviation (pixels) of the default blur: a quarter of the longer side."""
    return max(height, width) * BLUR_SIGMA_FRACTION


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x [1,C,H,W] blurred by a separable Gaussian of std `sigma` px, truncated at 3σ, mirror-padded."""
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, x.shape[-2] - 1, x.shape[-1] - 1)   # reflect padding needs pad < side
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype).to(x.device)
    c = x.shape[1]
    out = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = torch.nn.functional.conv2d(out, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return torch.nn.functional.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def replacement_image(x: torch.Tensor, kind: str = "blur") -> torch.Tensor:
    """What deleted pixels become: "blur" (x blurred with σ = 1/4 of the longer side: the local colours stay, the
    shapes an attribution points at go), "zero" (black) or "mean" (each channel's mean)."""
    x = _check_image(x)
    if kind == "blur":
        return gaussian_blur(x, blur_sigma(*x.shape[-2:]))
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    raise CertlibError(f"replacement must be one of {REPLACEMENTS}, got {kind!r}")


def cumulative_top_masks(classes: np.ndarray, k_percents: Sequence[float]) -> tuple[tuple[float, ...], np.ndarray]:
    """(K levels ascending, bool [L,H,W]): step j holds every pixel certified top-K at one of the j+1 smallest K."""
    cls, ks = _check_classes(classes, k_percents)
    order = np.argsort(ks)
    masks = np.logical_or.accumulate(cls[order] == 1, axis=0)
    return tuple(ks[i] for i in order), masks


@dataclass(frozen=True)
class FaithfulnessCurve:
    """Target probability before and after each removal (deletion) or insertion step."""

    kind: str                      # "deletion" | "insertion"
    budget: np.ndarray             # [L+1] nominal K/100 of each step, 0 first
    changed_fraction: np.ndarray   # [L+1] share of pixels actually replaced (deletion) / restored (insertion)
    probability: np.ndarray        # [L+1] probability of the target class
    auc: float                     # trapezoid area over budget / budget range: a mean probability


def curve_auc(budget: np.ndarray, probability: np.ndarray) -> float:
    """Normalised trapezoid area: ∫ p d(budget) / (last budget − first budget)."""
    b, p = np.asarray(budget, dtype=np.float64), np.asarray(probability, dtype=np.float64)
    if b.shape != p.shape or b.size < 2 or np.any(np.diff(b) <= 0):
        raise CertlibError(f"budget must increase strictly and match probability's shape; got {b} and {p}")
    return float(np.sum(np.diff(b) * (p[1:] + p[:-1]) / 2) / (b[-1] - b[0]))


def faithfulness_inputs(x: torch.Tensor, classes: np.ndarray, k_percents: Sequence[float], kind: str = "deletion",
                        replacement: str | torch.Tensor = "blur") -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The images of a deletion or insertion curve of x [1,C,H,W]: (batch [L+1,C,H,W], budget [L+1], changed
    fraction [L+1]); image 0 is before any step. Split from the model call so that many curves share batches."""
    if kind not in ("deletion", "insertion"):
        raise CertlibError(f"kind must be 'deletion' or 'insertion', got {kind!r}")
    x = _check_image(x)
    ks, masks = cumulative_top_masks(classes, k_percents)
    if masks.shape[1:] != tuple(x.shape[-2:]):
        raise CertlibError(f"classes are {masks.shape[1]}×{masks.shape[2]} but the image is "
                           f"{x.shape[-2]}×{x.shape[-1]}")
    fill = replacement_image(x, replacement) if isinstance(replacement, str) else replacement.to(x)
    steps = torch.from_numpy(np.concatenate([np.zeros((1, *masks.shape[1:]), bool), masks]))[:, None].to(x.device)
    start, other = (x, fill) if kind == "deletion" else (fill, x)
    batch = torch.where(steps, other, start)                          # [L+1,C,H,W]
    budget = np.array([0.0, *[k / 100.0 for k in ks]])
    changed = np.concatenate([[0.0], masks.reshape(len(ks), -1).mean(axis=1)])
    return batch, budget, changed


def faithfulness_curve(prob_fn: ProbabilityFn, x: torch.Tensor, target: int, classes: np.ndarray,
                       k_percents: Sequence[float], kind: str = "deletion",
                       replacement: str | torch.Tensor = "blur") -> FaithfulnessCurve:
    """Deletion or insertion curve of the certified top-K pixels of x [1,C,H,W] (one batched prob_fn call)."""
    batch, budget, changed = faithfulness_inputs(x, classes, k_percents, kind, replacement)
    with torch.no_grad():
        probs = prob_fn(batch)
    return finish_curve(kind, budget, changed, probs, target)


def finish_curve(kind: str, budget: np.ndarray, changed: np.ndarray, probs: torch.Tensor,
                 target: int) -> FaithfulnessCurve:
    """The curve from the class probabilities [L+1, num_classes] of `faithfulness_inputs`' images."""
    if probs.dim() != 2 or probs.shape[0] != len(budget) or not 0 <= target < probs.shape[1]:
        raise CertlibError(f"probabilities of shape {tuple(probs.shape)} do not fit {len(budget)} images and "
                           f"target {target}")
    probability = probs[:, target].detach().double().cpu().numpy()
    return FaithfulnessCurve(kind, budget, changed, probability, curve_auc(budget, probability))
