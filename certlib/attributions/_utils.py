"""Helpers shared by the attribution methods in `certlib.attributions.methods` (no UI, no method logic of their own).

Everything here is batch-exact: a helper applied to B noisy copies at once gives, per copy, what it gives for that
copy alone. The certification sampler relies on this when it feeds batches of copies.
"""
from __future__ import annotations

import contextlib
import math
import weakref
from functools import lru_cache
from typing import Iterator, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from certlib.errors import CertlibError

# Input values per forward pass, the unit in which chunked methods (RISE, Occlusion, IG, AblationCAM) bound memory.
# GPU: 32 ImageNet images without autograd, 8 with it (a ResNet-50 forward+backward keeps ~1 KiB of activations per
# input value, so 8 x 3x224x224 is ~1.2 GB). CPU: about one ImageNet image's worth either way; larger CPU batches
# are not faster (measured on the bundled CNN: ~1 ms per 32x32 image up to 128 rows, 1.3-1.7 ms from 256 rows on,
# as activations fall out of cache). Small inputs get proportionally more rows per pass.
GPU_FORWARD_BUDGET = 32 * 3 * 224 * 224
GPU_BACKWARD_BUDGET = 8 * 3 * 224 * 224
CPU_BUDGET = 3 * 224 * 224


def rows_per_pass(sample_numel: int, device: torch.device | str, *, backward: bool = False) -> int:
    """How many inputs of `sample_numel` values one forward pass on `device` may hold (at least 1)."""
    if torch.device(device).type == "cuda":
        budget = GPU_BACKWARD_BUDGET if backward else GPU_FORWARD_BUDGET
    else:
        budget = CPU_BUDGET
    return max(1, budget // max(1, sample_numel))


def as_targets(target: int | Sequence[int] | torch.Tensor, batch: int, num_classes: int,
               device: torch.device) -> torch.Tensor:
    """One class index per copy as a LongTensor [B]: an int is shared by all copies, a sequence gives one each."""
    if isinstance(target, torch.Tensor):
        t = target.detach().to(device=device).reshape(-1)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise CertlibError(f"target must hold integer class indices, got dtype {t.dtype}")
        t = t.long()
    elif isinstance(target, (list, tuple)):
        t = torch.as_tensor([_check_int(v, num_classes) for v in target], dtype=torch.long, device=device)
    else:
        t = torch.full((batch,), _check_int(target, num_classes), dtype=torch.long, device=device)
    if t.numel() == 1 and batch != 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise CertlibError(f"target must be one class index or one per input; got {t.numel()} for {batch} inputs")
    if bool(((t < 0) | (t >= num_classes)).any()):
        raise CertlibError(f"target class out of range: this model has classes 0..{num_classes - 1}, "
                           f"got {sorted(set(t.tolist()))}")
    return t.contiguous()


def _check_int(value, num_classes: int) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise CertlibError(f"target class must be an integer, got {value!r}")
    v = int(value.__index__())
    if not 0 <= v < num_classes:    # before any tensor is built: 10**20 does not fit an int64
        raise CertlibError(f"target class out of range: this model has classes 0..{num_classes - 1}, got {v}")
    return v


def select(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [N, classes], targets [N] -> the target score of each row [N]."""
    return logits.gather(1, targets.view(-1, 1)).squeeze(1)


def input_gradient_and_logits(module: nn.Module, x: torch.Tensor,
                              targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂y_t/∂x per row for x [B,C,H,W] that requires grad, the detached logits of the same forward pass): one
    backward of the summed target scores (rows are independent through an eval-mode model, so each row gets its
    own gradient)."""
    logits = module(x)
    grad, = torch.autograd.grad(select(logits, targets).sum(), x)
    return grad, logits.detach()


def channel_sum(attr: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] per-channel attributions -> [B,H,W] float32 (the channel sum, design §3.1 step 1)."""
    return attr.detach().float().sum(dim=1)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Layer-resolution maps [B,h,w] or [B,1,h,w] -> [B,H,W], bilinear with half-pixel centres (align_corners=False),
    as captum's LayerAttribution.interpolate and torchcam do."""
    if maps.dim() == 3:
        maps = maps.unsqueeze(1)
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return maps[:, 0]


def get_layer(module: nn.Module, name: str) -> nn.Module:
    try:
        return module.get_submodule(name)
    except AttributeError:
        raise CertlibError(f"the model has no module named {name!r}") from None


@contextlib.contextmanager
def capture_output(layer: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of `layer` during forward passes run inside the block (store['output'])."""
    store: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs, output: torch.Tensor) -> None:
        store["output"] = output

    handle = layer.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def first_conv(module: nn.Module) -> nn.Module:
    """The first convolution in module order: the layer zennit's SpecialFirstLayerMapComposite gives the box rule."""
    for sub in module.modules():
        if isinstance(sub, nn.modules.conv._ConvNd):
            return sub
    raise CertlibError("the model has no convolution layer for LRP's box rule")


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the value of interest has been seen."""


def first_layer_input(module: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What `layer` receives when the model is fed x, without running the rest of the model.

    Used for LRP's box bounds: the models normalise inside, so the first layer sees (x - mean) / std, and feeding
    all-black and all-white images gives the bounds whatever the normalisation is.
    """
    store: list[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        store.append(inputs[0].detach())
        raise _StopForward

    handle = layer.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            module(x)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not store:
        raise CertlibError("the model's forward pass never reached its first convolution")
    return store[0]


# ------------------------------------------------------------------------------------------- model tail (AblationCAM)

class _LeafTracer(fx.Tracer):
    """fx tracer that keeps one named module opaque, so the traced graph has a node for its output."""

    def __init__(self, leaf: str) -> None:
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        # Modules that declare `fx_leaf` compute from their input's shape (TensorFlow-style "SAME" padding), which
        # symbolic tracing cannot follow; they are called as they are.
        return (module_qualified_name == self.leaf or getattr(m, "fx_leaf", False)
                or super().is_leaf_module(m, module_qualified_name))


_TAILS: "weakref.WeakKeyDictionary[nn.Module, dict[str, fx.GraphModule | None]]" = weakref.WeakKeyDictionary()


def layer_tail(module: nn.Module, layer_name: str) -> fx.GraphModule | None:
    """The part of `module` after `layer_name` as a module taking that layer's output, or None when it cannot be cut.

    AblationCAM re-scores the model once per activation channel; running only the tail (for a ResNet: avgpool + fc)
    instead of the whole network makes that affordable. Cutting is valid only when everything after the layer
    depends on the layer's output alone (no skip connection around it), which is checked on the traced graph.
    The tail shares the model's submodules and parameters (no copy). Cached per model and layer.
    """
    per_model = _TAILS.setdefault(module, {})
    if layer_name not in per_model:
        per_model[layer_name] = _build_tail(module, layer_name)
    return per_model[layer_name]


def _build_tail(module: nn.Module, layer_name: str) -> fx.GraphModule | None:
    try:
        graph = _LeafTracer(layer_name).trace(module)
    except Exception:  # any untraceable forward (data-dependent control flow, TorchScript, ...): no fast path
        return None
    nodes = list(graph.nodes)
    cuts = [n for n in nodes if n.op == "call_module" and n.target == layer_name]
    if len(cuts) != 1:
        return None  # the layer is not called, or called twice: no single cut point
    cut = cuts[0]
    tail = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cut: tail.placeholder("activation")}
    for node in nodes[nodes.index(cut) + 1:]:
        for arg in node.all_input_nodes:
            if arg in env:
                continue
            if arg.op == "get_attr":  # a buffer or parameter read before the cut (e.g. normalisation constants)
                env[arg] = tail.node_copy(arg, lambda n: env[n])
            else:
                return None  # the tail reads an earlier activation: it does not depend on the layer output alone
        env[node] = tail.node_copy(node, lambda n: env[n])
    return fx.GraphModule(module, tail)


# ------------------------------------------------------------------------------------------------------ RISE masks

@lru_cache(maxsize=2)  # 1000 masks at 224x224 are 200 MB: keep the current image size and one more
def rise_masks(n_masks: int, grid: int, p_keep: float, height: int, width: int, seed: int,
               device: str) -> torch.Tensor:
    """RISE masks [N,H,W] in [0,1] (Petsiuk et al. 2018, §3.2), a pure function of its arguments.

    Each mask: an s x s grid of cells kept with probability p, upsampled bilinearly to (s+1)·ceil(H/s) x
    (s+1)·ceil(W/s) and cropped at a random offset in [0, cell) per axis, so mask edges do not all fall on the same
    grid lines. Drawn on the CPU from a generator seeded with `seed` (so every device gets the same masks), then
    moved to `device`. Cached: the certificate's base function must reuse exactly these masks for every noisy copy.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    cell_h, cell_w = math.ceil(height / grid), math.ceil(width / grid)
    up_h, up_w = (grid + 1) * cell_h, (grid + 1) * cell_w
    cells = (torch.rand(n_masks, 1, grid, grid, generator=gen) < p_keep).float()
    dy = torch.randint(0, cell_h, (n_masks,), generator=gen)
    dx = torch.randint(0, cell_w, (n_masks,), generator=gen)
    rows = torch.arange(height)
    cols = torch.arange(width)
    masks = torch.empty(n_masks, height, width)
    step = 128  # upsample a few masks at a time: the uncropped (s+1)-cell masks are ~40% larger than the crops
    for start in range(0, n_masks, step):
        stop = min(n_masks, start + step)
        up = F.interpolate(cells[start:stop], size=(up_h, up_w), mode="bilinear", align_corners=False)[:, 0]
        r = (dy[start:stop, None] + rows)[:, :, None]          # [m,H,1]
        c = (dx[start:stop, None] + cols)[:, None, :]          # [m,1,W]
        masks[start:stop] = up[torch.arange(stop - start)[:, None, None], r, c]
    return masks.to(device)


# ------------------------------------------------------------------------------------------------------- occlusion

MIN_OCCLUSION_PATCH = 4


def occlusion_geometry(height: int, width: int) -> tuple[int, int]:
    """(patch side, stride) for Occlusion: 16 px with stride 8 at 224 px (the paper's setting), scaled with the
    shorter side and rounded to an even patch so the stride is exactly half of it.

    Below ~56 px that scaling gives 2 px patches, where occluding a patch barely moves a CNN's score and the map
    becomes as noisy as a gradient; the patch is therefore at least MIN_OCCLUSION_PATCH = 4 px. For the bundled digits
    (8x8 scikit-learn digits upsampled 4x to 32x32) that is exactly one source pixel, with stride 2 (225 windows
    at 32x32, 961 on 64x64 grids).
    """
    side = min(height, width)
    patch = max(MIN_OCCLUSION_PATCH, 2 * round(8 * side / 224))
    patch = min(patch, side)
    return patch, max(1, patch // 2)


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """[start, stop) ranges of at most `size` covering range(total)."""
    size = max(1, size)
    for start in range(0, total, size):
        yield start, min(total, start + size)

