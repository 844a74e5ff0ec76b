"""Does the published uniform-smoothing bound hold? Two experiments (docs/uniform_bound.md):

1. Exact piecewise-constant g (three regions: shared part, cap of B(x), cap of B(x+δ)) in d = 2, 3: a grid search
   over the cap values' angles for the smallest margin "cos(h(x), h(x+δ)) − bound", for both bounds and several ε/r.
2. The bundled model: for several methods, images and ε, random directions and the PGD attribution attack, the
   smallest margin "measured cosine − bound" for both bounds, with ‖h‖'s confidence bound as on the page.

    python bench/uniform_bound.py [--images 8] [--n 256] [--methods grad,integrated_gradients,lrp]

Writes bench/results/uniform_bound.json and the figures docs/uniform_bound_*.png.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import write  # noqa: E402
from certlib.data import images
from certlib.models import registry as models
from certlib.smoothing import sampling
from certlib.uniform import bound as ub, cert as uniform_cert, check as uniform_check  # noqa: E402
from certlib.attributions.methods import make_attribution  # noqa: E402


def exact_region_search(d: int, eps_over_r: float, steps: int = 721) -> dict:
    """g = e1 on the shared part, unit vectors at angles θ_x (cap of B(x)) and θ_m (cap of B(x+δ)) in the (e1, e2)
    plane. h(x) = f·e1 + u·v(θ_x), h(x+δ) = f·e1 + u·v(θ_m) exactly, with u the cap fraction."""
    u = ub.ball_non_overlap_fraction(d, 1.0, eps_over_r)
    f, a = 1.0 - u, 2.0 * u
    th = np.linspace(-np.pi, np.pi, steps)
    tx, tm = np.meshgrid(th, th, indexing="ij")
    hx, hy = f + u * np.cos(tx), u * np.sin(tx)
    mx, my = f + u * np.cos(tm), u * np.sin(tm)
    hn = np.hypot(hx, hy)
    cos = (hx * mx + hy * my) / (hn * np.hypot(mx, my))
    out = {"d": d, "eps_over_r": eps_over_r, "cap_fraction_u": u, "a": a}
    for kind in ub.BOUNDS:
        bound = np.vectorize(lambda h: ub.cosine_lower_bound(float(h), 1.0, d, 1.0, eps_over_r, kind))(hn)
        margin = cos - bound
        i = np.unravel_index(np.argmin(margin), margin.shape)
        out[kind] = {"min_margin": float(margin[i]), "theta_x": float(tx[i]), "theta_moved": float(tm[i]),
                     "h_norm": float(hn[i]), "cosine": float(cos[i]), "bound": float(bound[i])}
    return out


SLOW = ("integrated_gradients", "occlusion", "rise")   # ≥ 20 model passes per attribution on the CPU


def model_margins(methods: list[str], n_images: int, n: int, radius: float, delta: float,
                  slow_images: int) -> dict:
    model = models.load_model("digits_sigma0.25", device="cpu")
    gallery = images.digit_gallery()
    d = 32 * 32
    grid = [float(e) for e in uniform_cert.empirical_eps_grid(d, radius)]
    rows = []
    for method in methods:
        t0 = time.perf_counter()
        picks = np.linspace(0, len(gallery) - 1, slow_images if method in SLOW else n_images).astype(int)
        for idx in picks:
            entry = gallery[int(idx)]
            x = images.prepare_image(entry.pixels, 1, (32, 32), True)
            target = int(model.predict_proba(x).argmax())
            fn = make_attribution(method, model, seed=0)
            smoothed = sampling.sample_uniform_mean(lambda xb: fn.attribute(xb, target), x, radius, n, seed=0)
            cert = uniform_cert.certify_uniform(smoothed, d, delta)
            for p in uniform_check.empirical_cosines(model, method, x, target, smoothed, grid):
                rows.append({"method": method, "image": entry.key, "eps": p.eps, "kind": p.kind,
                             "cosine": p.cosine, "base_cosine": p.base_cosine, "label_kept": p.label_kept,
                             "strict": cert.bound(p.eps, "strict"), "paper": cert.bound(p.eps, "paper"),
                             "strict_plugin": ub.cosine_lower_bound(cert.h_hat_norm, 1.0, d, radius, p.eps, "strict"),
                             "paper_plugin": ub.cosine_lower_bound(cert.h_hat_norm, 1.0, d, radius, p.eps, "paper"),
                             "h_hat_norm": cert.h_hat_norm, "h_norm_lower": cert.h_norm_lower})
        print(f"{method}: {len(picks)} images in {time.perf_counter() - t0:.0f} s", flush=True)
    summary = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        summary[method] = {k: min(r["cosine"] - r[k] for r in mine)
                           for k in ("strict", "paper", "strict_plugin", "paper_plugin")}
        summary[method]["min_cosine_attack"] = min(r["cosine"] for r in mine if r["kind"] == "attack")
        summary[method]["min_base_cosine_attack"] = min(r["base_cosine"] for r in mine if r["kind"] == "attack")
    return {"radius": radius, "n": n, "delta": delta, "eps_grid": grid, "d": d, "rows": rows, "summary": summary}


def figures(exact: list[dict], real: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=120)
    for d in sorted({e["d"] for e in exact}):
        rows = [e for e in exact if e["d"] == d]
        x = [e["eps_over_r"] for e in rows]
        ax.plot(x, [e["paper"]["min_margin"] for e in rows], "o--", label=f"published bound, d = {d}")
        ax.plot(x, [e["strict"]["min_margin"] for e in rows], "s-", label=f"strict bound, d = {d}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="ε / r", ylabel="min over g of cos − bound", title="Exact three-region g: worst margin")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "uniform_bound_exact.png")
    plt.close(fig)

    rows = real["rows"]
    methods = list(real["summary"])
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.6), dpi=120, sharey=True)
    for ax, method in zip(np.atleast_1d(axes), methods):
        mine = [r for r in rows if r["method"] == method]
        eps = sorted({r["eps"] for r in mine})
        for kind, style in (("strict", "g-"), ("paper", "m--")):
            ax.plot(eps, [min(r[kind] for r in mine if r["eps"] == e) for e in eps], style,
                    label=f"{kind} bound (lowest ‖h‖ over images)")
        for kind, marker, colour in (("random", "o", "tab:blue"), ("attack", "x", "tab:red")):
            pts = [r for r in mine if r["kind"] == kind]
            ax.scatter([r["eps"] for r in pts], [r["cosine"] for r in pts], marker=marker, color=colour, s=18,
                       label=f"measured, {kind}")
        ax.set(title=method, xlabel="ε", ylim=(-1.05, 1.05))
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("cos(ĥ(x), ĥ(x+δ))")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "uniform_bound_model.png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--slow-images", type=int, default=2, help=f"images for {', '.join(SLOW)}")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--radius", type=float, default=4.0)
    parser.add_argument("--delta", type=float, default=1e-3)
    parser.add_argument("--methods", default="grad,integrated_gradients,lrp")
    args = parser.parse_args()
    exact = [exact_region_search(d, e) for d in (2, 3) for e in (0.05, 0.1, 0.2, 0.3, 0.5, 0.8)]
    for e in exact:
        print(f"d={e['d']} ε/r={e['eps_over_r']}: min margin published {e['paper']['min_margin']:+.5f}, "
              f"strict {e['strict']['min_margin']:+.2e}")
    real = model_margins(args.methods.split(","), args.images, args.n, args.radius, args.delta,
                         args.slow_images)
    for method, s in real["summary"].items():
        print(f"{method}: min margin strict {s['strict']:+.4f}, published {s['paper']:+.4f} "
              f"(plug-in ‖ĥ‖: {s['strict_plugin']:+.4f} / {s['paper_plugin']:+.4f}); lowest attacked smoothed "
              f"cosine {s['min_cosine_attack']:.4f}, base {s['min_base_cosine_attack']:.4f}")
    figures(exact, real)
    print(write("uniform_bound", {"exact_region_search": exact, "bundled_model": real}))


if __name__ == "__main__":
    main()
