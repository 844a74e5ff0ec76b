"""The shared sidebar ("workbench"): model, image, target class, attribution method, device.

Every page renders it first (`current()` or `render_sidebar()`); its widget values are re-bound to session state at
the start of each run so they survive page switches (Streamlit drops the state of widgets that a run did not draw).
Errors are shown in the sidebar and never discard what the user had chosen before.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from certlib import resources
from certlib.attributions import methods as attributions, defaults
from certlib.data import images
from certlib.models import registry as models, weights_download
from certlib.errors import SHOWN_ERRORS, CertlibError, describe_error
from certlib.viz import top_k_classes
from ui import cache, share
from ui.controls import help_for

PERSISTENT_KEYS = ("device", "model_key", "image_source", "image_digit", "image_grid", "image_photo",
                   "image_photogrid", "target", "method")
ROOT = resources.project_root()              # app.py, pages/ and assets/: the checkout or the installed app
NAV = (("app.py", "Home", ":material/home:"), ("pages/certified_pixels.py", "Certified pixels", ":material/grid_on:"),
       ("pages/uniform_smoothing.py", "Uniform smoothing", ":material/blur_on:"),
       ("pages/sparsified_smoothgrad.py", "Sparsified SmoothGrad", ":material/filter_center_focus:"),
       ("pages/compare.py", "Compare", ":material/view_column:"),
       ("pages/metrics.py", "Metrics", ":material/leaderboard:"), ("pages/learn.py", "Learn", ":material/school:"))
IMAGE_SOURCES = {"photo": "Photos (scikit-image, scikit-learn)", "photogrid": "2×2 photo grids",
                 "digit": "Digits (held-out)", "grid": "2×2 digit grids", "upload": "Upload"}
# Which model family each gallery is made for; choosing a gallery while the other family's model is active switches
# the model (and says so), as choosing a model switches the gallery.
FRONT_DOOR_PHOTO = defaults.FRONT_DOOR_PHOTO     # the home page's "Certify a photo", chosen by measurement
SOURCE_FAMILY = {"photo": "imagenet", "photogrid": "imagenet", "digit": "digits", "grid": "digits"}


@dataclass
class Workbench:
    """Everything a page needs about the current selection."""

    model: models.LoadedModel
    image: images.ImageEntry
    x: torch.Tensor          # [1,C,H,W] in [0,1], preprocessed for the model
    probs: np.ndarray        # [num_classes]
    target: int
    method: str
    device: str

    @property
    def prediction(self) -> int:
        return int(np.argmax(self.probs))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of the model input."""
        return tuple(self.x.shape[1:])

    @property
    def input_dim(self) -> int:
        """d = C·H·W, the number of values in the model input."""
        return int(self.x[0].numel())

    @property
    def input_pixels(self) -> int:
        """H·W: the pixels each top-K% level ranks."""
        return int(np.prod(self.x.shape[-2:]))

    def rms(self, radius: float) -> float:
        """An ℓ2 radius in the model input as the RMS change of one input value, R/√d."""
        return radius / math.sqrt(self.input_dim)

    def display_rgb(self) -> np.ndarray:
        """The model input as the picture to show (certlib.data.images)."""
        return images.to_display_rgb(self.x[0].cpu().numpy())

    def model_x(self) -> torch.Tensor:
        """The model input on the model's device, as sampling and checks take it."""
        return self.x.to(self.model.device)


def current() -> Workbench:
    """Render the sidebar and return its workbench; stops the page with a pointer to the sidebar if unusable."""
    wb = render_sidebar()
    if wb is None:
        st.info("Choose a model and an image in the sidebar to start.")
        st.stop()
    return wb


def remember(keys=(), rebind_all: bool = False, choices: dict | None = None, **defaults) -> None:
    """Keep widget values across page switches: re-bind each key to session state (Streamlit drops the state of
    widgets a run did not draw) and seed defaults. Widgets bound this way must be created without `value=`.
    Keys are recorded, and every page's sidebar re-binds all recorded keys, so a page's settings survive a visit
    to another page. A new session first takes the values of a shared link (ui.share; `choices` are the values a
    link may set: a list, or a (low, high) range)."""
    share.restore(defaults, choices, keys)
    share.show_notices()
    known = st.session_state.setdefault("_remembered", set())
    known.update(keys, defaults)
    for key, default in defaults.items():
        st.session_state.setdefault(key, default)
    # Only the sidebar, which runs before any widget, may re-bind every recorded key; a page re-binds its own.
    for key in known if rebind_all else (*keys, *defaults):
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


# One stylesheet for every page. Columns wrap (not squeeze) when the main area is narrow: Streamlit stacks them only
# below a 640 px viewport, so at 800 px beside the sidebar four columns of ~120 px cut labels and shrink figures.
# Metric labels wrap instead of ending in "…". `.st-key-stale` dims results that are being recomputed.
PAGE_CSS = """<style>
@media (max-width: 1200px) {
  [data-testid="stHorizontalBlock"] { flex-wrap: wrap; row-gap: 0.75rem; }
  [data-testid="stHorizontalBlock"] > [data-testid="stColumn"] { min-width: min(260px, 100%); flex: 1 1 260px; }
}
[data-testid="stMetricLabel"], [data-testid="stMetricLabel"] * {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
}
[data-testid="stMetricValue"] { font-size: 1.75rem; }
[class*="st-key-stale"] { opacity: 0.45; filter: grayscale(60%); pointer-events: none; }
</style>"""


def _page_frame() -> None:
    """Page config, the shared stylesheet and the navigation links; every page calls this first (see app.py on why
    not st.navigation)."""
    st.set_page_config(page_title="certexplorer", page_icon=str(ROOT / "assets" / "logo.png"), layout="wide")
    st.html(PAGE_CSS)
    with st.sidebar:
        for path, label, icon in NAV:
            st.page_link(path, label=label, icon=icon)
        st.divider()


def render_sidebar() -> Workbench | None:
    _page_frame()
    remember(PERSISTENT_KEYS, rebind_all=True, model_upload_c=3, model_upload_h=224, model_upload_w=224,
             choices={"device": ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"],
                      "image_source": list(IMAGE_SOURCES), "target": (0, 10**6)})
    st.session_state["workbench"] = None
    with st.sidebar:
        st.header("Workbench")
        device = _device_picker()
        model = _model_picker(device)
        if model is None:
            return None
        image = _image_picker(model.spec)
        if image is None:
            return None
        try:
            x = model_input(model, image)
        except CertlibError as exc:
            st.error(f"This image cannot be fed to {model.spec.key}: {exc}")
            return None
        try:
            probs = probabilities(model, image, x)
        except SHOWN_ERRORS as exc:
            st.error(f"{model.spec.label} cannot classify this image: {describe_error(exc)}")
            return None
        target = _target_picker(model.spec, image, probs)
        method = _method_picker(model.spec)
    wb = Workbench(model=model, image=image, x=x, probs=probs, target=target, method=method, device=device)
    st.session_state["workbench"] = wb
    return wb


# ---------------------------------------------------------------------------------------------------- device

def _device_picker() -> str:
    options = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    labels = {"cpu": "CPU", "cuda": f"GPU ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""}
    device = st.radio("Device", options, key="device", horizontal=True, format_func=labels.get,
                      help=help_for("device"))
    if not torch.cuda.is_available():
        st.caption("No CUDA GPU found: everything runs on the CPU.")
    return device


# ----------------------------------------------------------------------------------------------------- model

def _model_picker(device: str) -> models.LoadedModel | None:
    specs = models.list_models()
    user_models: dict[str, models.LoadedModel] = st.session_state.setdefault("user_models", {})
    labels = {s.key: s.label for s in specs if s.available}
    labels.update({k: m.spec.label for k, m in user_models.items()})
    if st.session_state.get("_select_model_next") in labels:
        st.session_state["model_key"] = st.session_state.pop("_select_model_next")
    if st.session_state.get("model_key") not in labels:
        st.session_state["model_key"] = (models.default_model_key() if models.default_model_key() in labels
                                         else next(iter(labels)))
    if st.session_state.get("download_notice"):
        st.success(st.session_state.pop("download_notice"))
    key = st.selectbox("Model", list(labels), key="model_key", format_func=labels.get, help=help_for("model_key"),
                       on_change=lambda: st.session_state.update(pairing_notice=""))
    unavailable = [s for s in specs if not s.available]
    if unavailable:
        with st.expander(f"Unavailable models ({len(unavailable)})"):
            for s in unavailable:
                _unavailable_model(s)
    _model_uploader()
    try:
        model = user_models[key] if key in user_models else registry_model(key, device)
        if key in user_models:
            _reload_if_stopped(model)
    except CertlibError as exc:
        st.error(str(exc))
        return None
    if model.device != device and key in user_models:
        model = _move_user_model(key, device)
    if model.spec.description:
        st.caption(model.spec.description)
    for note in model.notes:
        st.warning(note)
    return model


def _reload_if_stopped(model: models.LoadedModel) -> None:
    """An uploaded model whose worker is not running (the server stopped it while idle to make room for other
    sessions' models, certlib.sandbox.pool; or it crashed) starts again from its bytes here, visibly: it takes
    seconds. Raises ModelError (e.g. "server busy") for the picker to show."""
    worker = getattr(model.module, "worker", None)
    if worker is None or worker.live:
        return
    why = "the server stopped its idle worker to make room for others" if worker.evicted else "its worker stopped"
    with st.status(f"Reloading the uploaded model ({why})…") as status:
        worker.ensure_live()
        status.update(label="Reloaded the uploaded model", state="complete")


def _unavailable_model(spec: models.ModelSpec) -> None:
    """One unavailable model: a download button for torchvision's weights when their server answers, else why not."""
    if spec.key not in models.IMAGENET_MODELS:
        st.markdown(f"**{spec.key}** — {spec.unavailable_reason}")
        return
    url = models.imagenet_weights_url(spec.key)
    offline = weights_download.unreachable_reason(url)
    if offline:
        st.markdown(f"**{spec.key}** — {spec.unavailable_reason} (Download here: {offline}.)")
        return
    size = models.imagenet_weights_megabytes(spec.key)
    label = f"Download {spec.key} weights" + (f" ({size:.0f} MB)" if size else "")
    st.markdown(f"**{spec.key}** — weights not on this machine; torchvision publishes them at {url}.")
    if st.button(label, key=f"download_{spec.key}", icon=":material/download:"):
        bar = st.progress(0.0, text=f"Downloading {spec.key}…")

        def progress(done: int, total: int | None) -> None:
            of = f" of {total / 1e6:.1f}" if total else ""
            bar.progress(min(1.0, done / total) if total else 0.0, text=f"{spec.key}: {done / 1e6:.1f}{of} MB")

        try:
            path = models.download_imagenet_weights(spec.key, progress=progress)
        except CertlibError as exc:
            bar.empty()
            st.error(str(exc))
            return
        bar.empty()
        st.session_state["_select_model_next"] = spec.key    # the model picker is already drawn in this run
        st.session_state["download_notice"] = f"Downloaded and hash-checked {path.name}; {spec.key} is selected."
        st.rerun()


def model_input(model: models.LoadedModel, image: images.ImageEntry) -> torch.Tensor:
    """The image as this model takes it: [1,C,H,W] in [0,1]."""
    spec = model.spec
    return images.prepare_image(image.pixels, spec.in_channels, spec.input_size, spec.flexible_size,
                                spec.resize_size)


def probabilities(model: models.LoadedModel, image: images.ImageEntry, x: torch.Tensor) -> np.ndarray:
    """The model's class probabilities on the prepared image, from the shared cache."""
    return cache.class_probabilities(model, f"{model.weights_sha256}:{model.device}",
                                     f"{image.sha256}:{tuple(x.shape)}", x)


def front_door(device: str) -> Workbench:
    """The workbench "Certify a photo" opens (see try_a_photo), built the way the sidebar builds it, so that
    ui.warmup can fill the caches the first picture reads: the photo gallery, the prediction, the clean map."""
    chosen = defaults.for_family("imagenet")
    model = registry_model(models.photo_model_key(), device)
    image = next(e for e in images.photo_gallery() if e.key == FRONT_DOOR_PHOTO)
    x = model_input(model, image)
    probs = probabilities(model, image, x)
    return Workbench(model=model, image=image, x=x, probs=probs, target=int(np.argmax(probs)), method=chosen.method,
                     device=device)


def registry_model(key: str, device: str) -> models.LoadedModel:
    """A registered model from the shared cache (a replaced weights file loads afresh)."""
    spec = models.get_spec(key)
    stat = spec.weights_path.stat() if spec.weights_path else None
    token = f"{spec.weights_path}:{stat.st_size}:{stat.st_mtime}" if stat else ""
    return cache.registry_model(key, device, token)


def _move_user_model(key: str, device: str) -> models.LoadedModel:
    m = st.session_state["user_models"][key]
    if m.spec.arch != "torchscript":     # uploaded TorchScript runs in its sandboxed worker, on the CPU
        m.module.to(device)
        m.device = device
    return m


def _model_uploader() -> None:
    from certlib.models.safetensors_load import architecture_names

    with st.expander("Upload a model"):
        st.caption("Safest first: a **safetensors** state dict for a known architecture (weights only, no code runs), "
                   "a **torch.export** `.pt2` program, or **TorchScript** (legacy). Programs take [B,C,H,W] pixels "
                   "in [0,1] (normalise inside) and run in a sandboxed process. `torch.save` pickles are refused, "
                   "never unpickled.")
        st.file_uploader("Model file (.safetensors, .pt2, TorchScript .pt)", key="model_upload", max_upload_size=600,
                         help="Up to 600 MB; the format is read from the content, not the name.")
        st.selectbox("Architecture (safetensors only)", architecture_names(), key="model_upload_arch",
                     help="The network the state dict belongs to; its number of classes is read from the weights.")
        st.file_uploader("Class names, one per line (optional)", key="model_upload_classes", type=["txt"],
                         max_upload_size=16)
        st.caption("Input size: safetensors use the architecture's; a .pt2 states its own (these apply where its "
                   "sizes are dynamic); TorchScript needs them.")
        c1, c2, c3 = st.columns(3)
        c1.number_input("channels", min_value=1, max_value=3, step=2, key="model_upload_c")
        c2.number_input("height", min_value=8, max_value=1024, key="model_upload_h")
        c3.number_input("width", min_value=8, max_value=1024, key="model_upload_w")
        st.button("Load model", key="model_upload_go", on_click=_load_uploaded_model)
        if st.session_state.get("model_upload_error"):
            st.error(st.session_state["model_upload_error"])


def _load_uploaded_model() -> None:
    """Button callback: runs before the script, so it may select the new model in the model picker."""
    from certlib.models import formats as model_formats

    st.session_state["model_upload_error"] = ""
    f = st.session_state.get("model_upload")
    if f is None:
        st.session_state["model_upload_error"] = "Choose a model file first."
        return
    names = st.session_state.get("model_upload_classes")
    size = (int(st.session_state["model_upload_c"]), int(st.session_state["model_upload_h"]),
            int(st.session_state["model_upload_w"]))
    data = f.getvalue()
    try:
        fmt = model_formats.detect_format(data)
        m = model_formats.load_model(
            data, architecture=st.session_state.get("model_upload_arch") if fmt == model_formats.SAFETENSORS
            else None, input_size=None if fmt == model_formats.SAFETENSORS else size,
            class_names=names.getvalue() if names is not None else None, name=f.name,
            device=st.session_state.get("device", "cpu"), size_is_fallback=True)
    except CertlibError as exc:
        st.session_state["model_upload_error"] = f"{images.display_name(f.name, 'the model')}: {exc}"
        return
    st.session_state["user_models"][m.spec.key] = m
    st.session_state["model_key"] = m.spec.key


# ----------------------------------------------------------------------------------------------------- image

def _image_picker(spec: models.ModelSpec) -> images.ImageEntry | None:
    # A new model family switches the gallery to the images it was made for (digits vs photos).
    family_default = "digit" if spec.family == "digits" else "photo"
    if st.session_state.get("_image_family") != spec.family:
        st.session_state["_image_family"] = spec.family
        if st.session_state.get("image_source") != "upload":
            st.session_state["image_source"] = family_default
    source = st.selectbox("Image set", list(IMAGE_SOURCES), key="image_source", format_func=IMAGE_SOURCES.get,
                          help=help_for("image_source"),
                          on_change=_pair_model_with_gallery)
    if st.session_state.get("pairing_notice"):
        st.info(st.session_state["pairing_notice"], icon=":material/swap_horiz:")
    if source == "upload":
        entry = _uploaded_image()
    else:
        entries = {"digit": images.digit_gallery, "grid": images.grid_gallery, "photo": images.photo_gallery,
                   "photogrid": images.photo_grid_gallery}[source]()
        by_key = {e.key: e for e in entries}
        if st.session_state.get(f"image_{source}") not in by_key:
            st.session_state[f"image_{source}"] = entries[0].key
        key = st.selectbox("Image", list(by_key), key=f"image_{source}", format_func=lambda k: by_key[k].label,
                           help=help_for("image"))
        entry = by_key[key]
    if entry is None:
        return None
    st.image(images.preview_rgb(entry.pixels), caption=entry.label)
    photo = images.photo_info(entry.key)
    if photo is not None:
        st.caption(f"Licence: {photo.licence} ({photo.source}).")
    if entry.meant_for not in ("any", spec.family):
        st.caption(f"This image is meant for {entry.meant_for} models; it is converted to what "
                   f"{spec.key} takes ({spec.in_channels} channel(s), {spec.input_size[0]}×{spec.input_size[1]}).")
    return entry


def try_a_photo(photo: str = FRONT_DOOR_PHOTO, method: str | None = None) -> None:
    """Button callback (runs before the script): the bundled photo model on a bundled photo, with `method`, by
    default the photo family's measured default, and that family's n0 and σ on the Certified pixels page."""
    chosen = defaults.for_family("imagenet")
    st.session_state.update(model_key=models.photo_model_key(), image_source="photo", image_photo=photo,
                            method=method or chosen.method, cp_n0=chosen.n0, cp_sigma=chosen.sigma,
                            pairing_notice="", _image_family="imagenet", _open_certified_pixels=True)


def _pair_model_with_gallery() -> None:
    """Image-set callback (runs before the script): a photo gallery picked while a digits model is active selects
    the bundled photo model, a digit gallery picked while an ImageNet model is active selects the default digits
    model; a one-line notice says so. Uploads keep the model."""
    st.session_state["pairing_notice"] = ""
    wanted = SOURCE_FAMILY.get(st.session_state.get("image_source"))
    key = st.session_state.get("model_key")
    current_family = next((s.family for s in models.list_models() if s.key == key), None)
    if wanted is None or current_family in (None, wanted, "user"):
        return
    target = models.photo_model_key() if wanted == "imagenet" else models.default_model_key()
    spec = next((s for s in models.list_models() if s.key == target and s.available), None)
    if spec is None:
        return
    st.session_state["model_key"] = target
    st.session_state["_image_family"] = spec.family          # the model follows the gallery, not the reverse
    st.session_state["method"] = attributions.default_method(spec)   # the method measured best for that family
    st.session_state["pairing_notice"] = (f"Switched the model to {spec.label}: these images are meant for "
                                          f"{'ImageNet' if wanted == 'imagenet' else 'digits'} models.")


def _uploaded_image() -> images.ImageEntry | None:
    st.file_uploader("PNG, JPEG or WebP", key="image_upload", on_change=_read_uploaded_image,
                     max_upload_size=images.MAX_UPLOAD_BYTES // 2**20,
                     help=f"Up to {images.MAX_UPLOAD_BYTES // 2**20} MB and {images.MAX_PIXELS // 10**6} megapixels; "
                          "the file's bytes decide its format, not its name.")
    if st.session_state.get("image_upload_error"):
        st.error(st.session_state["image_upload_error"])
    entry = st.session_state.get("uploaded_image")
    if entry is None:
        st.info("Upload an image to explain it.")
    return entry


def _read_uploaded_image() -> None:
    """Uploader callback: a bad file shows its error and keeps the last good upload."""
    st.session_state["image_upload_error"] = ""
    f = st.session_state.get("image_upload")
    if f is None:
        return
    try:
        st.session_state["uploaded_image"] = images.load_upload(f.getvalue(), f.name)
    except CertlibError as exc:
        st.session_state["image_upload_error"] = f"{images.display_name(f.name, 'the image')}: {exc}"


# ------------------------------------------------------------------------------------------- target, method

def _target_picker(spec: models.ModelSpec, image: images.ImageEntry, probs: np.ndarray) -> int:
    # The target defaults to the prediction and follows it when the model or the image changes.
    pair = (spec.key, image.key, image.sha256)
    if st.session_state.pop("_share_target", False) and isinstance(st.session_state.get("target"), int) \
            and st.session_state["target"] < spec.num_classes:
        st.session_state["_target_for"] = pair        # a shared link's target class is kept, not reset
    if st.session_state.get("_target_for") != pair or st.session_state.get("target") is None \
            or st.session_state["target"] >= spec.num_classes:
        st.session_state["_target_for"] = pair
        st.session_state["target"] = int(np.argmax(probs))
    names = spec.class_names
    target = st.selectbox("Target class", range(spec.num_classes), key="target", help=help_for("target"),
                          format_func=lambda i: f"{i}: {names[i]} ({probs[i]:.1%})")
    top = top_k_classes(probs, 5)
    st.caption("Top-5: " + " · ".join(f"**{names[i]}** {p:.1%}" for i, p in top))
    return models.validate_target(target, spec.num_classes)


def usable_methods(spec: models.ModelSpec) -> list[str]:
    """The attribution methods that apply to this model, in the registry's order."""
    return [k for k in attributions.METHODS if attributions.unavailable_reason(k, spec) is None]


def method_label(key: str) -> str:
    """An attribution method's name as every page shows it."""
    return attributions.METHODS[key].label


def method_label_with_family(key: str) -> str:
    """The method's name and its family, as a method picker shows it."""
    return f"{attributions.METHODS[key].label} ({attributions.METHODS[key].family})"


def _method_picker(spec: models.ModelSpec) -> str:
    usable = usable_methods(spec)
    if st.session_state.get("method") not in usable:
        st.session_state["method"] = attributions.default_method(spec)
    method = st.selectbox("Attribution method", usable, key="method", help=help_for("method"),
                          format_func=method_label_with_family)
    st.caption(attributions.METHODS[method].summary)
    blocked = [(k, attributions.unavailable_reason(k, spec)) for k in attributions.METHODS if k not in usable]
    if blocked:
        with st.expander(f"Methods not applicable here ({len(blocked)})"):
            for k, why in blocked:
                st.markdown(f"**{attributions.METHODS[k].label}** — {why}")
    return method
