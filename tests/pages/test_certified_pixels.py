"""The certified-pixels page through AppTest: sampling sliders resample, decision sliders only re-decide."""
import re

import pytest
import streamlit as st
from scipy.stats import norm
from streamlit.testing.v1 import AppTest

from certlib.models import efficientnet_lite
from certlib.runs import export
from certlib.smoothing import sampling
from ui import downloads
from tests_paths import APP



@pytest.fixture
def page(open_page):
    sigma = lambda *args, **kwargs: args[2] if len(args) > 2 else kwargs["sigma"]  # noqa: E731
    return open_page("pages/certified_pixels.py", sampling, "sample_topk_counts", sigma, cp_n=100,  # quick on 2 cores
                     cp_test="fixed")


def _radius(at) -> float:
    return float(next(m for m in at.metric if "certified radius" in m.label).value)


def test_page_certifies_and_shows_the_radius(page):
    at, calls = page
    assert calls == [0.25]
    assert _radius(at) == pytest.approx(0.25 * norm.ppf(0.75), abs=1e-3)
    assert len(at.get("plotly_chart")) >= 3
    assert {b.proto.label for b in at.get("download_button")} >= {"overlay PNG", "per-pixel CSV",
                                                                   "config + summary JSON"}


def test_decision_sliders_never_resample(page):
    at, calls = page
    at.slider(key="cp_tau").set_value(0.9).run()
    at.select_slider(key="cp_alpha").set_value(0.01).run()
    at.radio(key="cp_correction").set_value("bonferroni").run()
    at.multiselect(key="cp_levels").set_value([1.0, 50.0]).run()
    assert not at.exception
    assert calls == [0.25]
    assert _radius(at) == pytest.approx(0.25 * norm.ppf(0.9), abs=1e-3)


def test_decision_moves_build_no_download_files_until_clicked(page, monkeypatch):
    """Downloads are deferred: a τ / α / K move redraws the page but builds no PNG, CSV or JSON; the buttons carry
    builders that, when called (a click), make the files of the decision on screen."""
    at, calls = page
    built, builders = [], {}
    for name in ("png_bytes", "pixel_csv", "summary_json"):
        real = getattr(export, name)
        monkeypatch.setattr(export, name, lambda *a, _name=name, _real=real, **k: built.append(_name) or _real(*a, **k))
    real_button = downloads.button
    monkeypatch.setattr(downloads, "button", lambda where, label, build, *a, **k: builders.__setitem__(label, build)
                        or real_button(where, label, build, *a, **k))
    at.slider(key="cp_tau").set_value(0.9).run()
    at.select_slider(key="cp_alpha").set_value(0.01).run()
    at.multiselect(key="cp_levels").set_value([1.0, 50.0]).run()
    assert not at.exception
    assert _radius(at) == pytest.approx(0.25 * norm.ppf(0.9), abs=1e-3)
    assert built == []                                         # nothing was built on the moves
    assert {b.proto.label for b in at.get("download_button")} >= {"overlay PNG", "per-pixel CSV",
                                                                   "config + summary JSON"}
    assert builders["overlay PNG"]()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = builders["per-pixel CSV"]().decode().splitlines()
    assert csv[0].startswith("row,col,attribution,top1_class") and "top50_class" in csv[0] and len(csv) == 1 + 32 * 32
    cert, _ = at.session_state["cp_last_certificate"]          # the file is the certificate on screen (K = 1, 50)
    top1 = [int(row.split(",")[3]) for row in csv[1:]]
    assert top1 == cert.classes[0].ravel().tolist()
    assert '"tau": 0.9' in builders["config + summary JSON"]().decode()


def test_sigma_resamples_once_and_is_cached(page):
    at, calls = page
    at.slider(key="cp_sigma").set_value(0.5).run()
    assert calls == [0.25, 0.5]
    at.slider(key="cp_sigma").set_value(0.25).run()
    assert calls == [0.25, 0.5]  # back to a sampled config: served from the cache


def test_too_small_n_is_announced_before_sampling(page):
    at, calls = page
    at.select_slider(key="cp_n").set_value(32)
    at.select_slider(key="cp_alpha").set_value(1e-6).run()
    at.run()
    assert any("no pixel can be certified" in w.value for w in at.warning)


def test_every_method_certifies_on_the_bundled_model(page):
    """The page runs end to end with each of the 12 methods (small n to keep the suite fast)."""
    at, calls = page
    at.select_slider(key="cp_n").set_value(32)
    at.select_slider(key="cp_n0").set_value(8)
    at.select_slider(key="cp_alpha").set_value(0.1).run()
    from certlib.attributions.methods import METHODS
    for key in METHODS:
        at.selectbox(key="method").set_value(key).run()
        assert not at.exception, (key, at.exception)
        assert at.session_state["workbench"].method == key
        assert any("certified radius" in m.label for m in at.metric), key
    assert len(calls) == 1 + len(METHODS)


def test_page_settings_survive_a_trip_to_another_page(page):
    at, calls = page
    at.slider(key="cp_tau").set_value(0.9).run()
    at.switch_page("app.py").run()
    at.switch_page("pages/certified_pixels.py").run()
    assert not at.exception
    assert at.slider(key="cp_tau").value == 0.9 and at.select_slider(key="cp_n").value == 100
    assert calls == [0.25]  # coming back is served from the cache


def test_out_of_memory_shows_a_message_and_keeps_the_sidebar(monkeypatch):
    from certlib.errors import OutOfMemory

    st.cache_resource.clear()
    st.cache_data.clear()

    def no_memory(*args, **kwargs):
        raise OutOfMemory("out of memory on cuda:0 even for one copy of shape (3, 224, 224): choose the CPU")

    monkeypatch.setattr(sampling, "sample_topk_counts", no_memory)
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("pages/certified_pixels.py").run()
    assert not at.exception
    assert any("choose the CPU" in e.value for e in at.error)
    assert at.sidebar.selectbox(key="model_key").value == "digits_sigma0.25"


def _metric(at, label_part: str) -> str:
    return next(m for m in at.metric if label_part in m.label).value


def test_the_page_says_what_is_guaranteed_for_this_image(page, monkeypatch):
    """R in the model's input and R/√d, the prediction's own certificate beside it (its α re-decides without
    resampling); for a photo shrunk to 32×32, R in the photo's own pixels too."""
    at, calls = page
    # Without the photo model's weights a photo stays on the digits model (shrunk to 32×32).
    monkeypatch.setattr(efficientnet_lite, "weights_file", lambda: None)
    r = _radius(at)
    assert float(_metric(at, "RMS")) == pytest.approx(r / 32, abs=1e-4)
    assert not any("own pixels" in m.label for m in at.metric)     # the digit is the model's input as it is
    text = " ".join(m.value for m in at.markdown)
    assert "32×32" in text and "fixed class" in text
    pred = _metric(at, "prediction certified")
    notes = " ".join(e.value for e in list(at.success) + list(at.warning))
    assert "R_pred" in pred and "prediction certified up to radius R_pred" in notes
    at.select_slider(key="cp_alpha_pred").set_value(1e-6).run()
    assert not at.exception and calls == [0.25]
    assert _metric(at, "prediction certified") != pred          # a smaller α_pred gives a smaller R_pred
    at.selectbox(key="image_source").set_value("photo").run()
    assert not at.exception
    own = float(_metric(at, "own pixels"))
    assert own > r                  # a photo of 100,000s of pixels shrunk to 32×32: a perturbation shrinks with it
    assert re.search(r"in the image's own \d+×\d+×3 pixels", " ".join(m.value for m in at.markdown))


def test_the_paper_normalisation_is_labelled_and_resamples(page):
    at, calls = page
    assert at.selectbox(key="cp_normalisation").value == "rank"
    at.selectbox(key="cp_normalisation").set_value("paper").run()
    assert not at.exception and len(calls) == 2              # another base function: sampled anew
    assert any("not a function of the noisy input alone" in w.value for w in at.warning)


def test_the_paper_normalisation_never_gets_the_green_verdict(page):
    """The verdict above the certificate is green only for the noisy-input-only certificate: under the paper's
    normalisation it is amber and says why, while the counts are still shown; "own_scale" (noisy input only) is green."""
    at, _ = page
    verdict_icon = ":material/verified:"
    assert any(s.proto.icon == verdict_icon and "certified for every change" in s.value for s in at.success)
    at.selectbox(key="cp_normalisation").set_value("paper").run()
    assert not at.exception
    assert not any("certified for every change" in s.value or "passing the paper's test" in s.value
                   for s in at.success)
    amber = [w.value for w in at.warning if "Not the noisy-input-only certificate" in w.value]
    assert len(amber) == 1 and "not a function of the noisy input alone" in amber[0]
    assert "passing the paper's test" in amber[0] and "in the top" in amber[0]
    at.selectbox(key="cp_normalisation").set_value("own_scale").run()
    assert any("certified for every change" in s.value for s in at.success)


def test_radius_view_shows_every_pixels_radius_and_what_holds_at_eps(page):
    """Issue #29: the map, the ε slider and the curve from the counts on screen; ε only re-reads the radii."""
    import numpy as np

    from certlib.pixel import radius as pixel_radius

    at, calls = page
    cert, sub = at.session_state["cp_last_certificate"]
    radii = pixel_radius.fixed_n_radii(sub, at.session_state["cp_alpha"])
    finite = radii.radii[np.isfinite(radii.radii)]
    said = " ".join(m.value for m in at.markdown)
    assert f"**{finite.size:,}** of {radii.num_tests:,} pixel tests are certified at *some* radius" in said
    # At ε = R(τ) the view certifies what Bonferroni certifies at τ, which Holm's certificate contains.
    at.radio(key="cp_correction").set_value("bonferroni").run()
    cert, _ = at.session_state["cp_last_certificate"]
    at.slider(key="cp_eps").set_value(round(cert.radius, 4)).run()
    at_eps = radii.certified_at(at.slider(key="cp_eps").value)
    assert abs(int((at_eps >= 0).sum()) - int((cert.classes >= 0).sum())) <= int(np.isclose(
        radii.radii, cert.radius, atol=1e-4).sum())                      # only ties at the rounded ε may differ
    caption = next(c.value for c in at.caption if c.value.startswith("Certified for every ‖δ‖₂ ≤ ε"))
    assert f"{int((at_eps[0] == 1).sum()):,} certified in" in caption
    keys = {c.proto.id for c in at.get("plotly_chart")}
    assert any("cp_radius_map" in k for k in keys) and any("cp_radius_curve" in k for k in keys)
    assert calls == [0.25] and not at.exception                          # nothing was sampled again
