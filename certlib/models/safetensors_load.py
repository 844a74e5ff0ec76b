"""Weights only: a `.safetensors` state dict for an architecture certexplorer knows, loaded with no code execution.

safetensors is a JSON header plus raw tensor bytes (parsed by the `safetensors` package; nothing is unpickled), so
this runs in the app process. The architecture is built here from the registry (torchvision ResNet / MobileNet /
EfficientNet / VGG / ViT, the bundled EfficientNet-Lite0, the digits CNN); every key and shape of the upload is
checked against it, with one line per missing, unexpected or mismatched key, before anything is copied in. The
result is wrapped with the architecture's input normalisation so that `.module` takes [0, 1] pixels.

    model = certlib.load_model("resnet18_cats.safetensors", architecture="resnet18", class_names="classes.txt")
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
import torch
from torch import nn

from certlib.errors import ModelError

MAX_CLASSES = 100_000
MAX_HEADER_BYTES = 16 << 20
MAX_LISTED = 8                 # problems listed by name in one message; the rest counted


@dataclass(frozen=True)
class Architecture:
    """How to build one architecture and what the rest of certexplorer needs to know about it."""

    builder: str                 # torchvision.models function, or "efficientnet_lite0" / "digits_cnn"
    arch: str                    # ModelSpec.arch: picks LRP canonizers and CAM's classifier
    head: str                    # the classifier's weight key: its first dimension is the number of classes
    cam_layer: str | None        # inside the unwrapped network
    family: str = "imagenet"
    in_channels: int = 3
    input_size: int = 224
    flexible_size: bool = False  # fully convolutional at multiples of input_size (the registry's convention)


def _tv(name: str, arch: str, head: str, cam: str | None) -> tuple[str, Architecture]:
    return name, Architecture(name, arch, head, cam)


ARCHITECTURES: dict[str, Architecture] = dict([
    *(_tv(n, "resnet", "fc.weight", "layer4") for n in ("resnet18", "resnet34", "resnet50", "resnet101",
                                                         "resnet152", "wide_resnet50_2")),
    _tv("mobilenet_v2", "mobilenet", "classifier.1.weight", "features"),
    _tv("mobilenet_v3_small", "mobilenet", "classifier.3.weight", "features"),
    _tv("mobilenet_v3_large", "mobilenet", "classifier.3.weight", "features"),
    *(_tv(f"efficientnet_b{i}", "efficientnet", "classifier.1.weight", "features") for i in range(4)),
    _tv("vgg11", "vgg", "classifier.6.weight", "features.19"),
    _tv("vit_b_16", "vit", "heads.head.weight", "encoder.layers.encoder_layer_11.ln_1"),   # see certlib.models.cam_layers
    ("efficientnet_lite0", Architecture("efficientnet_lite0", "efficientnet_lite", "classifier.weight", "head",
                                        flexible_size=True)),
    ("digits_cnn", Architecture("digits_cnn", "cnn", "classifier.weight", "features.11", family="digits",
                                in_channels=1, input_size=32, flexible_size=True)),
])


def architecture_names() -> list[str]:
    return list(ARCHITECTURES)


# ------------------------------------------------------------------------------------------------ building

def _build(a: Architecture, num_classes: int, size: tuple[int, int]) -> tuple[nn.Module, nn.Module]:
    """(the bare network whose state dict the upload holds, the same network taking [0,1] pixels)."""
    from certlib.models import efficientnet_lite, registry as models
    from certlib.models.digits_cnn import DigitsCNN

    if a.builder == "digits_cnn":
        net = DigitsCNN()                              # normalises inside: mean/std are buffers of its state dict
        net.classifier = nn.Linear(net.classifier.in_features, num_classes)
        return net, net
    if a.builder == "efficientnet_lite0":
        net = efficientnet_lite.EfficientNetLite(num_classes=num_classes)
        return net, models.PixelSpaceModel(net, efficientnet_lite.INPUT_MEAN, efficientnet_lite.INPUT_STD)
    import torchvision.models as tvm

    kwargs = {"image_size": size[0]} if a.arch == "vit" else {}
    if a.arch == "vit" and size[0] != size[1]:
        raise ModelError(f"{a.builder} takes square inputs; input_size {size} is not")
    net = getattr(tvm, a.builder)(weights=None, num_classes=num_classes, **kwargs)
    return net, models.PixelSpaceModel(net, models.IMAGENET_MEAN, models.IMAGENET_STD)


# ------------------------------------------------------------------------------------------------ checking

def read_state_dict(data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (header and sizes checked by the safetensors package; no code runs)."""
    import struct

    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    # Real headers are kilobytes (a ResNet-50's: 20 KiB); parsing one of 100 MiB would hold the app process.
    (header,) = struct.unpack("<Q", data[:8]) if len(data) >= 8 else (0,)
    if header > MAX_HEADER_BYTES:
        raise ModelError(f"the safetensors header is {header / 2**20:.0f} MiB; the limit is "
                         f"{MAX_HEADER_BYTES >> 20} MiB")
    try:
        state = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise ModelError(f"the file is not a readable safetensors state dict: {str(exc)[:300]}") from None
    if not state:
        raise ModelError("the safetensors file holds no tensors")
    return state


def _strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # nn.DataParallel / DistributedDataParallel save every key under "module."; the weights are the same.
    if all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def infer_num_classes(state: dict[str, torch.Tensor], a: Architecture) -> int | None:
    """The classifier's output size as the weights hold it (its weight, else its bias); None when neither is there."""
    keys = [a.head, a.head.rsplit(".", 1)[0] + ".bias"]
    if a.arch == "efficientnet_lite":
        keys += ["_fc.weight", "_fc.bias"]              # the Lite0 registry package's own key names
    for key in keys:
        if key in state and state[key].dim() in (1, 2):
            return int(state[key].shape[0])
    return None


def mismatches(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> list[str]:
    """One line per missing, unexpected or mis-shaped key (num_batches_tracked counters may be absent)."""
    problems = []
    for key, ref in expected.items():
        if key not in got:
            if not key.endswith("num_batches_tracked"):
                problems.append(f"missing key {key!r} (shape {list(ref.shape)})")
        elif tuple(got[key].shape) != tuple(ref.shape):
            problems.append(f"key {key!r} has shape {list(got[key].shape)}, expected {list(ref.shape)}")
        elif not (got[key].is_floating_point() or key.endswith("num_batches_tracked")):
            problems.append(f"key {key!r} holds {got[key].dtype}, expected floating point")
    problems += [f"unexpected key {key!r} (shape {list(got[key].shape)})" for key in got if key not in expected]
    return problems


def _check(state: dict[str, torch.Tensor], net: nn.Module, architecture: str) -> None:
    problems = mismatches(net.state_dict(), state)
    if problems:
        shown = "; ".join(problems[:MAX_LISTED])
        more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise ModelError(f"the state dict does not match {architecture}: {shown}{more}")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise ModelError(f"key {bad!r} holds non-finite values (NaN or infinity)")


# ------------------------------------------------------------------------------------------------ loading

def _sizes(a: Architecture, input_size: tuple[int, ...] | None) -> tuple[int, int]:
    if input_size is None:
        return a.input_size, a.input_size
    if len(input_size) == 3:
        if input_size[0] != a.in_channels:
            raise ModelError(f"this architecture takes {a.in_channels} channels, input_size says {input_size[0]}")
        input_size = input_size[1:]
    h, w = input_size
    if not (8 <= h <= 1024 and 8 <= w <= 1024):
        raise ModelError(f"input height and width must be between 8 and 1024 pixels, got {h}×{w}")
    return h, w


def load(data: bytes, architecture: str | None, *, num_classes: int | None = None,
         input_size: tuple[int, ...] | None = None, class_names: tuple[str, ...] | None = None,
         name: str = "uploaded weights", device: str | None = "cpu"):
    """A LoadedModel from safetensors bytes for a registry architecture; ModelError naming each bad key."""
    from certlib.models import registry as models
    from certlib.data.images import display_name

    if architecture is None:
        raise ModelError("a safetensors file holds weights only: name its architecture (one of "
                         f"{', '.join(ARCHITECTURES)})")
    if architecture not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    a = ARCHITECTURES[architecture]
    state = _strip_wrapper_prefix(read_state_dict(data))
    classes = _num_classes(state, a, architecture, num_classes, class_names)
    size = _sizes(a, input_size)
    net, module = _build(a, classes, size)
    if a.builder == "efficientnet_lite0":
        from certlib.models.efficientnet_lite import rename_state_dict

        state = rename_state_dict(state)
    _check(state, net, architecture)
    net.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()},
                        strict=False)           # strict already checked above, with num_batches_tracked optional
    dev = models.resolve_device(device)
    module = module.eval().to(dev)
    for p in module.parameters():
        p.requires_grad_(False)                 # attributions need input gradients only
    digest = hashlib.sha256(data).hexdigest()
    spec = models.ModelSpec(
        key=f"user:{digest[:12]}", label=f"{display_name(name, 'uploaded weights')} ({architecture}, safetensors)",
        family=a.family, arch=a.arch, in_channels=a.in_channels, input_size=size, flexible_size=a.flexible_size,
        resize_size=None if a.family == "digits" else round(min(size) / 0.875),
        class_names=class_names or tuple(f"class {i}" for i in range(classes)),
        cam_layer=None if a.cam_layer is None else (a.cam_layer if module is net else f"net.{a.cam_layer}"),
        description=f"{architecture} weights (safetensors), input {a.in_channels}×{size[0]}×{size[1]} in [0,1], "
                    f"{classes} classes",
    )
    return models.LoadedModel(spec=spec, module=module, weights_sha256=digest, device=dev)


def _num_classes(state: dict, a: Architecture, architecture: str, num_classes: int | None,
                 class_names: tuple[str, ...] | None) -> int:
    from_weights = infer_num_classes(state, a)
    given = {"num_classes": num_classes, "the class names": None if class_names is None else len(class_names)}
    for what, count in given.items():
        if count is not None and from_weights is not None and count != from_weights:
            raise ModelError(f"{what} gives {count} classes but the weights' classifier {a.head!r} has "
                             f"{from_weights}")
    # Without a classifier key the key check names what is missing; build with any size to get there.
    classes = from_weights or num_classes or (len(class_names) if class_names else 1000)
    if not 2 <= classes <= MAX_CLASSES:
        raise ModelError(f"the classifier has {classes} classes; between 2 and {MAX_CLASSES:,} are supported")
    return classes
