"""Images to explain: bundled galleries, checked uploads, and preprocessing to what a model takes.

Every image is an `ImageEntry` whose pixels are float32 [C,H,W] in [0,1] with C = 1 or 3. Models get
the pixels through `prepare_image`, which only changes channels and size: smoothing noise is always
added later in this same [0,1] pixel space, so nothing here normalises.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError, WebPImagePlugin

from certlib.data import digits as digits_data
from certlib.errors import ImageError

ImageKind = Literal["digit", "grid", "photo", "upload"]
MeantFor = Literal["digits", "imagenet", "any"]
KINDS = ("digit", "grid", "photo", "upload")
MEANT_FOR = ("digits", "imagenet", "any")

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
MIN_SIDE = 8
# Longer side : shorter side. A 8×1,000,000 strip would otherwise be scaled to a model's short side and reach
# gigabytes; nothing this long is a photograph of something to explain.
MAX_ASPECT = 20
# Uploads above this many pixels are reduced (antialiased, in 8 bits) while decoding: a 40 MP RGBA PNG would
# otherwise cost gigabytes as float32, and no model here sees more than 1024×1024.
MAX_WORKING_PIXELS = 2048 * 2048
PREVIEW_SIDE = 160
# Decoded format (PIL's name) -> the name users know. Extensions are not trusted: the bytes decide.
ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}

DEFAULT_GRIDS = 40
MAX_GRID_INDEX = 10_000  # keys are user-visible strings; a huge index must not build a huge gallery
GRID_CELLS = 4

# ITU-R BT.601 luma weights, the usual RGB -> gray conversion (also PIL's "L" conversion).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


# ------------------------------------------------------------------------------------------------ entries

@dataclass(frozen=True, eq=False)
class ImageEntry:
    """One image with its provenance. `pixels` is a read-only float32 [C,H,W] copy in [0,1].

    `sha256` hashes the pixels together with their shape and dtype, so it is a content key for caches:
    two images that differ in one pixel, or only in shape, get different hashes.
    """

    key: str
    label: str
    kind: ImageKind
    pixels: np.ndarray = field(repr=False)
    true_label: int | None = None
    cell_labels: tuple[int, int, int, int] | None = None
    meant_for: MeantFor = "any"
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ImageError(f"image kind must be one of {KINDS}, got {self.kind!r}")
        if self.meant_for not in MEANT_FOR:
            raise ImageError(f"meant_for must be one of {MEANT_FOR}, got {self.meant_for!r}")
        pixels = _checked_pixels(self.pixels)
        # Entries are shared (galleries are cached), so the pixels must be a private read-only array.
        # An array that owns its float32 data and is already read-only is that; anything else is copied.
        if not (pixels.dtype == np.float32 and pixels.flags.c_contiguous and pixels.flags.owndata
                and not pixels.flags.writeable):
            pixels = np.array(pixels, dtype=np.float32, order="C", copy=True)
            pixels.setflags(write=False)
        object.__setattr__(self, "pixels", pixels)
        object.__setattr__(self, "sha256", pixel_sha256(pixels))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape)  # type: ignore[return-value]


def pixel_sha256(pixels: np.ndarray) -> str:
    """Hex sha256 of an array's shape, dtype and bytes (C order)."""
    arr = np.ascontiguousarray(pixels)
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def _checked_pixels(pixels: np.ndarray) -> np.ndarray:
    arr = np.asarray(pixels)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ImageError(f"pixels must be [C,H,W] with C = 1 or 3, got shape {arr.shape}")
    if arr.shape[1] < 1 or arr.shape[2] < 1:
        raise ImageError(f"pixels must not be empty, got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ImageError("pixels contain NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise ImageError(f"pixels must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return arr


# ---------------------------------------------------------------------------------------------- galleries

@lru_cache(maxsize=1)
def _digit_tuple() -> tuple[ImageEntry, ...]:
    images, labels = digits_data.load_split("held_out")
    sources = digits_data.held_out_source_indices()
    return tuple(
        ImageEntry(key=f"digit:{int(src)}", label=f"digit {int(y)} (held-out #{int(src)})", kind="digit",
                   pixels=img, true_label=int(y), meant_for="digits")
        for img, y, src in zip(images, labels, sources)
    )


def digit_gallery() -> list[ImageEntry]:
    """Every held-out digit, 1×32×32. The key's number is the digit's index into sklearn's load_digits."""
    return list(_digit_tuple())


def _grid_key(index: int, seed: int) -> str:
    # The default seed gets the short key the app shows; other seeds carry theirs so keys never collide.
    return f"grid:{index}" if seed == 0 else f"grid:{seed}:{index}"


@lru_cache(maxsize=8)
def _grid_tuple(n: int, seed: int) -> tuple[ImageEntry, ...]:
    images, labels = digits_data.load_split("held_out")
    by_class = [np.flatnonzero(labels == c) for c in range(10)]
    rng = np.random.default_rng(seed)
    entries = []
    # Grids are drawn one after another from one stream, so grid i is the same for every n > i.
    for i in range(n):
        classes = rng.choice(10, size=GRID_CELLS, replace=False)
        picks = [int(rng.choice(by_class[c])) for c in classes]
        cells = [images[p] for p in picks]  # each [1,32,32]
        pixels = np.concatenate([np.concatenate(cells[:2], axis=2), np.concatenate(cells[2:], axis=2)], axis=1)
        cl = tuple(int(c) for c in classes)
        entries.append(ImageEntry(key=_grid_key(i, seed), label=f"grid {i}: {cl[0]} {cl[1]} / {cl[2]} {cl[3]}",
                                  kind="grid", pixels=pixels, cell_labels=cl, meant_for="digits"))  # type: ignore[arg-type]
    return tuple(entries)


def grid_gallery(n: int = DEFAULT_GRIDS, seed: int = 0) -> list[ImageEntry]:
    """`n` seeded 2×2 grids (1×64×64) of four held-out digits of four distinct classes.

    `cell_labels` lists the classes top-left, top-right, bottom-left, bottom-right; there is no single
    true label. The same (seed) gives the same grids, and a larger n only appends grids.
    """
    if not isinstance(n, int) or not 0 <= n <= MAX_GRID_INDEX:
        raise ImageError(f"number of grids must be an int in [0, {MAX_GRID_INDEX}], got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ImageError(f"grid seed must be a non-negative int, got {seed!r}")
    return list(_grid_tuple(n, seed))


@dataclass(frozen=True)
class Photo:
    """A photo that ships inside an installed package (no download), with its licence and what the bundled photo
    model (EfficientNet-Lite0 at 224²) predicts for it: class index, name and probability, recorded by
    bench/photo_model.py and checked by tests/test_photos.py."""

    name: str
    description: str
    source: str                    # "scikit-image" | "scikit-learn"
    licence: str
    top1: int
    top1_name: str
    top1_prob: float
    names_the_subject: bool = False   # the top-1 says what the photo shows (judged by eye): usable in photo grids


# Every natural photo in scikit-image 0.26's and scikit-learn 1.9's wheels, object photos first. Left out: moon and
# the stereo motorcycle (no licence stated), and the drawings, text and synthetic test patterns.
PHOTOS = (
    Photo("chelsea", "cat (Chelsea the tabby)", "scikit-image", "CC0", 282, "tiger cat", 0.38, True),
    Photo("coffee", "cup of coffee", "scikit-image", "CC0", 967, "espresso", 0.95, True),
    Photo("camera", "cameraman (grayscale)", "scikit-image", "CC0", 872, "tripod", 0.94, True),
    Photo("rocket", "rocket on its launch pad", "scikit-image", "public domain", 657, "missile", 0.32, True),
    Photo("china", "temple in China", "scikit-learn", "CC BY 2.0, danielbuechele (Flickr)", 698, "palace", 0.41, True),
    Photo("flower", "flower", "scikit-learn", "CC BY 2.0, vultilion (Flickr)", 985, "daisy", 0.34, True),
    Photo("astronaut", "astronaut (Eileen Collins)", "scikit-image", "public domain", 450, "bobsled", 0.13),
    Photo("clock", "wall clock, motion-blurred (grayscale)", "scikit-image", "public domain", 971, "bubble", 0.54),
    Photo("coins", "Greek coins (grayscale)", "scikit-image", "no known copyright restrictions", 971, "bubble",
          0.13),
    Photo("hubble_deep_field", "Hubble deep field", "scikit-image", "public domain (NASA)", 110, "flatworm", 0.12),
    Photo("immunohistochemistry", "immunohistochemistry stain (microscopy)", "scikit-image",
          "no known copyright restrictions", 109, "brain coral", 0.08),
    Photo("retina", "human retina (fundus photo)", "scikit-image", "CC0", 643, "mask", 0.15),
    Photo("microaneurysms", "retina detail with microaneurysms (grayscale)", "scikit-image", "CC0", 111,
          "nematode", 0.91),
    Photo("cell", "cell (microscopy, grayscale)", "scikit-image", "CC0", 481, "cassette", 0.07),
    Photo("brick", "brick wall (grayscale texture)", "scikit-image", "CC0", 752, "racket", 0.15),
    Photo("grass", "grass (grayscale texture)", "scikit-image", "CC0", 805, "soccer ball", 0.05),
    Photo("gravel", "gravel (grayscale texture)", "scikit-image", "CC0", 539, "doormat", 0.03),
)
# Photos in the 2×2 photo grids: the photo model's top-1 names the photo's subject, so a cell has an object of its
# class to localise; the four cells of a grid have four different classes.
PHOTO_GRID_CELL = 224            # each cell is a photo as the photo model sees it; a grid is 448×448
DEFAULT_PHOTO_GRIDS = 20


def _load_photo(photo: Photo) -> np.ndarray:
    # Imported lazily: scikit-image and scikit-learn are slow to import.
    if photo.source == "scikit-learn":
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(f"{photo.name}.jpg"))
    from skimage import data

    return np.asarray(getattr(data, photo.name)())


@lru_cache(maxsize=1)
def _photo_tuple() -> tuple[ImageEntry, ...]:
    entries = []
    for photo in PHOTOS:
        pixels = _uint8_hwc_to_chw(_load_photo(photo))
        entries.append(ImageEntry(key=f"photo:{photo.name}", label=f"{photo.description} — {photo.source} sample",
                                  kind="photo", pixels=pixels, meant_for="imagenet"))
    return tuple(entries)


def _uint8_hwc_to_chw(arr: np.ndarray) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise ImageError(f"expected a uint8 photo, got dtype {arr.dtype}")
    return _chw(arr.astype(np.float32) / 255.0)


def photo_gallery() -> list[ImageEntry]:
    """The photos that ship with scikit-image and scikit-learn (see PHOTOS): RGB ones as 3×H×W, gray ones as 1×H×W;
    meant for ImageNet models."""
    return list(_photo_tuple())


def photo_info(key: str) -> Photo | None:
    """Provenance and recorded prediction of a gallery photo ("photo:chelsea"), None for other keys."""
    return next((p for p in PHOTOS if f"photo:{p.name}" == key), None)


def _photo_grid_key(index: int, seed: int) -> str:
    return f"photogrid:{index}" if seed == 0 else f"photogrid:{seed}:{index}"


@lru_cache(maxsize=4)
def _photo_grid_tuple(n: int, seed: int) -> tuple[ImageEntry, ...]:
    pool = [p for p in PHOTOS if p.names_the_subject]
    by_name = {e.key: e for e in _photo_tuple()}
    cells = {p.name: _photo_cell(by_name[f"photo:{p.name}"].pixels) for p in pool}
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(n):          # one stream, so grid i is the same for every n > i (as for the digit grids)
        while True:
            picks = [pool[j] for j in rng.choice(len(pool), size=GRID_CELLS, replace=False)]
            if len({p.top1 for p in picks}) == GRID_CELLS:
                break
        c = [cells[p.name] for p in picks]
        pixels = np.concatenate([np.concatenate(c[:2], axis=2), np.concatenate(c[2:], axis=2)], axis=1)
        label = f"photo grid {i}: " + " · ".join(p.top1_name for p in picks)
        entries.append(ImageEntry(key=_photo_grid_key(i, seed), label=label, kind="grid", pixels=pixels,
                                  cell_labels=tuple(p.top1 for p in picks), meant_for="imagenet"))  # type: ignore[arg-type]
    return tuple(entries)


def _photo_cell(pixels: np.ndarray) -> np.ndarray:
    """A photo as the photo model sees it at 224² (short side to 256, centre crop), in RGB."""
    x = prepare_image(pixels, 3, (PHOTO_GRID_CELL, PHOTO_GRID_CELL), False, round(PHOTO_GRID_CELL / 0.875))
    return x[0].numpy()


def photo_grid_gallery(n: int = DEFAULT_PHOTO_GRIDS, seed: int = 0) -> list[ImageEntry]:
    """`n` seeded 2×2 grids (3×448×448) of four bundled photos whose recorded top-1 classes name their subjects and
    differ (GridPG).

    Each cell is a photo as the photo model sees it (224×224), so a grid costs four times a photo per copy;
    `cell_labels` are the photos' recorded top-1 classes, top-left, top-right, bottom-left, bottom-right."""
    if not isinstance(n, int) or not 0 <= n <= MAX_GRID_INDEX:
        raise ImageError(f"number of photo grids must be an int in [0, {MAX_GRID_INDEX}], got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ImageError(f"grid seed must be a non-negative int, got {seed!r}")
    return list(_photo_grid_tuple(n, seed))


# ------------------------------------------------------------------------------------------------- lookup

_GRID_KEY = re.compile(r"(photo)?grid:(?:(\d+):)?(\d+)")


def get_image(key: str) -> ImageEntry:
    """The bundled image with this key ("digit:17", "grid:3", "grid:<seed>:<i>", "photo:astronaut")."""
    if not isinstance(key, str):
        raise ImageError(f"image key must be a string, got {key!r}")
    if key.startswith("upload:"):
        raise ImageError(f"image key {key!r} names an upload; uploads are not stored, upload the file again")
    grid = _GRID_KEY.fullmatch(key)
    if grid:
        return _grid_by_index(key, int(grid.group(2) or 0), int(grid.group(3)), photos=bool(grid.group(1)))
    # Dispatch on the prefix so that a digit lookup never pays for loading the photos.
    table = _photos_by_key() if key.startswith("photo:") else _digits_by_key()
    entry = table.get(key)
    if entry is None:
        raise ImageError(f"unknown image key {key!r}: expected 'digit:<held-out index>', 'grid:<i>', "
                         f"'photo:<name>' or 'photogrid:<i>'")
    return entry


def _grid_by_index(key: str, seed: int, index: int, photos: bool = False) -> ImageEntry:
    if index >= MAX_GRID_INDEX:
        raise ImageError(f"unknown image key {key!r}: grid index must be below {MAX_GRID_INDEX}")
    # Grids form a prefix-stable sequence, so building enough of them finds grid `index`.
    if photos:
        return _photo_grid_tuple(max(DEFAULT_PHOTO_GRIDS, index + 1), seed)[index]
    return _grid_tuple(max(DEFAULT_GRIDS, index + 1), seed)[index]


@lru_cache(maxsize=1)
def _digits_by_key() -> dict[str, ImageEntry]:
    return {e.key: e for e in _digit_tuple()}


@lru_cache(maxsize=1)
def _photos_by_key() -> dict[str, ImageEntry]:
    return {e.key: e for e in _photo_tuple()}


# ------------------------------------------------------------------------------------------------ uploads

def load_upload(data: bytes, filename: str | None = None) -> ImageEntry:
    """Decode an uploaded PNG, JPEG or WebP into an ImageEntry (kind "upload", meant_for "any").

    Checks run cheapest first and before decoding: size in bytes, format, then width × height from the
    header. EXIF orientation is applied. Gray and 16-bit images give 1 channel, colour gives 3.
    Transparency is composited over white and then dropped (models take no alpha; white matches
    how a browser shows a transparent image on a light page). Animated files give their first frame.
    """
    data = _checked_bytes(data)
    img = _open_header(data)
    try:
        _check_format(img)
        _check_dimensions(*img.size)
        _check_jpeg_has_data_for_its_size(img, data)
        _decode(img)
        original = img.size
        pixels = _pixels_from_pil(_reduced(_apply_exif_orientation(img)))
    finally:
        img.close()
    entry_hash = pixel_sha256(pixels)
    name = _display_name(filename)
    h, w = pixels.shape[1:]
    size = f"{w}×{h}" if (w, h) in (original, original[::-1]) else f"{original[0]}×{original[1]}, reduced to {w}×{h}"
    return ImageEntry(key=f"upload:{entry_hash[:12]}", label=f"{name} ({size})", kind="upload",
                      pixels=pixels, meant_for="any")


def _checked_bytes(data: bytes) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ImageError(f"an upload must be bytes, got {type(data).__name__}")
    if not data:
        raise ImageError("the file is empty (0 bytes)")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(f"the file is {_mib(len(data))} ({len(data):,} bytes); "
                         f"the limit is {_mib(MAX_UPLOAD_BYTES)} ({MAX_UPLOAD_BYTES:,} bytes)")
    return data


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _accepted_names() -> str:
    return ", ".join(ACCEPTED_FORMATS.values())


def _open_header(data: bytes) -> Image.Image:
    """Image.open reads only the header; PIL's own decompression-bomb guard fires here."""
    try:
        with warnings.catch_warnings():
            # PIL warns (and does not refuse) between its two limits; both are far above MAX_PIXELS.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(_too_many_pixels_message(data, exc)) from None
    except UnidentifiedImageError:
        raise ImageError(f"the file is not an image in a readable format; accepted formats are "
                         f"{_accepted_names()}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        # The format was recognised but its header is broken (e.g. a WebP cut short).
        raise ImageError(f"the image data is corrupt or truncated ({exc})") from None


def _too_many_pixels_message(data: bytes, exc: Exception) -> str:
    size = _header_size(data)
    if size is not None:
        return _pixel_limit_message(*size)
    # A format we would refuse anyway: PIL's message still tells how many pixels it claims.
    found = re.search(r"\((\d+) pixels\)", str(exc))
    claimed = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return f"the image header claims {claimed} (a possible decompression bomb); the limit is {MAX_PIXELS:,} pixels"


def _header_size(data: bytes) -> tuple[int, int] | None:
    # The plugin classes parse only the header and skip Image.open's bomb check, which already refused.
    for plugin in (PngImagePlugin.PngImageFile, JpegImagePlugin.JpegImageFile, WebPImagePlugin.WebPImageFile):
        try:
            with plugin(io.BytesIO(data)) as im:
                return im.size
        except Exception:  # not this format: try the next one
            continue
    return None


def _pixel_limit_message(width: int, height: int) -> str:
    return (f"the image is {width}×{height} = {width * height:,} pixels (a possible decompression bomb); "
            f"the limit is {MAX_PIXELS:,} pixels")


def _check_format(img: Image.Image) -> None:
    if img.format not in ACCEPTED_FORMATS:
        raise ImageError(f"unsupported image format {img.format}; accepted formats are {_accepted_names()}")


def _check_dimensions(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageError(_pixel_limit_message(width, height))
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"the image is {width}×{height} pixels; each side must be at least {MIN_SIDE} pixels")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"the image is {width}×{height} pixels, an aspect ratio of "
                         f"{max(width, height) / min(width, height):.0f}:1; the limit is {MAX_ASPECT}:1 "
                         "(crop it to the part to explain)")


def _check_jpeg_has_data_for_its_size(img: Image.Image, data: bytes) -> None:
    """Refuse a JPEG whose header promises more pixels than its data can hold. libjpeg fills missing blocks with
    gray and only warns, so PIL decodes such a file without error. Every 8×8 block of the first component costs at
    least one bit of entropy-coded data (its DC difference has a Huffman code of ≥ 1 bit, in baseline and
    progressive scans alike), so a file of fewer than blocks/8 bytes cannot be whole."""
    if img.format != "JPEG":
        return
    width, height = img.size
    blocks = -(-width // 8) * -(-height // 8)
    if len(data) * 8 < blocks:
        raise ImageError(f"the JPEG header says {width}×{height} pixels ({blocks:,} blocks of 8×8), but the file "
                         f"holds only {len(data):,} bytes, fewer than one bit per block: it is truncated or forged")


def _reduced(img: Image.Image) -> Image.Image:
    """The image reduced (antialiased, before any float conversion) to at most MAX_WORKING_PIXELS pixels."""
    w, h = img.size
    if w * h <= MAX_WORKING_PIXELS:
        return img
    factor = (MAX_WORKING_PIXELS / (w * h)) ** 0.5
    size = (max(1, int(w * factor)), max(1, int(h * factor)))
    if img.mode not in ("1", "L", "LA", "RGB", "RGBA", "I;16", "I", "F", "PA", "La", "RGBa"):   # "P" included
        img = img.convert("RGBA" if _has_transparency(img) else "RGB")
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def preview_rgb(pixels: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """uint8 [h,w,3] for a sidebar preview: the longer side `side` pixels, the shorter at least 8 (letterboxed on
    white), so no upload, however thin, gives a zero-height picture."""
    rgb = Image.fromarray(to_display_rgb(pixels))
    w, h = rgb.size
    scale = side / max(w, h)
    rgb = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    w, h = rgb.size
    canvas = Image.new("RGB", (max(w, 8), max(h, 8)), (255, 255, 255))
    canvas.paste(rgb, ((canvas.width - w) // 2, (canvas.height - h) // 2))
    return np.asarray(canvas)


def _decode(img: Image.Image) -> None:
    # PIL raises on truncated data as long as ImageFile.LOAD_TRUNCATED_IMAGES stays False (its default);
    # certlib never turns it on, because a half-decoded image would be explained as if it were whole.
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        raise ImageError(f"the {ACCEPTED_FORMATS[img.format]} data is corrupt or truncated ({exc})") from None


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        # A broken EXIF block should not cost the user a well-formed picture: keep it unrotated.
        return img


def _pixels_from_pil(img: Image.Image) -> np.ndarray:
    """A decoded PIL image -> float32 [C,H,W] in [0,1]."""
    mode = img.mode
    if mode.startswith("I;16"):
        return _chw(np.asarray(img).astype(np.float32) / 65535.0)
    if mode == "I":
        # Among the accepted formats only 16-bit PNGs decode to mode "I", so 65535 is white.
        return _chw(np.clip(np.asarray(img).astype(np.float32) / 65535.0, 0.0, 1.0))
    if mode == "F":
        return _chw(np.clip(np.nan_to_num(np.asarray(img, dtype=np.float32)), 0.0, 1.0))
    if _has_transparency(img):
        gray = mode in ("1", "L", "LA", "La")
        return _over_white(np.asarray(img.convert("LA" if gray else "RGBA")))
    if mode in ("1", "L"):
        return _chw(np.asarray(img.convert("L")).astype(np.float32) / 255.0)
    return _chw(np.asarray(img.convert("RGB")).astype(np.float32) / 255.0)


def _has_transparency(img: Image.Image) -> bool:
    return img.mode in ("LA", "La", "RGBA", "RGBa", "PA") or "transparency" in img.info


def _over_white(with_alpha: np.ndarray) -> np.ndarray:
    arr = with_alpha.astype(np.float32) / 255.0
    colour, alpha = arr[..., :-1], arr[..., -1:]
    return _chw(colour * alpha + (1.0 - alpha))


def _chw(arr: np.ndarray) -> np.ndarray:
    """[H,W] or [H,W,C] -> a new read-only float32 [C,H,W] in [0,1] (ready to become an entry uncopied)."""
    out = np.array(arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0), dtype=np.float32, order="C")
    np.clip(out, 0.0, 1.0, out=out)
    out.setflags(write=False)
    return out


def _display_name(filename: str | None) -> str:
    return display_name(filename, "upload")


def display_name(filename: str | None, default: str) -> str:
    """A user's file name made safe to show anywhere (Markdown, HTML, captions): its base name, with every
    character other than letters, digits, space and . , _ + - ( ) replaced by _, at most 60 characters."""
    if not filename:
        return default
    name = os.path.basename(str(filename).replace("\\", "/")).strip()
    name = re.sub(r"[^\w .,+()-]", "_", name).strip() or default
    return name if len(name) <= 60 else name[:57] + "..."


# ------------------------------------------------------------------------------------------ preprocessing

def prepare_image(pixels: np.ndarray, in_channels: int, input_size: tuple[int, int], flexible_size: bool,
                  resize_size: int | None = None) -> torch.Tensor:
    """Pixels [C,H,W] in [0,1] -> a model input [1, in_channels, H', W'] float32 in [0,1].

    Channels: equal -> kept; 1 -> 3 by replication; 3 -> 1 by BT.601 luminance.
    Size: a flexible (fully convolutional) model keeps images whose sides are multiples of input_size
    and at most 4× it; everything else is resized (antialiased bilinear) so it covers the target —
    the shorter side to `resize_size` (default: input_size's shorter side) — and center-cropped to
    input_size. No normalisation: noise is added later in this [0,1] space.
    """
    out_h, out_w = _checked_size(input_size)
    if in_channels not in (1, 3):
        raise ImageError(f"a model must take 1 or 3 channels, got in_channels={in_channels!r}")
    x = torch.from_numpy(np.array(_as_chw(pixels), dtype=np.float32))[None]  # a writable copy
    if not torch.isfinite(x).all():
        raise ImageError("pixels contain NaN or infinite values")
    h, w = x.shape[-2:]
    if not (flexible_size and _fits_flexibly(h, w, out_h, out_w)):
        short = resize_size if resize_size is not None else min(out_h, out_w)
        if not isinstance(short, int) or short < 1:
            raise ImageError(f"resize_size must be a positive int, got {resize_size!r}")
        x = _center_crop(_resize_to_cover(x, short, out_h, out_w), out_h, out_w)
    return _convert_channels(x, in_channels).clamp_(0.0, 1.0).contiguous()


def preprocessing_gain(pixel_shape: tuple[int, int, int], in_channels: int, input_size: tuple[int, int],
                       flexible_size: bool, resize_size: int | None = None) -> float:
    """An upper bound on how much `prepare_image` can stretch an ℓ2 perturbation of an image of `pixel_shape`
    [C,H,W]: ‖prepare(u + δ) − prepare(u)‖₂ ≤ gain·‖δ‖₂ for all u, δ. A radius R certified in the model's input
    space therefore covers every perturbation of the image's own pixels up to R / gain.

    prepare_image is a linear map A (resize, crop, channel conversion; all with non-negative weights) followed by a
    clamp to [0, 1], which is 1-Lipschitz. For a non-negative matrix, Schur's test bounds the spectral norm by
    sqrt(max row sum · max column sum); the row sums are A·1 (one forward of an all-ones image) and the column sums
    Aᵀ·1 (one backward). Exact for integer upsampling (gain 4 for 8×8 -> 32×32) and channel replication (√3)."""
    c, h, w = (int(v) for v in pixel_shape)
    ones = torch.ones((1, c, h, w), dtype=torch.float64, requires_grad=True)
    out_h, out_w = _checked_size(input_size)
    y = ones
    if not (flexible_size and _fits_flexibly(h, w, out_h, out_w)):
        short = resize_size if resize_size is not None else min(out_h, out_w)
        y = _center_crop(_resize_to_cover(y, short, out_h, out_w), out_h, out_w)
    y = _convert_channels(y, in_channels)
    col_sums, = torch.autograd.grad(y.sum(), ones, allow_unused=True)
    if col_sums is None:                      # an identity that never touched the graph
        return 1.0
    return float(torch.sqrt(y.detach().max() * col_sums.max()))


def _checked_size(input_size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in input_size)
    except (TypeError, ValueError):
        raise ImageError(f"input_size must be (height, width), got {input_size!r}") from None
    if h < 1 or w < 1:
        raise ImageError(f"input_size must be positive, got {input_size!r}")
    return h, w


def _as_chw(pixels: np.ndarray) -> np.ndarray:
    arr = pixels.detach().cpu().numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
    if arr.ndim == 2:  # a bare gray image
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise ImageError(f"pixels must be [C,H,W], got shape {arr.shape}")
    if arr.shape[0] not in (1, 3):
        raise ImageError(f"an image must have 1 or 3 channels, got {arr.shape[0]} (shape {arr.shape})")
    return arr


def _fits_flexibly(h: int, w: int, out_h: int, out_w: int) -> bool:
    # Multiples of the training size (up to 4×) keep the CNN's receptive field at the scale it learned,
    # so 64×64 grids are explained as four digits rather than shrunk into one.
    return h % out_h == 0 and w % out_w == 0 and h <= 4 * out_h and w <= 4 * out_w


def _resize_to_cover(x: torch.Tensor, short: int, out_h: int, out_w: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    # Shorter side to `short`, but never smaller than the crop (a resize_size below input_size).
    scale = max(short / min(h, w), out_h / h, out_w / w)
    new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
    if (new_h, new_w) == (h, w):
        return x
    x = _precrop_long_side(x, scale, new_h, new_w, out_h, out_w)
    if tuple(x.shape[-2:]) != (h, w):     # pre-cropped: resize the kept part at the same scale
        new_h, new_w = max(out_h, round(x.shape[-2] * scale)), max(out_w, round(x.shape[-1] * scale))
    return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)


def _precrop_long_side(x: torch.Tensor, scale: float, new_h: int, new_w: int, out_h: int,
                       out_w: int) -> torch.Tensor:
    """Centre-crop the source along a side that the resize would make more than twice as long as the final crop
    needs, so a long strip never becomes a huge intermediate (8×1,000,000 at scale 4 would be 4,000,000 wide).
    The kept part covers the final crop plus a margin for the resize filter; ordinary photos are untouched."""
    h, w = x.shape[-2:]
    for dim, size, new, out in ((-2, h, new_h, out_h), (-1, w, new_w, out_w)):
        if new > 2 * out + 8:
            keep = min(size, int(math.ceil((out + 8) / scale)) + int(math.ceil(4 / scale)) * 2)
            start = (size - keep) // 2
            x = x.narrow(dim, start, keep)
    return x


def _center_crop(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - out_h) // 2, (w - out_w) // 2
    return x[..., top:top + out_h, left:left + out_w]


def _convert_channels(x: torch.Tensor, in_channels: int) -> torch.Tensor:
    c = x.shape[1]
    if c == in_channels:
        return x
    if c == 1:
        return x.expand(-1, 3, -1, -1).clone()  # a copy, so callers may edit the channels independently
    weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def to_display_rgb(pixels: np.ndarray) -> np.ndarray:
    """Pixels [C,H,W] (C = 1 or 3) or [H,W] in [0,1] -> uint8 [H,W,3] for display."""
    arr = _as_chw(pixels).astype(np.float32)
    arr = np.nan_to_num(arr, nan=0.0)
    rgb = np.repeat(arr, 3, axis=0) if arr.shape[0] == 1 else arr
    return np.ascontiguousarray(np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0))
