"""Certified shares per K under each normalisation of h^K, and how often the prediction itself is certified at R.

    python bench/normalisation.py [--images 50] [--methods grad,lrp,gradcam]

On the bundled model (digits_sigma0.25), held-out digits, σ = 0.25, n0 + n = 32 + 256, τ = 0.75, α = 1e-3, Holm
over all pixels × the page's default levels K ∈ {5, 25, 50}; K = 1 is decided on its own to show the clean
scale's saturation. The noise is the same for every normalisation (same seed), so the columns differ only by h^K.
Also recorded: the share of noisy top-1% masks that are empty (every value tied at the clipped maximum), and the
prediction certificate (Cohen et al., same copies, α_pred = 1e-3) against R. Results: bench/results/normalisation.json.
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
from certlib.attributions import methods as attributions
from certlib.data import images
from certlib.models import registry as models
from certlib.pixel import cert as pixel_cert, prediction_cert
from certlib.smoothing import sampling  # noqa: E402

SIGMA, N0, N, TAU, ALPHA, LEVELS = 0.25, 32, 256, 0.75, 1e-3, (5.0, 25.0, 50.0)


def empty_top1_share(attribute, x: torch.Tensor, normalisation: str, copies: int = 64) -> float:
    noisy = x + SIGMA * torch.randn((copies, *x.shape[1:]), generator=torch.Generator().manual_seed(9))
    scale = pixel_cert.clean_scale(attribute(x)[0]) if normalisation == "paper" else None
    masks = pixel_cert.top_k_masks(attribute(noisy), (1.0,), normalisation, scale)[0]
    return float((masks.flatten(1).sum(1) == 0).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--methods", default="grad,lrp,gradcam")
    args = ap.parse_args()
    model = models.load_model("digits_sigma0.25")
    entries = images.digit_gallery()[:args.images]
    radius = pixel_cert.certified_radius(SIGMA, TAU)
    rows, predictions = [], []
    for method in args.methods.split(","):
        explainer = attributions.make_attribution(method, model)
        for norm_kind in pixel_cert.NORMALISATIONS:
            shares, top1, empty, seconds = [], [], [], 0.0
            for i, entry in enumerate(entries):
                x = images.prepare_image(entry.pixels, 1, (32, 32), True)
                target = int(model.predict_proba(x).argmax())
                attribute = lambda xb: explainer.attribute(xb, target)  # noqa: E731
                start = time.perf_counter()
                c = sampling.sample_topk_counts(attribute, x, SIGMA, N0, N, seed=i, normalisation=norm_kind,
                                                logits=explainer.logits_for)
                seconds += time.perf_counter() - start
                sub = c.select_levels(LEVELS)
                cert = pixel_cert.decide(sub.votes_for_mode, sub.modes, sub.n, SIGMA, TAU, ALPHA)
                shares.append(np.stack([cert.fractions[name] for name in pixel_cert.FRACTION_NAMES]))
                one = c.select_levels((1.0,))
                top1.append(pixel_cert.decide(one.votes_for_mode, one.modes, one.n, SIGMA, TAU, ALPHA).fractions[
                    "certified top-K"][0])
                empty.append(empty_top1_share(attribute, x, norm_kind))
                if method == "grad" and norm_kind == pixel_cert.DEFAULT_NORMALISATION:
                    pred = prediction_cert.from_counts(c, ALPHA)
                    predictions.append({"image": entry.key, "target": target, "top_class": pred.top_class,
                                        "votes": pred.votes, "p_lower": pred.p_lower, "radius": pred.radius,
                                        "covers_R": pred.covers(target, radius)})
            mean = np.mean(shares, axis=0)
            rows.append({"method": method, "normalisation": norm_kind, "images": len(entries),
                         "levels": list(LEVELS),
                         **{name: mean[j].tolist() for j, name in enumerate(pixel_cert.FRACTION_NAMES)},
                         "certified_top1_alone": float(np.mean(top1)), "empty_noisy_top1_masks": float(np.mean(empty)),
                         "seconds_per_run": seconds / len(entries)})
            print(method, norm_kind, [f"{v:.3f}" for v in mean[0]], f"top1 {np.mean(top1):.4f}",
                  f"empty top1 {np.mean(empty):.2f}", flush=True)
    covered = sum(p["covers_R"] for p in predictions)
    certified = sum(p["radius"] is not None for p in predictions)
    print(f"prediction certified: {certified}/{len(predictions)}; beyond R = {radius:.3f}: {covered}")
    write("normalisation", {"sigma": SIGMA, "n0": N0, "n": N, "tau": TAU, "alpha": ALPHA, "radius": radius,
                            "rows": rows, "prediction": {"alpha": ALPHA, "certified": certified,
                                                         "covers_R": covered, "images": predictions}})


if __name__ == "__main__":
    main()
