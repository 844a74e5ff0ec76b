"""Where the CAM family reads its feature map, and how that layer's output is laid out as a map [B, K, h, w].

A CNN layer's output already is a feature map: K channels on an h x w grid (`ConvFeatureMap`, the identity). A Vision
Transformer's layer output is a token sequence [B, N, D]: first `prefix_tokens` tokens that stand for no image
position (the class token; DeiT's distillation token; timm's register tokens), then one token per image patch in
row-major order over the patch grid, h = H / patch height by w = W / patch width (the patch embedding is a strided
convolution whose output is flattened row by row). `PatchTokenGrid` drops the prefix tokens and lays the D features
of the h·w patch tokens out as channels on that grid, [B, D, h, w]: every CAM formula then applies unchanged, with
the embedding dimensions as channels, and the map is upsampled to the input like a CNN's.

Which layer of a ViT: the *output of the last encoder block's first LayerNorm* (torchvision `ln_1`, timm `norm1`),
i.e. the normalised tokens that enter the last self-attention. Not the last block's output: the classifier reads
only the class token there (through a LayerNorm applied to each token separately), so the patch tokens get exactly
zero gradient and GradCAM would be 0 everywhere. At the last `ln_1` every patch token still reaches the class token
through the last attention (as keys and values), so its gradient says how that patch's features move the score.
The same layer serves timm models that average all tokens (global_pool='avg').

One small adapter per architecture family finds that layer from the module's structure (no flags, no names of
registered models): `TorchvisionViT` (torchvision.models.VisionTransformer: conv_proj, class_token, encoder.layers)
and `TimmViT` (timm's VisionTransformer and DeiT: patch_embed, blocks, cls_token, num_prefix_tokens).

    fmap = feature_map_for(module, "net.encoder.layers.encoder_layer_11.ln_1")   # PatchTokenGrid
    grid = fmap.to_grid(layer_output, input_size=(224, 224))                     # [B, 768, 14, 14]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from certlib.errors import CertlibError


class FeatureMap(Protocol):
    """How the CAM family reads one layer: its name and the map layout of its output."""

    layer_name: str

    def to_grid(self, output: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        """The layer's output -> the feature map [B, K, h, w] the CAM formulas use (a view where possible)."""

    def from_grid(self, grid: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """A (modified) feature map [M·B, K, h, w] -> a layer output of `output`'s layout [M·B, ...], whatever
        `to_grid` dropped taken from `output` [B, ...], tiled as torch's repeat does (row m·B + b gets row b).
        AblationCAM feeds it back into the model."""


@dataclass(frozen=True)
class ConvFeatureMap:
    """A convolutional layer: its output [B, K, h, w] is the feature map as it is."""

    layer_name: str

    def to_grid(self, output: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise CertlibError(f"the CAM layer {self.layer_name!r} must output a feature map [B,K,h,w], got {got}")
        return output

    def from_grid(self, grid: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return grid


@dataclass(frozen=True)
class PatchTokenGrid:
    """A transformer layer: output tokens [B, N, D] = `prefix_tokens` non-patch tokens, then the patch tokens in
    row-major order over the grid of (H / patch_size[0]) x (W / patch_size[1]) patches."""

    layer_name: str
    prefix_tokens: int
    patch_size: tuple[int, int]

    def grid_shape(self, input_size: tuple[int, int]) -> tuple[int, int]:
        (height, width), (ph, pw) = input_size, self.patch_size
        return height // ph, width // pw

    def to_grid(self, output: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.dim() != 3:
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise CertlibError(f"the CAM layer {self.layer_name!r} of a vision transformer must output tokens "
                               f"[B,N,D], got {got}")
        b, n, d = output.shape
        h, w = self.grid_shape(input_size)
        if n != self.prefix_tokens + h * w:
            raise CertlibError(f"{self.layer_name!r} outputs {n} tokens; a {input_size[0]}x{input_size[1]} input "
                               f"in {self.patch_size[0]}x{self.patch_size[1]} patches gives {h}x{w} patch tokens "
                               f"after {self.prefix_tokens} class/distillation token(s)")
        # [B, h·w, D] -> [B, D, h·w] -> [B, D, h, w]: token i is patch (i // w, i % w), its features the channels.
        return output[:, self.prefix_tokens:].transpose(1, 2).reshape(b, d, h, w)

    def from_grid(self, grid: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        patches = grid.flatten(2).transpose(1, 2)                           # [M·B, h·w, D], row-major as to_grid
        prefix = output[:, :self.prefix_tokens].repeat(grid.shape[0] // output.shape[0], 1, 1)
        return torch.cat([prefix, patches.to(output.dtype)], dim=1)


# ----------------------------------------------------------------------------------------- architecture adapters

class TorchvisionViT:
    """torchvision.models.VisionTransformer: patch embedding `conv_proj` (stride = patch_size), one `class_token`
    prepended, `encoder.layers` of EncoderBlocks whose first LayerNorm is `ln_1`."""

    @staticmethod
    def matches(module: nn.Module) -> bool:
        encoder = getattr(module, "encoder", None)
        return (isinstance(getattr(module, "conv_proj", None), nn.Conv2d) and hasattr(module, "class_token")
                and isinstance(getattr(encoder, "layers", None), nn.Module))

    @staticmethod
    def blocks_path() -> str:
        return "encoder.layers"

    @staticmethod
    def feature_map(module: nn.Module, prefix: str, layer_name: str | None = None) -> PatchTokenGrid | None:
        if layer_name is None:
            blocks = list(module.encoder.layers.named_children())
            if not blocks or not hasattr(blocks[-1][1], "ln_1"):
                return None
            layer_name = f"{prefix}encoder.layers.{blocks[-1][0]}.ln_1"
        stride = module.conv_proj.stride
        return PatchTokenGrid(layer_name, prefix_tokens=1, patch_size=(int(stride[0]), int(stride[1])))


class TimmViT:
    """timm's VisionTransformer and its subclasses (DeiT, distilled DeiT): `patch_embed` (with `patch_size`),
    `blocks` whose first LayerNorm is `norm1`, and `num_prefix_tokens` = class + distillation + register tokens."""

    @staticmethod
    def matches(module: nn.Module) -> bool:
        embed = getattr(module, "patch_embed", None)
        return (embed is not None and hasattr(embed, "patch_size") and hasattr(module, "cls_token")
                and isinstance(getattr(module, "blocks", None), nn.Module))

    @staticmethod
    def blocks_path() -> str:
        return "blocks"

    @staticmethod
    def prefix_tokens(module: nn.Module) -> int:
        if hasattr(module, "num_prefix_tokens"):
            return int(module.num_prefix_tokens)
        # Older timm: count the tokens prepended before the patches.
        return sum(getattr(module, t, None) is not None for t in ("cls_token", "dist_token"))

    @staticmethod
    def feature_map(module: nn.Module, prefix: str, layer_name: str | None = None) -> PatchTokenGrid | None:
        if layer_name is None:
            blocks = list(module.blocks.named_children())
            if not blocks or not hasattr(blocks[-1][1], "norm1"):
                return None
            layer_name = f"{prefix}blocks.{blocks[-1][0]}.norm1"
        size = module.patch_embed.patch_size
        size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        return PatchTokenGrid(layer_name, prefix_tokens=TimmViT.prefix_tokens(module), patch_size=size)


VIT_ADAPTERS: tuple[type, ...] = (TorchvisionViT, TimmViT)


def find_vit(module: nn.Module) -> tuple[str, nn.Module, type] | None:
    """(its qualified-name prefix ending in '.' or '', the ViT module, its adapter) for the first Vision Transformer
    inside `module` (itself included, e.g. under an input-normalising wrapper), or None."""
    for name, sub in module.named_modules():
        for adapter in VIT_ADAPTERS:
            if adapter.matches(sub):
                return (f"{name}." if name else ""), sub, adapter
    return None


def is_vit(module: nn.Module) -> bool:
    return find_vit(module) is not None


def default_vit_layer(module: nn.Module) -> str | None:
    """The layer the CAM family explains on a ViT (see the module docstring), or None for a non-ViT module."""
    found = find_vit(module)
    if found is None:
        return None
    fmap = found[2].feature_map(found[1], found[0])
    return None if fmap is None else fmap.layer_name


def feature_map_for(module: nn.Module, layer_name: str) -> FeatureMap:
    """How to read `layer_name` of `module`: a patch-token grid when the layer sits in a ViT's encoder blocks
    (any layer there outputs tokens [B, N, D]), else the layer's own convolutional feature map."""
    found = find_vit(module)
    if found is not None:
        prefix, vit, adapter = found
        if layer_name.startswith(f"{prefix}{adapter.blocks_path()}."):
            fmap = adapter.feature_map(vit, prefix, layer_name)
            if fmap is not None:
                return fmap
    return ConvFeatureMap(layer_name)


def default_cam_layer(module: nn.Module) -> str | None:
    """A CAM layer for a module nobody described: a ViT's token layer (above); a torchvision-style ResNet's `layer4`;
    the `features` block of VGG / MobileNet / EfficientNet-style nets; else the last convolution; None without one.
    Searched under an input-normalising wrapper too (names are qualified, e.g. 'net.layer4')."""
    vit_layer = default_vit_layer(module)
    if vit_layer is not None:
        return vit_layer
    names = dict(module.named_modules())
    for name, sub in names.items():          # outermost first: a wrapper's 'net.layer4' before anything deeper
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "layer4" and hasattr(names.get(name.rpartition(".")[0], module), "fc"):
            return name
        if leaf == "features" and isinstance(sub, nn.Sequential) and name.count(".") <= 1:
            return name
    convs = [name for name, sub in names.items() if isinstance(sub, nn.modules.conv._ConvNd)]
    return convs[-1] if convs else None
