"""A user's own folder of images as a sweep's image set (`python -m certlib run --images PATH`).

Found recursively (PNG, JPEG, WebP by extension), each image keyed by the sha256 of its bytes, decoded only when it
is needed and with the same checks as an upload in the app (size, format, header dimensions, decompression bombs,
truncated data: certlib.data.images.load_upload). A file that fails is reported and skipped; the sweep goes on.

Labels, when there are any: a `labels.csv` at the root (columns `path,label`, paths relative to the root) wins;
otherwise ImageFolder-style class sub-folders (`root/<class>/…`). A label is resolved against the model's classes:
an integer is the class index, a name (case-insensitive) is looked up in the model's class names (e.g. "tiger cat").
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from certlib.data import images
from certlib.errors import CertlibError, ImageError
from certlib.data.images import ImageEntry

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
LABELS_FILE = "labels.csv"
KEY_PREFIX = "file:"


@dataclass(frozen=True)
class FolderImage:
    """One image file: where it is, the hash of its bytes (its identity) and its label as written, if any."""

    path: Path
    relpath: str
    file_sha256: str
    label: str | None = None

    @property
    def key(self) -> str:
        return f"{KEY_PREFIX}{self.file_sha256[:16]}"

    def load(self) -> ImageEntry:
        """Decode with the upload checks; an ImageError names the file and why."""
        data = _read_checked(self.path)
        if hashlib.sha256(data).hexdigest() != self.file_sha256:
            raise ImageError(f"{self.relpath} changed since the folder was scanned")
        entry = images.load_upload(data, self.relpath)
        return ImageEntry(key=self.key, label=self.relpath, kind="upload", pixels=entry.pixels, meant_for="any")


@dataclass(frozen=True)
class Skipped:
    relpath: str
    reason: str


@dataclass(frozen=True)
class ImageFolder:
    root: Path
    images: tuple[FolderImage, ...]
    skipped: tuple[Skipped, ...]
    label_source: str | None          # "labels.csv", "sub-folders" or None

    @property
    def name(self) -> str:
        """The set's name in the store: the folder's absolute path."""
        return str(self.root)


def _read_checked(path: Path) -> bytes:
    size = path.stat().st_size
    if size > images.MAX_UPLOAD_BYTES:
        raise ImageError(f"the file is {size / 2**20:.1f} MiB; the limit is "
                         f"{images.MAX_UPLOAD_BYTES / 2**20:.0f} MiB")
    return path.read_bytes()


def scan(root: str | os.PathLike, limit: int | None = None) -> ImageFolder:
    """Every image file under `root` (sorted by relative path, the first `limit`), hashed; other files, unreadable
    files and duplicates of an earlier file's content are listed in `skipped`."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise CertlibError(f"--images {root}: not a folder")
    base = base.resolve()
    labels = _labels_csv(base)
    files = sorted((p for p in base.rglob("*") if p.is_file() and not p.is_symlink()),
                   key=lambda p: p.relative_to(base).as_posix())
    found, skipped, seen = [], [], {}
    subfolder_labels = labels is None and any(p.parent != base for p in files
                                              if p.suffix.lower() in EXTENSIONS)
    for path in files:
        rel = path.relative_to(base).as_posix()
        if rel == LABELS_FILE:
            continue
        if path.suffix.lower() not in EXTENSIONS:
            skipped.append(Skipped(rel, f"not a PNG, JPEG or WebP file (by its name); accepted: {', '.join(EXTENSIONS)}"))
            continue
        if limit is not None and len(found) >= limit:
            break
        try:
            digest = hashlib.sha256(_read_checked(path)).hexdigest()
        except (OSError, ImageError) as exc:
            skipped.append(Skipped(rel, getattr(exc, "strerror", None) or str(exc)))
            continue
        if digest in seen:
            skipped.append(Skipped(rel, f"the same bytes as {seen[digest]}"))
            continue
        seen[digest] = rel
        if labels is not None:
            label = labels.get(rel)
        elif subfolder_labels and path.parent != base:
            label = path.relative_to(base).parts[0]
        else:
            label = None
        found.append(FolderImage(path, rel, digest, label))
    if not found:
        raise CertlibError(f"--images {root}: no PNG, JPEG or WebP images found"
                           + (f" ({len(skipped)} other files skipped)" if skipped else ""))
    source = LABELS_FILE if labels is not None else "sub-folders" if subfolder_labels else None
    return ImageFolder(base, tuple(found), tuple(skipped), source)


def _labels_csv(base: Path) -> dict[str, str] | None:
    path = base / LABELS_FILE
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise CertlibError(f"{path}: needs a header with the columns path,label; found {reader.fieldnames}")
        return {Path(row["path"]).as_posix().lstrip("./"): row["label"].strip() for row in reader if row["path"]}


def resolve_label(label: str, class_names: Sequence[str], where: str) -> int:
    """The class index a label names: an integer index, or one of the model's class names (case-insensitive)."""
    text = label.strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(class_names):
            raise ImageError(f"{where}: label {text} is not a class index of this model (0..{len(class_names) - 1})")
        return index
    lowered = [c.lower() for c in class_names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise ImageError(f"{where}: label {text!r} is neither a class index nor a class name of this model")
