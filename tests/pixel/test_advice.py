"""certlib.pixel.advice against independent computations: scipy's binomial tail and a numerically integrated mixture."""
import numpy as np
import pytest
from scipy import integrate
from scipy.stats import binom

from certlib.pixel import advice, cert as pixel_cert
from certlib.errors import CertlibError


def binomial_p(k, n, tau):
    return binom.sf(k - 1, n, tau)


def mixture_p(k, n, tau):
    """The anytime p-value from its definition: 1 / ∫_τ^1 (q/τ)^k ((1−q)/(1−τ))^(n−k) dq/(1−τ), integrated."""
    def lr(q):
        return np.exp(k * np.log(q / tau) + (n - k) * np.log((1 - q) / (1 - tau))) / (1 - tau)
    m, _ = integrate.quad(lr, tau, 1.0, limit=200, epsabs=0, epsrel=1e-10)
    return min(1.0, 1.0 / m)


@pytest.mark.parametrize("k,n,level", [(60, 64, 1e-3 / 3000), (230, 256, 1e-3 / 150528), (28, 32, 1e-2 / 100)])
def test_largest_tau_is_the_boundary_of_the_exact_test(k, n, level):
    best = advice.BestPixel(5.0, k, n)
    tau = advice.largest_tau(best, level, advice.pvalue_function("fixed"), 0.99)
    assert tau is not None
    assert binomial_p(k, n, tau) <= level                    # passes at the suggestion
    assert binomial_p(k, n, tau + 2e-4) > level              # and not noticeably above it


def test_largest_tau_with_the_anytime_test_matches_the_integrated_mixture():
    best = advice.BestPixel(5.0, 250, 256)
    level = 1e-3 / 150528
    tau = advice.largest_tau(best, level, advice.pvalue_function("anytime"), 0.99)
    assert tau is not None
    assert mixture_p(250, 256, tau) <= level * (1 + 1e-6)
    assert mixture_p(250, 256, tau + 2e-4) > level


def test_no_tau_when_tau_is_not_the_obstacle_or_nothing_helps():
    fixed = advice.pvalue_function("fixed")
    assert advice.largest_tau(advice.BestPixel(5, 64, 64), 1e-3, fixed, 0.75) is None    # passes already
    assert advice.largest_tau(advice.BestPixel(5, 20, 32), 1e-6, fixed, 0.75) is None    # 62% never passes


@pytest.mark.parametrize("test,p", [("fixed", binomial_p), ("anytime", mixture_p)])
def test_smallest_n_is_the_first_passing_n_by_scanning(test, p):
    best = advice.BestPixel(5.0, 112, 128)           # share 0.875
    level, tau = 1e-3 / 150528, 0.75
    n_star = advice.smallest_n(best, level, advice.pvalue_function(test), tau)
    assert n_star is not None and n_star > 128
    assert p(round(0.875 * n_star), n_star, tau) <= level
    # the bisection finds a passing n no later than the first of a run of passing n (checked by a scan from below)
    first = next(m for m in range(129, n_star + 1) if all(p(round(0.875 * j), j, tau) <= level
                                                           for j in range(m, n_star + 1)))
    assert n_star == first


def test_smallest_n_none_when_the_share_is_at_most_tau():
    assert advice.smallest_n(advice.BestPixel(5, 96, 128), 1e-3, advice.pvalue_function("fixed"), 0.75) is None


def test_advise_level_confirms_tau_by_redeciding():
    rng = np.random.default_rng(0)
    n, tau, alpha = 128, 0.9, 1e-3
    modes = (rng.random((16, 16)) < 0.1).astype(np.int8)
    votes = np.where(modes == 1, 118, 128).astype(np.int64)          # top pixels vote 92%: τ = 0.9 fails at n = 128
    votes_all = votes[None]
    m = votes_all.size

    def certifies_at(t):
        cert = pixel_cert.decide(votes_all, modes[None], n, 0.25, t, alpha)
        return bool((cert.classes[0] == 1).any())

    assert not certifies_at(tau)
    adv = advice.advise_level(modes, votes, n, 5.0, tau, alpha, m, certifies_at=certifies_at)
    assert adv.best.votes == 118 and adv.tau is not None and adv.tau < tau
    assert certifies_at(adv.tau)
    assert adv.n is not None and binomial_p(round(118 / 128 * adv.n), adv.n, tau) <= alpha / m
    refused = advice.advise_level(modes, votes, n, 5.0, tau, alpha, m, certifies_at=lambda t: False)
    assert refused.tau is None                                      # an unconfirmed τ is never offered


def test_no_top_pixel_means_no_advice_and_bad_input_is_named():
    adv = advice.advise_level(np.zeros((4, 4), np.int8), np.full((4, 4), 10), 10, 5.0, 0.75, 1e-3, 16)
    assert adv == advice.LevelAdvice(None, None, None)
    with pytest.raises(CertlibError, match="test"):
        advice.pvalue_function("bayes")
    with pytest.raises(CertlibError, match="tau"):
        advice.advise_level(np.ones((2, 2), np.int8), np.ones((2, 2)), 1, 5.0, 1.5, 1e-3, 4)


def test_a_split_alpha_path_uses_its_share():
    """With half of α on the anytime path the suggested τ is lower than with all of it (its level is halved)."""
    best = advice.BestPixel(5.0, 250, 256)
    m, alpha = 150528, 1e-3
    modes, votes = np.ones((1, 1), np.int8), np.full((1, 1), 250)
    whole = advice.advise_level(modes, votes, 256, 5.0, 0.99, alpha, m, (("anytime", 1.0),))
    half = advice.advise_level(modes, votes, 256, 5.0, 0.99, alpha, m, (("anytime", 0.5),))
    both = advice.advise_level(modes, votes, 256, 5.0, 0.99, alpha, m, (("anytime", 0.5), ("fixed", 0.5)))
    assert half.tau < whole.tau < both.tau                        # the exact test at the budget reaches furthest
    assert mixture_p(best.votes, best.n, half.tau) <= alpha * 0.5 / m * (1 + 1e-6)
    assert binomial_p(best.votes, best.n, both.tau) <= alpha * 0.5 / m
