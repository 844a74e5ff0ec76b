"""The 12 attribution methods of Anani et al. (2025), in three families, and which models each applies to.

This module is the registry the workbench picks from. Each method maps a batch of inputs [B,C,H,W] in [0,1] and a
target class to signed per-pixel maps [B,H,W] (channel sum); the implementations are issue #3's (DESIGN §3.4).
"""
from __future__ import annotations

from dataclasses import dataclass

from certlib.errors import CertlibError
from certlib.models import ModelSpec


@dataclass(frozen=True)
class MethodInfo:
    key: str
    label: str
    family: str            # "gradient" | "perturbation" | "activation"
    summary: str
    needs_cam_layer: bool = False
    needs_canonizer: bool = False


METHODS: dict[str, MethodInfo] = {m.key: m for m in (
    MethodInfo("grad", "Gradient", "gradient", "absolute input gradient |∂y/∂x| of the target logit"),
    MethodInfo("guided_backprop", "Guided Backprop", "gradient", "gradient with negative signals cut at each ReLU"),
    MethodInfo("input_x_gradient", "Input × Gradient", "gradient", "input times its gradient"),
    MethodInfo("integrated_gradients", "Integrated Gradients", "gradient",
               "path integral of gradients from a black image, 20 steps"),
    MethodInfo("lrp", "LRP", "gradient", "layer-wise relevance propagation (zennit, EpsilonPlus composite)",
               needs_canonizer=True),
    MethodInfo("rise", "RISE", "perturbation", "random masks weighted by the target score; masks fixed per image"),
    MethodInfo("occlusion", "Occlusion", "perturbation", "score drop when a sliding patch is blacked out"),
    MethodInfo("cam", "CAM", "activation", "class activation map of the last conv layer", needs_cam_layer=True),
    MethodInfo("gradcam", "GradCAM", "activation", "last conv activations weighted by mean gradients",
               needs_cam_layer=True),
    MethodInfo("gradcam_pp", "GradCAM++", "activation", "GradCAM with higher-order gradient weights",
               needs_cam_layer=True),
    MethodInfo("ablationcam", "AblationCAM", "activation", "score drop when each activation channel is removed",
               needs_cam_layer=True),
    MethodInfo("layercam", "LayerCAM", "activation", "element-wise positive-gradient-weighted activations",
               needs_cam_layer=True),
)}

DEFAULT_METHOD = "grad"
FAMILIES = ("gradient", "perturbation", "activation")


def get_method(key: str) -> MethodInfo:
    if key not in METHODS:
        raise CertlibError(f"unknown attribution method {key!r}; choose one of {list(METHODS)}")
    return METHODS[key]


def unavailable_reason(method: str, spec: ModelSpec) -> str | None:
    """None when `method` applies to the model described by `spec`, else one sentence why not."""
    info = get_method(method)
    if info.needs_cam_layer and spec.cam_layer is None:
        if spec.arch == "vit":
            return f"{info.label} needs a convolutional feature map; {spec.key} is a vision transformer."
        return f"{info.label} needs a known last convolutional layer, which {spec.label} does not declare."
    if info.needs_canonizer and spec.arch == "torchscript":
        return f"{info.label} needs the model's layer structure, which a TorchScript upload does not expose."
    return None
