"""The expensive stage of the pixel certificate: stream n0 + n noisy attributions into per-pixel counts.

For each noisy copy x + N(0, σ²I) the attribution is post-processed (design §3.1) into one binary top-K% mask per K
of a fixed ladder, and only the counts of "in the top K%" are kept: memory O(|K|·H·W), never O(n·H·W). Counts are
accumulated on the model's device. What depends on τ, α or the correction is decided later from these counts
(`certlib.pixel.cert`), so moving those sliders never resamples.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from certlib.smoothing import engine
from certlib.smoothing.engine import (AttributionFn, LogitsFn, ProgressFn, attribute_splitting, auto_batch_size,  # noqa: F401
                            clean_attribution, free_memory_bytes, resolve_batch_size)
from certlib.errors import CertlibError
from certlib import validate
from certlib.smoothing.noise import ESTIMATION, SELECTION, NoiseStream
from certlib.smoothing.topk import DEFAULT_NORMALISATION, check_normalisation, clean_scale, top_k_masks

DEFAULT_K_PERCENTS = (1.0, 5.0, 10.0, 25.0, 50.0)


@dataclass(frozen=True)
class TopKCounts:
    """Per-pixel counts of h^K_i = 1 among the selection (n0) and estimation (n) samples, for each K."""

    k_percents: tuple[float, ...]
    sigma: float
    n0: int
    n: int
    seed: int
    scale: float | None               # s(x), the clean map's 99.5th percentile: only for normalisation "paper"
    clean_attr: np.ndarray            # [H,W] float32, the attribution of the clean input
    clean_masks: np.ndarray           # [K,H,W] bool, h^K(x) of the clean input
    selection_ones: np.ndarray        # [K,H,W] int32, among n0 samples
    estimation_ones: np.ndarray       # [K,H,W] int32, among n samples
    extra: dict = field(default_factory=dict, compare=False)
    normalisation: str = DEFAULT_NORMALISATION   # how h^K ranks a noisy map (pixel_cert.NORMALISATIONS)
    # The smoothed classifier's votes on the same noisy copies (argmax of the logits), [classes] int64 each, when
    # sampled with `logits=`: Cohen et al.'s CERTIFY of the prediction (certlib.pixel.prediction_cert) reads them.
    selection_classes: np.ndarray | None = None
    estimation_classes: np.ndarray | None = None

    @property
    def modes(self) -> np.ndarray:
        """ĉ_i per K: the majority class among the n0 selection samples (a tie counts as 0, 'not in top-K')."""
        return (2 * self.selection_ones > self.n0).astype(np.int8)

    @property
    def votes_for_mode(self) -> np.ndarray:
        """k_i: how many of the n estimation samples agree with ĉ_i."""
        return np.where(self.modes == 1, self.estimation_ones, self.n - self.estimation_ones).astype(np.int64)

    def select_levels(self, ks: Sequence[float]) -> "TopKCounts":
        """The same counts restricted to the K levels `ks` (in that order); they must have been sampled."""
        missing = [k for k in ks if float(k) not in self.k_percents]
        if missing:
            raise CertlibError(f"K levels {missing} were not sampled; sampled: {list(self.k_percents)}")
        idx = [self.k_percents.index(float(k)) for k in ks]
        return replace(self, k_percents=tuple(float(k) for k in ks), clean_masks=self.clean_masks[idx],
                       selection_ones=self.selection_ones[idx], estimation_ones=self.estimation_ones[idx])

    @property
    def top_frequency(self) -> np.ndarray:
        """Fraction of estimation samples in which each pixel is in the top K% ([K,H,W], for hover maps)."""
        return self.estimation_ones / float(self.n)


def check_counts_config(sigma: float, n0: int, n: int, k_percents: Sequence[float]) -> tuple[float, ...]:
    validate.sigma(sigma)
    validate.count("n0", n0)
    validate.count("n", n)
    return validate.k_percents(k_percents)


class TopKCounter:
    """Reducer: per pixel and K, in how many copies h^K_i = 1 ([K,H,W] int32, on the model's device)."""

    def __init__(self, x: torch.Tensor, ks: tuple[float, ...], normalisation: str, scale: float | None) -> None:
        self.ks, self.normalisation, self.scale = ks, normalisation, scale
        self.ones = torch.zeros((len(ks), *x.shape[-2:]), dtype=torch.int32, device=x.device)

    def update(self, noisy: torch.Tensor, attr: torch.Tensor) -> None:
        self.ones += top_k_masks(attr, self.ks, self.normalisation, self.scale).sum(dim=1, dtype=torch.int32)


class ClassVoteCounter:
    """Reducer: how many copies the model classifies as each class (argmax of `logits`), [classes] int64."""

    def __init__(self, logits: LogitsFn, num_classes: int, device: torch.device) -> None:
        self.logits, self.num_classes = logits, num_classes
        self.votes = torch.zeros(num_classes, dtype=torch.int64, device=device)

    def update(self, noisy: torch.Tensor, attr: torch.Tensor) -> None:
        self.votes += torch.bincount(self.logits(noisy).argmax(dim=1).to(self.votes.device),
                                     minlength=self.num_classes)

    def result(self) -> np.ndarray:
        return self.votes.cpu().numpy()


def _stage(attribute: AttributionFn, x: torch.Tensor, sigma: float, stream: NoiseStream, total: int,
           counter: TopKCounter, votes: ClassVoteCounter | None, batch_size: int, done: int, grand_total: int,
           progress: ProgressFn | None) -> None:
    reducers = [counter] if votes is None else [counter, votes]
    engine.stream(attribute, x, engine.GaussianNoise(sigma, stream), total, reducers, batch_size, progress, done,
                  grand_total)


def sample_topk_counts(attribute: AttributionFn, x: torch.Tensor, sigma: float, n0: int = 32, n: int = 256,
                       k_percents: Sequence[float] = DEFAULT_K_PERCENTS, seed: int = 0,
                       batch_size: int | None = None, progress: ProgressFn | None = None,
                       normalisation: str = DEFAULT_NORMALISATION, logits: LogitsFn | None = None) -> TopKCounts:
    """Draw n0 selection and n estimation copies of x [1,C,H,W] (on its device) and count top-K% membership.

    `normalisation` picks h^K (pixel_cert.NORMALISATIONS; "paper" divides by the clean map's scale and is not a
    function of the noisy input alone). With `logits`, the argmax class of every noisy copy is counted too, for the
    prediction certificate (same copies, no extra noise)."""
    ks = check_counts_config(sigma, n0, n, k_percents)
    norm_kind = check_normalisation(normalisation)
    bs = resolve_batch_size(batch_size, x)
    clean = clean_attribution(attribute, x)
    # s(x) enters h^K only under the paper's normalisation; the other two never look at the clean map.
    scale = clean_scale(clean[0]) if norm_kind == "paper" else None
    shape = tuple(x.shape[1:])
    num_classes = int(logits(x).shape[1]) if logits is not None else 0
    stages = []
    for stream_id, count, done in ((SELECTION, n0, 0), (ESTIMATION, n, n0)):
        counter = TopKCounter(x, ks, norm_kind, scale)
        votes = ClassVoteCounter(logits, num_classes, x.device) if logits is not None else None
        _stage(attribute, x, sigma, NoiseStream(shape, seed, stream_id, x.device, x.dtype), count, counter, votes,
               bs, done, n0 + n, progress)
        stages.append((counter, votes))
    (sel, sel_votes), (est, est_votes) = stages
    return TopKCounts(
        k_percents=ks, sigma=float(sigma), n0=int(n0), n=int(n), seed=int(seed), scale=scale,
        clean_attr=clean[0].float().cpu().numpy(),
        clean_masks=top_k_masks(clean, ks, norm_kind, scale)[:, 0].cpu().numpy(),
        selection_ones=sel.ones.cpu().numpy(), estimation_ones=est.ones.cpu().numpy(), extra={"batch_size": bs},
        normalisation=norm_kind, selection_classes=None if sel_votes is None else sel_votes.result(),
        estimation_classes=None if est_votes is None else est_votes.result(),
    )


def extend_counts(attribute: AttributionFn, x: torch.Tensor, counts: TopKCounts, more: int,
                  logits: LogitsFn | None = None, batch_size: int | None = None,
                  progress: ProgressFn | None = None, cancel: engine.CancelFn | None = None) -> TopKCounts:
    """`counts` with `more` estimation copies added: copies counts.n .. counts.n + more − 1 of the same stream.

    The result equals sample_topk_counts(..., n=counts.n + more) exactly (integer counts, copy j a function of j
    only), so sampling can stop and resume anywhere. `attribute` (and `logits`, needed when counts has the
    prediction's votes) must be those that produced `counts`; x is the same input on the model's device."""
    more = validate.count("more", more)
    validate.count("n", counts.n + more)
    if (counts.estimation_classes is not None) != (logits is not None):
        raise CertlibError("extend_counts needs `logits` exactly when the counts hold the prediction's votes "
                           f"(they {'do' if counts.estimation_classes is not None else 'do not'})")
    bs = resolve_batch_size(batch_size if batch_size is not None else counts.extra.get("batch_size"), x)
    counter = TopKCounter(x, counts.k_percents, counts.normalisation, counts.scale)
    counter.ones += torch.as_tensor(counts.estimation_ones, device=x.device)
    votes = None
    if logits is not None:
        votes = ClassVoteCounter(logits, counts.estimation_classes.shape[0], x.device)
        votes.votes += torch.as_tensor(counts.estimation_classes, device=x.device)
    noise = NoiseStream(tuple(x.shape[1:]), counts.seed, ESTIMATION, x.device, x.dtype)
    engine.stream(attribute, x, engine.GaussianNoise(counts.sigma, noise), counts.n + more,
                  [counter] if votes is None else [counter, votes], bs, progress, first=counts.n, cancel=cancel)
    return replace(counts, n=counts.n + more, estimation_ones=counter.ones.cpu().numpy(),
                   estimation_classes=None if votes is None else votes.result())


def count_at(attribute: AttributionFn, x: torch.Tensor, counts: TopKCounts, stream: int,
             progress: ProgressFn | None = None) -> np.ndarray:
    """[K,H,W] int32: in how many of counts.n fresh copies around x (noise stream `stream` of counts.seed) each
    pixel is in the top K%, with the same base function h^K as `counts` (same normalisation; under "paper" the
    scale is recomputed from the clean map at x, as a fresh run would)."""
    scale = clean_scale(clean_attribution(attribute, x)[0]) if counts.normalisation == "paper" else None
    counter = TopKCounter(x, counts.k_percents, counts.normalisation, scale)
    noise = NoiseStream(tuple(x.shape[1:]), counts.seed, stream, x.device, x.dtype)
    _stage(attribute, x, counts.sigma, noise, counts.n, counter, None,
           resolve_batch_size(counts.extra.get("batch_size"), x), 0, counts.n, progress)
    return counter.ones.cpu().numpy()


# The uniform certificate's sampling stage lives in certlib.smoothing.uniform_sampling; re-exported for existing callers.
from certlib.smoothing.uniform_sampling import BOUND_MODES, SmoothedMap, bound_maps, sample_uniform_mean  # noqa: E402,F401
