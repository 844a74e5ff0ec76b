"""Vision Transformers on this CPU: what GradCAM on the patch-token grid costs per noisy copy beside the plain
gradient, and (where pretrained ViT weights are on disk) a certified GradCAM overlay on the front door's photo.

    python bench/vit.py            # writes bench/results/vit.json (~3 min on 2 cores); docs/vit_certified.png
                                   # only where torchvision's vit_b_16 weights are on disk

Per pass: `attribute` on a batch of 8 noisy copies of a 224² photo (σ = 0.25), timed side by side (interleaved, CPU
seconds of this process, 3 repeats after a warm-up) for Gradient, GradCAM, GradCAM++ and LayerCAM, on torchvision's
ViT-B/16 and timm's distilled DeiT-Tiny with seeded random weights: the cost of a pass does not depend on what the
weights are. The CAM methods backpropagate only through the last block (to its first LayerNorm), the gradient
through all of them to the pixels. End to end: `sampling.sample_topk_counts` (n0 = 8, n = 64) on DeiT-Tiny.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import side_by_side, write  # noqa: E402
from certlib.attributions import methods as attributions, defaults
from certlib.data import images
from certlib.models import registry as models
from certlib.pixel import cert as pixel_cert
from certlib.smoothing import sampling  # noqa: E402

METHODS = ("grad", "gradcam", "gradcam_pp", "layercam")
SIGMA, BATCH = 0.25, 8
FIGURE = Path(__file__).resolve().parent.parent / "docs" / "vit_certified.png"


def photo(size: int = 224) -> torch.Tensor:
    return images.prepare_image(images.get_image(defaults.FRONT_DOOR_PHOTO).pixels, 3, (size, size), False,
                                round(size / 0.875))


def deit_tiny() -> models.LoadedModel:
    import timm

    torch.manual_seed(0)
    net = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=1000)
    cfg = net.pretrained_cfg
    return models.from_module(net, input_size=(224, 224), num_classes=1000, key="deit_tiny_random",
                              label="deit_tiny_distilled_patch16_224 (timm, random weights)",
                              normalize=(cfg["mean"], cfg["std"]))


def per_pass(model: models.LoadedModel, x: torch.Tensor) -> dict[str, dict]:
    noisy = (x + SIGMA * torch.randn((BATCH, *x.shape[1:]), generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    explainers = {m: attributions.make_attribution(m, model) for m in METHODS}
    timed = side_by_side({m: (lambda e=e: e.attribute(noisy, 0)) for m, e in explainers.items()}, repeats=3,
                         warmup=1, clock=time.process_time)
    rows = {m: {"cpu_s_per_pass": t["median_s"], "cpu_s_per_copy": t["median_s"] / BATCH, "raw_s": t["raw_s"],
                "vs_grad": t["median_s"] / timed["grad"]["median_s"]} for m, t in timed.items()}
    for m, r in rows.items():
        print(f"{model.spec.key:18s} {m:12s} {r['cpu_s_per_copy'] * 1e3:8.0f} CPU-ms/copy  "
              f"{r['vs_grad']:.2f}x Gradient", flush=True)
    return rows


def end_to_end(model: models.LoadedModel, x: torch.Tensor, method: str) -> dict:
    attribute, logits = attributions.for_target(model, method, 0)
    start = time.perf_counter()
    counts = sampling.sample_topk_counts(attribute, x, SIGMA, 8, 64, k_percents=(50, 25, 5), seed=0, logits=logits)
    seconds = time.perf_counter() - start
    cert = pixel_cert.decide(counts.votes_for_mode, counts.modes, counts.n, SIGMA, 0.75, 0.1)
    print(f"{model.spec.key:18s} {method:12s} n0 + n = 8 + 64: {seconds:.1f} s", flush=True)
    return {"method": method, "n0": 8, "n": 64, "wall_s": seconds, "alpha": 0.1,
            "certified_share": {str(k): float((cert.classes[i] != -1).mean())
                                for i, k in enumerate(counts.k_percents)}}


def pretrained_figure() -> dict:
    """A certified GradCAM overlay from torchvision's pretrained ViT-B/16, where its weights are on disk."""
    if models.find_imagenet_weights("vit_b_16") is None:
        reason = ("skipped: no pretrained ViT weights on disk (torchvision's "
                  f"{models.imagenet_weights_file('vit_b_16')} is in none of "
                  f"{[str(d) for d in models.weight_search_dirs()]})")
        print(reason)
        return {"status": reason}
    from PIL import Image

    from certlib.pixel.viz import certified_overlay

    model = models.load_model("vit_b_16")
    x = photo(model.spec.input_size[0])
    target = int(model.predict_proba(x)[0].argmax())
    attribute, logits = attributions.for_target(model, "gradcam", target)
    counts = sampling.sample_topk_counts(attribute, x, SIGMA, 8, 128, k_percents=(50, 25, 5), seed=0, logits=logits)
    cert = pixel_cert.decide(counts.votes_for_mode, counts.modes, counts.n, SIGMA, 0.75, 1e-3)
    base = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(certified_overlay(base, cert.classes, counts.k_percents)).save(FIGURE)
    return {"status": "done", "figure": str(FIGURE.name), "class": model.spec.class_names[target],
            "certified_share": {str(k): float((cert.classes[i] != -1).mean()) for i, k in enumerate(counts.k_percents)}}


def main() -> None:
    torch.manual_seed(0)
    x = photo()
    result: dict = {"sigma": SIGMA, "batch": BATCH, "threads": torch.get_num_threads(), "per_pass": {},
                    "end_to_end": {}}
    for model in (models.load_random_init("vit_b_16"), deit_tiny()):
        result["per_pass"][model.spec.key] = per_pass(model, x)
    small = deit_tiny()
    result["end_to_end"][small.spec.key] = [end_to_end(small, x, m) for m in ("grad", "gradcam")]
    result["pretrained"] = pretrained_figure()
    print(write("vit", result))


if __name__ == "__main__":
    main()
