"""scikit-learn's 8x8 digits as 32x32 images in [0, 1], with one fixed train / held-out split.

The split lives here, in one place, so that training (`certlib.models.train_digits`) and the image gallery
(`certlib.data.images`) agree: every bundled digit and every digit inside a bundled 2x2 grid is held out.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

SPLIT_SEED = 20260423
HELD_OUT_FRACTION = 0.2
DIGIT_SIZE = 32


@lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0  # ink = 1, background = 0
    return images, bunch.target.astype(np.int64)


def upsample_digits(images8: np.ndarray) -> np.ndarray:
    """[N,8,8] in [0,1] -> [N,1,32,32] in [0,1] (bilinear, values stay in range)."""
    t = torch.from_numpy(np.ascontiguousarray(images8, dtype=np.float32))[:, None]
    up = F.interpolate(t, size=(DIGIT_SIZE, DIGIT_SIZE), mode="bilinear", align_corners=False)
    return up.clamp_(0.0, 1.0).numpy()


@lru_cache(maxsize=1)
def split_indices() -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, held_out_idx): a seeded stratified split, stable across library versions."""
    _, labels = _raw_digits()
    rng = np.random.default_rng(SPLIT_SEED)
    train, held = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_held = int(round(HELD_OUT_FRACTION * len(idx)))
        held.append(idx[:n_held])
        train.append(idx[n_held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def load_split(part: str) -> tuple[np.ndarray, np.ndarray]:
    """Images [N,1,32,32] float32 in [0,1] and labels [N] for part 'train' or 'held_out'."""
    if part not in ("train", "held_out"):
        raise ValueError(f"part must be 'train' or 'held_out', got {part!r}")
    images8, labels = _raw_digits()
    train_idx, held_idx = split_indices()
    idx = train_idx if part == "train" else held_idx
    return upsample_digits(images8[idx]), labels[idx]


def held_out_source_indices() -> np.ndarray:
    """Indices into sklearn's `load_digits()` of the held-out digits (for provenance in the gallery)."""
    return split_indices()[1]
