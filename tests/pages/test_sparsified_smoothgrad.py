"""The Sparsified SmoothGrad page through AppTest: σ / n resample (once, cached); the variant, τ, K, ε and α only
re-decide; curves for two σ; attacked points join the figure."""
import json

import pytest

from certlib.attributions import attacks
from certlib.sparse import smoothgrad as S

RUNS_PER_SIGMA = 1 + 4       # ĝ(x) and one random direction at each of the four ε


@pytest.fixture
def page(open_page):
    sigma = lambda *args, **kwargs: args[2] if len(args) > 2 else kwargs["sigma"]  # noqa: E731
    return open_page("pages/sparsified_smoothgrad.py", S, "sample_smoothgrad", sigma, sg_n=32)  # quick on 2 cores


def _curve_traces(at) -> list[dict]:
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        names = [t.get("name", "") for t in spec["data"]]
        if any(name.startswith("certified (paired), σ") for name in names):
            return spec["data"]
    raise AssertionError("no certified-overlap curve on the page")


def _metric(at, start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(start))


def test_page_renders_maps_curve_points_and_downloads(page):
    at, calls = page
    assert calls == [0.25] * RUNS_PER_SIGMA
    assert not at.error
    assert len(at.get("plotly_chart")) >= 4
    names = [t["name"] for t in _curve_traces(at)]
    assert {"certified (paired), σ = 0.25", "certified (per pixel), σ = 0.25", "random δ, σ = 0.25"} <= set(names)
    assert _metric(at, "certified overlap at ε").endswith("%") and _metric(at, "per pixel").endswith("%")
    assert {b.proto.label for b in at.get("download_button")} >= {"overlay PNG", "per-pixel CSV",
                                                                   "curve + points CSV"}


def test_decision_controls_never_resample(page):
    at, calls = page
    at.slider(key="sg_k").set_value(20.0).run()
    at.slider(key="sg_eps").set_value(0.1).run()
    at.radio(key="sg_variant").set_value("scaled").run()
    at.radio(key="sg_bound").set_value("hoeffding").run()
    at.select_slider(key="sg_level").set_value(50.0).run()
    at.select_slider(key="sg_alpha").set_value(0.1).run()
    at.slider(key="sg_target").set_value(0.9).run()
    assert not at.exception and not at.error
    assert calls == [0.25] * RUNS_PER_SIGMA
    assert any(m.label == "certified overlap at ε = 0.1" for m in at.metric)


def test_two_sigmas_show_two_curves_and_switching_back_is_cached(page):
    at, calls = page
    at.multiselect(key="sg_compare").set_value([0.5]).run()
    assert not at.exception
    names = [t["name"] for t in _curve_traces(at)]
    assert {"certified (paired), σ = 0.25", "certified (paired), σ = 0.5"} <= set(names)
    assert {"random δ, σ = 0.25", "random δ, σ = 0.5"} <= set(names)
    assert calls == [0.25] * RUNS_PER_SIGMA + [0.5] * RUNS_PER_SIGMA
    at.select_slider(key="sg_sigma").set_value(0.5).run()   # onto the compared σ: it leaves the comparison
    assert not at.exception
    assert at.multiselect(key="sg_compare").value == []
    assert len(calls) == 2 * RUNS_PER_SIGMA            # σ = 0.5 was sampled already: served from the cache


def test_attack_button_adds_attacked_points(page, monkeypatch):
    """The attack itself is tested in tests/attributions/test_attacks.py; here a stand-in keeps the page test fast."""
    at, calls = page
    seen = []

    def fake_attack(model, method, x, target, eps, **kwargs):
        seen.append((eps, kwargs["loss"], kwargs["k_percent"]))
        delta = attacks.random_directions(x, eps, 1, seed=99)
        return attacks.AttackResult(delta, eps, "topk", True, 0.5, "stand-in", 1)

    monkeypatch.setattr(attacks, "attribution_attack", fake_attack)
    at.button(key="sg_attack").click().run()
    assert not at.exception and not at.error
    assert [s[1:] for s in seen] == [("topk", 10.0)] * 4
    assert "attack δ, σ = 0.25" in [t["name"] for t in _curve_traces(at)]
    assert len(calls) == RUNS_PER_SIGMA + 4
    at.slider(key="sg_k").set_value(5.0).run()        # moving K keeps the attacked points, no new sampling
    assert "attack δ, σ = 0.25" in [t["name"] for t in _curve_traces(at)]
    assert len(calls) == RUNS_PER_SIGMA + 4
