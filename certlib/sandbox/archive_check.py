"""Reading an uploaded zip archive with bounded cost: what the app may do with one (O(size) and cheap), and how the
sandbox worker reads members (a byte cap per member, zip bombs refused) before anything parses them.

zipfile trusts the sizes an archive declares and raises a zoo of exceptions (BadZipFile, NotImplementedError for an
unknown compression method, RuntimeError for an encrypted member, zlib.error, EOFError); every one of them becomes a
ModelError here, naming the member.
"""
from __future__ import annotations

import io
import struct
import zipfile
import zlib

from certlib.errors import ModelError

# A member that inflates more than this many times its compressed size is a zip bomb, not a model: TorchScript and
# torch.export store their members uncompressed, and deflated code shrinks ~5-10x.
MAX_COMPRESSION_RATIO = 200
MAX_UNCOMPRESSED_BYTES = 2 << 30          # all members together, as declared (the worker's memory is 4 GiB)
# zipfile parses the whole central directory in Python, holding the GIL (~15 µs an entry on a busy core): bounding
# its bytes bounds that. Real archives: ~80 bytes an entry (ResNet-18 TorchScript: 193 entries, 15 KiB), so 1 MiB is
# ~13,000 entries; the smallest possible entry is 46 bytes, so at worst ~23,000 entries, ~0.35 s.
MAX_DIRECTORY_BYTES = 1 << 20
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, zlib.error, EOFError,
                OSError, ValueError, KeyError)


def directory_bytes(data: bytes) -> int | None:
    """The size of the central directory that zipfile will parse, found as zipfile finds it (the last end record in
    the final 64 KiB; a zip64 record right before its locator overrides it), without parsing anything."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65536 - 22))
    if end < 0 or len(data) < end + 22:
        return None
    (size,) = struct.unpack("<I", data[end + 12:end + 16])
    locator, record = end - 20, end - 20 - 56
    if record >= 0 and data[locator:locator + 4] == b"PK\x06\x07" and data[record:record + 4] == b"PK\x06\x06":
        (size,) = struct.unpack("<Q", data[record + 40:record + 48])
    return size


def check_directory(data: bytes, what: str = "model archive") -> None:
    """Refuse a zip whose central directory would take the app process long to parse (before zipfile does)."""
    size = directory_bytes(data)
    if size is not None and size > MAX_DIRECTORY_BYTES:
        raise ModelError(f"the {what}'s list of files is {size / 2**20:,.1f} MiB; a model's is far smaller (limit "
                         f"{MAX_DIRECTORY_BYTES >> 20} MiB)")


def open_zip(data: bytes, what: str = "model archive") -> zipfile.ZipFile:
    """The zip in `data` (its directory bounded, then read once), or a ModelError."""
    check_directory(data, what)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        archive.infolist()
    except _READ_ERRORS as exc:
        raise ModelError(f"the {what} is not a readable zip file ({_reason(exc)})") from None
    return archive


def check_declared_sizes(archive: zipfile.ZipFile, what: str = "model archive") -> None:
    """Refuse zip bombs from the directory alone (no member is inflated): O(number of members)."""
    total = 0
    for info in archive.infolist():
        total += info.file_size
        if info.file_size > 1 << 20 and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise ModelError(f"{info.filename[:100]!r} in the {what} inflates {info.file_size:,} bytes from "
                             f"{info.compress_size:,} (a zip bomb; limit {MAX_COMPRESSION_RATIO}x)")
        if info.flag_bits & 0x1:
            raise ModelError(f"{info.filename[:100]!r} in the {what} is encrypted")
    if total > MAX_UNCOMPRESSED_BYTES:
        raise ModelError(f"the {what}'s members add up to {total / 2**20:,.0f} MiB uncompressed; the limit is "
                         f"{MAX_UNCOMPRESSED_BYTES >> 20:,} MiB")


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, what: str = "model archive") -> bytes:
    """A member's bytes, never more than `cap` of them inflated (whatever its header declares)."""
    if info.file_size > cap:
        raise ModelError(f"{info.filename[:100]!r} in the {what} is {info.file_size:,} bytes; the limit is {cap:,}")
    try:
        with archive.open(info) as member:
            raw = member.read(cap + 1)
    except _READ_ERRORS as exc:
        raise ModelError(f"{info.filename[:100]!r} in the {what} cannot be read ({_reason(exc)})") from None
    if len(raw) > cap:                       # only a header that lies gets here: zipfile stops at the declared size
        raise ModelError(f"{info.filename[:100]!r} in the {what} inflates past its limit of {cap:,} bytes")
    return raw


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1][:160]}" if text else type(exc).__name__
