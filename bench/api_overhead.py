"""What the top-level call costs on top of the engine (issue #28: < 2%).

    python bench/api_overhead.py                  # writes bench/results/api_overhead.json (~3 min on 2 cores)
    python bench/api_overhead.py --n 56 --repeats 5

Side by side in one process, interleaved in a fresh random order each repeat (bench/_common.side_by_side), on the
bundled EfficientNet-Lite0, Gradient, Chelsea, n0 + n = 8 + 64 copies, top 5%, batch 8, the target given (top-1):
- engine: what a caller wires by hand today — `attributions.for_target`, `sampling.sample_topk_counts` with the
  prediction's logits, `pixel_cert.decide`, `prediction_cert.from_counts` — on a model and an input already prepared;
- api (registry key): `certlib.certify_pixels("efficientnet_lite0", "chelsea", ...)`: resolves the key (the loaded
  model is cached per process, as the app caches it), prepares the image, samples, decides, builds the result;
- api (module): the same network passed as a `torch.nn.Module` and the prepared input as a tensor: the call wraps the
  module on every call (`models.from_module`: weights hashed; one probe forward pass; eval mode set and restored).
The overhead is the per-repeat ratio api / engine − 1 of CPU seconds (the runs of a repeat are adjacent in time),
median reported; and, decomposed, (what the call spends besides sampling − what the engine spends besides it) /
the engine's median time, with the sampler answering from stored counts (the spread of whole runs on shared cores is
wider than 2%).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import side_by_side, write  # noqa: E402
import certlib  # noqa: E402
from certlib.attributions import methods as attributions
from certlib.data import images
from certlib.models import registry as models
from certlib.pixel import cert as pixel_cert, prediction_cert
from certlib.smoothing import sampling  # noqa: E402
from certlib.api import sources  # noqa: E402

KEY, PHOTO, METHOD, SIGMA, BATCH, KS = models.photo_model_key(), "chelsea", "grad", 0.25, 8, (5.0,)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--n0", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    model = sources.registry_model(KEY, "cpu")             # the API's own cache: loaded once, as in the engine run
    spec = model.spec
    x = images.prepare_image(images.get_image(f"photo:{PHOTO}").pixels, spec.in_channels, spec.input_size,
                             spec.flexible_size, spec.resize_size)
    target = int(model.predict_proba(x).argmax())
    common = dict(n=args.n, n0=args.n0, k_percents=KS, target=target, batch_size=BATCH, progress=False,
                  device="cpu", method=METHOD, sigma=SIGMA)
    results = {}

    def engine():
        attribute, logits = attributions.for_target(model, METHOD, target, 0)
        counts = sampling.sample_topk_counts(attribute, x, SIGMA, args.n0, args.n, KS, seed=0, batch_size=BATCH,
                                             logits=logits)
        results["engine"] = pixel_cert.decide(counts.votes_for_mode, counts.modes, counts.n, SIGMA, 0.75, 1e-3)
        prediction_cert.from_counts(counts, 1e-3)

    def api_key():
        results["api_key"] = certlib.certify_pixels(KEY, PHOTO, **common).certificate

    def api_module():
        results["api_module"] = certlib.certify_pixels(model.module, x, **common).certificate

    # CPU seconds of this process (all its threads): other jobs on the shared cores do not inflate them as they do
    # wall time (measured: wall times of one variant spread from 3 s to 56 s on a loaded 2-core machine)
    timings = side_by_side({"engine": engine, "api_key": api_key, "api_module": api_module}, repeats=args.repeats,
                           clock=time.process_time)
    fixed = _fixed_costs({"engine": engine, "api_key": api_key, "api_module": api_module}, results)
    same = all((results[k].classes == results["engine"].classes).all() for k in ("api_key", "api_module"))
    overhead = {k: statistics.median(a / e - 1.0 for a, e in zip(timings[k]["raw_s"], timings["engine"]["raw_s"]))
                for k in ("api_key", "api_module")}
    engine_s = timings["engine"]["median_s"]
    decomposed = {k: (fixed[k]["median_s"] - fixed["engine"]["median_s"]) / engine_s for k in ("api_key", "api_module")}
    payload = {"config": {"model": KEY, "image": PHOTO, "method": METHOD, "n": args.n, "n0": args.n0,
                          "batch_size": BATCH, "k_percents": KS, "repeats": args.repeats,
                          "clock": "process_time (CPU seconds of this process)"},
               "timings": timings, "overhead_median": overhead, "same_certificate": bool(same),
               "fixed_costs_without_sampling": fixed, "overhead_decomposed": decomposed}
    path = write("api_overhead", payload)
    for k, v in overhead.items():
        print(f"{k}: {timings[k]['median_s']:.2f} CPU s vs engine {timings['engine']['median_s']:.2f} s, "
              f"overhead {v:+.2%}")
    for k, v in decomposed.items():
        print(f"{k}: besides sampling {fixed[k]['median_s'] * 1e3:.1f} ms vs the engine's "
              f"{fixed['engine']['median_s'] * 1e3:.1f} ms: overhead {v:+.3%} of the engine's {engine_s:.2f} CPU s")
    print(f"same certificate: {same}; wrote {path}")


def _fixed_costs(fns: dict, results: dict) -> dict[str, dict]:
    """Each variant with `sampling.sample_topk_counts` answering from the counts it returned last (the same call with
    the same arguments in every variant, as `same_certificate` checks): what each spends besides sampling, timed
    precisely (milliseconds, 20 repeats) where the full runs' spread on shared cores hides a 2% difference."""
    real = sampling.sample_topk_counts
    memo = {}

    def replay(*args, **kwargs):
        if "counts" not in memo:
            memo["counts"] = real(*args, **kwargs)
        return memo["counts"]

    sampling.sample_topk_counts = replay
    try:
        return side_by_side(fns, repeats=20, warmup=1, clock=time.process_time)
    finally:
        sampling.sample_topk_counts = real


if __name__ == "__main__":
    main()
