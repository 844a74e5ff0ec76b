"""`python -m certlib run | export | table`: the batch runner of the metrics dashboard.

    python -m certlib run --methods grad,input_x_gradient,gradcam,lrp --images grids --sigmas 0.25 --n 100 --limit 8
    python -m certlib table --images grids --limit 8 --methods grad,lrp     # per-method means of what is stored
    python -m certlib export --csv metrics.csv [--parquet metrics.parquet]

`run` plans methods × images × σ, prints how many runs are already stored and a time estimate (one timed
attribution batch per method), then samples the missing runs with a tqdm bar, committing each run as it finishes:
ctrl-C stops after committing what is done (exit status 130) and the same command resumes. The store is
certlib.runs.store's SQLite file ($CERTEXPLORER_DATA_DIR, default ~/.local/share/certexplorer).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
import os
import sys
from typing import Sequence

from certlib.attributions import methods as attributions, cost, defaults
from certlib.data import image_folder
from certlib.models import registry as models
from certlib.pixel import cert as pixel_cert, progressive
from certlib.runs import sweep
from certlib.errors import CertlibError
from certlib.models import precision as precision_mod
from certlib.models.precision import PRECISIONS
from certlib.runs.store import Store, config_from_dict

INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got {text!r}")
    return values


def _sigmas(text: str) -> tuple[float, ...]:
    values = _floats(text)
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"every σ must be positive, got {text!r}")
    return values


def _levels(text: str) -> tuple[float, ...]:
    values = _floats(text)
    if any(not 0 < v <= 100 for v in values):
        raise argparse.ArgumentTypeError(f"K levels must be in (0, 100], got {text!r}")
    return values


def _in_range(low: float, high: float, closed_high: bool = False):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = low <= v <= high if closed_high else low <= v < high
        if not ok or (low == 0 and v == 0):
            bracket = "]" if closed_high else ")"
            left = "(" if low == 0 else "["
            raise argparse.ArgumentTypeError(f"must be in {left}{low:g}, {high:g}{bracket}, got {text}")
        return v
    return parse


def _share(text: str) -> float:
    """A share in [0, 1)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return v


def _shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 3,224,224, got {text!r}") from None
    return c, h, w


def _count(low: int, high: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high:,}], got {v}")
        return v
    return parse


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
    p.add_argument("--model", default="digits_sigma0.25",
                   help="registered model key (default digits_sigma0.25), or a model file, safest first: a "
                        ".safetensors state dict (with --architecture), a torch.export .pt2 program, or TorchScript "
                        "(legacy); programs take [B,C,H,W] pixels in [0,1] and run sandboxed, as uploads in the app do")
    p.add_argument("--architecture", default=None,
                   help="the registry architecture of a .safetensors --model (e.g. resnet18, digits_cnn)")
    p.add_argument("--class-names", default=None, dest="class_names",
                   help="a text file of the --model file's class names, one per line (default 'class i')")
    p.add_argument("--input-shape", type=_shape, default=None, dest="input_shape",
                   help="C,H,W of a TorchScript --model's input (e.g. 3,224,224); for a .pt2 where its sizes are "
                        "dynamic; for safetensors instead of the architecture's")
    p.add_argument("--methods", type=_methods, default=None,
                   help="comma-separated attribution methods, or 'all' (default: the model family's measured default "
                        "method, then " + ", ".join(COMPARED_METHODS) + "; see certlib/attributions/defaults.py)")
    p.add_argument("--images", default="grids",
                   help=f"a bundled image set ({', '.join(sweep.IMAGE_SETS)}) or a folder of PNG/JPEG/WebP images "
                        "(recursive; labels from class sub-folders or a labels.csv with path,label)")
    p.add_argument("--target", type=_count(0, 1_000_000), default=None,
                   help="explain every image for this class index (default: a folder's labels, else the model's "
                        "prediction; grids: each cell's class)")
    p.add_argument("--limit", type=_count(1, 10_000_000), default=None,
                   help="use the first LIMIT images of the set (default: 8 of a bundled set, all of a folder)")
    p.add_argument("--sigmas", type=_sigmas, default=None,
                   help="comma-separated noise levels σ (default: the model family's, 0.25 for the bundled models)")
    p.add_argument("--n", type=_count(1, pixel_cert.MAX_N), default=100, help="estimation samples per run")
    p.add_argument("--n0", type=_count(1, pixel_cert.MAX_N), default=None,
                   help="selection samples per run (default: the model family's measured default)")
    p.add_argument("--seed", type=_count(0, 2**62), default=0)
    p.add_argument("--k", type=_levels, default=sweep.sampling.DEFAULT_K_PERCENTS, dest="k_percents",
                   help="sampled top-K%% ladder (default 1,5,10,25,50)")
    p.add_argument("--normalisation", choices=pixel_cert.NORMALISATIONS, default=pixel_cert.DEFAULT_NORMALISATION,
                   help="how h^K ranks a noisy map: rank |a| (default), own_scale, or paper (the clean map's scale: "
                        + pixel_cert.PAPER_WARNING + ")")
    p.add_argument("--anytime", action="store_true",
                   help="sample each run progressively with the anytime-valid test and stop once every pixel of "
                        "--levels is decided at --tau/--alpha/--correction (or at --max-n); stored apart from "
                        "fixed-n runs")
    p.add_argument("--max-n", type=_count(1, pixel_cert.MAX_N), default=None, dest="max_n",
                   help="with --anytime: the budget of estimation samples per run (default 1000)")
    p.add_argument("--stop-undecided", type=_share, default=0.0, dest="stop_undecided",
                   help="with --anytime: stop a run once at most this share of its pixels × levels is undecided "
                        "(default 0: all decided; those left abstain)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the runs compute (with --engine ray: on the workers; one actor per GPU for cuda)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="attribution passes in fp32, or bf16 autocast + channels_last (for GPUs; see certlib.models.precision)")


def _add_decision_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tau", type=_in_range(0.5, 1.0), default=0.75, help="vote threshold in [0.5, 1)")
    p.add_argument("--alpha", type=_in_range(0.0, 1.0), default=1e-3, help="error probability in (0, 1)")
    p.add_argument("--levels", type=_levels, default=sweep.DEFAULT_LEVELS, help="K levels decided (default 5,25,50)")
    p.add_argument("--correction", choices=("holm", "bonferroni"), default="holm")
    p.add_argument("--replacement", choices=("blur", "zero", "mean"), default="blur",
                   help="what deleted pixels become in the faithfulness curves")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="python -m certlib", description="certified-attribution metrics sweeps")
    sub = top.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="sample methods × images × σ into the store (resumable)")
    _add_sweep_args(run)
    _add_decision_args(run)
    run.add_argument("--batch-size", type=_count(1, 4096), default=None,
                     help="noisy copies per attribution call (default auto)")
    run.add_argument("--dry-run", action="store_true", help="print the plan and the estimate, sample nothing")
    run.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: this process (default); ray: the actors of a Ray cluster (docs/scale-out.md)")
    run.add_argument("--address", default=None,
                     help="with --engine ray: 'auto' (the cluster this machine belongs to), HOST:PORT or ray://…; "
                          "default: start Ray on this machine only")
    run.add_argument("--actors", type=_count(1, 4096), default=None,
                     help="with --engine ray: how many actors (default: one per GPU with --device cuda, else one "
                          "per node)")
    run.add_argument("--threads", type=_count(1, 1024), default=None,
                     help="with --engine ray: torch threads per actor (default: its share of the cluster's CPUs)")
    table = sub.add_parser("table", help="per-method means of the stored runs of a sweep")
    _add_sweep_args(table)
    _add_decision_args(table)
    exp = sub.add_parser("export", help="every stored run's metrics, one row per run and K level")
    _add_decision_args(exp)
    exp.add_argument("--csv", help="write CSV here")
    exp.add_argument("--parquet", help="write Parquet here (needs pyarrow)")
    return top


# ------------------------------------------------------------------------------------------------ commands

# Methods a default sweep compares beside the family's default (the set the CLI swept before defaults were measured).
COMPARED_METHODS = ("grad", "input_x_gradient", "gradcam", "lrp")


def resolve_defaults(args: argparse.Namespace, spec: models.ModelSpec) -> argparse.Namespace:
    """Fill the sweep options left unset (--methods, --n0, --sigmas) from the model family's measured defaults
    (certlib.attributions.defaults): they depend on the model, which is known only once --model is loaded."""
    chosen = defaults.for_family(spec.family)
    if args.methods is None:
        wanted = dict.fromkeys((attributions.default_method(spec), *COMPARED_METHODS))
        args.methods = tuple(m for m in wanted if attributions.unavailable_reason(m, spec) is None)
    if args.n0 is None:
        args.n0 = chosen.n0
    if args.sigmas is None:
        args.sigmas = (chosen.sigma,)
    return args


def _without_duplicates(values: Sequence | None, what: str) -> tuple | None:
    if values is None:                 # unset: filled from the model's defaults (resolve_defaults)
        return None
    unique = tuple(dict.fromkeys(values))
    if len(unique) < len(values):
        print(f"note: duplicate {what} ignored: {', '.join(map(str, values))} -> {', '.join(map(str, unique))}",
              file=sys.stderr)
    return unique


def _check_decision_levels(args) -> None:
    missing = [k for k in args.levels if k not in args.k_percents]    # run and table have both options
    if missing:
        raise CertlibError(f"--levels {', '.join(f'{k:g}' for k in missing)} are not in the sampled ladder --k "
                           f"{', '.join(f'{k:g}' for k in args.k_percents)}")


def _writable_target(path: str | None, flag: str) -> None:
    if not path:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CertlibError(f"{flag} {path}: the directory {parent} does not exist")
    if os.path.isdir(path):
        raise CertlibError(f"{flag} {path}: is a directory")


DEFAULT_MAX_N = 1000
DEFAULT_LIMIT = 8            # images of a bundled set


@dataclass
class Plan:
    runs: list[sweep.PlannedRun]
    images: int                                   # images planned (after skipping)
    what: str                                     # "grids", or the folder's path
    folder: image_folder.ImageFolder | None = None
    skipped: list[image_folder.Skipped] = field(default_factory=list)


def _images(args) -> tuple[list, image_folder.ImageFolder | None]:
    if args.images in sweep.IMAGE_SETS:
        return sweep.image_set(args.images, args.limit or DEFAULT_LIMIT), None
    if not os.path.isdir(os.path.expanduser(args.images)):
        raise CertlibError(f"--images {args.images}: neither a bundled set ({', '.join(sweep.IMAGE_SETS)}) nor a "
                           "folder")
    folder = image_folder.scan(args.images, args.limit)
    return list(folder.images), folder


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _plan(args, model: models.LoadedModel, compute_key: str | None = None) -> Plan:
    resolve_defaults(args, model.spec)
    entries, folder = _images(args)
    if (args.max_n is not None or args.stop_undecided) and not args.anytime:
        raise CertlibError("--max-n and --stop-undecided set how --anytime runs stop; fixed-n runs take --n")
    rule, n = None, args.n
    if args.anytime:
        rule = progressive.StopRule(args.tau, args.alpha, tuple(args.levels), args.correction, args.stop_undecided)
        n = args.max_n if args.max_n is not None else DEFAULT_MAX_N
    skipped = list(folder.skipped) if folder is not None else []
    runs = sweep.plan(model, entries, args.methods, args.sigmas, n, args.n0, args.seed, args.k_percents,
                      target=args.target, normalisation=args.normalisation, stop_rule=rule,
                      skipped=skipped if folder else None,
                      compute_key=compute_key)
    if folder is not None and not runs:
        raise CertlibError(f"--images {args.images}: none of its {len(entries)} images could be used; "
                           + _skipped_text(skipped))
    images_used = len(entries) - (len(skipped) - len(folder.skipped) if folder is not None else 0)
    return Plan(runs, images_used, folder.name if folder is not None else args.images, folder, skipped)


def _skipped_text(skipped: Sequence[image_folder.Skipped], most: int = 20) -> str:
    shown = "; ".join(f"{s.relpath} ({s.reason})" for s in skipped[:most])
    more = f"; … and {len(skipped) - most} more" if len(skipped) > most else ""
    return f"skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''}: {shown}{more}"


def _decision(args) -> sweep.Decision:
    return sweep.Decision(args.tau, args.alpha, tuple(args.levels), args.correction, args.replacement)


def cmd_run(args) -> int:
    _check_engine_args(args)
    # With Ray the runs compute on the workers: the driver only plans (predictions, hashes) and times one batch, on
    # its CPU when it has no GPU, but plans them with the workers' compute key.
    driver_device = "cpu" if args.engine == "ray" and args.device == "cuda" and not _has_cuda() else args.device
    model, torchscript = _load_model(args, driver_device)
    store = Store()
    # Keyed where the runs compute: only a registry model planned on a CPU for GPU workers differs from `model`
    # (TorchScript always runs sandboxed on the CPU, whatever --device says).
    workers_key = precision_mod.compute_key(args.device, args.precision) \
        if driver_device != args.device and torchscript is None else None
    plan = _plan(args, model, workers_key)
    todo = _missing_runs(args, store, plan)
    if not todo:
        _summary_of_skipped(plan)
        return 0
    _print_estimate(args, model, todo, driver_device)
    if args.dry_run:
        return 0
    if not _sample(args, model, torchscript, store, plan.runs, todo):
        return INTERRUPTED
    _print_results(args, model, store, plan)
    return 0


def _missing_runs(args, store: Store, plan: Plan) -> list[sweep.PlannedRun]:
    """Warn of skipped files, tag a folder's runs with its name, and say how many runs are planned and stored;
    returns the runs still to sample."""
    runs = plan.runs
    if plan.skipped:
        print(f"warning: {_skipped_text(plan.skipped)}", file=sys.stderr)
    if plan.folder is not None:
        store.tag_set(plan.folder.name, [(r.config, r.image_label) for r in runs])
    todo = sweep.missing(store, runs)
    print(f"{len(runs)} runs planned ({len(args.methods)} methods × {plan.images} images of {plan.what} × "
          f"{len(args.sigmas)} σ; grids are explained once per cell), {len(runs) - len(todo)} already stored in "
          f"{store.path}")
    return todo


def _print_estimate(args, model: models.LoadedModel, todo: list[sweep.PlannedRun], driver_device: str) -> None:
    """The expected time of the missing runs, from one timed batch per method on the driver; with Ray (unless
    --dry-run) it connects to the cluster and divides the time among its actors."""
    seconds, per_copy = sweep.estimate_seconds(model, todo, args.batch_size or 16)
    rates = ", ".join(f"{m} {s * 1000:.1f} ms" for m, s in per_copy.items())
    bound = "at most " if args.anytime else ""   # an anytime run stops once decided, usually well before --max-n
    where = args.device
    if args.engine == "ray" and not args.dry_run:
        from certlib.runs import ray_engine

        ray_engine.connect(args.address)
        actors, _, _ = ray_engine.plan_actors(args.device, args.actors, args.threads)
        seconds /= min(actors, len(todo))
        where = f"{actors} Ray actor{'s' if actors != 1 else ''} as fast as this machine's {driver_device}"
    print(f"estimated time: {bound}{cost.describe_seconds(seconds)} for {bound}{sum(r.samples for r in todo)} noisy "
          f"attributions on {where} (per copy: {rates})")


def _sample(args, model: models.LoadedModel, torchscript: bytes | None, store: Store, runs: list[sweep.PlannedRun],
            todo: list[sweep.PlannedRun]) -> bool:
    """Sample the missing runs into the store under a progress bar, here or on Ray; False when interrupted (every
    run finished before that is stored, and the same command resumes)."""
    from tqdm import tqdm

    bar = tqdm(total=sum(r.samples for r in todo), unit="copy", desc="sampling", dynamic_ncols=True)

    def progress(done: int, total: int, run: sweep.PlannedRun) -> None:
        bar.set_postfix_str(f"{run.config.method} σ={run.config.sigma:g} {run.config.image_key} "
                            f"t={run.config.target}", refresh=False)
        bar.update(done - bar.n)

    try:
        if args.engine == "ray":
            _run_on_ray(args, model, torchscript, store, todo, progress)
        else:
            sweep.run_missing(store, model, todo, args.batch_size, progress)
    except KeyboardInterrupt:
        bar.close()
        left = len(sweep.missing(store, runs))
        print(f"\ninterrupted: {len(runs) - left} of {len(runs)} runs are stored; run the same command to resume")
        return False
    finally:
        bar.close()             # before any error message, so the bar never redraws after it
    return True


def _print_results(args, model: models.LoadedModel, store: Store, plan: Plan) -> None:
    """The metrics of every planned run at the command line's decision, and what was skipped."""
    rows, _, _ = sweep.collect_metrics(store, plan.runs, _decision(args), sweep.model_prob_fn(model))
    print(format_table(sweep.summarise(rows)))
    if args.anytime:
        print(_anytime_usage(rows, plan.runs))
    _summary_of_skipped(plan)
    _report_skipped(store)


def _load_model(args, device: str) -> tuple[models.LoadedModel, bytes | None]:
    """The registered model, or a model file loaded as the app loads an upload (certlib.load_model: safetensors in
    process, programs checked and sandboxed); the file's bytes too, for Ray's workers."""
    from certlib.models import formats as model_formats

    if not os.path.isfile(os.path.expanduser(args.model)):
        for option, value in (("--input-shape", args.input_shape), ("--architecture", args.architecture),
                              ("--class-names", args.class_names)):
            if value is not None:
                raise CertlibError(f"{option} is for a --model file; {args.model!r} is not a file")
        return models.load_model(args.model, device=device, precision=args.precision), None
    with open(os.path.expanduser(args.model), "rb") as f:
        data = f.read()
    fmt = model_formats.detect_format(data)
    if fmt == model_formats.TORCHSCRIPT and args.input_shape is None:
        raise CertlibError(f"--model {args.model} is TorchScript: give its input as --input-shape C,H,W "
                           "(e.g. 3,224,224)")
    model = model_formats.load_model(data, architecture=args.architecture, input_size=args.input_shape,
                                     class_names=args.class_names, name=os.path.basename(args.model), device=device)
    return model, data


def _run_on_ray(args, model: models.LoadedModel, torchscript: bytes | None, store: Store, todo: list,
                progress) -> None:
    from tqdm import tqdm

    from certlib.runs import ray_engine

    ray_engine.connect(args.address)
    if torchscript is None:
        recipe = ray_engine.ModelRecipe(model.spec.key, args.device, args.precision, model.weights_sha256)
    else:                                 # shipped once through the object store; each worker sandboxes it
        import ray

        recipe = ray_engine.ModelRecipe(model.spec.key, "cpu", "fp32", model.weights_sha256, ray.put(torchscript),
                                        args.input_shape, os.path.basename(args.model), args.architecture,
                                        model.spec.class_names)

    def started(placed: list[dict]) -> None:
        nodes = len({p["node"] for p in placed})
        tqdm.write(f"ray: {len(placed)} actor{'s' if len(placed) != 1 else ''} on {nodes} "
                   f"node{'s' if nodes != 1 else ''} ({placed[0]['threads']} torch "
                   f"thread{'s' if placed[0]['threads'] != 1 else ''} each)", file=sys.stderr)

    def retried(run, exc: BaseException) -> None:
        tqdm.write(f"ray: a worker died ({type(exc).__name__}); {run.image_label or run.config.image_key} "
                   f"({run.config.method}, σ={run.config.sigma:g}) runs again on another worker", file=sys.stderr)

    ray_engine.run_missing(store, recipe, todo, args.batch_size, progress, args.actors, args.threads, started,
                           retried)


def _check_engine_args(args) -> None:
    if args.engine != "ray" and (args.address or args.actors or args.threads):
        raise CertlibError("--address, --actors and --threads are options of --engine ray")


def _summary_of_skipped(plan: Plan) -> None:
    if plan.skipped:
        print(f"{_skipped_text(plan.skipped, most=1000)}")


def _anytime_usage(rows: list[dict], runs: Sequence[sweep.PlannedRun]) -> str:
    used = sum(r["n0"] + r["n"] for r in {r["run_key"]: r for r in rows}.values())
    budget = sum(r.samples for r in runs)
    return (f"anytime-valid test: the runs used {used:,} of at most {budget:,} noisy attributions "
            f"({used / budget:.0%}); each certificate holds at α whenever its run stopped")


def _report_skipped(store: Store) -> None:
    if store.skipped:
        shown = "; ".join(f"{key[:12]} ({why})" for key, why in list(store.skipped.items())[:5])
        print(f"warning: skipped {len(store.skipped)} damaged run{'s' if len(store.skipped) > 1 else ''} of the "
              f"store at {store.path}: {shown}", file=sys.stderr)


def cmd_table(args) -> int:
    model, _ = _load_model(args, args.device)
    store = Store()
    runs = _plan(args, model).runs
    rows, _, absent = sweep.collect_metrics(store, runs, _decision(args), sweep.model_prob_fn(model))
    if absent:
        print(f"{absent} of {len(runs)} runs are not stored yet (python -m certlib run … with the same options)")
    print(format_table(sweep.summarise(rows)))
    _report_skipped(store)
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
    _writable_target(args.csv, "--csv")
    _writable_target(args.parquet, "--parquet")
    store = Store()
    rows = export_rows(store, _decision(args))
    _report_skipped(store)
    if args.csv:
        write_csv(rows, args.csv)
        print(f"{len(rows)} rows -> {args.csv}")
    if args.parquet:
        write_parquet(rows, args.parquet)
        print(f"{len(rows)} rows -> {args.parquet}")
    return 0


# ------------------------------------------------------------------------------------------------ tables

def write_csv(rows: list[dict], path: str) -> None:
    from certlib.runs import export

    with open(path, "wb") as f:
        f.write(export.metrics_csv(rows))


def write_parquet(rows: list[dict], path: str) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CertlibError("Parquet export needs pyarrow, which is not installed; use --csv") from None
    pq.write_table(pa.Table.from_pylist(rows), path)


SUMMARY_COLUMNS = ("certified", "certified_top", "certified_gridpg", "gridpg_clean", "deletion_auc", "insertion_auc",
                   "with_radius", "radius_median")


def format_table(summary: list[dict]) -> str:
    """A markdown table of `sweep.summarise`'s output (means over images and targets)."""
    head = ("| method | σ | K% | runs | certified | cert. top-K | cert. GridPG | GridPG (clean) | deletion AUC | "
            "insertion AUC | with a radius | median radius |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in summary:
        vals = " | ".join("—" if math.isnan(s[c]) else f"{s[c]:.3f}" for c in SUMMARY_COLUMNS)
        lines.append(f"| {s['method']} | {s['sigma']:g} | {s['k_percent']:g} | {s['runs']} | {vals} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for name, what in (("methods", "methods"), ("sigmas", "σ values"), ("k_percents", "K levels"),
                       ("levels", "decided K levels")):
        if hasattr(args, name):
            setattr(args, name, _without_duplicates(getattr(args, name), what))
    commands = {"run": cmd_run, "table": cmd_table, "export": cmd_export}
    try:
        if hasattr(args, "k_percents"):
            _check_decision_levels(args)
        return commands[args.cmd](args)
    except CertlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:              # a file the command was told to write or read
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except Exception as exc:            # never a traceback for a user; one line saying what failed
        if os.environ.get("CERTEXPLORER_DEBUG") == "1":
            raise
        print(f"error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''} "
              "(CERTEXPLORER_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
