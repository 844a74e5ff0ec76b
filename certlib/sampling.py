"""The expensive stage of the pixel certificate: stream n0 + n noisy attributions into per-pixel counts.

For each noisy copy x + N(0, σ²I) the attribution is post-processed (DESIGN §3.1) into one binary top-K% mask per K
of a fixed ladder, and only the counts of "in the top K%" are kept: memory O(|K|·H·W), never O(n·H·W). Counts are
accumulated on the model's device. What depends on τ, α or the correction is decided later from these counts
(`certlib.pixel_cert`), so moving those sliders never resamples.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch

from certlib.errors import CertlibError, OutOfMemory
from certlib.noise import ESTIMATION, SELECTION, UNIFORM, NoiseStream, check_sigma, gaussian_copies, uniform_ball
from certlib.pixel_cert import MAX_N, DEFAULT_NORMALISATION, check_normalisation, clean_scale, top_k_masks

DEFAULT_K_PERCENTS = (1.0, 5.0, 10.0, 25.0, 50.0)
AttributionFn = Callable[[torch.Tensor], torch.Tensor]   # [B,C,H,W] -> [B,H,W]
LogitsFn = Callable[[torch.Tensor], torch.Tensor]        # [B,C,H,W] -> [B,classes]
ProgressFn = Callable[[int, int], None]                   # (samples done, samples total)


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
    # sampled with `logits=`: Cohen et al.'s CERTIFY of the prediction (certlib.prediction_cert) reads them.
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


# A ResNet-50 forward+backward keeps ~1 KiB of activations per input value (fp32); the bundled CNN far less. Used as
# a safe over-estimate of what one noisy copy costs, so the batch fits in half of the memory free right now.
BYTES_PER_INPUT_VALUE = 1024
MAX_BATCH = 256
# CPU: large batches are slower, as activations fall out of cache. Measured on 2 cores (bench/, 232 copies): the
# bundled CNN takes 289/251/239/233/260/312 ms at 8/16/32/64/128/256 rows (LRP 980/818/769/927/1027/1081 ms), and
# ResNet-50 at 224x224 177 ms per copy at 8 rows vs 217 at 1 and 206 at 16. So a CPU batch holds about
# CPU_BATCH_VALUES input values (32 bundled digits), but never fewer than CPU_MIN_BATCH copies.
CPU_BATCH_VALUES = 32 * 32 * 32
CPU_MIN_BATCH = 8


def free_memory_bytes(device: str) -> int:
    """Memory free for new tensors on `device`: CUDA's free memory, or the host's MemAvailable."""
    if device == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def auto_batch_size(x: torch.Tensor, device: str) -> int:
    """Noisy copies per attribution call: a power of two that fits in half the free memory of `device`, at most
    MAX_BATCH; on the CPU also the cache-friendly size (CPU_BATCH_VALUES input values, at least CPU_MIN_BATCH)."""
    values = int(np.prod(x.shape[1:]))
    budget = int(0.5 * free_memory_bytes(device)) // (values * BYTES_PER_INPUT_VALUE)
    if device != "cuda":
        budget = min(budget, max(CPU_MIN_BATCH, CPU_BATCH_VALUES // values))
    return int(min(MAX_BATCH, 2 ** int(math.log2(max(1, budget)))))


def attribute_splitting(attribute: AttributionFn, batch: torch.Tensor) -> torch.Tensor:
    """attribute(batch), halving the batch on out-of-memory until single copies fit. Exact: every method is
    batch-exact and the noise was already drawn. A copy that does not fit alone raises a CertlibError."""
    try:
        return attribute(batch)
    except torch.OutOfMemoryError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if batch.shape[0] == 1:
            raise OutOfMemory(f"out of memory on {batch.device} even for one copy of shape "
                              f"{tuple(batch.shape[1:])}: choose the CPU in the sidebar, a smaller model or a "
                              "smaller image") from None
    half = batch.shape[0] // 2
    return torch.cat([attribute_splitting(attribute, batch[:half]), attribute_splitting(attribute, batch[half:])])


def check_counts_config(sigma: float, n0: int, n: int, k_percents: Sequence[float]) -> tuple[float, ...]:
    check_sigma(sigma)
    for name, v in (("n0", n0), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= MAX_N:
            raise CertlibError(f"{name} must be an integer in [1, {MAX_N:,}], got {v!r}")
    ks = tuple(float(k) for k in k_percents)
    if not ks or any(not 0 < k <= 100 for k in ks):
        raise CertlibError(f"k_percents must be in (0, 100], got {list(k_percents)!r}")
    return ks


@dataclass
class _StageCounts:
    ones: torch.Tensor                         # [K,H,W] int32: copies in which h^K_i = 1
    classes: torch.Tensor | None               # [classes] int64: copies whose argmax logit is each class


@torch.no_grad()
def _count_stage(attribute: AttributionFn, x: torch.Tensor, sigma: float, stream: NoiseStream, total: int,
                 ks: tuple[float, ...], normalisation: str, scale: float | None, batch_size: int, logits: LogitsFn | None,
                 done: int, grand_total: int, progress: ProgressFn | None) -> _StageCounts:
    counts = torch.zeros((len(ks), *x.shape[-2:]), dtype=torch.int32, device=x.device)
    classes = None
    for start in range(0, total, batch_size):
        stop = min(total, start + batch_size)
        noisy = gaussian_copies(x, sigma, stream, start, stop)
        with torch.enable_grad():  # gradient methods need autograd; the counting below does not
            attr = attribute_splitting(attribute, noisy)
        counts += top_k_masks(attr.detach(), ks, normalisation, scale).sum(dim=1, dtype=torch.int32)
        if logits is not None:
            votes = torch.bincount(logits(noisy).argmax(dim=1).to(x.device))
            classes = votes if classes is None else _add_padded(classes, votes)
        if progress is not None:
            progress(done + stop, grand_total)
    return _StageCounts(counts, classes)


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    size = max(a.numel(), b.numel())
    return torch.nn.functional.pad(a, (0, size - a.numel())) + torch.nn.functional.pad(b, (0, size - b.numel()))


def _class_votes(stage: _StageCounts, num_classes: int) -> np.ndarray | None:
    if stage.classes is None:
        return None
    votes = np.zeros(num_classes, dtype=np.int64)
    got = stage.classes.cpu().numpy()
    votes[:got.size] = got
    return votes


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
    if x.dim() != 4 or x.shape[0] != 1:
        raise CertlibError(f"x must be one image [1,C,H,W], got shape {tuple(x.shape)}")
    bs = batch_size or auto_batch_size(x, x.device.type)
    if isinstance(bs, bool) or not isinstance(bs, (int, np.integer)) or bs < 1:
        raise CertlibError(f"batch_size must be a positive integer, got {batch_size!r}")
    with torch.enable_grad():
        clean = attribute(x).detach()
    if clean.shape != (1, *x.shape[-2:]):
        raise CertlibError(f"the attribution returned shape {tuple(clean.shape)}, expected {(1, *x.shape[-2:])}")
    # s(x) enters h^K only under the paper's normalisation; the other two never look at the clean map.
    scale = clean_scale(clean[0]) if norm_kind == "paper" else None
    shape = tuple(x.shape[1:])
    num_classes = int(logits(x).shape[1]) if logits is not None else 0
    common = dict(ks=ks, normalisation=norm_kind, scale=scale, batch_size=bs, logits=logits, grand_total=n0 + n,
                  progress=progress)
    sel = _count_stage(attribute, x, sigma, NoiseStream(shape, seed, SELECTION, x.device, x.dtype), n0, done=0,
                       **common)
    est = _count_stage(attribute, x, sigma, NoiseStream(shape, seed, ESTIMATION, x.device, x.dtype), n, done=n0,
                       **common)
    return TopKCounts(
        k_percents=ks, sigma=float(sigma), n0=int(n0), n=int(n), seed=int(seed), scale=scale,
        clean_attr=clean[0].float().cpu().numpy(),
        clean_masks=top_k_masks(clean, ks, norm_kind, scale)[:, 0].cpu().numpy(),
        selection_ones=sel.ones.cpu().numpy(), estimation_ones=est.ones.cpu().numpy(), extra={"batch_size": bs},
        normalisation=norm_kind, selection_classes=_class_votes(sel, num_classes),
        estimation_classes=_class_votes(est, num_classes),
    )


def count_at(attribute: AttributionFn, x: torch.Tensor, counts: TopKCounts, stream: int,
             progress: ProgressFn | None = None) -> np.ndarray:
    """[K,H,W] int32: in how many of counts.n fresh copies around x (noise stream `stream` of counts.seed) each
    pixel is in the top K%, with the same base function h^K as `counts` (same normalisation; under "paper" the
    scale is recomputed from the clean map at x, as a fresh run would)."""
    with torch.enable_grad():
        clean = attribute(x).detach()
    scale = clean_scale(clean[0]) if counts.normalisation == "paper" else None
    noise = NoiseStream(tuple(x.shape[1:]), counts.seed, stream, x.device, x.dtype)
    stage = _count_stage(attribute, x, counts.sigma, noise, counts.n, counts.k_percents, counts.normalisation, scale,
                         counts.extra.get("batch_size") or auto_batch_size(x, x.device.type), None, 0, counts.n,
                         progress)
    return stage.ones.cpu().numpy()


# ------------------------------------------------------------------------------ uniform-ball smoothing (§4)

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


def sample_uniform_mean(attribute: AttributionFn, x: torch.Tensor, radius: float, n: int, M: float = 1.0,
                        bound_mode: str = "normalise", seed: int = 0, batch_size: int | None = None,
                        progress: ProgressFn | None = None) -> SmoothedMap:
    """Stream n attributions at x + η, η uniform in the l2 ball of `radius` ([0,1] pixel space), into their mean."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise CertlibError(f"n must be a positive integer, got {n!r}")
    if not (math.isfinite(M) and M > 0):
        raise CertlibError(f"M must be a positive number, got {M!r}")
    bs = batch_size or auto_batch_size(x, x.device.type)
    stream = NoiseStream(tuple(x.shape[1:]), seed, UNIFORM, x.device, x.dtype)
    total = torch.zeros(x.shape[-2:], dtype=torch.float64, device=x.device)
    for start in range(0, n, bs):
        stop = min(n, start + bs)
        with torch.enable_grad():
            attr = attribute_splitting(attribute, x + uniform_ball(stream, start, stop, radius)).detach()
        total += bound_maps(attr, M, bound_mode).sum(0, dtype=torch.float64)
        if progress is not None:
            progress(stop, n)
    return SmoothedMap(mean=(total / n).cpu().numpy(), n=int(n), radius=float(radius), M=float(M),
                       bound_mode=bound_mode, seed=int(seed))
