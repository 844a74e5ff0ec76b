"""The top-level library API (design §12 of the shared DESIGN.md): one call per certificate for any PyTorch model,
each returning a frozen result with `overlay()`, `figure()`, `summary()`, `save()`, `redecide()` and a notebook view.

    import certlib
    r = certlib.certify_pixels(model, "chelsea", method="gradcam", n=256)
    r.summary(); r.redecide(tau=0.9); r.save("run.npz"); certlib.load("run.npz")

Modules: `sources` (model, image and method from what the caller holds), `pixels`, `uniform`, `topk` (the three
certificates and their results), `store` (results on disk, no pickle), `common`.
"""
from certlib.api.pixels import PixelResult, certify_pixels
from certlib.api.store import load
from certlib.api.topk import TopKResult, certify_topk
from certlib.api.uniform import UniformResult, certify_uniform

__all__ = ["certify_pixels", "certify_uniform", "certify_topk", "load", "PixelResult", "UniformResult",
           "TopKResult"]
