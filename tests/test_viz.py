"""Figures: the top-k probability chart."""
import numpy as np

from certlib.viz import probability_bar, top_k_classes


def test_top_k_classes_sorted_and_stable_on_ties():
    probs = np.array([0.1, 0.3, 0.3, 0.2, 0.1])
    assert top_k_classes(probs, 3) == [(1, 0.3), (2, 0.3), (3, 0.2)]


def test_probability_bar_highlights_the_target():
    probs = np.array([0.05, 0.7, 0.25])
    fig = probability_bar(probs, ("a", "b", "c"), k=2, highlight=2)
    bar = fig.data[0]
    assert list(bar.y) == ["1: b", "2: c"]
    assert list(bar.marker.color) == ["#1f77b4", "#d62728"]


def test_certified_levels_by_hand():
    from certlib.pixel_viz import certified_levels

    # K ladder given out of order (50, 5, 25); four pixels: top at 5% (and so 25, 50), top only at 50%,
    # abstaining somewhere and top nowhere, certified "not top" everywhere
    ks = (50.0, 5.0, 25.0)
    classes = np.array([[1, 1, -1, 0],      # K = 50
                        [1, 0, 0, 0],       # K = 5
                        [1, 0, 0, 0]],      # K = 25
                       dtype=np.int8).reshape(3, 1, 4)
    assert certified_levels(classes, ks).tolist() == [[1, 0, -1, -2]]   # index into ks of the smallest certified K


def test_certified_overlay_colours_by_smallest_level_and_never_hides_abstain():
    from certlib.pixel_viz import ABSTAIN_RGB, LEVEL_RGB, certified_overlay

    base = np.full((1, 4, 3), 100, dtype=np.uint8)
    classes = np.array([[1, 1, -1, 0], [1, 0, 0, 0]], dtype=np.int8).reshape(2, 1, 4)
    out = certified_overlay(base, classes, (50.0, 5.0), alpha=1.0)
    assert tuple(out[0, 0]) == LEVEL_RGB[0]            # smallest K (5%) gets the first colour
    assert tuple(out[0, 1]) == LEVEL_RGB[1]            # top only at 50%: the second colour
    assert tuple(out[0, 2]) == ABSTAIN_RGB             # abstaining is shown
    assert tuple(out[0, 3]) == (100, 100, 100)         # certified not top: transparent
    half = certified_overlay(base, classes, (50.0, 5.0), alpha=0.5)
    assert tuple(half[0, 2]) == tuple(int(v) for v in np.floor((100 + np.array(ABSTAIN_RGB)) / 2 + 0.5))
