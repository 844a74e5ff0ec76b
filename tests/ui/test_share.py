"""Shareable links (ui.share) through the real app: the URL follows the controls, a new session opened on that URL
gets the same view, and bad parameters are ignored with a notice, never an exception."""
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from certlib.attributions import defaults
from certlib.models import registry as models
from tests_paths import APP


def _open(**params) -> AppTest:
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update(params)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def small(monkeypatch):
    """Keep the Certified pixels page's sampling short."""
    return {"cp_n": "64", "cp_n0": "8"}


def test_the_url_follows_the_workbench_and_the_page(small):
    at = _open(**small)
    at.switch_page("pages/certified_pixels.py").run()
    assert not at.exception
    at.slider(key="cp_tau").set_value(0.8).run()
    at.slider(key="cp_sigma").set_value(0.3).run()
    qp = at.query_params
    assert qp["cp_tau"] == "0.8" and qp["cp_sigma"] == "0.3" and qp["cp_n"] == "64"
    assert qp["model_key"] == models.default_model_key() and qp["method"] == defaults.DEFAULTS["digits"].method
    assert qp["cp_levels"] == ["5.0", "25.0", "50.0"]


def test_a_pasted_link_restores_sigma_tau_image_and_target(small):
    at = _open(**small, model_key="digits_sigma0.50", image_source="digit", image_digit="digit:13", target="3",
               method="gradcam", cp_sigma="0.3", cp_tau="0.8", cp_levels=["5.0", "50.0"])
    at.switch_page("pages/certified_pixels.py").run()
    assert not at.exception, at.exception
    wb = at.session_state["workbench"]
    assert wb.model.spec.key == "digits_sigma0.50" and wb.image.key == "digit:13"
    assert wb.target == 3 and wb.method == "gradcam"             # the link's class, not the prediction
    assert at.slider(key="cp_sigma").value == 0.3 and at.slider(key="cp_tau").value == 0.8
    assert at.multiselect(key="cp_levels").value == [5.0, 50.0]
    assert not any(w.value.startswith("Link:") for w in at.sidebar.warning)


def test_bad_parameters_are_ignored_with_a_notice():
    at = _open(cp_n0="8", cp_tau="0.3", cp_n="77", target="-4", device="tpu", cp_sigma="nan")
    at.switch_page("pages/certified_pixels.py").run()
    assert not at.exception, at.exception
    notes = " ".join(w.value for w in at.sidebar.warning)
    for text in ("cp_tau=0.3", "outside [0.5, 0.99]", "cp_n=77", "not one of the offered values", "target=-4",
                 "device=tpu", "cp_sigma=nan"):
        assert text in notes, text
    assert at.slider(key="cp_tau").value == 0.75 and at.session_state["cp_n"] == 256
    assert at.select_slider(key="cp_n0").value == 8                   # the valid parameters still apply


def test_uploads_are_not_in_links():
    at = _open(model_key="user:abcdef123456", image_source="upload")
    notes = " ".join(w.value for w in at.sidebar.warning)
    assert "uploaded models are not part of a link" in notes and "uploads are not part of a link" in notes
    assert at.session_state["model_key"] == models.default_model_key()
    assert any("Upload an image" in i.value for i in at.info)


def test_every_control_has_a_tooltip_that_says_whether_it_resamples():
    from ui.controls import HELP, REDECIDES, RESAMPLES

    at = _open(cp_n="64", cp_n0="8")
    pages = ["pages/certified_pixels.py", "pages/uniform_smoothing.py", "pages/sparsified_smoothgrad.py",
             "pages/metrics.py"]
    seen = 0
    for page in pages:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        for kind in ("slider", "select_slider", "selectbox", "multiselect", "radio", "number_input"):
            for widget in getattr(at, kind):
                if widget.key in (None, "model_upload_c", "model_upload_h", "model_upload_w"):
                    continue
                assert widget.help, (page, widget.key)
                seen += 1
                if widget.key in HELP and not widget.key.startswith(("image", "model", "device")):
                    assert RESAMPLES in widget.help or REDECIDES in widget.help, widget.key
    assert seen > 40
