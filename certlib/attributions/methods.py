"""The 12 attribution methods of Anani et al. (2025), in three families, and which models each applies to.

This module is the registry the workbench picks from and the implementations behind it (design §3.4). Each method
is a small class with one entry point, `attribute(x, target)`: a batch x [B,C,H,W] of pixels in [0,1] (normalisation
lives inside the model) and a target class (one int for all rows, or one per row) -> a signed per-pixel map
[B,H,W], float32, at the input resolution, on x's device. Per-channel attributions are summed over channels;
layer-resolution maps (the CAM family) are upsampled bilinearly.

    method = make_attribution("gradcam", model)        # or attribute(model, x, target, "gradcam")
    maps = method.attribute(noisy_copies, target)      # [B,H,W]

Contracts the certificate relies on:
- *Batch-exact*: attributing B noisy copies at once gives, per copy, what attributing that copy alone gives (up to
  float rounding). Every method treats rows independently (eval-mode models, per-row scores and gradients).
- *Deterministic*: a fixed (model, method, params, seed) is a function of x. RISE's random masks are drawn once
  from (seed, input size) and reused for every call (design §3.1).
- *Locked*: `attribute` holds `model.lock` for the whole call, since zennit canonizers, captum's guided-backprop
  hooks and our own forward hooks modify the shared model while they run. Callers must not hold the lock
  themselves (threading.Lock is not re-entrant).
- The model is left as it was: hooks are removed and zennit's canonizers restored, also when a call raises.
- Outputs are detached; nothing differentiates through an attribution.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from certlib.attributions import _utils as U
from certlib import validate
from certlib.models import cam_layers, precision
from certlib.attributions import defaults
from certlib.errors import CertlibError
from certlib.models.registry import LoadedModel, ModelSpec

# captum warns on every GuidedBackprop call that it hooks the ReLUs; we know, and remove them after each call.
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations", category=UserWarning)


@dataclass(frozen=True)
class MethodInfo:
    key: str
    label: str
    family: str            # "gradient" | "perturbation" | "activation"
    summary: str
    needs_cam_layer: bool = False
    needs_canonizer: bool = False
    needs_gradients: bool = False  # runs a backward pass (autograd must be available through the model)
    randomised: bool = False       # draws random numbers (from the seed, fixed per image) - only RISE
    implementation: str = ""       # which library computes it


METHODS: dict[str, MethodInfo] = {m.key: m for m in (
    MethodInfo("grad", "Gradient", "gradient", "absolute input gradient |∂y/∂x| of the target logit",
               needs_gradients=True, implementation="captum Saliency"),
    MethodInfo("guided_backprop", "Guided Backprop", "gradient", "gradient with negative signals cut at each ReLU",
               needs_gradients=True, implementation="captum GuidedBackprop"),
    MethodInfo("input_x_gradient", "Input × Gradient", "gradient", "input times its gradient",
               needs_gradients=True, implementation="captum InputXGradient"),
    MethodInfo("integrated_gradients", "Integrated Gradients", "gradient",
               "path integral of gradients from a black image, 20 steps",
               needs_gradients=True, implementation="captum IntegratedGradients"),
    MethodInfo("lrp", "LRP", "gradient", "layer-wise relevance propagation (zennit, EpsilonPlus composite)",
               needs_canonizer=True, needs_gradients=True, implementation="zennit"),
    MethodInfo("rise", "RISE", "perturbation", "random masks weighted by the target score; masks fixed per image",
               randomised=True, implementation="certlib"),
    MethodInfo("occlusion", "Occlusion", "perturbation", "score drop when a sliding patch is blacked out",
               implementation="captum Occlusion"),
    MethodInfo("cam", "CAM", "activation", "class activation map of the last conv layer", needs_cam_layer=True,
               implementation="certlib"),
    MethodInfo("gradcam", "GradCAM", "activation", "last conv activations weighted by mean gradients",
               needs_cam_layer=True, needs_gradients=True, implementation="captum LayerGradCam"),
    MethodInfo("gradcam_pp", "GradCAM++", "activation", "GradCAM with higher-order gradient weights",
               needs_cam_layer=True, needs_gradients=True, implementation="certlib"),
    MethodInfo("ablationcam", "AblationCAM", "activation", "score drop when each activation channel is removed",
               needs_cam_layer=True, implementation="certlib"),
    MethodInfo("layercam", "LayerCAM", "activation", "element-wise positive-gradient-weighted activations",
               needs_cam_layer=True, needs_gradients=True, implementation="certlib"),
)}

# The method a digits model opens with (the app starts on one); per model family see `default_method`. Both come
# from certlib.attributions.defaults, i.e. from what bench/defaults.py measured.
DEFAULT_METHOD = defaults.DEFAULTS[defaults.FALLBACK_FAMILY].method
# When a family's default does not apply to a model (no CAM layer, a ViT): the plain gradient applies to every model.
FALLBACK_METHOD = "grad"
FAMILIES = ("gradient", "perturbation", "activation")

# CAM needs the classifier to be one linear layer right after global average pooling; its weights, by arch.
# (VGG's head is a 3-layer MLP over flattened 7x7 features; a ViT classifies from its class token; TorchScript
# uploads have no CAM layer.) The other CAM methods need only spec.cam_layer: a ViT's is a token layer that
# certlib.models.cam_layers lays out on the patch grid.
CAM_HEADS: dict[str, str] = {"cnn": "classifier", "resnet": "net.fc", "efficientnet_lite": "net.classifier"}
# Architectures LRP has zennit canonizers for (see _lrp_canonizers).
LRP_CANONIZERS = ("cnn", "resnet", "vgg", "efficientnet_lite")


def get_method(key: str) -> MethodInfo:
    if key not in METHODS:
        raise CertlibError(f"unknown attribution method {key!r}; choose one of {list(METHODS)}")
    return METHODS[key]


def unavailable_reason(method: str, spec: ModelSpec) -> str | None:
    """None when `method` applies to the model described by `spec`, else one sentence why not."""
    info = get_method(method)
    if info.needs_cam_layer and spec.cam_layer is None:
        if spec.arch == "vit":
            return (f"{info.label} needs a token layer to lay out on the patch grid, which {spec.label} (a vision "
                    f"transformer) does not declare.")
        return f"{info.label} needs a known last convolutional layer, which {spec.label} does not declare."
    if info.needs_canonizer and spec.arch == "torchscript":
        return f"{info.label} needs the model's layer structure, which a TorchScript upload does not expose."
    if method == "lrp" and spec.arch not in LRP_CANONIZERS:
        if spec.arch == "vit":
            # zennit 0.5.1 has rules for convolutions, linear layers, pooling and activations only, no canonizer
            # for transformers, and lists nn.MultiheadAttention among its *activations*: its pass-through rule
            # would hand each token its own relevance back, as if tokens never mixed. A map from that is not LRP.
            return (f"{info.label} is not available for Vision Transformers (zennit has no rules for attention "
                    f"or LayerNorm); {spec.key} is a vision transformer. GradCAM or LayerCAM on its patch tokens, "
                    f"or a gradient method, apply.")
        return f"{info.label} has no canonizer for {spec.label} (architecture {spec.arch!r})."
    if method == "guided_backprop":
        if spec.arch == "vit":
            return (f"{info.label} modifies the backward pass of ReLUs; {spec.key} uses GELU only, so it would "
                    f"silently return the plain gradient.")
        if spec.arch == "torchscript":
            return (f"{info.label} hooks the model's ReLU modules, which a TorchScript upload does not expose "
                    f"(it would silently return the plain gradient).")
        if spec.arch in ("mobilenet", "efficientnet"):     # torchvision's, from a safetensors upload
            return (f"{info.label} hooks nn.ReLU modules; {spec.label} rectifies with ReLU6, Hardswish or SiLU, "
                    f"so it would return (nearly) the plain gradient.")
    if method == "cam" and spec.arch not in CAM_HEADS:
        if spec.arch == "vit":
            return (f"{info.label} needs global average pooling followed by a single linear classifier; "
                    f"{spec.key} is a vision transformer that classifies from its class token "
                    f"(GradCAM is the variant that applies).")
        if spec.arch == "vgg":
            return (f"{info.label} needs global average pooling followed by a single linear classifier; "
                    f"{spec.key}'s classifier is a three-layer MLP over the flattened feature map "
                    f"(GradCAM is the variant that applies).")
        return f"{info.label} needs a linear classifier after global average pooling, unknown for {spec.label}."
    return None


def default_method(spec: ModelSpec) -> str:
    """The method a model starts with: its family's measured default (certlib.attributions.defaults) where it applies, else the
    plain gradient, else the first method that applies."""
    for method in (defaults.for_family(spec.family).method, FALLBACK_METHOD, *METHODS):
        if unavailable_reason(method, spec) is None:
            return method
    raise CertlibError(f"no attribution method applies to {spec.key}")


# ------------------------------------------------------------------------------------------------------ base class

class Attribution(ABC):
    """One attribution method bound to one model. Construct through `make_attribution`.

    Subclasses implement `_attribute(x, targets)` with x already on the model's device (float32, detached) and
    targets a LongTensor [B]; the base class checks arguments, holds the model lock, sets the autograd mode the
    method needs, and returns float32 maps on x's original device.
    """

    key: ClassVar[str]

    def __init__(self, model: LoadedModel, *, seed: int = 0) -> None:
        reason = unavailable_reason(self.key, model.spec)
        if reason is not None:
            raise CertlibError(reason)
        self.model = model
        self.seed = int(seed)
        self._seen_logits: torch.Tensor | None = None      # set by methods whose pass runs the plain model on x
        self._last: tuple[torch.Tensor, torch.Tensor | None] | None = None

    @property
    def info(self) -> MethodInfo:
        return METHODS[self.key]

    @property
    def module(self) -> nn.Module:
        return self.model.module

    def attribute(self, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """x [B,C,H,W] in [0,1] pixel space, target class(es) -> signed maps [B,H,W] float32 on x's device."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] == 0:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise CertlibError(f"x must be a non-empty batch [B,C,H,W], got {got}")
        if x.shape[1] != self.model.spec.in_channels:
            raise CertlibError(f"x has {x.shape[1]} channels; {self.model.spec.key} takes "
                               f"{self.model.spec.in_channels}")
        if not validate.all_finite(x):
            raise CertlibError("x contains NaN or infinite values")
        device = torch.device(self.model.device)
        # A detached alias of the caller's tensor (same storage, own autograd flag). Methods that need gradients get
        # it with requires_grad set: the models' weights are frozen, so nothing else would put the layers in a graph.
        xin = x.detach().to(device=device, dtype=torch.float32)
        xin = precision.prepare_input(xin, self.model.precision).requires_grad_(self.info.needs_gradients)
        targets = U.as_targets(target, xin.shape[0], self.model.spec.num_classes, device)
        # Forward-only methods run in inference mode: no autograd bookkeeping and no version counters at all.
        grad_mode = torch.enable_grad() if self.info.needs_gradients else torch.inference_mode()
        self._seen_logits, self._last = None, None
        with self.model.lock, grad_mode, precision.autocast(device, self.model.precision, self.key):
            maps = self._attribute(xin, targets)
        # Keep the logits of this very batch for `logits_for` (only in fp32: predictions are always fp32).
        plain = self.model.precision == "fp32" and self._seen_logits is not None
        self._last = (x, self._seen_logits.detach().float() if plain else None)
        self._seen_logits = None
        expected = (x.shape[0], *x.shape[-2:])
        if tuple(maps.shape) != expected:  # a bug in a method, never the caller's fault
            raise RuntimeError(f"{self.key} returned shape {tuple(maps.shape)}, expected {expected}")
        return maps.detach().float().to(x.device)

    def logits_for(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits [B, classes] (fp32) for the batch x: those the last `attribute(x, ·)` call computed
        when x is that very batch and the method ran the plain model on it (Gradient, Input×Gradient, the CAM family),
        else one forward pass."""
        if self._last is not None and self._last[0] is x and self._last[1] is not None:
            return self._last[1].to(x.device)
        with self.model.lock, torch.inference_mode():
            return self.module(x.detach().to(device=self.model.device, dtype=torch.float32)).float().to(x.device)

    @abstractmethod
    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """x [B,C,H,W] on the model's device, targets [B] -> [B,H,W]."""

    def cost_probe(self, height: int, width: int) -> tuple["Attribution", float]:
        """(a cheaper attribution, how many times more this one costs) for timing inputs of that size: methods
        whose cost is a count of model passes (RISE's masks, Occlusion's windows, IG's steps) are timed on a
        fraction of the count, so an estimate before sampling costs no more than a few gradients (see certlib.attributions.cost)."""
        return self, 1.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model.spec.key!r}, seed={self.seed})"


# --------------------------------------------------------------------------------------------- gradient family

class Grad(Attribution):
    """Saliency (Simonyan et al. 2014): |∂y_t/∂x| per channel, summed over channels; non-negative by definition."""

    key = "grad"

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Plain autograd: what captum's Saliency computes, without its per-call input formatting and hook handling
        # (tests/test_attributions.py checks equality with captum). Rows are independent, so the gradient of the
        # summed target scores is each row's own gradient.
        grad, self._seen_logits = U.input_gradient_and_logits(self.module, x, targets)
        return U.channel_sum(grad.abs())


class GuidedBackprop(Attribution):
    """Guided Backprop (Springenberg et al. 2015) through captum, which hooks every nn.ReLU module (including
    torchvision's in-place and reused ones; checked against an explicit guided-ReLU network on resnet18).

    Signed channel sum by default; `absolute=True` takes |·| per channel before summing, as the paper's code does
    (identical for 1-channel models, since §3.1 takes |·| of the map anyway).
    """

    key = "guided_backprop"

    def __init__(self, model: LoadedModel, *, seed: int = 0, absolute: bool = False) -> None:
        super().__init__(model, seed=seed)
        self.absolute = bool(absolute)

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from captum.attr import GuidedBackprop as CaptumGuidedBackprop

        attr = CaptumGuidedBackprop(self.module).attribute(x, target=targets)
        return U.channel_sum(attr.abs() if self.absolute else attr)


class InputXGradient(Attribution):
    """x ⊙ ∂y_t/∂x summed over channels, with x in [0,1] pixel space (the model's own input, not the normalised one)."""

    key = "input_x_gradient"

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        grad, self._seen_logits = U.input_gradient_and_logits(self.module, x, targets)
        return U.channel_sum(x.detach() * grad)   # = captum's InputXGradient


class IntegratedGradients(Attribution):
    """Integrated Gradients (Sundararajan et al. 2017) from a black image (0 in pixel space), `n_steps` = 20
    Gauss-Legendre points (captum's default rule, as in the paper's code).

    Memory is bounded: copies are processed in groups and captum's internal_batch_size splits the steps, so one pass
    holds at most ~`rows_per_pass` inputs (default from the input size, see _attr_utils.BACKWARD_BUDGET).
    """

    key = "integrated_gradients"

    def __init__(self, model: LoadedModel, *, seed: int = 0, n_steps: int = 20, method: str = "gausslegendre",
                 rows_per_pass: int | None = None) -> None:
        super().__init__(model, seed=seed)
        if n_steps < 1:
            raise CertlibError(f"n_steps must be >= 1, got {n_steps!r}")
        self.n_steps, self.method, self.rows_per_pass = int(n_steps), method, rows_per_pass

    def cost_probe(self, height: int, width: int) -> tuple[Attribution, float]:
        steps = min(self.n_steps, 2)
        return (IntegratedGradients(self.model, seed=self.seed, n_steps=steps, method=self.method),
                self.n_steps / steps)

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from captum.attr import IntegratedGradients as CaptumIntegratedGradients

        ig = CaptumIntegratedGradients(self.module)
        rows = self.rows_per_pass or U.rows_per_pass(x[0].numel(), x.device, backward=True)
        copies = min(x.shape[0], rows)
        steps = max(1, min(self.n_steps, rows // copies))   # interpolation steps per pass, for each copy
        maps = []
        for start, stop in U.chunks(x.shape[0], copies):
            attr = ig.attribute(x[start:stop], baselines=0.0, target=targets[start:stop], n_steps=self.n_steps,
                                method=self.method, internal_batch_size=(stop - start) * steps)
            maps.append(U.channel_sum(attr))
        return torch.cat(maps)


def _lrp_canonizers(arch: str) -> list:
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    from certlib.models.lrp_canonizers import EfficientNetLiteCanonizer

    # ResNet and EfficientNet-Lite: merge BatchNorms into convs and make the residual sum an explicit module (so it
    # gets a rule); VGG / plain CNNs: merge any Linear/Conv -> BatchNorm pairs in Sequentials (a no-op for digits).
    return {"resnet": [ResNetCanonizer()], "vgg": [VGGCanonizer()], "cnn": [SequentialMergeBatchNorm()],
            "efficientnet_lite": [EfficientNetLiteCanonizer()]}[arch]


class LRP(Attribution):
    """Layer-wise relevance propagation with zennit.

    Composite "epsilon_plus_box" (default; the paper's EpsilonPlusBox): ZBox on the first convolution, z+ on the other
    convolutions, ε on linear layers, pass-through for activations, norm rule for average pooling and residual sums;
    canonizers by arch. The box of the first layer is its input range for pixels in [0,1]: the models normalise
    inside, so it is [(0-mean)/std, (1-mean)/std], found by feeding black and white images up to that layer.
    Noisy copies leave the box; zennit's stabiliser keeps the result finite (as in the paper, the box is not widened).
    Composite "epsilon": ε rule on every convolution and linear layer; with `zero_bias=True` the relevance sum equals
    the target logit up to ε (a diagnostic of conservation).

    Relevance starts from the target logit (one-hot × logit, the classic LRP initialisation) and is read at the first
    layer's input, i.e. for the normalised pixels: an element-wise affine normalisation maps pixel i to pixel i, so
    that relevance is the pixels' relevance. Taking autograd's gradient w.r.t. x instead would divide it by std.
    """

    key = "lrp"
    COMPOSITES = ("epsilon_plus_box", "epsilon")

    def __init__(self, model: LoadedModel, *, seed: int = 0, composite: str = "epsilon_plus_box",
                 epsilon: float = 1e-6, zero_bias: bool = False) -> None:
        super().__init__(model, seed=seed)
        if composite not in self.COMPOSITES:
            raise CertlibError(f"composite must be one of {self.COMPOSITES}, got {composite!r}")
        self.composite, self.epsilon, self.zero_bias = composite, float(epsilon), bool(zero_bias)
        self._box: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _bounds(self, conv: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (tuple(x.shape[1:]), x.device)
        if key not in self._box:
            ones = torch.ones((1, *x.shape[1:]), device=x.device)
            self._box[key] = (U.first_layer_input(self.module, conv, 0 * ones),
                              U.first_layer_input(self.module, conv, ones))
        return self._box[key]

    def _make_composite(self, conv: nn.Module, x: torch.Tensor):
        from zennit.composites import SpecialFirstLayerMapComposite, layer_map_base
        from zennit.rules import Epsilon, ZBox, ZPlus
        from zennit.types import Convolution

        zero = "bias" if self.zero_bias else None
        canonizers = _lrp_canonizers(self.model.spec.arch)
        if self.composite == "epsilon":
            rule = Epsilon(epsilon=self.epsilon, zero_params=zero)
            return SpecialFirstLayerMapComposite(layer_map_base() + [(Convolution, rule), (nn.Linear, rule)],
                                                 first_map=[], canonizers=canonizers)
        low, high = self._bounds(conv, x)
        return SpecialFirstLayerMapComposite(
            layer_map_base() + [(Convolution, ZPlus(zero_params=zero)),
                                (nn.Linear, Epsilon(epsilon=self.epsilon, zero_params=zero))],
            first_map=[(Convolution, ZBox(low, high, zero_params=zero))], canonizers=canonizers)

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        conv = U.first_conv(self.module)
        composite = self._make_composite(conv, x)  # a fresh composite per call: zennit hooks hold per-call state
        seen: dict[str, torch.Tensor] = {}

        def grab(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            seen["input"] = inputs[0]

        # Registered before zennit's own pre-hook (which wraps the input to attach the relevance rule), so the
        # gradient w.r.t. this tensor is the relevance that the first layer's rule hands down.
        handle = conv.register_forward_pre_hook(grab)
        try:
            with composite.context(self.module):
                score = U.select(self.module(x), targets)
                relevance, = torch.autograd.grad(score, seen["input"], grad_outputs=score.detach())
        finally:
            handle.remove()
        if relevance.shape != x.shape:
            raise CertlibError(f"LRP: the first convolution's input has shape {tuple(relevance.shape)}, not the "
                               f"pixels' {tuple(x.shape)}; relevance cannot be mapped back to pixels")
        return U.channel_sum(relevance)


# ----------------------------------------------------------------------------------------- perturbation family

class RISE(Attribution):
    """RISE (Petsiuk et al. 2018): saliency = Σ_m score_t(x ⊙ M_m) · M_m / (N · p).

    Masks: `n_masks` (default 1000; 500 for inputs of at most 64x64 pixels, where 1000 would double the cost of the
    bundled model's runs for little gain), `grid` s = 6 cells per side kept with probability `p_keep` = 0.1,
    bilinear upsampling with random shifts (see _attr_utils.rise_masks). They are drawn once from (seed, input size)
    and reused for every call, so the map is a deterministic function of x. Masked pixels become 0 (black in pixel
    space, like Occlusion's and IG's baselines). The score is the softmax probability of the target (the
    'confidence' RISE explains) or, with score="logit", the raw logit. One pass evaluates several masks for all
    copies (masks x copies rows, bounded by `rows_per_pass`).
    """

    key = "rise"
    SCORES = ("probability", "logit")

    def __init__(self, model: LoadedModel, *, seed: int = 0, n_masks: int | None = None, grid: int = 6,
                 p_keep: float = 0.1, score: str = "probability", rows_per_pass: int | None = None) -> None:
        super().__init__(model, seed=seed)
        if n_masks is not None and n_masks < 1:
            raise CertlibError(f"n_masks must be >= 1, got {n_masks!r}")
        if grid < 1:
            raise CertlibError(f"grid must be >= 1, got {grid!r}")
        if not 0 < p_keep <= 1:
            raise CertlibError(f"p_keep must be in (0, 1], got {p_keep!r}")
        if score not in self.SCORES:
            raise CertlibError(f"score must be one of {self.SCORES}, got {score!r}")
        self.n_masks, self.grid, self.p_keep, self.score = n_masks, int(grid), float(p_keep), score
        self.rows_per_pass = rows_per_pass

    def masks_for(self, height: int, width: int) -> torch.Tensor:
        """The masks [N,H,W] this instance uses for inputs of that size (on the model's device)."""
        return U.rise_masks(self.mask_count(height, width), self.grid, self.p_keep, height, width, self.seed,
                            str(torch.device(self.model.device)))

    def mask_count(self, height: int, width: int) -> int:
        return self.n_masks or (500 if height * width <= 64 * 64 else 1000)

    def cost_probe(self, height: int, width: int) -> tuple[Attribution, float]:
        n = self.mask_count(height, width)
        few = max(1, n // 50)
        return (RISE(self.model, seed=self.seed, n_masks=few, grid=self.grid, p_keep=self.p_keep, score=self.score),
                n / few)

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        masks = self.masks_for(h, w)
        rows = self.rows_per_pass or U.rows_per_pass(c * h * w, x.device)
        saliency = torch.zeros((b, h, w), device=x.device)
        for start, stop in U.chunks(masks.shape[0], max(1, rows // b)):
            m = masks[start:stop]
            batch = (m[:, None, None] * x[None]).reshape(-1, c, h, w)   # mask-major: row = mask * b + copy
            logits = self.module(batch).float()
            scores = torch.softmax(logits, dim=1) if self.score == "probability" else logits
            s = U.select(scores, targets.repeat(stop - start)).view(stop - start, b)
            saliency += torch.einsum("mb,mhw->bhw", s, m)
        return saliency / (masks.shape[0] * self.p_keep)


class Occlusion(Attribution):
    """Occlusion (Zeiler & Fergus 2014) through captum: each pixel gets the mean drop of the target logit over the
    windows that black it out (baseline 0 in pixel space), all channels at once.

    Window: 16x16 px, stride 8 at 224 px (the paper's setting), scaled with the input and at least 4 px (see
    _attr_utils.occlusion_geometry: 4x4, stride 2 on the 32x32 digits). Windows that would overrun the border are
    truncated by captum, so every pixel is covered. captum evaluates `perturbations_per_eval` windows per pass for
    all copies. The map is the channel sum, i.e. C times the logit drop.
    """

    key = "occlusion"

    def __init__(self, model: LoadedModel, *, seed: int = 0, patch: int | None = None, stride: int | None = None,
                 rows_per_pass: int | None = None) -> None:
        super().__init__(model, seed=seed)
        for name, v in (("patch", patch), ("stride", stride)):
            if v is not None and v < 1:
                raise CertlibError(f"{name} must be >= 1, got {v!r}")
        self.patch, self.stride, self.rows_per_pass = patch, stride, rows_per_pass

    def geometry(self, height: int, width: int) -> tuple[int, int]:
        """(patch, stride) used for inputs of that size."""
        patch, stride = U.occlusion_geometry(height, width)
        patch = min(self.patch or patch, height, width)
        return patch, self.stride or (stride if self.patch is None else max(1, patch // 2))

    @staticmethod
    def window_count(height: int, width: int, patch: int, stride: int) -> int:
        return (-(-(height - patch) // stride) + 1) * (-(-(width - patch) // stride) + 1)

    def cost_probe(self, height: int, width: int) -> tuple[Attribution, float]:
        patch, stride = self.geometry(height, width)
        # Each window costs one forward pass whatever its size: time non-overlapping windows 4 strides wide
        # (captum wants stride <= patch); + 1: captum also scores the unoccluded input once.
        wide = min(4 * stride, height, width)
        coarse = Occlusion(self.model, seed=self.seed, patch=wide, stride=wide)
        return coarse, (self.window_count(height, width, patch, stride) + 1) / \
            (self.window_count(height, width, *coarse.geometry(height, width)) + 1)

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from captum.attr import Occlusion as CaptumOcclusion

        b, c, h, w = x.shape
        patch, stride = self.geometry(h, w)
        windows = self.window_count(h, w, patch, stride)
        rows = self.rows_per_pass or U.rows_per_pass(c * h * w, x.device)
        attr = CaptumOcclusion(self.module).attribute(
            x, sliding_window_shapes=(c, patch, patch), strides=(c, stride, stride), baselines=0.0,
            target=targets, perturbations_per_eval=max(1, min(windows, rows // b)))
        return U.channel_sum(attr)


# ------------------------------------------------------------------------------------------- activation family

class _LayerMethod(Attribution):
    """Base of the CAM family: maps computed on spec.cam_layer's feature map A [B,K,h,w], upsampled bilinearly to
    H x W. `feature_map` says how the layer's output is that map: a CNN layer's output as it is, a ViT layer's patch
    tokens [B,N,D] laid out on the patch grid as [B,D,h,w] with the class/distillation tokens dropped
    (certlib.models.cam_layers, which also says why a ViT's layer is the last block's first LayerNorm).

    ReLU conventions follow each method's paper: CAM (Zhou et al. 2016) is the plain weighted sum (signed; `relu`
    to clamp); GradCAM, GradCAM++, AblationCAM and LayerCAM apply a ReLU to the layer-resolution map before upsampling.
    """

    def __init__(self, model: LoadedModel, *, seed: int = 0) -> None:
        super().__init__(model, seed=seed)
        self.layer_name = model.spec.cam_layer
        self.layer = U.get_layer(model.module, self.layer_name)
        self.feature_map: cam_layers.FeatureMap = cam_layers.feature_map_for(model.module, self.layer_name)

    def _layer_output(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the layer's raw output, logits [B,classes]) in one forward pass."""
        with U.capture_output(self.layer) as seen:
            logits = self.module(x)
        self._seen_logits = logits
        return seen["output"], logits

    def _activations(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature map A [B,K,h,w], logits [B,classes]) in one forward pass."""
        output, logits = self._layer_output(x)
        return self.feature_map.to_grid(output, tuple(x.shape[-2:])), logits

    def _activations_and_gradients(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, ∂y_t/∂A), both [B,K,h,w]; x requires grad (set by `attribute`), so A is part of a graph.
        Rows are independent, so the gradient of the summed scores is each row's own gradient. The gradient is
        taken w.r.t. the layer's own output and laid out like A (to_grid only re-indexes: dropped prefix tokens
        are not part of A)."""
        output, logits = self._layer_output(x)
        grads, = torch.autograd.grad(U.select(logits, targets).sum(), output)
        size = tuple(x.shape[-2:])
        return self.feature_map.to_grid(output.detach(), size), self.feature_map.to_grid(grads, size)


class CAM(_LayerMethod):
    """CAM (Zhou et al. 2016): Σ_k w_{t,k} A_k with w the linear classifier after global average pooling
    (bias excluded). Signed, as in the paper; `relu=True` clamps negatives (the paper's code for Anani et al. does)."""

    key = "cam"

    def __init__(self, model: LoadedModel, *, seed: int = 0, relu: bool = False) -> None:
        super().__init__(model, seed=seed)
        self.head = U.get_layer(model.module, CAM_HEADS[model.spec.arch])
        if not isinstance(self.head, nn.Linear):
            raise CertlibError(f"CAM needs {CAM_HEADS[model.spec.arch]!r} to be a linear layer, "
                               f"found {type(self.head).__name__}")
        self.relu = bool(relu)

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        acts, logits = self._activations(x)
        # CAM is only meaningful if logits = fc(GAP(A)); cheap to check on every call, so a model whose head is not
        # that (e.g. a different CNN registered as "cnn") fails loudly instead of giving a wrong map.
        pooled = self.head(acts.mean(dim=(2, 3)))
        if not torch.allclose(pooled, logits, rtol=1e-3, atol=1e-3 * (1 + float(logits.abs().max()))):
            raise CertlibError(f"CAM: {self.model.spec.key}'s logits are not a linear function of the pooled "
                               f"{self.layer_name} activations, so CAM does not apply")
        cam = torch.einsum("bk,bkhw->bhw", self.head.weight[targets], acts)
        return U.upsample(F.relu(cam) if self.relu else cam, x.shape[-2:])


class GradCAM(_LayerMethod):
    """GradCAM (Selvaraju et al. 2017): ReLU(Σ_k mean_ij(∂y_t/∂A_k) · A_k). On a convolutional layer via captum
    LayerGradCam; on a ViT's patch-token grid computed here, since captum averages the gradient over every
    dimension after the second, which for tokens [B,N,D] would make the tokens the channels."""

    key = "gradcam"

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.feature_map, cam_layers.ConvFeatureMap):
            acts, grads = self._activations_and_gradients(x, targets)
            cam = F.relu(torch.einsum("bk,bkhw->bhw", grads.mean(dim=(2, 3)), acts))
            return U.upsample(cam, x.shape[-2:])
        from captum.attr import LayerGradCam

        cam = LayerGradCam(self.module, self.layer).attribute(x, target=targets, relu_attributions=True)
        return U.upsample(cam.detach(), x.shape[-2:])


class GradCAMPlusPlus(_LayerMethod):
    """GradCAM++ (Chattopadhay et al. 2018, eq. 19 with the exponential-score closed form):

        α_kij = g_kij² / (2 g_kij² + Σ_ab A_kab · g_kij³),   w_k = Σ_ij α_kij ReLU(g_kij),   map = ReLU(Σ_k w_k A_k)

    with g = ∂y_t/∂A of the target logit; α = 0 where g = 0 (or the denominator vanishes). The paper's exp(y_t) factor
    on the gradient is a positive per-image constant and is dropped (it only rescales the map and overflows float32
    for logits > 88). Note torchcam's GradCAMpp uses Σ_ab A_kab g_kab³ instead; the two agree when g is spatially
    constant per channel, i.e. when the layer is followed by global average pooling and a linear head (the bundled
    CNN and torchvision ResNets).
    """

    key = "gradcam_pp"

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        acts, grads = self._activations_and_gradients(x, targets)
        g2 = grads.pow(2)
        denom = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * grads.pow(3)
        alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                            torch.zeros_like(denom))
        weights = (alpha * F.relu(grads)).sum(dim=(2, 3))                        # [B,K]
        cam = F.relu(torch.einsum("bk,bkhw->bhw", weights, acts))
        return U.upsample(cam, x.shape[-2:])


class AblationCAM(_LayerMethod):
    """AblationCAM (Desai & Ramaswamy 2020): w_k = (y_t - y_t^k) / y_t, with y_t^k the target logit when channel k of
    the layer output is zeroed; map = ReLU(Σ_k w_k A_k).

    The division by y_t is the paper's (it flips the map's sign where the target logit is negative). The ablated
    scores run only the part of the model after the layer (an fx cut, e.g. avgpool + fc for a ResNet), for many
    (channel, copy) pairs per pass; models that cannot be cut there fall back to full forward passes with the layer
    output replaced (`use_tail=False` forces that path). On a ViT a channel is one embedding dimension of every
    patch token (the class/distillation tokens are fed back unchanged); a ViT's layer feeds one attention inside a
    residual block, so there is no cut and every channel costs a full forward pass per copy.
    """

    key = "ablationcam"

    def __init__(self, model: LoadedModel, *, seed: int = 0, use_tail: bool = True,
                 rows_per_pass: int | None = None) -> None:
        super().__init__(model, seed=seed)
        self.use_tail, self.rows_per_pass = bool(use_tail), rows_per_pass
        self._channel_limit: int | None = None     # a cost probe ablates only the first channels

    def cost_probe(self, height: int, width: int) -> tuple[Attribution, float]:
        """Without a cheap tail (a ViT, an uncuttable model) each channel costs a full forward pass per copy: time
        1/64 of the channels (at least 4) and scale by the count of forward passes per copy, 1 + channels (the
        first pass finds the activations). With a tail, time it all (as cheap as a forward pass or two)."""
        if self.use_tail and U.layer_tail(self.module, self.layer_name) is not None:
            return self, 1.0
        probe_x = torch.zeros((1, self.model.spec.in_channels, height, width), device=self.model.device)
        with self.model.lock, torch.inference_mode():
            channels = int(self._activations(probe_x)[0].shape[1])
        probe = copy.copy(self)
        probe._channel_limit = min(channels, max(4, channels // 64))
        return probe, (1 + channels) / (1 + probe._channel_limit)

    def _ablated_scores(self, x: torch.Tensor, acts: torch.Tensor, targets: torch.Tensor,
                        output: torch.Tensor) -> torch.Tensor:
        """y_t with channel k of the feature map `acts` ablated, [B,K]; `output` is the layer's raw output."""
        b, k = acts.shape[:2]
        tail = U.layer_tail(self.module, self.layer_name) if self.use_tail else None
        unit = acts[0].numel() if tail is not None else x[0].numel()
        rows = self.rows_per_pass or U.rows_per_pass(unit, x.device)
        out = torch.zeros((b, k), device=x.device)
        for start, stop in U.chunks(min(k, self._channel_limit or k), max(1, rows // b)):
            n = stop - start
            ablated = acts.unsqueeze(0).repeat(n, 1, 1, 1, 1)                # [n,B,K,h,w]; copy i drops start+i
            ablated[torch.arange(n), :, torch.arange(start, stop)] = 0
            ablated = self.feature_map.from_grid(ablated.flatten(0, 1), output)
            if tail is not None:
                logits = tail(ablated)
            else:
                with _replace_output(self.layer, ablated):
                    logits = self.module(x.repeat(n, 1, 1, 1))
            out[:, start:stop] = U.select(logits.float(), targets.repeat(n)).view(n, b).T
        return out

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        output, logits = self._layer_output(x)
        acts = self.feature_map.to_grid(output, tuple(x.shape[-2:]))
        score = U.select(logits.float(), targets)                              # [B]
        drops = score[:, None] - self._ablated_scores(x, acts, targets, output)   # [B,K]
        # The paper divides by y_t; keep |y_t| >= 1e-6 so a copy whose target logit is ~0 gives a large but finite map.
        safe = torch.where(score.abs() < 1e-6, torch.full_like(score, 1e-6).copysign(score), score)
        cam = F.relu(torch.einsum("bk,bkhw->bhw", drops / safe[:, None], acts))
        return U.upsample(cam, x.shape[-2:])


@contextlib.contextmanager
def _replace_output(layer: nn.Module, value: torch.Tensor) -> Iterator[None]:
    """While active, `layer` returns `value` instead of its own output (shapes must match)."""
    def hook(_module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
        if output.shape != value.shape:
            raise RuntimeError(f"cannot replace an output of shape {tuple(output.shape)} by {tuple(value.shape)}")
        return value

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class LayerCAM(_LayerMethod):
    """LayerCAM (Jiang et al. 2021): ReLU(Σ_k ReLU(∂y_t/∂A_k) ⊙ A_k), element-wise positive-gradient weights."""

    key = "layercam"

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        acts, grads = self._activations_and_gradients(x, targets)
        cam = F.relu((F.relu(grads) * acts).sum(dim=1))
        return U.upsample(cam, x.shape[-2:])


# ------------------------------------------------------------------------------------------------------- factory

ATTRIBUTIONS: dict[str, type[Attribution]] = {cls.key: cls for cls in (
    Grad, GuidedBackprop, InputXGradient, IntegratedGradients, LRP, RISE, Occlusion,
    CAM, GradCAM, GradCAMPlusPlus, AblationCAM, LayerCAM,
)}


def method_params(method: str) -> dict[str, object]:
    """The optional parameters `make_attribution` accepts for `method`, with their defaults."""
    cls = ATTRIBUTIONS[get_method(method).key]
    sig = inspect.signature(cls.__init__)
    return {n: p.default for n, p in sig.parameters.items() if n not in ("self", "model", "seed")}


def make_attribution(method: str, model: LoadedModel, *, seed: int = 0, **params) -> Attribution:
    """The attribution `method` for `model`; `seed` fixes randomised methods (RISE's masks); `params` are the
    method's options (see `method_params`). Raises CertlibError for an unknown method or parameter, or a method
    that does not apply to the model (the sentence of `unavailable_reason`)."""
    allowed = method_params(method)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise CertlibError(f"{method} takes no parameter {unknown[0]!r}; its parameters: {sorted(allowed)}")
    return ATTRIBUTIONS[method](model, seed=seed, **params)


def for_target(model: LoadedModel, method: str, target: int, seed: int = 0):
    """(x -> maps, x -> logits) for one model, method, target class and seed: what the samplers take. The logits
    of a batch just attributed are reused where the method computed them (`Attribution.logits_for`)."""
    explainer = make_attribution(method, model, seed=seed)
    return (lambda xb: explainer.attribute(xb, target)), explainer.logits_for


def attribute(model: LoadedModel, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor, method: str, *,
              seed: int = 0, **params) -> torch.Tensor:
    """One-shot `make_attribution(method, model, seed=seed, **params).attribute(x, target)` -> [B,H,W]."""
    return make_attribution(method, model, seed=seed, **params).attribute(x, target)
