"""Interactivity: wall time from a control change to the new page, through the real app (Streamlit AppTest).

    python bench/interactivity.py [--repeats 5]

Bundled model digits_sigma0.25, default image, method Saliency ("grad"), CPU. For each decision-only control of
the four certificate pages it alternates the control between two values (so every repeat is a real change) and
times `at.<widget>(key=...).set_value(v).run()` after one warm-up; targets: < 100 ms for a decision control, < 2 s
for a σ change on the certified-pixels page (a fresh sampling of n0 + n = 32 + 200 noisy attributions; every
repeat uses a σ never sampled before in this process, so no cache can serve it). Returning to an already sampled σ
(a cache hit) is timed too. After each run the page must have no exception, and where it is cheap the bench checks
that the page really changed (a metric or figure differs between the two values).

AppTest reruns the whole page script, while in the browser a widget inside an `st.fragment` reruns only the
fragment: these times are an upper bound of the server-side time; browser rendering is not included.
Writes bench/results/interactivity.json.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Before streamlit / certlib are imported: the metrics page's store must never touch the user's data directory.
os.environ["CERTEXPLORER_DATA_DIR"] = tempfile.mkdtemp(prefix="certexplorer_bench_")
sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from streamlit.elements.plotly_chart import PlotlyMixin  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from bench._common import timed, write  # noqa: E402

APP = str(ROOT / "app.py")
DECISION_TARGET_S, SIGMA_TARGET_S = 0.100, 2.0
NOTE = ("AppTest reruns the whole page script on every change (sidebar, sampling stage served from the cache, every "
        "figure), while in the browser a widget inside an st.fragment (the decision controls of every page) reruns "
        "only that fragment: median_ms (judged against the target) is an upper bound of the server-side time. "
        "fragment_body_median_ms is the wall time of the fragment's body in the same runs: the server-side work of "
        "a decision change in the browser, less Streamlit's own message handling. Browser-side rendering (Plotly) "
        "is included in neither.")


FRAGMENT_S: list[float] = []     # wall time of each st.fragment body run, in the order they ran


def _timing_fragment(func=None, **options):
    """st.fragment, with the body's wall time recorded: in the browser a decision control reruns only this body
    (plus Streamlit's own messaging), so it is the server-side time of a decision change without the rest of the
    page that AppTest reruns."""
    if func is None:
        return lambda f: _timing_fragment(f, **options)

    @functools.wraps(func)
    def body(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            FRAGMENT_S.append(time.perf_counter() - t0)
    return _real_fragment(body, **options)


_real_fragment, st.fragment = st.fragment, _timing_fragment   # pages look st.fragment up when they run

CHART_AT: dict[str, float] = {}   # chart key -> perf_counter when its st.plotly_chart call returned


def _recording_chart(real):
    @functools.wraps(real)
    def chart(self, *args, **kwargs):
        try:
            return real(self, *args, **kwargs)
        finally:
            CHART_AT[kwargs.get("key")] = time.perf_counter()
    return chart


PlotlyMixin.plotly_chart = _recording_chart(PlotlyMixin.plotly_chart)   # columns' .plotly_chart (the metrics page)


def open_page(page: str, **session_state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=600)
    for key, value in session_state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def snapshot(at: AppTest) -> tuple:
    """What the user sees that a decision can change, captured cheaply inside the timed run: metric values and the
    figures' specs (parsed only afterwards, by `fingerprint`)."""
    return [(m.label, m.value) for m in at.metric], [c.proto.spec for c in at.get("plotly_chart")]


def fingerprint(shot: tuple) -> str:
    metrics, specs = shot
    return json.dumps([metrics, [json.loads(s).get("data") for s in specs]], sort_keys=True, default=str)


def measure(at: AppTest, widget: str, key: str, values: list, repeats: int, target_s: float,
            must_change: bool = True) -> dict:
    """Time `at.<widget>(key=key).set_value(v).run()`, v cycling through `values` (each differs from the last)."""
    assert getattr(at, widget)(key=key).value != values[0], f"{key} already at {values[0]!r}"
    cycle = itertools.cycle(values)
    seen: list[tuple] = []
    exceptions: list[str] = []
    fragment_s: list[float] = []

    def change() -> None:
        value = next(cycle)
        FRAGMENT_S.clear()
        getattr(at, widget)(key=key).set_value(value).run()
        fragment_s.append(sum(FRAGMENT_S))
        exceptions.extend(str(e.value) for e in at.exception)
        seen.append(snapshot(at) if must_change else None)

    result = timed(change, repeats=repeats, warmup=1)
    fragment_s = fragment_s[1:]      # the warm-up's
    # The page changed: consecutive runs (different values) show different metrics or figures.
    prints = [fingerprint(shot) for shot in seen] if must_change else []
    changed = all(a != b for a, b in zip(prints, prints[1:])) if must_change else None
    return {"widget": widget, "key": key, "values": [repr(v) for v in values], **_summary(result, target_s),
            "fragment_body_median_ms": 1000 * statistics.median(fragment_s),
            "fragment_body_raw_ms": [1000 * t for t in fragment_s],
            "exceptions": exceptions, "page_changed_every_repeat": changed}


def _summary(result: dict, target_s: float) -> dict:
    return {"median_ms": 1000 * result["median_s"], "min_ms": 1000 * result["min_s"],
            "max_ms": 1000 * result["max_s"], "raw_ms": [1000 * t for t in result["raw_s"]],
            "target_ms": 1000 * target_s, "target_met": result["median_s"] < target_s}


def certified_pixels(repeats: int) -> dict:
    at = open_page("pages/certified_pixels.py", cp_n=200)
    assert at.slider(key="cp_sigma").value == 0.25 and at.session_state["cp_n0"] == 32
    rows = {
        "τ": measure(at, "slider", "cp_tau", [0.8, 0.75], repeats, DECISION_TARGET_S),
        "α": measure(at, "select_slider", "cp_alpha", [0.01, 1e-3], repeats, DECISION_TARGET_S),
        "top-K levels": measure(at, "multiselect", "cp_levels", [[1.0, 10.0, 50.0], [5.0, 25.0, 50.0]], repeats,
                                DECISION_TARGET_S),
        # Holm and Bonferroni often certify the same pixels: the radius and figures may not move, so no check.
        "correction": measure(at, "radio", "cp_correction", ["bonferroni", "holm"], repeats, DECISION_TARGET_S,
                              must_change=False),
    }
    fresh = iter([round(0.26 + 0.01 * i, 2) for i in range(repeats + 1)])   # σ never sampled in this process
    sampled: list[float] = []

    def new_sigma() -> None:
        sigma = next(fresh)
        at.slider(key="cp_sigma").set_value(sigma).run()
        assert not at.exception, at.exception
        sampled.append(sigma)

    result = timed(new_sigma, repeats=repeats, warmup=1)
    rows["σ (new: sampling 32 + 200)"] = {"widget": "slider", "key": "cp_sigma", "values": [repr(s) for s in sampled],
                                         **_summary(result, SIGMA_TARGET_S), "fragment_body_median_ms": None,
                                         "exceptions": [], "page_changed_every_repeat": None}
    rows["σ (cache hit)"] = measure(at, "slider", "cp_sigma", [0.25, sampled[0]], repeats, DECISION_TARGET_S)
    return rows


def uniform_smoothing(repeats: int) -> dict:
    at = open_page("pages/uniform_smoothing.py", us_n=128)
    return {
        "ε": measure(at, "select_slider", "us_eps_frac", [0.1, 0.05], repeats, DECISION_TARGET_S),
        "target cosine T": measure(at, "slider", "us_T", [0.8, 0.9], repeats, DECISION_TARGET_S),
        "δ_conf": measure(at, "select_slider", "us_delta", [0.01, 1e-3], repeats, DECISION_TARGET_S),
        "headline bound": measure(at, "radio", "us_kind", ["paper", "strict"], repeats, DECISION_TARGET_S),
    }


def sparsified_smoothgrad(repeats: int) -> dict:
    at = open_page("pages/sparsified_smoothgrad.py", sg_n=128)
    return {
        "K": measure(at, "slider", "sg_k", [20.0, 10.0], repeats, DECISION_TARGET_S),
        "ε": measure(at, "slider", "sg_eps", [0.05, 0.02], repeats, DECISION_TARGET_S),
        "τ": measure(at, "select_slider", "sg_level", [50.0, 20.0], repeats, DECISION_TARGET_S),
        "variant": measure(at, "radio", "sg_variant", ["scaled", "sparsified"], repeats, DECISION_TARGET_S),
        "α": measure(at, "select_slider", "sg_alpha", [0.1, 1e-3], repeats, DECISION_TARGET_S),
    }


METRICS_NOTE = ("The metrics page shows results only after a Compute (it never samples by itself): the bench computes "
                "the selection below first (compute_s). A decision change re-decides every stored run (here 4 "
                "methods x 4 grid cells = 16 runs, pixel_cert.decide each) and redraws 9 figures, so its time grows "
                "with the selection. The two-value rows find the deletion/insertion curves of both values stored "
                "after the warm-up; a value never chosen before (the 'new value' row) computes them (the model on "
                "every deletion and insertion step of every run, stored afterwards), and the page draws robustness "
                "and localization before that: first_figure_ms.")
PAGES = ("pages/certified_pixels.py", "pages/uniform_smoothing.py", "pages/sparsified_smoothgrad.py",
         "pages/metrics.py")
METRICS_SELECTION = {"mx_methods": ["grad", "input_x_gradient", "gradcam", "layercam"], "mx_images": "grids",
                     "mx_limit": 1, "mx_sigmas": [0.25], "mx_n": 100, "mx_n0": 32}


def metrics(repeats: int) -> dict:
    at = open_page("pages/metrics.py", **METRICS_SELECTION)
    t0 = time.perf_counter()
    at.button(key="mx_compute").click().run()
    compute_s = time.perf_counter() - t0
    assert not at.exception, at.exception
    assert at.get("plotly_chart"), "no results after Compute"
    rows = {
        "τ": measure(at, "slider", "mx_tau", [0.8, 0.75], repeats, DECISION_TARGET_S),
        "α": measure(at, "select_slider", "mx_alpha", [0.01, 1e-3], repeats, DECISION_TARGET_S),
        "top-K levels": measure(at, "multiselect", "mx_levels", [[1.0, 10.0, 50.0], [5.0, 25.0, 50.0]], repeats,
                                DECISION_TARGET_S),
        # The faithfulness curves of a new replacement are computed once and stored; the warm-up pays for both.
        "replacement": measure(at, "radio", "mx_replacement", ["zero", "blur"], repeats, DECISION_TARGET_S),
    }
    # The rows above alternate between two values, whose faithfulness curves (deletion / insertion: the model on
    # every step's image) are stored after their first visit. A τ never chosen before computes them for every run.
    # The page draws robustness and localization first and computes the curves after them (under a spinner), so
    # the first new figure is out long before the run ends: first_figure_ms is the time from the change to the end
    # of the robustness chart's st.plotly_chart call.
    fresh = iter([round(0.60 + 0.01 * i, 2) for i in range(repeats + 1)])
    new_fragment_s: list[float] = []
    first_figure_s: list[float] = []

    def new_tau() -> None:
        FRAGMENT_S.clear()
        CHART_AT.clear()
        t0 = time.perf_counter()
        at.slider(key="mx_tau").set_value(next(fresh)).run()
        assert not at.exception, at.exception
        new_fragment_s.append(sum(FRAGMENT_S))
        first_figure_s.append(CHART_AT["mx_rob"] - t0)

    result = timed(new_tau, repeats=repeats, warmup=1)
    rows["τ (new value: faithfulness curves computed)"] = {
        "widget": "slider", "key": "mx_tau", **_summary(result, DECISION_TARGET_S),
        "fragment_body_median_ms": 1000 * statistics.median(new_fragment_s[1:]),
        "fragment_body_raw_ms": [1000 * t for t in new_fragment_s[1:]],
        "first_figure_median_ms": 1000 * statistics.median(first_figure_s[1:]),
        "first_figure_raw_ms": [1000 * t for t in first_figure_s[1:]],
        "first_figure_target_met": statistics.median(first_figure_s[1:]) < DECISION_TARGET_S,
        "exceptions": [], "page_changed_every_repeat": None}
    return {"compute_s": compute_s, "controls": rows}


def apptest_compile_ms(repeats: int) -> dict:
    """AppTest gives every run a fresh ScriptCache, so it compiles app.py and the page (with Streamlit's "magic"
    rewrite) on every run; the server compiles them once. This is that per-run cost, included in median_ms."""
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache

    out = {}
    for page in PAGES:
        def compile_both() -> None:
            cache = ScriptCache()
            cache.get_bytecode(APP)
            cache.get_bytecode(str(ROOT / page))
        out[page] = 1000 * timed(compile_both, repeats=repeats, warmup=1)["median_s"]
    return out


def print_table(results: dict) -> None:
    print(f"{'page':36s} {'control':28s} {'median ms':>10s} {'min':>8s} {'max':>8s} {'target':>8s}  met "
          f"{'fragment ms':>12s}")
    for page, rows in results.items():
        for name, row in rows.items():
            fragment = row["fragment_body_median_ms"]
            print(f"{page:36s} {name:28s} {row['median_ms']:10.1f} {row['min_ms']:8.1f} {row['max_ms']:8.1f} "
                  f"{row['target_ms']:8.0f}  {'yes' if row['target_met'] else 'NO ':3s} "
                  f"{'' if fragment is None else f'{fragment:12.1f}'}")
            if "first_figure_median_ms" in row:
                print(f"{'':36s} {'  first new figure':28s} {row['first_figure_median_ms']:10.1f} "
                      f"{min(row['first_figure_raw_ms']):8.1f} {max(row['first_figure_raw_ms']):8.1f} "
                      f"{row['target_ms']:8.0f}  {'yes' if row['first_figure_target_met'] else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    t0 = time.perf_counter()
    metric_page = metrics(args.repeats)
    results = {"certified_pixels (n=200, n0=32)": certified_pixels(args.repeats),
               "uniform_smoothing (n=128)": uniform_smoothing(args.repeats),
               "sparsified_smoothgrad (n=128)": sparsified_smoothgrad(args.repeats),
               "metrics (4 methods, 1 grid, n=100)": metric_page["controls"]}
    print_table(results)
    failures = {f"{p} / {c}": r["exceptions"] for p, rows in results.items() for c, r in rows.items()
                if r["exceptions"]}
    unchanged = [f"{p} / {c}" for p, rows in results.items() for c, r in rows.items()
                 if r["page_changed_every_repeat"] is False]
    path = write("interactivity", {
        "setup": {"model": "digits_sigma0.25", "image": "default (first held-out digit)", "method": "grad",
                  "device": "cpu", "repeats": args.repeats, "warmup": 1, "driver": "streamlit AppTest",
                  "metrics_selection": METRICS_SELECTION, "metrics_compute_s": metric_page["compute_s"],
                  "sampling_n_note": "n only changes the sampling stage; the uniform and SmoothGrad pages use a "
                                     "smaller n than their defaults to keep the bench short (decision controls "
                                     "work on cached means/sums whose size does not depend on n)."},
        "note": NOTE, "metrics_note": METRICS_NOTE, "apptest_compile_ms_per_run": apptest_compile_ms(args.repeats),
        "results": results, "exceptions": failures, "page_unchanged_by_a_change": unchanged,
        "total_s": time.perf_counter() - t0})
    print(f"wrote {path} in {time.perf_counter() - t0:.0f} s")
    if failures or unchanged:
        print("PROBLEMS:", failures, unchanged)
        sys.exit(1)


if __name__ == "__main__":
    main()
