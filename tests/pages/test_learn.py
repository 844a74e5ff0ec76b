"""The Learn page through AppTest: it renders without a model's help, and every control reruns the page and moves
the numbers it should (checked against closed forms, not against the page's own library calls)."""
import math

import pytest
import numpy as np
from scipy.stats import norm
from streamlit.testing.v1 import AppTest

from certlib.teaching import lessons as teaching
from tests_paths import APP



@pytest.fixture
def at():
    app = AppTest.from_file(APP, default_timeout=120)
    app.run()
    app.switch_page("pages/learn.py").run()
    assert not app.exception, app.exception
    return app


def _metric(app, label_start: str) -> str:
    return next(m.value for m in app.metric if m.label.startswith(label_start))


def _set(app, kind: str, key: str, value):
    getattr(app, kind)(key=key).set_value(value).run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]


def test_page_renders_five_lessons_with_figures(at):
    assert [t.label for t in at.tabs] == ["Smoothing in 2-D", "A per-pixel certificate", "A pixel's own radius",
                                         "Ball overlap vs dimension", "Top-K overlap"]
    assert len(at.get("plotly_chart")) == 14
    assert len(at.latex) == 5
    assert not at.error and not at.warning


def test_radius_lesson_certifies_at_r_tau_what_bonferroni_certifies_at_tau(at):
    from certlib.teaching import lessons as teaching

    for tau in (0.75, 0.6):
        _set(at, "slider", "learn_rd_tau", tau)
        toy = teaching.pixel_toy_certificate(0.3, 500, tau, 1e-3, 0, correction="bonferroni")
        assert int(_metric(at, "certified at R(τ)")) == int(toy.certified.sum())
    with_radius = int(_metric(at, "pixels with a radius").split(" of ")[0])
    assert with_radius >= int(_metric(at, "certified at R(τ)"))


def test_smoothing_sliders(at):
    # Deep in region A the τ-form certifies exactly σ·Φ⁻¹(τ).
    assert float(_metric(at, "τ-form radius")) == pytest.approx(0.5 * norm.ppf(0.75), abs=1e-3)
    cohen = float(_metric(at, "certified radius"))
    _set(at, "slider", "learn_tau", 0.9)
    tau_radius = _metric(at, "τ-form radius")
    assert tau_radius == "abstain" or float(tau_radius) == pytest.approx(0.5 * norm.ppf(0.9), abs=1e-3)
    assert float(_metric(at, "certified radius")) == cohen          # τ does not enter Cohen's radius
    _set(at, "slider", "learn_tau", 0.6)
    assert float(_metric(at, "τ-form radius")) == pytest.approx(0.5 * norm.ppf(0.6), abs=1e-3)
    _set(at, "slider", "learn_sigma", 0.25)
    assert float(_metric(at, "τ-form radius")) == pytest.approx(0.25 * norm.ppf(0.6), abs=1e-3)
    assert float(_metric(at, "certified radius")) != cohen
    for kind, key, value in (("select_slider", "learn_n", 2000), ("select_slider", "learn_alpha", 0.05),
                             ("number_input", "learn_seed", 3)):
        before = (_metric(at, "p̂_A"), _metric(at, "p_A lower bound"))
        _set(at, kind, key, value)
        assert (_metric(at, "p̂_A"), _metric(at, "p_A lower bound")) != before, key


def test_moving_x_onto_the_island_and_raising_sigma(at):
    assert _metric(at, "smoothed class") == "A"
    _set(at, "slider", "learn_x1", 1.2)
    _set(at, "slider", "learn_x2", 1.2)
    _set(at, "slider", "learn_sigma", 0.2)
    # P[‖σz‖ < 0.45] = 1 − exp(−(0.45/σ)²/2) ≈ 0.92 at σ = 0.2.
    assert _metric(at, "smoothed class") == "island"
    assert float(_metric(at, "p̂_A")) == pytest.approx(1 - math.exp(-(0.45 / 0.2) ** 2 / 2), abs=0.05)
    _set(at, "radio", "learn_regions", "smoothed classifier g")
    _set(at, "slider", "learn_sigma", 1.0)
    assert _metric(at, "smoothed class") != "island"


def test_pixel_certificate_controls(at):
    _set(at, "slider", "learn_flip", 0.0)
    assert _metric(at, "abstain") == "0" and _metric(at, "certified top-K") == "16"
    _set(at, "slider", "learn_flip", 0.6)
    assert int(_metric(at, "abstain")) > 0
    before = [_metric(at, m) for m in ("certified top-K", "certified not", "abstain")]
    _set(at, "number_input", "learn_px_seed", 5)
    _set(at, "slider", "learn_px_tau", 0.6)
    _set(at, "select_slider", "learn_px_alpha", 0.1)
    _set(at, "radio", "learn_px_correction", "bonferroni")
    assert [_metric(at, m) for m in ("certified top-K", "certified not", "abstain")] != before
    _set(at, "select_slider", "learn_px_n", 10)   # 0.6¹⁰ ≈ 0.006 > 0.1/64: nothing can be certified
    assert any("nothing can be certified" in w.value for w in at.warning)
    assert _metric(at, "abstain") == "64"


def test_ball_overlap_controls(at):
    _set(at, "slider", "learn_ratio", 0.5)
    lens = 2 * math.acos(0.25) - 0.25 * math.sqrt(4 - 0.25)        # r = 1, ε = 0.5
    assert float(_metric(at, "shared volume in d = 2")) == pytest.approx(lens / math.pi, abs=1e-4)
    _set(at, "select_slider", "learn_d", 3)
    sphere = math.pi * (4 + 0.5) * 1.5 ** 2 / 12 / (4 / 3 * math.pi)
    assert float(_metric(at, "shared volume V∩/V in d = 3")) == pytest.approx(sphere, rel=1e-3)
    assert float(_metric(at, "bound factor")) == pytest.approx(2 * (1 - sphere), rel=1e-3)
    _set(at, "select_slider", "learn_d", 150_528)
    assert float(_metric(at, "ε/r keeping half")) == pytest.approx(2 * norm.ppf(0.75) / math.sqrt(150_528), rel=1e-2)
    assert float(_metric(at, "shared volume V∩/V in d = 150528")) < 1e-100
    _set(at, "radio", "learn_view", "d = 3")


def _closed_form_certified(eps, sigma, k, width):
    """Top pixel j stays in the top k iff ε < σ·(Φ⁻¹(L_j) − Φ⁻¹(U_(k+1)))/2 (U_(k+1): the (k+1)-th largest U)."""
    g = np.sort(teaching.toy_smoothgrad().ravel())[::-1]
    lower, upper = np.clip(g - width, 0, 1), np.clip(g + width, 0, 1)
    return int((sigma * (norm.ppf(lower[:k]) - norm.ppf(upper[k])) / 2 > eps).sum())


def test_topk_controls(at):
    _set(at, "slider", "learn_tk_eps", 0.0)
    assert _metric(at, "certified top-K overlap") == "100%"
    for kind, key, value in (("slider", "learn_tk_k", 3), ("slider", "learn_tk_eps", 0.05),
                             ("slider", "learn_tk_sigma", 0.5), ("slider", "learn_tk_width", 0.02),
                             ("slider", "learn_tk_eps", 0.2), ("slider", "learn_tk_sigma", 0.1)):
        _set(at, kind, key, value)
        expected = _closed_form_certified(at.slider(key="learn_tk_eps").value, at.slider(key="learn_tk_sigma").value,
                                          at.slider(key="learn_tk_k").value, at.slider(key="learn_tk_width").value)
        assert _metric(at, "certified pixels") == f"{expected} of 3", (key, value)
    assert _metric(at, "certified pixels") == "0 of 3"      # ε/σ = 2: nothing survives


def test_settings_survive_a_page_switch(at):
    _set(at, "slider", "learn_sigma", 0.8)
    _set(at, "slider", "learn_flip", 0.1)
    at.switch_page("app.py").run()
    at.switch_page("pages/learn.py").run()
    assert not at.exception
    assert at.slider(key="learn_sigma").value == 0.8 and at.slider(key="learn_flip").value == 0.1
