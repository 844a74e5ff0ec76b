"""What kind of model file an upload is, judged by its content (never by its name), and the refusal of the
unsafe kinds: the part of certlib.models.formats that the sandbox's own checks (certlib.sandbox.torchscript_check)
read, kept here so that they need nothing above the sandbox. certlib.models.formats re-exports every name.
"""
from __future__ import annotations

import io
import struct
import zipfile

from certlib.errors import ModelError

SAFETENSORS, PT2, TORCHSCRIPT, PICKLE, UNKNOWN = "safetensors", "pt2", "torchscript", "pickle", "unknown"
MAX_MODEL_BYTES = 600 * 1024 * 1024
MAX_ZIP_ENTRIES = 100_000             # a zip's directory is read here: bound what that costs
SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # the safetensors package's own limit (certlib.models.safetensors_load: 16 MiB)

HOW_TO_EXPORT = ("save the weights as safetensors (safetensors.torch.save_file(model.state_dict(), "
                 "'model.safetensors')) or export the program (torch.export.save(torch.export.export(model, (x,)), "
                 "'model.pt2'))")


def detect_format(data: bytes) -> str:
    """One of SAFETENSORS, PT2, TORCHSCRIPT, PICKLE, UNKNOWN, from the bytes alone (a renamed file is still found)."""
    if _looks_like_safetensors(data):
        return SAFETENSORS
    if data[:4] == b"PK\x03\x04":
        return _zip_format(data)
    # A legacy (non-zip) torch.save file starts with a pickle protocol opcode (0x80) followed by its version.
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return PICKLE
    return UNKNOWN


def _looks_like_safetensors(data: bytes) -> bool:
    # Layout: an 8-byte little-endian header length N, then N bytes of JSON starting with '{', then the tensors.
    if len(data) < 10:
        return False
    (n,) = struct.unpack("<Q", data[:8])
    return 2 <= n <= min(SAFETENSORS_MAX_HEADER, len(data) - 8) and data[8:9] == b"{"


def _declared_entries(data: bytes) -> int | None:
    """The entry count a zip's end-of-central-directory record declares (zip64 too), read before zipfile parses the
    whole directory: a directory of millions of entries would hold the app process for seconds."""
    tail = data[-(65536 + 22):]
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 12:
        return None
    (count,) = struct.unpack("<H", tail[at + 10:at + 12])
    if count == 0xFFFF:                               # zip64: the real count is in the zip64 record
        at64 = data.rfind(b"PK\x06\x06", 0, len(data) - len(tail) + at)
        if at64 >= 0 and len(data) >= at64 + 40:
            (count,) = struct.unpack("<Q", data[at64 + 32:at64 + 40])
    return count


def _zip_names(data: bytes) -> list[str]:
    from certlib.sandbox.archive_check import check_directory

    check_directory(data)             # the directory's bytes bound zipfile's parse (a lying entry count does not)
    declared = _declared_entries(data)
    if declared is not None and declared > MAX_ZIP_ENTRIES:
        raise ModelError(f"the model archive lists {declared:,} files; a model has far fewer "
                         f"(limit {MAX_ZIP_ENTRIES:,})")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ModelError(f"the model file is a damaged zip archive: {exc}") from None
    if len(infos) > MAX_ZIP_ENTRIES:
        raise ModelError(f"the model archive lists {len(infos):,} files; a model has far fewer "
                         f"(limit {MAX_ZIP_ENTRIES:,})")
    return [i.filename for i in infos]


def _zip_format(data: bytes) -> str:
    names = _zip_names(data)
    # torch.export.save: <root>/archive_format (holding "pt2") and <root>/models/<name>.json.
    if any(n.endswith("archive_format") for n in names) and any("/models/" in n and n.endswith(".json")
                                                                 for n in names):
        return PT2
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return TORCHSCRIPT
    # torch.save's zip format: <root>/data.pkl beside the tensor storages, no code.
    if any(n.endswith("data.pkl") for n in names):
        return PICKLE
    return UNKNOWN


def refuse_unsafe(fmt: str) -> None:
    """Raise a ModelError naming why a pickle or an unknown file is not loaded, and what to upload instead."""
    if fmt == PICKLE:
        raise ModelError("this is a torch.save() pickle (a checkpoint), whatever its name says: unpickling runs "
                         "arbitrary code, so certexplorer never loads one; " + HOW_TO_EXPORT)
    if fmt == UNKNOWN:
        raise ModelError("this file is not a model certexplorer can read (neither safetensors, a torch.export .pt2 "
                         "nor TorchScript); " + HOW_TO_EXPORT)
