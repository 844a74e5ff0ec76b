"""Which attribution method, n0 and σ the app should start with, per model family, measured (issue #26 item 1).

    python bench/defaults.py                 # every stage, resumable: rows already in the JSON are skipped
    python bench/defaults.py --stages photos,digits

Writes bench/results/defaults.json after every row. The decision is the Certified pixels page's: τ = 0.75,
α = 1e-3, Holm over pixels × K ∈ {5, 25, 50} %, the exact fixed-n test at the budget n = 256 (what the page's final
certificate targets), and for reference the anytime test on the same counts.

Stages (in this order, so a cut-short run keeps the rows that choose the defaults):
- timing:  seconds per noisy copy of every applicable method, photo model and digits model (certlib.attributions.cost);
           for RISE, Occlusion and Integrated Gradients this is all they get on photos unless a later stage runs
           them: an upper bound on their certified pixel tests per second (every test certified) shows whether
           they could beat the best measured method at all.
- photos:  the photo model on PHOTOS (photos whose recorded top-1 names the subject), every fast method, σ = 0.25;
           LRP and AblationCAM (7–12 GradCAM passes per copy) on two of them.
- digits:  the default digits model on DIGITS held-out digits, every method, σ ∈ {0.25, 0.5} (RISE, Occlusion and
           Integrated Gradients on two digits at σ = 0.25).
- speed:   CPU seconds per sampling pass of every method, interleaved in random order (see stage_speed).
- smoothed: per image and σ, the smoothed classifier's votes on the estimation copies (does it still see the
           explained class?), which the σ choice needs besides the certified share.
- sigma:   the photo σ trade-off: σ ∈ {0.12, 0.5} for the leading methods at 0.25 and the former default (Gradient).
- grids:   certified localization (GridPG) on one 2×2 photo grid, each of its 4 cells explained, a smaller n.
- slow:    Integrated Gradients on one photo (~5 min here).
- grids_lrp (optional, by name only): LRP on the photo grid.

Each sampled row serves both n0 = 8 and n0 = 32: copy j of a noise stream depends on (seed, stream, j) only and the
estimation copies do not depend on n0, so the n0 = 32 counts are the n0 = 8 counts plus selection copies 8..31,
counted apart (one sampling of 8 + 256 copies, then 24 more). Wall seconds per row are recorded, but the shared
machine's load moved them 2×; the rate that picks a default uses the CPU seconds of a pass (stage speed) times the
row's passes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RESULTS, machine, side_by_side  # noqa: E402
from certlib.pixel import anytime, cert as pixel_cert
from certlib.attributions import methods as attributions, cost
from certlib.smoothing import engine, sampling
from certlib.data import images
from certlib.runs import metrics
from certlib.models import registry as models  # noqa: E402
from certlib.attributions import defaults  # noqa: E402
from certlib.smoothing.noise import ESTIMATION, SELECTION, NoiseStream, gaussian_copies  # noqa: E402

PATH = RESULTS / "defaults.json"
TAU, ALPHA, LEVELS, CORRECTION = defaults.TAU, defaults.ALPHA, defaults.LEVELS, "holm"
N, N0S, SEED = defaults.N, defaults.N0S, 0
# Three of the six photos whose recorded top-1 names the subject (the two cores are shared with other work, which
# made a pass ~5× slower than on a quiet machine): the home button's cat, a confident prediction (espresso) and an
# unsure one (daisy).
PHOTOS = ("photo:chelsea", "photo:coffee", "photo:flower")
# LRP and AblationCAM cost 7–12 GradCAM passes per copy: run on the first two photos, for the method comparison. Their
# rate cannot reach the winner's even if every test were certified (`certlib.attributions.defaults.slow_bounds` checks it).
COSTLY = ("lrp", "ablationcam")
COSTLY_PHOTOS = PHOTOS[:2]
DIGITS = 10
SLOW_DIGITS = 2
PHOTO_SIGMA, PHOTO_SIGMA_GRID = defaults.REFERENCE_SIGMA, (0.12, 0.5)
DIGIT_SIGMAS = (0.25, 0.5)
# Hundreds of model passes per copy on photos (masks, windows, steps): see the timing stage.
SLOW = ("rise", "occlusion", "integrated_gradients")
LEADERS = 3                      # methods taken to the σ grid besides the former default
GRID_N, GRID_N0 = 128, 8         # photo grids are 448², four times a photo per copy: a smaller n (still certifies)
SLOW_PHOTO = "photo:chelsea"


# ------------------------------------------------------------------------------------------------ results file

def load() -> dict:
    if PATH.exists():
        return json.loads(PATH.read_text())
    return {"settings": {"tau": TAU, "alpha": ALPHA, "levels": list(LEVELS), "correction": CORRECTION, "n": N,
                         "n0": list(N0S), "seed": SEED, "photos": list(PHOTOS), "digits": DIGITS,
                         "grid": {"n": GRID_N, "n0": GRID_N0}},
            "timing": {}, "rows": [], "grid_rows": []}


def save(results: dict) -> None:
    """Atomic rewrite with the summary recomputed, so a run cut at any point leaves a valid file."""
    results["machine"] = machine()
    results["summary"] = defaults.summarise(results)
    tmp = PATH.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, PATH)


def row_key(r: dict) -> tuple:
    return (r["family"], r["model"], r["image"], r.get("cell"), r["method"], float(r["sigma"]), int(r["n0"]))


def have(results: dict, table: str, key: tuple) -> bool:
    return any(row_key(r) == key for r in results[table])


# ------------------------------------------------------------------------------------------------ sampling

def prepared(model: models.LoadedModel, key: str) -> tuple[torch.Tensor, images.ImageEntry]:
    entry = images.get_image(key)
    spec = model.spec
    return images.prepare_image(entry.pixels, spec.in_channels, spec.input_size, spec.flexible_size,
                                spec.resize_size), entry


def selection_ones(fn, x: torch.Tensor, counts: sampling.TopKCounts, stop: int) -> np.ndarray:
    """Top-K counts of selection copies counts.n0 .. stop − 1: what a run with n0 = stop adds to counts.n0's."""
    counter = sampling.TopKCounter(x, counts.k_percents, counts.normalisation, counts.scale)
    noise = engine.GaussianNoise(counts.sigma, NoiseStream(tuple(x.shape[1:]), counts.seed, SELECTION, x.device,
                                                          x.dtype))
    engine.stream(fn, x, noise, stop, [counter], counts.extra["batch_size"], first=counts.n0)
    return counter.ones.cpu().numpy()


def sample_n0s(fn, x: torch.Tensor, sigma: float, n: int, n0s: tuple[int, ...]):
    """{n0: (counts, seconds)} for every n0 of `n0s`, sharing the estimation copies: the smallest n0 is sampled
    with the n estimation copies, each larger one adds the selection copies between them."""
    ordered = sorted(n0s)
    t0 = time.perf_counter()
    counts = sampling.sample_topk_counts(fn, x, sigma, n0=ordered[0], n=n, k_percents=LEVELS, seed=SEED)
    seconds = time.perf_counter() - t0
    out = {ordered[0]: (counts, seconds)}
    for n0 in ordered[1:]:
        t0 = time.perf_counter()
        more = selection_ones(fn, x, counts, n0)
        seconds += time.perf_counter() - t0
        counts = replace(counts, n0=n0, selection_ones=counts.selection_ones + more)
        out[n0] = (counts, seconds)
    return out


def certified_per_level(classes: np.ndarray) -> list[int]:
    return [int(v) for v in (classes != pixel_cert.ABSTAIN).reshape(classes.shape[0], -1).sum(axis=1)]


def decided(counts: sampling.TopKCounts) -> dict:
    """Fixed-n and anytime certificates at the budget, as counts of certified pixels per level."""
    args = (counts.votes_for_mode, counts.modes, counts.n, counts.sigma, TAU, ALPHA, CORRECTION)
    fixed, running = pixel_cert.decide(*args), anytime.decide(*args)
    return {"fixed": fixed, "certified": certified_per_level(fixed.classes),
            "certified_top": [int(v) for v in (fixed.classes == 1).reshape(len(LEVELS), -1).sum(axis=1)],
            "anytime_certified": certified_per_level(running.classes), "radius": fixed.radius}


def faithfulness(model: models.LoadedModel, x: torch.Tensor, target: int, classes: np.ndarray) -> dict:
    """Deletion / insertion areas of the certified top-K pixels (blur replacement, docs/metrics.md)."""
    out = {}
    for kind in ("deletion", "insertion"):
        curve = metrics.faithfulness_curve(model.predict_proba, x, target, classes, LEVELS, kind)
        out[f"{kind}_auc"] = curve.auc
    return out


def base_row(family: str, model_key: str, image: str, method: str, sigma: float, target: int, x: torch.Tensor,
             cell: int | None = None) -> dict:
    return {"family": family, "model": model_key, "image": image, "cell": cell, "target": target, "method": method,
            "sigma": float(sigma), "pixels": int(np.prod(x.shape[-2:]))}


def run_rows(results: dict, table: str, model: models.LoadedModel, image: str, x: torch.Tensor, target: int,
             method: str, sigma: float, n: int, n0s: tuple[int, ...], cell: int | None = None,
             faithful: bool = True) -> None:
    """Sample one (image, method, σ) once and append one row per n0 (skipped when both are present)."""
    family = model.spec.family
    keys = [(family, model.spec.key, image, cell, method, float(sigma), n0) for n0 in n0s]
    if all(have(results, table, k) for k in keys):
        return
    fn = attributions.for_target(model, method, target, SEED)[0]
    for n0, (counts, seconds) in sample_n0s(fn, x, sigma, n, n0s).items():
        d = decided(counts)
        row = {**base_row(family, model.spec.key, image, method, sigma, target, x, cell), "n": n, "n0": n0,
               "passes": n0 + n, "seconds": seconds, "radius": d["radius"], "certified": d["certified"],
               "certified_top": d["certified_top"], "anytime_certified": d["anytime_certified"],
               "tests": int(np.prod(x.shape[-2:])) * len(LEVELS)}
        if faithful:
            row.update(faithfulness(model, x, target, d["fixed"].classes))
        if cell is not None:
            loc = metrics.certified_gridpg(d["fixed"].classes, LEVELS, cell)
            row.update(certified_gridpg=loc.score.tolist(), gridpg_clean=metrics.gridpg(counts.clean_attr, cell))
        results[table].append(row)
        share = sum(row["certified"]) / row["tests"]
        print(f"{table:9s} {model.spec.key:18s} {image:16s} cell={cell} {method:18s} σ={sigma:<5g} n0={n0:<3d} "
              f"certified {share:6.1%} in {seconds:6.1f} s", flush=True)
    save(results)


# ------------------------------------------------------------------------------------------------ stages

def usable(model: models.LoadedModel) -> list[str]:
    return [m for m in attributions.METHODS if attributions.unavailable_reason(m, model.spec) is None]


def stage_timing(results: dict) -> None:
    """Seconds per noisy copy (batch 8, or 2 for RISE / Occlusion as the photo bench does) of every method."""
    for key, image in ((models.photo_model_key(), PHOTOS[0]),
                       (models.default_model_key(), images.digit_gallery()[0].key)):
        model = models.load_model(key)
        x, _ = prepared(model, image)
        target = int(model.predict_proba(x)[0].argmax())
        table = results["timing"].setdefault(model.spec.family, {"model": key, "seconds_per_copy": {}})
        for method in usable(model):
            if method in table["seconds_per_copy"]:
                continue
            batch = 2 if method in ("rise", "occlusion") and model.spec.family != "digits" else 8
            table["seconds_per_copy"][method] = cost.seconds_per_copy(model, method, x, target, batch)
            print(f"timing {key:18s} {method:20s} {table['seconds_per_copy'][method]:.4f} s/copy", flush=True)
            save(results)
        table["reference_seconds_per_copy"] = reference_timing(key)
    save(results)


def reference_timing(model_key: str) -> dict[str, float]:
    """Seconds per copy measured by bench/photo_model.py on a quiet machine of this class (this bench shares two
    cores with other work, which can slow a single probe several-fold). The slow methods' bound uses the faster of
    the two timings, so it stays an upper bound on their rate."""
    path = RESULTS / "photo_model.json"
    if not path.exists():
        return {}
    rows = json.loads(path.read_text()).get("per_copy", {}).get(model_key, [])
    return {r["method"]: r["seconds_per_copy"] for r in rows}


def photo_target(model: models.LoadedModel, x: torch.Tensor) -> int:
    return int(model.predict_proba(x)[0].argmax())


def stage_photos(results: dict) -> None:
    model = models.load_model(models.photo_model_key())
    fast = [m for m in usable(model) if m not in SLOW and m not in COSTLY]
    for methods, photos in ((fast, PHOTOS), (COSTLY, COSTLY_PHOTOS)):
        for image in photos:              # photo outer, method inner: the shared machine's drifts hit every method
            x, _ = prepared(model, image)
            target = photo_target(model, x)
            for method in methods:
                run_rows(results, "rows", model, image, x, target, method, PHOTO_SIGMA, N, N0S)


def stage_digits(results: dict) -> None:
    model = models.load_model(models.default_model_key())
    for sigma in DIGIT_SIGMAS:
        for i, entry in enumerate(images.digit_gallery()[:DIGITS]):
            x, _ = prepared(model, entry.key)
            target = photo_target(model, x)
            for method in usable(model):
                # RISE, Occlusion, IG cost 40-250 GradCAM passes per copy on digits too (~4 min per digit here):
                # two digits at the reference σ place them; their bound (slow_bounds) rules them out as defaults.
                if method in SLOW and (i >= SLOW_DIGITS or sigma != PHOTO_SIGMA):
                    continue
                run_rows(results, "rows", model, entry.key, x, target, method, sigma, N, N0S)


SPEED_REPEATS = 9


def cpu_seconds(fns: dict, repeats: int) -> dict[str, list[float]]:
    """CPU seconds of this process per call of each fn, in a fresh random order per round (after one warm-up)."""
    timings = side_by_side(fns, repeats, warmup=1, clock=time.process_time)
    return {name: t["raw_s"] for name, t in timings.items()}


def stage_speed(results: dict) -> None:
    """Seconds per sampling pass of every method that has rows: one batch of 8 noisy copies attributed and counted
    into top-K masks (what engine.stream does per batch), the methods in a fresh random order in each of
    SPEED_REPEATS rounds, median per method, in CPU seconds of this single-threaded process. The rows' wall times
    moved 2× with the load of the shared machine (CAM 38–87 ms per pass), and so did wall timings side by side
    (CAM 28–62 ms), more than the gaps between the CAM-family methods; the CPU time a pass takes does not depend on
    what else runs. The default's rate uses these seconds (on a quiet machine, wall time ≈ CPU time)."""
    speed = results.setdefault("speed", {})
    for key, image in ((models.photo_model_key(), PHOTOS[0]),
                       (models.default_model_key(), images.digit_gallery()[0].key)):
        model = models.load_model(key)
        family = model.spec.family
        if speed.get(family, {}).get("clock") == "process_time":
            continue
        methods = [m for m in dict.fromkeys(r["method"] for r in results["rows"] if r["model"] == key)
                   if m not in SLOW]            # hundreds of passes per copy: their rows and timing say enough
        x, _ = prepared(model, image)
        target = photo_target(model, x)
        noisy = gaussian_copies(x, PHOTO_SIGMA, NoiseStream(tuple(x.shape[1:]), SEED, ESTIMATION), 0, 8)
        work = {}
        for method in methods:
            fn = attributions.for_target(model, method, target, SEED)[0]
            counter = sampling.TopKCounter(x, LEVELS, "rank", None)
            work[method] = (lambda f=fn, c=counter: c.update(noisy, f(noisy)))
        raw = cpu_seconds(work, SPEED_REPEATS)
        speed[family] = {"model": key, "batch": 8, "repeats": SPEED_REPEATS, "clock": "process_time",
                         "threads": torch.get_num_threads(),
                         "seconds_per_pass": {m: statistics.median(v) / 8 for m, v in raw.items()}, "raw_s": raw}
        for method, v in raw.items():
            print(f"speed {key:18s} {method:18s} {1000 * statistics.median(v) / 8:7.1f} ms CPU per pass "
                  f"(min {1000 * min(v) / 8:.1f}, max {1000 * max(v) / 8:.1f})", flush=True)
        save(results)


@torch.no_grad()
def smoothed_votes(model: models.LoadedModel, x: torch.Tensor, sigma: float, n: int) -> np.ndarray:
    """Class votes [classes] of the model on estimation copies 0..n−1 (the copies every row at σ attributes)."""
    stream = NoiseStream(tuple(x.shape[1:]), SEED, ESTIMATION, x.device, x.dtype)
    votes = np.zeros(model.spec.num_classes, dtype=np.int64)
    for start in range(0, n, 32):
        noisy = gaussian_copies(x, sigma, stream, start, min(n, start + 32))
        votes += np.bincount(model.module(noisy).argmax(dim=1).cpu().numpy(), minlength=len(votes))
    return votes


def stage_smoothed(results: dict) -> None:
    """Whether the smoothed classifier still picks the explained class at each σ: a larger σ that certifies as much
    but explains a class the model no longer sees in the noisy copies would not be a better default."""
    table = results.setdefault("smoothed", [])
    for key, images_, sigmas in ((models.photo_model_key(), PHOTOS, (*PHOTO_SIGMA_GRID, PHOTO_SIGMA)),
                                 (models.default_model_key(), [e.key for e in images.digit_gallery()[:DIGITS]],
                                  DIGIT_SIGMAS)):
        model = models.load_model(key)
        for image in images_:
            x, _ = prepared(model, image)
            target = photo_target(model, x)
            for sigma in sorted(sigmas):
                if any(r["model"] == key and r["image"] == image and r["sigma"] == sigma for r in table):
                    continue
                votes = smoothed_votes(model, x, sigma, N)
                table.append({"family": model.spec.family, "model": key, "image": image, "sigma": float(sigma),
                              "target": target, "n": N, "target_share": float(votes[target] / N),
                              "top_class": int(votes.argmax()), "top_share": float(votes.max() / N)})
                print(f"smoothed {key:18s} {image:16s} σ={sigma:<5g} target share {votes[target] / N:.2f}, "
                      f"top {model.spec.class_names[int(votes.argmax())]} {votes.max() / N:.2f}", flush=True)
        save(results)


def leaders(results: dict, family: str, count: int) -> list[str]:
    ranked = defaults.ranking(results, family, defaults.REFERENCE_SIGMA)
    return [r["method"] for r in ranked[:count]]


def stage_sigma(results: dict) -> None:
    model = models.load_model(models.photo_model_key())
    methods = list(dict.fromkeys([*leaders(results, model.spec.family, LEADERS), "grad"]))
    for sigma in PHOTO_SIGMA_GRID:
        for image in PHOTOS:
            x, _ = prepared(model, image)
            target = photo_target(model, x)
            for method in methods:
                run_rows(results, "rows", model, image, x, target, method, sigma, N, N0S)


def stage_grids(results: dict) -> None:
    model = models.load_model(models.photo_model_key())
    methods = list(dict.fromkeys([*leaders(results, model.spec.family, LEADERS), "grad"]))
    entry = images.photo_grid_gallery(1)[0]
    x, _ = prepared(model, entry.key)
    for method in methods:                # method outer: a cut-short run keeps whole grids of the leaders
        for cell, label in enumerate(entry.cell_labels):
            run_rows(results, "grid_rows", model, entry.key, x, int(label), method, PHOTO_SIGMA, GRID_N,
                     (GRID_N0,), cell=cell)


def stage_grids_lrp(results: dict) -> None:
    """LRP on the photo grid: the paper's best localizer, ~13 min here, so a stage of its own (not run by default)."""
    model = models.load_model(models.photo_model_key())
    entry = images.photo_grid_gallery(1)[0]
    x, _ = prepared(model, entry.key)
    for cell, label in enumerate(entry.cell_labels):
        run_rows(results, "grid_rows", model, entry.key, x, int(label), "lrp", PHOTO_SIGMA, GRID_N, (GRID_N0,),
                 cell=cell)


def stage_slow(results: dict) -> None:
    model = models.load_model(models.photo_model_key())
    x, _ = prepared(model, SLOW_PHOTO)
    run_rows(results, "rows", model, SLOW_PHOTO, x, photo_target(model, x), "integrated_gradients", PHOTO_SIGMA, N,
             N0S)


# ------------------------------------------------------------------------------------------------ the docs table

def _pct(v: float) -> str:
    return "—" if v is None or math.isnan(v) else f"{100 * v:.1f}"


def _ms(seconds: float) -> str:
    ms = 1000 * seconds
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.3g}"


def _per_level(rows: list[dict], field: str = "certified") -> list[float]:
    return [sum(r[field][i] for r in rows) / sum(r["pixels"] for r in rows) for i in range(len(LEVELS))]


def _mean(rows: list[dict], field: str) -> float:
    values = [r[field] for r in rows if field in r]
    return statistics.fmean(values) if values else math.nan


def method_table(results: dict, family: str, sigma: float) -> str:
    """Markdown: per method at σ, certified shares per level, both n0, the anytime test, speed and faithfulness."""
    ranked = defaults.ranking(results, family, sigma)
    speed = defaults._speed(results, family)
    lines = ["| method | family | images | certified % at K = 5 / 25 / 50 (n0 = 8) | of which top-K % | certified % "
             "n0 = 8 / 32 | anytime % at the budget | ms per pass | certified tests / s (n0 = 8) | deletion / "
             "insertion AUC |", "|---|---|---|---|---|---|---|---|---|---|"]
    for method in dict.fromkeys(e["method"] for e in ranked):
        e8 = next(e for e in ranked if e["method"] == method and e["n0"] == 8)
        e32 = next((e for e in ranked if e["method"] == method and e["n0"] == 32), None)
        rows = [r for r in defaults._rows(results, family, sigma) if r["method"] == method and r["n0"] == 8]
        info = attributions.METHODS[method]
        lines.append(
            f"| {info.label} | {info.family} | {e8['images']}{'' if e8['complete'] else ' *'} | "
            + " / ".join(_pct(v) for v in _per_level(rows)) + " | "
            + " / ".join(_pct(v) for v in _per_level(rows, "certified_top")) + " | "
            f"{_pct(e8['certified_share'])} / {_pct(e32['certified_share'] if e32 else math.nan)} | "
            f"{_pct(e8['anytime_share'])} | {_ms(speed[method])} | {e8['tests_per_second']:,.0f} | "
            f"{_mean(rows, 'deletion_auc'):.3f} / {_mean(rows, 'insertion_auc'):.3f} |")
    return "\n".join(lines)


def sigma_table(results: dict, family: str) -> str:
    """Markdown: certified share and tests per second against R for every method measured at several σ."""
    rows = defaults._rows(results, family)
    multi = [m for m in dict.fromkeys(r["method"] for r in rows) if len({r["sigma"] for r in rows
                                                                         if r["method"] == m}) > 1]
    lines = ["| method | σ | R = σ·Φ⁻¹(τ) | images | certified % (n0 = 8) | certified tests / s |",
             "|---|---|---|---|---|---|"]
    for method in multi:
        rates = {}
        for sigma in sorted({r["sigma"] for r in rows}):
            entry = next((e for e in defaults.ranking(results, family, sigma) if e["method"] == method
                          and e["n0"] == 8), None)
            rates[sigma] = entry
        for t in defaults.sigma_tradeoff(results, family, method, 8):
            e = rates.get(t["sigma"])
            lines.append(f"| {attributions.METHODS[method].label} | {t['sigma']:g} | {t['radius']:.3f} | "
                         f"{t['images']} | {_pct(t['certified_share'])} | "
                         f"{'—' if e is None else format(e['tests_per_second'], ',.0f')} |")
    return "\n".join(lines)


def grid_table(results: dict) -> str:
    """Markdown: certified localization on the photo grid per method."""
    lines = ["| method | cells | certified GridPG % at K = 5 / 25 / 50 | plain GridPG % | certified % at K = 5 / 25 / "
             "50 |", "|---|---|---|---|---|"]
    rows = results.get("grid_rows", [])
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        loc = [statistics.fmean(r["certified_gridpg"][i] for r in mine) for i in range(len(LEVELS))]
        lines.append(f"| {attributions.METHODS[method].label} | {len(mine)} | "
                     + " / ".join(_pct(v) for v in loc) + f" | {_pct(_mean(mine, 'gridpg_clean'))} | "
                     + " / ".join(_pct(v) for v in _per_level(mine)) + " |")
    return "\n".join(lines)


def bounds_table(results: dict, family: str) -> str:
    lines = ["| method | seconds per copy | at most certified tests / s (all certified, n0 = 8) | best measured |",
             "|---|---|---|---|"]
    best = next((e for e in defaults.ranking(results, family, PHOTO_SIGMA) if e["complete"]), None)
    for b in defaults.slow_bounds(results, family):
        lines.append(f"| {attributions.METHODS[b['method']].label} | {b['seconds_per_copy']:.3f} | "
                     f"{b['bound_tests_per_second']:,.0f} | {attributions.METHODS[best['method']].label} "
                     f"{best['tests_per_second']:,.0f} |")
    return "\n".join(lines)


def markdown(results: dict) -> str:
    parts = []
    for family in sorted({r["family"] for r in results["rows"]}):
        for sigma in sorted({r["sigma"] for r in defaults._rows(results, family)}):
            parts += [f"### {family}, σ = {sigma:g}", "", method_table(results, family, sigma), ""]
        parts += [f"### {family}: σ trade-off", "", sigma_table(results, family), "",
                  f"### {family}: methods not run on every image", "", bounds_table(results, family), ""]
    parts += ["### photo grid: certified localization", "", grid_table(results)]
    return "\n".join(parts)


STAGES = {"timing": stage_timing, "photos": stage_photos, "digits": stage_digits, "speed": stage_speed,
          "smoothed": stage_smoothed,
          "sigma": stage_sigma,
          "grids": stage_grids, "slow": stage_slow}
OPTIONAL = {"grids_lrp": stage_grids_lrp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated, of {list(STAGES) + list(OPTIONAL)} (default: all but the optional)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see main)")
    parser.add_argument("--table", action="store_true", help="print the docs tables from the JSON and exit")
    args = parser.parse_args()
    if args.table:
        print(markdown(load()))
        return
    # One thread: the two cores are shared with other work, and under that load two threads per process made a pass
    # 3–5× slower (OpenMP threads wait for each other); every method runs under the same setting.
    torch.set_num_threads(args.threads)
    results = load()
    for name in args.stages.split(","):
        began = time.perf_counter()
        {**STAGES, **OPTIONAL}[name](results)
        print(f"stage {name} done in {time.perf_counter() - began:.0f} s", flush=True)
    save(results)
    print(json.dumps(results["summary"]["defaults"], indent=1))
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
