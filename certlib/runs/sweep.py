"""Methods × images × σ sweeps for the metrics dashboard: plan the runs, sample the missing ones into the store,
and turn stored runs into metric rows for any decision (τ, α, K levels, correction).

Shared by the batch runner (`python -m certlib run`, certlib/runs/cli.py) and the metrics page (ui/metrics_runs.py):
the same configs give the same store keys, so what one computed the other shows.

Targets: a 2×2 grid is explained once per cell, for that cell's class (localization needs it); any other image is
explained for `target` when given, else for the model's prediction.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch

from certlib.attributions import methods as attributions, cost
from certlib.data import image_folder, images
from certlib.runs import metrics
from certlib.pixel import cert as pixel_cert, radius as pixel_radius, progressive
from certlib.smoothing import sampling
from certlib import validate
from certlib.errors import CertlibError
from certlib.data.images import ImageEntry
from certlib.models.registry import LoadedModel, validate_target
from certlib.runs.store import RunConfig, Store, StoredRun

IMAGE_SETS = ("digits", "grids", "photos", "photo_grids")
DEFAULT_LEVELS = (5.0, 25.0, 50.0)
SweepProgress = Callable[[int, int, "PlannedRun"], None]     # (samples done, samples total, run being sampled)


@dataclass(frozen=True)
class PlannedRun:
    """One (image, target, method, σ) run: its store config and the prepared input it samples around — held (bundled
    sets) or read again when the run executes (folders: `loader`, checked against the planned input's hash)."""

    config: RunConfig
    held: torch.Tensor | None  # [1,C,H,W] on the CPU, or None when `loader` reads it
    image_label: str
    loader: Callable[[], torch.Tensor] | None = field(default=None, compare=False)

    @property
    def x(self) -> torch.Tensor:
        if self.held is not None:
            return self.held
        x = self.loader()
        if images.pixel_sha256(x.numpy()) != self.config.input_sha256:
            raise CertlibError(f"{self.image_label} changed since the sweep was planned")
        return x

    @property
    def samples(self) -> int:
        return self.config.n0 + self.config.n


@dataclass(frozen=True)
class Decision:
    """The cheap stage: how stored counts are decided and which replacement faithfulness uses."""

    tau: float = 0.75
    alpha: float = 1e-3
    levels: tuple[float, ...] = DEFAULT_LEVELS
    correction: str = "holm"
    replacement: str = "blur"

    def as_dict(self) -> dict:
        return {"tau": self.tau, "alpha": self.alpha, "levels": list(self.levels), "correction": self.correction,
                "replacement": self.replacement}


# ------------------------------------------------------------------------------------------------ planning

def image_set(name: str, limit: int | None = None) -> list[ImageEntry]:
    """A bundled image set, the first `limit` of it: "digits" (held-out), "grids" (2×2 digit grids, four distinct
    classes), "photos" (every photo that ships offline) or "photo_grids" (2×2 grids of photos, 448×448)."""
    if name not in IMAGE_SETS:
        raise CertlibError(f"image set must be one of {IMAGE_SETS}, got {name!r}")
    if limit is not None:
        validate.count("limit", limit, high=100_000)
    if name == "grids":
        return images.grid_gallery(max(images.DEFAULT_GRIDS, limit or 0))[:limit]
    if name == "photo_grids":
        return images.photo_grid_gallery(max(images.DEFAULT_PHOTO_GRIDS, limit or 0))[:limit]
    if name == "photos":
        return images.photo_gallery()[:limit]
    return images.digit_gallery()[:limit]


def method_params(method: str) -> tuple[tuple[str, object], ...]:
    """The method's parameters as used (its defaults), for the store key."""
    return tuple(sorted((k, v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
                        for k, v in attributions.method_params(method).items()))


def prepared_input(model: LoadedModel, entry: ImageEntry) -> torch.Tensor:
    spec = model.spec
    return images.prepare_image(entry.pixels, spec.in_channels, spec.input_size, spec.flexible_size,
                                spec.resize_size)


def _targets(model: LoadedModel, entry: ImageEntry, x: torch.Tensor, target: int | None) -> list[tuple[int, int | None]]:
    if entry.cell_labels is not None:     # a grid made for another model family names classes this one lacks
        return [(validate_target(int(c), model.spec.num_classes), cell) for cell, c in enumerate(entry.cell_labels)]
    if target is None:
        target = int(model.predict_proba(x)[0].argmax())
    return [(int(target), None)]


def plan(model: LoadedModel, entries: Sequence[ImageEntry], methods: Sequence[str], sigmas: Sequence[float],
         n: int, n0: int = 32, seed: int = 0, k_percents: Sequence[float] = sampling.DEFAULT_K_PERCENTS,
         target: int | None = None, normalisation: str = pixel_cert.DEFAULT_NORMALISATION,
         stop_rule: progressive.StopRule | None = None, skipped: list | None = None,
         compute_key: str | None = None) -> list[PlannedRun]:
    """Every run of the sweep, method-major (all images of one method, then the next). With `stop_rule`, each run
    samples progressively with the anytime-valid test and stops once the rule has every pixel decided; n is then
    the budget n_max. `entries` are bundled ImageEntry objects or image_folder.FolderImage files; folder files that
    fail are listed in `skipped` (image_folder.Skipped) and left out. `compute_key` (default the model's) is where the
    runs will compute, when that is not where `model` lives (Ray workers with GPUs, planned on a CPU driver)."""
    if not sigmas or not methods or not entries:
        raise CertlibError("a sweep needs at least one method, one image and one σ")
    normalisation = pixel_cert.check_normalisation(normalisation)
    test, rule = ("fixed", None) if stop_rule is None else \
        ("anytime", stop_rule.as_key())
    if target is not None:
        target = validate_target(target, model.spec.num_classes)
    for sigma in sigmas:   # every σ up front, not halfway through a long sweep
        ks = sampling.check_counts_config(sigma, n0, n, k_percents)
    for m in methods:
        reason = attributions.unavailable_reason(m, model.spec)
        if reason is not None:
            raise CertlibError(f"method {m!r}: {reason}")
    prepared = [p for p in (_prepare(model, source, target, skipped) for source in entries) if p is not None]
    runs = []
    for method in methods:
        params = method_params(method)
        for sigma in sigmas:
            for entry_key, label, x_sha, held, loader, pairs in prepared:
                for t, cell in pairs:
                    config = RunConfig(model.spec.key, model.weights_sha256, entry_key, x_sha, t, method, params,
                                       float(sigma), int(n), int(n0), int(seed), ks,
                                       compute_key or model.compute_key, cell=cell,
                                       normalisation=normalisation, test=test, stop_rule=rule)
                    runs.append(PlannedRun(config, held, label, loader))
    return runs


def _prepare(model: LoadedModel, source, target: int | None, skipped: list | None):
    """(key, label, input hash, held input or None, loader or None, [(target, cell)]) of a bundled ImageEntry or a
    FolderImage; a folder image that fails its checks (or names a class the model lacks) is appended to `skipped`
    (when given: else it raises) and left out."""
    if isinstance(source, ImageEntry):
        x = prepared_input(model, source)
        return source.key, source.label, images.pixel_sha256(x.numpy()), x, None, _targets(model, source, x, target)
    try:
        x = prepared_input(model, source.load())
        t = target                     # an explicit target wins over the folder's labels
        if t is None and source.label is not None:
            t = image_folder.resolve_label(source.label, model.spec.class_names, source.relpath)
        pairs = [(int(t), None)] if t is not None else [(int(model.predict_proba(x)[0].argmax()), None)]
    except CertlibError as exc:
        if skipped is None:
            raise
        skipped.append(image_folder.Skipped(source.relpath, str(exc)))
        return None
    # the pixels are not held: 10,000s of ImageNet inputs would not fit; the run reads the file again
    return source.key, source.relpath, images.pixel_sha256(x.numpy()), None, \
        (lambda: prepared_input(model, source.load())), pairs


# ------------------------------------------------------------------------------------------------ sampling

def attribution_fn(model: LoadedModel, method: str, target: int, seed: int):
    return attributions.for_target(model, method, target, seed)[0]


def seconds_per_copy(model: LoadedModel, method: str, x: torch.Tensor, target: int, batch_size: int = 4) -> float:
    """Wall time of one attribution per noisy copy (certlib.attributions.cost: timed on a small batch, costly methods on a
    fraction of their passes)."""
    return cost.seconds_per_copy(model, method, x, target, batch_size)


def estimate_seconds(model: LoadedModel, runs: Sequence[PlannedRun], batch_size: int = 8) -> tuple[float, dict]:
    """(total seconds, {method: seconds per copy}) for sampling `runs`, timing one batch per method."""
    per_copy: dict[str, float] = {}
    total = 0.0
    for r in runs:
        m = r.config.method
        if m not in per_copy:
            per_copy[m] = seconds_per_copy(model, m, r.x, r.config.target, min(batch_size, 8))
        total += per_copy[m] * (r.samples + 1)
    return total, per_copy


def sample_run(model: LoadedModel, run: PlannedRun, batch_size: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> sampling.TopKCounts:
    c = run.config
    fn, logits = attributions.for_target(model, c.method, c.target, c.seed)
    if c.test == "anytime":
        frames = progressive.certify_progressively(
            fn, run.x.to(model.device), c.sigma, progressive.StopRule(*c.stop_rule), n_max=c.n, n0=c.n0,
            k_percents=c.k_percents, seed=c.seed, logits=logits, normalisation=c.normalisation,
            batch_size=batch_size, progress=None if progress is None else (lambda d, t: progress(c.n0 + d, c.n0 + t)))
        for frame in frames:
            pass
        return frame.counts
    # Through the module attribute, so tests can count sampler calls.
    return sampling.sample_topk_counts(fn, run.x.to(model.device), c.sigma, c.n0, c.n, c.k_percents, seed=c.seed,
                                       batch_size=batch_size, progress=progress, normalisation=c.normalisation,
                                       logits=logits)


def run_missing(store: Store, model: LoadedModel, runs: Sequence[PlannedRun], batch_size: int | None = None,
                progress: SweepProgress | None = None) -> int:
    """Sample every run not yet in the store, committing each as soon as it is done; returns how many ran.
    Interrupting (KeyboardInterrupt, a Streamlit rerun) loses only the run in flight."""
    todo = missing(store, runs)
    total = sum(r.samples for r in todo)
    done = 0
    for r in todo:
        start = time.perf_counter()
        loaded = replace(r, held=r.x)       # a folder image is read and checked once per run, not per use
        counts = sample_run(model, loaded, batch_size,
                            None if progress is None else (lambda d, t, r=r, base=done: progress(base + d, total, r)))
        store.put(r.config, counts, loaded.held.numpy(), time.perf_counter() - start)
        done += r.samples
    return len(todo)


def missing(store: Store, runs: Sequence[PlannedRun]) -> list[PlannedRun]:
    """The runs of the plan that are not in the store yet (one query)."""
    stored = store.stored_keys([r.config for r in runs])
    return [r for r in runs if r.config.key not in stored]


# ------------------------------------------------------------------------------------------------ metrics

@dataclass(frozen=True)
class RunMetrics:
    rows: list[dict]           # one per K level
    curves: list[dict]         # deletion and insertion curves (budget, probability) of this run


FAITH_KINDS = ("deletion", "insertion")
PREDICT_BATCH = 256


def _faith_params(decision: Decision) -> dict:
    # The blur width is part of what "blur" means: a cached curve of another width is never served.
    return {"metric": "faithfulness", "blur_sigma_fraction": metrics.BLUR_SIGMA_FRACTION, **decision.as_dict()}


def _decide(config: RunConfig, stored: StoredRun,
            decision: Decision) -> tuple[tuple[float, ...], pixel_cert.PixelCertificate]:
    """The run's certificate at `decision`, by the test it was sampled for (an anytime run's counts stopped at a
    data-dependent n, where only the anytime-valid test is valid)."""
    levels = tuple(sorted(float(k) for k in decision.levels))
    sub = stored.counts.select_levels(levels)
    return levels, progressive.decide(sub, config.test, decision.tau, decision.alpha, decision.correction)


def faithfulness_values(store: Store, items: Sequence[tuple[RunConfig, StoredRun]], decision: Decision,
                        prob_fn: metrics.ProbabilityFn | None) -> list[dict | None]:
    """Deletion and insertion curves of each (config, stored run) at `decision`: from the store's cache, else
    computed (the images of all uncached runs go through prob_fn in shared batches) and cached; None without
    prob_fn when not cached."""
    params = _faith_params(decision)
    values: list[dict | None] = [store.get_derived(c, params) for c, _ in items]
    todo = [i for i, v in enumerate(values) if v is None] if prob_fn is not None else []
    pieces = []          # (item index, kind, budget, changed, first row, row count)
    images = []
    rows = 0
    for i in todo:
        config, stored = items[i]
        levels, cert = _decide(config, stored, decision)
        for kind in FAITH_KINDS:
            batch, budget, changed = metrics.faithfulness_inputs(torch.from_numpy(stored.x), cert.classes, levels,
                                                                 kind, decision.replacement)
            pieces.append((i, kind, budget, changed, rows, batch.shape[0]))
            images.append(batch)
            rows += batch.shape[0]
    if not pieces:
        return values
    everything = torch.cat(images)
    with torch.no_grad():
        probs = torch.cat([prob_fn(everything[s:s + PREDICT_BATCH]) for s in range(0, rows, PREDICT_BATCH)])
    for i, kind, budget, changed, first, count in pieces:
        curve = metrics.finish_curve(kind, budget, changed, probs[first:first + count], items[i][0].target)
        value = values[i] if values[i] is not None else {}
        value[kind] = {"budget": curve.budget.tolist(), "probability": curve.probability.tolist(),
                       "changed_fraction": curve.changed_fraction.tolist(), "auc": curve.auc}
        values[i] = value
    for i in todo:
        store.put_derived(items[i][0], params, values[i])
    return values


def run_metrics(store: Store, config: RunConfig, stored: StoredRun, decision: Decision,
                prob_fn: metrics.ProbabilityFn | None = None) -> RunMetrics:
    """All metrics of one stored run at `decision`. Faithfulness comes from the store's cache or is computed with
    prob_fn (and cached); without either it is NaN."""
    return _metrics_of(config, stored, decision, faithfulness_values(store, [(config, stored)], decision, prob_fn)[0])


def _metrics_of(config: RunConfig, stored: StoredRun, decision: Decision, faith: dict | None) -> RunMetrics:
    levels, cert = _decide(config, stored, decision)
    robust = metrics.certified_robustness(cert.classes, levels)
    local = metrics.certified_gridpg(cert.classes, levels, config.cell) if config.cell is not None else None
    plain = metrics.gridpg(stored.counts.clean_attr, config.cell) if config.cell is not None else math.nan
    info = attributions.METHODS[config.method]
    base = {"model": config.model_key, "method": config.method, "method_label": info.label, "family": info.family,
            "image": config.image_key, "target": config.target, "cell": config.cell, "sigma": config.sigma,
            "n": stored.counts.n, "n0": config.n0, "test": config.test, "n_max": config.n, "seed": config.seed,
            "tau": decision.tau, "alpha": decision.alpha,
            "correction": decision.correction, "radius": cert.radius, "certifiable": cert.certifiable,
            "gridpg_clean": plain, "replacement": decision.replacement,
            "deletion_auc": faith["deletion"]["auc"] if faith else math.nan,
            "insertion_auc": faith["insertion"]["auc"] if faith else math.nan, "run_key": config.key,
            "certlib_code": dict(config.versions).get("certlib_code", "")}
    radii = pixel_radius.level_columns(pixel_radius.counts_radii(stored.counts, config.test, decision.alpha, levels))
    rows = [{**base, "k_percent": k, "certified_top": float(robust.certified_top[i]),
             "certified_not_top": float(robust.certified_not_top[i]), "abstain": float(robust.abstain[i]),
             "certified": float(robust.certified[i]),
             "certified_gridpg": float(local.score[i]) if local is not None else math.nan, **radii[i]}
            for i, k in enumerate(levels)]
    curves = [] if faith is None else [
        {"method": config.method, "family": info.family, "sigma": config.sigma, "image": config.image_key,
         "target": config.target, "kind": kind, "budget": faith[kind]["budget"],
         "probability": faith[kind]["probability"]} for kind in ("deletion", "insertion")]
    return RunMetrics(rows, curves)


def model_prob_fn(model: LoadedModel) -> metrics.ProbabilityFn:
    return lambda xb: model.predict_proba(xb)


def collect_metrics(store: Store, runs: Sequence[PlannedRun], decision: Decision,
                    prob_fn: metrics.ProbabilityFn | None = None) -> tuple[list[dict], list[dict], int]:
    """(rows, curves, number of runs not in the store) for the planned runs that are stored."""
    items = []
    for r in runs:
        stored = store.get(r.config)
        if stored is not None:
            items.append((r.config, stored))
    faiths = faithfulness_values(store, items, decision, prob_fn)
    rows: list[dict] = []
    curves: list[dict] = []
    for (config, stored), faith in zip(items, faiths):
        m = _metrics_of(config, stored, decision, faith)
        rows += m.rows
        curves += m.curves
    return rows, curves, len(runs) - len(items)


# ------------------------------------------------------------------------------------------------ summaries

SUMMARY_METRICS = ("certified", "certified_top", "abstain", "certified_gridpg", "gridpg_clean", "deletion_auc",
                   "insertion_auc", "with_radius", "radius_median")


def _mean_sem(values: list[float]) -> tuple[float, float, int]:
    v = np.array([x for x in values if not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, 0
    sem = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return float(v.mean()), sem, int(v.size)


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Per (method, σ, K): mean, standard error and count of each metric over images and targets (NaN skipped:
    localization exists only on grids, faithfulness only where computed). Methods keep their first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["sigma"], r["k_percent"]), []).append(r)
    out = []
    for (method, sigma, k), members in groups.items():
        entry = {"method": method, "method_label": members[0]["method_label"], "family": members[0]["family"],
                 "sigma": sigma, "k_percent": k, "runs": len(members)}
        for metric in SUMMARY_METRICS:
            entry[metric], entry[f"{metric}_sem"], entry[f"{metric}_count"] = _mean_sem([m[metric] for m in members])
        out.append(entry)
    return out


def mean_curves(curves: Sequence[dict]) -> list[dict]:
    """Per (method, σ, kind): the mean faithfulness curve over runs (all curves of a sweep share their budgets)."""
    groups: dict[tuple, list[dict]] = {}
    for c in curves:
        groups.setdefault((c["method"], c["sigma"], c["kind"]), []).append(c)
    return [{"method": m, "family": members[0]["family"], "sigma": s, "kind": kind,
             "budget": members[0]["budget"], "runs": len(members),
             "probability": np.mean([c["probability"] for c in members], axis=0).tolist()}
            for (m, s, kind), members in groups.items()]


# Direction of "better" for the ranking: robustness, localization and insertion up, deletion down.
RANKED_METRICS = {"certified": 1, "certified_top": 1, "certified_gridpg": 1, "deletion_auc": -1, "insertion_auc": 1}


def method_scores(summary: Sequence[dict], sigma: float) -> dict[str, dict[str, float]]:
    """{method: {metric: mean over the decided K levels}} at one σ, for the ranking heatmap."""
    scores: dict[str, dict[str, list[float]]] = {}
    for s in summary:
        if s["sigma"] != sigma:
            continue
        per = scores.setdefault(s["method"], {m: [] for m in RANKED_METRICS})
        for m in RANKED_METRICS:
            if not math.isnan(s[m]):
                per[m].append(s[m])
    return {method: {m: float(np.mean(v)) if v else math.nan for m, v in per.items()}
            for method, per in scores.items()}
