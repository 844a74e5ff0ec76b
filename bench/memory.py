"""Peak memory of a pixel certification vs n (issue #8 c): streaming counts keep it flat.

    python bench/memory.py [--ns 100 1000 10000] [--method grad] [--device cpu]

Each (pipeline, n) runs in a fresh process: load the bundled model, warm up with one certification at the same batch
size (so the allocator and the libraries reach their steady state), reset the kernel's peak-RSS mark
(/proc/self/clear_refs), certify with n estimation samples, and report the peak resident memory above the warmed-up
baseline (on CUDA also torch's peak allocated bytes). Pipelines: certlib (`sample_topk_counts`, counts only) and the
paper's pipeline (bench/pixel_cert.py: every map kept, counted at the end), whose memory grows with n.
Writes bench/results/memory.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

N0 = 32
# glibc raises its mmap threshold each time a large block is freed, after which batch-sized tensors come from the
# heap, which fragments and grows slowly although nothing stays alive. The "+mmap" variant fixes the threshold, so
# large tensors live in mmap'd blocks that go back to the system when freed: its peak shows the live memory alone.
# It is a diagnostic, not a setting to use: fresh mmap'd pages must be faulted in on every batch (2x slower here).
MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"
MMAP_VALUE = "65536"


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(pipeline: str, n: int, method_key: str, device: str, batch: int) -> dict:
    import torch

    from bench.pixel_cert import certlib_run, image_for, paper_pipeline
    from certlib.attributions import methods as attributions
    from certlib.models import registry as models

    model = models.load_model("digits_sigma0.25", device)
    x = image_for(model, device)
    target = int(model.predict_proba(x).argmax())
    method = attributions.make_attribution(method_key, model)

    def run(count: int) -> None:
        if pipeline == "certlib":
            certlib_run(method, x, target, N0, count, batch)   # the paper's pipeline has its own batch of 8
        else:
            paper_pipeline(method, x, target, N0, count)

    run(batch)                                           # warm-up: one full batch through every stage
    baseline_kib = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")        # reset VmHWM (the peak RSS) to the current RSS
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    run(n)
    seconds = time.perf_counter() - t0
    out = {"pipeline": pipeline, "allocator": os.environ.get(MMAP_ENV) and f"{MMAP_ENV}={os.environ[MMAP_ENV]}"
           or "glibc default", "n": n, "n0": N0, "method": method_key, "device": device, "batch": batch,
           "seconds": seconds, "baseline_rss_mib": baseline_kib / 1024,
           "peak_rss_above_baseline_mib": (_status_kib("VmHWM") - baseline_kib) / 1024}
    if device == "cuda":
        out["cuda_peak_above_baseline_mib"] = (torch.cuda.max_memory_allocated() - cuda_base) / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--method", default="grad")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=64, help="certlib's batch (fixed so that n=100 fills it too)")
    parser.add_argument("--pipelines", nargs="+", default=["certlib", "certlib+mmap", "paper_pipeline_b8"])
    parser.add_argument("--child", nargs=2, metavar=("PIPELINE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.method, args.device, args.batch)))
        return
    from bench._common import write

    rows = []
    for pipeline in args.pipelines:
        for n in args.ns:
            env = {k: v for k, v in os.environ.items() if k != MMAP_ENV}
            if pipeline.endswith("+mmap"):
                env[MMAP_ENV] = MMAP_VALUE
            proc = subprocess.run([sys.executable, __file__, "--child", pipeline.removesuffix("+mmap"), str(n),
                                   "--method", args.method, "--device", args.device, "--batch", str(args.batch)],
                                  capture_output=True, text=True, check=True, cwd=ROOT, env=env)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            row["pipeline"] = pipeline
            print(f"{pipeline:18s} n={n:6d}  peak RSS above warmed-up baseline {row['peak_rss_above_baseline_mib']:8.1f}"
                  f" MiB  ({row['seconds']:.1f} s)" + (f"  CUDA peak {row['cuda_peak_above_baseline_mib']:.1f} MiB"
                                                      if "cuda_peak_above_baseline_mib" in row else ""), flush=True)
    spreads = {}
    for pipeline in args.pipelines:
        peaks = [r["peak_rss_above_baseline_mib"] for r in rows if r["pipeline"] == pipeline]
        spreads[pipeline] = max(peaks) - min(peaks)
        print(f"{pipeline}: peak memory varies by {spreads[pipeline]:.1f} MiB from n={min(args.ns)} to n={max(args.ns)}")
    payload = {"model": "digits_sigma0.25", "method": args.method, "n0": N0, "certlib_batch": args.batch,
               "rows": rows, "peak_spread_mib": spreads}
    print(f"wrote {write('memory' if args.device == 'cpu' else 'memory_gpu', payload)}")


if __name__ == "__main__":
    main()
