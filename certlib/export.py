"""Downloads: overlay PNG, per-pixel CSV and a JSON summary of a pixel certificate (bytes, no UI)."""
from __future__ import annotations

import io
import json

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
    return (json.dumps({"config": config, "summary": summary}, indent=2, default=_plain) + "\n").encode()


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


# ------------------------------------------------------------------------------------------------ metrics (§6)

def metrics_csv(rows: list[dict]) -> bytes:
    """The metric rows of certlib.sweep (one per run and K level) as CSV; columns in first-seen order, NaN and
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
                         else _plain(row[c]) if isinstance(row[c], np.generic) else row[c] for c in columns})
    return buf.getvalue().encode()
