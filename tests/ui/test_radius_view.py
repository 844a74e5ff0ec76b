"""ui.radius_view: the radii of a run are computed once for every session showing it (the sessions of one
single-flight run hold the same counts object), and again for anything else: another α, other levels, other
counts, even equal ones."""
import threading

import numpy as np
import torch

from certlib.pixel import radius as pixel_radius
from certlib.smoothing import sampling
from ui import radius_view

IMAGE = torch.linspace(0.0, 1.0, 64, dtype=torch.float32).reshape(1, 1, 8, 8)


def _counts(seed: int) -> sampling.TopKCounts:
    return sampling.sample_topk_counts(lambda b: b[:, 0], IMAGE, 0.25, 8, 200, (25.0, 50.0), seed=seed,
                                       batch_size=256)


def test_sessions_of_one_run_share_its_radii_and_nothing_else(monkeypatch):
    computed = []
    real = pixel_radius.fixed_n_radii
    monkeypatch.setattr(pixel_radius, "fixed_n_radii", lambda *a: computed.append(a[1:]) or real(*a))
    counts = _counts(0)
    seen = []
    sessions = [threading.Thread(target=lambda: seen.append(radius_view.radii_for(counts, (25.0, 50.0), None, 0.01)))
                for _ in range(8)]
    for s in sessions:
        s.start()
    for s in sessions:
        s.join()
    assert len(computed) == 1 and all(r is seen[0] for r in seen)          # eight sessions at once: one computation
    np.testing.assert_array_equal(seen[0].radii, real(counts, 0.01, (25.0, 50.0)).radii)   # NaN: no radius
    radius_view.radii_for(counts, (25.0, 50.0), None, 0.05)                # another α
    radius_view.radii_for(counts, (25.0,), None, 0.01)                     # other levels
    radius_view.radii_for(_counts(0), (25.0, 50.0), None, 0.01)            # equal counts, another run object
    assert len(computed) == 4
