"""The uniform-smoothing page through AppTest: r/n resample once, ε/T/δ/headline never resample, measured points
appear on request and never fall below the proven bound."""
import pytest

from certlib.runs import export
from certlib.smoothing import uniform_sampling
from certlib.uniform import viz as uniform_viz


@pytest.fixture
def page(open_page):
    radius_and_n = lambda *args, **kwargs: (args[2], args[3])  # noqa: E731
    return open_page("pages/uniform_smoothing.py", uniform_sampling, "sample_uniform_mean", radius_and_n, us_n=64)


def _metric(at, start: str) -> str:
    return next(m for m in at.metric if m.label.startswith(start)).value


def test_page_shows_maps_bounds_and_a_sentence(page):
    at, calls = page
    assert calls == [(4.0, 64)]
    assert len(at.get("plotly_chart")) >= 3
    verdicts = list(at.success) + list(at.warning)           # the verdict above the certificate
    assert any("cosine similarity at least" in v.value or "Nothing is guaranteed" in v.value for v in verdicts)
    assert {b.proto.label for b in at.get("download_button")} >= {"plot PNG", "curves + points CSV"}


def test_certificate_controls_never_resample(page):
    at, calls = page
    before = _metric(at, "T(ε)")
    at.select_slider(key="us_eps_frac").set_value(0.01).run()
    assert float(_metric(at, "T(ε)")) > float(before)      # smaller ε, higher bound
    at.slider(key="us_T").set_value(0.7).run()
    at.select_slider(key="us_delta").set_value(0.05).run()
    at.radio(key="us_kind").set_value("paper").run()
    assert not at.exception
    assert calls == [(4.0, 64)]


def test_certificate_controls_build_no_download_files(page, monkeypatch):
    """The plot PNG (matplotlib, ~0.1 s) and the CSV are built only when their button is clicked."""
    at, calls = page
    built = []
    for module, name in ((uniform_viz, "bound_png"), (export, "uniform_curves_csv")):
        monkeypatch.setattr(module, name, lambda *a, _name=name, **k: built.append(_name) or b"")
    at.select_slider(key="us_eps_frac").set_value(0.2).run()
    at.slider(key="us_T").set_value(0.8).run()
    assert not at.exception and built == []
    assert {b.proto.label for b in at.get("download_button")} >= {"plot PNG", "curves + points CSV"}


def test_radius_resamples_once_and_is_cached(page):
    at, calls = page
    at.slider(key="us_radius").set_value(2.0).run()
    at.slider(key="us_radius").set_value(4.0).run()
    at.slider(key="us_radius").set_value(2.0).run()
    assert calls == [(4.0, 64), (2.0, 64)]


def test_measured_points_respect_the_proven_bound(page):
    at, calls = page
    at.button(key="us_measure").click().run()
    assert not at.exception
    assert not at.error                                     # the page's alarm for a point below the proven bound
    assert any("Smallest margin measured − proven bound" in c.value for c in at.caption)
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 18
    n_after_measure = len(calls)
    at.select_slider(key="us_eps_frac").set_value(0.3).run()       # points are reused, not recomputed
    assert len(calls) == n_after_measure


def test_nothing_certified_is_said_in_words_with_the_knob_that_helps(page):
    """At the largest ε of the axis the proven bound certifies nothing: the metric says so (no "0.0000" or
    "-1.0000" that reads as a cosine) and names what would certify."""
    at, _ = page
    at.radio(key="us_kind").set_value("strict").run()
    at.select_slider(key="us_eps_frac").set_value(1.0).run()
    assert not at.exception
    metric = next(m for m in at.metric if m.label.startswith("T(ε)"))
    assert metric.value == "nothing certified"
    assert "would certify" in metric.proto.delta or "certifies at ε <" in metric.proto.delta
    assert all(m.value not in ("0.0000", "-1.0000") for m in at.metric)
    at.select_slider(key="us_eps_frac").set_value(0.0).run()      # ε = 0: the cosine bound is 1 where ‖h‖ > 0
    metric = next(m for m in at.metric if m.label.startswith("T(ε)"))
    assert metric.value in ("1.0000", "nothing certified")


def test_the_words_follow_the_certificate():
    from certlib.uniform import bound as ub
    from certlib.uniform.cert import UniformCertificate, bound_text, knob_hint, max_eps_text, n_to_certify

    cert = UniformCertificate(h_hat_norm=0.5, h_norm_lower=0.3, delta=1e-3, M=1.0, d=3 * 224 * 224, r=4.0, n=512)
    assert bound_text(cert, 0.001) == f"{cert.bound(0.001):.4f}" and knob_hint(cert, 0.001) is None
    assert bound_text(cert, 0.5) == "nothing certified"
    hint = knob_hint(cert, 0.5)
    edge = float(hint.split("ε < ")[1].split(" ")[0])
    assert cert.bound(edge * 0.99) > 0 and cert.bound(edge * 1.01) <= 0        # the ε it names is the edge
    none = UniformCertificate(h_hat_norm=0.2, h_norm_lower=0.0, delta=1e-3, M=1.0, d=100, r=1.0, n=64)
    assert bound_text(none, 0.01) == max_eps_text(none, 0.9) == "nothing certified"
    need = n_to_certify(none)
    assert f"n ≥ {need:,}" in knob_hint(none, 0.01)
    assert ub.h_norm_lower_confidence(0.2, 1.0, need, 1e-3) > 0 == ub.h_norm_lower_confidence(0.2, 1.0, need - 1, 1e-3)
