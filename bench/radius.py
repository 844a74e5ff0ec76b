"""Per-pixel certified radii on the bundled photos (#29): tests certified at *some* radius against those certified at
R(τ), the radius quantiles, and the decision time of the radius view.

    python bench/radius.py            # writes bench/results/radius.json (~2–4 min on 2 idle cores)

For each photo × method (EfficientNet-Lite0, σ = 0.25, n0 = 8, n = 256, levels 5/25/50 %, α = 1e-3, τ = 0.75):
the fixed-n counts are sampled once; then Holm and Bonferroni at τ, and the radii (Clopper–Pearson at α/m) give
the tests certified at R(τ) and at any radius; the anytime radii of the same run are timed on a trajectory of frames
of 8 (the page's), sampled progressively with the page's stop rule switched off (every frame up to the budget).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import timed, write  # noqa: E402
from certlib.attributions import methods as attributions
from certlib.data import images
from certlib.models import registry as models
from certlib.pixel import cert as pixel_cert, radius as pixel_radius, progressive
from certlib.smoothing import sampling  # noqa: E402

PHOTOS = ("photo:chelsea", "photo:coffee", "photo:flower")
METHODS = ("gradcam", "grad")
SIGMA, N0, N, LEVELS, TAU, ALPHA, FRAME = 0.25, 8, 256, (5.0, 25.0, 50.0), 0.75, 1e-3, 8


def _row(model, entry, method: str) -> dict:
    x = images.prepare_image(entry.pixels, model.spec.in_channels, model.spec.input_size, model.spec.flexible_size,
                             model.spec.resize_size)
    target = int(model.predict_proba(x)[0].argmax())
    attribute, _ = attributions.for_target(model, method, target, 0)
    start = time.perf_counter()
    counts = sampling.sample_topk_counts(attribute, x, SIGMA, N0, N, LEVELS, seed=0)
    sampled = time.perf_counter() - start
    r_tau = pixel_cert.certified_radius(SIGMA, TAU)
    holm = pixel_cert.decide(counts.votes_for_mode, counts.modes, N, SIGMA, TAU, ALPHA, "holm")
    bonf = pixel_cert.decide(counts.votes_for_mode, counts.modes, N, SIGMA, TAU, ALPHA, "bonferroni")
    radii = pixel_radius.fixed_n_radii(counts, ALPHA)
    finite = radii.radii[np.isfinite(radii.radii)]
    fixed_time = timed(lambda: pixel_radius.fixed_n_radii(counts, ALPHA), repeats=5)
    # A trajectory with a boundary every FRAME copies, from the same counts' copies (extend_counts is exact).
    first = sampling.sample_topk_counts(attribute, x, SIGMA, N0, FRAME, LEVELS, seed=0)
    trajectory = progressive.Trajectory.begin(first, N)
    step = first
    while step.n < N:
        step = sampling.extend_counts(attribute, x, step, FRAME)
        trajectory = trajectory.extend(step)
    assert np.array_equal(step.estimation_ones, counts.estimation_ones)
    pixel_radius._ANYTIME_TABLES.clear()
    cold = time.perf_counter()
    any_radii = pixel_radius.trajectory_radii(trajectory, ALPHA)
    anytime_cold = time.perf_counter() - cold
    anytime_warm = timed(lambda: pixel_radius.trajectory_radii(trajectory, ALPHA), repeats=3)
    curve_time = timed(lambda: radii.curve(np.linspace(0, float(finite.max()) * 1.05, 121)), repeats=5)
    return {"image": entry.key, "method": method, "target": target, "tests": int(radii.num_tests),
            "sampling_seconds": sampled, "radius_tau": r_tau,
            "holm_at_tau": int((holm.classes >= 0).sum()), "bonferroni_at_tau": int((bonf.classes >= 0).sum()),
            "radii_at_tau": int((finite >= r_tau).sum()), "with_radius": int(finite.size),
            "radius_median": float(np.median(finite)) if finite.size else None,
            "radius_p90": float(np.quantile(finite, 0.9)) if finite.size else None,
            "anytime_with_radius": int(np.isfinite(any_radii.radii).sum()),
            "decision_seconds": {"fixed_radii": fixed_time["median_s"], "anytime_radii_first": anytime_cold,
                                 "anytime_radii_again": anytime_warm["median_s"], "curve": curve_time["median_s"]}}


def main() -> None:
    model = models.load_model(models.photo_model_key())
    gallery = {e.key: e for e in images.photo_gallery()}
    rows = []
    for key in PHOTOS:
        for method in METHODS:
            rows.append(_row(model, gallery[key], method))
            r = rows[-1]
            print(f"{key:16s} {method:8s} Holm@τ {r['holm_at_tau']:7d}  radii@R(τ) {r['radii_at_tau']:7d}  "
                  f"any radius {r['with_radius']:7d} of {r['tests']}  median R {r['radius_median']}  "
                  f"decision {r['decision_seconds']}", flush=True)
    totals = {m: {"with_radius": sum(r["with_radius"] for r in rows if r["method"] == m),
                  "holm_at_tau": sum(r["holm_at_tau"] for r in rows if r["method"] == m),
                  "radii_at_tau": sum(r["radii_at_tau"] for r in rows if r["method"] == m)} for m in METHODS}
    write("radius", {"settings": {"sigma": SIGMA, "n0": N0, "n": N, "levels": LEVELS, "tau": TAU, "alpha": ALPHA,
                                  "frame": FRAME, "model": models.photo_model_key()},
                     "rows": rows, "totals": totals})


if __name__ == "__main__":
    main()
