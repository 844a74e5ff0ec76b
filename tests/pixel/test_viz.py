"""certlib.pixel.viz: the live frame's table of shares says what the final view's bars say."""
from __future__ import annotations

import numpy as np

from certlib.pixel import viz as pixel_viz


def test_shares_table_has_one_row_per_level_in_order_with_the_bars_values():
    fractions = {"certified top-K": np.array([0.5, 0.1234]), "certified not top-K": np.array([0.3, 0.8]),
                 "abstain": np.array([0.2, 0.0766])}
    table = pixel_viz.shares_table((25.0, 5.0), fractions).splitlines()
    assert table[0] == "| level | certified top-K | certified not top-K | abstain |"
    assert table[2] == "| top 5% | 12.3% | 80.0% | 7.7% |" and table[3] == "| top 25% | 50.0% | 30.0% | 20.0% |"
    bars = pixel_viz.certificate_bars((25.0, 5.0), fractions)
    top = {b.name: list(b.y) for b in bars.data}["certified top-K"]
    assert [f"{v:.1%}" for v in top] == ["12.3%", "50.0%"]       # same order and values as the chart
