"""Glue for the metrics page: the sweep of the page's selection, the on-disk store, progress bars and the metric
tables. The sampled counts live in certlib.runs.store (shared with `python -m certlib run`), so a second visit, another
session or a CLI sweep never samples a stored config again; τ, α, K and the replacement only re-decide."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from certlib.attributions import cost
from certlib.runs import sweep
from certlib.runs.store import RunConfig, Store, StoredRun
from ui import cache
from ui.workbench import Workbench

IMAGE_SETS = {"grids": "2×2 digit grids (all three metrics)", "digits": "held-out digits",
              "photo_grids": "2×2 photo grids, 448² (all three metrics)", "photos": "the bundled photos",
              "current": "the workbench's current image"}
# The bundled sets each model family was made for: a grid's cells carry that family's class indices.
SETS_FOR_FAMILY = {"digits": ("grids", "digits", "current"), "imagenet": ("photo_grids", "photos", "current")}
GRID_SETS = ("grids", "photo_grids")


STORED_PREFIX = "stored:"


def image_sets_for(family: str, stored: dict[str, int]) -> list[str]:
    """The image sets offered for a model family (uploaded models: only the current image), then every image set
    the store holds runs of (`stored`: a folder swept with `python -m certlib run --images PATH`)."""
    return list(SETS_FOR_FAMILY.get(family, ("current",))) + [STORED_PREFIX + name for name in stored]


def stored_sets() -> dict[str, int]:
    """{set name: stored runs} of the store's image sets; read once per page run and passed around."""
    try:
        return open_store().image_sets()
    except Exception:           # an unreadable store shows its error where the page opens it
        return {}


def set_label(key: str, stored: dict[str, int]) -> str:
    if key.startswith(STORED_PREFIX):
        name = key[len(STORED_PREFIX):]
        return f"stored set {name} ({stored.get(name, 0)} runs)"
    return IMAGE_SETS[key]


def stored_runs(wb: Workbench, choice: "SweepChoice") -> tuple[list[sweep.PlannedRun], str]:
    """The stored runs of a stored image set that match the workbench's model and the page's methods, σ, n, n0,
    seed and normalisation, and a sentence of what the set holds (for when nothing matches)."""
    import torch

    from certlib.runs.store import config_from_dict

    name = choice.image_set[len(STORED_PREFIX):]
    runs, held = [], set()
    for stored, label in open_store().runs_in_set(name):
        c = config_from_dict(stored.config)
        held.add((c.model_key, c.method, c.sigma, c.n, c.n0))
        if (c.model_key, c.weights_sha256) != (wb.model.spec.key, wb.model.weights_sha256) or \
                c.method not in choice.methods or c.sigma not in choice.sigmas or \
                (c.n, c.n0, c.seed, c.normalisation) != (choice.n, choice.n0, choice.seed, choice.normalisation):
            continue
        runs.append(sweep.PlannedRun(c, torch.from_numpy(stored.x), label))
    models_ = sorted({h[0] for h in held})
    said = (f"{name} holds {len(held)} kinds of run: models {', '.join(models_)}; methods "
            f"{', '.join(sorted({h[1] for h in held}))}; σ {', '.join(f'{v:g}' for v in sorted({h[2] for h in held}))}; "
            f"n {', '.join(map(str, sorted({h[3] for h in held})))}; n0 {', '.join(map(str, sorted({h[4] for h in held})))}")
    return runs, said
SLOW_ON_CPU = ("rise", "occlusion", "integrated_gradients")


@dataclass(frozen=True)
class SweepChoice:
    methods: tuple[str, ...]
    image_set: str
    limit: int
    sigmas: tuple[float, ...]
    n: int
    n0: int
    seed: int = 0
    normalisation: str = "rank"


def open_store() -> Store:
    """The store at $CERTEXPLORER_DATA_DIR (default ~/.local/share/certexplorer); cheap, opened per run."""
    return Store()


def plan(wb: Workbench, choice: SweepChoice) -> list[sweep.PlannedRun]:
    """The runs of this selection; memoised per session (it prepares every image and predicts digit targets). A
    stored image set is not planned: its runs come from `stored_runs`."""
    current = choice.image_set == "current"
    token = (wb.model.weights_sha256, wb.model.spec.key, wb.model.compute_key, choice,
             (wb.image.sha256, wb.target) if current else None)
    memo = st.session_state.setdefault("_mx_plans", {})
    if token not in memo:
        entries = [wb.image] if current else sweep.image_set(choice.image_set, choice.limit)
        memo.clear()   # one selection at a time is enough; plans hold the prepared inputs
        memo[token] = sweep.plan(wb.model, entries, choice.methods, choice.sigmas, choice.n, choice.n0,
                                 choice.seed, target=wb.target if current else None,
                                 normalisation=choice.normalisation)
    return memo[token]


def estimate_seconds(store: Store, wb: Workbench, runs: list[sweep.PlannedRun]) -> float:
    """Time to sample `runs`: this store's past timings of each method on this model (per copy), else the method
    timed now on a few copies of each input size (certlib.attributions.cost, cached per process)."""
    total = 0.0
    past: dict[str, float | None] = {}
    for r in runs:
        m = r.config.method
        if m not in past:
            past[m] = store.seconds_per_sample(wb.model.spec.key, m)
        rate = past[m]
        if rate is None:
            rate = cost.seconds_per_copy(wb.model, m, r.x.to(wb.model.device), r.config.target)
        total += rate * r.samples
    return total


def compute_missing(store: Store, wb: Workbench, runs: list[sweep.PlannedRun]) -> int:
    """Sample the missing runs with a progress bar; each finished run is committed, so a cancel (which reruns the
    page and interrupts this loop) keeps everything done so far."""
    todo = sweep.missing(store, runs)
    bar = st.progress(0.0, text=f"Sampling {len(todo)} runs…")

    def progress(done: int, total: int, run: sweep.PlannedRun) -> None:
        c = run.config
        bar.progress(min(1.0, done / total), text=f"{c.method}, σ = {c.sigma:g}, {run.image_label}, target "
                                                   f"{c.target}: {done}/{total} noisy attributions")

    count = sweep.run_missing(store, wb.model, todo, progress=progress)
    bar.empty()
    return count


def collect(store: Store, wb: Workbench, runs: list[sweep.PlannedRun], decision: sweep.Decision,
            faithfulness: bool = True):
    """(rows, curves, runs not stored) at `decision`; faithfulness curves are computed once and kept in the store.
    With faithfulness=False, curves not stored yet are left out (their AUCs NaN) rather than computed: the model
    on every deletion and insertion step of every run takes seconds, and robustness and localization need none."""
    prob_fn = sweep.model_prob_fn(wb.model) if faithfulness else None
    return sweep.collect_metrics(RememberedStore(store), runs, decision, prob_fn)


def faithfulness_missing(runs: list[sweep.PlannedRun], curves: list[dict], absent: int) -> bool:
    """Whether some stored run lacks its faithfulness curves in `curves` (from collect(..., faithfulness=False))."""
    return len(curves) < len(sweep.FAITH_KINDS) * (len(runs) - absent)


@st.cache_resource
def _remembered() -> cache.ResultCache:
    return cache.ResultCache(max_entries=512)


class RememberedStore:
    """The store as `sweep.collect_metrics` reads it, with what it found kept in memory (process-wide, LRU).

    A decision change re-reads every stored run of the selection; from SQLite that is a connection and a decode per
    run, most of a slider move's time. Memory is safe: a run is never replaced once stored (its key is its complete
    configuration), and a derived value (faithfulness curves) is a deterministic function of the run and its
    parameters. Only what was found is remembered, so runs stored later by another session or the CLI show up."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.memo = _remembered()

    # Keys hold the config itself (a frozen dataclass: equal configs hash equal) rather than its JSON, which costs
    # more to build than the lookup saves.
    def get(self, config: RunConfig) -> StoredRun | None:
        key = ("run", self.store.path, config)
        found = self.memo.get(key)
        if found is None:
            found = self.store.get(config)
            if found is not None:
                self.memo.put(key, found)
        return found

    def get_derived(self, config: RunConfig, params: dict) -> dict | None:
        key = ("derived", self.store.path, config, Store._params(params))
        found = self.memo.get(key)
        if found is None:
            found = self.store.get_derived(config, params)
            if found is not None:
                self.memo.put(key, found)
        return found

    def put_derived(self, config: RunConfig, params: dict, value: dict) -> None:
        self.store.put_derived(config, params, value)

    def __getattr__(self, name: str):
        return getattr(self.store, name)
