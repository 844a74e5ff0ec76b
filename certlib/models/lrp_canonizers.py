"""zennit canonizers for the architectures certlib writes itself (torchvision's come with zennit).

A canonizer rewrites a model, for the duration of an LRP call, into the form LRP's rules assume: BatchNorms fused
into the convolution before them, and every sum of two branches an explicit module so that it gets its own rule
(zennit's `Sum`, to which the composites give the normalising rule). Imported only when LRP runs.
"""
from __future__ import annotations

import torch
from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, SequentialMergeBatchNorm
from zennit.layer import Sum

from certlib.models.efficientnet_lite import MBConv


class ExactSequentialMergeBatchNorm(SequentialMergeBatchNorm):
    """zennit's SequentialMergeBatchNorm, exact for any batch-norm ε.

    zennit folds running_var + ε into the convolution and then turns the BatchNorm into "identity" by setting its
    statistics to (mean 0, var 1) — but keeps ε, so the BatchNorm still divides by sqrt(1 + ε). With PyTorch's
    ε = 1e-5 that is negligible; EfficientNet-Lite's TensorFlow ε = 1e-3 shifts each of its 49 BatchNorms by 0.05%,
    so the canonized model would explain a slightly different function. ε is set to 0 while merged, restored after."""

    def register(self, linears, batch_norm) -> None:
        self.batch_norm_eps = batch_norm.eps
        super().register(linears, batch_norm)
        batch_norm.eps = 0.0

    def remove(self) -> None:
        super().remove()
        self.batch_norm.eps = self.batch_norm_eps


class MBConvResidualCanonizer(AttributeCanonizer):
    """Gives each residual MBConv block of EfficientNet-Lite an explicit `Sum` for `input + branch`."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name: str, module: torch.nn.Module) -> dict | None:
        if isinstance(module, MBConv) and module.use_residual:
            return {"forward": cls.forward.__get__(module), "canonizer_sum": Sum()}
        return None

    @staticmethod
    def forward(self: MBConv, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return self.canonizer_sum(torch.stack([x, out], dim=-1))


class EfficientNetLiteCanonizer(CompositeCanonizer):
    """BatchNorms merged into the convolutions before them (all of EfficientNet-Lite's, depthwise included, sit in
    one Sequential with their convolution) and residual sums made explicit."""

    def __init__(self) -> None:
        super().__init__((ExactSequentialMergeBatchNorm(), MBConvResidualCanonizer()))
