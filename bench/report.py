"""Markdown tables from bench/results/{pixel_cert,memory,interactivity}.json (the numbers in docs/performance.md).

    python bench/report.py
"""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _ms(t: dict) -> str:
    return f"{t['median_s'] * 1e3:.0f} ({t['min_s'] * 1e3:.0f}–{t['max_s'] * 1e3:.0f})"


def pixel_cert_tables(data: dict) -> str:
    out = ["| model | method | n0 + n | certlib ms | floor ms | certlib / floor | method / plain fwd+bwd |",
           "|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        t = r["timings"]
        out.append(f"| {r['model']} | {r['method']} | {r['n0']} + {r['n']} | {_ms(t['certlib'])} | {_ms(t['floor'])} | "
                   f"**{r['ratio_vs_floor']:.2f}** | {r['method_cost_vs_fwd_bwd']:.2f} |")
    if not any("paper_pipeline_b8" in r["timings"] for r in data["rows"]):
        return "\n".join(out)
    out += ["", "| model | method | certlib ms | paper pipeline (batch 8) ms | speedup | NoiseTunnel + numpy counting ms "
                "| speedup | best possible vs paper (paper / floor) |", "|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        t = r["timings"]
        if "paper_pipeline_b8" not in t:
            continue
        nt = "not run" if "captum_noise_tunnel" not in t else \
            f"{(t['captum_noise_tunnel']['median_s'] + t['numpy_counting']['median_s']) * 1e3:.0f}"
        ntx = f"{r['speedup_vs_noise_tunnel_plus_counting']:.2f}×" if "captum_noise_tunnel" in t else "–"
        best = t["paper_pipeline_b8"]["median_s"] / t["floor"]["median_s"]
        out.append(f"| {r['model']} | {r['method']} | {_ms(t['certlib'])} | {_ms(t['paper_pipeline_b8'])} | "
                   f"**{r['speedup_vs_paper_pipeline']:.2f}×** | {nt} | {ntx} | {best:.2f}× |")
    return "\n".join(out)


def memory_table(data: dict) -> str:
    ns = sorted({r["n"] for r in data["rows"]})
    out = ["| pipeline | " + " | ".join(f"n = {n}" for n in ns) + " | spread |", "|---|" + "---|" * (len(ns) + 1)]
    for pipeline, spread in data["peak_spread_mib"].items():
        cells = []
        for n in ns:
            row = next(r for r in data["rows"] if r["pipeline"] == pipeline and r["n"] == n)
            cells.append(f"{row['peak_rss_above_baseline_mib']:.0f} MiB ({row['seconds']:.1f} s)")
        out.append(f"| {pipeline} | " + " | ".join(cells) + f" | {spread:.0f} MiB |")
    return "\n".join(out)


def interactivity_table(data: dict) -> str:
    out = ["| page | control | median ms (min–max) | fragment body ms | target ms | met |", "|---|---|---|---|---|---|"]
    for page, controls in data["results"].items():
        for name, c in controls.items():
            if not isinstance(c, dict) or "median_ms" not in c:
                continue
            frag = f"{c['fragment_body_median_ms']:.0f}" if c.get("fragment_body_median_ms") is not None else "–"
            out.append(f"| {page} | {name} | {c['median_ms']:.0f} ({c['min_ms']:.0f}–{c['max_ms']:.0f}) | {frag} | "
                       f"{c.get('target_ms', 0):.0f} | {'yes' if c.get('target_met') else '**no**'} |")
    return "\n".join(out)


def normalisation_table(data: dict) -> str:
    levels = data["rows"][0]["levels"]
    head = " | ".join(f"certified top-{k:g}%" for k in levels)
    out = [f"| method | normalisation | {head} | certified top-1% (alone) | empty noisy top-1% masks | s per run |",
           "|---|---|" + "---|" * len(levels) + "---|---|---|"]
    for r in data["rows"]:
        shares = " | ".join(f"{v:.4f}" for v in r["certified top-K"])
        out.append(f"| {r['method']} | {r['normalisation']} | {shares} | {r['certified_top1_alone']:.4f} | "
                   f"{r['empty_noisy_top1_masks']:.2f} | {r['seconds_per_run']:.2f} |")
    p = data["prediction"]
    out.append(f"\nPrediction certified (α = {p['alpha']:g}) on {len(p['images'])} held-out digits: {p['certified']}; "
               f"certified beyond R = {data['radius']:.3f} for the explained class: {p['covers_R']}.")
    return "\n".join(out)


def photo_model_table(data: dict) -> str:
    keys = list(data["per_copy"])
    out = ["| method | " + " | ".join(f"{k} ms/copy (estimate / measured)" for k in keys)
           + " | × fwd+bwd at 224² | default certificate at 224² (288 copies) |",
           "|---|" + "---|" * len(keys) + "---|---|"]
    by_key = {k: {r["method"]: r for r in data["per_copy"][k]} for k in keys}
    for method in by_key[keys[0]]:
        cells = [f"{by_key[k][method]['seconds_per_copy'] * 1e3:,.0f} ({by_key[k][method]['estimate_over_measured']:.2f})"
                 for k in keys]
        r = by_key[keys[0]][method]
        total = r["default_certificate_s"]
        when = f"{total:.0f} s" if total < 90 else f"{total / 60:.1f} min" if total < 5400 else f"{total / 3600:.1f} h"
        out.append(f"| {method} | " + " | ".join(cells) + f" | {r['vs_fwd_bwd']:.1f} | {when} |")
    out += ["", "| model | method | default certificate end to end (32 + 256 copies) |", "|---|---|---|"]
    for key, rows in data["end_to_end"].items():
        for r in rows:
            out.append(f"| {key} | {r['method']} | **{r['seconds']:.1f} s** |")
    res = data["resolution"]
    out.append(f"\n160² keeps the 224² top-1 on {res['agree']} of {res['photos']} bundled photos "
               f"({res['agree_on_subject_photos']} of the {res['subject_photos']} whose class names their subject).")
    return "\n".join(out)


def anytime_tables(data: dict) -> str:
    """The tables of docs/performance.md §(h): the default certificate against the planned fixed-n test per case,
    the α splits and priors side by side, and the timings."""
    import statistics

    runs, settings = data["runs"], data["settings"]
    default = f"{settings['default_plan_share']}/{settings['default_prior_floor']}"
    out = ["| model | image | method | n0 | final | live median | live worst | frames behind | oracle median |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        d, o = r["variants"][default], r["oracle"][str(settings["default_plan_share"])]
        out.append(f"| {r['model']} | {r['image']} | {r['method']} | {r['n0']} | {d['final']:.3f} | "
                   f"{statistics.median(d['live']):.3f} | {min(d['live']):.3f} | {d['frames_behind']:g} | "
                   f"{statistics.median(o['live']):.3f} |")
    out.append("\n---\n")
    out.append("| n0 | plan share / prior floor | final (worst case) | live median, Gradient photos | live median, "
               "elsewhere | live worst | frames behind (worst) | goals met |")
    out.append("|---|---|---|---|---|---|---|---|")
    for e in data["summary"]:
        cells = [f"{e[k]:.3f}" if isinstance(e[k], float) else "—" for k in
                 ("final_min", "live_median_gradient_photos", "live_median_elsewhere", "live_worst")]
        out.append(f"| {e['n0']} | {e['variant']} | " + " | ".join(cells)
                   + f" | {e['frames_behind_max']:g} | {'—' if e['goals_met'] is None else e['goals_met']} |")
    out.append("\n---\n")
    out.append("| model | image | method | first frame | first certified frame | sampling to the budget | "
               "re-deciding the whole run |")
    out.append("|---|---|---|---|---|---|---|")
    for r in runs:
        if r["n0"] != 32:
            continue
        t = r["timing"]
        cert = "—" if t["first_certified_s"] is None else \
            f"{t['first_certified_s']:.2f} s ({t['first_certified_passes']} passes)"
        out.append(f"| {r['model']} | {r['image']} | {r['method']} | {t['first_frame_s']:.2f} s "
                   f"({t['first_frame_passes']} passes) | {cert} | {t['sampling_s']:.1f} s | "
                   f"{t['redecide_whole_run_s'] * 1000:.0f} ms |")
    return "\n".join(out)


def sweep_scale_table(data: dict) -> str:
    out = ["| engine | actors × threads | runs per minute | wall | actor start-up |", "|---|---|---|---|---|"]
    for r in data["rows"]:
        who = f"{r['actors']} × {r['threads']}" if r["engine"] == "ray" else f"{r['threads']} thread(s)"
        start = f"{r['actor_startup_s']:.1f} s" if "actor_startup_s" in r else "—"
        out.append(f"| {r['engine']} | {who} | {r['runs_per_minute']:.1f} | {r['wall_s']:.1f} s | {start} |")
    s = data["summary"]
    out.append(f"\nRay overhead per run (1 actor): {s['ray_overhead_per_run_1_actor']:.1%}; 2 actors / 1: "
               f"{s['two_actors_over_one']:.2f}×")
    return "\n".join(out)


def main() -> None:
    for name, render in (("pixel_cert", pixel_cert_tables), ("pixel_cert_resnet50_cpu", pixel_cert_tables),
                         ("pixel_cert_gpu", pixel_cert_tables), ("memory", memory_table),
                         ("memory_gpu", memory_table), ("interactivity", interactivity_table),
                         ("normalisation", normalisation_table), ("photo_model", photo_model_table),
                         ("anytime", anytime_tables), ("sweep_scale", sweep_scale_table)):
        data = _load(name)
        if data is not None:
            print(f"## {name}\n\n{render(data)}\n")


if __name__ == "__main__":
    main()
