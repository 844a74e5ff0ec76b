"""Seeded noise for randomized smoothing: Gaussian and uniform in an l2 ball, in [0,1] pixel space.

Noise for sample j is a function of (seed, stream, j) only, never of the batch size: it is drawn in fixed chunks of
CHUNK samples, each chunk from its own generator. So the same config gives the same numbers whatever batch size the
memory allows, and every copy in a batch gets its own independent draw (SegCertify's HRNet patch gave every item of
a batch the same draw; tests/test_noise.py guards against that).
"""
from __future__ import annotations

import math

import torch

from certlib import validate
from certlib.errors import CertlibError

CHUNK = 32
# Streams separate the draws of one run: selection and estimation samples must be independent (design §3.2).
SELECTION, ESTIMATION, UNIFORM = 0, 1, 2
# "Check it" re-estimates at x + δ_j from stream CHECK_STREAMS + j of the run's own seed: never the run's streams,
# whatever seed the user picked (with one seed the chunk seeds of two streams differ by a seed-independent amount,
# which tests/test_noise.py shows is never 0 for any chunk index a run can reach).
CHECK_STREAMS = 16
MAX_CHECKS = 16


def _chunk_generator(seed: int, stream: int, chunk: int, device: torch.device) -> torch.Generator:
    # Mix seed, stream and chunk into one 63-bit seed (splitmix-style constants keep nearby inputs apart).
    mixed = (seed * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9 + chunk * 0x94D049BB133111EB) % (2**63 - 1)
    return torch.Generator(device=device).manual_seed(mixed)


class NoiseStream:
    """Standard normal draws for samples [start, stop) of one stream, shape [stop-start, *sample_shape]."""

    def __init__(self, sample_shape: tuple[int, ...], seed: int, stream: int, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.sample_shape, self.seed, self.stream = tuple(sample_shape), int(seed), int(stream)
        self.device, self.dtype = torch.device(device), dtype
        self._cached: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def _chunk(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(Gaussian [CHUNK, *sample_shape], uniform(0,1) [CHUNK] in float64) of chunk `index`."""
        if self._cached is None or self._cached[0] != index:
            gen = _chunk_generator(self.seed, self.stream, index, self.device)
            z = torch.randn((CHUNK, *self.sample_shape), generator=gen, device=self.device, dtype=self.dtype)
            u = torch.rand(CHUNK, generator=gen, device=self.device, dtype=torch.float64)
            self._cached = (index, z, u)
        return self._cached[1], self._cached[2]

    def _take(self, start: int, stop: int, which: int) -> torch.Tensor:
        if not 0 <= start < stop:
            raise CertlibError(f"sample range must satisfy 0 <= start < stop, got [{start}, {stop})")
        parts = []
        j = start
        while j < stop:
            index, offset = divmod(j, CHUNK)
            take = min(CHUNK - offset, stop - j)
            parts.append(self._chunk(index)[which][offset:offset + take])
            j += take
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def standard_normal(self, start: int, stop: int) -> torch.Tensor:
        return self._take(start, stop, 0)

    def uniform(self, start: int, stop: int) -> torch.Tensor:
        """U(0,1) per sample (float64), drawn beside the Gaussian of the same chunk, independent of it."""
        return self._take(start, stop, 1)


def check_sigma(sigma: float) -> float:
    return validate.sigma(sigma)        # one definition of a valid σ (numpy scalars included)


def gaussian_copies(x: torch.Tensor, sigma: float, stream: NoiseStream, start: int, stop: int) -> torch.Tensor:
    """x [1,C,H,W] -> [stop-start,C,H,W] copies x + σ·z, no clipping (the certificate assumes none)."""
    return x + check_sigma(sigma) * stream.standard_normal(start, stop)


def uniform_ball(stream: NoiseStream, start: int, stop: int, radius: float) -> torch.Tensor:
    """Exact uniform samples in the l2 ball of `radius` in d = prod(sample_shape) dimensions:
    direction = normalised Gaussian, norm = radius * U^(1/d)."""
    if not (math.isfinite(radius) and radius > 0):
        raise CertlibError(f"radius must be a positive number, got {radius!r}")
    z = stream.standard_normal(start, stop)
    flat = z.flatten(1)
    d = flat.shape[1]
    direction = flat / flat.norm(dim=1, keepdim=True)
    # Norm radius * U^(1/d), computed in float64: for d ~ 1e5 the exponent is tiny and float32 would round it.
    norms = (radius * stream.uniform(start, stop).pow(1.0 / d)).to(z.dtype).unsqueeze(1)
    return (direction * norms).view_as(z)
