"""Certified pixels says what is certified (issue #26, items 5 and 6b), through the real page (AppTest): the knob
that would certify an empty level, the smoothed class when it is not the explained one, fresh noise for a new n."""
import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import binom

from certlib.smoothing import sampling


@pytest.fixture
def page(open_page):
    seed = lambda *args, **kwargs: kwargs.get("seed", 0)  # noqa: E731
    return open_page("pages/certified_pixels.py", sampling, "sample_topk_counts", seed, cp_n=100, cp_test="fixed",
                     cp_levels=[25.0])


def _alerts(at, kind="warning"):
    return [e.value for e in at.get(kind)]


def _tau_that_certifies(sub, alpha, m):
    """Independently of certlib.pixel.advice: the τ at which the level's best top-K pixel has binomial p-value α/m."""
    top = sub.modes[0] == 1
    k = int(sub.votes_for_mode[0][top].max())
    return brentq(lambda t: binom.sf(k - 1, sub.n, t) - alpha / m, 0.5, 1 - 1e-9), k


def test_an_empty_level_offers_the_tau_that_certifies_it(page):
    at, _ = page
    cert, sub = at.session_state["cp_last_certificate"]
    tau_star, k = _tau_that_certifies(sub, cert.alpha, cert.num_tests)
    assert 0.55 < tau_star < 0.97, tau_star
    at.slider(key="cp_tau").set_value(round(min(0.99, tau_star + 0.02), 2)).run()
    cert, _ = at.session_state["cp_last_certificate"]
    assert not (cert.classes == 1).any()                               # the level is empty at this τ
    assert not any(s.startswith("Of ") for s in _alerts(at, "success"))   # the verdict is amber, never green
    assert any(w.startswith(("Of ", "Nothing can be certified")) for w in _alerts(at))
    said = next(w for w in _alerts(at) if w.startswith("**Top 25%: nothing certified yet.**"))
    assert f"in {k} of 100 noisy copies" in said
    button = next(b for b in at.get("button") if b.label.startswith("Set τ = "))
    offered = float(button.label.removeprefix("Set τ = "))
    assert offered <= tau_star + 1e-9 and offered > tau_star - 0.02     # the slider's step below the boundary
    button.click().run()
    assert at.session_state["cp_tau"] == pytest.approx(offered)
    cert, _ = at.session_state["cp_last_certificate"]
    assert (cert.classes == 1).any()                                   # one click, and the level certifies
    assert any(s.startswith("Of ") for s in _alerts(at, "success"))


def test_a_target_other_than_the_smoothed_class_is_named_with_a_switch(page):
    at, _ = page
    probs = at.session_state["workbench"].probs
    other = int(np.argsort(probs)[-2])
    at.selectbox(key="target").set_value(other).run()
    said = next(i for i in _alerts(at, "info") if "smoothed classifier votes" in i)
    smoothed = at.session_state["workbench"].prediction
    assert f"**{smoothed}**" in said and f"**{other}**" in said
    next(b for b in at.get("button") if b.label.startswith("Explain “")).click().run()
    assert not at.exception, at.exception
    assert at.session_state["target"] == smoothed
    assert not any("smoothed classifier votes" in i for i in _alerts(at, "info"))


def test_a_new_n_on_a_seed_already_looked_at_draws_fresh_noise(page):
    at, seeds = page
    assert seeds == [0]
    at.select_slider(key="cp_n").set_value(200).run()
    assert seeds == [0, 1] and at.session_state["cp_seed"] == 1          # fresh noise, not the same copies again
    assert any("draws fresh noise with seed 1" in i for i in _alerts(at, "info"))
    at.select_slider(key="cp_n").set_value(100).run()
    assert at.session_state["cp_seed"] == 0 and seeds == [0, 1]          # back to the first look: cached, no test
    at.number_input(key="cp_seed").set_value(1).run()                    # by hand: seed 1 was looked at with 200
    assert any("already certified here with n = 200" in w for w in _alerts(at))
    next(b for b in at.get("button") if b.label == "Switch to the anytime-valid test").click().run()
    assert at.session_state["cp_test"] == "anytime"


def test_an_empty_level_offers_the_measured_default_method(open_page):
    """With Gradient on digits, a level left empty offers the family's measured default (bench/results/
    defaults.json) with its certified share, one click away."""
    from certlib.attributions import defaults

    at, _ = open_page("pages/certified_pixels.py", sampling, "sample_topk_counts", lambda *a, **k: None, cp_n=100,
                      cp_test="fixed", cp_levels=[5.0], method="grad", cp_tau=0.99)
    best = defaults.for_family("digits").method
    said = next(w for w in _alerts(at) if w.startswith("**Top 5%: nothing certified yet.**"))
    assert f"{defaults.method_label('digits')} certified" in said and "(this method:" in said
    next(b for b in at.get("button") if b.label == f"Switch to {defaults.method_label('digits')}").click().run()
    assert not at.exception, at.exception
    assert at.session_state["method"] == best
