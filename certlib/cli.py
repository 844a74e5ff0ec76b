"""`python -m certlib run | export | table`: the batch runner of the metrics dashboard.

    python -m certlib run --methods grad,input_x_gradient,gradcam,lrp --images grids --sigmas 0.25 --n 100 --limit 8
    python -m certlib table --images grids --limit 8 --methods grad,lrp     # per-method means of what is stored
    python -m certlib export --csv metrics.csv [--parquet metrics.parquet]

`run` plans methods × images × σ, prints how many runs are already stored and a time estimate (one timed
attribution batch per method), then samples the missing runs with a tqdm bar, committing each run as it finishes:
ctrl-C stops after committing what is done (exit status 130) and the same command resumes. The store is
certlib.store's SQLite file ($CERTEXPLORER_DATA_DIR, default ~/.local/share/certexplorer).
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Sequence

from certlib import attributions, models, pixel_cert, sweep
from certlib.errors import CertlibError
from certlib.precision import PRECISIONS
from certlib.store import Store, config_from_dict

INTERRUPTED = 130


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _methods(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    if names == ("all",):
        return tuple(attributions.METHODS)
    unknown = [m for m in names if m not in attributions.METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown method {unknown[0] if unknown else text!r}; "
                                         f"choose from {', '.join(attributions.METHODS)} or 'all'")
    return names


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="digits_sigma0.25", help="registered model key (default digits_sigma0.25)")
    p.add_argument("--methods", type=_methods, default=("grad", "input_x_gradient", "gradcam", "lrp"),
                   help="comma-separated attribution methods, or 'all'")
    p.add_argument("--images", choices=sweep.IMAGE_SETS, default="grids", help="bundled image set")
    p.add_argument("--limit", type=int, default=8, help="use the first LIMIT images of the set")
    p.add_argument("--sigmas", type=_floats, default=(0.25,), help="comma-separated noise levels σ")
    p.add_argument("--n", type=int, default=100, help="estimation samples per run")
    p.add_argument("--n0", type=int, default=32, help="selection samples per run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=_floats, default=sweep.sampling.DEFAULT_K_PERCENTS, dest="k_percents",
                   help="sampled top-K%% ladder (default 1,5,10,25,50)")
    p.add_argument("--normalisation", choices=pixel_cert.NORMALISATIONS, default=pixel_cert.DEFAULT_NORMALISATION,
                   help="how h^K ranks a noisy map: rank |a| (default), own_scale, or paper (the clean map's scale: "
                        + pixel_cert.PAPER_WARNING + ")")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="attribution passes in fp32, or bf16 autocast + channels_last (for GPUs; see certlib.precision)")


def _add_decision_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tau", type=float, default=0.75)
    p.add_argument("--alpha", type=float, default=1e-3)
    p.add_argument("--levels", type=_floats, default=sweep.DEFAULT_LEVELS, help="K levels decided (default 5,25,50)")
    p.add_argument("--correction", choices=("holm", "bonferroni"), default="holm")
    p.add_argument("--replacement", choices=("blur", "zero", "mean"), default="blur",
                   help="what deleted pixels become in the faithfulness curves")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m certlib", description="certified-attribution metrics sweeps")
    sub = top.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="sample methods × images × σ into the store (resumable)")
    _add_sweep_args(run)
    _add_decision_args(run)
    run.add_argument("--batch-size", type=int, default=None, help="noisy copies per attribution call (default auto)")
    run.add_argument("--dry-run", action="store_true", help="print the plan and the estimate, sample nothing")
    table = sub.add_parser("table", help="per-method means of the stored runs of a sweep")
    _add_sweep_args(table)
    _add_decision_args(table)
    exp = sub.add_parser("export", help="every stored run's metrics, one row per run and K level")
    _add_decision_args(exp)
    exp.add_argument("--csv", help="write CSV here")
    exp.add_argument("--parquet", help="write Parquet here (needs pyarrow)")
    return top


# ------------------------------------------------------------------------------------------------ commands

def _plan(args, model: models.LoadedModel) -> list[sweep.PlannedRun]:
    entries = sweep.image_set(args.images, args.limit)
    return sweep.plan(model, entries, args.methods, args.sigmas, args.n, args.n0, args.seed, args.k_percents,
                      normalisation=args.normalisation)


def _decision(args) -> sweep.Decision:
    return sweep.Decision(args.tau, args.alpha, tuple(args.levels), args.correction, args.replacement)


def cmd_run(args) -> int:
    from tqdm import tqdm

    model = models.load_model(args.model, device=args.device, precision=args.precision)
    store = Store()
    runs = _plan(args, model)
    todo = sweep.missing(store, runs)
    print(f"{len(runs)} runs planned ({len(args.methods)} methods × {args.limit} {args.images} × "
          f"{len(args.sigmas)} σ; grids are explained once per cell), {len(runs) - len(todo)} already stored in "
          f"{store.path}")
    if not todo:
        return 0
    seconds, per_copy = sweep.estimate_seconds(model, todo, args.batch_size or 16)
    rates = ", ".join(f"{m} {s * 1000:.1f} ms" for m, s in per_copy.items())
    print(f"estimated time: {_duration(seconds)} for {sum(r.samples for r in todo)} noisy attributions "
          f"on {args.device} (per copy: {rates})")
    if args.dry_run:
        return 0
    bar = tqdm(total=sum(r.samples for r in todo), unit="copy", desc="sampling", dynamic_ncols=True)

    def progress(done: int, total: int, run: sweep.PlannedRun) -> None:
        bar.set_postfix_str(f"{run.config.method} σ={run.config.sigma:g} {run.config.image_key} "
                            f"t={run.config.target}", refresh=False)
        bar.update(done - bar.n)

    try:
        sweep.run_missing(store, model, todo, args.batch_size, progress)
    except KeyboardInterrupt:
        bar.close()
        left = len(sweep.missing(store, runs))
        print(f"\ninterrupted: {len(runs) - left} of {len(runs)} runs are stored; run the same command to resume")
        return INTERRUPTED
    bar.close()
    rows, _, _ = sweep.collect_metrics(store, runs, _decision(args), sweep.model_prob_fn(model))
    print(format_table(sweep.summarise(rows)))
    return 0


def cmd_table(args) -> int:
    model = models.load_model(args.model, device=args.device, precision=args.precision)
    store = Store()
    runs = _plan(args, model)
    rows, _, absent = sweep.collect_metrics(store, runs, _decision(args), sweep.model_prob_fn(model))
    if absent:
        print(f"{absent} of {len(runs)} runs are not stored yet (python -m certlib run … with the same options)")
    print(format_table(sweep.summarise(rows)))
    return 0


def export_rows(store: Store, decision: sweep.Decision) -> list[dict]:
    """Metric rows of every stored run; faithfulness uses the registered model when it is on this machine."""
    loaded: dict[tuple[str, str], object] = {}
    rows: list[dict] = []
    for stored in store.all_runs():
        config = config_from_dict(stored.config)
        key = (config.model_key, config.weights_sha256)
        if key not in loaded:
            loaded[key] = _model_for(config)
        model = loaded[key]
        prob_fn = sweep.model_prob_fn(model) if model is not None else None
        rows += sweep.run_metrics(store, config, stored, decision, prob_fn).rows
    return rows


def _model_for(config) -> models.LoadedModel | None:
    try:
        model = models.load_model(config.model_key, device="cpu")
    except (CertlibError, KeyError, ValueError):
        return None
    return model if model.weights_sha256 == config.weights_sha256 else None


def cmd_export(args) -> int:
    if not args.csv and not args.parquet:
        raise CertlibError("export needs --csv PATH and/or --parquet PATH")
    rows = export_rows(Store(), _decision(args))
    if args.csv:
        write_csv(rows, args.csv)
        print(f"{len(rows)} rows -> {args.csv}")
    if args.parquet:
        write_parquet(rows, args.parquet)
        print(f"{len(rows)} rows -> {args.parquet}")
    return 0


# ------------------------------------------------------------------------------------------------ tables

def write_csv(rows: list[dict], path: str) -> None:
    from certlib import export

    with open(path, "wb") as f:
        f.write(export.metrics_csv(rows))


def write_parquet(rows: list[dict], path: str) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CertlibError("Parquet export needs pyarrow, which is not installed; use --csv") from None
    pq.write_table(pa.Table.from_pylist(rows), path)


SUMMARY_COLUMNS = ("certified", "certified_top", "certified_gridpg", "gridpg_clean", "deletion_auc", "insertion_auc")


def format_table(summary: list[dict]) -> str:
    """A markdown table of `sweep.summarise`'s output (means over images and targets)."""
    head = "| method | σ | K% | runs | certified | cert. top-K | cert. GridPG | GridPG (clean) | deletion AUC | insertion AUC |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in summary:
        vals = " | ".join("—" if math.isnan(s[c]) else f"{s[c]:.3f}" for c in SUMMARY_COLUMNS)
        lines.append(f"| {s['method']} | {s['sigma']:g} | {s['k_percent']:g} | {s['runs']} | {vals} |")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    commands = {"run": cmd_run, "table": cmd_table, "export": cmd_export}
    try:
        return commands[args.cmd](args)
    except CertlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
