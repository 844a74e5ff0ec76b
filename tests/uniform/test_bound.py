"""Uniform-ball bounds against mpmath at high precision, Monte-Carlo volumes, and inverses."""
import math

import mpmath
import numpy as np
import pytest

from certlib.uniform import bound as ub
from certlib.errors import CertlibError

mpmath.mp.dps = 60
DIMS = [2, 3, 784, 3072, 150528]
RATIOS = [1e-6, 1e-4, 1e-3, 0.01, 0.1, 0.5, 1.0, 1.9]


def _mp_overlap(d, ratio):
    """Two caps of height r(1 - ratio/2), each (1/2) I_{1-(ratio/2)^2}((d+1)/2, 1/2), summed, in mpmath at 60
    digits; written via I_x(a, b) = 1 - I_{1-x}(b, a), whose series converges for every d tested."""
    with mpmath.workdps(400):  # enough digits that 1 - I keeps overlaps down to 1e-300
        y = (mpmath.mpf(ratio) / 2) ** 2
        return +(1 - mpmath.betainc(mpmath.mpf(1) / 2, mpmath.mpf(d + 1) / 2, 0, y, regularized=True))


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("ratio", RATIOS)
def test_overlap_and_its_complement_match_mpmath(d, ratio):
    exact = _mp_overlap(d, ratio)
    # relative 1e-12 where the overlap matters; overlaps below 1e-3 come from scipy's direct I_x(a, 1/2), ~1e-11
    rel = 1e-12 if exact > 1e-3 else 1e-10
    assert ub.ball_overlap_fraction(d, 1.0, ratio) == pytest.approx(float(exact), rel=rel, abs=1e-300)
    comp = 1 - exact
    assert ub.ball_non_overlap_fraction(d, 2.0, 2 * ratio) == pytest.approx(float(comp), rel=1e-10)


def test_overlap_in_2d_is_the_lens_area():
    """Independent formula: the lens of two unit discs at distance e has area 2 acos(e/2) - (e/2) sqrt(4 - e^2)."""
    for e in (0.1, 0.7, 1.3, 1.99):
        lens = 2 * math.acos(e / 2) - (e / 2) * math.sqrt(4 - e * e)
        assert ub.ball_overlap_fraction(2, 1.0, e) == pytest.approx(lens / math.pi, rel=1e-12)


@pytest.mark.parametrize("d", [1, 2, 3, 5, 10])
def test_overlap_matches_a_monte_carlo_volume(d):
    rng = np.random.default_rng(d)
    n = 200_000
    z = rng.standard_normal((n, d))
    pts = z / np.linalg.norm(z, axis=1, keepdims=True) * rng.random((n, 1)) ** (1 / d)  # uniform in B(0, 1)
    for e in (0.2, 0.8, 1.5):
        inside = np.linalg.norm(pts - np.eye(d)[0] * e, axis=1) <= 1
        se = math.sqrt(0.25 / n)
        assert abs(inside.mean() - ub.ball_overlap_fraction(d, 1.0, e)) < 5 * se


def test_disjoint_and_coincident_balls():
    assert ub.ball_overlap_fraction(50, 1.0, 2.0) == 0.0 and ub.ball_overlap_fraction(50, 1.0, 5.0) == 0.0
    assert ub.ball_overlap_fraction(50, 1.0, 0.0) == 1.0 and ub.ball_non_overlap_fraction(50, 1.0, 0.0) == 0.0


def test_cosine_bounds_against_their_geometry():
    """Paper T is the cosine when the change of norm a is orthogonal to h; the strict bound is the worst case over
    all changes of norm a, found here by brute force over angles in the plane of h and the change."""
    h, M, d, r, eps = 0.8, 1.0, 784, 1.0, 0.005
    a = ub.difference_bound(M, d, r, eps)
    assert 0 < a < h
    hv = np.array([h, 0.0])
    ortho = hv + np.array([0.0, a])
    assert ub.cosine_lower_bound(h, M, d, r, eps) == pytest.approx(hv @ ortho / (h * np.linalg.norm(ortho)))
    angles = np.linspace(0, 2 * np.pi, 200_001)
    moved = hv[None] + a * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    worst = np.min(moved @ hv / (h * np.linalg.norm(moved, axis=1)))
    assert ub.cosine_lower_bound(h, M, d, r, eps, bound="strict") == pytest.approx(worst, abs=1e-9)
    assert worst < ub.cosine_lower_bound(h, M, d, r, eps)  # the published form is not the worst case


def test_bounds_fall_with_eps_and_rise_with_r():
    eps = np.linspace(0, 0.5, 50)
    for bound in ub.BOUNDS:
        t = [ub.cosine_lower_bound(0.5, 1.0, 3072, 1.0, e, bound) for e in eps]
        assert all(b <= a + 1e-15 for a, b in zip(t, t[1:]))
        rs = [ub.cosine_lower_bound(0.5, 1.0, 3072, r, 0.01, bound) for r in (0.5, 1, 2, 4)]
        assert all(b >= a for a, b in zip(rs, rs[1:]))


@pytest.mark.parametrize("bound", ub.BOUNDS)
@pytest.mark.parametrize("d", [3, 784, 150528])
def test_inverses_round_trip(bound, d):
    h, M, r, T = 0.6, 1.0, 0.5, 0.9
    e = ub.max_certified_eps(h, M, d, r, T, bound)
    assert 0 < e < 2 * r
    assert ub.cosine_lower_bound(h, M, d, r, e, bound) == pytest.approx(T, abs=1e-9)
    assert ub.cosine_lower_bound(h, M, d, r, e * 1.001, bound) < T
    r_min = ub.min_smoothing_radius(h, M, d, e, T, bound)
    assert r_min == pytest.approx(r, rel=1e-6)


def test_a_small_h_certifies_only_a_tiny_eps():
    # ‖h‖ = 0.01 against M = 1: ε → 0 still certifies (a → 0), but only a tiny ε reaches T = 0.999999.
    e = ub.max_certified_eps(0.01, 1.0, 10, 0.1, 0.999999, "strict")
    assert 0 < e < 1e-4
    assert ub.cosine_lower_bound(0.01, 1.0, 10, 0.1, e, "strict") == pytest.approx(0.999999, abs=1e-9)


def test_strict_bound_is_minus_one_once_the_change_can_exceed_h():
    """With a > ‖h‖ the moved map h + Δ can be −t·h: cos = −1 is reachable, so no bound above −1 is valid."""
    h, M, d, r = 0.3, 1.0, 2, 1.0
    eps = 0.5
    a = ub.difference_bound(M, d, r, eps)
    assert a > h
    hv, moved = np.array([h, 0.0]), np.array([h - a, 0.0])
    assert hv @ moved / (h * np.linalg.norm(moved)) == -1.0
    assert ub.cosine_lower_bound(h, M, d, r, eps, "strict") == -1.0
    assert ub.cosine_lower_bound(h, M, d, r, eps, "paper") > 0  # the published form still claims a positive cosine


@pytest.mark.parametrize("call, message", [
    (lambda: ub.ball_overlap_fraction(0, 1.0, 0.1), r"d must be an integer in \[1, 1,000,000,000\], got 0"),
    (lambda: ub.ball_overlap_fraction(3, -1.0, 0.1), "r must be a positive number, got -1.0"),
    (lambda: ub.ball_overlap_fraction(3, 1.0, -0.1), "eps must be a non-negative number"),
    (lambda: ub.cosine_lower_bound(0.0, 1.0, 3, 1.0, 0.1), "h_norm must be a positive number"),
    (lambda: ub.cosine_lower_bound(0.5, 1.0, 3, 1.0, 0.1, bound="loose"), "bound must be one of"),
    (lambda: ub.max_certified_eps(0.5, 1.0, 3, 1.0, 1.0), r"T must be in \(0, 1\), got 1.0"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(CertlibError, match=message):
        call()


def test_norm_confidence_bound_covers_the_truth():
    """Falsification: i.i.d. vectors with ‖g‖ = M and a known mean; the lower bound must hold in ≥ 1 − δ of runs."""
    rng = np.random.default_rng(0)
    M, n, delta, dim, runs = 1.0, 50, 0.1, 30, 400
    true_norm = 0.1  # each coordinate is ±1/sqrt(dim) with P(+) = 0.55: mean 0.1/sqrt(dim), norm 0.1
    misses = 0
    for _ in range(runs):
        g = rng.choice([-1.0, 1.0], size=(n, dim), p=[0.45, 0.55]) / np.sqrt(dim)
        lower = ub.h_norm_lower_confidence(float(np.linalg.norm(g.mean(0))), M, n, delta)
        misses += lower > true_norm
    assert misses / runs <= delta
    t = 1e-3 + math.sqrt(2 * math.log(100)) * 1e-3
    assert ub.h_norm_lower_confidence(0.5, 1.0, 10**6, 0.01) == pytest.approx(0.5 - t)


def test_uniform_sampler_mean_of_a_linear_map():
    """g(x) = x (one channel): h(x) = x exactly since E[η] = 0; the estimate is within its standard error."""
    import torch

    from certlib.smoothing.sampling import sample_uniform_mean

    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    r, n, d = 0.8, 4000, 64
    est = sample_uniform_mean(lambda xb: xb[:, 0], x, r, n, M=1e6, bound_mode="clip", seed=1, batch_size=256)
    se = r / math.sqrt((d + 2) * n)  # per-coordinate sd of a uniform-ball sample is r / sqrt(d + 2)
    assert np.abs(est.mean - x[0, 0].numpy()).max() < 5 * se
    again = sample_uniform_mean(lambda xb: xb[:, 0], x, r, n, M=1e6, bound_mode="clip", seed=1, batch_size=100)
    assert np.allclose(again.mean, est.mean, rtol=0, atol=1e-12)  # batch size does not change the draws


def test_bound_modes_enforce_the_norm():
    import torch

    from certlib.smoothing.sampling import bound_maps

    attr = torch.randn(5, 6, 6) * torch.tensor([0.1, 1, 10, 100, 0.0]).view(5, 1, 1)
    norms = bound_maps(attr, 2.0, "normalise").flatten(1).norm(dim=1)
    assert torch.allclose(norms[:4], torch.full((4,), 2.0)) and norms[4] == 0
    clipped = bound_maps(attr, 2.0, "clip").flatten(1).norm(dim=1)
    assert torch.all(clipped <= 2.0 + 1e-5) and torch.isclose(clipped[0], attr[0].norm())
    with pytest.raises(CertlibError, match="bound_mode must be one of"):
        bound_maps(attr, 1.0, "squash")
