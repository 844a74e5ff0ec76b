"""The metrics page through AppTest: stored runs show at once (also in a new session), Compute samples only the
missing ones, decision widgets never resample, and the store lives in a temporary directory."""
import json

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from certlib.smoothing import sampling
from certlib.runs import store
from tests_paths import APP

SETTINGS = {"mx_methods": ["gradcam", "layercam"], "mx_images": "grids", "mx_limit": 1, "mx_n": 64, "mx_n0": 8,
            "mx_alpha": 0.01}


@pytest.fixture
def calls(tmp_path, monkeypatch):
    monkeypatch.setenv(store.DATA_DIR_ENV, str(tmp_path / "data"))
    st.cache_resource.clear()
    st.cache_data.clear()
    made = []
    real = sampling.sample_topk_counts

    def counting(*args, **kwargs):
        made.append(kwargs.get("seed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_topk_counts", counting)
    return made


def _visit(**changes) -> AppTest:
    """A new browser session that opens the metrics page with SETTINGS (and `changes`)."""
    at = AppTest.from_file(APP, default_timeout=300)
    for key, value in {**SETTINGS, **changes}.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/metrics.py").run()
    assert not at.exception, at.exception
    return at


def _stored_line(at) -> str:
    return next(m.value for m in at.markdown if "runs** are in the store" in m.value)


def test_compute_then_a_second_visit_shows_the_stored_results_without_sampling(calls, tmp_path):
    at = _visit()
    assert "**0 of 8 runs**" in _stored_line(at)         # one grid × four cells × two methods
    assert not at.get("plotly_chart") and calls == []    # nothing is sampled before Compute is pressed
    assert str(tmp_path / "data") in _stored_line(at)    # the test store, never the user's
    at.button(key="mx_compute").click().run()
    assert not at.exception, at.exception
    assert len(calls) == 8 and "**8 of 8 runs**" in _stored_line(at)
    assert not [b for b in at.button if b.key in ("mx_compute", "mx_cancel")]   # no "Compute" beside "8 of 8"
    assert len(at.get("plotly_chart")) >= 9
    assert any(b.proto.label.startswith("metrics CSV") for b in at.get("download_button"))

    again = _visit()                                     # second visit: a fresh session, same store
    assert "**8 of 8 runs**" in _stored_line(again) and len(again.get("plotly_chart")) >= 9
    assert not [b for b in again.button if b.key == "mx_compute"]
    assert len(calls) == 8                               # nothing resampled


def test_decision_widgets_and_a_partial_store_never_resample(calls):
    at = _visit(mx_images="digits", mx_limit=2, mx_methods=["grad", "gradcam"])   # single digits: one target each, a quarter of the pixels
    at.button(key="mx_compute").click().run()
    assert len(calls) == 4
    at.slider(key="mx_tau").set_value(0.9).run()
    at.select_slider(key="mx_alpha").set_value(0.1).run()
    at.multiselect(key="mx_levels").set_value([1.0, 50.0]).run()
    at.radio(key="mx_replacement").set_value("zero").run()
    assert not at.exception, at.exception
    assert len(calls) == 4
    assert any("Localization needs 2×2 grids" in c.value for c in at.caption)
    at.multiselect(key="mx_methods").set_value(["grad", "gradcam", "input_x_gradient"]).run()
    assert "**4 of 6 runs**" in _stored_line(at) and len(calls) == 4    # stored ones shown, new ones wait
    assert any("not computed yet" in c.value for c in at.caption)
    at.button(key="mx_compute").click().run()
    assert len(calls) == 6 and "**6 of 6 runs**" in _stored_line(at)


def test_too_small_n_is_announced(calls):
    at = _visit(mx_images="digits", mx_methods=["gradcam"])
    at.select_slider(key="mx_n").set_value(32).run()
    at.select_slider(key="mx_alpha").set_value(1e-6).run()
    at.button(key="mx_compute").click().run()
    assert any("nothing can be certified" in w.value for w in at.warning)


def _chart(at, key: str) -> dict:
    return next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.proto.id.endswith(key))


def test_a_new_decision_draws_every_faithfulness_curve(calls):
    """Robustness is drawn before a new decision's faithfulness curves are computed; they still all arrive."""
    at = _visit(mx_images="digits", mx_limit=1, mx_methods=["grad", "gradcam"])
    at.button(key="mx_compute").click().run()
    at.slider(key="mx_tau").set_value(0.6).run()                      # a decision whose curves are not stored
    assert not at.exception, at.exception
    deletion = _chart(at, "mx_del")["data"]
    assert len(deletion) == 2 and all(len(trace["y"]) > 1 for trace in deletion)
    auc = [y for trace in _chart(at, "mx_del_auc")["data"] for y in trace["y"]]
    assert len(auc) == 2 and all(0.0 <= a <= 1.0 for a in auc)      # computed at τ = 0.6, not left NaN
    assert len(calls) == 2
