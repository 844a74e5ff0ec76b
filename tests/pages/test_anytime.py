"""The Certified pixels page's anytime-valid mode through AppTest (issue #18): frames are certificates of the
anytime test, a Stop keeps the partial certificate, Continue and a raised budget resume exactly where sampling
stopped, and decision sliders never resample."""
import numpy as np
import pytest
import streamlit as st

from certlib.pixel import anytime, progressive
from certlib.attributions import methods as attributions
from certlib.smoothing import sampling
from ui import cache, progressive_runs


@pytest.fixture
def anytime_page(open_page):
    """The page in its default (anytime) mode, a budget of 128, with every call that samples recorded: the
    selection stage (sample_topk_counts) as ('start', n), each continuation (extend_counts) as ('more', from n)."""
    return open_page("pages/certified_pixels.py", sampling, "extend_counts",
                     lambda *a, **k: ("more", a[2].n), cp_nmax=128)


def _state(at) -> progressive_runs.Progress:
    (state,) = [v for k, v in cache.sampling_results()._items.items() if k[0] == progressive_runs.KIND]
    return state


def _workbench_counts(at, n: int) -> sampling.TopKCounts:
    """The uninterrupted counts of the page's configuration at n, straight from the library."""
    wb = at.session_state["workbench"]
    fn, logits = attributions.for_target(wb.model, wb.method, wb.target, 0)
    return sampling.sample_topk_counts(fn, wb.x, 0.25, at.session_state["cp_n0"], n, logits=logits)


def _caption(at) -> str:
    return " ".join(c.value for c in at.caption)


def test_the_default_is_the_anytime_test_and_the_page_says_so(anytime_page):
    at, calls = anytime_page
    assert at.radio(key="cp_test").value == "anytime"
    state = _state(at)
    assert state.counts.n == 128 and state.stop == "budget"
    assert "anytime-valid test" in _caption(at) and "n = 128 estimation copies of a budget of 128" in _caption(at)
    cert, sub = at.session_state["cp_last_certificate"]
    # the certificate on screen is the progressive decision of the cached trajectory (running minimum of the
    # anytime p-values, with the look at the budget), not the fixed-n one
    assert state.trajectory.looked and state.trajectory.n == (32, 64, 96, 128)
    expected = progressive.decide_trajectory(state.trajectory, 0.75, 1e-3, "holm", sub.k_percents)
    assert np.array_equal(cert.classes, expected.classes) and (cert.classes != -1).any()
    assert calls == [("more", n) for n in range(32, 128, 32)]      # one batch per frame after the first
    assert [h[0] - state.counts.n0 for h in state.history] == [32, 64, 96, 128]     # passes: n0 + n


def test_decision_sliders_re_decide_without_sampling(anytime_page):
    at, calls = anytime_page
    before = list(calls)
    at.slider(key="cp_tau").set_value(0.6).run()
    at.select_slider(key="cp_alpha").set_value(0.01).run()
    assert not at.exception and calls == before
    cert, _ = at.session_state["cp_last_certificate"]
    assert cert.tau == 0.6 and cert.alpha == 0.01


def test_a_raised_budget_continues_exactly_where_sampling_stopped(anytime_page):
    at, calls = anytime_page
    at.select_slider(key="cp_nmax").set_value(256).run()
    assert not at.exception
    assert calls[-4:] == [("more", n) for n in (128, 160, 192, 224)]     # continued, never restarted
    state = _state(at)
    assert state.counts.n == 256
    whole = _workbench_counts(at, 256)
    assert np.array_equal(state.counts.estimation_ones, whole.estimation_ones)
    assert np.array_equal(state.counts.selection_ones, whole.selection_ones)
    assert np.array_equal(state.counts.estimation_classes, whole.estimation_classes)


def test_stop_keeps_the_partial_certificate_and_continue_reproduces_the_uninterrupted_counts(open_page, monkeypatch):
    """A run interrupted after its third frame (what a Stop click does: Streamlit ends the running script at its
    next call), then the Stop button's own rerun: the partial certificate stays, labelled as stopped by the user,
    nothing is sampled; Continue resumes and ends with exactly the counts of one uninterrupted run."""
    real = progressive.certify_progressively

    def interrupted_after_three(*args, **kwargs):
        for i, frame in enumerate(real(*args, **kwargs)):
            yield frame
            if i == 2 and not kwargs.get("start"):
                st.stop()

    monkeypatch.setattr(progressive, "certify_progressively", interrupted_after_three)
    at, calls = open_page("pages/certified_pixels.py", sampling, "extend_counts", lambda *a, **k: a[2].n,
                          cp_nmax=256)
    assert not at.exception
    assert _state(at).counts.n == 96 and _state(at).stop is None
    at.button(key="cp_stop").click().run()
    assert not at.exception
    sampled = list(calls)
    state = _state(at)
    assert state.counts.n == 96
    assert "stopped by you" in _caption(at)
    cert, sub = at.session_state["cp_last_certificate"]
    assert sub.n == 96 and (cert.classes != -1).any()        # the partial certificate is on screen
    at.slider(key="cp_sigma").set_value(0.25).run()          # any rerun: still stopped, nothing sampled
    assert calls == sampled
    at.button(key="cp_continue").click().run()
    assert not at.exception
    state = _state(at)
    assert state.counts.n == 256 and state.stop == "budget" and calls[len(sampled)] == 96
    whole = _workbench_counts(at, 256)
    assert np.array_equal(state.counts.estimation_ones, whole.estimation_ones)
    assert "stopped: the budget n_max was reached" in _caption(at)


def test_the_fixed_n_test_stays_available_and_is_labelled(anytime_page):
    at, calls = anytime_page
    at.radio(key="cp_test").set_value("fixed").run()
    at.select_slider(key="cp_n").set_value(100).run()
    assert not at.exception
    assert "fixed n, exact binomial test" in _caption(at) and "n = 100 estimation copies" in _caption(at)
    cert, sub = at.session_state["cp_last_certificate"]
    assert sub.n == 100 and cert.n == 100


def test_a_too_small_budget_is_announced(anytime_page):
    at, calls = anytime_page
    at.select_slider(key="cp_nmax").set_value(64)
    at.select_slider(key="cp_alpha").set_value(1e-6).run()
    at.run()
    assert any("anytime-valid test cannot certify any pixel" in w.value for w in at.warning)


def test_no_frame_withdraws_a_certificate_and_the_page_says_nothing_of_withdrawals(anytime_page):
    """Issue #26: the certificate only grows. Over a budget of 1000 the bundled model's Gradient map has pixels whose
    certificate a frame decided from its own counts alone would withdraw (counted here, so this has teeth); the
    frames of the page's run never do, the growth plot never falls, and no withdrawal notice remains."""
    at, calls = anytime_page
    at.select_slider(key="cp_nmax").set_value(1000).run()
    assert not at.exception
    state = _state(at)
    shares = np.array([h[1] for h in state.history])
    assert len(shares) > 10 and (np.diff(shares, axis=0) >= 0).all()
    wb = at.session_state["workbench"]
    fn, logits = attributions.for_target(wb.model, wb.method, wb.target, 0)
    frames = list(progressive.certify_progressively(fn, wb.x, 0.25, state.rule, n_max=1000, logits=logits))
    for a, b in zip(frames, frames[1:]):
        assert not ((a.certificate.classes != -1) & (b.certificate.classes != a.certificate.classes)).any()
    alone = [anytime.decide(f.counts.select_levels(state.rule.levels).votes_for_mode,
                            f.counts.select_levels(state.rule.levels).modes, f.counts.n, 0.25, 0.75, 1e-3).classes
             for f in frames]
    assert sum(int(((a != -1) & (b == -1)).sum()) for a, b in zip(alone, alone[1:])) > 0
    assert not [i.value for i in at.info if "withdrawn" in i.value]


def test_a_run_decided_within_its_budget_says_so_and_offers_a_budget_that_reopens_tests(open_page):
    """Issue #26 (6c): at τ = 0.97 with a budget of 64 no test can reach the anytime level, so the run stops
    'decided' after its first frame; Continue at that budget would draw nothing, so the page says why it stopped
    and offers the smallest larger budget at which tests are within reach again — and that click samples on."""
    at, calls = open_page("pages/certified_pixels.py", sampling, "extend_counts", lambda *a, **k: ("more", a[2].n),
                          cp_nmax=64, cp_tau=0.97)
    state = _state(at)
    assert state.stop == "decided" and state.counts.n < 64
    said = " ".join(i.value for i in at.get("info"))
    assert "because every pixel test is decided" in said
    assert not [b for b in at.get("button") if b.label.startswith("Continue sampling")]   # it would do nothing
    offer = next(b for b in at.get("button") if b.label.startswith("Continue with a budget of "))
    budget = int(offer.label.removeprefix("Continue with a budget of ").replace(",", ""))
    sub = state.counts.select_levels(sorted(state.rule.levels))
    cert = state.rule.certificate(state.trajectory)
    assert state.rule.undecided(sub, cert, budget, state.trajectory).any()          # the offer re-opens tests
    before = len(calls)
    offer.click().run()
    assert not at.exception, at.exception
    assert at.session_state["cp_nmax"] == budget and len(calls) > before
    assert _state(at).counts.n > state.counts.n
