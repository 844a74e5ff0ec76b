"""CPU passes: certlib's photo sampling against a plain eager NCHW loop, and what channels_last and bf16 buy (#26 7).

    python bench/cpu_layout.py                 # writes bench/results/cpu_layout.json (~5 min on 2 idle cores)
    python bench/cpu_layout.py --threads 1 --repeats 5 --layouts efficientnet_lite0

Side by side in one process, interleaved in a fresh random order each repeat (bench/_common.side_by_side):
- certlib: the default fp32 photo sampling path: `sampling.sample_topk_counts` of Gradient on Chelsea with the
  bundled EfficientNet-Lite0 as `models.load_model` gives it (channels_last on the CPU, certlib.models.precision), batch 8,
  n0 + n = 8 + 56 copies, with the prediction's votes: seeded 64-bit noise, the attribution, top-K% counts at the
  default K ladder, the clean map and the class probe included;
- plain: the same 64 passes written in plain torch, the model as it was before (NCHW weights and inputs, fp32): noise
  from torch.randn, forward, backward to the input. Goal: certlib / plain <= 0.9 (issue #26: 1.15 before).
The ratio is taken per repeat (the two runs are adjacent in time) and its median reported, since this machine is
shared. Also per architecture: forward + backward to the input in NCHW, channels_last, and bf16 autocast with
channels_last where the CPU has native bf16 (AMX or AVX-512-BF16): the figures behind precision.CPU_CHANNELS_LAST.
And the engine's own costs per copy: the noise chunk, the top-K% counting, the attribution call around the pass.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import side_by_side, write  # noqa: E402
from certlib.attributions import methods as attributions
from certlib.data import images
from certlib.models import registry as models, precision
from certlib.smoothing import sampling, topk  # noqa: E402
from certlib.smoothing.noise import CHUNK, ESTIMATION, NoiseStream  # noqa: E402

N0, N, BATCH, SIGMA = 8, 56, 8, 0.25
# architecture -> (model key, batch) for the layout table; ResNet with seeded random weights (timing only)
LAYOUT_MODELS = {"efficientnet_lite0": ("efficientnet_lite", 8), "digits_sigma0.25": ("cnn", 32),
                 "resnet18": ("resnet", 8)}


def _load(key: str) -> models.LoadedModel:
    return models.load_random_init(key) if key in models.IMAGENET_MODELS else models.load_model(key)


def _nchw(module: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(module).to(memory_format=torch.contiguous_format)


def _input(model: models.LoadedModel) -> torch.Tensor:
    spec = model.spec
    if spec.family == "digits":
        return images.prepare_image(images.digit_gallery()[3].pixels, 1, spec.input_size, True)
    return images.prepare_image(images.get_image("photo:chelsea").pixels, 3, spec.input_size, spec.flexible_size,
                                spec.resize_size)


def _pass(module, x, target, fmt, bf16=False):
    """Forward + backward to the input of one noisy batch in memory format `fmt` (optionally under bf16)."""
    xb = (x + SIGMA * torch.randn(x.shape)).contiguous(memory_format=fmt).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        score = module(xb)[:, target].sum()
    torch.autograd.grad(score, xb)


# ------------------------------------------------------------------------------------------------ the goal

def engine_vs_plain(repeats: int) -> dict:
    model = models.load_model("efficientnet_lite0")
    plain_module = _nchw(model.module)
    x = _input(model)
    target = int(model.predict_proba(x)[0].argmax())
    attribute, logits = attributions.for_target(model, "grad", target, 0)
    batch = x.expand(BATCH, *x.shape[1:])

    def certlib_run():
        sampling.sample_topk_counts(attribute, x, SIGMA, N0, N, seed=0, batch_size=BATCH, logits=logits)

    def plain_run():
        for _ in range((N0 + N) // BATCH):
            _pass(plain_module, batch, target, torch.contiguous_format)

    runs = side_by_side({"certlib": certlib_run, "plain": plain_run}, repeats=repeats)
    ratios = [c / p for c, p in zip(runs["certlib"]["raw_s"], runs["plain"]["raw_s"])]
    copies = N0 + N
    out = {name: {"ms_per_copy_median": r["median_s"] / copies * 1e3, "ms_per_copy_min": r["min_s"] / copies * 1e3,
                  "raw_s": r["raw_s"]} for name, r in runs.items()}
    out.update(ratio_median=statistics.median(ratios), ratio_of_mins=runs["certlib"]["min_s"] / runs["plain"]["min_s"],
               ratios=ratios, channels_last=precision.is_channels_last(model.module), copies=copies, batch=BATCH,
               goal_ratio=0.9, meets_goal=statistics.median(ratios) <= 0.9)
    print(f"certlib {out['certlib']['ms_per_copy_median']:.1f} ms/copy, plain NCHW {out['plain']['ms_per_copy_median']:.1f}"
          f" ms/copy: ratio {out['ratio_median']:.3f} (of mins {out['ratio_of_mins']:.3f})", flush=True)
    return out


def engine_costs(repeats: int) -> dict:
    """What the engine adds around the pass, per copy: noise (one chunk of CHUNK copies), top-K% counting of a
    batch of maps, and the attribution call against the bare pass it wraps."""
    model = models.load_model("efficientnet_lite0")
    x = _input(model)
    target = int(model.predict_proba(x)[0].argmax())
    attribute, _ = attributions.for_target(model, "grad", target, 0)
    noisy = x + SIGMA * torch.randn((BATCH, *x.shape[1:]))
    maps = attribute(noisy)
    fns = {
        "noise_chunk": lambda: NoiseStream(tuple(x.shape[1:]), 0, ESTIMATION).standard_normal(0, CHUNK),
        "torch_randn_chunk": lambda: torch.randn((CHUNK, *x.shape[1:])),
        "topk_counts": lambda: topk.top_k_masks(maps, sampling.DEFAULT_K_PERCENTS).sum(dim=1, dtype=torch.int32),
        "attribute": lambda: attribute(noisy),
        "bare_pass": lambda: _pass(model.module, x.expand(BATCH, *x.shape[1:]), target, torch.contiguous_format),
    }
    per = {"noise_chunk": CHUNK, "torch_randn_chunk": CHUNK}
    runs = side_by_side(fns, repeats=repeats)
    out = {name: r["median_s"] / per.get(name, BATCH) * 1e3 for name, r in runs.items()}
    print("engine costs, ms per copy: " + ", ".join(f"{k} {v:.2f}" for k, v in out.items()), flush=True)
    return out


# ------------------------------------------------------------------------------------------------ layouts

def layouts(keys: list[str], repeats: int) -> dict:
    bf16 = precision.cpu_bf16_reason() is None
    rows = {}
    for key in keys:
        arch, batch = LAYOUT_MODELS[key]
        model = _load(key)
        nchw = _nchw(model.module)
        cl = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
        x = _input(model).expand(batch, -1, -1, -1)
        fns = {"nchw": lambda: _pass(nchw, x, 1, torch.contiguous_format),
               "channels_last": lambda: _pass(cl, x, 1, torch.channels_last)}
        if bf16:
            fns["bf16_channels_last"] = lambda: _pass(cl, x, 1, torch.channels_last, bf16=True)
        runs = side_by_side(fns, repeats=repeats)
        ms = {name: r["min_s"] / batch * 1e3 for name, r in runs.items()}
        rows[key] = {"arch": arch, "batch": batch, "ms_per_copy_min": ms,
                     "ms_per_copy_median": {name: r["median_s"] / batch * 1e3 for name, r in runs.items()},
                     "channels_last_over_nchw": ms["channels_last"] / ms["nchw"],
                     "in_table": arch in precision.CPU_CHANNELS_LAST}
        print(f"{key:20s} " + ", ".join(f"{k} {v:.1f}" for k, v in ms.items()) + " ms/copy (min)", flush=True)
    return {"bf16_native": bf16, "bf16_reason": precision.cpu_bf16_reason(), "models": rows}


def _load_average() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--layouts", nargs="*", default=list(LAYOUT_MODELS), choices=list(LAYOUT_MODELS))
    p.add_argument("--out", default="cpu_layout")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    load_before = _load_average()
    result = {"goal": engine_vs_plain(args.repeats), "engine_costs_ms_per_copy": engine_costs(args.repeats),
              "layouts": layouts(args.layouts, max(3, args.repeats)), "threads": torch.get_num_threads(),
              "load_average_before_after": [load_before, _load_average()],
              "cpu_bf16_flags": sorted((precision._cpu_flags() or set()) & set(precision.CPU_BF16_FLAGS)),
              "seconds": time.perf_counter() - start}
    print(f"wrote {write(args.out, result)}")


if __name__ == "__main__":
    main()
