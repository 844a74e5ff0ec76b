"""What kind of model file an upload is, judged by its content (never by its name), and the one loader for every
source: `certlib.load_model`.

Formats, safest first (DESIGN §13):

- ``safetensors``: a state dict for a named architecture (certlib.models.safetensors_load). Pure data: loaded in this
  process, no code runs.
- ``pt2``: a ``torch.export`` program. Its graph is checked against the op allow-list and it runs in the sandbox
  worker (certlib.sandbox.runner, certlib.sandbox._export_worker).
- ``torchscript`` (legacy): code; checked and run in the sandbox worker.
- ``pickle``: a ``torch.save`` checkpoint. Unpickling runs arbitrary code, so it is refused by name even when
  renamed to .safetensors or .pt2.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from certlib.errors import ModelError

if TYPE_CHECKING:                     # certlib/__init__ imports this module lazily; keep torch out of its import
    from certlib.models.registry import LoadedModel

from certlib.sandbox.formats import (  # noqa: F401  (re-exported: the detection lives below the sandbox)
    SAFETENSORS, PT2, TORCHSCRIPT, PICKLE, UNKNOWN,
    MAX_MODEL_BYTES, MAX_ZIP_ENTRIES, SAFETENSORS_MAX_HEADER, HOW_TO_EXPORT,
    detect_format, refuse_unsafe)


# ------------------------------------------------------------------------------------------------ the loader

def _read_source(source: "str | os.PathLike | bytes") -> tuple[bytes | None, str]:
    """(bytes, display name) of a path or bytes; (None, key) for a registry key."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "uploaded model"
    if not isinstance(source, (str, os.PathLike)):
        raise ModelError(f"a model source is a registry key, a path or bytes, got {type(source).__name__}")
    path = Path(source).expanduser()
    if isinstance(source, str) and not path.exists() and not _looks_like_path(source):
        return None, source                           # a registry key such as "resnet18" or "digits_sigma0.25"
    if not path.is_file():
        raise ModelError(f"{source}: no such model file (nor a registered model key)")
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelError(f"{path.name} is {size / 2**20:.0f} MiB; the limit is {MAX_MODEL_BYTES / 2**20:.0f} MiB")
    return path.read_bytes(), path.name


def _looks_like_path(text: str) -> bool:
    return os.sep in text or text.lower().endswith((".safetensors", ".pt2", ".pt", ".pth", ".ckpt", ".bin", ".zip"))


def _size_pair(input_size: "int | Sequence[int] | None") -> tuple[int, ...] | None:
    if input_size is None:
        return None
    if isinstance(input_size, int):
        return (input_size, input_size)
    size = tuple(int(v) for v in input_size)
    if len(size) not in (2, 3):
        raise ModelError(f"input_size is H, (H, W) or (C, H, W), got {input_size!r}")
    return size


def load_model(source: "str | os.PathLike | bytes", *, architecture: str | None = None,
               num_classes: int | None = None, input_size: "int | Sequence[int] | None" = None,
               class_names: "Sequence[str] | str | os.PathLike | bytes | None" = None, name: str | None = None,
               device: str | None = "cpu", size_is_fallback: bool = False) -> "LoadedModel":
    """Load any model certexplorer takes; the returned LoadedModel's `.module` takes [B,C,H,W] pixels in [0,1].

    source: a registry key ("resnet18"), a path, or the file's bytes. The format is read from the content:
      safetensors state dict (needs `architecture`, a registry architecture: see
      certlib.models.safetensors_load.ARCHITECTURES; `num_classes` is read from the weights when not given),
      torch.export .pt2 (its input shape is read from the program; `input_size` where it is dynamic), or
      TorchScript (legacy; `input_size` (C, H, W) required). A torch.save pickle is refused.
    class_names: names, or a text file's path or bytes (one name per line); default "class i".
    size_is_fallback: input_size only applies where a .pt2 program's sizes are dynamic (an upload form's defaults).
    """
    data, shown = _read_source(source)
    if data is None:
        _no_file_options(source, architecture, num_classes, input_size, class_names)
        from certlib.models import registry as models

        return models.load_model(source, device=device)
    if not data:
        raise ModelError(f"{shown}: the model file is empty")
    if len(data) > MAX_MODEL_BYTES:
        raise ModelError(f"{shown} is {len(data) / 2**20:.0f} MiB; the limit is {MAX_MODEL_BYTES / 2**20:.0f} MiB")
    names = read_class_names(class_names)
    fmt = detect_format(data)
    refuse_unsafe(fmt)
    label = name or shown
    if fmt == SAFETENSORS:
        from certlib.models import safetensors_load

        return safetensors_load.load(data, architecture, num_classes=num_classes, input_size=_size_pair(input_size),
                                     class_names=names, name=label, device=device)
    if architecture is not None:
        raise ModelError(f"architecture= is for a safetensors state dict; {label} is a {fmt} program, which "
                         "carries its own architecture")
    return _load_program(data, fmt, _size_pair(input_size), names, label, num_classes, device, size_is_fallback)


def _no_file_options(key, architecture, num_classes, input_size, class_names) -> None:
    given = [k for k, v in (("architecture", architecture), ("num_classes", num_classes),
                            ("input_size", input_size), ("class_names", class_names)) if v is not None]
    if given:
        raise ModelError(f"{', '.join(given)} describe a model file; {key!r} is a registered model")


def _load_program(data: bytes, fmt: str, size: tuple[int, ...] | None, names: tuple[str, ...] | None, label: str,
                  num_classes: int | None, device: str | None, size_is_fallback: bool = False) -> "LoadedModel":
    from certlib.models import registry as models

    if fmt == PT2:
        from certlib.models import export_load

        model = export_load.load_pt2(data, size, names, label, device, size_is_fallback)
    else:
        if size is None or len(size) != 3:
            raise ModelError(f"{label} is TorchScript: give its input as input_size=(C, H, W), e.g. (3, 224, 224)")
        model = models.load_torchscript(data, *size, name=label, class_names=names, device=device)
    if num_classes is not None and num_classes != model.spec.num_classes:
        model.module.worker.close()
        raise ModelError(f"num_classes={num_classes} but {label} returns {model.spec.num_classes} scores")
    return model


def read_class_names(class_names: "Sequence[str] | str | os.PathLike | bytes | None") -> tuple[str, ...] | None:
    """Class names from a sequence, a text file's path, or its bytes (one per line, blank lines ignored)."""
    if class_names is None:
        return None
    if isinstance(class_names, (bytes, bytearray)):
        text = _decode_names(bytes(class_names))
    elif isinstance(class_names, (str, os.PathLike)):
        path = Path(class_names).expanduser()
        if not path.is_file():
            raise ModelError(f"class names file {class_names} not found")
        if path.stat().st_size > 16 << 20:
            raise ModelError(f"class names file {path.name} is larger than 16 MiB")
        text = _decode_names(path.read_bytes())
    else:
        names = tuple(str(n) for n in class_names)
        return _checked_names(names)
    return _checked_names(tuple(line.strip() for line in text.splitlines() if line.strip()))


def _decode_names(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ModelError(f"the class names file is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _checked_names(names: tuple[str, ...]) -> tuple[str, ...]:
    if len(names) < 2:
        raise ModelError(f"a classifier needs at least 2 class names, got {len(names)}")
    long = next((n for n in names if len(n) > 200), None)
    if long is not None:
        raise ModelError(f"class name {long[:40]!r}… is longer than 200 characters")
    return names
