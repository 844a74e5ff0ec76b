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
