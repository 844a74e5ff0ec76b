"""Certified top-K overlap of Sparsified SmoothGrad on the bundled digits model, against what random and attacked
perturbations actually do.

    python bench/sparse_smoothgrad.py [--n 1000] [--images 3] [--device cpu]

For each image and σ ∈ {0.25, 0.5} (model digits_sigma0.25, method grad, target = prediction):
- sample ĝ(x) once (n copies; both variants, every τ of the ladder), bound it (α = 0.001, Bonferroni over 1024
  pixels) and record the certified overlap curves over ε (paired and per pixel) and the largest ε certifying 50%
  and 90% overlap;
- perturb x by ε ∈ σ·{0.1, 0.25, 0.5, 1}: two random directions and the top-10% attribution attack
  (`attacks.attribution_attack`, loss "topk", aimed at the base gradient map) per ε, re-sample ĝ(x + δ) with the
  same noise seed, and record the empirical top-K overlap of the estimated maps;
- count empirical overlaps that fall below the certified one (paired, the larger) at the same ε (the certificate
  says: none).
Writes bench/results/sparse_smoothgrad.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import write  # noqa: E402
from certlib.attributions import methods as attributions
from certlib.models import registry as models
from certlib.sparse import check as sparse_check  # noqa: E402
from certlib.sparse import smoothgrad as S  # noqa: E402
from certlib.data.images import digit_gallery, prepare_image  # noqa: E402

MODEL, METHOD, ALPHA = "digits_sigma0.25", "grad", 1e-3
SIGMAS = (0.25, 0.5)
EPS_OVER_SIGMA = (0.1, 0.25, 0.5, 1.0)
CONFIGS = (("sparsified", 10.0, 5.0), ("sparsified", 20.0, 10.0), ("scaled", 20.0, 10.0))   # variant, τ%, K%
RANDOM_DIRECTIONS = 2
ATTACK_K_PERCENT = 10.0   # one attack per ε (they take ~10-40 s each on a busy 2-core CPU)


def certified_side(samples, variant, level, k_percent, sigma):
    cert = S.certify_topk(samples, variant, level, k_percent, 0.0, ALPHA)
    grid = cert.eps_axis(41)
    return cert, {"eps": grid.tolist(), "certified_paired": cert.paired_at(grid).tolist(),
                  "certified_per_pixel": cert.overlap_at(grid).tolist(),
                  "at_eps0": {"paired": cert.paired_overlap, "per_pixel": cert.overlap},
                  "max_eps_50": {"paired": cert.max_paired_eps(0.5), "per_pixel": cert.max_eps(0.5)},
                  "max_eps_90": {"paired": cert.max_paired_eps(0.9), "per_pixel": cert.max_eps(0.9)}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model = models.load_model(MODEL, device=args.device)
    method = attributions.make_attribution(METHOD, model)
    runs, violations, checked = [], 0, 0
    for entry in digit_gallery()[:args.images]:
        x = prepare_image(entry.pixels, 1, (32, 32), True).to(model.device)
        target = int(model.predict_proba(x).argmax())

        def attribute(xb, target=target):
            return method.attribute(xb, target)

        for sigma in SIGMAS:
            t0 = time.perf_counter()
            clean = S.sample_smoothgrad(attribute, x, sigma, args.n, seed=0)
            eps_values = [ratio * sigma for ratio in EPS_OVER_SIGMA]
            perturbed = sparse_check.random_runs(attribute, x, sigma, args.n, S.DEFAULT_LEVELS, 0, eps_values,
                                                 directions=RANDOM_DIRECTIONS)
            perturbed += sparse_check.attacked_runs(model, METHOD, attribute, x, target, sigma, args.n,
                                                    S.DEFAULT_LEVELS, 0, eps_values, ATTACK_K_PERCENT)
            for variant, level, k_percent in CONFIGS:
                cert, summary = certified_side(clean, variant, level, k_percent, sigma)
                points = []
                for run, check in zip(perturbed, sparse_check.overlap_checks(cert, clean, perturbed)):
                    points.append({"kind": check.kind, "eps": check.eps, "empirical": check.empirical,
                                   "certified_paired": check.certified,
                                   "certified_per_pixel": float(cert.overlap_at([check.eps])[0]),
                                   **({"base_map_overlap": run.base_similarity} if run.kind == "attack" else {})})
                    checked += 1
                    violations += check.violates      # the paired claim is never below the per-pixel one
                runs.append({"image": entry.key, "label": entry.label, "target": target, "sigma": sigma,
                             "variant": variant, "level_percent": level, "k_percent": k_percent, "k": cert.k,
                             **summary, "points": points})
                worst = {kind: round(min(p["empirical"] for p in points if p["kind"] == kind), 3)
                         for kind in sorted({p["kind"] for p in points})}
                print(f"{entry.key} σ={sigma} {variant:10s} τ={level:g}% K={k_percent:g}%  certified@0 "
                      f"{summary['at_eps0']}  ε(50%) {summary['max_eps_50']}  lowest empirical {worst}", flush=True)
            print(f"  {entry.key} σ={sigma}: {time.perf_counter() - t0:.0f} s")
    payload = {"model": MODEL, "target": "prediction", "seed": 0, "method": METHOD, "alpha": ALPHA, "n": args.n, "device": args.device,
               "eps_over_sigma": EPS_OVER_SIGMA, "random_directions": RANDOM_DIRECTIONS, "attack_k_percent": ATTACK_K_PERCENT,
               "points_checked": checked, "empirical_below_certified": violations, "runs": runs}
    print(f"{violations} of {checked} empirical overlaps below the certified one")
    print(f"wrote {write('sparse_smoothgrad', payload)}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
