"""The one streaming loop behind every certificate: noisy copies → attribution → reducers (docs/design.md §2).

    engine.stream(attribute, x, GaussianNoise(sigma, stream), total=n, reducers=[TopKCounter(...)], batch_size=32)

Copy j of a run is a function of (seed, stream, j) only (certlib.smoothing.noise), so a run's statistics do not depend on the
batch size, the device's memory or where the copies were computed. The loop is written once: batching, halving a
batch that runs out of memory, progress, cancellation. What a certificate keeps of each batch is a *reducer*: an
object with `update(noisy, attr)` that folds the batch into O(H·W) statistics and never holds n maps.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from certlib.errors import CertlibError, OutOfMemory
from certlib.smoothing.noise import NoiseStream, gaussian_copies, uniform_ball

AttributionFn = Callable[[torch.Tensor], torch.Tensor]   # [B,C,H,W] -> [B,H,W]
LogitsFn = Callable[[torch.Tensor], torch.Tensor]        # [B,C,H,W] -> [B,classes]
ProgressFn = Callable[[int, int], None]                   # (samples done, samples total)
CancelFn = Callable[[], bool]                             # True: stop before the next batch


class Cancelled(CertlibError):
    """The caller asked the engine to stop; the statistics reduced so far are discarded."""


# ---------------------------------------------------------------------------------------------- noise sources

class GaussianNoise:
    """x + σ·z for copies [start, stop) of one seeded stream; no clipping (the certificates assume none)."""

    def __init__(self, sigma: float, stream: NoiseStream) -> None:
        self.sigma, self.stream = sigma, stream

    def copies(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return gaussian_copies(x, self.sigma, self.stream, start, stop)


class UniformBallNoise:
    """x + η, η uniform in the ℓ2 ball of `radius`, for copies [start, stop) of one seeded stream."""

    def __init__(self, radius: float, stream: NoiseStream) -> None:
        self.radius, self.stream = radius, stream

    def copies(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return x + uniform_ball(self.stream, start, stop, self.radius)


class Reducer(Protocol):
    def update(self, noisy: torch.Tensor, attr: torch.Tensor) -> None:
        """Fold one batch: its noisy inputs [B,C,H,W] and their attributions [B,H,W] (detached)."""


# ---------------------------------------------------------------------------------------------- batching

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
MAX_BATCH_SIZE = 4096


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


def resolve_batch_size(batch_size: object, x: torch.Tensor) -> int:
    """`batch_size` checked (a positive integer), or the automatic size when None."""
    if batch_size is None:
        return auto_batch_size(x, x.device.type)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise CertlibError(f"batch_size must be an integer in [1, {MAX_BATCH_SIZE}], got {batch_size!r}")
    return int(batch_size)


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


def clean_attribution(attribute: AttributionFn, x: torch.Tensor) -> torch.Tensor:
    """The attribution of the clean image x [1,C,H,W], checked to be one map [1,H,W]."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise CertlibError(f"x must be one image [1,C,H,W], got shape {tuple(x.shape)}")
    with torch.enable_grad():
        clean = attribute(x).detach()
    if clean.shape != (1, *x.shape[-2:]):
        raise CertlibError(f"the attribution returned shape {tuple(clean.shape)}, expected {(1, *x.shape[-2:])}")
    return clean


# ---------------------------------------------------------------------------------------------- the loop

@torch.no_grad()
def stream(attribute: AttributionFn, x: torch.Tensor, noise, total: int, reducers: Sequence[Reducer],
           batch_size: int, progress: ProgressFn | None = None, done: int = 0, grand_total: int | None = None,
           cancel: CancelFn | None = None, first: int = 0) -> None:
    """Attribute copies first..total-1 of `noise` around x in batches and fold each batch into every reducer.
    Starting at `first` continues an earlier stream exactly (copy j depends on j only). Progress reports
    (done + copies so far in this call, grand_total), so several streams can share one bar."""
    grand_total = total - first if grand_total is None else grand_total
    for start in range(first, total, batch_size):
        if cancel is not None and cancel():
            raise Cancelled(f"stopped after {start} of {total} noisy copies")
        stop = min(total, start + batch_size)
        noisy = noise.copies(x, start, stop)
        with torch.enable_grad():       # gradient methods need autograd; the reducers do not
            attr = attribute_splitting(attribute, noisy).detach()
        for reducer in reducers:
            reducer.update(noisy, attr)
        if progress is not None:
            progress(done + stop - first, grand_total)
