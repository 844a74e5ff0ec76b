"""'Check it': an empirical test of a pixel certificate. Perturb the input by δ with ‖δ‖₂ = R (random directions and
one gradient-guided direction), re-estimate the smoothed top-K classes at x + δ from fresh noise, and count the
certified pixels whose smoothed class changed. The certificate says none should (up to its α and sampling error).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from certlib.attacks import random_directions, topk_flip_direction
from certlib.sampling import AttributionFn, ProgressFn, TopKCounts, sample_topk_counts
from certlib.stats import clopper_pearson_upper


@dataclass(frozen=True)
class PerturbationCheck:
    kind: str
    norm: float
    certified: int              # certified (pixel, K) decisions checked
    flipped: int                # ... whose estimated smoothed probability of the certified class is below 1/2
    flipped_significant: int    # ... below 1/2 even at its Clopper-Pearson upper bound (Bonferroni over pixels)
    max_drop: float             # largest drop of the certified class's estimated probability


def check_certificate(attribute: AttributionFn, logit: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                      counts: TopKCounts, classes: np.ndarray, radius: float, alpha: float, n_random: int = 3,
                      seed: int = 1, progress: ProgressFn | None = None) -> list[PerturbationCheck]:
    """Re-estimate the smoothed classes at x + δ for n_random random δ and one gradient-guided δ, all ‖δ‖ = R."""
    certified = classes >= 0
    smallest = int(np.argmin(counts.k_percents))
    mask = torch.from_numpy(counts.clean_masks[smallest]).to(x.device)
    deltas = [(f"random direction {i + 1}", d[None]) for i, d in enumerate(random_directions(x, radius, n_random, seed))]
    guided, how = topk_flip_direction(attribute, logit, x, mask, radius)
    deltas.append((f"gradient-guided ({how})", guided))
    total = len(deltas) * counts.n
    results = []
    for j, (kind, delta) in enumerate(deltas):
        def step(done: int, _t: int, offset: int = j * (counts.n + 1)) -> None:
            if progress is not None:
                progress(min(total, offset + done), total + len(deltas))
        at = sample_topk_counts(attribute, x + delta, counts.sigma, n0=1, n=counts.n, k_percents=counts.k_percents,
                                seed=seed + 1000 + j, batch_size=counts.extra.get("batch_size"), progress=step)
        k_c = np.where(classes == 1, at.estimation_ones, counts.n - at.estimation_ones)  # votes for certified class
        p_at = k_c / counts.n
        p_clean = counts.votes_for_mode / counts.n
        # Bonferroni over the certified pixels: thousands of pixels near p = 1/2 must not raise false alarms.
        upper = clopper_pearson_upper(k_c, counts.n, alpha / max(1, int(certified.sum())))
        results.append(PerturbationCheck(
            kind=kind, norm=float(delta.flatten().norm()), certified=int(certified.sum()),
            flipped=int((certified & (p_at < 0.5)).sum()),
            flipped_significant=int((certified & (upper < 0.5)).sum()),
            max_drop=float(np.max(np.where(certified, p_clean - p_at, -np.inf), initial=0.0)),
        ))
    return results
