"""Every download the app offers, as bytes (no UI): overlay PNGs, per-pixel CSVs, JSON summaries, the metrics
table, the sparse certificate's curves and the uniform certificate's bounds."""
from __future__ import annotations

import io
import json
from typing import Sequence

import numpy as np
from PIL import Image


def png_bytes(rgb: np.ndarray, upscale: int = 1) -> bytes:
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def pixel_csv(clean_attr: np.ndarray, k_percents: tuple[float, ...], classes: np.ndarray, votes: np.ndarray,
              top_frequency: np.ndarray, pvalues: np.ndarray, n: int) -> bytes:
    """One row per pixel: position, clean attribution, and per K: certified class (1/0/-1), votes for the mode
    among n, frequency in the top K%, p-value."""
    h, w = clean_attr.shape
    rows, cols = np.mgrid[0:h, 0:w]
    columns = [("row", rows.ravel(), "%d"), ("col", cols.ravel(), "%d"), ("attribution", clean_attr.ravel(), "%.6g")]
    for i, k in enumerate(k_percents):
        tag = f"top{k:g}"
        columns += [(f"{tag}_class", classes[i].ravel(), "%d"), (f"{tag}_votes_of_{n}", votes[i].ravel(), "%d"),
                    (f"{tag}_frequency", top_frequency[i].ravel(), "%.4f"), (f"{tag}_pvalue", pvalues[i].ravel(), "%.4g")]
    header = ",".join(name for name, _, _ in columns)
    data = np.column_stack([c for _, c, _ in columns]).astype(object)
    buf = io.StringIO()
    np.savetxt(buf, data, fmt=[f for _, _, f in columns], delimiter=",", header=header, comments="")
    return buf.getvalue().encode()


def summary_json(config: dict, summary: dict) -> bytes:
    return (json.dumps({"config": config, "summary": summary}, indent=2, default=json_default) + "\n").encode()


def json_default(v):
    """json.dumps default= for numpy scalars and arrays."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


# ------------------------------------------------------------------------------------------------ metrics (§6)

def metrics_csv(rows: list[dict]) -> bytes:
    """The metric rows of certlib.runs.sweep (one per run and K level) as CSV; columns in first-seen order, NaN and
    None as empty cells."""
    import csv
    import math

    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None or (isinstance(row.get(c), float) and math.isnan(row[c]))
                         else json_default(row[c]) if isinstance(row[c], np.generic) else row[c] for c in columns})
    return buf.getvalue().encode()


# --------------------------------------------------------------------------------- sparsified SmoothGrad (§5)

def smoothgrad_pixel_csv(smoothgrad: np.ndarray, mean: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                         top_mask: np.ndarray, certified_mask: np.ndarray, radii: np.ndarray) -> bytes:
    """One row per pixel: position, plain SmoothGrad, the smoothed sparsified value ĝ with its simultaneous bounds,
    whether it is in the estimated top K and certified at the chosen ε, and its certified radius ε_j (empty when
    it is not certified even at ε = 0)."""
    h, w = np.shape(mean)
    rows, cols = np.mgrid[0:h, 0:w]
    radius = np.where(np.asarray(radii) > 0, radii, np.nan).ravel()
    columns = [("row", rows.ravel(), "%d"), ("col", cols.ravel(), "%d"),
               ("smoothgrad", np.ravel(smoothgrad), "%.6g"), ("g_hat", np.ravel(mean), "%.6g"),
               ("lower", np.ravel(lower), "%.6g"), ("upper", np.ravel(upper), "%.6g"),
               ("in_top_k", np.ravel(top_mask).astype(int), "%d"),
               ("certified", np.ravel(certified_mask).astype(int), "%d"), ("certified_eps", radius, "%.6g")]
    buf = io.StringIO()
    buf.write(",".join(name for name, _, _ in columns) + "\n")
    for i in range(h * w):
        buf.write(",".join("" if isinstance(v[i], float) and np.isnan(v[i]) else fmt % v[i]
                           for _, v, fmt in columns) + "\n")
    return buf.getvalue().encode()


def overlap_curve_csv(curves: list[tuple[str, np.ndarray, np.ndarray]],
                      points: list[tuple[str, str, float, float, float]]) -> bytes:
    """The certified-overlap curves (label, ε, certified overlap) and the empirical points (label, kind, ε,
    empirical overlap, certified overlap at that ε) in one long table."""
    buf = io.StringIO()
    buf.write("series,label,eps,overlap,certified_at_eps\n")
    for label, eps, certified in curves:
        for e, c in zip(np.ravel(eps), np.ravel(certified)):
            buf.write(f"certified,{label},{e:.6g},{c:.6g},{c:.6g}\n")
    for label, kind, e, empirical, certified in points:
        buf.write(f"{kind},{label},{e:.6g},{empirical:.6g},{certified:.6g}\n")
    return buf.getvalue().encode()


def uniform_curves_csv(eps: np.ndarray, curves: dict[str, np.ndarray], points: Sequence = ()) -> bytes:
    """The uniform certificate's download: the bound curves over ε, then the measured points (two CSV blocks)."""
    lines = ["eps," + ",".join(f"bound_{k}" for k in curves)]
    lines += [f"{e:.6g}," + ",".join(f"{curves[k][i]:.6f}" for k in curves) for i, e in enumerate(eps)]
    if points:
        lines += ["", "eps,kind,smoothed_cosine,base_cosine,label_kept,how"]
        lines += [f"{p.eps:.6g},{p.kind},{p.cosine:.6f},{p.base_cosine:.6f},{int(p.label_kept)},\"{p.how}\""
                  for p in points]
    return ("\n".join(lines) + "\n").encode()
