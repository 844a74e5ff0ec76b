"""certlib.data.images: bundled galleries, upload checks (with real files built in memory) and preprocessing."""
import io
import socket
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from certlib.data import digits as digits_data, images
from certlib.errors import CertlibError, ImageError
from certlib.data.images import ImageEntry, get_image, load_upload, prepare_image, to_display_rgb


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _rgb(h: int = 20, w: int = 30, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height (1-bit gray) with a token IDAT: tiny, never decodable."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------------ errors, entries

def test_image_error_is_a_value_error():
    assert issubclass(ImageError, CertlibError) and issubclass(ImageError, ValueError)


def test_entry_pixels_are_a_read_only_copy_with_a_content_hash():
    src = np.full((1, 8, 8), 0.5, dtype=np.float32)
    entry = ImageEntry(key="upload:x", label="x", kind="upload", pixels=src)
    src[0, 0, 0] = 0.0  # the caller's array is not the entry's
    assert entry.pixels[0, 0, 0] == 0.5 and not entry.pixels.flags.writeable
    same = ImageEntry(key="upload:y", label="y", kind="upload", pixels=np.full((1, 8, 8), 0.5))
    assert same.sha256 == entry.sha256

    changed = entry.pixels.copy()
    changed[0, 3, 4] += 1e-3
    assert ImageEntry(key="u", label="u", kind="upload", pixels=changed).sha256 != entry.sha256
    reshaped = entry.pixels.reshape(1, 4, 16)
    assert ImageEntry(key="u", label="u", kind="upload", pixels=reshaped).sha256 != entry.sha256


@pytest.mark.parametrize("pixels, match", [
    (np.zeros((4, 8, 8)), "C = 1 or 3"),
    (np.zeros((8, 8)), r"\(8, 8\)"),
    (np.full((1, 8, 8), 1.5), r"\[0, 1\]"),
    (np.full((1, 8, 8), np.nan), "NaN"),
])
def test_entry_rejects_bad_pixels(pixels, match):
    with pytest.raises(ImageError, match=match):
        ImageEntry(key="u", label="u", kind="upload", pixels=pixels)


# ------------------------------------------------------------------------------------------------ galleries

def test_digit_gallery_is_exactly_the_held_out_digits():
    from sklearn.datasets import load_digits

    train_idx, held_idx = digits_data.split_indices()
    gallery = images.digit_gallery()
    sources = np.array([int(e.key.split(":")[1]) for e in gallery])
    assert np.array_equal(np.sort(sources), held_idx)
    assert not set(sources) & set(train_idx.tolist())  # never a training digit

    raw = load_digits()
    expected = digits_data.upsample_digits(raw.images[sources].astype(np.float32) / 16.0)
    assert np.array_equal(np.stack([e.pixels for e in gallery]), expected)
    assert [e.true_label for e in gallery] == raw.target[sources].tolist()
    assert all(e.kind == "digit" and e.meant_for == "digits" and e.pixels.shape == (1, 32, 32) for e in gallery)
    assert gallery[0].label == f"digit {gallery[0].true_label} (held-out #{sources[0]})"


def test_grid_cells_are_held_out_digits_of_four_distinct_classes():
    held, labels = digits_data.load_split("held_out")
    grids = images.grid_gallery()
    assert len(grids) == images.DEFAULT_GRIDS
    for g in grids:
        assert g.kind == "grid" and g.pixels.shape == (1, 64, 64) and g.true_label is None
        assert g.meant_for == "digits" and len(set(g.cell_labels)) == 4
        p = g.pixels[0]
        cells = [p[:32, :32], p[:32, 32:], p[32:, :32], p[32:, 32:]]  # TL, TR, BL, BR
        for cell, cls in zip(cells, g.cell_labels):
            same_class = held[labels == cls, 0]
            assert (same_class == cell).all(axis=(1, 2)).any(), (g.key, cls)


def test_galleries_are_deterministic_and_grids_prefix_stable():
    first = [e.sha256 for e in images.digit_gallery()]
    grids = [(e.key, e.sha256, e.cell_labels) for e in images.grid_gallery(n=12, seed=5)]
    images._digit_tuple.cache_clear()
    images._grid_tuple.cache_clear()
    images._digits_by_key.cache_clear()     # derived from the tuple: rebuilt with it, or get_image serves old ones
    assert [e.sha256 for e in images.digit_gallery()] == first
    assert [(e.key, e.sha256, e.cell_labels) for e in images.grid_gallery(n=12, seed=5)] == grids
    assert [e.sha256 for e in images.grid_gallery(n=5, seed=5)] == [s for _, s, _ in grids[:5]]
    other = images.grid_gallery(n=12, seed=0)
    assert [e.sha256 for e in other] != [s for _, s, _ in grids]
    assert grids[0][0] == "grid:5:0" and other[0].key == "grid:0"


def test_photo_gallery_loads_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    images._photo_tuple.cache_clear()
    images._photos_by_key.cache_clear()
    photos = images.photo_gallery()
    assert {"photo:astronaut", "photo:chelsea", "photo:coffee", "photo:camera"} <= {p.key for p in photos}
    for p in photos:
        assert p.kind == "photo" and p.meant_for == "imagenet" and p.true_label is None
        assert p.pixels.dtype == np.float32 and p.pixels.shape[0] in (1, 3) and min(p.pixels.shape[1:]) >= 100
        assert 0.0 <= p.pixels.min() and p.pixels.max() <= 1.0
    assert get_image("photo:astronaut").pixels.shape == (3, 512, 512)
    assert get_image("photo:camera").pixels.shape == (1, 512, 512)


def test_get_image_round_trips_bundled_keys():
    for entry in images.digit_gallery()[:5] + images.grid_gallery()[:5] + images.photo_gallery()[:2]:
        assert get_image(entry.key) is entry
    assert get_image("grid:2:7").sha256 == images.grid_gallery(n=8, seed=2)[7].sha256
    assert get_image("grid:45").key == "grid:45"  # beyond the default gallery, still the same sequence


@pytest.mark.parametrize("key, match", [
    ("digit:999999", "digit:999999"),
    ("photo:eagle", "photo:eagle"),
    ("nonsense", "nonsense"),
    ("grid:99999999", "grid:99999999"),
    ("upload:0123456789ab", "upload the file again"),
])
def test_get_image_unknown_key_names_it(key, match):
    with pytest.raises(ImageError, match=match):
        get_image(key)


def test_a_training_digit_key_is_unknown():
    train_idx, _ = digits_data.split_indices()
    with pytest.raises(ImageError, match=f"digit:{train_idx[0]}"):
        get_image(f"digit:{train_idx[0]}")


# -------------------------------------------------------------------------------------------------- uploads

@pytest.mark.parametrize("fmt, exact", [("PNG", True), ("JPEG", False), ("WEBP", False)])
def test_rgb_uploads(fmt, exact):
    arr = _rgb()
    entry = load_upload(_encode(Image.fromarray(arr), fmt), "dir/photo.bin")
    assert entry.kind == "upload" and entry.meant_for == "any" and entry.pixels.shape == (3, 20, 30)
    assert entry.key == f"upload:{entry.sha256[:12]}" and entry.label == "photo.bin (30×20)"
    assert entry.pixels.dtype == np.float32 and 0.0 <= entry.pixels.min() and entry.pixels.max() <= 1.0
    if exact:
        assert np.array_equal(entry.pixels, arr.transpose(2, 0, 1) / np.float32(255.0))


def test_the_format_comes_from_the_bytes_not_the_name():
    entry = load_upload(_encode(Image.fromarray(_rgb()), "PNG"), "looks_like.gif")
    assert entry.pixels.shape == (3, 20, 30)


def test_grayscale_png_is_one_channel():
    gray = _rgb()[..., 0]
    entry = load_upload(_encode(Image.fromarray(gray), "PNG"))
    assert entry.pixels.shape == (1, 20, 30)
    assert np.array_equal(entry.pixels[0], gray / np.float32(255.0))


def test_sixteen_bit_png_is_scaled_to_unit_range():
    arr = np.zeros((10, 12), dtype=np.uint16)
    arr[0, 0], arr[0, 1], arr[0, 2] = 65535, 32768, 257
    entry = load_upload(_encode(Image.fromarray(arr), "PNG"))
    assert entry.pixels.shape == (1, 10, 12)
    np.testing.assert_allclose(entry.pixels[0, 0, :3], [1.0, 32768 / 65535, 257 / 65535], rtol=1e-6)
    assert entry.pixels[0, 1, 0] == 0.0


def test_rgba_is_composited_over_white():
    arr = np.zeros((10, 10, 4), dtype=np.uint8)
    arr[..., 0] = 255                     # red ...
    arr[0, 0, 3] = 0                      # ... fully transparent here -> white
    arr[0, 1, 3] = 255                    # opaque -> red
    arr[0, 2, 3] = 128                    # half -> pink
    arr[1:, :, 3] = 255
    px = load_upload(_encode(Image.fromarray(arr, "RGBA"), "PNG")).pixels
    assert px.shape == (3, 10, 10)
    np.testing.assert_allclose(px[:, 0, 0], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(px[:, 0, 1], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(px[:, 0, 2], [1.0, 1 - 128 / 255, 1 - 128 / 255], rtol=1e-6)


def test_gray_with_alpha_stays_one_channel_over_white():
    la = Image.new("LA", (10, 10), (0, 0))
    px = load_upload(_encode(la, "PNG")).pixels
    assert px.shape == (1, 10, 10) and (px == 1.0).all()


def test_palette_images_become_rgb_and_their_transparency_white():
    pal = Image.new("P", (10, 10), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    px = load_upload(_encode(pal, "PNG")).pixels
    assert px.shape == (3, 10, 10)
    np.testing.assert_allclose(px[:, 1, 1], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(px[:, 0, 0], [0.0, 0.0, 0.0])
    px = load_upload(_encode(pal, "PNG", transparency=0)).pixels
    np.testing.assert_allclose(px[:, 0, 0], [1.0, 1.0, 1.0])  # the transparent index -> white
    np.testing.assert_allclose(px[:, 1, 1], [1.0, 0.0, 0.0])


def test_exif_orientation_is_applied():
    img = Image.fromarray(_rgb(h=20, w=40))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    entry = load_upload(_encode(img, "JPEG", exif=exif.tobytes()))
    assert entry.pixels.shape == (3, 40, 20)


def test_animated_png_gives_its_first_frame():
    frames = [Image.new("L", (10, 10), v) for v in (10, 200)]
    data = _encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    px = load_upload(data).pixels
    assert px.shape == (1, 10, 10) and np.allclose(px, 10 / 255)


def test_truncated_images_are_not_loaded():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    png = _encode(Image.fromarray(_rgb(64, 64)), "PNG")
    with pytest.raises(ImageError, match="PNG data is corrupt or truncated"):
        load_upload(png[: len(png) // 2])
    jpeg = _encode(Image.fromarray(_rgb(64, 64)), "JPEG")
    with pytest.raises(ImageError, match="JPEG data is corrupt or truncated"):
        load_upload(jpeg[: len(jpeg) // 2])
    webp = _encode(Image.fromarray(_rgb(64, 64)), "WEBP")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_upload(webp[: len(webp) // 2])


def test_empty_upload():
    with pytest.raises(ImageError, match=r"the file is empty \(0 bytes\)"):
        load_upload(b"", "empty.png")


def test_random_bytes_are_not_an_image():
    noise = np.random.default_rng(1).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    with pytest.raises(ImageError, match="not an image.*accepted formats are PNG, JPEG, WebP"):
        load_upload(noise, "noise.png")


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_are_named_and_refused(fmt):
    with pytest.raises(ImageError, match=f"unsupported image format {fmt}; accepted formats are PNG, JPEG, WebP"):
        load_upload(_encode(Image.fromarray(_rgb()), fmt), "picture.png")


def test_too_many_bytes(monkeypatch):
    monkeypatch.setattr(images, "MAX_UPLOAD_BYTES", 1000)
    data = _encode(Image.fromarray(_rgb(64, 64)), "PNG")
    with pytest.raises(ImageError, match=rf"the file is .* \({len(data):,} bytes\); the limit is .* \(1,000 bytes\)"):
        load_upload(data)


def test_default_limits():
    assert images.MAX_UPLOAD_BYTES == 20 * 1024 * 1024 and images.MAX_PIXELS == 40_000_000


@pytest.mark.parametrize("width, height", [
    (8000, 8000),     # above our limit only: refused from the header
    (10000, 10000),   # PIL warns of a decompression bomb
    (20000, 20000),   # PIL refuses to open it
])
def test_huge_headers_are_refused_before_decoding(width, height):
    data = _png_header_only(width, height)
    assert len(data) < 200
    with pytest.raises(ImageError, match=f"{width}×{height} = {width * height:,} pixels.*limit is 40,000,000"):
        load_upload(data)


def test_pixel_limit_is_a_module_constant(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="40×40 = 1,600 pixels.*limit is 1,000 pixels"):
        load_upload(_encode(Image.fromarray(_rgb(40, 40)), "PNG"))


def test_too_small():
    with pytest.raises(ImageError, match="4×4 pixels; each side must be at least 8"):
        load_upload(_encode(Image.fromarray(_rgb(4, 4)), "PNG"))
    assert load_upload(_encode(Image.fromarray(_rgb(8, 8)), "PNG")).pixels.shape == (3, 8, 8)


# -------------------------------------------------------------------------------------------- preprocessing

def _digit_input(pixels):
    return prepare_image(pixels, in_channels=1, input_size=(32, 32), flexible_size=True)


def _imagenet_input(pixels):
    return prepare_image(pixels, in_channels=3, input_size=(224, 224), flexible_size=False, resize_size=256)


def test_digits_and_grids_reach_the_flexible_model_unresized():
    digit = images.digit_gallery()[0]
    x = _digit_input(digit.pixels)
    assert x.shape == (1, 1, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[0], torch.tensor(digit.pixels))
    grid = images.grid_gallery()[0]
    assert torch.equal(_digit_input(grid.pixels)[0], torch.tensor(grid.pixels))
    assert _digit_input(np.zeros((1, 96, 64), np.float32)).shape == (1, 1, 96, 64)


@pytest.mark.parametrize("shape", [(1, 100, 50), (1, 160, 160), (1, 20, 20), (3, 48, 32)])
def test_other_sizes_are_resized_and_cropped_for_the_flexible_model(shape):
    x = _digit_input(np.random.default_rng(0).random(shape, dtype=np.float32))
    assert x.shape == (1, 1, 32, 32) and 0.0 <= x.min() and x.max() <= 1.0


def test_imagenet_path_resizes_the_short_side_then_center_crops():
    x = _imagenet_input(np.random.default_rng(0).random((3, 300, 400), dtype=np.float32))
    assert x.shape == (1, 3, 224, 224) and 0.0 <= x.min() and x.max() <= 1.0
    # a horizontal ramp stays centred: the crop takes the middle 224 of the 341 resized columns
    ramp = np.broadcast_to(np.linspace(0, 1, 400, dtype=np.float32), (3, 300, 400))
    row = _imagenet_input(ramp)[0, 0, 112]
    assert abs(float(row[0] + row[-1]) / 2 - 0.5) < 0.01
    assert _imagenet_input(np.zeros((3, 224, 224), np.float32)).shape == (1, 3, 224, 224)
    # without resize_size the short side goes straight to the input size
    wide = prepare_image(ramp, 3, (224, 224), flexible_size=False)
    assert wide.shape == (1, 3, 224, 224)


def test_gray_to_rgb_replicates_exactly():
    gray = np.random.default_rng(0).random((1, 224, 224), dtype=np.float32)
    x = prepare_image(gray, 3, (224, 224), flexible_size=False)  # already 224: no resize
    assert x.shape == (1, 3, 224, 224)
    for c in range(3):
        assert torch.equal(x[0, c], torch.from_numpy(gray[0]))


def test_rgb_to_gray_uses_bt601_luminance():
    colour = np.empty((3, 32, 32), np.float32)
    colour[0], colour[1], colour[2] = 0.2, 0.5, 0.9
    x = _digit_input(colour)
    assert x.shape == (1, 1, 32, 32)
    np.testing.assert_allclose(x.numpy(), 0.299 * 0.2 + 0.587 * 0.5 + 0.114 * 0.9, rtol=1e-6)


def test_prepare_image_clamps_and_leaves_its_input_alone():
    px = np.random.default_rng(0).random((3, 50, 70), dtype=np.float32)
    before = px.copy()
    x = _imagenet_input(px)
    assert np.array_equal(px, before) and 0.0 <= x.min() and x.max() <= 1.0
    x = _digit_input(images.digit_gallery()[0].pixels)  # read-only entry pixels are fine
    x += 1.0  # the result is the caller's own tensor


@pytest.mark.parametrize("pixels, in_channels, match", [
    (np.zeros((4, 32, 32), np.float32), 3, "1 or 3 channels, got 4"),
    (np.zeros((2, 32, 32), np.float32), 1, "1 or 3 channels, got 2"),
    (np.zeros((1, 32, 32), np.float32), 2, "in_channels=2"),
    (np.zeros((1, 1, 32, 32), np.float32), 1, r"\[C,H,W\]"),
])
def test_bad_channel_counts_are_refused(pixels, in_channels, match):
    with pytest.raises(ImageError, match=match):
        prepare_image(pixels, in_channels, (32, 32), flexible_size=True)


def test_to_display_rgb():
    gray = to_display_rgb(np.full((1, 5, 6), 0.5, np.float32))
    assert gray.shape == (5, 6, 3) and gray.dtype == np.uint8 and (gray == 128).all()
    photo = images.photo_gallery()[0]
    shown = to_display_rgb(photo.pixels)
    assert shown.shape == photo.pixels.shape[1:] + (3,)
    assert to_display_rgb(torch.ones(3, 4, 4)).max() == 255


@pytest.mark.parametrize("shape, channels, size, flexible, resize", [
    ((1, 8, 8), 1, (32, 32), True, None),        # digits: 4× upsampling
    ((1, 10, 13), 1, (32, 32), False, None),     # non-integer resize and crop
    ((3, 12, 9), 1, (16, 16), False, None),      # luminance
    ((1, 16, 20), 3, (16, 16), False, 16),       # replication to RGB
    ((1, 64, 48), 1, (16, 16), False, None),     # downsampling
    ((1, 32, 32), 1, (32, 32), True, None),      # nothing to do
])
def test_preprocessing_gain_bounds_the_exact_operator_norm(shape, channels, size, flexible, resize):
    from certlib.data.images import preprocessing_gain

    d = int(np.prod(shape))
    columns = []
    for i in range(d):   # the linear part column by column (a one-hot image never reaches the clamp)
        e = np.zeros(d, np.float32)
        e[i] = 1.0
        columns.append(prepare_image(e.reshape(shape), channels, size, flexible, resize).double().flatten())
    exact = float(np.linalg.norm(torch.stack(columns, 1).numpy(), 2))
    gain = preprocessing_gain(shape, channels, size, flexible, resize)
    assert exact <= gain * (1 + 1e-9) and gain <= 1.35 * exact, (exact, gain)
    if shape == (1, 8, 8):
        assert gain == pytest.approx(4.0, rel=1e-6)                  # R in the 8×8 image is R / 4
    # and the bound holds for the real (clamped) preprocessing on random images and perturbations
    rng = np.random.default_rng(0)
    for _ in range(5):
        u = rng.uniform(size=shape).astype(np.float32)
        delta = rng.normal(scale=0.1, size=shape).astype(np.float32)
        moved = prepare_image(u + delta, channels, size, flexible, resize) - prepare_image(u, channels, size, flexible,
                                                                                          resize)
        assert float(moved.norm()) <= gain * float(np.linalg.norm(delta)) * (1 + 1e-5)


# ------------------------------------------------------------------------------------- hostile geometry (issue 14)

def _peak_rss_mb(code: str) -> float:
    """Run `code` in a fresh interpreter and return its peak RSS in MiB above the baseline after imports."""
    import subprocess
    import sys

    from tests_paths import ROOT as root

    script = f"""
import resource, sys
sys.path.insert(0, {str(root)!r})
import numpy as np, torch
from PIL import Image
from certlib.data import images
def _clear():
    open('/proc/self/clear_refs', 'w').write('5')    # reset the peak-RSS mark to the current RSS
def _peak():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1]) / 1024
_clear(); base = _peak()
{code}
print(_peak() - base)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("width, height", [(1_000_000, 8), (8, 5000), (1300, 8)])
def test_extreme_aspect_uploads_are_refused_with_their_ratio(width, height):
    data = _encode(Image.new("L", (width, height), 128), "PNG")
    assert len(data) < 20_000                                  # kilobytes on the wire
    with pytest.raises(ImageError, match=r"aspect ratio of \d+:1; the limit is 20:1"):
        load_upload(data, "strip.png")


def test_a_long_strip_never_becomes_a_huge_intermediate():
    # Straight through the library (no upload limits): 8×1,000,000 scaled 4× would be a 512 MB float32 array.
    grown = _peak_rss_mb("x = images.prepare_image(np.full((1, 8, 1_000_000), 0.5, np.float32), 1, (32, 32), "
                         "False)\nassert tuple(x.shape) == (1, 1, 32, 32)")
    assert grown < 150, f"{grown:.0f} MiB"                    # the 32 MB input plus small change


def test_the_pre_crop_matches_the_plain_resize():
    cols = np.arange(600, dtype=np.float32)                    # 50:1, wider than the pre-crop threshold; smooth
    strip = np.broadcast_to(0.5 + 0.4 * np.sin(cols / 9.0), (1, 12, 600)).astype(np.float32)
    got = prepare_image(strip, 1, (32, 32), False)
    t = torch.from_numpy(strip)[None]
    full = torch.nn.functional.interpolate(t, size=(32, 1600), mode="bilinear", align_corners=False, antialias=True)
    ref = full[..., :, (1600 - 32) // 2:(1600 - 32) // 2 + 32]
    assert float((got - ref).abs().max()) < 0.05              # the same picture up to sub-pixel centring


def test_huge_uploads_are_reduced_while_decoding_within_a_memory_bound():
    w, h = 7300, 5440                                          # 39.7 MP RGBA, a few hundred KB as PNG
    grown = _peak_rss_mb(f"""
import io
buf = io.BytesIO()
Image.new('RGBA', ({w}, {h}), (10, 200, 30, 128)).save(buf, 'PNG')
_clear(); base = _peak()
entry = images.load_upload(buf.getvalue(), 'big.png')
assert entry.pixels.shape[1] * entry.pixels.shape[2] <= images.MAX_WORKING_PIXELS
assert 'reduced to' in entry.label and '{w}×{h}' in entry.label
""")
    assert grown < 900, f"{grown:.0f} MiB"                    # 3 GB before: float32 of 40 MP × 4 channels


def test_previews_of_thin_images_cannot_be_empty():
    for shape in ((1, 8, 1300), (3, 2000, 8), (1, 1, 1)):
        p = images.preview_rgb(np.zeros(shape, np.float32))
        assert p.dtype == np.uint8 and p.ndim == 3 and min(p.shape[:2]) >= 8 and max(p.shape[:2]) <= 160


def test_a_jpeg_whose_header_promises_more_than_its_data_is_refused():
    small = _encode(Image.fromarray(_rgb(64, 64)), "JPEG", quality=90)
    sof = small.index(b"\xff\xc0")
    forged = bytearray(small)
    forged[sof + 5:sof + 9] = struct.pack(">HH", 6000, 6000)   # SOF0: height, width
    with Image.open(io.BytesIO(bytes(forged))) as im:           # control: PIL decodes it without complaint
        im.load()
        assert im.size == (6000, 6000)
    with pytest.raises(ImageError, match="fewer than one bit per block"):
        load_upload(bytes(forged), "forged.jpg")
    assert load_upload(small, "fine.jpg").pixels.shape == (3, 64, 64)
