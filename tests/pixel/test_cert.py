"""§3 pixel certificate: the base function h^K on hand cases and against numpy, the decision on hand cases and
against an independent recomputation, and a Monte-Carlo falsification of the whole procedure on a base function
whose smoothed probabilities are known in closed form."""
import math
import time

import numpy as np
import pytest
import torch
from scipy.stats import binom, binomtest, norm

import certlib.smoothing.sampling as sampling
from certlib.errors import CertlibError
from certlib.pixel.cert import (PixelCertificate, certified_radius, certify_pixels, clean_scale, decide,
                                pixel_pvalues, top_k_mask, top_k_masks)


def _holm_loop(p, alpha):
    """Holm written out plainly (kept independent of certlib.stats)."""
    flat = list(np.asarray(p, dtype=float).ravel())
    m = len(flat)
    rejected = [False] * m
    for rank, index in enumerate(sorted(range(m), key=lambda i: flat[i])):
        if flat[index] > alpha / (m - rank):
            break
        rejected[index] = True
    return np.array(rejected).reshape(np.shape(p))


# ------------------------------------------------------------------------------------------------ radius

def test_certified_radius_by_hand():
    assert certified_radius(0.25, 0.75) == pytest.approx(0.25 * 0.6744897501960817, rel=1e-14)
    assert certified_radius(0.5, 0.5) == 0.0
    r = certified_radius(0.33, 0.99)
    assert 0.5 * (1 + math.erf(r / 0.33 / math.sqrt(2))) == pytest.approx(0.99, rel=1e-13)   # Φ(R/σ) = τ


# ------------------------------------------------------------------------------------------------ base function

def _map(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype).reshape(1, 4, 4)


def test_top_k_of_a_4x4_map_by_hand():
    a = _map(np.arange(1, 17))
    # s = 99.5th percentile of 1..16 = 15 + 0.925; 16/s is clipped to 1. 75th percentile at position 11.25:
    # between 12/s and 13/s, so exactly 13, 14, 15, 16 are strictly above.
    assert clean_scale(a[0]) == pytest.approx(15.925, rel=1e-14)
    mask = top_k_mask(a, 25)
    assert mask.dtype == torch.bool and mask.shape == (1, 4, 4)
    assert torch.equal(mask, a >= 13)


def test_ties_at_the_percentile_give_fewer_than_k_percent():
    a = _map(list(range(1, 9)) + [10] * 8)
    # s = 10: the eight 10s become 1.0 and tie with the 75th percentile (1.0): nobody is strictly above it.
    assert int(top_k_mask(a, 25).sum()) == 0
    assert torch.equal(top_k_mask(a, 50), a == 10)            # median between 0.8 and 1.0
    assert int(top_k_mask(torch.zeros(1, 4, 4), 10).sum()) == 0


def test_clipping_at_s_merges_the_values_above_it():
    a = _map(list(range(1, 13)) + [100, 200, 300, 400])
    # with s = 50 the four large values all clip to 1 and tie
    assert int(top_k_mask(a, 12.5, "paper", scale=50.0).sum()) == 0
    assert torch.equal(top_k_mask(a, 25, "paper", scale=50.0), a >= 100)
    # with s = 1000 nothing clips: the top 12.5% (position 13.125) is 300 and 400
    assert torch.equal(top_k_mask(a, 12.5, "paper", scale=1000.0), a >= 300)


def test_sign_is_dropped_after_clipping():
    a = _map(list(range(1, 16)) + [-100])
    # s = 14.925 from the signed values; -100 clips to -1 and |-1| = 1 makes it the most important pixel
    assert clean_scale(a[0]) == pytest.approx(14.925, rel=1e-14)
    expected = (a >= 13) | (a == -100)
    for normalisation in ("rank", "own_scale"):
        assert torch.equal(top_k_mask(a, 25, normalisation), expected)
    # own scale: 15 / 14.925 and -100 both clip to 1 and tie; at K = 6.25% (position 14.0625) nothing is above 1
    assert int(top_k_mask(a, 6.25, "own_scale").sum()) == 0
    assert torch.equal(top_k_mask(a, 6.25, "rank"), a == -100)   # ranking |a| directly has no such ties


def test_clean_scale_fallbacks_are_documented_behaviour():
    neg = -np.arange(1.0, 17.0).reshape(4, 4)
    # the 99.5th percentile of a negative map is negative: |a| gives 15.925 instead
    assert clean_scale(neg) == pytest.approx(15.925, rel=1e-14)
    assert torch.equal(top_k_mask(torch.from_numpy(neg)[None], 25), torch.from_numpy(neg <= -13)[None])
    assert clean_scale(np.zeros((4, 4))) == 1.0
    rng = np.random.default_rng(0)
    m = rng.standard_cauchy((20, 30))
    assert clean_scale(m) == pytest.approx(np.percentile(m, 99.5), rel=1e-13)
    assert clean_scale(torch.from_numpy(m.astype(np.float32))) == pytest.approx(np.percentile(m, 99.5), rel=1e-6)


def _numpy_top_k(a, k, normalisation="rank", s=None):
    """Reference: design §3.1 step by step in numpy (float64), one map at a time."""
    a = a.astype(np.float64)
    if normalisation == "rank":
        v = np.abs(a)
    else:
        if normalisation == "own_scale":
            s = np.percentile(a, 99.5)
        v = np.abs(np.clip(a / s, -1, 1))
    return v > np.percentile(v, 100 - k)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("normalisation, scale", [("rank", None), ("own_scale", None), ("paper", 0.7)])
def test_top_k_masks_match_numpy_percentiles_on_random_maps(dtype, normalisation, scale):
    rng = np.random.default_rng(1)
    ks = (1, 5, 10, 25, 33.3, 50, 75, 100)
    a = (rng.standard_t(3, size=(4, 13, 17)) + 0.3).astype(dtype)
    masks = top_k_masks(torch.from_numpy(a), ks, normalisation, scale).numpy()
    assert masks.shape == (len(ks), 4, 13, 17)
    for i, k in enumerate(ks):
        for b in range(4):
            assert np.array_equal(masks[i, b], _numpy_top_k(a[b], k, normalisation, scale)), (k, b)
            assert np.array_equal(top_k_mask(torch.from_numpy(a), k, normalisation, scale)[b].numpy(), masks[i, b])


def test_percentile_threshold_in_float64_keeps_exactly_k_percent():
    # 1,024 distinct float32 values whose two middle ones are adjacent float32 numbers: the median lies between
    # them. In float32 it would round onto the upper one and drop a pixel; in float64 it is exact.
    lo = np.nextafter(np.float32(1.0), np.float32(2.0))   # an odd last bit: float32's midpoint rounds up to hi
    hi = np.nextafter(lo, np.float32(2.0))
    values = np.concatenate([np.linspace(0.1, 0.9, 511, dtype=np.float32), [lo, hi],
                             np.linspace(1.5, 3.0, 511, dtype=np.float32)]).astype(np.float32)
    assert len(np.unique(values)) == 1024
    a = torch.from_numpy(np.random.default_rng(0).permutation(values).reshape(1, 32, 32))
    for normalisation in ("rank", "own_scale"):
        assert int(top_k_mask(a, 50, normalisation).sum()) == 512, normalisation
    # the float32 rounding this guards against is real
    f32_median = torch.quantile(torch.from_numpy(values), 0.5)
    assert int((torch.from_numpy(values) > f32_median).sum()) == 511


def test_constant_and_all_zero_maps_have_no_top_pixels():
    for a in (torch.zeros(2, 8, 8), torch.full((2, 8, 8), 3.5), torch.full((2, 8, 8), -2.0)):
        for normalisation in ("rank", "own_scale"):
            assert int(top_k_masks(a, (1, 5, 50, 100), normalisation).sum()) == 0
        assert int(top_k_masks(a, (5, 50), "paper", 1.0).sum()) == 0


def test_paper_normalisation_needs_a_scale_and_the_others_refuse_one():
    a = torch.randn(1, 4, 4)
    with pytest.raises(CertlibError, match="normalisation 'paper' needs scale"):
        top_k_mask(a, 5, "paper")
    with pytest.raises(CertlibError, match="scale is only used by normalisation 'paper'"):
        top_k_mask(a, 5, "rank", 1.0)
    with pytest.raises(CertlibError, match="normalisation must be one of"):
        top_k_mask(a, 5, "clean")


@pytest.mark.parametrize("shape", [(5, 16, 16), (3, 7, 9), (2, 1, 3), (2, 224, 224)])
@pytest.mark.parametrize("ties", [False, True])
def test_partial_topk_thresholds_match_numpy_for_the_upper_levels(shape, ties):
    # K <= 50% takes the partial-topk path (no full sort): each mask must still equal numpy's, ties included.
    rng = np.random.default_rng(sum(shape) + ties)
    a = rng.normal(size=shape).astype(np.float32)
    if ties:
        a = np.round(a * 2) / 2          # few distinct values: thresholds fall on runs of equal values
    ks = (0.5, 1, 5, 10, 25, 49.9, 50)
    masks = top_k_masks(torch.from_numpy(a), ks, "paper", 0.9).numpy()
    for i, k in enumerate(ks):
        for b in range(shape[0]):
            assert np.array_equal(masks[i, b], _numpy_top_k(a[b], k, "paper", 0.9)), (k, b)
    scales = [clean_scale(torch.from_numpy(a[b])) for b in range(shape[0])]
    assert scales == pytest.approx([np.percentile(a[b], 99.5) if np.percentile(a[b], 99.5) > 0
                                    else np.percentile(np.abs(a[b]), 99.5) for b in range(shape[0])], rel=1e-6)


def test_all_finite_catches_nan_inf_and_survives_overflowing_sums():
    from certlib.pixel.cert import all_finite

    big = torch.full((4, 4), 3e38)                       # finite values whose float32 sum overflows to inf
    assert all_finite(big) and all_finite(torch.zeros(3))
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = torch.zeros(5, 5)
        t[2, 3] = bad
        assert not all_finite(t)
    mixed = torch.zeros(3)
    mixed[0], mixed[1] = float("inf"), -float("inf")      # sums to NaN
    assert not all_finite(mixed)


def test_each_map_of_a_batch_uses_its_own_percentile_and_scale():
    rng = np.random.default_rng(2)
    a = torch.from_numpy(rng.normal(size=(3, 9, 9)))
    a[1] = a[0] * 64.0                                    # a power of two: a/s is bit-identical
    ks = (5, 25, 50)
    for normalisation in ("rank", "own_scale"):
        batch = top_k_masks(a, ks, normalisation)
        for b in range(3):
            assert torch.equal(batch[:, b], top_k_masks(a[b:b + 1], ks, normalisation)[:, 0])
        assert torch.equal(batch[:, 0], batch[:, 1])      # a function of each map alone: scaling changes nothing
    fixed = top_k_masks(a, ks, "paper", clean_scale(a[0]))
    for b in range(3):
        assert torch.equal(fixed[:, b], top_k_masks(a[b:b + 1], ks, "paper", clean_scale(a[0]))[:, 0])
    # one shared s: map 1 is 64x larger, everything clips to 1 and ties, so it has no top pixels at all
    assert int(fixed[:, 1].sum()) == 0 and int(fixed[:, 0].sum()) > 0
    # own scale equals passing the map's own clean scale to the paper variant
    assert torch.equal(top_k_masks(a[:1], ks, "own_scale"), top_k_masks(a[:1], ks, "paper", clean_scale(a[0])))


def test_masks_keep_device_and_accept_half_precision():
    a = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(3))
    assert top_k_masks(a, (10,), "paper", 1.0).device == a.device
    assert torch.equal(top_k_mask(a.half(), 10, "paper", 1.0), top_k_mask(a.half().float(), 10, "paper", 1.0))
    assert torch.equal(top_k_mask(a.half(), 10), top_k_mask(a.half().float(), 10))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_masks_on_cuda_equal_cpu():
    a = torch.randn(4, 32, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for normalisation, scale in (("rank", None), ("own_scale", None), ("paper", 0.9)):
        gpu = top_k_masks(a.cuda(), (1, 5, 25, 50), normalisation, scale)
        assert gpu.device.type == "cuda"
        assert torch.equal(gpu.cpu(), top_k_masks(a, (1, 5, 25, 50), normalisation, scale))


@pytest.mark.parametrize("call, message", [
    (lambda: top_k_mask(torch.ones(1, 2, 2), 0), "k_percent must be in (0, 100], got 0"),
    (lambda: top_k_mask(torch.ones(1, 2, 2), 100.5), "k_percent must be in (0, 100], got 100.5"),
    (lambda: top_k_masks(torch.ones(1, 2, 2), []), "k_percents must be a non-empty sequence"),
    (lambda: top_k_masks(torch.ones(1, 2, 2), [5, -1]), "k_percents must be a non-empty sequence"),
    (lambda: top_k_mask(torch.ones(2, 2), 5), "attr must be a torch tensor [B,H,W], got (2, 2)"),
    (lambda: top_k_mask(np.ones((1, 2, 2)), 5), "attr must be a torch tensor [B,H,W]"),
    (lambda: top_k_mask(torch.ones(1, 2, 2, dtype=torch.int64), 5), "attr must be a floating-point tensor"),
    (lambda: top_k_mask(torch.tensor([[[1.0, float("nan")]]]), 5), "attr contains non-finite values"),
    (lambda: top_k_mask(torch.ones(1, 2, 2), 5, "paper", scale=0.0), "scale must be a positive number, got 0.0"),
    (lambda: top_k_mask(torch.ones(1, 2, 2), 5, "paper", scale="big"), "scale must be a positive number, got 'big'"),
    (lambda: clean_scale(np.ones((1, 2, 2))), "clean_attr must be one map [H,W], got shape (1, 2, 2)"),
    (lambda: certified_radius(0.0, 0.75), "sigma must be a positive number, got 0.0"),
    (lambda: certified_radius(-0.1, 0.75), "sigma must be a positive number, got -0.1"),
    (lambda: certified_radius(0.25, 1.0), "tau must be in [0.5, 1), got 1.0"),
    (lambda: certified_radius(0.25, 0.4), "tau must be in [0.5, 1), got 0.4"),
])
def test_base_function_errors_name_the_argument(call, message):
    with pytest.raises(CertlibError) as info:
        call()
    assert message in str(info.value)


# ------------------------------------------------------------------------------------------------ decision

def test_full_votes_certify_exactly_when_alpha_allows():
    modes = np.array([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 1]], dtype=np.int8)
    # 16 tests at alpha = 0.05: 0.75^21 = 0.00238 <= 0.05/16 = 0.003125 < 0.75^20 = 0.00317
    assert 0.75 ** 21 <= 0.05 / 16 < 0.75 ** 20
    out = certify_pixels(np.full((4, 4), 21), modes, 21, 0.75, 0.05)
    assert out.dtype == np.int8 and np.array_equal(out, modes)          # the mode is carried through
    assert np.all(certify_pixels(np.full((4, 4), 20), modes, 20, 0.75, 0.05) == -1)


def test_votes_below_threshold_abstain():
    votes = np.array([[21, 21], [21, 16]])
    modes = np.array([[1, 0], [0, 1]])
    assert certify_pixels(votes, modes, 21, 0.75, 0.05).tolist() == [[1, 0], [0, -1]]
    # at exactly n·τ votes nothing is ever certified
    assert np.all(certify_pixels(np.full((3, 3), 75), np.ones((3, 3)), 100, 0.75, 0.5) == -1)


def test_holm_certifies_a_pixel_that_bonferroni_does_not():
    n, tau, alpha = 100, 0.75, 0.05
    k = next(k for k in range(75, 101) if binomtest(k, n, tau, alternative="greater").pvalue <= alpha)
    assert binomtest(k, n, tau, alternative="greater").pvalue > alpha / 2     # between α/2 and α
    votes, modes = np.array([[100, k]]), np.array([[1, 0]])
    assert certify_pixels(votes, modes, n, tau, alpha, "holm").tolist() == [[1, 0]]
    assert certify_pixels(votes, modes, n, tau, alpha, "bonferroni").tolist() == [[1, -1]]


def test_levels_passed_together_are_corrected_jointly():
    # 0.75^16 = 0.0100 is within alpha/4 (one level of 2x2) but not alpha/8 (two levels)
    assert 0.05 / 8 < 0.75 ** 16 <= 0.05 / 4
    votes, modes = np.full((2, 2, 2), 16), np.ones((2, 2, 2), dtype=np.int8)
    for level in range(2):
        assert np.all(certify_pixels(votes[level], modes[level], 16, 0.75, 0.05) == 1)
    joint = certify_pixels(votes, modes, 16, 0.75, 0.05)
    assert joint.shape == (2, 2, 2) and np.all(joint == -1)


def test_pixel_pvalues_match_scipy_binomtest():
    ks = np.arange(31).reshape(1, 31)
    p = pixel_pvalues(ks, 30, 0.8)
    assert p.shape == (1, 31) and p.dtype == np.float64
    for k in range(31):
        assert p[0, k] == pytest.approx(binomtest(k, 30, 0.8, alternative="greater").pvalue, rel=1e-12)


@pytest.mark.parametrize("correction", ["holm", "bonferroni"])
def test_certify_pixels_matches_an_independent_recomputation(correction):
    rng = np.random.default_rng(5)
    n, tau, alpha = 64, 0.7, 0.05
    votes = rng.binomial(n, rng.uniform(0.6, 1.0, (3, 6, 7)))
    modes = rng.integers(0, 2, (3, 6, 7))
    p = np.vectorize(lambda k: binomtest(int(k), n, tau, alternative="greater").pvalue)(votes)
    rejected = _holm_loop(p, alpha) if correction == "holm" else p <= alpha / p.size
    assert 0 < rejected.sum() < p.size                                   # a mixed case, not all-or-nothing
    expected = np.where(rejected, modes, -1)
    assert np.array_equal(certify_pixels(votes, modes, n, tau, alpha, correction), expected)


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=0.0), "alpha must be in (0, 1), got 0.0"),
    (dict(alpha=1.0), "alpha must be in (0, 1), got 1.0"),
    (dict(tau=1.0), "tau must be in [0.5, 1), got 1.0"),
    (dict(tau=0.3), "tau must be in [0.5, 1), got 0.3"),
    (dict(correction="sidak"), "correction must be one of ('holm', 'bonferroni'), got 'sidak'"),
    (dict(modes=np.ones((3, 2))), "votes_for_mode shape (2, 3) and modes shape (3, 2) must be equal"),
    (dict(votes_for_mode=np.ones(6), modes=np.ones(6)), "votes_for_mode must be [H,W] or [K,H,W], got shape (6,)"),
    (dict(modes=np.full((2, 3), 2)), "modes must be 0 or 1, got 2"),
    (dict(votes_for_mode=np.full((2, 3), 11)), "k must satisfy 0 <= k <= n, got k = 11"),
    (dict(n=0), "n must be an integer in [1, 10,000,000], got 0"),
    (dict(n=10.0), "n must be an integer in [1, 10,000,000], got 10.0"),
    (dict(n=10**10), "n must be an integer in [1, 10,000,000], got 10000000000"),
])
def test_certify_pixels_errors_name_the_argument(kwargs, message):
    args = dict(votes_for_mode=np.full((2, 3), 10), modes=np.ones((2, 3)), n=10, tau=0.75, alpha=0.05,
                correction="holm")
    args.update(kwargs)
    with pytest.raises(CertlibError) as info:
        certify_pixels(**args)
    assert message in str(info.value)
    with pytest.raises(CertlibError):
        decide(args["votes_for_mode"], args["modes"], args["n"], 0.25, args["tau"], args["alpha"],
               args["correction"])


def test_decide_bundles_a_consistent_certificate():
    rng = np.random.default_rng(6)
    n = 128
    votes = rng.binomial(n, rng.uniform(0.5, 1.0, (3, 10, 12)))
    modes = rng.integers(0, 2, (3, 10, 12)).astype(np.int8)
    cert = decide(votes, modes, n, 0.25, 0.8, 0.01, "holm")
    assert isinstance(cert, PixelCertificate)
    assert np.array_equal(cert.classes, certify_pixels(votes, modes, n, 0.8, 0.01, "holm"))
    assert np.array_equal(cert.pvalues, pixel_pvalues(votes, n, 0.8))
    assert cert.radius == certified_radius(0.25, 0.8) and cert.num_tests == 360
    for level in range(3):
        c = cert.classes[level]
        assert cert.fractions["certified top-K"][level] == pytest.approx(np.mean(c == 1))
        assert cert.fractions["certified not top-K"][level] == pytest.approx(np.mean(c == 0))
        assert cert.fractions["abstain"][level] == pytest.approx(np.mean(c == -1))
    flat = decide(votes[0], modes[0], n, 0.25, 0.8, 0.01)
    assert flat.classes.shape == (10, 12) and all(len(v) == 1 for v in flat.fractions.values())


def test_decide_min_n_is_where_full_votes_start_to_certify():
    modes = np.ones((2, 5, 5), dtype=np.int8)
    first = decide(np.full((2, 5, 5), 2), modes, 2, 0.3, 0.75, 1e-3)
    n_min = first.min_n
    assert not first.certifiable
    assert np.all(decide(np.full((2, 5, 5), n_min - 1), modes, n_min - 1, 0.3, 0.75, 1e-3).classes == -1)
    at_min = decide(np.full((2, 5, 5), n_min), modes, n_min, 0.3, 0.75, 1e-3)
    assert at_min.certifiable and np.all(at_min.classes == 1)


def test_decide_is_fast_enough_for_a_slider():
    rng = np.random.default_rng(7)
    votes = rng.binomial(256, rng.uniform(0.5, 1, (5, 224, 224)))
    modes = rng.integers(0, 2, (5, 224, 224)).astype(np.int8)
    decide(votes, modes, 256, 0.25, 0.75, 1e-3)
    start = time.perf_counter()
    decide(votes, modes, 256, 0.25, 0.75, 1e-3)
    assert time.perf_counter() - start < 0.5        # ~30 ms measured; generous for a loaded CI machine


# ------------------------------------------------------------------------------------------------ Monte Carlo
# Base function with a known answer: pixel i of h(x) is 1[w_i·x > b_i] for x in R^D. Under x + N(0, σ²I) the
# smoothed probability of class 1 is p_i = Φ((w_i·x − b_i) / (σ‖w_i‖)), so the truth of every certificate is
# known. Most pixels sit just below τ (for class 1 or class 0): a wrong tail or a sample-reuse would certify them.
# n = 31 is the smallest n that can certify anything for 360 tests (0.75^31 = 0.964·α/360): there the binomial
# test is tightest, so a one-step error in the tail (sf(k) for sf(k−1)) certifies ~11x more null pixels.
# Measured over the 200 runs (limit 21): 9 (direct) and 3 (pipeline) runs with a false certificate as built,
# 57 and 72 with the off-by-one tail. Reusing the selection samples cannot be seen in that count (with binary
# classes and τ >= 1/2 it at most doubles a pixel's error, and only when both classes are below τ); the
# unbiasedness test below catches it instead.

TAU, ALPHA, SIGMA, D, N0, N, RUNS = 0.75, 0.05, 0.25, 20, 15, 31, 200


def _truth():
    rng = np.random.default_rng(2025)
    groups = [(160, TAU - rng.uniform(1e-4, 2e-3, 160)),          # class 1 just below τ: must not certify 1
              (80, 1 - TAU + rng.uniform(1e-4, 2e-3, 80)),        # class 0 just below τ: must not certify 0
              (20, rng.uniform(0.4, 0.6, 20)),                    # both classes below τ, the mode is a coin flip
              (30, TAU + rng.uniform(2e-3, 0.05, 30)),            # class 1 just above τ
              (35, rng.uniform(0.97, 0.999, 35)),                 # class 1 robust
              (35, 1 - rng.uniform(0.97, 0.999, 35))]             # class 0 robust
    p1 = np.concatenate([p for _, p in groups])
    w = rng.normal(size=(p1.size, D))
    x0 = rng.uniform(size=D)
    b = w @ x0 - SIGMA * np.linalg.norm(w, axis=1) * norm.ppf(p1)
    return p1, w, x0, b


P1, W, X0, B = _truth()
P = P1.size


def _direct_counts(run):
    """(selection ones [P], estimation ones [P]) from fresh Gaussian draws, n0 then n separate ones."""
    rng = np.random.default_rng(10_000 + run)
    z_sel, z_est = rng.normal(size=(N0, D)), rng.normal(size=(N, D))
    ones = [(((X0 + SIGMA * z) @ W.T) > B).sum(axis=0) for z in (z_sel, z_est)]
    return ones[0], ones[1]


# The same base function through the real pipeline (certlib.smoothing.sampling + top_k_masks): a 32×32 "attribution" whose
# first P pixels are 0.5 + 0.4·tanh(w_i·x − b_i) and whose other pixels are fixed anchors (100 at 0, 504 at 0.5,
# 60 at 1). The anchors pin s = 1 and the median at exactly 0.5 whatever the P live pixels do, so "strictly
# above the median" is exactly w_i·x > b_i.
SIDE, LOWS, HIGHS = 32, 100, 60
ANCHORS = np.concatenate([np.zeros(LOWS), np.full(SIDE * SIDE - P - LOWS - HIGHS, 0.5), np.ones(HIGHS)])


W_T, B_T, ANCHORS_T = torch.from_numpy(W).T.contiguous(), torch.from_numpy(B), torch.from_numpy(ANCHORS)


def _anchored_attribution(x):
    z = x.flatten(1)[:, :D]
    live = 0.5 + 0.4 * torch.tanh(z @ W_T - B_T)
    anchors = ANCHORS_T.expand(x.shape[0], -1)
    return torch.cat([live, anchors], dim=1).reshape(-1, SIDE, SIDE)


def _pipeline_counts(run):
    x = torch.zeros(1, 1, SIDE, SIDE, dtype=torch.float64)
    x.view(-1)[:D] = torch.from_numpy(X0)
    c = sampling.sample_topk_counts(_anchored_attribution, x, SIGMA, n0=N0, n=N, k_percents=(50,), seed=run)
    assert c.scale is None and c.normalisation == "rank"
    sel, est = c.selection_ones[0].ravel(), c.estimation_ones[0].ravel()
    assert np.array_equal(est[P:], N * (ANCHORS > 0.5)) and np.array_equal(sel[P:], N0 * (ANCHORS > 0.5))
    return sel[:P], est[:P]


def _simulate(counts):
    classes, modes, votes = [], [], []
    for run in range(RUNS):
        sel, est = counts(run)
        mode = (2 * sel > N0).astype(np.int8)                  # n0 is odd: no ties
        vote = np.where(mode == 1, est, N - est)
        classes.append(certify_pixels(vote[None], mode[None], N, TAU, ALPHA)[0])
        modes.append(mode)
        votes.append(vote)
    return np.array(classes), np.array(modes), np.array(votes)


@pytest.fixture(scope="module", params=["direct", "pipeline"])
def simulation(request):
    # Tensors here are tiny: a thread pool only adds synchronisation, which on a busy 2-core machine costs 100x.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _simulate(_direct_counts if request.param == "direct" else _pipeline_counts)
    finally:
        torch.set_num_threads(threads)


def _worst_case_probability(cls):
    """Probability of class `cls` at the worst x + δ, ‖δ‖ = R, in closed form: δ = ∓R·w/‖w‖ moves the margin
    w·x − b by ∓R‖w‖, against the class."""
    radius = SIGMA * norm.ppf(TAU)
    w_norm = np.linalg.norm(W, axis=1)
    margin = W @ X0 - B
    worst_margin = np.where(cls == 1, margin - radius * w_norm, margin + radius * w_norm)
    p1_worst = norm.cdf(worst_margin / (SIGMA * w_norm))
    return np.where(cls == 1, p1_worst, 1 - p1_worst)


def test_monte_carlo_setup_is_the_tight_one():
    assert 0.75 ** N <= ALPHA / P < 0.75 ** (N - 1)
    assert np.sum(np.abs(P1 - TAU) < 2e-3) >= 150 and np.sum(np.abs(1 - P1 - TAU) < 2e-3) >= 75


def test_monte_carlo_false_certificates_stay_within_alpha(simulation):
    classes, _, _ = simulation
    certified = classes >= 0
    worst = np.where(certified, _worst_case_probability(np.where(certified, classes, 1)), 1.0)
    true_p = np.where(classes == 1, P1, 1 - P1)
    # the geometry agrees with the theorem: robust at radius R  <=>  probability of the class >= τ
    assert np.array_equal((worst >= 0.5)[certified], (true_p >= TAU)[certified])
    false_runs = int(np.sum(np.any(certified & (worst < 0.5), axis=1)))
    # a run with a false certificate is a Bernoulli(<= α) event: allow α·RUNS plus a 1-in-1000 binomial margin
    assert false_runs <= binom.ppf(0.999, RUNS, ALPHA), false_runs


def test_monte_carlo_has_power(simulation):
    classes, _, _ = simulation
    robust_far = np.maximum(P1, 1 - P1) >= 0.97
    assert np.mean(classes[:, robust_far] >= 0) > 0.5
    # and the certified class is the right one
    cls = classes[:, robust_far]
    right = np.broadcast_to((P1[robust_far] > 0.5).astype(np.int8), cls.shape)
    assert np.array_equal(cls[cls >= 0], right[cls >= 0])


def test_monte_carlo_votes_are_unbiased_given_the_selected_class(simulation):
    """The estimation votes must be Bin(n, p_c) given the selected class c: they come from samples independent
    of the selection. Reusing the selection samples inflates the votes of the chosen class (near p = 1/2 most)."""
    _, modes, votes = simulation
    p_mode = np.where(modes == 1, P1, 1 - P1)
    # Pixels of one run share the noise draws and are correlated: test the per-run totals (independent across
    # runs) with their empirical spread. Measured: |t| < 2.5 as built, t = 12 to 14 when the selection samples are
    # reused as the first n0 estimation samples.
    excess = np.sum(votes - N * p_mode, axis=1)
    t = excess.mean() / (excess.std(ddof=1) / math.sqrt(RUNS))
    assert abs(t) < 4.5, t


def test_too_few_samples_names_the_smallest_useful_n():
    from certlib.pixel.cert import too_few_samples

    # 0.75^n <= 1e-3 / 3072 first at n = 52 (ln(3.26e-7) / ln(0.75) = 51.9)
    message = too_few_samples(32, 0.75, 1e-3, 3072)
    assert "n ≥ 52" in message and "n = 32" in message
    assert too_few_samples(51, 0.75, 1e-3, 3072) is not None and too_few_samples(52, 0.75, 1e-3, 3072) is None
    assert 0.75 ** 52 <= 1e-3 / 3072 < 0.75 ** 51
