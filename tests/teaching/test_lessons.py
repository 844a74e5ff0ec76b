"""The Learn page's toys (certlib.teaching.lessons) against independent computations: closed forms (normal CDF, noncentral
χ², circle and sphere intersections), direct loops and sums, brute-force adversaries and Monte-Carlo falsification."""
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from scipy.stats import beta, ncx2, norm

from certlib.teaching import lessons as teaching
from certlib.errors import CertlibError

HALF_PLANE = teaching.PlaneClassifier(centres=((-1.0, 0.0), (1.0, 0.0)), names=("left", "right"))  # border x₁ = 0
ISLAND = teaching.PlaneClassifier(centres=((0.0, -5.0),), names=("sea", "island"), island_centre=(0.3, 0.2),
                                  island_radius=0.6)


# ------------------------------------------------------------------------------------ 1. smoothing on the plane

def test_predict_is_the_nearest_centre_outside_the_island():
    points = np.random.default_rng(0).uniform(-3, 3, (5000, 2))
    c = teaching.TOY_CLASSIFIER
    expected = cdist(points, np.array(c.centres)).argmin(1)
    island = np.hypot(points[:, 0] - c.island_centre[0], points[:, 1] - c.island_centre[1]) < c.island_radius
    expected[island] = len(c.centres)
    np.testing.assert_array_equal(c.predict(points), expected)


def test_vote_share_matches_the_exact_half_plane_probability():
    # P[x₁ + σz₁ < 0] = Φ(−x₁/σ) exactly for the left half-plane.
    x, sigma, n = (-0.3, 0.7), 0.4, 20_000
    result = teaching.smooth_on_plane(HALF_PLANE, x, sigma, n, tau=0.75, alpha=1e-3, seed=3)
    p = norm.cdf(0.3 / sigma)
    assert result.top_class == 0
    assert abs(result.p_hat - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_vote_share_matches_the_noncentral_chi2_disc_probability():
    # ‖x − c + σz‖² / σ² is noncentral χ² with 2 degrees of freedom and noncentrality ‖x − c‖² / σ².
    x, sigma, n = (0.5, 0.0), 0.35, 20_000
    result = teaching.smooth_on_plane(ISLAND, x, sigma, n, tau=0.6, alpha=1e-3, seed=1)
    p = ncx2.cdf(0.6 ** 2 / sigma ** 2, 2, (0.2 ** 2 + 0.2 ** 2) / sigma ** 2)
    assert result.top_class == 1
    assert abs(result.p_hat - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_cohen_radius_is_sigma_times_probit_of_the_clopper_pearson_bound():
    result = teaching.smooth_on_plane(teaching.TOY_CLASSIFIER, (-1.0, -0.5), 0.5, 500, 0.75, 1e-3, seed=0)
    k, n = result.votes, result.n
    p_lower = beta.ppf(1e-3, k, n - k + 1)
    assert result.p_lower == pytest.approx(p_lower, rel=1e-10)
    assert result.cohen_radius == pytest.approx(0.5 * norm.ppf(p_lower), rel=1e-10)


def test_radius_is_tight_for_a_half_plane():
    """With exact p_A the radius σ·Φ⁻¹(p_A) is the distance to the border; with the lower bound it stays below it."""
    x, sigma = (-0.45, 1.0), 0.5
    exact = sigma * norm.ppf(norm.cdf(0.45 / sigma))
    assert exact == pytest.approx(0.45, rel=1e-12)
    result = teaching.smooth_on_plane(HALF_PLANE, x, sigma, 100_000, 0.75, 1e-3, seed=2)
    assert 0.97 * 0.45 < result.cohen_radius <= 0.45


def _smoothed_class(classifier, point, sigma, samples=200_000, seed=11):
    noisy = np.asarray(point) + sigma * np.random.default_rng(seed).standard_normal((samples, 2))
    return np.bincount(classifier.predict(noisy), minlength=classifier.num_classes).argmax()


@pytest.mark.parametrize("x, sigma", [((-1.0, -0.5), 0.5), ((0.6, -1.2), 0.4), ((1.2, 1.2), 0.25)])
def test_points_inside_the_certified_disc_keep_the_smoothed_class(x, sigma):
    result = teaching.smooth_on_plane(teaching.TOY_CLASSIFIER, x, sigma, 2000, 0.75, 1e-3, seed=5)
    assert result.cohen_radius is not None
    for angle in np.linspace(0, 2 * math.pi, 12, endpoint=False):
        moved = np.asarray(x) + 0.95 * result.cohen_radius * np.array([math.cos(angle), math.sin(angle)])
        assert _smoothed_class(teaching.TOY_CLASSIFIER, moved, sigma) == result.top_class, (angle, moved)


def test_the_same_check_catches_a_radius_that_is_too_large():
    # Power of the check above: twice the certified radius towards the border changes the smoothed class.
    result = teaching.smooth_on_plane(HALF_PLANE, (-0.45, 0.0), 0.5, 2000, 0.75, 1e-3, seed=5)
    assert _smoothed_class(HALF_PLANE, (-0.45 + 2 * result.cohen_radius, 0.0), 0.5) != result.top_class


@pytest.mark.parametrize("votes", [300, 385, 395, 410, 480])
def test_tau_form_certifies_exactly_when_the_lower_bound_reaches_tau(votes):
    # Duality of the exact binomial test and Clopper–Pearson: P[Bin(n,τ) ≥ k] ≤ α ⇔ Beta⁻¹(α; k, n−k+1) ≥ τ.
    n, tau, alpha, sigma = 500, 0.75, 1e-3, 0.5
    counts = np.array([votes, n - votes, 0, 0])
    result = teaching.PlaneSmoothing(np.zeros(2), sigma, np.zeros((n, 2)), np.zeros(n, int), counts, 0, n, tau, alpha)
    certified = beta.ppf(alpha, votes, n - votes + 1) >= tau
    assert (result.tau_radius is not None) == certified
    if certified:
        assert result.tau_radius == pytest.approx(sigma * norm.ppf(tau), rel=1e-12)
    assert (result.cohen_radius is not None) == (beta.ppf(alpha, votes, n - votes + 1) > 0.5)


def test_estimation_samples_do_not_depend_on_the_selection_draws():
    a = teaching.smooth_on_plane(teaching.TOY_CLASSIFIER, (0.0, 0.0), 0.5, 300, 0.75, 1e-3, seed=7, n0=11)
    b = teaching.smooth_on_plane(teaching.TOY_CLASSIFIER, (0.0, 0.0), 0.5, 300, 0.75, 1e-3, seed=7, n0=101)
    np.testing.assert_array_equal(a.samples, b.samples)


def test_selection_draws_are_separate_from_estimation_draws():
    # On the border both classes have p = 1/2. Chosen on its own draws, the selected class loses the estimation
    # vote about half the time; chosen on the estimation draws themselves it would never lose it.
    losing = sum(teaching.smooth_on_plane(HALF_PLANE, (0.0, 0.0), 0.5, 31, 0.75, 1e-3, seed=s, n0=31).votes < 16
                 for s in range(100))
    assert 30 <= losing <= 70


def test_smoothed_region_grid_agrees_with_clear_pointwise_smoothing():
    axis, grid = teaching.smoothed_class_grid(teaching.TOY_CLASSIFIER, 0.3, resolution=13, samples=300)
    checked = 0
    for i in range(0, 13, 2):
        for j in range(0, 13, 2):
            r = teaching.smooth_on_plane(teaching.TOY_CLASSIFIER, (axis[j], axis[i]), 0.3, 4000, 0.75, 1e-3, seed=1)
            if r.p_hat > 0.75:     # clear winners only: 300 shared samples may differ near a border
                assert grid[i, j] == r.top_class
                checked += 1
    assert checked >= 30


def test_base_grid_island_area_is_the_disc_area():
    axis, grid = teaching.base_class_grid(teaching.TOY_CLASSIFIER, resolution=601)
    cell = (axis[1] - axis[0]) ** 2
    area = (grid == 3).sum() * cell
    assert area == pytest.approx(math.pi * teaching.TOY_CLASSIFIER.island_radius ** 2, rel=0.02)


@pytest.mark.parametrize("kwargs", [dict(sigma=0.0), dict(sigma=-1.0), dict(n=0), dict(tau=0.4), dict(tau=1.0),
                                    dict(alpha=0.0), dict(alpha=1.0), dict(x=(0.0, float("nan"))),
                                    dict(x=(1.0, 2.0, 3.0)), dict(seed=-1)])
def test_smoothing_rejects_bad_input(kwargs):
    args = dict(classifier=teaching.TOY_CLASSIFIER, x=(0.0, 0.0), sigma=0.5, n=10, tau=0.75, alpha=0.01, seed=0)
    args.update(kwargs)
    with pytest.raises(CertlibError):
        teaching.smooth_on_plane(**args)


# ------------------------------------------------------------------------------------ 2. per-pixel certificate

def _holm_loop(pvalues, alpha):
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected = [False] * len(pvalues)
    for j, i in enumerate(order):
        if pvalues[i] > alpha / (len(pvalues) - j):
            break
        rejected[i] = True
    return rejected


def _binom_tail(k, n, tau):
    t = Fraction(tau).limit_denominator(1000)
    return float(sum(Fraction(math.comb(n, j)) * t ** j * (1 - t) ** (n - j) for j in range(k, n + 1)))


@pytest.mark.parametrize("flip, n, tau, alpha, seed", [(0.3, 200, 0.75, 1e-3, 0), (0.45, 50, 0.6, 0.05, 1),
                                                        (0.2, 100, 0.9, 0.01, 2), (0.5, 500, 0.55, 1e-4, 3)])
def test_toy_pvalues_and_holm_decisions_match_direct_loops(flip, n, tau, alpha, seed):
    cert = teaching.pixel_toy_certificate(flip, n, tau, alpha, seed)
    votes = cert.votes.ravel().tolist()
    expected_p = [_binom_tail(k, n, tau) for k in votes]
    np.testing.assert_allclose(cert.pvalues.ravel(), expected_p, rtol=1e-9, atol=1e-300)
    assert cert.certified.ravel().tolist() == _holm_loop(expected_p, alpha)
    np.testing.assert_array_equal(cert.classes, np.where(cert.certified, cert.mode.astype(int), -1))


def test_bonferroni_decisions_match_a_direct_comparison():
    cert = teaching.pixel_toy_certificate(0.35, 300, 0.7, 0.01, 4, correction="bonferroni")
    np.testing.assert_array_equal(cert.certified, cert.pvalues <= 0.01 / 64)


def test_no_flips_certify_the_clean_map_once_n_is_large_enough():
    # With no flips every pixel gets n of n votes and the p-value τⁿ; it passes Holm's first step iff τⁿ ≤ α/64.
    big = teaching.pixel_toy_certificate(0.0, 200, 0.75, 1e-3, 0)
    np.testing.assert_array_equal(big.classes, big.clean_top.astype(int))
    small = teaching.pixel_toy_certificate(0.0, 20, 0.75, 1e-3, 0)
    assert 0.75 ** 20 > 1e-3 / 64 and (small.classes == -1).all()


def test_top_k_and_flip_probabilities_against_a_sort():
    a = teaching.toy_attribution()
    clean_top, flip = teaching.flip_probabilities(a, 25.0, 0.4, width=0.1)
    values = sorted(a.ravel(), reverse=True)
    border = (values[15] + values[16]) / 2
    assert clean_top.sum() == 16 and (a[clean_top] >= values[15]).all()
    np.testing.assert_allclose(flip, 0.4 * np.exp(-np.abs(a - border) / 0.1))


def test_vote_shares_follow_the_flip_probabilities():
    cert = teaching.pixel_toy_certificate(0.3, 20_000, 0.75, 1e-3, 9)
    keep = np.where(cert.mode == cert.clean_top, 1 - cert.flip_prob, cert.flip_prob)
    sd = np.sqrt(keep * (1 - keep) / cert.n) + 1e-12
    assert (np.abs(cert.vote_fraction - keep) < 5 * sd + 1e-9).all()


def test_family_wise_error_stays_below_alpha_where_every_null_is_true():
    """Every pixel keeps its mode with probability ≤ τ (all nulls true, at the boundary): a correct correction
    certifies something wrongly in at most ~α of the runs, uncorrected tests in most of them."""
    flat = (0.5 + np.linspace(-1e-4, 1e-4, 64)).reshape(8, 8)   # all pixels on the top-K border: flip ≈ 0.26
    runs, alpha, tau = 300, 0.05, 0.75
    wrong = uncorrected = 0
    for seed in range(runs):
        cert = teaching.pixel_toy_certificate(0.26, 100, tau, alpha, seed, attr=flat)
        keep = np.where(cert.mode == cert.clean_top, 1 - cert.flip_prob, cert.flip_prob)
        assert (keep <= tau).all()
        wrong += bool(cert.certified.any())
        uncorrected += bool((cert.pvalues <= alpha).any())
    assert wrong <= 28            # binom.ppf(0.999, 300, 0.05)
    assert uncorrected > 150      # the test has the power to see a missing correction


def test_holm_thresholds():
    np.testing.assert_allclose(teaching.holm_thresholds(4, 0.1), [0.1 / 4, 0.1 / 3, 0.1 / 2, 0.1])


@pytest.mark.parametrize("kwargs", [dict(flip=-0.1), dict(flip=1.5), dict(n=0), dict(tau=0.3), dict(alpha=2.0),
                                    dict(correction="sidak"), dict(k_percent=0.0), dict(k_percent=150.0)])
def test_pixel_toy_rejects_bad_input(kwargs):
    args = dict(flip=0.2, n=50, tau=0.75, alpha=0.01)
    args.update(kwargs)
    with pytest.raises(CertlibError):
        teaching.pixel_toy_certificate(**args)


# ------------------------------------------------------------------------------------ 3. ball overlap

def _lens_area(r, eps):
    return 2 * r * r * math.acos(eps / (2 * r)) - eps / 2 * math.sqrt(4 * r * r - eps * eps)


def _shoelace(polygon):
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


@pytest.mark.parametrize("r, eps", [(1.0, 0.0), (1.0, 0.3), (2.0, 1.7), (0.5, 0.99)])
def test_lens_outline_encloses_the_closed_form_lens_area(r, eps):
    outline = teaching.lens_outline(r, eps, points=4000)
    assert _shoelace(outline) == pytest.approx(_lens_area(r, eps), rel=1e-5)
    assert teaching.overlap_versus_dimension(eps / r, [2])[0] == pytest.approx(_lens_area(r, eps) / (math.pi * r * r),
                                                                               rel=1e-10)
    inside_both = (np.hypot(*outline.T) <= r + 1e-9) & (np.hypot(outline[:, 0] - eps, outline[:, 1]) <= r + 1e-9)
    assert inside_both.all()


def test_disjoint_discs_have_no_lens():
    assert teaching.lens_outline(1.0, 2.0).shape == (0, 2)


@pytest.mark.parametrize("ratio", [0.1, 0.8, 1.5])
def test_three_dimensional_overlap_is_the_sphere_intersection(ratio):
    r, eps = 1.0, ratio
    lens = math.pi * (4 * r + eps) * (2 * r - eps) ** 2 / 12
    assert teaching.overlap_versus_dimension(ratio, [3])[0] == pytest.approx(lens / (4 / 3 * math.pi * r ** 3),
                                                                             rel=1e-10)


def test_overlap_in_ten_dimensions_by_monte_carlo():
    rng = np.random.default_rng(0)
    d, ratio, m = 10, 0.4, 200_000
    direction = rng.standard_normal((m, d))
    points = direction / np.linalg.norm(direction, axis=1, keepdims=True) * rng.random((m, 1)) ** (1 / d)
    shared = (np.linalg.norm(points - np.eye(d)[0] * ratio, axis=1) <= 1).mean()
    p = teaching.overlap_versus_dimension(ratio, [d])[0]
    assert abs(shared - p) < 4 * math.sqrt(p * (1 - p) / m)


def test_half_volume_radius_against_one_dimension_and_the_high_dimensional_limit():
    assert teaching.eps_over_r_for_overlap(1, 0.5) == pytest.approx(1.0, abs=1e-12)   # segments: 1 − ε/(2r)
    # For large d a coordinate of a uniform point in the unit ball is ≈ N(0, 1/d): overlap ≈ 2Φ(−√d·ε/(2r)).
    d = 150_528
    assert teaching.eps_over_r_for_overlap(d, 0.5) == pytest.approx(2 * norm.ppf(0.75) / math.sqrt(d), rel=1e-3)


def test_overlap_falls_with_dimension_and_the_ladder_is_sorted():
    dims = teaching.dimension_ladder()
    assert dims[0] == 1 and dims[-1] == 150_528 and (np.diff(dims) > 0).all()
    fractions = teaching.overlap_versus_dimension(0.2, dims)
    assert (np.diff(fractions) < 0).all() and fractions[-1] < 1e-30


# ------------------------------------------------------------------------------------ 4. top-K overlap

def test_value_interval_is_attained_by_a_half_plane():
    # f = 1{z₁ > 0}: ḡ(x) = Φ(x₁/σ); moving by ∓ε along e₁ lands exactly on the interval's ends.
    sigma, eps, x1 = 0.4, 0.3, 0.1
    g = norm.cdf(x1 / sigma)
    low, high = teaching.value_interval(np.array([g]), np.array([g]), eps, sigma)
    assert low[0] == pytest.approx(norm.cdf((x1 - eps) / sigma), rel=1e-12)
    assert high[0] == pytest.approx(norm.cdf((x1 + eps) / sigma), rel=1e-12)


def test_value_interval_contains_a_smoothed_disc_under_random_shifts():
    # f = 1{‖z − c‖ < ρ}: ḡ(x) by the noncentral χ² CDF; every shift of norm ≤ ε stays inside the interval.
    sigma, eps, rho = 0.5, 0.4, 0.7
    smoothed = lambda p: ncx2.cdf(rho ** 2 / sigma ** 2, 2, float(np.dot(p, p)) / sigma ** 2)  # noqa: E731
    x = np.array([0.5, -0.2])
    g = smoothed(x)
    low, high = teaching.value_interval(np.array(g), np.array(g), eps, sigma)
    rng = np.random.default_rng(0)
    for _ in range(300):
        d = rng.standard_normal(2)
        moved = smoothed(x + d / np.linalg.norm(d) * eps * rng.random() ** 0.5)
        assert low - 1e-12 <= moved <= high + 1e-12


def _adversarial_rank(toy, j):
    """j's rank (0 = largest) in the worst map: j at its lowest reachable value, every other pixel at its highest,
    ties broken against j."""
    values = toy.high_after.ravel().copy()
    values[j] = toy.low_after.ravel()[j]
    others_above = [i for i in range(values.size) if i != j and values[i] >= values[j]]
    return len(others_above)


@pytest.mark.parametrize("eps, sigma, k, width", [(0.0, 0.25, 10, 0.0), (0.05, 0.25, 10, 0.02),
                                                  (0.1, 0.5, 5, 0.0), (0.2, 0.25, 20, 0.05), (0.5, 1.0, 32, 0.1)])
def test_certified_pixels_survive_the_worst_case_map(eps, sigma, k, width):
    toy = teaching.topk_toy_certificate(eps, sigma, k, width)
    for j in range(toy.values.size):
        assert toy.certified.ravel()[j] == (_adversarial_rank(toy, j) < k), j
    assert not (toy.certified & ~toy.top).any()
    rng = np.random.default_rng(1)
    low, high = toy.low_after.ravel(), toy.high_after.ravel()
    for _ in range(500):   # any map inside the reachable intervals keeps every certified pixel in its top k
        values = low + (high - low) * rng.random(low.size)
        in_top = np.zeros(low.size, bool)
        in_top[np.argsort(-values)[:k]] = True
        assert in_top[toy.certified.ravel()].all()


@pytest.mark.parametrize("sigma, k, width", [(0.25, 10, 0.0), (0.5, 4, 0.03)])
def test_overlap_curve_against_per_pixel_certified_radii(sigma, k, width):
    # Independent closed form: top pixel j is certified iff ε < σ·(Φ⁻¹(L_j) − Φ⁻¹(U_(k+1)))/2, with U_(k+1) the
    # (k+1)-th largest upper bound.
    g = teaching.toy_smoothgrad()
    lower, upper = np.clip(g - width, 0, 1).ravel(), np.clip(g + width, 0, 1).ravel()
    rival = np.sort(upper)[::-1][k]
    radius = sigma * (norm.ppf(lower) - norm.ppf(rival)) / 2
    eps_axis = teaching.toy_eps_axis(sigma)
    expected = [(radius > e).sum() / k for e in eps_axis]
    np.testing.assert_allclose(teaching.topk_overlap_curve(eps_axis, sigma, k, width), expected)
    assert expected[-1] == 0.0 and (width > 0 or expected[0] == 1.0)


def test_topk_rejects_bad_input():
    for kwargs in (dict(k=0), dict(k=65), dict(sigma=0.0), dict(eps=-0.1), dict(half_width=-0.01)):
        args = dict(eps=0.1, sigma=0.25, k=10)
        args.update(kwargs)
        with pytest.raises(CertlibError):
            teaching.topk_toy_certificate(**args)
