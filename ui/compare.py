"""Glue for the Compare page: the cells of a side-by-side grid (methods, or the digits model's σ_train checkpoints,
on the workbench's image), each a workbench of its own so that its counts share the Certified pixels page's cache."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from certlib.attributions import methods as attributions, cost, defaults
from certlib.models import registry as models
from ui import runs
from ui.workbench import Workbench, model_input, probabilities, registry_model

MODES = {"methods": "attribution methods", "checkpoints": "the three σ_train checkpoints (digits models)"}


@dataclass(frozen=True)
class Cell:
    title: str
    wb: Workbench


def default_methods(wb: Workbench, usable: list[str]) -> list[str]:
    """Three methods to start with: the family's measured default, GradCAM and plain gradients (their radius curves
    differ most), or the first usable ones."""
    wanted = (defaults.for_family(wb.model.spec.family).method, "gradcam", "grad", *usable)
    return list(dict.fromkeys(m for m in wanted if m in usable))[:3]


def method_cells(wb: Workbench, methods: list[str]) -> list[Cell]:
    return [Cell(attributions.METHODS[m].label, replace(wb, method=m)) for m in methods]


def checkpoint_cells(wb: Workbench) -> list[Cell]:
    """The workbench's image, target and method on each bundled digits checkpoint."""
    cells = []
    for spec in models.list_models():
        if spec.family != "digits" or not spec.available:
            continue
        model = registry_model(spec.key, wb.device)
        x = model_input(model, wb.image)
        probs = probabilities(model, wb.image, x)
        title = spec.key.replace("digits_sigma", "σ_train = ")
        cells.append(Cell(title, replace(wb, model=model, x=x, probs=np.asarray(probs))))
    return cells


def missing(cells: list[Cell], params: runs.SamplingParams) -> list[Cell]:
    return [c for c in cells if not runs.is_cached(c.wb, "topk_counts", params)]


def expected_seconds(cells: list[Cell], params: runs.SamplingParams) -> float:
    """Time to sample the cells not cached yet (each method timed on this machine, certlib.attributions.cost)."""
    return sum(cost.seconds_per_copy(c.wb.model, c.wb.method, c.wb.x, c.wb.target) * (params.n0 + params.n)
               for c in missing(cells, params))


def expected_time(cells: list[Cell], params: runs.SamplingParams) -> str:
    """`expected_seconds` in words."""
    return cost.describe_seconds(expected_seconds(cells, params))
