"""Pixel certification vs its floor and vs what users would write, side by side in one process.

    python bench/pixel_cert.py [--n 256] [--repeats 5]

For Saliency (grad), Input×Gradient and LRP on the bundled digits model (CPU):
- certlib: `sample_topk_counts` for n0 + n noisy copies (attribution, §3.1 post-processing, counting) + `decide`;
- floor: a bare loop of the same batched forward+backward passes on the same number of noisy inputs;
- NoiseTunnel: Captum's SmoothGrad over the same n (it returns only the mean map: no certificate possible;
  for LRP the base is captum's LRP, certlib's is zennit's);
- per-sample loop: one noisy copy at a time (batch 1), as a naive script would, with the same post-processing.
Writes bench/results/pixel_cert.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import timed, write  # noqa: E402
from certlib import attributions, models, pixel_cert, sampling  # noqa: E402
from certlib.images import digit_gallery, prepare_image  # noqa: E402

METHODS = ("grad", "input_x_gradient", "lrp")
SIGMA, N0, BATCH = 0.25, 32, 64


def floor(model, x, target, total):
    """n forward+backward passes in batches: the cost any gradient method must pay."""
    gen = torch.Generator().manual_seed(0)
    for start in range(0, total, BATCH):
        b = min(BATCH, total - start)
        xb = (x + SIGMA * torch.randn((b, *x.shape[1:]), generator=gen)).requires_grad_(True)
        out = model.module(xb)[:, target].sum()
        torch.autograd.grad(out, xb)


def certlib_run(method, x, target, n):
    counts = sampling.sample_topk_counts(lambda xb: method.attribute(xb, target), x, SIGMA, N0, n, seed=0,
                                         batch_size=BATCH)
    pixel_cert.decide(counts.votes_for_mode, counts.modes, counts.n, SIGMA, 0.75, 1e-3)


def per_sample_loop(method, x, target, total):
    gen = torch.Generator().manual_seed(0)
    clean = method.attribute(x, target).detach()
    scale = pixel_cert.clean_scale(clean[0])
    counts = torch.zeros((len(sampling.DEFAULT_K_PERCENTS), *x.shape[-2:]), dtype=torch.int32)
    for _ in range(total):
        xb = x + SIGMA * torch.randn(x.shape, generator=gen)
        counts += pixel_cert.top_k_masks(method.attribute(xb, target).detach(), sampling.DEFAULT_K_PERCENTS,
                                         scale)[:, 0].int()


def noise_tunnel(model, x, target, n, method_key):
    from captum.attr import LRP, InputXGradient, NoiseTunnel, Saliency

    base = {"grad": Saliency, "input_x_gradient": InputXGradient, "lrp": LRP}[method_key](model.module)
    NoiseTunnel(base).attribute(x, nt_type="smoothgrad", nt_samples=n, nt_samples_batch_size=BATCH, stdevs=SIGMA,
                                target=target)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = models.load_model("digits_sigma0.25")
    x = prepare_image(digit_gallery()[0].pixels, 1, (32, 32), True)
    target = int(model.predict_proba(x).argmax())
    total = N0 + args.n
    rows = []
    for key in METHODS:
        method = attributions.make_attribution(key, model)
        row = {"method": key, "n0": N0, "n": args.n, "batch": BATCH,
               "certlib": timed(lambda: certlib_run(method, x, target, args.n), args.repeats),
               "floor_fwd_bwd": timed(lambda: floor(model, x, target, total), args.repeats),
               "per_sample_loop": timed(lambda: per_sample_loop(method, x, target, total), max(2, args.repeats // 2))}
        if key in ("grad", "input_x_gradient", "lrp"):  # lrp: captum's own LRP under NoiseTunnel
            row["captum_noise_tunnel"] = timed(lambda: noise_tunnel(model, x, target, total, key), args.repeats)
        c = row["certlib"]["median_s"]
        row["ratio_vs_floor"] = c / row["floor_fwd_bwd"]["median_s"]
        row["speedup_vs_per_sample_loop"] = row["per_sample_loop"]["median_s"] / c
        if "captum_noise_tunnel" in row:
            row["ratio_vs_noise_tunnel"] = c / row["captum_noise_tunnel"]["median_s"]
        rows.append(row)
        print(f"{key:18s} certlib {c * 1e3:8.1f} ms  floor {row['floor_fwd_bwd']['median_s'] * 1e3:8.1f} ms  "
              f"ratio {row['ratio_vs_floor']:.2f}  per-sample loop ×{row['speedup_vs_per_sample_loop']:.1f}  "
              + (f"NoiseTunnel ratio {row['ratio_vs_noise_tunnel']:.2f}" if "ratio_vs_noise_tunnel" in row else ""))
    print(f"wrote {write('pixel_cert', {'device': 'cpu', 'model': 'digits_sigma0.25', 'sigma': SIGMA, 'rows': rows})}")


if __name__ == "__main__":
    main()
