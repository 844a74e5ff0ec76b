"""Numeric precision of the attribution passes: fp32 (default) or bf16 autocast with channels_last memory.

bf16 is a speed option for GPUs with bf16 tensor cores (A100, H100): convolutions and matmuls run in bf16 with fp32
accumulation, everything else (and every returned map) stays fp32. It changes the base function h, so it is part of
a run's identity (`compute_key`); the certificate stays valid for the function that was actually smoothed, since
randomized smoothing makes no assumption about h. How far the maps move is measured, not assumed:
tests/test_precision.py requires every other method's top-K masks under bf16 to agree with fp32 on ≥ 99% of pixels
(measured on the bundled model: 99.5-99.9%; mean top-10% IoU 0.97-0.99).
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch
from torch import nn

from certlib.errors import CertlibError

PRECISIONS = ("fp32", "bf16")
# Methods whose bf16 maps fell outside the tolerance: they always run in fp32, whatever the model's precision.
FP32_ONLY = {"occlusion": "under bf16 its top-50% masks agreed with fp32 on only 97.7% of pixels (the logit drops of "
                          "neighbouring windows differ by less than bf16's resolution)"}


def check_precision(precision: object) -> str:
    if precision not in PRECISIONS:
        raise CertlibError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return str(precision)


def compute_key(device: str, precision: str) -> str:
    """What a stored or cached result computed on `device` at `precision` is keyed by ('cpu', 'cuda', 'cuda+bf16')."""
    return device if check_precision(precision) == "fp32" else f"{device}+{precision}"


def autocast(device: torch.device | str, precision: str, method: str | None = None) -> ContextManager:
    """bf16 autocast on `device` for precision 'bf16'; a no-op for 'fp32' and for the FP32_ONLY methods."""
    if check_precision(precision) == "fp32" or method in FP32_ONLY:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def prepare_module(module: nn.Module, device: str, precision: str) -> nn.Module:
    """channels_last weights for bf16 on CUDA (NHWC is what tensor-core convolutions want); otherwise unchanged."""
    if check_precision(precision) == "bf16" and torch.device(device).type == "cuda":
        return module.to(memory_format=torch.channels_last)
    return module


def prepare_input(x: torch.Tensor, precision: str) -> torch.Tensor:
    """The input in the memory format that matches `prepare_module` (same values, only the strides differ)."""
    if check_precision(precision) == "bf16" and x.is_cuda and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
