"""Seeded noise: independence inside a batch, batch-size invariance, exact uniform-ball sampling."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from certlib.errors import CertlibError
from certlib.noise import CHUNK, NoiseStream, gaussian_copies, uniform_ball


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


def test_check_streams_never_share_a_chunk_seed_with_the_run_streams():
    """Within one seed, stream s chunk c and stream s' chunk c' get the same generator seed iff
    B·(s − s') + C·(c − c') ≡ 0 (mod 2⁶³ − 1), independent of the seed. Solve it exactly for every pair of streams
    a run and its checks use: the colliding chunk offset is astronomically far from any reachable chunk."""
    from certlib import noise

    M, B, C = 2**63 - 1, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
    assert noise._chunk_generator(5, 1, 3, "cpu").initial_seed() == (5 * 0x9E3779B97F4A7C15 + B + 3 * C) % M
    g = math.gcd(C, M)                         # 7: solvable only when g divides the right-hand side
    m = M // g
    c_inv = pow(C // g, -1, m)
    run_streams = (noise.SELECTION, noise.ESTIMATION, noise.UNIFORM)
    checks = range(noise.CHECK_STREAMS, noise.CHECK_STREAMS + noise.MAX_CHECKS)
    reachable = 2**40                          # chunks of 32 copies: far beyond any n a run can draw
    for s in run_streams + tuple(checks):
        for t in checks:
            if s == t:
                continue
            r = (-B * (s - t)) % M
            if r % g:
                continue                       # no chunk offset at all collides
            dc = (r // g * c_inv) % m          # all colliding offsets are dc + k·m; the nearest to 0:
            dc = dc - m if dc > m // 2 else dc
            assert abs(dc) > reachable, (s, t, dc)
