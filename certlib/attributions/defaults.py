"""The attribution method, n0 and σ the app and the CLI start with, per model family, and the measurement behind them.

The defaults are data (`DEFAULTS`), chosen by bench/defaults.py on the bundled models: at the Certified pixels
page's decision (τ = 0.75, α = 1e-3, Holm over pixels × K ∈ {5, 25, 50} %, the fixed-n test at n = 256), the
method and n0 that certify the most pixel tests per second of sampling at the reference σ = 0.25. σ is not chosen
by "most certified" (a smaller σ always certifies more, at a smaller radius R = σ·Φ⁻¹(τ)); it moves away from the
reference only when a larger σ keeps nearly all of the certified share (`SIGMA_KEEP`), i.e. a larger R is nearly
free. tests/test_defaults.py checks that `DEFAULTS` equals what `winner` reads from bench/results/defaults.json, so
a bench re-run that changes the winner fails until the defaults follow.

`why(family)` is the one-line reason the pages show, built from the JSON's figures (none are written here).
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from scipy.stats import norm

from certlib import resources

RESULTS_PATH = resources.project_root() / "bench" / "results" / "defaults.json"
# The Certified pixels page's decision and budget, at which the bench measures.
TAU, ALPHA, LEVELS, N, N0S = 0.75, 1e-3, (5.0, 25.0, 50.0), 256, (8, 32)
REFERENCE_SIGMA = 0.25
# A larger σ replaces the reference when it keeps at least this share of the reference's certified pixels.
SIGMA_KEEP = 0.9
# Methods whose certified tests per second are within this fraction of the best are tied: the bench times a pass to
# about ±5 % (bootstrap s.d. of its median CPU time), so a 10 % gap between two methods is not resolved. Ties are
# broken by what else the bench measured (`break_tie`): certified localization on the photo grid where every tied
# method has it, else the certified share, each with its own band of "no real difference"; the fastest of what
# remains wins. n0 is then the one with the best rate for that method, which is exact (same method, same seconds per
# pass, known passes).
TIE = 0.10
LOCALIZATION_TIE = 0.05       # certified GridPG, mean over cells and levels: one grid of 4 cells resolves no less
SHARE_TIE = 0.01              # certified share: a point on 3 photos / 10 digits is within their spread
FAMILY_NOUNS = {"imagenet": "photos", "digits": "digits"}


@dataclass(frozen=True)
class Default:
    method: str
    n0: int
    sigma: float


DEFAULTS: dict[str, Default] = {
    "imagenet": Default(method="gradcam", n0=8, sigma=0.25),
    "digits": Default(method="layercam", n0=8, sigma=0.25),
}
FALLBACK_FAMILY = "digits"
# The photo the home page's "Certify a photo" opens, chosen by `front_door_photo` from the bench (a test keeps the two
# equal): a front door must show a certificate about the class it explains, and a visible share of its most important
# pixels certified.
FRONT_DOOR_PHOTO = "photo:coffee"
FRONT_DOOR_LEVEL = 5.0


def for_family(family: str) -> Default:
    """The defaults of a model family ("imagenet", "digits"); other families (uploads) get the digits ones."""
    return DEFAULTS.get(family, DEFAULTS[FALLBACK_FAMILY])


# ------------------------------------------------------------------------------------------------ reading the bench

@lru_cache(maxsize=1)
def _load(path: str) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def load_results(path: Path = RESULTS_PATH) -> dict | None:
    """bench/results/defaults.json, or None where it is not shipped (an installed wheel)."""
    return _load(str(path))


def seconds_per_pass(rows: list[dict], timed: dict[str, float] | None = None) -> dict[str, float]:
    """Per method: seconds per sampling pass, from `timed` (the bench's side-by-side timing, results["speed"]) where
    it has the method, else the median over the method's rows of wall seconds per pass (noisy on a shared machine)."""
    by_method: dict[str, list[float]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r["seconds"] / r["passes"])
    timed = timed or {}
    return {m: timed.get(m, statistics.median(v)) for m, v in by_method.items()}


def _speed(results: dict, family: str) -> dict[str, float]:
    rows = _rows(results, family)
    return seconds_per_pass(rows, results.get("speed", {}).get(family, {}).get("seconds_per_pass"))


def _rows(results: dict, family: str, sigma: float | None = None) -> list[dict]:
    return [r for r in results.get("rows", []) if r["family"] == family
            and (sigma is None or abs(r["sigma"] - sigma) < 1e-9)]


def ranking(results: dict, family: str, sigma: float) -> list[dict]:
    """One entry per (method, n0) measured at σ, best first by certified pixel tests per second: the summed
    certified tests over the summed seconds (passes × the method's median seconds per pass). `complete` marks the
    entries measured on every image the family's rows cover; only those may win."""
    rows = _rows(results, family, sigma)
    speed = _speed(results, family)
    all_images = {r["image"] for r in rows}
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["n0"]), []).append(r)
    out = []
    for (method, n0), group in groups.items():
        certified = sum(sum(r["certified"]) for r in group)
        tests = sum(r["tests"] for r in group)
        seconds = sum(r["passes"] * speed[method] for r in group)
        out.append({"method": method, "n0": n0, "images": len(group), "complete": {r["image"] for r in group}
                    == all_images, "certified_share": certified / tests,
                    "certified_top_share": sum(sum(r["certified_top"]) for r in group) / tests,
                    "anytime_share": sum(sum(r["anytime_certified"]) for r in group) / tests,
                    "seconds_per_image": seconds / len(group), "tests_per_second": certified / seconds,
                    # certified *in* the top K% only: the pixels a user looks for first; reported beside the rank
                    "top_tests_per_second": sum(sum(r["certified_top"]) for r in group) / seconds,
                    "radius": group[0]["radius"]})
    return sorted(out, key=lambda e: (not e["complete"], -e["tests_per_second"]))


def sigma_tradeoff(results: dict, family: str, method: str, n0: int) -> list[dict]:
    """Certified share and R per σ for one method and n0, over the images measured at every σ (so the shares
    compare the same images), smallest σ first."""
    rows = [r for r in _rows(results, family) if r["method"] == method and r["n0"] == n0]
    sigmas = sorted({r["sigma"] for r in rows})
    common = set.intersection(*({r["image"] for r in rows if r["sigma"] == s} for s in sigmas)) if sigmas else set()
    out = []
    for s in sigmas:
        at = [r for r in rows if r["sigma"] == s and r["image"] in common]
        if at:
            out.append({"sigma": s, "radius": s * float(norm.ppf(TAU)), "images": len(at),
                        "certified_share": sum(sum(r["certified"]) for r in at) / sum(r["tests"] for r in at),
                        "smoothed_agrees": _smoothed_agrees(results, family, s, {r["image"] for r in at})})
    return out


def _smoothed_agrees(results: dict, family: str, sigma: float, image_keys: set[str]) -> float | None:
    """Share of the images on which the smoothed classifier's vote (on the estimation copies at σ) is the explained
    class; None when the bench did not record the votes."""
    votes = [v for v in results.get("smoothed", []) if v["family"] == family and abs(v["sigma"] - sigma) < 1e-9
             and v["image"] in image_keys]
    if len({v["image"] for v in votes}) < len(image_keys):
        return None
    return sum(v["top_class"] == v["target"] for v in votes) / len(votes)


def choose_sigma(tradeoff: list[dict]) -> float:
    """The reference σ, or the largest larger σ at which the trade-off favours the larger radius: it keeps
    ≥ SIGMA_KEEP of the reference's certified share, and the smoothed classifier still picks the explained class on
    as many images as at the reference (a certificate of a class the noisy copies no longer show is no gain)."""
    ref = next((t for t in tradeoff if abs(t["sigma"] - REFERENCE_SIGMA) < 1e-9), None)
    if ref is None:
        return REFERENCE_SIGMA
    larger = [t for t in tradeoff if t["sigma"] > REFERENCE_SIGMA
              and t["certified_share"] >= SIGMA_KEEP * ref["certified_share"]
              and t.get("smoothed_agrees") is not None and ref.get("smoothed_agrees") is not None
              and t["smoothed_agrees"] >= ref["smoothed_agrees"]]
    return max((t["sigma"] for t in larger), default=REFERENCE_SIGMA)


def tied_with_best(results: dict, family: str) -> list[dict]:
    """Each method's best (method, n0) entry among the complete ones at the reference σ whose rate is within TIE of
    the best rate, fastest first."""
    best = _best_n0_per_method([e for e in ranking(results, family, REFERENCE_SIGMA) if e["complete"]])
    if not best:
        return []
    top = best[0]["tests_per_second"]
    return [e for e in best if e["tests_per_second"] >= (1.0 - TIE) * top]


def localization(results: dict, family: str) -> dict[str, float]:
    """Per method: certified GridPG on the bench's photo grid, mean over its cells and K levels."""
    by_method: dict[str, list[float]] = {}
    for r in results.get("grid_rows", []):
        if r["family"] == family:
            by_method.setdefault(r["method"], []).extend(r["certified_gridpg"])
    return {m: statistics.fmean(v) for m, v in by_method.items()}


def break_tie(results: dict, family: str, tied: list[dict]) -> tuple[list[dict], str]:
    """The tied entries still in the running after the tie-break, fastest first, and the metric that decided."""
    loc = localization(results, family)
    if all(e["method"] in loc for e in tied):
        top = max(loc[e["method"]] for e in tied)
        return [e for e in tied if loc[e["method"]] >= top - LOCALIZATION_TIE], "localization"
    top = max(e["certified_share"] for e in tied)
    return [e for e in tied if e["certified_share"] >= top - SHARE_TIE], "certified share"


def winner(results: dict, family: str) -> Default | None:
    """What the bench says the family's defaults should be: among the methods tied for the most certified tests per
    second (TIE), those best by `break_tie`, the fastest of them; its best n0; σ by `choose_sigma`. None without
    complete rows."""
    tied = tied_with_best(results, family)
    if not tied:
        return None
    best = break_tie(results, family, tied)[0][0]
    return Default(best["method"], best["n0"], choose_sigma(sigma_tradeoff(results, family, best["method"],
                                                                           best["n0"])))


def slow_bounds(results: dict, family: str) -> list[dict]:
    """Methods timed but not measured on every image: the most certified tests per second they could reach (every
    test certified, the smallest n0, timed seconds per copy), against the best measured method's rate."""
    ranked = ranking(results, family, REFERENCE_SIGMA)
    best = next((e for e in ranked if e["complete"]), None)
    complete = {e["method"] for e in ranked if e["complete"]}
    timing = results.get("timing", {}).get(family, {})
    reference = timing.get("reference_seconds_per_copy", {})
    sampled = _speed(results, family)
    out = []
    for method, measured in timing.get("seconds_per_copy", {}).items():
        if method in complete:
            continue
        # the fastest of the probe, the quiet-machine timing and the rows sampled: the bound stays a bound
        spc = min(measured, reference.get(method, measured), sampled.get(method, measured))
        bound = 1.0 / ((min(N0S) + N) * spc) * _tests_per_image(results, family)
        out.append({"method": method, "seconds_per_copy": spc, "bound_tests_per_second": bound,
                    "best": None if best is None else best["method"],
                    "below_best": best is not None and bound < best["tests_per_second"]})
    return out


def _tests_per_image(results: dict, family: str) -> int:
    rows = _rows(results, family)
    return rows[0]["tests"] if rows else 0


def summarise(results: dict) -> dict:
    """What the bench writes beside its rows: per family the winner, the ranking at each σ, the σ trade-off of the
    winner and the bounds of the methods too slow to measure."""
    out: dict = {"defaults": {}, "families": {}}
    for family in sorted({r["family"] for r in results.get("rows", [])}):
        win = winner(results, family)
        out["defaults"][family] = None if win is None else asdict(win)
        sigmas = sorted({r["sigma"] for r in _rows(results, family)})
        out["families"][family] = {
            "ranking": {f"{s:g}": ranking(results, family, s) for s in sigmas},
            "sigma_tradeoff": [] if win is None else sigma_tradeoff(results, family, win.method, win.n0),
            "slow_bounds": slow_bounds(results, family)}
    return out


# ------------------------------------------------------------------------------------------------ the sentence

def _label(method: str) -> str:
    from certlib.attributions.methods import METHODS          # lazy: attributions imports torch and captum

    return METHODS[method].label if method in METHODS else method


def method_label(family: str) -> str:
    """The label of the family's default method ("CAM", "GradCAM", …), for sentences that name it."""
    return _label(for_family(family).method)


def _rate(tests_per_second: float) -> str:
    return f"{tests_per_second / 1000:.1f}k/s" if tests_per_second >= 1000 else f"{tests_per_second:.0f}/s"


def why(family: str, results: dict | None = None) -> str:
    """One line: why the family's default method is the default and what the other methods give, from the bench's
    figures (certified share of pixel tests at the page's decision and tests certified per second of sampling)."""
    if family not in DEFAULTS:
        return (f"Nothing was measured for this kind of model; it starts with the defaults of "
                f"{FAMILY_NOUNS[FALLBACK_FAMILY]}. " + why(FALLBACK_FAMILY, results))
    results = load_results() if results is None else results
    chosen = for_family(family)
    noun = FAMILY_NOUNS.get(family, family)
    ranked = [] if results is None else ranking(results, family, REFERENCE_SIGMA)
    mine = next((e for e in ranked if e["method"] == chosen.method and e["n0"] == chosen.n0), None)
    if mine is None:
        return (f"{_label(chosen.method)} (n0 = {chosen.n0}, σ = {chosen.sigma:g}) is the default for {noun}; "
                "the measurement behind it (bench/results/defaults.json) is not available here.")
    others = _best_n0_per_method([e for e in ranked if e["method"] != chosen.method])
    rest = ", ".join(_other(e) for e in others)
    other_n0 = [e for e in ranked if e["method"] == chosen.method and e["n0"] != chosen.n0]
    n0_note = "".join(f"; n0 = {e['n0']}: {e['certified_share']:.1%} at {_rate(e['tests_per_second'])}"
                      for e in other_n0)
    claim = _claim(results, family, chosen.method)
    return (f"{_label(chosen.method)} is the default for {noun}: {claim}. It certified "
            f"{mine['certified_share']:.1%} of the pixel tests on {mine['images']} {noun} at "
            f"{_rate(mine['tests_per_second'])} (σ = {REFERENCE_SIGMA:g}, R = {mine['radius']:.3f}, τ = {TAU:g}, "
            f"α = {ALPHA:g}, n0 = {chosen.n0}, n = {N}{n0_note}). Others: {rest}.")


def _claim(results: dict, family: str, method: str) -> str:
    """Why `method` won, in words: the fastest outright, or tied for it and chosen by the tie-break."""
    tied = tied_with_best(results, family)
    if [e["method"] for e in tied] == [method]:
        return "it certifies the most pixel tests per second of sampling"
    others = " and ".join(_label(e["method"]) for e in tied if e["method"] != method)
    kept, metric = break_tie(results, family, tied)
    if metric == "localization":
        loc = localization(results, family)
        how = "localizes as well as any of them on the photo grid (certified GridPG " + ", ".join(
            f"{_label(e['method'])} {loc[e['method']]:.0%}" for e in tied) + \
            f"; gaps under {LOCALIZATION_TIE * 100:.0f} points count as ties)"
    else:
        how = f"certifies as large a share as any of them (gaps under {SHARE_TIE * 100:.0f} point count as ties)"
    if len(kept) > 1:
        how += " and is the fastest of those"
    return (f"tied with {others} for the most certified pixel tests per second (within {TIE:.0%}, the timing's "
            f"resolution), it {how}")


def _other(entry: dict) -> str:
    """'GradCAM 85.5% (8.2k/s)', with the image count where a method ran on fewer images than the default."""
    where = "" if entry["complete"] else f" ({entry['images']} images)"
    return f"{_label(entry['method'])} {entry['certified_share']:.1%} at {_rate(entry['tests_per_second'])}{where}"


def _best_n0_per_method(entries: list[dict]) -> list[dict]:
    best: dict[str, dict] = {}
    for e in entries:
        if e["method"] not in best or e["tests_per_second"] > best[e["method"]]["tests_per_second"]:
            best[e["method"]] = e
    return sorted(best.values(), key=lambda e: -e["tests_per_second"])


# ------------------------------------------------------------------------------------------------- the front door

def front_door_candidates(results: dict, family: str = "imagenet") -> list[dict]:
    """Per bench photo, with the family's default method and n0 at its σ: the share of the top-FRONT_DOOR_LEVEL %
    pixels certified in that level, and whether the smoothed classifier (the same σ, n = N) votes for the explained
    class. Best first: agreeing photos, then by that share."""
    chosen = for_family(family)
    smoothed = {(s["image"], s["sigma"]): s for s in results.get("smoothed", [])}
    level = LEVELS.index(FRONT_DOOR_LEVEL)
    out = []
    for r in _rows(results, family, chosen.sigma):
        if r["method"] != chosen.method or r["n0"] != chosen.n0 or r["cell"] is not None:
            continue
        vote = smoothed.get((r["image"], r["sigma"]))
        out.append({"image": r["image"], "target": r["target"],
                    "top_share": r["certified_top"][level] / (r["pixels"] * FRONT_DOOR_LEVEL / 100),
                    "smoothed_class": None if vote is None else vote["top_class"],
                    "agrees": vote is not None and vote["top_class"] == r["target"]})
    return sorted(out, key=lambda c: (not c["agrees"], -c["top_share"]))


def front_door_photo(results: dict, family: str = "imagenet") -> str | None:
    """The photo the home page opens: the best of `front_door_candidates`, or None without measurements."""
    ranked = front_door_candidates(results, family)
    return ranked[0]["image"] if ranked else None


def why_front_door(results: dict | None = None) -> str:
    """One line for the home page: why this photo, with the figures of the bench."""
    results = load_results() if results is None else results
    ranked = [] if results is None else front_door_candidates(results)
    mine = next((c for c in ranked if c["image"] == FRONT_DOOR_PHOTO), None)
    if mine is None:
        return ""
    level = f"top {FRONT_DOOR_LEVEL:g}%"
    others = "; ".join(f"{c['image'].split(':', 1)[1]} {c['top_share']:.0%}"
                       + ("" if c["agrees"] else " (the smoothed classifier votes for another class)")
                       for c in ranked if c is not mine)
    return (f"Of the measured photos, this one has the largest share of its {level} pixels certified "
            f"({mine['top_share']:.0%}) with the smoothed classifier voting for the explained class; {others}.")
