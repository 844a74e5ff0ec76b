"""Per-pixel certified radii (certlib.pixel.radius) against independent computations: the binomial tail that a
Clopper–Pearson bound must solve, the Bonferroni test at τ, the scalar anytime bound, and a Monte-Carlo
falsification on a synthetic attribution whose per-pixel probabilities are simulated here, which fails when the
bounds are taken at α instead of α/m."""
import numpy as np
import pytest
import torch
from scipy.stats import beta, binom, norm

from certlib.pixel import anytime, cert as pixel_cert, radius as pixel_radius, progressive
from certlib.smoothing import sampling
from certlib.errors import CertlibError

SIDE, SIGMA, LEVELS = 8, 0.25, (25.0, 50.0)
IMAGE = torch.linspace(0.0, 1.0, SIDE * SIDE, dtype=torch.float32).reshape(1, 1, SIDE, SIDE)


def identity_attribution(batch: torch.Tensor) -> torch.Tensor:
    """A 'model' whose attribution map is the noisy input itself: its top-K probabilities can be simulated."""
    return batch[:, 0]


def _counts(n: int, seed: int, n0: int = 8) -> sampling.TopKCounts:
    return sampling.sample_topk_counts(identity_attribution, IMAGE, SIGMA, n0, n, LEVELS, seed=seed, batch_size=256)


@pytest.fixture(scope="module")
def true_top_probability() -> tuple[np.ndarray, np.ndarray]:
    """P[pixel i is in the top K% of x + N(0, σ²)] per level, by 400,000 draws written from the definition
    (strictly above the (100 − K)-th percentile of |value|, linear interpolation), and its standard error."""
    rng = np.random.default_rng(12345)
    x = IMAGE.numpy().reshape(-1).astype(np.float64)
    hits = np.zeros((len(LEVELS), x.size))
    draws = 400_000
    for _ in range(draws // 20_000):
        noisy = np.abs(x[None, :] + SIGMA * rng.standard_normal((20_000, x.size)))
        for j, k in enumerate(LEVELS):
            hits[j] += (noisy > np.percentile(noisy, 100 - k, axis=1)[:, None]).sum(axis=0)
    p = hits / draws
    return p.reshape(len(LEVELS), SIDE, SIDE), np.sqrt(p * (1 - p) / draws).reshape(len(LEVELS), SIDE, SIDE)


def test_clopper_pearson_bound_solves_the_binomial_tail():
    # The one-sided (1 − a) CP lower bound p̲ is the q at which P[Bin(n, q) ≥ k] = a (scipy's binomial tail).
    n, level = 200, 1e-4
    table = pixel_radius.clopper_pearson_table(n, level)
    for k in (1, 50, 120, 199, 200):
        assert binom.sf(k - 1, n, table[k]) == pytest.approx(level, rel=1e-6)
        assert table[k] == pytest.approx(beta.ppf(level, k, n - k + 1), rel=1e-12)   # scipy's beta quantile
    assert table[0] == 0.0


def test_radii_at_r_tau_certify_exactly_what_bonferroni_certifies():
    counts = _counts(256, seed=3)
    radii = pixel_radius.fixed_n_radii(counts, 0.05)
    for tau in (0.6, 0.75, 0.9):
        cert = pixel_cert.decide(counts.votes_for_mode, counts.modes, counts.n, SIGMA, tau, 0.05, "bonferroni")
        at = radii.certified_at(pixel_cert.certified_radius(SIGMA, tau))
        assert np.array_equal(at, cert.classes), tau
    holm = pixel_cert.decide(counts.votes_for_mode, counts.modes, counts.n, SIGMA, 0.75, 0.05, "holm")
    assert (holm.classes >= 0).sum() >= (radii.certified_at(pixel_cert.certified_radius(SIGMA, 0.75)) >= 0).sum()


def test_radius_is_sigma_times_the_normal_quantile_of_the_bound_and_absent_at_half():
    counts = _counts(64, seed=1)
    r = pixel_radius.fixed_n_radii(counts, 0.1)
    m = counts.votes_for_mode.size
    k = counts.votes_for_mode
    low = np.where(k == 0, 0.0, beta.ppf(0.1 / m, k, counts.n - k + 1))
    expected = np.where(low > 0.5, SIGMA * norm.ppf(low), np.nan)
    np.testing.assert_allclose(r.radii, expected, rtol=1e-10, equal_nan=True)
    assert np.array_equal(r.classes == -1, np.isnan(expected))
    curve = r.curve([0.0, 0.1, 10.0])
    assert (np.diff(curve["tests"], axis=0) <= 0).all() and (curve["tests"][-1] == 0).all()


def test_anytime_table_matches_the_scalar_bound():
    n, level = 96, 1e-3
    table = pixel_radius.anytime_bound_table(n, level)
    for k in (49, 60, 90, 96):                          # k > n/2: the bounds that can give a radius
        assert table[k] == pytest.approx(anytime.lower_confidence_bound(k, n, level), abs=1e-9)
        if table[k] > 0:
            assert anytime.anytime_pvalue(k, n, table[k]) == pytest.approx(level, rel=1e-6)
    for k in (0, 10, 48):                               # k ≤ n/2: no radius either way, the table claims nothing
        assert table[k] == 0.0 and anytime.lower_confidence_bound(k, n, level) <= 0.5
    both = pixel_radius.anytime_bound_tables((n, 40), level)      # several n in one bisection: the same tables
    np.testing.assert_array_equal(both[0], table)
    assert both[1][40] == pytest.approx(anytime.lower_confidence_bound(40, 40, level), abs=1e-9)


def _trajectory(seed: int, n: int, frame: int, plan_n: int | None) -> list[progressive.Trajectory]:
    counts = _counts(frame, seed)
    out = [progressive.Trajectory.begin(counts, plan_n)]
    while counts.n < n:
        counts = sampling.extend_counts(identity_attribution, IMAGE, counts, frame, batch_size=256)
        out.append(out[-1].extend(counts))
    return out


def test_anytime_radii_never_shrink_and_the_budget_look_joins():
    frames = _trajectory(seed=5, n=128, frame=16, plan_n=128)
    radii = [pixel_radius.trajectory_radii(t, 0.05) for t in frames]
    for before, after in zip(radii, radii[1:]):
        assert (after.lower_bounds >= before.lower_bounds).all()
        had = np.isfinite(before.radii)
        assert (after.radii[had] >= before.radii[had]).all()
    last = frames[-1]
    planned = pixel_radius.clopper_pearson_table(128, 0.05 * progressive.PLAN_SHARE / last.counts.modes.size)
    assert (radii[-1].lower_bounds >= planned[last.counts.votes_for_mode] - 1e-15).all()


def test_bad_eps_and_alpha_are_refused():
    r = pixel_radius.fixed_n_radii(_counts(32, seed=0), 0.1)
    with pytest.raises(CertlibError, match="eps"):
        r.certified_at(-0.1)
    with pytest.raises(ValueError):
        pixel_radius.fixed_n_radii(_counts(32, seed=0), 1.5)


def _violated(lower: np.ndarray, modes: np.ndarray, p_top: np.ndarray, se: np.ndarray) -> bool:
    """Whether any pixel's bound exceeds the true probability of its mode (beyond the simulation's 4 s.e.)."""
    p_mode = np.where(modes == 1, p_top, 1.0 - p_top)
    return bool((lower > p_mode + 4 * se).any())


def test_monte_carlo_no_more_than_alpha_of_runs_give_any_pixel_too_large_a_radius(true_top_probability):
    p_top, se = true_top_probability
    alpha, reps, n = 0.2, 200, 64
    fixed = naive = anytime_runs = 0
    for rep in range(reps):
        counts = _counts(n, seed=1000 + rep)
        radii = pixel_radius.fixed_n_radii(counts, alpha)
        fixed += _violated(radii.lower_bounds, counts.modes, p_top, se)
        # The control, written here: the same bounds at α per test instead of α/m.
        k = counts.votes_for_mode
        unadjusted = np.where(k == 0, 0.0, beta.ppf(alpha, k, n - k + 1))
        naive += _violated(unadjusted, counts.modes, p_top, se)
    for rep in range(reps // 4):                   # anytime: the bound kept is the maximum over 8 looks
        last = _trajectory(seed=5000 + rep, n=64, frame=8, plan_n=64)[-1]
        anytime_runs += _violated(pixel_radius.trajectory_radii(last, alpha).lower_bounds, last.counts.modes,
                                  p_top, se)
    # One-sided binomial check: observing this many failures when the true rate is α has probability < 1e-3.
    assert binom.sf(fixed - 1, reps, alpha) > 1e-3, fixed
    assert binom.sf(anytime_runs - 1, reps // 4, alpha) > 1e-3, anytime_runs
    assert naive / reps > 2 * alpha, naive        # the falsification has power: unadjusted bounds fail it


def test_radius_figures_draw_the_map_and_the_curves_with_r_tau_marked():
    from certlib.pixel import radius_viz

    counts = _counts(64, seed=2)
    radii = pixel_radius.fixed_n_radii(counts, 0.1)
    fig = radius_viz.radius_map(radii, 25.0, eps=0.1)
    z = np.asarray(fig.data[2].z, dtype=float)
    assert z.shape == (SIDE, SIDE) and np.isnan(z[radii.radii[0] < 0.1]).all()
    absent, below = (np.isfinite(np.asarray(fig.data[j].z, dtype=float)) for j in (0, 1))
    assert np.array_equal(absent, np.isnan(radii.radii[0]))            # abstain: exactly the tests with no radius
    assert np.array_equal(below, np.isfinite(radii.radii[0]) & (radii.radii[0] < 0.1))   # a radius, below ε
    other = pixel_radius.fixed_n_radii(_counts(64, seed=3), 0.1)
    curve = radius_viz.radius_curve({"a": radii, "b": other}, 0.17, (25.0, 50.0), marked_eps=0.1)
    assert len(curve.data) == 4 and any(a.text == "R(τ)" for a in curve.layout.annotations)
    assert np.all(np.diff(curve.data[0].y) <= 0)            # a share certified can only fall as ε grows


def test_stored_counts_get_radii_by_their_test_and_per_level_figures():
    counts = _counts(64, seed=4)
    m = counts.votes_for_mode.size
    fixed = pixel_radius.counts_radii(counts, "fixed", 0.1)
    np.testing.assert_array_equal(fixed.radii, pixel_radius.fixed_n_radii(counts, 0.1).radii)
    stopped = pixel_radius.counts_radii(counts, "anytime", 0.1)           # one look, at the full α / m
    k = counts.votes_for_mode
    expected = np.array([anytime.lower_confidence_bound(int(v), 64, 0.1 / m) if v > 32 else 0.0 for v in k.ravel()])
    np.testing.assert_allclose(stopped.lower_bounds.ravel(), expected, atol=1e-9)
    columns = pixel_radius.level_columns(fixed)
    for i, col in enumerate(columns):
        r = fixed.radii[i][np.isfinite(fixed.radii[i])]
        assert col["with_radius"] == pytest.approx(r.size / (SIDE * SIDE))
        assert col["radius_median"] == pytest.approx(np.median(r)) if r.size else np.isnan(col["radius_median"])
    with pytest.raises(CertlibError, match="test"):
        pixel_radius.counts_radii(counts, "sometimes", 0.1)
