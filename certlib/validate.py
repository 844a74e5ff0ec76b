"""Argument validation shared by every certificate: one definition of a valid σ, τ, α, n, K, ε or r, the same
messages everywhere. Numpy scalars are accepted (a slider or an array element gives them), bools are refused
(True is an int in Python, never a valid σ). Each check raises CertlibError (a ValueError) naming the argument."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from certlib.errors import CertlibError

MAX_N = 10_000_000      # samples of one run: far beyond any budget, small enough that n + 1 floats always fit


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def positive(name: str, value: object, allow_zero: bool = False) -> float:
    """A finite number > 0 (>= 0 with allow_zero)."""
    ok = _is_real(value) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise CertlibError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")
    return float(value)


def sigma(value: object) -> float:
    """The Gaussian noise level σ > 0."""
    return positive("sigma", value)


def radius(value: object, name: str = "radius") -> float:
    """A smoothing-ball radius r > 0."""
    return positive(name, value)


def eps(value: object) -> float:
    """A perturbation size ε >= 0."""
    return positive("eps", value, allow_zero=True)


def tau(value: object) -> float:
    """The vote threshold τ in [0.5, 1): below 1/2 the certified class would not even be the majority under attack."""
    if not _is_real(value) or not 0.5 <= value < 1:
        raise CertlibError(f"tau must be in [0.5, 1), got {value!r}")
    return float(value)


def alpha(value: object) -> float:
    """An error probability α in the open interval (0, 1)."""
    if not _is_real(value) or not 0 < value < 1:
        raise CertlibError(f"alpha must be in (0, 1), got {value!r}")
    return float(value)


def count(name: str, value: object, low: int = 1, high: int = MAX_N) -> int:
    """An integer in [low, high] (sample counts, batch sizes)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise CertlibError(f"{name} must be an integer in [{low:,}, {high:,}], got {value!r}")
    return int(value)


def k_percents(values: Sequence[float], name: str = "k_percents") -> tuple[float, ...]:
    """A non-empty sequence of top-K% levels in (0, 100]."""
    is_sequence = isinstance(values, (Sequence, np.ndarray)) and not isinstance(values, str)
    ks = tuple(values) if is_sequence else ()
    if not ks or not all(_is_real(k) and 0 < k <= 100 for k in ks):
        raise CertlibError(f"{name} must be a non-empty sequence of numbers in (0, 100], got {values!r}")
    return tuple(float(k) for k in ks)


def all_finite(t: torch.Tensor) -> bool:
    """True iff no value is NaN or ±inf. A finite sum proves it at the cost of one reduction (an inf or NaN anywhere
    makes the sum inf or NaN); only a non-finite sum, e.g. an overflow of huge finite values, needs the exact test."""
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())
