"""The Compare page through the real app: cells of methods or checkpoints, the expected time before sampling, the
shared decision controls that never resample, and cells shared with the Certified pixels page's cache."""
import streamlit as st
from streamlit.testing.v1 import AppTest

from certlib.smoothing import sampling
from tests_paths import APP


def _open(monkeypatch, **state):
    st.cache_resource.clear()
    st.cache_data.clear()
    from ui import runs
    runs.cache.sampling_results().clear()
    calls = []
    real = sampling.sample_topk_counts

    def counting(*args, **kwargs):
        calls.append(args[2])                  # σ
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_topk_counts", counting)
    at = AppTest.from_file(APP, default_timeout=300)
    for k, v in {"cmp_n": 64, "cmp_n0": 8, **state}.items():
        at.session_state[k] = v
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, at.exception
    return at, calls


def test_methods_side_by_side_with_shared_decisions(monkeypatch):
    at, calls = _open(monkeypatch, cmp_methods=["grad", "gradcam", "lrp"])
    assert calls == []                                               # nothing is sampled before the button
    assert any("3 of 3 cells are not sampled yet: about" in i.value for i in at.info)
    at.button(key="cmp_go").click().run()
    assert not at.exception, at.exception
    assert len(calls) == 3
    overlays = [c for c in at.get("plotly_chart") if "top 25% at R =" in c.proto.spec]
    assert len(overlays) == 3
    curve = next(c for c in at.get("plotly_chart") if "cmp_radius_curve" in c.proto.id)    # every radius, per method
    import json
    traces = json.loads(curve.proto.spec)["data"]
    assert len(traces) == 3 and all(t["name"].endswith("top 25%") for t in traces)
    assert any("R(τ)" in a["text"] for a in json.loads(curve.proto.spec)["layout"]["annotations"])
    before = [m.value for m in at.metric if m.label == "certified in the top K"]
    at.slider(key="cmp_tau").set_value(0.6).run()
    at.select_slider(key="cmp_k").set_value(50.0).run()
    assert not at.exception and len(calls) == 3                      # re-decided, not resampled
    assert [m.value for m in at.metric if m.label == "certified in the top K"] != before
    at.switch_page("pages/compare.py").run()
    assert not any("not sampled yet" in i.value for i in at.info)    # cached per cell


def test_checkpoints_side_by_side(monkeypatch):
    at, calls = _open(monkeypatch, cmp_mode="checkpoints")
    at.button(key="cmp_go").click().run()
    assert not at.exception, at.exception
    titles = [m.value for m in at.markdown if m.value.startswith("**σ_train")]
    assert titles == ["**σ_train = 0.00**", "**σ_train = 0.25**", "**σ_train = 0.50**"] and len(calls) == 3
