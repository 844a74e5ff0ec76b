"""Pixel certification vs its floor and vs what users would write, side by side in one process (issue #8 a, b).

    python bench/pixel_cert.py                       # bundled model (n = 200) + ResNet-50 at small n, CPU
    python bench/pixel_cert.py --device cuda --models resnet50 --methods lrp gradcam --n 1000 --out pixel_cert_gpu

For each method, on the same image, σ, n0 and n, with the same batch size:
- certlib: the full certificate, `sample_topk_counts` (seeded noise, attribution, §3.1 post-processing, counts on the
  device) + `decide` (p-values, Holm) — what the app runs;
- floor: a bare loop of the same batched passes written in plain torch (noise, forward, backward; no checks, no
  post-processing, no counting). For LRP the passes are zennit's LRP backward under the same rules, for IG the 20
  interpolation steps per copy, for GradCAM a backward to the CAM layer. Target: certlib / floor <= 1.15;
- fwd+bwd: n0 + n + 1 plain forward+backward passes to the input, the model's own cost (so a method's intrinsic
  cost is visible too);
- Captum NoiseTunnel (smoothgrad, same n0 + n, same method, same batch) plus numpy per-pixel counting of n0 + n
  maps: what a user would put together (NoiseTunnel alone returns only the mean map);
- the paper's pipeline: batches of 8 copies, each map moved to the host and post-processed one at a time in numpy,
  all maps kept, counted at the end. Target: certlib >= 3x faster.
Writes bench/results/<out>.json (default pixel_cert.json) with every raw timing.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RESULTS, write  # noqa: E402
from certlib.attributions import _utils as U  # noqa: E402
from certlib.attributions import methods as attributions
from certlib.models import registry as models
from certlib.pixel import cert as pixel_cert
from certlib.smoothing import sampling  # noqa: E402
from certlib.data.images import digit_gallery, prepare_image  # noqa: E402

METHODS = ("grad", "input_x_gradient", "lrp", "gradcam", "integrated_gradients")
SIGMA, TAU, ALPHA = 0.25, 0.75, 1e-3
KS = sampling.DEFAULT_K_PERCENTS
PAPER_BATCH = 8
# ResNet-50 on a 2-core CPU costs ~0.2 s per forward+backward (0.8 s for LRP, 4 s for IG's 20 steps): small n there.
CPU_RESNET = {"n0": 4, "n": 8, "ig": {"n0": 2, "n": 4}}


# ------------------------------------------------------------------------------------------------ the floor

def _grad_pass(module, xb, target):
    xb.requires_grad_(True)
    torch.autograd.grad(module(xb)[:, target].sum(), xb)


def _gradcam_pass(layer):
    def run(module, xb, target):
        seen = {}
        handle = layer.register_forward_hook(lambda _m, _i, out: seen.__setitem__("a", out))
        try:
            logits = module(xb.requires_grad_(True))
        finally:
            handle.remove()
        torch.autograd.grad(logits[:, target].sum(), seen["a"])
    return run


def _ig_pass(steps, rows):
    alphas = None

    def run(module, xb, target):
        nonlocal alphas
        if alphas is None:
            alphas = ((torch.arange(steps, device=xb.device, dtype=xb.dtype) + 0.5) / steps).view(-1, 1, 1, 1, 1)
        path = (alphas * xb[None]).reshape(-1, *xb.shape[1:])      # baseline 0: steps x copies interpolations
        for start in range(0, path.shape[0], rows):
            chunk = path[start:start + rows].requires_grad_(True)
            torch.autograd.grad(module(chunk)[:, target].sum(), chunk)
    return run


def _lrp_pass(composite_owner, module, x):
    """zennit's LRP under certlib's rules, the composite registered once for the whole loop (the fastest use)."""
    composite = composite_owner._make_composite(U.first_conv(module), x)

    def run(mod, xb, target):
        with composite.context(mod):
            xb.requires_grad_(True)
            score = mod(xb)[:, target]
            torch.autograd.grad(score, xb, grad_outputs=score.detach())
    return run


def floor_pass(key, model, method, x):
    if key in ("grad", "input_x_gradient"):
        return _grad_pass
    if key == "gradcam":
        return _gradcam_pass(U.get_layer(model.module, model.spec.cam_layer))
    if key == "integrated_gradients":
        return _ig_pass(method.n_steps, U.rows_per_pass(x[0].numel(), x.device, backward=True))
    if key == "lrp":
        return _lrp_pass(method, model.module, x)
    raise ValueError(key)


def floor(model, run_pass, x, target, total, batch):
    """The same batched passes as certlib's: the clean input, then `total` noisy copies in batches."""
    gen = torch.Generator(device=x.device).manual_seed(0)
    run_pass(model.module, x.clone(), target)
    for start in range(0, total, batch):
        b = min(batch, total - start)
        run_pass(model.module, x + SIGMA * torch.randn((b, *x.shape[1:]), generator=gen, device=x.device), target)


# ------------------------------------------------------------------------------------- certlib and baselines

def certlib_run(method, x, target, n0, n, batch):
    counts = sampling.sample_topk_counts(lambda xb: method.attribute(xb, target), x, SIGMA, n0, n, seed=0,
                                         batch_size=batch)
    return pixel_cert.decide(counts.votes_for_mode, counts.modes, counts.n, SIGMA, TAU, ALPHA)


def numpy_count(maps: np.ndarray, scale: float, n0: int):
    """Per-pixel top-K counting of stacked maps [N,H,W] in numpy, one map at a time, then the binomial tests."""
    from scipy.stats import binom

    masks = np.empty((len(maps), len(KS), *maps.shape[1:]), dtype=bool)
    for i, a in enumerate(maps):
        post = np.abs(np.clip(a / scale, -1, 1))
        for j, k in enumerate(KS):
            masks[i, j] = post > np.percentile(post, 100 - k)
    sel, est = masks[:n0].sum(0), masks[n0:].sum(0)
    n = len(maps) - n0
    mode = 2 * sel > n0
    votes = np.where(mode, est, n - est)
    return binom.sf(votes - 1, n, TAU)   # one-sided p-values, Holm would follow


def paper_pipeline(method, x, target, n0, n):
    """As in the paper's released code: batches of 8, maps to the host, numpy post-processing per map, all kept."""
    gen = torch.Generator(device=x.device).manual_seed(0)
    clean = method.attribute(x, target)[0].cpu().numpy()
    scale = float(np.percentile(clean, pixel_cert.SCALE_PERCENTILE)) or 1.0
    maps = []
    for start in range(0, n0 + n, PAPER_BATCH):
        b = min(PAPER_BATCH, n0 + n - start)
        noisy = x + SIGMA * torch.randn((b, *x.shape[1:]), generator=gen, device=x.device)
        maps.extend(method.attribute(noisy, target).cpu().numpy())
    return numpy_count(np.stack(maps), scale, n0)


def captum_base(key, model):
    from captum.attr import LRP, InputXGradient, IntegratedGradients, LayerGradCam, Saliency

    if key == "gradcam":
        layer_cam = LayerGradCam(model.module, U.get_layer(model.module, model.spec.cam_layer))
        return layer_cam, {"relu_attributions": True}
    base = {"grad": Saliency, "input_x_gradient": InputXGradient, "lrp": LRP,
            "integrated_gradients": IntegratedGradients}[key](model.module)
    return base, {"abs": True} if key == "grad" else {"n_steps": 20} if key == "integrated_gradients" else {}


def noise_tunnel(key, model, x, target, total, batch):
    from captum.attr import NoiseTunnel

    base, kwargs = captum_base(key, model)
    NoiseTunnel(base).attribute(x, nt_type="smoothgrad", nt_samples=total, nt_samples_batch_size=batch,
                                stdevs=SIGMA, target=target, **kwargs)


# ------------------------------------------------------------------------------------------------------ rows

def bench_method(key, model, x, target, n0, n, repeats, baselines):
    method = attributions.make_attribution(key, model)
    batch = sampling.auto_batch_size(x, x.device.type)
    run_pass = floor_pass(key, model, method, x)
    model_pass = floor_pass("grad", model, method, x)
    fns = {"certlib": lambda: certlib_run(method, x, target, n0, n, batch),
           "floor": lambda: floor(model, run_pass, x, target, n0 + n, batch),
           "fwd_bwd": lambda: floor(model, model_pass, x, target, n0 + n, batch)}
    notes = {}
    if baselines:
        fns["paper_pipeline_b8"] = lambda: paper_pipeline(method, x, target, n0, n)
        try:
            noise_tunnel(key, model, x, target, n0 + n, batch)
            maps = method.attribute(x + SIGMA * torch.randn((n0 + n, *x.shape[1:]), device=x.device), target)
            maps = maps.cpu().numpy()
            fns["captum_noise_tunnel"] = lambda: noise_tunnel(key, model, x, target, n0 + n, batch)
            fns["numpy_counting"] = lambda: numpy_count(maps, 1.0, n0)
        except Exception as exc:  # captum's LRP rejects some layers; say so instead of failing the whole bench
            notes["captum_noise_tunnel"] = f"not run: {type(exc).__name__}: {str(exc)[:200]}"
    timings = timed_all(fns, repeats)
    med = {name: t["median_s"] for name, t in timings.items()}
    row = {"method": key, "n0": n0, "n": n, "batch": batch, "timings": timings, "notes": notes,
           "ratio_vs_floor": med["certlib"] / med["floor"],
           "method_cost_vs_fwd_bwd": med["floor"] / med["fwd_bwd"]}
    if "paper_pipeline_b8" in med:
        row["speedup_vs_paper_pipeline"] = med["paper_pipeline_b8"] / med["certlib"]
    if "captum_noise_tunnel" in med:
        row["speedup_vs_noise_tunnel_plus_counting"] = (med["captum_noise_tunnel"] + med["numpy_counting"]) \
            / med["certlib"]
    return row


def timed_all(fns, repeats):
    from bench._common import side_by_side

    return side_by_side(fns, repeats=repeats, warmup=1)


def image_for(model, device):
    if model.spec.family == "digits":
        x = prepare_image(digit_gallery()[0].pixels, 1, (32, 32), True)
    else:  # a real photo from scikit-image, resized to the model's input (random weights: the content is moot)
        from certlib.data.images import photo_gallery

        spec = model.spec
        x = prepare_image(photo_gallery()[0].pixels, 3, spec.input_size, spec.flexible_size, spec.resize_size)
    return x.to(device)


def print_row(model_key, row):
    t = {k: v["median_s"] for k, v in row["timings"].items()}
    extra = "".join(f"  {k} {v:.2f}x" for k, v in row.items() if k.startswith("speedup"))
    print(f"{model_key:16s} {row['method']:21s} n0+n={row['n0'] + row['n']:5d}  certlib {t['certlib']:8.3f} s  "
          f"floor {t['floor']:8.3f} s  ratio {row['ratio_vs_floor']:.3f}  (method/fwd+bwd "
          f"{row['method_cost_vs_fwd_bwd']:.2f}){extra}", flush=True)


def _merged(previous: list[dict], new: list[dict]) -> list[dict]:
    """previous rows with the re-measured ones replaced in place (same model, method, device), then the new ones."""
    key = lambda r: (r["model"], r["method"], r["device"])  # noqa: E731
    fresh = {key(r): r for r in new}
    rows = [fresh.pop(key(r), r) for r in previous]
    return rows + [r for r in new if key(r) in fresh]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits_sigma0.25", "resnet50"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--n0", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", default="pixel_cert")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other rows already in bench/results/<out>.json; replace only those re-measured")
    args = parser.parse_args()
    results = []
    previous = []
    if args.merge and (RESULTS / f"{args.out}.json").exists():
        previous = json.loads((RESULTS / f"{args.out}.json").read_text())["rows"]
    for model_key in args.models:
        imagenet = model_key in models.IMAGENET_MODELS
        model = models.load_random_init(model_key, args.device) if imagenet \
            else models.load_model(model_key, args.device)
        x = image_for(model, args.device)
        target = int(model.predict_proba(x).argmax())
        small = imagenet and args.device == "cpu"
        for key in args.methods:
            sizes = CPU_RESNET["ig"] if small and key == "integrated_gradients" else CPU_RESNET if small \
                else {"n0": args.n0, "n": args.n}
            t0 = time.perf_counter()
            # IG costs 20 passes per copy: the minimum 5 repeats; the cheap rows get more against this VM's noise
            repeats = 5 if key == "integrated_gradients" or small else args.repeats
            row = bench_method(key, model, x, target, sizes["n0"], sizes["n"], repeats, baselines=not small)
            row.update(model=model_key, weights="random init" if imagenet else "bundled",
                       input_shape=list(x.shape), device=args.device, wall_s=time.perf_counter() - t0)
            results.append(row)
            print_row(model_key, row)
            rows = _merged(previous, results)
            # written after every row, so an interrupted run keeps what it measured
            path = write(args.out, {"sigma": SIGMA, "tau": TAU, "alpha": ALPHA, "k_percents": list(KS),
                                    "targets": {"ratio_vs_floor_max": 1.15, "speedup_vs_paper_pipeline_min": 3.0},
                                    "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
