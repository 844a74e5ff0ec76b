"""Seeded noise: independence inside a batch, batch-size invariance, exact uniform-ball sampling."""
import re

import numpy as np
import pytest
import torch
from scipy import stats

from certlib.errors import CertlibError
from certlib.smoothing.noise import CHUNK, NoiseStream, gaussian_copies, uniform_ball


def test_copies_in_one_batch_get_independent_noise():
    z = NoiseStream((1, 8, 8), seed=0, stream=0).standard_normal(0, 64).flatten(1)
    assert len({tuple(row.tolist()) for row in z}) == 64
    corr = np.corrcoef(z.numpy())
    off = corr[~np.eye(64, dtype=bool)]
    assert np.abs(off).max() < 0.5 and abs(off.mean()) < 0.02


def test_noise_does_not_depend_on_batch_size():
    s = NoiseStream((3, 5, 5), seed=11, stream=1)
    whole = s.standard_normal(0, 3 * CHUNK + 5)
    for bs in (1, 7, CHUNK, 50):
        parts = [NoiseStream((3, 5, 5), seed=11, stream=1).standard_normal(i, min(i + bs, 3 * CHUNK + 5))
                 for i in range(0, 3 * CHUNK + 5, bs)]
        assert torch.equal(torch.cat(parts), whole)


def test_streams_and_seeds_differ_and_are_standard_normal():
    a = NoiseStream((16, 16), seed=1, stream=0).standard_normal(0, 200)
    b = NoiseStream((16, 16), seed=1, stream=1).standard_normal(0, 200)
    c = NoiseStream((16, 16), seed=2, stream=0).standard_normal(0, 200)
    assert not torch.equal(a, b) and not torch.equal(a, c)
    assert stats.kstest(a.flatten().numpy(), "norm").pvalue > 1e-3


def test_gaussian_copies_scale_and_sigma_check():
    x = torch.full((1, 1, 16, 16), 0.5)
    s = NoiseStream((1, 16, 16), seed=0, stream=0)
    noisy = gaussian_copies(x, 0.25, s, 0, 400)
    assert abs(float((noisy - 0.5).std()) - 0.25) < 0.01
    assert float(noisy.min()) < 0 and float(noisy.max()) > 1  # no clipping to [0,1]
    for bad in (0, -0.1, float("nan")):
        with pytest.raises(CertlibError, match="sigma must be a positive number"):
            gaussian_copies(x, bad, s, 0, 2)


@pytest.mark.parametrize("d_shape", [(2,), (3,), (1, 4, 4)])
def test_uniform_ball_is_exactly_uniform(d_shape):
    d = int(np.prod(d_shape))
    r = 1.7
    u = uniform_ball(NoiseStream(d_shape, seed=3, stream=2), 0, 4000, r).reshape(4000, -1).double()
    norms = u.norm(dim=1).numpy()
    assert norms.max() <= r * (1 + 1e-6)
    # uniform in the ball <=> (|u|/r)^d ~ U(0,1) and the direction is uniform on the sphere
    assert stats.kstest((norms / r) ** d, "uniform").pvalue > 1e-3
    assert np.abs(u.mean(0).numpy()).max() < 4 * r / np.sqrt(4000)
    if d == 2:  # in 2-D the angle is uniform
        angles = np.arctan2(u[:, 1].numpy(), u[:, 0].numpy())
        assert stats.kstest(angles, stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 1e-3


def test_uniform_ball_in_high_dimension_hugs_the_sphere():
    d_shape = (3, 64, 64)
    u = uniform_ball(NoiseStream(d_shape, seed=0, stream=2), 0, 64, 2.0)
    norms = u.flatten(1).norm(dim=1)
    assert float(norms.max()) <= 2.0 + 1e-4 and float(norms.min()) > 2.0 * 0.999


def test_every_chunk_of_every_stream_has_its_own_generator_input():
    """The chunk generators are seeded from numpy SeedSequences keyed by the whole (seed, stream, chunk): distinct
    triples are distinct inputs (the 64-bit seed is padded to the 128-bit pool before the spawn key, so no seed
    can imitate a stream), and their 128-bit states differ. So "Check it" streams never reuse a run's noise."""
    from certlib.smoothing import noise

    run_streams = (noise.SELECTION, noise.ESTIMATION, noise.UNIFORM)
    checks = tuple(range(noise.CHECK_STREAMS, noise.CHECK_STREAMS + noise.MAX_CHECKS))
    states = {}
    for seed in (0, 1, 2**32, 2**63, 2**64 - 1):
        for s in run_streams + checks:
            for c in (0, 1, 2**20):
                state = tuple(noise._chunk_seed_sequence(seed, s, c).generate_state(4).tolist())
                assert state not in states, (seed, s, c, states.get(state))
                states[state] = (seed, s, c)


@pytest.mark.parametrize("low", [0, 12345])
def test_seeds_differing_only_in_the_high_32_bits_draw_different_noise(low):
    """torch's CPU generator keeps only 32 bits of its seed; the noise must depend on all 64 bits of ours."""
    base = NoiseStream((3, 8, 8), seed=low, stream=1).standard_normal(0, 40)
    for high in (1, 2**31, 2**32 - 1):
        other = NoiseStream((3, 8, 8), seed=low + (high << 32), stream=1).standard_normal(0, 40)
        assert not torch.equal(base, other), high
        assert float((base - other).abs().mean()) > 0.5        # independent draws, not a small perturbation
    u0 = NoiseStream((2,), seed=low, stream=2).uniform(0, 40)
    u1 = NoiseStream((2,), seed=low + 2**40, stream=2).uniform(0, 40)
    assert not torch.equal(u0, u1)


def test_the_largest_seed_works_and_is_reproducible():
    top = 2**64 - 1
    a = NoiseStream((4, 4), seed=top, stream=0).standard_normal(0, 33)
    b = NoiseStream((4, 4), seed=np.uint64(top), stream=0).standard_normal(30, 33)
    assert torch.equal(a[30:], b)
    assert stats.kstest(a.flatten().numpy(), "norm").pvalue > 1e-4


@pytest.mark.parametrize("bad", [-1, 2**64, 2**70, 1.5, "3", True, None])
def test_seeds_outside_the_range_are_refused_naming_the_value(bad):
    with pytest.raises(CertlibError, match=r"seed must be an integer in \[0, 2\*\*64\), got " + re.escape(repr(bad))):
        NoiseStream((2, 2), seed=bad, stream=0)


def test_float64_noise_is_drawn_in_float64():
    z = NoiseStream((5, 5), seed=3, stream=0, dtype=torch.float64).standard_normal(0, 4)
    assert z.dtype == torch.float64
    z32 = NoiseStream((5, 5), seed=3, stream=0).standard_normal(0, 4)
    assert z32.dtype == torch.float32
