"""What the three top-level certificates share: argument checks, tqdm progress, the config's common part, and the
notebook view (`_repr_html_`: the overlay as an inline PNG above the verdict)."""
from __future__ import annotations

import base64
import html
from typing import Any

import numpy as np

import certlib
from certlib.runs import export
from certlib.api import store
from certlib.errors import CertlibError


def batch_size_arg(batch_size: object) -> int | None:
    """'auto' (or None) -> None, the engine's automatic size; an integer is checked by the engine."""
    if batch_size is None or batch_size == "auto":
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise CertlibError(f"batch_size must be 'auto' or a positive integer, got {batch_size!r}")
    return int(batch_size)


def choice(name: str, value: object, allowed) -> str:
    if value not in allowed:
        raise CertlibError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return str(value)


class Progress:
    """The engine's progress(done, total) as a tqdm bar (text; it shows in terminals and notebooks alike), opened on
    the first report and closed by `close`; does nothing when disabled."""

    def __init__(self, enabled: bool, what: str) -> None:
        self.enabled, self.what, self.bar = bool(enabled), what, None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.what, unit="copy", leave=False)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_config(certificate: str, described: dict, **parameters: Any) -> dict:
    """The JSON-able config of a result: which certificate, what was certified, every parameter, certlib's version."""
    return {"certificate": certificate, **described, **parameters, "certlib_version": certlib.__version__}


def html_view(rgb: np.ndarray, verdict: str, rows: dict[str, Any], title: str) -> str:
    """A small HTML block: the picture (upscaled with nearest neighbours when small) beside the verdict and a table."""
    upscale = max(1, 224 // max(1, rgb.shape[0]))
    png = base64.b64encode(export.png_bytes(np.ascontiguousarray(rgb[..., :3]), upscale=upscale)).decode()
    table = "".join(f"<tr><td style='text-align:left'>{html.escape(str(k))}</td>"
                    f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>" for k, v in rows.items())
    return (f"<div style='display:flex;gap:1em;align-items:flex-start'><img src='data:image/png;base64,{png}' "
            f"alt='{html.escape(title)}' style='image-rendering:pixelated'/><div><b>{html.escape(title)}</b>"
            f"<p>{html.escape(verdict)}</p><table>{table}</table></div></div>")


def rgba(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H,W,3] -> [H,W,4], opaque."""
    return np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, dtype=np.uint8)], axis=-1)


class Saving:
    """`save(path)` for result dataclasses; `certlib.load(path)` reads any of them back."""

    def save(self, path) -> str:
        """Write this result to `path` (.npz: the arrays plus a JSON description; no pickle). Returns the path."""
        return store.save(self, path)


def rounded(values: np.ndarray, ks) -> dict[str, float]:
    return {f"{k:g}": round(float(v), 6) for k, v in zip(ks, np.asarray(values))}
