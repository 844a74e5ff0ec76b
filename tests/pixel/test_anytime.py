"""The anytime-valid vote test (certlib.pixel.anytime): against numerical integration in mpmath (uniform and selection-
informed priors), the martingale identity at p = τ, and optional-stopping simulations — of single tests and of whole
progressive certificates — that the fixed-n binomial test visibly fails."""
import mpmath
import numpy as np
import pytest
from scipy.stats import binom

from certlib import stats
from certlib.pixel import anytime
from certlib.errors import CertlibError


def _mixture_mpmath(k: int, n: int, tau: float) -> mpmath.mpf:
    """M_n by numerical integration of the likelihood ratio over q uniform on (τ, 1], 50 digits."""
    with mpmath.workdps(50):
        t = mpmath.mpf(tau)
        integral = mpmath.quad(lambda q: q**k * (1 - q)**(n - k), [t, (1 + t) / 2, 1])
        return integral / ((1 - t) * t**k * (1 - t)**(n - k))


@pytest.mark.parametrize("k,n,tau", [(0, 1, 0.5), (1, 1, 0.5), (7, 10, 0.6), (90, 100, 0.75), (250, 256, 0.75),
                                     (30, 100, 0.75), (999, 1000, 0.99), (5, 5, 0.9)])
def test_evalue_equals_numerical_integration(k, n, tau):
    expected = float(mpmath.log(_mixture_mpmath(k, n, tau)))
    assert anytime.log_evalue(k, n, tau) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_large_n_stays_finite_and_matches_a_peaked_integral_in_mpmath():
    # n = 10⁶: q^k (1 − q)^(n − k) underflows any float; integrate it scaled by its maximum, around its peak.
    k, n, tau = 760_000, 1_000_000, 0.75
    with mpmath.workdps(40):
        t, q_star = mpmath.mpf(tau), mpmath.mpf(k) / n
        peak = k * mpmath.log(q_star) + (n - k) * mpmath.log(1 - q_star)
        sd = mpmath.sqrt(q_star * (1 - q_star) / n)
        points = [t] + [q_star + j * sd for j in (-12, -4, 0, 4, 12)] + [1]
        scaled = mpmath.quad(lambda q: mpmath.exp(k * mpmath.log(q) + (n - k) * mpmath.log(1 - q) - peak), points)
        expected = float(peak + mpmath.log(scaled) - mpmath.log(1 - t) - k * mpmath.log(t) - (n - k) * mpmath.log(1 - t))
    got = anytime.log_evalue(k, n, tau)
    assert np.isfinite(got) and got == pytest.approx(expected, rel=1e-8)


def test_martingale_at_the_boundary_and_supermartingale_below():
    # One more vote at p = τ leaves M unchanged in expectation; at p < τ it can only shrink it.
    k = np.arange(0, 41)
    for tau in (0.55, 0.75, 0.9):
        m = np.exp(anytime.log_evalue(k, 40, tau))
        up, same = np.exp(anytime.log_evalue(k + 1, 41, tau)), np.exp(anytime.log_evalue(k, 41, tau))
        np.testing.assert_allclose(tau * up + (1 - tau) * same, m, rtol=1e-10)
        p = tau - 0.1
        assert np.all(p * up + (1 - p) * same <= m * (1 + 1e-12))


def _informed_mpmath(k: int, n: int, tau: float, s: int, n0: int, floor: float) -> float:
    """log of floor·M_uniform + (1 − floor)·M_beta, the beta density ∝ q^s (1 − q)^(n0 − s) on (τ, 1], by quadrature."""
    with mpmath.workdps(40):
        t = mpmath.mpf(tau)
        ratio = lambda q: (q / t)**k * ((1 - q) / (1 - t))**(n - k)        # noqa: E731
        density = lambda q: q**s * (1 - q)**(n0 - s)                       # noqa: E731
        informed = mpmath.quad(lambda q: ratio(q) * density(q), [t, (1 + t) / 2, 1]) / mpmath.quad(density, [t, 1])
        return float(mpmath.log(floor * _mixture_mpmath(k, n, tau) + (1 - floor) * informed))


@pytest.mark.parametrize("k,n,tau,s,n0,floor", [(90, 100, 0.75, 28, 32, 0.5), (30, 100, 0.75, 20, 32, 0.5),
                                                (250, 256, 0.75, 8, 8, 0.25), (5, 5, 0.9, 5, 8, 0.5),
                                                (0, 3, 0.6, 4, 8, 0.3), (120, 128, 0.75, 17, 32, 0.9)])
def test_selection_informed_evalue_equals_numerical_integration(k, n, tau, s, n0, floor):
    table = anytime.log_evalue_table(n, tau, n0, floor)
    assert table[s, k] == pytest.approx(_informed_mpmath(k, n, tau, s, n0, floor), rel=1e-9, abs=1e-9)
    p = anytime.pvalues(np.array([k, 0]), n, tau, np.array([s, n0]), n0, floor)[0]
    assert p == pytest.approx(min(1.0, float(np.exp(-table[s, k]))), rel=1e-12)


def test_selection_informed_mixture_is_a_martingale_at_the_boundary():
    """For a prior fixed before the estimation votes (any s), one more vote at p = τ leaves M unchanged in
    expectation: the property Ville's inequality needs."""
    k = np.arange(0, 41)
    for s in (4, 7, 8):
        m, up, same = (np.exp(anytime.log_evalue_table(n, 0.75, 8, 0.5)[s, :n + 1][kk])
                       for n, kk in ((40, k), (41, k + 1), (41, k)))
        np.testing.assert_allclose(0.75 * up + 0.25 * same, m, rtol=1e-10)


def test_pvalue_is_one_without_evidence_and_monotone_in_votes():
    assert anytime.anytime_pvalue(0, 0, 0.75) == 1.0
    p = anytime.anytime_pvalue(np.arange(0, 257), 256, 0.75)
    assert np.all(np.diff(p) <= 1e-15) and p[0] == 1.0 and p[-1] < 1e-20
    # Never smaller than the fixed-n binomial tail: anytime validity costs evidence.
    fixed = stats.binom_test_greater(np.arange(0, 257), 256, 0.75)
    assert np.all(p >= fixed * (1 - 1e-9))


def test_bad_arguments_name_the_value():
    with pytest.raises(CertlibError, match="tau must be in"):
        anytime.anytime_pvalue(3, 4, 1.0)
    with pytest.raises(CertlibError):
        anytime.anytime_pvalue(5, 4, 0.75)


def _critical_votes(pvalue, n_max: int, tau: float, alpha: float) -> np.ndarray:
    """For each n ≤ n_max, the fewest votes whose p-value is ≤ α (n + 1 when none is)."""
    n = np.arange(n_max + 1)
    low, high = np.zeros_like(n), n + 1            # invariant: p(high) ≤ α or high = n + 1; p(low - 1) > α
    for _ in range(int(np.ceil(np.log2(n_max + 2))) + 1):
        mid = (low + high) // 2
        ok = np.asarray(pvalue(np.minimum(mid, n), n, tau)) <= alpha
        ok &= mid <= n
        high = np.where(ok, mid, high)
        low = np.where(ok, low, mid + 1)
    return high


def test_optional_stopping_keeps_the_false_rejection_rate_below_alpha():
    """10⁵ Bernoulli(τ) paths (H0 true at its boundary), stopped the first time the p-value reaches α, up to
    n = 5 000. The anytime p-value rejects at most α (plus Monte-Carlo error); the fixed-n binomial tail, monitored the
    same way, rejects far more: the test has teeth."""
    tau, alpha, n_max, paths = 0.75, 0.05, 5000, 100_000
    crit_any = _critical_votes(anytime.anytime_pvalue, n_max, tau, alpha)
    crit_fixed = _critical_votes(lambda k, n, t: binom.sf(k - 1, n, t), n_max, tau, alpha)
    rng = np.random.default_rng(2026)
    rejected_any = rejected_fixed = 0
    for _ in range(paths // 10_000):
        votes = np.cumsum(rng.random((10_000, n_max), dtype=np.float32) < tau, axis=1, dtype=np.int16)
        rejected_any += int((votes >= crit_any[1:]).any(axis=1).sum())
        rejected_fixed += int((votes >= crit_fixed[1:]).any(axis=1).sum())
    rate_any, rate_fixed = rejected_any / paths, rejected_fixed / paths
    assert rate_any <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / paths), rate_any
    assert rate_fixed > 3 * alpha, rate_fixed


def test_holm_over_many_pixels_under_optional_stopping_controls_the_family_wise_error():
    """1 024 pixels, half of them true nulls at p = τ, half with p = 0.95; after every batch of 8 votes Holm runs on
    the anytime p-values, and a replicate counts as an error if any batch ever rejects a true null (the most
    adversarial stopping rule: stop right then). FWER ≤ α; the fixed-n tail, monitored the same way, exceeds it."""
    tau, alpha, n_max, batch, reps, m = 0.75, 0.1, 512, 8, 200, 1024
    truth_null = np.arange(m) < m // 2
    probs = np.where(truth_null, tau, 0.95)
    rng = np.random.default_rng(18)
    errors_any = errors_fixed = 0
    steps = np.arange(batch, n_max + 1, batch)
    for _ in range(reps):
        votes = np.cumsum(rng.random((len(steps), batch, m)) < probs, axis=1)[:, -1]   # per batch
        k = np.cumsum(votes, axis=0)                                                   # [steps, m]
        n = steps[:, None]
        p_any = np.asarray(anytime.anytime_pvalue(k, np.broadcast_to(n, k.shape), tau))
        p_fixed = binom.sf(k - 1, n, tau)
        errors_any += any((stats.holm(row, alpha) & truth_null).any() for row in p_any)
        errors_fixed += any((stats.holm(row, alpha) & truth_null).any() for row in p_fixed)
    assert errors_any / reps <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / reps), errors_any
    assert errors_fixed / reps > errors_any / reps, (errors_fixed, errors_any)


def test_anytime_decision_certifies_a_subset_of_the_fixed_n_decision():
    from certlib.pixel import cert as pixel_cert

    rng = np.random.default_rng(7)
    n = 256
    votes = rng.binomial(n, rng.uniform(0.6, 1.0, size=(3, 32, 32)))
    modes = rng.integers(0, 2, size=(3, 32, 32))
    fixed = pixel_cert.decide(votes, modes, n, 0.25, 0.75, 1e-3)
    anyt = anytime.decide(votes, modes, n, 0.25, 0.75, 1e-3)
    assert anyt.radius == fixed.radius and anyt.num_tests == fixed.num_tests == 3 * 1024
    certified_any, certified_fixed = anyt.classes != -1, fixed.classes != -1
    assert certified_any.sum() > 0 and not (certified_any & ~certified_fixed).any()
    assert np.array_equal(anyt.classes[certified_any], modes[certified_any])
    assert certified_any.sum() < certified_fixed.sum()         # anytime validity costs some pixels at n = 256


def test_min_samples_matches_the_first_passing_n():
    # DESIGN §9: pixels whose every vote agrees pass at τ = 0.75 over 5·1024 tests at α = 1e−3 near n = 60.
    n_min = anytime.min_samples_to_certify(0.75, 1e-3, 5 * 1024)
    level = 1e-3 / (5 * 1024)
    assert anytime.anytime_pvalue(n_min, n_min, 0.75) <= level < anytime.anytime_pvalue(n_min - 1, n_min - 1, 0.75)
    assert 50 <= n_min <= 70 and n_min > stats.min_samples_to_certify(0.75, 1e-3, 5 * 1024)


def test_the_pvalue_grows_with_the_null_threshold_so_bisection_finds_the_bound():
    qs = np.linspace(0.001, 0.999, 999)
    for n in (1, 7, 64, 500):
        for k in range(0, n + 1, max(1, n // 13)):
            p = np.asarray(anytime.anytime_pvalue(np.full(qs.shape, k), np.full(qs.shape, n), qs))
            assert (np.diff(p) >= -1e-12).all(), (k, n)


def test_lower_confidence_bound_covers_under_optional_stopping_and_is_below_clopper_pearson():
    """20 000 paths at p = 0.8: an adversary stops the first time the bound rises above p (up to n = 400). The bound
    must exceed p on ≤ α of the paths; Clopper–Pearson, read the same way, exceeds it far more often."""
    p, alpha, n_max, reps = 0.8, 0.05, 400, 20_000
    rng = np.random.default_rng(5)
    k = np.cumsum(rng.random((reps, n_max)) < p, axis=1)
    n = np.arange(1, n_max + 1)
    # the bound exceeds p exactly when H0: q ≤ p is rejected at α (bisection's defining property), so test that:
    crossed_any = (np.asarray(anytime.anytime_pvalue(k, np.broadcast_to(n, k.shape), p)) <= alpha).any(axis=1)
    crossed_cp = (stats.clopper_pearson_lower(k, np.broadcast_to(n, k.shape), alpha) > p).any(axis=1)
    assert crossed_any.mean() <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / reps), crossed_any.mean()
    assert crossed_cp.mean() > 2 * alpha
    for kk, nn in ((0, 10), (5, 10), (90, 100), (100, 100), (990, 1000)):
        bound = anytime.lower_confidence_bound(kk, nn, alpha)
        assert bound <= float(stats.clopper_pearson_lower(kk, nn, alpha)) + 1e-12
        if bound > 0:   # the defining property, checked at the bound and just below it
            assert anytime.anytime_pvalue(kk, nn, bound) <= alpha < anytime.anytime_pvalue(kk, nn, bound + 1e-6)


# ------------------------------------------------------------------ progressive certificates under adversarial stopping
#
# Written from the definition: every pixel test is a true null at its worst case (votes Bernoulli(τ) exactly, both
# the n0 selection votes that fix the mode and the prior, and the estimation votes), and the stopping rule is the
# most adversarial one: stop the moment any frame certifies anything. A replicate is a family-wise error if any
# frame of the run certifies a pixel. The progressive certificates are reached only through the public decide path
# (progressive.replay: the certificate every frame shows). The fixed-n test decided at every frame under the same
# stopping is the control that shows the check can fail.

MC_TAU, MC_ALPHA, MC_N0, MC_N_MAX, MC_FRAME, MC_SHAPE, MC_REPLICATES = 0.75, 0.1, 8, 96, 8, (1, 4, 4), 300


def _null_trajectory(rng: np.random.Generator):
    from certlib.pixel import progressive
    from certlib.smoothing import sampling

    def counts(n: int, ones: np.ndarray, selection: np.ndarray) -> sampling.TopKCounts:
        return sampling.TopKCounts(k_percents=(50.0,), sigma=0.25, n0=MC_N0, n=n, seed=0, scale=None,
                                   clean_attr=np.zeros(MC_SHAPE[1:], np.float32),
                                   clean_masks=np.zeros(MC_SHAPE, bool), selection_ones=selection,
                                   estimation_ones=ones)

    selection = rng.binomial(MC_N0, MC_TAU, MC_SHAPE).astype(np.int32)
    ones = rng.binomial(MC_FRAME, MC_TAU, MC_SHAPE).astype(np.int32)
    trajectory = progressive.Trajectory.begin(counts(MC_FRAME, ones, selection), plan_n=MC_N_MAX)
    for n in range(2 * MC_FRAME, MC_N_MAX + 1, MC_FRAME):
        ones = ones + rng.binomial(MC_FRAME, MC_TAU, MC_SHAPE).astype(np.int32)
        trajectory = trajectory.extend(counts(n, ones, selection))
    return trajectory


def _clopper_pearson(errors: int, trials: int) -> tuple[float, float]:
    """Two-sided 95% Clopper–Pearson interval of a binomial proportion (from the beta quantiles, by definition)."""
    from scipy.stats import beta as beta_dist

    low = 0.0 if errors == 0 else float(beta_dist.ppf(0.025, errors, trials - errors + 1))
    high = 1.0 if errors == trials else float(beta_dist.ppf(0.975, errors + 1, trials - errors))
    return low, high


@pytest.fixture(scope="module")
def null_runs() -> dict[str, int]:
    """Family-wise errors over MC_REPLICATES null runs: the live frames alone (plan_share 0), the default split (live
    frames plus the exact test at the planned budget), and the fixed-n test decided at every frame."""
    from certlib.pixel import cert as pixel_cert, progressive

    live = progressive.StopRule(MC_TAU, MC_ALPHA, (50.0,), plan_share=0.0)
    split = progressive.StopRule(MC_TAU, MC_ALPHA, (50.0,))
    rng = np.random.default_rng(26)
    errors = {"live": 0, "split": 0, "fixed_every_frame": 0}
    for _ in range(MC_REPLICATES):
        trajectory = _null_trajectory(rng)
        errors["live"] += any((c.classes != -1).any() for c in progressive.replay(trajectory, live))
        errors["split"] += any((c.classes != -1).any() for c in progressive.replay(trajectory, split))
        modes = trajectory.counts.modes
        errors["fixed_every_frame"] += any(
            (pixel_cert.certify_pixels(np.where(modes == 1, ones, n - ones), modes, n, MC_TAU, MC_ALPHA) != -1).any()
            for n, ones in trajectory.ones())
    return errors


def test_live_frames_keep_the_family_wise_error_below_alpha_under_adversarial_stopping(null_runs):
    low, high = _clopper_pearson(null_runs["live"], MC_REPLICATES)
    assert high <= MC_ALPHA, (null_runs, (low, high))
    # the control: the fixed-n test looked at after every frame errs far more often than α (so this check can fail)
    fixed_low, fixed_high = _clopper_pearson(null_runs["fixed_every_frame"], MC_REPLICATES)
    assert fixed_low > MC_ALPHA, (null_runs, (fixed_low, fixed_high))


def test_live_frames_and_the_planned_look_together_stay_below_alpha(null_runs):
    """The split: Holm on min(p̃/(1 − s), p_plan/s), the exact test entering only at the planned budget. Its error is
    at most (1 − s)α from the live frames plus sα from the one look."""
    low, high = _clopper_pearson(null_runs["split"], MC_REPLICATES)
    assert high <= MC_ALPHA, (null_runs, (low, high))


@pytest.mark.parametrize("trials", [1, 9, 265, 4097])
@pytest.mark.parametrize("tau", [0.5, 0.75, 0.99, 0.999])
def test_binomial_log_cdf_agrees_with_scipys_incomplete_beta_and_never_underflows(trials, tau):
    """The tables' tails (a log-space sum of the pmf) against scipy's binom.logcdf (an incomplete beta): the same
    numbers where scipy's are finite, and finite where scipy's underflow to −inf."""
    got = anytime.log_binomial_cdf(trials, tau)
    expected = binom.logcdf(np.arange(trials + 1), trials, tau)
    finite = np.isfinite(expected) & (expected > -700)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-10, atol=1e-11)
    assert np.isfinite(got).all() and np.all(np.diff(got) >= -1e-12) and abs(got[-1]) < 1e-11    # log 1


@pytest.mark.parametrize("n,n0,tau", [(8, 8, 0.75), (256, 8, 0.75), (256, 32, 0.6), (2048, 8, 0.99), (40, 4, 0.5)])
def test_table_equals_the_elementwise_beta_tails(n, n0, tau):
    """log_evalue_table's binomial-CDF route against e-values from scipy's complementary incomplete beta (betaincc),
    entry by entry. (Not scipy.stats' beta.logsf: below the median it takes log1p(−cdf), which loses digits when the
    tail is near 1 — see the mpmath point below.)"""
    from scipy.special import betaincc, betaln

    k = np.arange(n + 1)
    table = anytime.log_evalue_table(n, tau, n0, 0.5)
    uniform = np.asarray(anytime.log_evalue(k, n, tau))                      # scipy.special.betaincc inside
    s = np.arange(n0 + 1)[:, None]
    a, b = s + 1.0, n0 - s + 1.0
    joint_tail, mass_tail = betaincc(a + k, b + n - k, tau), betaincc(a, b, tau)
    with np.errstate(divide="ignore"):
        informed = (betaln(a + k, b + n - k) + np.log(joint_tail) - betaln(a, b)
                    - np.log(mass_tail) - k * np.log(tau) - (n - k) * np.log1p(-tau))
    expected = np.logaddexp(np.log(0.5) + uniform[None, :], np.log(0.5) + informed)
    # where scipy's tails leave the normal floats (subnormal or 0: few or no digits) the comparison says nothing
    normal = (joint_tail > 1e-300) & (mass_tail > 1e-300) & (betaincc(k + 1.0, n - k + 1.0, tau) > 1e-300)[None, :]
    finite = normal & (uniform > -600)[None, :] & (informed > -600)
    assert finite.sum() >= 50                                                  # not a vacuous comparison
    np.testing.assert_allclose(table[finite], expected[finite], rtol=1e-9, atol=1e-9)
    assert np.isfinite(table).all()
    # k = 0 in closed form: ∫_τ^1 ((1 − q)/(1 − τ))^n dq/(1 − τ) = 1/(n + 1), finite even where scipy's tail underflows
    assert anytime.log_evalue_table(n, tau)[0, 0] == pytest.approx(-np.log(n + 1), rel=1e-12)


def test_table_matches_mpmath_where_scipy_stats_logsf_loses_digits():
    """n = 2048, τ = 0.99, s = 0 of n0 = 8, k = 1691: scipy.stats.beta.logsf gives −3.66604 for this log e-value;
    the quadrature gives −3.657757…, as the table does."""
    n, n0, tau, s, k = 2048, 8, 0.99, 0, 1691
    with mpmath.workdps(60):
        t, a, b = mpmath.mpf(tau), s + 1, n0 - s + 1
        ratio = lambda q: mpmath.exp(k * mpmath.log(q / t) + (n - k) * mpmath.log((1 - q) / (1 - t)))  # noqa: E731
        density = lambda q: q**(a - 1) * (1 - q)**(b - 1)                                          # noqa: E731
        cuts = [t + (1 - t) * mpmath.mpf(c) for c in ("0", "0.001", "0.01", "0.1", "0.5", "1")]
        truth = float(mpmath.log(mpmath.quad(lambda q: ratio(q) * density(q), cuts) / mpmath.quad(density, cuts)))
    got = anytime.log_evalue_beta_table(n, tau, n0, np.array([s]), np.array([k]))[0, 0]
    assert got == pytest.approx(truth, rel=1e-11) and abs(truth - (-3.66604)) > 1e-3
