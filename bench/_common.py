"""Shared helpers for bench scripts: timing with warm-up and repeats, machine info, JSON results."""
from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Median and spread of `repeats` wall-clock runs after `warmup` runs; raw timings kept."""
    return side_by_side({"fn": fn}, repeats=repeats, warmup=warmup)["fn"]


def machine() -> dict:
    import captum
    import zennit  # noqa: F401
    from importlib.metadata import version

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "captum": captum.__version__,
            "zennit": version("zennit"), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def side_by_side(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, dict]:
    """Time several variants interleaved, in a fresh random order each repeat (B A C, C B A, ...), so that drifts
    of a shared machine and order effects (e.g. a variant that always follows numpy's busy-waiting threads) hit them
    alike; per variant the same fields as `timed`. `clock`: wall time by default; time.process_time measures this
    process's CPU seconds, which other jobs on shared cores do not inflate."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    raw: dict[str, list[float]] = {name: [] for name in fns}
    order = random.Random(0)
    for _ in range(repeats):
        names = list(fns)
        order.shuffle(names)
        for name in names:
            fn = fns[name]
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = clock()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            raw[name].append(clock() - t0)
    return {name: {"median_s": statistics.median(r), "min_s": min(r), "max_s": max(r), "raw_s": r}
            for name, r in raw.items()}
