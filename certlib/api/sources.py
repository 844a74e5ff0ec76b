"""What a top-level call certifies, from whatever the caller holds: a registry key, a `torch.nn.Module` (timm and
torchvision models included) or an `attribute(x_batch, target)` callable as the model; a registry key, path, PIL
image, numpy array or tensor as the image; a method key or an attribution object people already use (captum,
torch-cam, pytorch-grad-cam) as the method. The result is a `Subject`: the model input and the two functions the
engine samples, `attribute(x) -> [B,H,W]` and `logits(x) -> [B,classes]`.

Registry models go through `models.load_model` and `attributions.for_target` exactly as the app's pages do, so a
top-level call and the page give the same counts for the same configuration and seed.
"""
from __future__ import annotations

import inspect
import os
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from certlib.attributions import methods as attributions
from certlib.data import images
from certlib.models import registry as models
from certlib.attributions._utils import upsample
from certlib.errors import CertlibError, ImageError, ModelError

# Other names people use for the library's methods (the example says method='gradient').
METHOD_ALIASES = {"gradient": "grad", "saliency": "grad", "gradcam++": "gradcam_pp", "gradcampp": "gradcam_pp",
                  "ig": "integrated_gradients", "inputxgradient": "input_x_gradient"}
# Short names of registry models that are not keys themselves.
MODEL_ALIASES = {"digits_cnn": models.default_model_key(), "photo": models.photo_model_key()}


@dataclass
class Subject:
    """One model, input and target class, with the functions the engine samples."""

    x: torch.Tensor                         # [1,C,H,W] in [0,1] on the model's device
    target: int
    attribute: Callable[[torch.Tensor], torch.Tensor]
    logits: Callable[[torch.Tensor], torch.Tensor] | None   # None: a bare attribution callable has no classifier
    described: dict = field(default_factory=dict)           # JSON-able: model, image, method, target, device


# ------------------------------------------------------------------------------------------------------ images

def image_entry(image: Any) -> images.ImageEntry:
    """A bundled key ('chelsea', 'photo:chelsea', 'digit:3'), a path, PIL image, numpy array or tensor, as an
    ImageEntry ([C,H,W] float32 in [0,1]); ImageError names what could not be used."""
    if isinstance(image, images.ImageEntry):
        return image
    if isinstance(image, (str, os.PathLike)):
        return _entry_from_name(image)
    if type(image).__module__.startswith("PIL."):
        from PIL import ImageOps

        return _entry("pil", images._pixels_from_pil(ImageOps.exif_transpose(image)))
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        return _entry("tensor", _scaled(t.squeeze(0).numpy() if t.dim() == 4 and t.shape[0] == 1 else t.numpy(),
                                        channels_first=True))
    if isinstance(image, np.ndarray):
        return _entry("array", _scaled(image, channels_first=None))
    raise ImageError(f"image must be a bundled key, a path, a PIL image, a numpy array or a tensor, got "
                     f"{type(image).__name__}")


def _entry_from_name(name: str | os.PathLike) -> images.ImageEntry:
    text = str(name)
    for key in (text, f"photo:{text}"):
        try:
            return images.get_image(key)
        except ImageError:
            pass
    path = Path(text).expanduser()
    if not path.is_file():
        raise ImageError(f"image {text!r} is neither a bundled image key ('chelsea', 'photo:coffee', 'digit:2') "
                         f"nor a readable file")
    return images.load_upload(path.read_bytes(), path.name)


def _scaled(arr: np.ndarray, channels_first: bool | None) -> np.ndarray:
    """[H,W], [C,H,W] or [H,W,C] (C = 1, 3; 4 drops alpha), uint8 or floats in [0,1] -> float32 [C,H,W]."""
    a = np.asarray(arr)
    if a.ndim == 3 and channels_first is None:
        channels_first = a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4)
    if a.ndim == 3 and not channels_first:
        a = np.moveaxis(a[..., :3] if a.shape[-1] == 4 else a, -1, 0)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise ImageError(f"an image array must be [H,W], [C,H,W] or [H,W,C] with 1 or 3 channels, got shape "
                         f"{np.shape(arr)}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.floating):
        raise ImageError(f"an image array must be uint8 or floats in [0, 1], got dtype {a.dtype}")
    return a.astype(np.float32)


def _entry(kind: str, pixels: np.ndarray) -> images.ImageEntry:
    digest = images.pixel_sha256(np.ascontiguousarray(pixels, dtype=np.float32))
    return images.ImageEntry(key=f"{kind}:{digest[:12]}", label=f"{kind} image", kind="upload", pixels=pixels)


# ------------------------------------------------------------------------------------------------------ models

@lru_cache(maxsize=4)
def registry_model(key: str, device: str) -> models.LoadedModel:
    """A registered model, loaded once per (key, device) in this process (as the app's shared cache does)."""
    return models.load_model(key, device=device)


def registry_key(name: str) -> str:
    """`name` as a registry key (aliases resolved); a ModelError lists the keys, and says how to get weights or
    pass a torchvision module with random weights when the registered model's weights are absent."""
    key = MODEL_ALIASES.get(name, name)
    spec = models.get_spec(key)
    if not spec.available:
        raise models.ModelUnavailableError(
            f"{key}: {spec.unavailable_reason} To certify the architecture without pretrained weights, pass the "
            f"module itself, e.g. certlib.certify_pixels(torchvision.models.{key}(), image).")
    return key


def _imagenet_names() -> tuple[str, ...]:
    from torchvision.models import ResNet18_Weights        # ImageNet's class names ship in torchvision

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


@dataclass(frozen=True)
class _Preset:
    """What a known library's model expects: normalisation, input size and the resize before the centre crop."""

    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None
    in_channels: int | None
    input_size: tuple[int, int] | None
    resize_size: int | None
    arch: str


def _preset(module: nn.Module) -> _Preset:
    """torchvision and timm models carry (or imply) their preprocessing; any other module takes [0,1] pixels as is."""
    cfg = getattr(module, "pretrained_cfg", None)
    if isinstance(cfg, dict) and "mean" in cfg:                                     # timm
        c, h, w = cfg.get("input_size", (3, 224, 224))
        crop = float(cfg.get("crop_pct", 0.875) or 0.875)
        return _Preset((tuple(cfg["mean"]), tuple(cfg["std"])), c, (h, w), round(min(h, w) / crop), _arch(module))
    if type(module).__module__.startswith("torchvision.models"):
        size = int(getattr(module, "image_size", 224))                              # a ViT fixes its size
        return _Preset((models.IMAGENET_MEAN, models.IMAGENET_STD), 3, (size, size), round(size / 0.875),
                       _arch(module))
    return _Preset(None, None, None, None, _arch(module))


def _arch(module: nn.Module) -> str:
    """ModelSpec.arch for a module: the names LRP canonizers and CAM heads know, else 'module'."""
    name = type(module).__name__.lower()
    if "vision" in name and "transformer" in name or name in ("vit", "deit", "distilledvisiontransformer"):
        return "vit"
    if type(module).__module__.startswith("torchvision.models"):
        for arch in ("resnet", "vgg", "mobilenet", "efficientnet"):
            if name.startswith(arch):
                return arch
    return "module"


def _first_conv_channels(module: nn.Module) -> int | None:
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else int(conv.in_channels)


def _logit_count(wrapped: nn.Module, x: torch.Tensor) -> int:
    """How many classes the module scores, from one forward pass on x; a ModelError unless it returns [B, classes]."""
    with torch.inference_mode():
        out = wrapped(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ModelError(f"the model must return logits [B, classes]; it returned "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return int(out.shape[1])


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """The caller's module in eval mode with frozen parameters while it is certified (batch statistics would make
    every copy depend on the others), then put back as it was."""
    training, grads = module.training, [p.requires_grad for p in module.parameters()]
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        module.train(training)
        for p, g in zip(module.parameters(), grads):
            p.requires_grad_(g)


def module_model(module: nn.Module, pixels: np.ndarray, *, normalize=None, input_size=None, in_channels=None,
                 class_names: Sequence[str] | None = None, device: str | None = None) -> models.LoadedModel:
    """`models.from_module` for a caller's trusted module, with what it needs inferred: `normalize` (mean, std) —
    default: timm's or torchvision's own, none for other modules (they take [0,1] pixels); the input size — the
    argument, the library's preset, else the image's own size; the channels — the argument, the preset, the first
    convolution's, else the image's; the classes — one probe pass (ImageNet's names for 1000 scores on 3 channels).
    The architecture and CAM layer are found by `models.spec_for_module` (ViTs included). Call inside
    `evaluating(module)`: from_module puts the module in eval mode and freezes it."""
    preset = _preset(module)
    norm = normalize if normalize is not None else preset.normalize
    channels = in_channels or preset.in_channels or _first_conv_channels(module) or int(pixels.shape[0])
    size = tuple(input_size) if input_size is not None else preset.input_size or tuple(pixels.shape[1:])
    if len(size) == 3:
        channels, size = int(size[0]), size[1:]
    size = (int(size[0]), int(size[1]))
    dev = _module_device(module, device)
    wrapped = (module if norm is None else models.PixelSpaceModel(module, tuple(norm[0]), tuple(norm[1]))).to(dev)
    names = _class_names(class_names, _logit_count(wrapped.eval(), torch.zeros((1, channels, *size), device=dev)),
                         channels)
    arch = preset.arch if preset.arch not in ("module", "vit") else None      # torchvision CNNs: LRP canonizers
    loaded = models.from_module(module, input_size=size, class_names=names, normalize=norm, in_channels=channels,
                                device=dev, key=f"module:{type(module).__name__}",
                                label=f"{type(module).__name__} (torch.nn.Module)", arch=arch)
    loaded.spec = replace(loaded.spec, family="imagenet" if len(names) == 1000 and channels == 3 else "user",
                          resize_size=preset.resize_size if input_size is None else loaded.spec.resize_size)
    return loaded


_BUILT: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, models.LoadedModel]]" = weakref.WeakKeyDictionary()


def _fingerprint(module: nn.Module) -> tuple:
    """Which tensors the module holds and how often each was changed in place (an optimiser step, load_state_dict):
    equal fingerprints mean the weights a LoadedModel was built from (and hashed) are still the module's."""
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in (*module.parameters(), *module.buffers()))


def cached_module_model(module: nn.Module, pixels: np.ndarray, **options) -> models.LoadedModel:
    """`module_model`, built once per module and options while its weights stay the same: a notebook that certifies
    the same network again pays no weights hash and no probe pass (bench/api_overhead.py)."""
    key = (tuple(pixels.shape), repr(sorted(options.items())))
    hit = _BUILT.get(module)
    if hit is not None and hit[0] == (key, _fingerprint(module)):
        return hit[1]
    loaded = module_model(module, pixels, **options)
    _BUILT[module] = ((key, _fingerprint(module)), loaded)
    return loaded


def _module_device(module: nn.Module, device: str | None) -> str:
    if device is not None:
        return models.resolve_device(device)
    first = next(module.parameters(), None)
    return "cpu" if first is None else first.device.type


def _class_names(given: Sequence[str] | None, count: int, channels: int) -> tuple[str, ...]:
    if given is not None:
        if len(given) != count:
            raise ModelError(f"{len(given)} class names given but the model returns {count} scores")
        return tuple(str(n) for n in given)
    if count == 1000 and channels == 3:
        return _imagenet_names()
    return tuple(f"class {i}" for i in range(count))


# ------------------------------------------------------------------------------------------------------ methods

def method_key(method: str) -> str:
    """A key of attributions.METHODS (aliases resolved); CertlibError naming the unknown method otherwise."""
    key = METHOD_ALIASES.get(method.lower(), method) if isinstance(method, str) else method
    return attributions.get_method(key).key


def _is_captum(method: Any) -> bool:
    try:
        from captum.attr._utils.attribution import Attribution
    except ImportError:                                           # pragma: no cover - captum is a dependency
        return False
    return isinstance(method, Attribution)


def _is_torchcam(method: Any) -> bool:
    return callable(getattr(method, "compute_cams", None)) and hasattr(method, "hook_handles")


def _is_grad_cam(method: Any) -> bool:
    """pytorch-grad-cam's convention: cam(input_tensor=..., targets=[...]) -> numpy [B,H,W] (duck-typed: that
    package is not a dependency)."""
    try:
        params = inspect.signature(method.__call__).parameters
    except (TypeError, ValueError):
        return False
    return "input_tensor" in params and "targets" in params


class _ClassTarget:
    """pytorch-grad-cam's ClassifierOutputTarget convention: the target class's score of a model output."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[self.category] if output.dim() == 1 else output[:, self.category]


def _as_maps(out: Any, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """An attribution object's output as [B,H,W] float32: channels summed, layer maps upsampled."""
    maps = torch.as_tensor(out[0] if isinstance(out, (list, tuple)) else out).detach().float().to(device)
    if maps.dim() == 4:
        maps = maps.sum(dim=1) if tuple(maps.shape[-2:]) == tuple(size) else upsample(maps.sum(1, keepdim=True), size)
    elif maps.dim() == 3 and tuple(maps.shape[-2:]) != tuple(size):
        maps = upsample(maps, size)
    if maps.dim() != 3:
        raise CertlibError(f"the attribution method returned shape {tuple(maps.shape)}; expected maps [B,H,W] or "
                           f"[B,C,H,W]")
    return maps


def foreign_attribution(method: Any, model: models.LoadedModel, target: int,
                        to_net: Callable[[torch.Tensor], torch.Tensor] | None = None
                        ) -> Callable[[torch.Tensor], torch.Tensor]:
    """x [B,C,H,W] in [0,1] -> [B,H,W] through an attribution object the caller built around their own network.
    captum and pytorch-grad-cam objects call that network themselves, so they get its input: `to_net(x)` (the
    normalisation certlib put in front of the caller's module). A torch-cam CAM only hooks the network: certlib runs
    the forward pass through the model in [0,1] pixel space and hands the CAM the scores."""
    to_net = to_net or (lambda xb: xb)

    def call(xb: torch.Tensor) -> Any:
        pixels = xb.detach().to(model.device).float().requires_grad_(True)
        if _is_torchcam(method):
            return method([target] * xb.shape[0], model.module(pixels))
        xin = to_net(pixels)
        if _is_captum(method):
            return method.attribute(xin, target=target)
        return method(input_tensor=xin, targets=[_ClassTarget(target)] * xb.shape[0])

    def attribute(xb: torch.Tensor) -> torch.Tensor:
        with model.lock, torch.enable_grad():
            return _as_maps(call(xb), tuple(xb.shape[-2:]), xb.device)
    return attribute


def plain_logits(model: models.LoadedModel) -> Callable[[torch.Tensor], torch.Tensor]:
    def logits(xb: torch.Tensor) -> torch.Tensor:
        with model.lock, torch.inference_mode():
            return model.module(xb.to(model.device)).float().to(xb.device)
    return logits


def method_functions(method: Any, model: models.LoadedModel, target: int, seed: int, to_net=None):
    """(attribute, logits, method's name) for a method key or an attribution object."""
    if isinstance(method, str):
        key = method_key(method)
        attribute, logits = attributions.for_target(model, key, target, seed)
        return attribute, logits, key
    if _is_captum(method) or _is_torchcam(method) or _is_grad_cam(method):
        return foreign_attribution(method, model, target, to_net), plain_logits(model), type(method).__name__
    raise CertlibError(f"method must be one of {list(attributions.METHODS)}, a captum Attribution, a torch-cam CAM "
                       f"or a pytorch-grad-cam object, got {method!r}")


# ------------------------------------------------------------------------------------------------------ together

@contextmanager
def prepared(model: Any, image: Any, method: Any, target: int | None, *, seed: int = 0, device: str | None = None,
             normalize=None, input_size=None, in_channels=None, class_names=None) -> Iterator[Subject]:
    """The Subject of one call. A caller's module is in eval mode with frozen parameters inside the block only."""
    entry = image_entry(image)
    if isinstance(model, nn.Module):
        with evaluating(model):
            loaded = cached_module_model(model, entry.pixels, normalize=normalize, input_size=input_size,
                                         in_channels=in_channels, class_names=class_names, device=device)
            ours = isinstance(loaded.module, models.PixelSpaceModel) and loaded.module is not model
            wrapped = loaded.module if ours else None          # the normalisation certlib put in front
            to_net = None if wrapped is None else (lambda xb: (xb - wrapped.mean) / wrapped.std)
            described = {"kind": "module", "class": type(model).__name__, "normalize": _listed(normalize),
                         "weights_sha256": loaded.weights_sha256}
            yield _subject(loaded, entry, method, target, seed, to_net, described)
        return
    if isinstance(model, (str, models.LoadedModel)):
        loaded = model if isinstance(model, models.LoadedModel) else \
            registry_model(registry_key(model), models.resolve_device(device))
        yield _subject(loaded, entry, method, target, seed, None, {"kind": "registry", "key": loaded.spec.key,
                                                                   "weights_sha256": loaded.weights_sha256})
        return
    if callable(model):
        yield _callable_subject(model, entry, target, input_size, in_channels, device)
        return
    raise ModelError(f"model must be a registry key ({', '.join(s.key for s in models.list_models())}), a "
                     f"torch.nn.Module or an attribute(x_batch, target) callable, got {type(model).__name__}")


def _listed(value):
    return None if value is None else [list(map(float, v)) for v in value]


def _subject(loaded: models.LoadedModel, entry: images.ImageEntry, method: Any, target: int | None, seed: int,
             to_net, model_described: dict) -> Subject:
    spec = loaded.spec
    x = images.prepare_image(entry.pixels, spec.in_channels, spec.input_size, spec.flexible_size,
                             spec.resize_size).to(loaded.device)
    if target is None:                                  # the top-1 class, as the app's target picker starts
        target = int(np.argmax(loaded.predict_proba(x)[0].numpy()))
    target = models.validate_target(target, spec.num_classes)
    attribute, logits, name = method_functions(method, loaded, target, seed, to_net)
    described = {"model": {**model_described, "label": spec.label, "arch": spec.arch, "cam_layer": spec.cam_layer},
                 "image": {"key": entry.key, "sha256": entry.sha256, "shape": list(entry.shape)},
                 "input_shape": list(x.shape[1:]), "method": name, "target": target,
                 "target_name": spec.class_names[target], "device": loaded.device}
    return Subject(x, target, attribute, logits, described)


def _callable_subject(fn: Callable, entry: images.ImageEntry, target: int | None, input_size, in_channels,
                      device: str | None) -> Subject:
    """A bare attribute(x_batch, target) -> maps: no classifier, so the target must be given and there is no
    prediction certificate. The image is used at its own size unless `input_size` says otherwise."""
    if target is None or isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise ModelError(f"target must be a class index when the model is an attribution callable, got {target!r}")
    size = tuple(input_size)[-2:] if input_size is not None else tuple(entry.shape[1:])
    x = images.prepare_image(entry.pixels, in_channels or entry.shape[0], size, False, None)
    x = x.to(models.resolve_device(device) if device is not None else "cpu")

    def attribute(xb: torch.Tensor) -> torch.Tensor:
        return _as_maps(fn(xb, int(target)), tuple(xb.shape[-2:]), xb.device)

    described = {"model": {"kind": "callable", "name": getattr(fn, "__qualname__", type(fn).__name__)},
                 "image": {"key": entry.key, "sha256": entry.sha256, "shape": list(entry.shape)},
                 "input_shape": list(x.shape[1:]), "method": "callable", "target": int(target),
                 "target_name": f"class {int(target)}", "device": x.device.type}
    return Subject(x, int(target), attribute, None, described)
