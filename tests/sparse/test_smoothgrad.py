"""Sparsified SmoothGrad (design §5): the base maps, the streaming sums, the simultaneous bounds and the certified
top-K overlap — against hand-worked cases, a brute-force count, closed-form smoothed maps attacked by exhaustive
search, and Monte-Carlo coverage."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from certlib.sparse import smoothgrad as S
from certlib.errors import CertlibError
from certlib.smoothing.noise import ESTIMATION, NoiseStream, gaussian_copies
from certlib.pixel.cert import top_k_masks


def _channel_sum(x: torch.Tensor) -> torch.Tensor:
    """A real, cheap attribution: the signed channel sum of the input itself."""
    return x.sum(dim=1)


def _image(seed=0, size=16):
    return torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- base maps

def test_binary_variant_is_the_shared_top_k_indicator_and_ranks_by_magnitude():
    attr = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0))
    f = S.sparsify(attr, (10.0, 25.0), "sparsified")
    assert f.shape == (2, 3, 16, 16) and f.dtype == torch.float32
    assert torch.equal(f.bool(), top_k_masks(attr, (10.0, 25.0), "own_scale"))
    # independently: distinct |a| -> the 64 largest |a| of each map are its top 25% (the top 0.5% tie at the clip)
    order = np.argsort(-attr.abs().flatten(1).numpy(), axis=1)[:, :64]
    expected = np.zeros((3, 256), dtype=bool)
    np.put_along_axis(expected, order, True, axis=1)
    assert np.array_equal(f[1].flatten(1).numpy().astype(bool), expected)


def test_scaled_variant_is_magnitude_over_max_on_the_kept_pixels():
    attr = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(1))
    f = S.sparsify(attr, (20.0, 100.0), "scaled").numpy()
    a = attr.abs().numpy()
    unit = a / a.reshape(2, -1).max(axis=1)[:, None, None]
    kept = top_k_masks(attr, (20.0, 100.0), "own_scale").numpy()
    assert np.allclose(f, np.where(kept, unit[None], 0.0), atol=1e-7)
    assert f.min() >= 0 and f.max() <= 1 and np.isclose(f[0].reshape(2, -1).max(axis=1), 1.0).all()


def test_all_zero_maps_stay_zero_and_bad_variant_is_named():
    zero = S.sparsify(torch.zeros(1, 4, 4), (50.0,), "scaled")
    assert torch.equal(zero, torch.zeros(1, 1, 4, 4))
    with pytest.raises(CertlibError, match="variant"):
        S.sparsify(torch.zeros(1, 4, 4), (50.0,), "binary")


# ---------------------------------------------------------------------------------------------- sampler

def test_sums_equal_a_direct_computation_on_all_copies_at_once():
    x, sigma, n, levels = _image(2), 0.3, 23, (10.0, 50.0)
    s = S.sample_smoothgrad(_channel_sum, x, sigma, n, levels, seed=4, batch_size=5)
    copies = gaussian_copies(x, sigma, NoiseStream(tuple(x.shape[1:]), 4, ESTIMATION), 0, n)
    attr = _channel_sum(copies)
    binary = S.sparsify(attr, levels, "sparsified").numpy()
    scaled = S.sparsify(attr, levels, "scaled").double().numpy()
    assert np.array_equal(s.ones, binary.sum(1).astype(np.int32))
    assert np.allclose(s.scaled_sum, scaled.sum(1)) and np.allclose(s.scaled_sq_sum, (scaled ** 2).sum(1))
    assert np.allclose(s.smoothgrad, attr.double().mean(0).numpy())
    assert np.allclose(s.clean_attr, _channel_sum(x)[0].numpy())
    assert np.allclose(s.mean("sparsified", 50.0), binary[1].mean(0))
    assert np.allclose(s.mean("scaled", 10.0), scaled[0].mean(0))


def test_same_seed_same_sums_at_any_batch_size_other_seed_differs():
    x = _image(3)
    runs = [S.sample_smoothgrad(_channel_sum, x, 0.5, 40, seed=7, batch_size=bs) for bs in (1, 9, 64)]
    for r in runs[1:]:
        assert np.array_equal(r.ones, runs[0].ones) and np.allclose(r.scaled_sum, runs[0].scaled_sum)
    other = S.sample_smoothgrad(_channel_sum, x, 0.5, 40, seed=8)
    assert not np.array_equal(other.ones, runs[0].ones)


def test_every_noisy_map_keeps_about_tau_percent():
    """Strictly above the (100−τ)-th percentile (linear rule, position (1−τ)(N−1)): N − ⌊(1−τ)(N−1)⌋ − 1 pixels
    when the values are distinct (13 of 256 at κ = 5%, 51 at 20%)."""
    s = S.sample_smoothgrad(_channel_sum, _image(4), 0.4, 30, (5.0, 20.0))
    assert s.ones.min() >= 0 and s.ones.max() <= 30
    assert s.ones[0].sum() == 30 * 13 and s.ones[1].sum() == 30 * 51
    assert (s.scaled_sum <= s.ones + 1e-9).all()   # scaled values are <= 1 on the same kept pixels


def test_bundled_model_gradient_sums(tmp_path):
    from certlib.attributions import methods as attributions
    from certlib.models import registry as models
    from certlib.data.images import digit_gallery, prepare_image

    model = models.load_model("digits_sigma0.25")
    x = prepare_image(digit_gallery()[0].pixels, 1, (32, 32), True)
    target = int(model.predict_proba(x).argmax())
    method = attributions.make_attribution("grad", model)
    s = S.sample_smoothgrad(lambda xb: method.attribute(xb, target), x, 0.25, 16, seed=0)
    assert s.ones.shape == (len(S.DEFAULT_LEVELS), 32, 32) and s.smoothgrad.shape == (32, 32)
    m = s.mean("sparsified", 10.0)
    assert 0 <= m.min() and m.max() <= 1 and abs(m.sum() - 0.10 * 1024) <= 2   # 10% of 1024 kept per map


def test_sampler_rejects_bad_arguments():
    with pytest.raises(CertlibError, match="sigma"):
        S.sample_smoothgrad(_channel_sum, _image(), 0.0, 4)
    with pytest.raises(CertlibError, match="n must"):
        S.sample_smoothgrad(_channel_sum, _image(), 0.1, 0)
    with pytest.raises(CertlibError, match="x must"):
        S.sample_smoothgrad(_channel_sum, torch.rand(2, 1, 4, 4), 0.1, 4)
    with pytest.raises(CertlibError, match="k_percents"):
        S.sample_smoothgrad(_channel_sum, _image(), 0.1, 4, levels=(0.0,))
    s = S.sample_smoothgrad(_channel_sum, _image(), 0.1, 4, levels=(10.0,))
    with pytest.raises(CertlibError, match="not sampled"):
        s.mean("sparsified", 20.0)


# ---------------------------------------------------------------------------------------------- confidence bounds

def _family_miss_rate(make_bounds, draw, means, n, reps, rng):
    """Share of repetitions in which at least one pixel's true mean falls outside its interval."""
    misses = 0
    for _ in range(reps):
        values = draw(rng, (means.size, n))
        lower, upper = make_bounds(values)
        misses += bool(((means < lower) | (means > upper)).any())
    return misses / reps


def _bernoulli(means):
    return lambda rng, shape: (rng.random(shape) < means[:, None]).astype(np.float64)


def _sparse_scaled(means_if_kept, keep):
    """Values like a scaled sparsified pixel: 0 unless kept (prob keep), then Beta-distributed in (0, 1)."""
    return lambda rng, shape: (rng.random(shape) < keep[:, None]) * rng.beta(2.0, 1.0, size=shape)


def test_bounds_cover_every_pixel_together_with_probability_one_minus_alpha():
    """Monte Carlo: family-wise miss rate <= α (+ 3 standard errors) for all three bounds, 100 pixels at once."""
    rng = np.random.default_rng(0)
    alpha, n, reps, d = 0.2, 60, 300, 100
    means = rng.uniform(0.02, 0.98, d)
    slack = 3 * math.sqrt(alpha * (1 - alpha) / reps)
    cp = _family_miss_rate(lambda v: S.binomial_bounds(v.sum(1).astype(int), n, alpha), _bernoulli(means), means,
                           n, reps, rng)
    hoeffding = _family_miss_rate(lambda v: S.hoeffding_bounds(v.sum(1), n, alpha), _bernoulli(means), means, n,
                                  reps, rng)
    keep = rng.uniform(0.0, 0.6, d)
    scaled_means = keep * 2.0 / 3.0                                    # E[Beta(2,1)] = 2/3
    bernstein = _family_miss_rate(lambda v: S.bernstein_bounds(v.sum(1), (v ** 2).sum(1), n, alpha),
                                  _sparse_scaled(scaled_means, keep), scaled_means, n, reps, rng)
    assert max(cp, hoeffding, bernstein) <= alpha + slack, (cp, hoeffding, bernstein)
    # The same check has teeth: per-pixel intervals at α without Bonferroni miss far more often.
    from certlib.stats import clopper_pearson_lower, clopper_pearson_upper

    def naive(v):
        k = v.sum(1).astype(int)
        return clopper_pearson_lower(k, n, alpha / 2), clopper_pearson_upper(k, n, alpha / 2)
    assert _family_miss_rate(naive, _bernoulli(means), means, n, 100, rng) > alpha + slack


def test_binomial_bounds_are_clopper_pearson_at_the_bonferroni_level():
    from scipy.stats import beta

    ones = np.array([[0, 3], [10, 10]])
    lower, upper = S.binomial_bounds(ones, 10, 0.08)
    a = 0.08 / 8                                          # 4 pixels, two sides
    assert lower[0, 0] == 0.0 and upper[1, 1] == 1.0
    assert lower[0, 1] == pytest.approx(beta.ppf(a, 3, 8)) and upper[0, 1] == pytest.approx(beta.ppf(1 - a, 4, 7))
    assert lower[1, 0] == pytest.approx(a ** (1 / 10))    # 10 of 10: p^10 = a


def test_bernstein_is_narrower_than_hoeffding_for_rare_values_and_both_contain_the_mean():
    rng = np.random.default_rng(3)
    v = (rng.random((50, 400)) < 0.03) * rng.random((50, 400))
    lb, ub = S.bernstein_bounds(v.sum(1), (v ** 2).sum(1), 400, 0.01)
    lh, uh = S.hoeffding_bounds(v.sum(1), 400, 0.01)
    mean = v.mean(1)
    assert (lb <= mean).all() and (mean <= ub).all() and (lh <= mean).all() and (mean <= uh).all()
    assert ((ub - lb) < (uh - lh)).all()


def test_confidence_bounds_pick_the_variant_and_check_arguments():
    s = S.sample_smoothgrad(_channel_sum, _image(5), 0.3, 20, (10.0,))
    lo, up = S.confidence_bounds(s, "sparsified", 10.0, 0.05)
    assert np.allclose((lo, up), S.binomial_bounds(s.ones[0], 20, 0.05))
    lo, up = S.confidence_bounds(s, "scaled", 10.0, 0.05, scaled_bound="hoeffding")
    assert np.allclose((lo, up), S.hoeffding_bounds(s.scaled_sum[0], 20, 0.05))
    with pytest.raises(CertlibError, match="scaled_bound"):
        S.confidence_bounds(s, "scaled", 10.0, 0.05, scaled_bound="chernoff")
    with pytest.raises(CertlibError, match="alpha"):
        S.confidence_bounds(s, "sparsified", 10.0, 1.5)
    with pytest.raises(CertlibError, match="n must be >= 2"):
        S.bernstein_bounds(np.zeros(3), np.zeros(3), 1, 0.1)


# ---------------------------------------------------------------------------------------------- certificate

PHI = norm.cdf


def test_hand_worked_case():
    """z = Φ⁻¹: pixel A in [2, 2.5], B in [0, 0.5], C in [−1, −0.5], D in [−2, −1.5]; σ = 1.
    k = 1: A is out-reached by B's upper 0.5 once 2 − ε = 0.5 + ε, i.e. ε = 0.75.
    k = 2: the rival is C's upper −0.5: A holds to (2 + 0.5)/2 = 1.25, B to (0 + 0.5)/2 = 0.25."""
    lower = PHI([2.0, 0.0, -1.0, -2.0])
    upper = PHI([2.5, 0.5, -0.5, -1.5])
    assert S.certified_topk_overlap(lower, upper, 1, 0.74, 1.0) == 1.0
    assert S.certified_topk_overlap(lower, upper, 1, 0.76, 1.0) == 0.0
    assert S.certified_topk_overlap(lower, upper, 2, 0.2, 1.0) == 1.0
    assert S.certified_topk_overlap(lower, upper, 2, 0.3, 1.0) == 0.5
    assert S.certified_topk_overlap(lower, upper, 2, 1.2, 1.0) == 0.5
    assert S.certified_topk_overlap(lower, upper, 2, 1.3, 1.0) == 0.0
    assert S.certified_topk_overlap(lower, upper, 2, 0.3, 2.0) == 1.0        # σ = 2 doubles every radius
    assert np.allclose(S.pixel_certified_eps(lower, upper, 2, 1.0)[:2], [1.25, 0.25])
    assert S.max_certified_eps(lower, upper, 2, 1.0, 1.0) == pytest.approx(0.25)
    assert S.max_certified_eps(lower, upper, 2, 1.0, 0.5) == pytest.approx(1.25)
    assert S.certified_topk_overlap(lower, upper, 4, 100.0, 1.0) == 1.0      # the top 4 of 4 is everything
    assert S.certified_topk_mask(lower.reshape(2, 2), upper.reshape(2, 2), 2, 0.3, 1.0).tolist() == \
        [[True, False], [False, False]]


def test_ties_count_against_the_pixel():
    lower = np.array([0.7, 0.6, 0.1])
    upper = np.array([0.8, 0.7, 0.2])       # B's upper equals A's lower: A is not certified for k = 1 even at ε = 0
    assert S.certified_topk_overlap(lower, upper, 1, 0.0, 1.0) == 0.0
    assert S.certified_topk_overlap(lower, upper, 2, 0.0, 1.0) == 1.0
    assert S.max_certified_eps(lower, upper, 1, 1.0, 1.0) == 0.0


def _brute_force_overlap(lower, upper, k, eps, sigma):
    """Independent O(d²) count in value space: j certified iff fewer than k others i have
    Φ(Φ⁻¹(U_i) + ε/σ) >= Φ(Φ⁻¹(L_j) − ε/σ)."""
    t = eps / sigma
    low = PHI(norm.ppf(lower) - t)
    high = PHI(norm.ppf(upper) + t)
    certified = 0
    for j in range(lower.size):
        others = sum(1 for i in range(lower.size) if i != j and high[i] >= low[j])
        certified += others < k
    return certified / k


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_brute_force_count_and_is_monotone_in_eps(seed):
    rng = np.random.default_rng(seed)
    d = 40
    centre = rng.beta(0.6, 0.6, d)
    width = rng.uniform(0, 0.15, d)
    lower, upper = np.clip(centre - width, 0, 1), np.clip(centre + width, 0, 1)
    sigma = rng.uniform(0.2, 1.0)
    eps_values = np.linspace(0, 1.5 * sigma, 31)
    for k in (1, 5, 13):
        curve = S.certified_overlap_curve(lower, upper, k, eps_values, sigma)
        direct = [S.certified_topk_overlap(lower, upper, k, e, sigma) for e in eps_values]
        brute = [_brute_force_overlap(lower, upper, k, e, sigma) for e in eps_values]
        assert np.allclose(curve, direct) and np.allclose(curve, brute)
        assert (np.diff(curve) <= 0).all()
        for target in (0.2, 0.6, 1.0):
            e = S.max_certified_eps(lower, upper, k, sigma, target)
            if e > 0:
                assert S.certified_topk_overlap(lower, upper, k, e * (1 - 1e-9), sigma) >= target - 1e-12
                assert S.certified_topk_overlap(lower, upper, k, e * (1 + 1e-9), sigma) < target
            else:
                assert S.certified_topk_overlap(lower, upper, k, 0.0, sigma) < target


def test_equals_one_at_eps_zero_when_the_top_k_intervals_separate():
    rng = np.random.default_rng(7)
    for k in (1, 3, 10):
        top = rng.uniform(0.55, 0.95, (k, 2))
        rest = rng.uniform(0.0, 0.5, (30, 2))
        lower = np.concatenate([top.min(1), rest.min(1)])
        upper = np.concatenate([top.max(1), rest.max(1)])
        perm = rng.permutation(lower.size)
        assert S.certified_topk_overlap(lower[perm], upper[perm], k, 0.0, 0.5) == 1.0
        assert S.max_certified_eps(lower[perm], upper[perm], k, 0.5, 1.0) > 0


# ---------------------------------------------------------------------------------------------- paired (count) form

def test_paired_hand_worked_case_beats_the_per_pixel_rule():
    """Same bounds as above, S = {A, B}: A pairs with the second outsider D (upper −1.5): (2 + 1.5)/2 = 1.75; B pairs
    with C (upper −0.5): (0 + 0.5)/2 = 0.25. At ε = 1.3 the per-pixel rule certifies nothing (B's upper could pass
    A), but at most C can enter, so one of A, B stays."""
    lower = PHI([2.0, 0.0, -1.0, -2.0])
    upper = PHI([2.5, 0.5, -0.5, -1.5])
    top = np.array([True, True, False, False])
    assert np.allclose(S.paired_certified_eps(lower, upper, top, 1.0), [1.75, 0.25])
    assert S.paired_topk_overlap(lower, upper, top, 0.2, 1.0) == 1.0
    assert S.paired_topk_overlap(lower, upper, top, 1.3, 1.0) == 0.5
    assert S.certified_topk_overlap(lower, upper, 2, 1.3, 1.0) == 0.0
    assert S.paired_topk_overlap(lower, upper, top, 1.8, 1.0) == 0.0
    assert S.max_paired_eps(lower, upper, top, 1.0, 0.5) == pytest.approx(1.75)
    assert S.paired_topk_overlap(lower, upper, np.ones(4, bool), 50.0, 1.0) == 1.0   # nobody left to swap in


def _box_worst_case(lower, upper, top, eps, sigma):
    """Independent: every top pixel at its lowest reachable value, every other at its highest (value space), top k
    taken with ties broken against the set; by monotonicity no map inside the moved bounds does worse."""
    t = eps / sigma
    v = np.where(top, PHI(norm.ppf(lower) - t), PHI(norm.ppf(upper) + t))
    order = sorted(range(v.size), key=lambda i: (-v[i], bool(top[i])))
    k = int(top.sum())
    return sum(bool(top[i]) for i in order[:k]) / k


@pytest.mark.parametrize("seed", range(5))
def test_paired_is_the_exact_worst_case_inside_the_bounds_and_never_below_per_pixel(seed):
    rng = np.random.default_rng(50 + seed)
    d = 30
    centre = rng.beta(0.7, 0.7, d)
    width = rng.uniform(0, 0.2, d)
    lower, upper = np.clip(centre - width, 0, 1), np.clip(centre + width, 0, 1)
    sigma = rng.uniform(0.2, 1.0)
    for k in (1, 4, 10, 20):
        top = S.estimated_topk(centre, np.zeros(d), k)
        for eps in np.linspace(0, sigma, 17):
            paired = S.paired_topk_overlap(lower, upper, top, eps, sigma)
            assert paired == _box_worst_case(lower, upper, top, eps, sigma)
            assert paired >= S.certified_topk_overlap(lower, upper, k, eps, sigma)
            # random maps inside the moved bounds never do worse than the certificate
            t = eps / sigma
            lo, hi = PHI(norm.ppf(lower) - t), PHI(norm.ppf(upper) + t)
            maps = lo + (hi - lo) * rng.random((50, d))
            ranks = np.argsort(np.argsort(-maps, axis=1), axis=1)
            assert ((ranks[:, top] < k).sum(1) / k >= paired).all()
        curve = [S.paired_topk_overlap(lower, upper, top, e, sigma) for e in np.linspace(0, sigma, 17)]
        assert (np.diff(curve) <= 0).all()


# ---------------------------------------------------------------------------------------------- falsification

def _halfplane_smoothed(W, b, X, sigma):
    """Exact ḡ_i(X) = Φ((w_i·X − b_i) / (σ‖w_i‖)) of f_i(x) = 1[w_i·x > b_i]; X [G,D] -> [G,d]."""
    return PHI((X @ W.T - b) / (sigma * np.linalg.norm(W, axis=1)))


def _true_worst_overlap(W, b, x, sigma, k, eps, deltas, top=None):
    """min over the given δ (scaled into the ε-ball) of |S ∩ top-k(ḡ(x+δ))| / k, exact maps; S = the top k of
    ḡ(x) unless a bool mask `top` is given (an estimated top k)."""
    clean = _halfplane_smoothed(W, b, x[None], sigma)[0]
    top = np.argsort(-clean)[:k] if top is None else np.flatnonzero(top)
    moved = _halfplane_smoothed(W, b, x[None] + eps * deltas, sigma)
    ranks = np.argsort(np.argsort(-moved, axis=1), axis=1)
    return float((ranks[:, top] < k).sum(1).min() / k)


def _disk(points_r=30, points_a=360):
    r = np.linspace(0, 1, points_r)[:, None]
    a = np.linspace(0, 2 * np.pi, points_a, endpoint=False)[None]
    return np.stack([(r * np.cos(a)).ravel(), (r * np.sin(a)).ravel()], axis=1)


@pytest.mark.parametrize("seed", range(6))
def test_never_exceeds_the_worst_case_found_by_exhaustive_search(seed):
    """Random half-planes in 2-D: the certified overlap (exact ḡ as zero-width bounds) is at most the smallest
    overlap found over a dense polar grid of the ε-disk."""
    rng = np.random.default_rng(seed)
    d, sigma = 12, rng.uniform(0.3, 1.0)
    W, b, x = rng.normal(size=(d, 2)), rng.normal(0, 1.0, d), np.zeros(2)
    g = _halfplane_smoothed(W, b, x[None], sigma)[0]
    deltas = _disk()
    informative = 0
    for k in (1, 3, 6):
        for eps in np.linspace(0.0, 2.0 * sigma, 9):
            certified = S.certified_topk_overlap(g, g, k, eps, sigma)
            paired = S.paired_topk_overlap(g, g, S.estimated_topk(g, g, k), eps, sigma)
            worst = _true_worst_overlap(W, b, x, sigma, k, eps, deltas)
            assert certified <= paired <= worst + 1e-12, (k, eps, certified, paired, worst)
            informative += 0 < certified
    assert informative > 0     # the certificate says something in these instances, so the check bites


@pytest.mark.parametrize("seed", range(5))
def test_is_tight_where_the_attack_can_push_all_tops_down_and_all_others_up(seed):
    """w = −v for the top pixels, +v for the others: δ = ε·v moves every z by exactly ∓ε/σ, the worst case the
    certificates assume. So the first ε at which the per-pixel certified overlap drops below 1 is exactly where the
    true overlap drops (a missing factor 2 or a wrong sign would fail here), for k = 1 the curves coincide, and the
    paired certificate equals the true worst case at every ε for every k."""
    rng = np.random.default_rng(100 + seed)
    d, D, sigma = 10, 3, rng.uniform(0.2, 1.0)
    z = np.sort(rng.normal(0, 1.5, d))[::-1]
    v = rng.normal(size=D)
    v /= np.linalg.norm(v)
    directions = np.concatenate([rng.normal(size=(400, D)), v[None], -v[None]])
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    for k in (1, 3):
        scale = rng.uniform(0.5, 2.0, d)[:, None]
        W = np.where(np.arange(d)[:, None] < k, -v, v) * scale
        b = -z * sigma * np.linalg.norm(W, axis=1)           # so that ḡ_i(0) = Φ(z_i)
        x = np.zeros(D)
        g = _halfplane_smoothed(W, b, x[None], sigma)[0]
        assert np.allclose(norm.ppf(g), z)
        first_drop = S.max_certified_eps(g, g, k, sigma, 1.0)
        assert first_drop == pytest.approx(sigma * (z[k - 1] - z[k]) / 2)
        assert _true_worst_overlap(W, b, x, sigma, k, first_drop * 0.999, directions) == 1.0
        assert _true_worst_overlap(W, b, x, sigma, k, first_drop * 1.001, directions) < 1.0
        top = S.estimated_topk(g, g, k)
        radii = S.paired_certified_eps(g, g, top, sigma)
        for eps in np.linspace(0, 1.2 * radii[np.isfinite(radii)].max(), 25):
            if np.isclose(eps, radii).any():
                continue                                     # the boundary itself is a tie
            worst = _true_worst_overlap(W, b, x, sigma, k, eps, directions)
            assert S.paired_topk_overlap(g, g, top, eps, sigma) == worst
            if k == 1:
                assert S.certified_topk_overlap(g, g, 1, eps, sigma) == worst


def test_sampled_bounds_end_to_end_never_overclaim():
    """Sample the half-plane indicators under noise, bound with Clopper–Pearson + Bonferroni, certify, and compare
    with the exact worst case (fails with probability <= α per instance if everything is right)."""
    rng = np.random.default_rng(11)
    d, sigma, n, alpha = 12, 0.5, 4000, 0.01
    deltas = _disk(20, 240)
    for _ in range(4):
        W, b, x = rng.normal(size=(d, 2)), rng.normal(0, 0.7, d), np.zeros(2)
        noisy = x[None] + sigma * rng.normal(size=(n, 2))
        ones = (noisy @ W.T > b).sum(0)
        lower, upper = S.binomial_bounds(ones, n, alpha)
        g = _halfplane_smoothed(W, b, x[None], sigma)[0]
        assert ((lower <= g) & (g <= upper)).all()
        for k in (1, 4):
            top = S.estimated_topk(ones / n, np.zeros(d), k)
            for eps in (0.0, 0.1, 0.3, 0.6):
                worst = _true_worst_overlap(W, b, x, sigma, k, eps, deltas, top=top)
                assert S.certified_topk_overlap(lower, upper, k, eps, sigma) <= worst + 1e-12
                assert S.paired_topk_overlap(lower, upper, top, eps, sigma) <= worst + 1e-12


# ---------------------------------------------------------------------------------------------- empirical side

def test_empirical_overlap_with_ties_is_the_expected_overlap_under_random_tie_breaking():
    a = np.array([5.0, 4.0, 4.0, 4.0, 1.0])
    m = S.topk_membership(a, 2)
    assert np.allclose(m, [1, 1 / 3, 1 / 3, 1 / 3, 0]) and m.sum() == pytest.approx(2)
    b = np.array([0.0, 9.0, 8.0, 1.0, 1.0])
    assert S.empirical_topk_overlap(a, b, 2) == pytest.approx((1 / 3 + 1 / 3) / 2)
    # brute force over every tie-break of `a` (3 equally likely choices of the second pixel)
    assert np.mean([len({0, j} & {1, 2}) / 2 for j in (1, 2, 3)]) == pytest.approx(S.empirical_topk_overlap(a, b, 2))
    assert S.empirical_topk_overlap(a, a, 1) == 1.0


def test_estimated_topk_contains_every_certified_pixel():
    rng = np.random.default_rng(5)
    for _ in range(20):
        mean = rng.integers(0, 20, 64) / 20.0                 # binary-variant estimates: many ties
        lower, upper = S.binomial_bounds((mean * 20).astype(int), 20, 0.1)
        k = int(rng.integers(1, 20))
        top = S.estimated_topk(mean, rng.normal(size=64), k)
        assert top.sum() == k
        assert not (S.certified_topk_mask(lower, upper, k, 0.0, 0.5) & ~top).any()


def test_k_from_percent():
    assert S.k_from_percent(10, 1024) == 102 and S.k_from_percent(0.01, 100) == 1 and S.k_from_percent(100, 7) == 7
    with pytest.raises(CertlibError, match="k_percent"):
        S.k_from_percent(0, 100)


# ---------------------------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("lower, upper, k, eps, sigma, match", [
    ([0.2, 0.1], [0.3], 1, 0.1, 1.0, "shape"),
    ([0.4, 0.1], [0.3, 0.2], 1, 0.1, 1.0, "lower must not exceed upper"),
    ([-0.1, 0.1], [0.3, 0.2], 1, 0.1, 1.0, "lower must be in"),
    ([0.1, 0.1], [1.3, 0.2], 1, 0.1, 1.0, "upper must be in"),
    ([0.1, np.nan], [0.3, 0.2], 1, 0.1, 1.0, "lower must be in"),
    ([], [], 1, 0.1, 1.0, "empty"),
    ([0.1, 0.1], [0.3, 0.2], 0, 0.1, 1.0, "k must"),
    ([0.1, 0.1], [0.3, 0.2], 3, 0.1, 1.0, "k must"),
    ([0.1, 0.1], [0.3, 0.2], 1.0, 0.1, 1.0, "k must"),
    ([0.1, 0.1], [0.3, 0.2], 1, -0.1, 1.0, "eps"),
    ([0.1, 0.1], [0.3, 0.2], 1, math.inf, 1.0, "eps"),
    ([0.1, 0.1], [0.3, 0.2], 1, 0.1, 0.0, "sigma"),
    ([0.1, 0.1], [0.3, 0.2], 1, 0.1, "1", "sigma"),
])
def test_certificate_rejects_bad_arguments(lower, upper, k, eps, sigma, match):
    with pytest.raises(CertlibError, match=match):
        S.certified_topk_overlap(np.array(lower), np.array(upper), k, eps, sigma)


def test_paired_rejects_bad_masks():
    lo, up = np.array([0.6, 0.1]), np.array([0.7, 0.2])
    for bad in (np.array([1, 0]), np.array([True]), np.array([False, False])):
        with pytest.raises(CertlibError, match="top_mask"):
            S.paired_topk_overlap(lo, up, bad, 0.1, 1.0)


def test_inverse_and_curve_reject_bad_arguments():
    lo, up = np.array([0.6, 0.1]), np.array([0.7, 0.2])
    for bad in (0.0, 1.5, math.nan, True):
        with pytest.raises(CertlibError, match="overlap"):
            S.max_certified_eps(lo, up, 1, 1.0, bad)
    with pytest.raises(CertlibError, match="eps"):
        S.certified_overlap_curve(lo, up, 1, [0.0, -1.0], 1.0)


def test_certify_topk_bundles_the_cheap_stage_consistently():
    s = S.sample_smoothgrad(_channel_sum, _image(6), 0.2, 200, (20.0,), seed=3)
    for variant in S.VARIANTS:
        c = S.certify_topk(s, variant, 20.0, 5.0, 0.01, 0.05)
        lower, upper = S.confidence_bounds(s, variant, 20.0, 0.05)
        assert c.k == 13 and c.top_mask.sum() == 13 and not (c.certified_mask & ~c.top_mask).any()
        assert c.overlap == S.certified_topk_overlap(lower, upper, 13, 0.01, 0.2)
        assert np.array_equal(c.overlap_at([0.0, 0.01]), S.certified_overlap_curve(lower, upper, 13, [0, 0.01], 0.2))
        assert c.max_eps(0.5) == S.max_certified_eps(lower, upper, 13, 0.2, 0.5)
        assert c.paired_overlap == S.paired_topk_overlap(lower, upper, c.top_mask, 0.01, 0.2) >= c.overlap
        assert c.max_paired_eps(0.5) == S.max_paired_eps(lower, upper, c.top_mask, 0.2, 0.5) >= c.max_eps(0.5)
        grid = c.eps_axis(11)
        assert grid[0] == 0 and c.paired_at(grid[-1:])[0] == np.isinf(c.paired_radii).sum() / c.k
        assert np.array_equal(c.mean, s.mean(variant, 20.0))


# ---------------------------------------------------------------------------------------------- downloads, figures

def test_pixel_csv_and_curve_csv_round_trip():
    import csv
    import io

    from certlib.runs import export

    s = S.sample_smoothgrad(_channel_sum, _image(7, size=8), 0.2, 50, (20.0,))
    c = S.certify_topk(s, "sparsified", 20.0, 10.0, 0.0, 0.2)
    rows = list(csv.DictReader(io.StringIO(export.smoothgrad_pixel_csv(
        s.smoothgrad, c.mean, c.lower, c.upper, c.top_mask, c.certified_mask, c.radii).decode())))
    assert len(rows) == 64 and rows[9]["row"] == "1" and rows[9]["col"] == "1"
    assert sum(int(r["in_top_k"]) for r in rows) == c.k
    assert sum(int(r["certified"]) for r in rows) == int(c.certified_mask.sum())
    assert all((r["certified_eps"] == "") == (c.radii.ravel()[i] <= 0) for i, r in enumerate(rows))
    assert np.allclose([float(r["g_hat"]) for r in rows], c.mean.ravel(), atol=1e-6)
    table = list(csv.DictReader(io.StringIO(export.overlap_curve_csv(
        [("paired", np.array([0.0, 0.1]), np.array([1.0, 0.5]))], [("σ = 0.2", "random", 0.05, 0.9, 0.5)]).decode())))
    assert [r["series"] for r in table] == ["certified", "certified", "random"] and table[2]["overlap"] == "0.9"


def test_overlay_colours_certified_and_uncertified_top_pixels_only():
    from certlib.sparse import viz as sv

    base = np.full((2, 2, 3), 100, dtype=np.uint8)
    top = np.array([[True, True], [False, False]])
    certified = np.array([[True, False], [False, True]])       # a certified pixel outside the top is ignored
    out = sv.topk_certified_overlay(base, top, certified, alpha=1.0)
    assert tuple(out[0, 0]) == sv.CERTIFIED_RGB and tuple(out[0, 1]) == sv.UNCERTIFIED_RGB
    assert (out[1] == 100).all()
    fig = sv.overlap_curve_figure([sv.OverlapCurve("σ = 1", np.array([0, 1]), np.array([1, 0]))],
                                  [sv.OverlapPoint("attack", 0.5, 0.9, "σ = 1")], eps_marker=0.2)
    assert [t.name for t in fig.data] == ["certified (paired), σ = 1", "attack δ, σ = 1"]
