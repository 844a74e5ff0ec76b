"""Seeded noise for randomized smoothing: Gaussian and uniform in an l2 ball, in [0,1] pixel space.

Noise for sample j is a function of (seed, stream, j) only, never of the batch size: it is drawn in fixed chunks of
CHUNK samples, each chunk from its own generator. So the same config gives the same numbers whatever batch size the
memory allows, and every copy in a batch gets its own independent draw (SegCertify's HRNet patch gave every item of
a batch the same draw; tests/test_noise.py guards against that). Seeds are integers in [0, 2^64), and all 64 bits
of a seed reach the generator: two seeds never share noise, whatever bits they differ in.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from certlib import validate
from certlib.errors import CertlibError

CHUNK = 32
# Streams separate the draws of one run: selection and estimation samples must be independent (design §3.2).
SELECTION, ESTIMATION, UNIFORM = 0, 1, 2
# "Check it" re-estimates at x + δ_j from stream CHECK_STREAMS + j of the run's own seed: never the run's streams,
# whatever seed the user picked (each (seed, stream, chunk) is its own SeedSequence input, see _chunk_seed_sequence).
CHECK_STREAMS = 16
MAX_CHECKS = 16


SEED_LIMIT = 2**64        # seeds are integers in [0, 2^64): every one of them draws its own noise


def check_seed(seed: object) -> int:
    """`seed` as an int, or a CertlibError naming it: an integer in [0, 2^64) (numpy integers accepted, bools not)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < SEED_LIMIT:
        raise CertlibError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


def _chunk_seed_sequence(seed: int, stream: int, chunk: int) -> np.random.SeedSequence:
    """The seed of one chunk: numpy's SeedSequence hash of all 64 bits of `seed` (zero-padded to its 128-bit pool,
    so it cannot run into the key) with (stream, chunk) as the spawn key, i.e. a distinct, independent stream for
    every (seed, stream, chunk). torch's CPU generator (mt19937) keeps only the low 32 bits of its seed, so a
    64-bit seed mixed into it went through a 32-bit bottleneck: two seeds, or two chunks, could share noise."""
    if not 0 <= stream < 2**32 or not 0 <= chunk < 2**32:   # each must stay one 32-bit word of the spawn key
        raise CertlibError(f"noise stream and chunk must be in [0, 2**32), got stream {stream}, chunk {chunk}")
    return np.random.SeedSequence(entropy=seed, spawn_key=(stream, chunk))


def _numpy_chunk(seq: np.random.SeedSequence, shape: tuple[int, ...], dtype: torch.dtype) \
        -> tuple[torch.Tensor, torch.Tensor]:
    """CPU: Gaussian (ziggurat, drawn in float32 or float64) then U(0,1) in float64, from PCG64 seeded by `seq`."""
    gen = np.random.Generator(np.random.PCG64(seq))
    draw = np.float64 if dtype == torch.float64 else np.float32
    z = torch.from_numpy(gen.standard_normal((CHUNK, *shape), dtype=draw)).to(dtype)
    return z, torch.from_numpy(gen.random(CHUNK))


def _torch_chunk(seq: np.random.SeedSequence, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) \
        -> tuple[torch.Tensor, torch.Tensor]:
    """CUDA (and other accelerators): their Philox generator takes a full 64-bit seed; it is drawn from `seq`."""
    gen = torch.Generator(device=device).manual_seed(int(seq.generate_state(1, np.uint64)[0]))
    z = torch.randn((CHUNK, *shape), generator=gen, device=device, dtype=dtype)
    return z, torch.rand(CHUNK, generator=gen, device=device, dtype=torch.float64)


class NoiseStream:
    """Standard normal draws for samples [start, stop) of one stream, shape [stop-start, *sample_shape]."""

    def __init__(self, sample_shape: tuple[int, ...], seed: int, stream: int, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.sample_shape, self.seed, self.stream = tuple(sample_shape), check_seed(seed), int(stream)
        self.device, self.dtype = torch.device(device), dtype
        self._cached: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def _chunk(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(Gaussian [CHUNK, *sample_shape], uniform(0,1) [CHUNK] in float64) of chunk `index`."""
        if self._cached is None or self._cached[0] != index:
            seq = _chunk_seed_sequence(self.seed, self.stream, index)
            if self.device.type == "cpu":
                z, u = _numpy_chunk(seq, self.sample_shape, self.dtype)
            else:
                z, u = _torch_chunk(seq, self.sample_shape, self.dtype, self.device)
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
