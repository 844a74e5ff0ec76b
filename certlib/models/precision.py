"""Numeric precision and memory format of the attribution passes: fp32 (default) or bf16 autocast; channels_last.

bf16 is a speed option for GPUs with bf16 tensor cores (A100, H100) and for CPUs with bf16 instructions (AMX or
AVX-512-BF16; refused on other CPUs, which would only emulate it): convolutions and matmuls run in bf16 with fp32
accumulation, everything else (and every returned map) stays fp32. It changes the base function h, so it is part of
a run's identity (`compute_key`); the certificate stays valid for the function that was actually smoothed, since
randomized smoothing makes no assumption about h. How far the maps move is measured, not assumed:
tests/test_precision.py requires every other method's top-K masks under bf16 to agree with fp32 on ≥ 99% of pixels
(measured on the bundled model: 99.5-99.9%; mean top-10% IoU 0.97-0.99).

channels_last (NHWC) is a memory format, not a precision: the same fp32 math in another order of summation, so
maps move by float rounding only (tests/test_precision.py bounds it). On a GPU it comes with bf16 (what tensor cores
want); on the CPU it is used for the architectures where it was measured faster (CPU_CHANNELS_LAST). It is a fixed
table, not a timing at load: a run's counts must not depend on how busy the machine was when the model loaded.
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


# CPU forward + backward to the input, channels_last ÷ NCHW, per architecture (ModelSpec.arch), measured by
# bench/cpu_layout.py (bench/results/cpu_layout.json: AMD EPYC Zen 5, 1 torch thread, fp32, min of 5 interleaved
# repeats): the bundled digits CNN at batch 32, EfficientNet-Lite0 and ResNet-18 at 224², batch 8. The Intel
# CPU with AMX measured Lite0 at 38.8 vs 45.5 ms per copy (0.85). Only membership counts; the ratios are the record.
# Architectures not measured (VGG, ViT, uploaded TorchScript) stay NCHW.
CPU_CHANNELS_LAST: dict[str, float] = {"cnn": 0.86, "efficientnet_lite": 0.77, "resnet": 0.83}


def channels_last(device: str, precision: str, arch: str | None) -> bool:
    """Whether a model of `arch` runs its convolutions in channels_last on `device` at `precision`."""
    kind = torch.device(device).type
    if kind == "cuda":
        return check_precision(precision) == "bf16"
    return kind == "cpu" and arch in CPU_CHANNELS_LAST


def prepare_module(module: nn.Module, device: str, precision: str, arch: str | None = None) -> nn.Module:
    """channels_last weights where `channels_last` says so; otherwise unchanged. On the CPU the weights alone set
    the format (oneDNN runs a convolution in channels_last when its weight is), so inputs need no conversion."""
    check_precision_on(device, precision)
    if channels_last(device, precision, arch):
        return module.to(memory_format=torch.channels_last)
    return module


def is_channels_last(module: nn.Module) -> bool:
    """True when the module's 4-D weights are stored channels_last (what prepare_module made of them). A weight
    with one input channel (or 1×1 kernels) is both layouts at once, so only the others tell."""
    weights = [p for p in module.parameters() if p.dim() == 4]
    telling = [w for w in weights if w.is_contiguous(memory_format=torch.channels_last) != w.is_contiguous()]
    return bool(telling) and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)


# ---------------------------------------------------------------------------------------------- bf16 on the CPU

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")      # /proc/cpuinfo flags of CPUs with native bf16 arithmetic


def _cpu_flags() -> set[str] | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_bf16_reason() -> str | None:
    """None when this CPU computes bf16 natively (AMX or AVX-512-BF16), else why bf16 is not offered on it."""
    flags = _cpu_flags()
    if flags is not None:
        found = flags & set(CPU_BF16_FLAGS)
    else:    # no /proc/cpuinfo (not Linux): ask torch's own CPU probe
        probes = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
        found = {flag for flag, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()}
    if found:
        return None
    return ("this CPU has neither AMX nor AVX-512-BF16 (no 'amx_bf16' or 'avx512_bf16' flag): bf16 would be "
            "emulated and slower than fp32")


def check_precision_on(device: str, precision: object) -> str:
    """`precision`, checked for `device`: bf16 on a CPU only where it is native (cpu_bf16_reason)."""
    precision = check_precision(precision)
    if precision == "bf16" and torch.device(device).type == "cpu":
        reason = cpu_bf16_reason()
        if reason is not None:
            raise CertlibError(f"precision 'bf16' on the CPU is not offered here: {reason}")
    return precision


def prepare_input(x: torch.Tensor, precision: str) -> torch.Tensor:
    """The input in the memory format that matches `prepare_module` (same values, only the strides differ)."""
    if check_precision(precision) == "bf16" and x.is_cuda and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
