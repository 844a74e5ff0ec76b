"""The metric table of docs/metrics.md from the runs in the store (sample them first with `python -m certlib run`).

    python bench/metrics_table.py

Reads every stored run of the current store ($CERTEXPLORER_DATA_DIR), whatever certlib code hash it was sampled
with, decides it at τ = 0.75, α = 0.001, Holm over K ∈ {5, 25, 50}, and averages per method: on grids robustness and
localization, on single digits robustness and faithfulness (blur and zero replacement). Prints markdown tables and
writes bench/results/metrics.json (means, standard errors, run counts).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import write  # noqa: E402
from certlib.attributions import methods as attributions
from certlib.runs import cli, sweep  # noqa: E402
from certlib.runs.store import Store  # noqa: E402

LEVELS = (5.0, 25.0, 50.0)
PER_K = ("certified", "certified_top", "abstain", "certified_gridpg")
PER_RUN = ("gridpg_clean", "deletion_auc", "insertion_auc", "deletion_auc_zero", "insertion_auc_zero")


def _stats(values: list[float]) -> dict:
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return {"mean": math.nan, "sem": math.nan, "count": 0}
    mean = sum(v) / len(v)
    sem = (sum((x - mean) ** 2 for x in v) / (len(v) - 1)) ** 0.5 / len(v) ** 0.5 if len(v) > 1 else math.nan
    return {"mean": mean, "sem": sem, "count": len(v)}


def table(rows: list[dict], on_grids: bool) -> dict:
    """{method: {metric[@K]: stats}} over the runs of one image kind."""
    mine = [r for r in rows if (r["cell"] is not None) == on_grids]
    out = {}
    for method in attributions.METHODS:
        runs = [r for r in mine if r["method"] == method]
        if not runs:
            continue
        entry = {"runs": len({r["run_key"] for r in runs})}
        for k in LEVELS:
            at_k = [r for r in runs if r["k_percent"] == k]
            entry.update({f"{m}@{k:g}": _stats([r[m] for r in at_k]) for m in PER_K})
        first = [r for r in runs if r["k_percent"] == LEVELS[0]]
        entry.update({m: _stats([r[m] for r in first]) for m in PER_RUN})
        out[method] = entry
    return out


def _pct(s: dict) -> str:
    return "—" if math.isnan(s["mean"]) else f"{100 * s['mean']:.1f}"


def _num(s: dict) -> str:
    return "—" if math.isnan(s["mean"]) else f"{s['mean']:.3f}"


def markdown(grids: dict, digits: dict) -> str:
    label = {k: (m.label, m.family) for k, m in attributions.METHODS.items()}
    lines = ["Grids (robustness and localization):", "",
             "| method | family | runs | certified % at K = 5 / 25 / 50 | certified GridPG % at K = 5 / 25 / 50 "
             "| plain GridPG % |", "|---|---|---|---|---|---|"]
    for m, e in grids.items():
        lines.append(f"| {label[m][0]} | {label[m][1]} | {e['runs']} | "
                     + " / ".join(_pct(e[f"certified@{k:g}"]) for k in LEVELS) + " | "
                     + " / ".join(_pct(e[f"certified_gridpg@{k:g}"]) for k in LEVELS) + f" | {_pct(e['gridpg_clean'])} |")
    lines += ["", "Single digits (robustness and faithfulness):", "",
              "| method | family | runs | certified % at K = 5 / 25 / 50 | deletion AUC blur / zero "
              "| insertion AUC blur / zero |", "|---|---|---|---|---|---|"]
    for m, e in digits.items():
        lines.append(f"| {label[m][0]} | {label[m][1]} | {e['runs']} | "
                     + " / ".join(_pct(e[f"certified@{k:g}"]) for k in LEVELS)
                     + f" | {_num(e['deletion_auc'])} / {_num(e['deletion_auc_zero'])} "
                     f"| {_num(e['insertion_auc'])} / {_num(e['insertion_auc_zero'])} |")
    return "\n".join(lines)


def main() -> None:
    store = Store()
    rows = cli.export_rows(store, sweep.Decision(levels=LEVELS))
    zero = {(r["run_key"], r["k_percent"]): r for r in cli.export_rows(store, sweep.Decision(levels=LEVELS,
                                                                                               replacement="zero"))}
    for r in rows:
        z = zero[(r["run_key"], r["k_percent"])]
        r["deletion_auc_zero"], r["insertion_auc_zero"] = z["deletion_auc"], z["insertion_auc"]
    grids, digits = table(rows, True), table(rows, False)
    print(markdown(grids, digits))
    decision = {"tau": 0.75, "alpha": 1e-3, "levels": LEVELS, "correction": "holm"}
    print(write("metrics", {"decision": decision, "grids": grids, "digits": digits}))


if __name__ == "__main__":
    main()
