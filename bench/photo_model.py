"""The bundled photo model (EfficientNet-Lite0) on this CPU: what each method costs per noisy copy, how well the cost
estimate shown before sampling predicts it, what a certificate on a photo takes end to end, and what 160² costs in
accuracy on the bundled photos.

    python bench/photo_model.py            # writes bench/results/photo_model.json (~6 min on 2 cores)

Per-copy cost: one timed call on a batch of 8 noisy copies (2 for RISE and Occlusion, whose copies take seconds),
after a warm-up call, side by side with the plain forward+backward pass of the same batch (the floor of any
gradient method). End to end: `sampling.sample_topk_counts` with the Certified pixels page's defaults
(σ 0.25, n0 + n = 32 + 256) on Chelsea, timed once each.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import write  # noqa: E402
from certlib.attributions import methods as attributions, cost
from certlib.data import images
from certlib.models import registry as models
from certlib.smoothing import sampling  # noqa: E402

EXPENSIVE = ("rise", "occlusion")


def _input(model: models.LoadedModel, key: str) -> torch.Tensor:
    spec = model.spec
    return images.prepare_image(images.get_image(key).pixels, 3, spec.input_size, spec.flexible_size,
                                spec.resize_size)


def per_copy_costs(model: models.LoadedModel, x: torch.Tensor, target: int) -> list[dict]:
    torch.manual_seed(0)
    rows = []
    xb8 = (x + 0.25 * torch.randn(8, *x.shape[1:])).clamp(0, 1)
    xg = xb8.clone().requires_grad_(True)
    model.module(xg)[:, target].sum().backward()            # warm-up
    start = time.perf_counter()
    xg = xb8.clone().requires_grad_(True)
    model.module(xg)[:, target].sum().backward()
    floor = (time.perf_counter() - start) / 8
    for method in attributions.METHODS:
        batch = xb8[:2] if method in EXPENSIVE else xb8
        attr = attributions.make_attribution(method, model)
        estimate = cost.seconds_per_copy(model, method, x, target)
        attr.attribute(batch[:1], target)                      # warm-up
        start = time.perf_counter()
        attr.attribute(batch, target)
        seconds = (time.perf_counter() - start) / batch.shape[0]
        rows.append({"method": method, "seconds_per_copy": seconds, "estimate_s": estimate,
                     "estimate_over_measured": estimate / seconds, "vs_fwd_bwd": seconds / floor,
                     "batch": int(batch.shape[0]), "default_certificate_s": seconds * 288})
        print(f"{model.spec.key:24s} {method:22s} {seconds * 1e3:9.0f} ms/copy  estimate {estimate * 1e3:9.0f} ms "
              f"({estimate / seconds:.2f}x)  {seconds / floor:7.1f}x fwd+bwd", flush=True)
    return [dict(r, fwd_bwd_s=floor) for r in rows]


def end_to_end(model: models.LoadedModel, x: torch.Tensor, target: int, method: str) -> dict:
    attribute, logits = attributions.for_target(model, method, target, 0)
    start = time.perf_counter()
    counts = sampling.sample_topk_counts(attribute, x, 0.25, 32, 256, seed=0, logits=logits)
    seconds = time.perf_counter() - start
    print(f"{model.spec.key:24s} {method:22s} default certificate (32 + 256 copies): {seconds:.1f} s", flush=True)
    return {"method": method, "n0": 32, "n": 256, "seconds": seconds, "batch_size": counts.batch_size
            if hasattr(counts, "batch_size") else None}


def photo_agreement() -> dict:
    """Top-1 of every bundled photo at 224² and 160² (the photos have no ground truth: agreement with 224², and
    whether the class still names the subject for the photos whose 224² class does)."""
    big, small = models.load_model("efficientnet_lite0"), models.load_model("efficientnet_lite0_160")
    names = big.spec.class_names
    rows = []
    for photo in images.PHOTOS:
        key = f"photo:{photo.name}"
        p_big = big.predict_proba(_input(big, key))[0]
        p_small = small.predict_proba(_input(small, key))[0]
        rows.append({"photo": photo.name, "top1_224": names[int(p_big.argmax())], "p_224": float(p_big.max()),
                     "top1_160": names[int(p_small.argmax())], "p_160": float(p_small.max()),
                     "same": int(p_big.argmax()) == int(p_small.argmax()), "names_the_subject": photo.names_the_subject})
    subject = [r for r in rows if r["names_the_subject"]]
    return {"rows": rows, "agree": sum(r["same"] for r in rows), "photos": len(rows),
            "agree_on_subject_photos": sum(r["same"] for r in subject), "subject_photos": len(subject)}


def main() -> None:
    result: dict = {"per_copy": {}, "end_to_end": {}, "threads": torch.get_num_threads()}
    for key in ("efficientnet_lite0", "efficientnet_lite0_160"):
        model = models.load_model(key)
        x = _input(model, "photo:chelsea")
        target = int(model.predict_proba(x)[0].argmax())
        result["per_copy"][key] = per_copy_costs(model, x, target)
        result["end_to_end"][key] = [end_to_end(model, x, target, m) for m in ("grad", "gradcam")]
    result["resolution"] = photo_agreement()
    r = result["resolution"]
    print(f"160² keeps the 224² top-1 on {r['agree']} of {r['photos']} photos "
          f"({r['agree_on_subject_photos']} of {r['subject_photos']} whose class names the subject)")
    print(write("photo_model", result))


if __name__ == "__main__":
    main()
