"""The per-family defaults (certlib.attributions.defaults) are the winners of bench/results/defaults.json, the sentence that explains
them is built from that file's figures, and the bench's shortcut (one sampling for n0 = 8 and n0 = 32) gives the
counts a direct run gives."""
import math

import numpy as np
import pytest

from certlib.attributions import methods as attributions, defaults
from certlib.data import images
from certlib.models import registry as models
from certlib.smoothing import sampling

RESULTS = defaults.load_results()


@pytest.fixture(scope="module")
def results() -> dict:
    assert RESULTS is not None, f"{defaults.RESULTS_PATH} is missing: run python bench/defaults.py"
    return RESULTS


@pytest.mark.parametrize("family", sorted(defaults.DEFAULTS))
def test_the_defaults_are_the_measured_winners(results, family):
    # A re-run of the bench that changes a winner fails here until DEFAULTS follows it.
    assert defaults.winner(results, family) == defaults.DEFAULTS[family]
    assert results["summary"]["defaults"][family] == {"method": defaults.DEFAULTS[family].method,
                                                      "n0": defaults.DEFAULTS[family].n0,
                                                      "sigma": defaults.DEFAULTS[family].sigma}


@pytest.mark.parametrize("family", sorted(defaults.DEFAULTS))
def test_the_winner_is_tied_for_the_most_per_second_and_wins_the_tie_break(results, family):
    complete = [e for e in defaults.ranking(results, family, defaults.REFERENCE_SIGMA) if e["complete"]]
    assert len({e["method"] for e in complete}) >= 5          # a comparison, not a single method
    fastest = max(e["tests_per_second"] for e in complete)
    chosen = defaults.DEFAULTS[family]
    mine = next(e for e in complete if (e["method"], e["n0"]) == (chosen.method, chosen.n0))
    assert mine["tests_per_second"] >= (1 - defaults.TIE) * fastest
    tied = defaults.tied_with_best(results, family)
    kept, metric = defaults.break_tie(results, family, tied)
    assert kept[0]["method"] == chosen.method                 # the fastest of those the tie-break keeps
    if metric == "localization":                               # nobody tied localizes more than a tie band better
        loc = defaults.localization(results, family)
        assert all(loc[e["method"]] <= loc[chosen.method] + defaults.LOCALIZATION_TIE for e in tied)
    else:
        assert all(e["certified_share"] <= mine["certified_share"] + defaults.SHARE_TIE for e in tied)
    # n0: the same method with another n0 certifies no more per second (exact: same seconds per pass)
    assert all(e["tests_per_second"] <= mine["tests_per_second"] for e in complete if e["method"] == chosen.method)


def test_break_tie_prefers_localization_then_speed():
    tied = [{"method": "a", "certified_share": 0.80, "tests_per_second": 10.0},
            {"method": "b", "certified_share": 0.90, "tests_per_second": 9.5},
            {"method": "c", "certified_share": 0.86, "tests_per_second": 9.2}]
    grid = {"grid_rows": [{"family": "f", "method": m, "certified_gridpg": [v]} for m, v in
                          (("a", 0.80), ("b", 0.50), ("c", 0.83))]}
    kept, metric = defaults.break_tie(grid, "f", tied)
    assert metric == "localization" and [e["method"] for e in kept] == ["a", "c"]    # a is within 5 points, faster
    kept, metric = defaults.break_tie({"grid_rows": []}, "f", tied)
    assert metric == "certified share" and [e["method"] for e in kept] == ["b"]


def test_methods_too_slow_to_run_are_bounded_below_the_winner(results):
    bounds = {b["method"]: b for b in defaults.slow_bounds(results, "imagenet")}
    for method in ("rise", "occlusion"):
        assert bounds[method]["below_best"], bounds[method]


@pytest.mark.parametrize("family", sorted(defaults.DEFAULTS))
def test_why_names_the_default_and_the_figures_of_the_json(results, family):
    text = defaults.why(family, results)
    chosen = defaults.DEFAULTS[family]
    entry = next(e for e in defaults.ranking(results, family, defaults.REFERENCE_SIGMA)
                 if (e["method"], e["n0"]) == (chosen.method, chosen.n0))
    assert text.startswith(f"{attributions.METHODS[chosen.method].label} is the default")
    assert f"{entry['certified_share']:.1%}" in text and "\n" not in text
    others = {e["method"] for e in defaults.ranking(results, family, defaults.REFERENCE_SIGMA)} - {chosen.method}
    assert all(attributions.METHODS[m].label in text for m in others)


def test_why_without_the_measurement_says_so():
    text = defaults.why("imagenet", results={"rows": []})
    assert "not available" in text and attributions.METHODS[defaults.DEFAULTS["imagenet"].method].label in text


def test_an_unknown_family_gets_the_fallback_defaults():
    assert defaults.for_family("user") == defaults.DEFAULTS[defaults.FALLBACK_FAMILY]


def test_choose_sigma_moves_only_when_a_larger_radius_is_nearly_free():
    ref = {"sigma": defaults.REFERENCE_SIGMA, "certified_share": 0.5, "smoothed_agrees": 1.0}
    smaller = {"sigma": 0.12, "certified_share": 0.9, "smoothed_agrees": 1.0}   # more certified, smaller R: never
    larger = {"sigma": 0.5, "certified_share": 0.46, "smoothed_agrees": 1.0}
    assert defaults.choose_sigma([smaller, ref, {**larger, "certified_share": 0.3}]) == defaults.REFERENCE_SIGMA
    assert defaults.choose_sigma([smaller, ref, larger]) == 0.5
    # as much certified, but the noisy copies no longer show the explained class on some image: no gain
    assert defaults.choose_sigma([ref, {**larger, "smoothed_agrees": 0.5}]) == defaults.REFERENCE_SIGMA
    assert defaults.choose_sigma([ref, {**larger, "smoothed_agrees": None}]) == defaults.REFERENCE_SIGMA


def test_the_app_and_the_cli_start_from_the_defaults():
    from certlib.runs import cli

    digits = models.get_spec(models.default_model_key())
    assert attributions.default_method(digits) == defaults.DEFAULTS["digits"].method
    photo = models.get_spec(models.photo_model_key())
    assert attributions.default_method(photo) == defaults.DEFAULTS["imagenet"].method
    args = cli.parser().parse_args(["run"])
    assert args.methods is None and args.n0 is None          # resolved from the model's family (cli.resolve_defaults)
    assert cli.resolve_defaults(args, digits).n0 == defaults.DEFAULTS["digits"].n0


def test_one_sampling_serves_both_n0():
    # bench/defaults.py samples n0 = 8 and adds selection copies 8..31: exactly a run with n0 = 32.
    from bench.defaults import LEVELS, sample_n0s

    model = models.load_model(models.default_model_key())
    entry = images.digit_gallery()[0]
    x = images.prepare_image(entry.pixels, 1, (32, 32), True, None)
    fn = attributions.for_target(model, "grad", int(model.predict_proba(x)[0].argmax()), 0)[0]
    both = sample_n0s(fn, x, 0.25, 24, (8, 32))
    direct = sampling.sample_topk_counts(fn, x, 0.25, n0=32, n=24, k_percents=LEVELS, seed=0)
    assert np.array_equal(both[32][0].selection_ones, direct.selection_ones)
    assert np.array_equal(both[32][0].estimation_ones, direct.estimation_ones)
    assert np.array_equal(both[8][0].estimation_ones, direct.estimation_ones) and both[8][0].n0 == 8
    assert math.isclose(both[32][0].sigma, 0.25)


def test_the_front_door_photo_is_the_measured_one(results):
    """"Certify a photo" opens the photo where the default method certifies the largest share of the top-5% pixels
    among those whose smoothed classifier votes for the explained class (read here from the rows directly)."""
    chosen = defaults.DEFAULTS["imagenet"]
    voted = {s["image"]: s["top_class"] for s in results["smoothed"] if s["sigma"] == chosen.sigma}
    shares = {r["image"]: r["certified_top"][0] / (0.05 * r["pixels"]) for r in results["rows"]
              if r["family"] == "imagenet" and r["method"] == chosen.method and r["n0"] == chosen.n0
              and r["sigma"] == chosen.sigma and r["cell"] is None and voted.get(r["image"]) == r["target"]}
    assert defaults.FRONT_DOOR_PHOTO == max(shares, key=shares.get) == defaults.front_door_photo(results)
    assert shares[defaults.FRONT_DOOR_PHOTO] > 0.25        # a visible share of the most important pixels
    said = defaults.why_front_door(results)
    assert f"({shares[defaults.FRONT_DOOR_PHOTO]:.0%})" in said and "chelsea" in said
