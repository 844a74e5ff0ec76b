"""Anytime-valid progressive certification against the fixed-n exact test, side by side on the same noisy copies.

    python bench/anytime.py            # writes bench/results/anytime.json (~15 min on 2 cores)
    python bench/anytime.py --quick    # the bundled model only (~1 min)

For each model × image × method (σ 0.25, τ 0.75, α 1e-3, Holm over pixels × levels 5/25/50%):
- one progressive run with the page's defaults (n0 = 32), frames every 8 copies up to n_max. Its counts at n = 256
  are exactly the counts of a fixed-n run (same seed, same copies), so the fixed-n exact test is decided on the same
  samples: C_fixed pixels certified with 32 + 256 = 288 model passes;
- model passes and seconds until the anytime certificate holds 50 / 90 / 100% of C_fixed pixels (certified pixels,
  not necessarily the same ones);
- the certified share at equal passes: the anytime frame vs the fixed-n test planned for that n;
- the same with n0 = 8 selection copies (a cheaper mode guess; its own seed stream, so its own C_fixed too);
- time to the first frame, and to the first frame with a certified pixel, at the page's frame size (one batch);
- the cost of deciding a frame (anytime test + stop rule) against the frame's sampling time.
A model pass is one noisy attribution (forward + backward for these methods).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import write  # noqa: E402
from certlib import attributions, images, models, pixel_cert, progressive  # noqa: E402

SIGMA, TAU, ALPHA, LEVELS = 0.25, 0.75, 1e-3, (5.0, 25.0, 50.0)
FIXED_N = 256
TARGETS = (0.5, 0.9, 1.0)
EQUAL_PASSES = (64, 96, 128, 160, 192, 224, 288)
METHODS = ("grad", "lrp", "gradcam")
SETUPS = {"digits_sigma0.25": (["digit:2", "digit:4", "digit:8", "digit:13"], 1024),
          "efficientnet_lite0": (["photo:chelsea", "photo:coffee"], 512)}


def _input(model: models.LoadedModel, key: str) -> torch.Tensor:
    spec = model.spec
    return images.prepare_image(images.get_image(key).pixels, spec.in_channels, spec.input_size,
                                spec.flexible_size, spec.resize_size)


def _certified(cert) -> int:
    return int((cert.classes != pixel_cert.ABSTAIN).sum())


def progressive_run(model, x, target, method, n0: int, n_max: int, frame_size: int,
                    baseline: dict | None = None) -> dict:
    """One progressive run; `baseline` (certified, passes, seconds) is the fixed-n test to reach, by default the
    fixed-n test on this run's own counts at n = 256."""
    fn, logits = attributions.for_target(model, method, target, 0)
    rule = progressive.StopRule(TAU, ALPHA, LEVELS)
    curve, fixed_at, decide_s = [], {}, 0.0
    began = time.perf_counter()
    decide_clock = 0.0
    for frame in progressive.certify_progressively(fn, x, SIGMA, rule, n_max=n_max, n0=n0, frame_size=frame_size,
                                                   logits=logits):
        t = time.perf_counter()
        sub = frame.counts.select_levels(LEVELS)
        passes = frame.passes
        if passes in EQUAL_PASSES or frame.counts.n == FIXED_N:
            fixed_at[passes] = _certified(progressive.decide(sub, "fixed", TAU, ALPHA))
        decide_clock += time.perf_counter() - t
        curve.append({"passes": passes, "n": frame.counts.n, "seconds": frame.seconds,
                      "certified": _certified(frame.certificate), "undecided": frame.undecided, "lost": frame.lost,
                      "stop": frame.stop})
    total_s = time.perf_counter() - began - decide_clock
    # what one frame's decision costs (anytime test + stop rule), timed apart on the last counts
    t = time.perf_counter()
    rule.status(frame.counts, n_max)
    decide_s = time.perf_counter() - t
    own = {"certified": fixed_at[n0 + FIXED_N], "passes": n0 + FIXED_N,
           "seconds": next(c["seconds"] for c in curve if c["n"] == FIXED_N)}
    base = baseline or own
    reach = {}
    for share in TARGETS:
        hit = next((c for c in curve if c["certified"] >= share * base["certified"]), None)
        reach[f"{share:.0%}"] = None if hit is None else {
            "passes": hit["passes"], "passes_ratio": hit["passes"] / base["passes"], "seconds": hit["seconds"],
            "seconds_ratio": hit["seconds"] / base["seconds"]}
    pixels = int(np.prod(x.shape[-2:])) * len(LEVELS)
    equal = [{"passes": p, "anytime": next(c["certified"] for c in curve if c["passes"] == p) / pixels,
              "fixed_n": fixed_at[p] / pixels} for p in EQUAL_PASSES if p in fixed_at and p > n0]
    return {"n0": n0, "n_max": n_max, "frame_size": frame_size, "baseline": base, "own_fixed_n": own,
            "tests": pixels, "reach": reach,
            "equal_passes": equal, "stop": curve[-1]["stop"], "stopped_at_passes": curve[-1]["passes"],
            "anytime_certified_at_stop": curve[-1]["certified"], "lost_total": int(sum(c["lost"] for c in curve)),
            "sampling_seconds": total_s, "decide_seconds_per_frame": decide_s,
            # every 64th pass of the curve (the JSON stays readable; the reach points above are exact)
            "curve": [c for c in curve if c["passes"] % 64 == 0 or c is curve[-1]]}


def first_frames(model, x, target, method) -> dict:
    """Seconds to the first frame and to the first frame with a certified pixel, at the page's frame size."""
    fn, logits = attributions.for_target(model, method, target, 0)
    rule = progressive.StopRule(TAU, ALPHA, LEVELS)
    first = certified = None
    for frame in progressive.certify_progressively(fn, x, SIGMA, rule, n_max=FIXED_N, logits=logits):
        first = first if first is not None else {"seconds": frame.seconds, "passes": frame.passes}
        if _certified(frame.certificate):
            certified = {"seconds": frame.seconds, "passes": frame.passes}
            break
    return {"first_frame": first, "first_certified_frame": certified}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="the bundled model only")
    args = parser.parse_args()
    rows = []
    for key, (image_keys, n_max) in SETUPS.items():
        if args.quick and key != "digits_sigma0.25":
            continue
        model = models.load_model(key)
        for image_key in image_keys:
            x = _input(model, image_key)
            target = int(model.predict_proba(x)[0].argmax())
            for method in METHODS:
                start = {"model": key, "image": image_key, "target": target, "method": method,
                         "input": list(x.shape[1:])}
                start["timing"] = first_frames(model, x, target, method)
                baseline = None
                for n0 in (32, 8):       # the baseline of both: the fixed-n test with the page's n0 = 32
                    run = progressive_run(model, x, target, method, n0, n_max, frame_size=8, baseline=baseline)
                    baseline = baseline or run["own_fixed_n"]
                    rows.append({**start, **run})
                    r90 = run["reach"]["90%"]
                    print(f"{key:18s} {image_key:14s} {method:8s} n0={n0:2d} fixed {run['baseline']['certified']:6d} "
                          f"| 50% {_p(run['reach']['50%'])} 90% {_p(r90)} 100% {_p(run['reach']['100%'])} "
                          f"| first frame {start['timing']['first_frame']['seconds']:.2f}s", flush=True)
    summary = _summarise(rows)
    path = write("anytime", {"settings": {"sigma": SIGMA, "tau": TAU, "alpha": ALPHA, "levels": LEVELS,
                                          "fixed_n": FIXED_N, "correction": "holm"},
                             "summary": summary, "runs": rows})
    for s in summary:
        print(s)
    print(f"wrote {path}")


def _p(hit) -> str:
    return "   —   " if hit is None else f"{hit['passes']:4d} ({hit['passes_ratio']:.2f})"


def _summarise(rows: list[dict]) -> list[dict]:
    """Per model × method × n0: median and worst passes ratio to reach 90%, and whether ≤ 1/3 (the issue's target)."""
    out = []
    for key in dict.fromkeys(r["model"] for r in rows):
        for method in METHODS:
            for n0 in (32, 8):
                group = [r for r in rows if r["model"] == key and r["method"] == method and r["n0"] == n0]
                if not group:
                    continue
                ratios = [r["reach"]["90%"]["passes_ratio"] if r["reach"]["90%"] else float("inf") for r in group]
                seconds = [r["reach"]["90%"]["seconds_ratio"] if r["reach"]["90%"] else float("inf") for r in group]
                first = [r["timing"]["first_frame"]["seconds"] for r in group]
                out.append({"model": key, "method": method, "n0": n0, "images": len(group),
                            "passes_ratio_90_median": float(np.median(ratios)), "passes_ratio_90_worst": max(ratios),
                            "seconds_ratio_90_median": float(np.median(seconds)),
                            "target_one_third_met": max(ratios) <= 1 / 3,
                            "first_frame_seconds_median": float(np.median(first))})
    return out


if __name__ == "__main__":
    main()
