"""'Check it': an empirical test of a pixel certificate. Perturb the input by δ with ‖δ‖₂ = R (random directions and
one gradient-guided direction), re-estimate the smoothed top-K classes at x + δ from fresh noise, and count the
certified pixels whose smoothed class changed. The certificate says none should (up to its α and sampling error).

The re-estimation uses the run's own base function h^K (its normalisation) and noise streams that the run never
drew from (noise.CHECK_STREAMS + j of the run's seed), so no seed makes the check reuse the certification's noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from certlib.attributions.attacks import random_directions, topk_flip_direction
from certlib.errors import CertlibError
from certlib.smoothing.noise import CHECK_STREAMS, MAX_CHECKS
from certlib.smoothing.sampling import AttributionFn, ProgressFn, TopKCounts, count_at
from certlib.stats import clopper_pearson_upper

# Column titles of a check table, for pages and exports.
COLUMN_LABELS = {"kind": "perturbation", "norm": "‖δ‖₂", "certified": "certified decisions",
                 "flipped": "estimated flips", "flipped_significant": "significant flips",
                 "max_drop": "largest drop of p(certified class)"}


@dataclass(frozen=True)
class PerturbationCheck:
    kind: str
    norm: float
    certified: int              # certified (pixel, K) decisions checked
    flipped: int                # ... whose estimated smoothed probability of the certified class is below 1/2
    flipped_significant: int    # ... below 1/2 even at its Clopper-Pearson upper bound (Bonferroni over pixels)
    max_drop: float             # largest drop of the certified class's estimated probability

    @property
    def verdict(self) -> str:
        if self.flipped_significant:
            return "violated: certified pixels changed class beyond sampling error"
        if self.flipped:
            return "consistent: the estimated flips are within sampling error"
        return "consistent: no certified pixel changed class"


def reestimate(attribute: AttributionFn, x_at: torch.Tensor, counts: TopKCounts, classes: np.ndarray, alpha: float,
               stream_index: int = 0, kind: str = "re-estimate", norm: float = float("nan"),
               progress: ProgressFn | None = None) -> PerturbationCheck:
    """Sample the smoothed classes at `x_at` (n fresh copies, check stream `stream_index`) and compare them with the
    certified `classes` ([K,H,W] or [H,W] for one level, from `counts`)."""
    if not 0 <= stream_index < MAX_CHECKS:
        raise CertlibError(f"stream_index must be in [0, {MAX_CHECKS}), got {stream_index!r}")
    ones = count_at(attribute, x_at, counts, CHECK_STREAMS + stream_index, progress).reshape(classes.shape)
    certified = classes >= 0
    k_c = np.where(classes == 1, ones, counts.n - ones)          # votes for the certified class at x_at
    p_at = k_c / counts.n
    p_clean = counts.votes_for_mode.reshape(classes.shape) / counts.n
    # Bonferroni over the certified pixels: thousands of pixels near p = 1/2 must not raise false alarms.
    upper = clopper_pearson_upper(k_c, counts.n, alpha / max(1, int(certified.sum())))
    return PerturbationCheck(
        kind=kind, norm=float(norm), certified=int(certified.sum()),
        flipped=int((certified & (p_at < 0.5)).sum()),
        flipped_significant=int((certified & (upper < 0.5)).sum()),
        max_drop=float(np.max(np.where(certified, p_clean - p_at, -np.inf), initial=0.0)),
    )


def check_certificate(attribute: AttributionFn, logit: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                      counts: TopKCounts, classes: np.ndarray, radius: float, alpha: float, n_random: int = 3,
                      seed: int = 1, progress: ProgressFn | None = None) -> list[PerturbationCheck]:
    """Re-estimate the smoothed classes at x + δ for n_random random δ and one gradient-guided δ, all ‖δ‖ = R.
    `seed` picks the random directions; the re-estimation noise comes from the run's check streams."""
    if not 0 <= n_random < MAX_CHECKS:
        raise CertlibError(f"n_random must be in [0, {MAX_CHECKS - 1}], got {n_random!r}")
    smallest = int(np.argmin(counts.k_percents))
    mask = torch.from_numpy(counts.clean_masks[smallest]).to(x.device)
    deltas = [(f"random direction {i + 1}", d[None]) for i, d in enumerate(random_directions(x, radius, n_random, seed))]
    guided, how = topk_flip_direction(attribute, logit, x, mask, radius)
    deltas.append((f"gradient-guided ({how})", guided))
    total = len(deltas) * counts.n
    results = []
    for j, (kind, delta) in enumerate(deltas):
        def step(done: int, _t: int, offset: int = j * counts.n) -> None:
            if progress is not None:
                progress(min(total, offset + done), total)
        results.append(reestimate(attribute, x + delta, counts, classes, alpha, j, kind,
                                  float(delta.flatten().norm()), step))
    return results
