"""What an attribution costs per noisy copy on this machine, measured before any sampling starts.

The pages and the CLI state the expected time of a certificate before they draw a single copy. A method's cost is
timed on this model, input size and device: a warm-up call on one copy, then one timed call on a small batch. RISE,
Occlusion and Integrated Gradients cost a count of model passes per copy (masks, windows, steps); they are timed on
a fraction of that count (`Attribution.cost_probe`) and scaled, so an estimate never costs more than a few gradients.
bench/photo_model.py compares these estimates with the measured per-copy cost of real runs.
"""
from __future__ import annotations

import threading
import time

import torch

from certlib.attributions import methods as attributions
from certlib.models.registry import LoadedModel

PROBE_BATCH = 4
_CACHE: dict[tuple, float] = {}
_LOCK = threading.Lock()


def seconds_per_copy(model: LoadedModel, method: str, x: torch.Tensor, target: int,
                     batch_size: int = PROBE_BATCH) -> float:
    """Estimated wall time of one attribution of `method` per noisy copy of x [1,C,H,W], at `batch_size` copies per
    call. Measured once per (model weights, device and precision, method, input shape, batch size) and process."""
    key = (model.weights_sha256, model.spec.key, model.compute_key, method, tuple(x.shape[1:]), int(batch_size))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    attr = attributions.make_attribution(method, model)
    probe, scale = attr.cost_probe(*x.shape[-2:])
    xb = x.to(model.device)
    probe.attribute(xb, target)                       # warm-up: lazy imports, RISE's masks, hooks, allocator
    batch = xb.repeat(max(1, int(batch_size)), 1, 1, 1)
    start = time.perf_counter()
    probe.attribute(batch, target)
    if model.device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / batch.shape[0] * scale
    with _LOCK:
        _CACHE[key] = seconds
    return seconds


def describe_seconds(seconds: float) -> str:
    """'25 s', '3.5 min', '2.1 h': an expected duration as people say it."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
