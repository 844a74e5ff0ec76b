"""A user's folder as a sweep's image set (certlib.data.image_folder, `run --images PATH`): found recursively, labelled by
sub-folder or labels.csv, every bad file reported and skipped while the sweep goes on, stored as a named set."""
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from certlib.runs import cli, store
from certlib.data import image_folder, images
from certlib.errors import CertlibError, ImageError
from tests_paths import APP


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height (a decompression bomb's header), with almost no data."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def _save_digit(entry, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((entry.pixels[0] * 255).round().astype(np.uint8)).save(path)


@pytest.fixture
def digit_folder(tmp_path):
    """root/<label>/digit_i.png for three held-out digits, plus a corrupt PNG, a text file, a huge-header PNG and a
    duplicate of the first digit."""
    root = tmp_path / "my digits"
    gallery = images.digit_gallery()
    for entry in gallery[:3]:
        _save_digit(entry, root / str(entry.true_label) / f"{entry.key.replace(':', '_')}.png")
    (root / "7").mkdir(exist_ok=True)
    (root / "7" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG body")
    (root / "README.txt").write_text("not an image")
    (root / "7" / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    first = next(root.rglob("digit_2.png"))
    (root / "copy").mkdir()
    (root / "copy" / "same.png").write_bytes(first.read_bytes())
    return root, gallery[:3]


def test_scan_finds_images_recursively_with_sub_folder_labels_and_lists_the_rest(digit_folder):
    root, gallery = digit_folder
    folder = image_folder.scan(root)
    assert folder.label_source == "sub-folders" and folder.name == str(root.resolve())
    found = {f.relpath: f.label for f in folder.images}
    for entry in gallery:
        assert found[f"{entry.true_label}/{entry.key.replace(':', '_')}.png"] == str(entry.true_label)
    assert "7/broken.png" in found and "7/bomb.png" in found          # decoded (and refused) only when planned
    skipped = {s.relpath: s.reason for s in folder.skipped}
    assert "not a PNG, JPEG or WebP" in skipped["README.txt"]
    assert "same bytes as" in skipped["copy/same.png"] or "same bytes as" in skipped.get(
        f"{gallery[0].true_label}/digit_2.png", "")
    keys = [f.key for f in folder.images]
    assert len(set(keys)) == len(keys) and all(k.startswith("file:") for k in keys)
    # the pixels decode exactly as an upload of the same file, keyed by the file's bytes
    one = next(f for f in folder.images if f.relpath.endswith("digit_4.png"))
    assert np.array_equal(one.load().pixels, images.load_upload(one.path.read_bytes()).pixels)


def test_bad_files_fail_at_load_with_the_upload_checks(digit_folder):
    root, _ = digit_folder
    folder = image_folder.scan(root)
    by_name = {f.relpath: f for f in folder.images}
    with pytest.raises(ImageError):
        by_name["7/broken.png"].load()
    with pytest.raises(ImageError, match="decompression bomb|limit is"):
        by_name["7/bomb.png"].load()


def test_labels_csv_wins_and_labels_resolve_by_index_or_name(tmp_path):
    root = tmp_path / "flat"
    entry = images.digit_gallery()[0]
    _save_digit(entry, root / "a.png")
    _save_digit(images.digit_gallery()[1], root / "sub" / "b.png")
    (root / "labels.csv").write_text("path,label\na.png,3\nsub/b.png,tiger cat\n")
    folder = image_folder.scan(root)
    assert folder.label_source == "labels.csv"
    assert {f.relpath: f.label for f in folder.images} == {"a.png": "3", "sub/b.png": "tiger cat"}
    names = ("tench", "goldfish", "tiger cat")
    assert image_folder.resolve_label("2", names, "x") == 2
    assert image_folder.resolve_label("Tiger Cat", names, "x") == 2
    with pytest.raises(ImageError, match="not a class index"):
        image_folder.resolve_label("7", names, "a.png")
    with pytest.raises(ImageError, match="neither a class index nor a class name"):
        image_folder.resolve_label("zebra", names, "a.png")
    (root / "labels.csv").write_text("file,class\na.png,3\n")
    with pytest.raises(CertlibError, match="path,label"):
        image_folder.scan(root)


def test_a_folder_without_images_or_a_missing_folder_is_one_message(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("x")
    with pytest.raises(CertlibError, match="no PNG, JPEG or WebP images found"):
        image_folder.scan(tmp_path / "empty")
    with pytest.raises(CertlibError, match="not a folder"):
        image_folder.scan(tmp_path / "missing")


ARGS = ["--methods", "grad", "--sigmas", "0.25", "--n", "16", "--n0", "4", "--alpha", "0.1", "--batch-size", "8"]


def test_a_folder_sweep_skips_bad_files_goes_on_and_resumes(digit_folder, tmp_path, monkeypatch, capsys):
    root, gallery = digit_folder
    monkeypatch.setenv(store.DATA_DIR_ENV, str(tmp_path / "data"))
    assert cli.main(["run", "--images", str(root), *ARGS]) == 0
    out, err = capsys.readouterr()
    assert "3 runs planned (1 methods × 3 images of" in out
    for name in ("README.txt", "copy/same.png", "7/broken.png", "7/bomb.png"):
        assert name in err and name in out.split("|")[-1], name        # warned up front, listed in the summary
    assert "skipped 4 files" in out
    db = store.Store(tmp_path / "data" / store.DB_NAME)
    runs = list(db.all_runs())
    assert len(runs) == 3
    configs = [store.config_from_dict(r.config) for r in runs]
    # each image is explained for its folder's label, and keyed by the hash of its bytes
    assert sorted(c.target for c in configs) == sorted(e.true_label for e in gallery)
    assert all(c.image_key.startswith("file:") for c in configs)
    assert db.image_sets() == {str(root.resolve()): 3}
    labels = sorted(label for _, label in db.runs_in_set(str(root.resolve())))
    assert labels == sorted(f"{e.true_label}/{e.key.replace(':', '_')}.png" for e in gallery)
    assert cli.main(["run", "--images", str(root), *ARGS]) == 0          # resumes: nothing left to sample
    assert "3 already stored" in capsys.readouterr().out
    assert len(db) == 3


def test_a_folder_that_is_neither_a_set_nor_a_directory_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(store.DATA_DIR_ENV, str(tmp_path / "data"))
    assert cli.main(["run", "--images", str(tmp_path / "nowhere"), *ARGS]) == 2
    assert "neither a bundled set" in capsys.readouterr().err


def test_the_metrics_page_shows_a_stored_folder_set(digit_folder, tmp_path, monkeypatch):
    """A folder swept by the CLI appears on the Metrics page as a stored set: its runs are shown without sampling;
    settings that match none of them say what the set holds."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from certlib.smoothing import sampling

    root, _ = digit_folder
    monkeypatch.setenv(store.DATA_DIR_ENV, str(tmp_path / "data"))
    assert cli.main(["run", "--images", str(root), "--methods", "grad", "--sigmas", "0.25", "--n", "32", "--n0", "8",
                     "--alpha", "0.1"]) == 0
    st.cache_resource.clear()
    st.cache_data.clear()
    sampled = []
    monkeypatch.setattr(sampling, "sample_topk_counts", lambda *a, **k: sampled.append(1))
    name = "stored:" + str(root.resolve())
    at = AppTest.from_file(APP, default_timeout=300)
    for key, value in {"mx_methods": ["grad"], "mx_sigmas": [0.25], "mx_n": 32, "mx_n0": 8, "mx_alpha": 0.1}.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/metrics.py").run()
    assert any(o.startswith("stored set " + str(root.resolve())) and "(3 runs)" in o
               for o in at.radio(key="mx_images").options)
    at.radio(key="mx_images").set_value(name).run()
    assert not at.exception, at.exception
    assert "**3 of 3 runs**" in next(m.value for m in at.markdown if "runs** are in the store" in m.value)
    assert not [b for b in at.button if b.key == "mx_compute"] and sampled == []
    assert any("mx_rob" == c.key for c in at.get("plotly_chart")) or len(at.get("plotly_chart")) >= 2
    at.select_slider(key="mx_n").set_value(64).run()
    assert any("None of its stored runs match" in i.value and "n 32" in i.value for i in at.info)
