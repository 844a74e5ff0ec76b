"""Length-prefixed frames between the app and a sandbox worker: a JSON header and numpy arrays in .npy format.

Nothing is ever unpickled (np.load with allow_pickle=False): the worker runs untrusted code, so what it sends is
data to be checked, never code. Sizes are bounded before anything is allocated.
"""
from __future__ import annotations

import io
import json
import os
import select
import struct
import time

import numpy as np

MAX_HEADER_BYTES = 1 << 20
MAX_ARRAY_BYTES = 1 << 31
MAX_NPY_HEADER_BYTES = 4096          # .npy headers of plain arrays are ~128 bytes
_LEN = struct.Struct("<Q")


class ChannelClosed(EOFError):
    """The other side closed its end (a worker that died)."""


class ChannelTimeout(TimeoutError):
    """No complete frame arrived before the deadline."""


def encode(header: dict, arrays: list[np.ndarray] = ()) -> bytes:
    parts = [json.dumps({**header, "arrays": len(arrays)}).encode()]
    for a in arrays:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
        parts.append(buf.getvalue())
    return b"".join(_LEN.pack(len(p)) + p for p in parts)


def write_frame(fd: int, header: dict, arrays: list[np.ndarray] = ()) -> None:
    view = memoryview(encode(header, arrays))
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise ChannelTimeout(f"no answer within the time limit ({n - got} bytes missing)")
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise ChannelClosed("the other side closed the channel")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_length(fd: int, limit: int, deadline: float | None, what: str) -> int:
    """A part's length prefix, refused before a byte of the part is read when it exceeds `limit`."""
    (size,) = _LEN.unpack(_read_exact(fd, _LEN.size, deadline))
    if size > limit:
        raise ValueError(f"{what} of {size:,} bytes exceeds the limit of {limit:,}")
    return size


def _read_array(fd: int, limit: int, deadline: float | None) -> np.ndarray:
    """One .npy part, its data read straight into the array (one copy in memory), its size checked from the length
    prefix and its header before the data is read."""
    size = _read_length(fd, limit + MAX_NPY_HEADER_BYTES, deadline, "an array in the reply")
    head = _read_exact(fd, min(size, MAX_NPY_HEADER_BYTES), deadline)
    buf = io.BytesIO(head)
    version = np.lib.format.read_magic(buf)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"unsupported .npy version {version}")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(buf, max_header_size=MAX_NPY_HEADER_BYTES)
    if dtype.hasobject or fortran:
        raise ValueError("an array in the reply holds Python objects or is not C-ordered")
    array = np.empty(shape, dtype)
    if buf.tell() + array.nbytes != size or array.nbytes > limit:
        raise ValueError(f"an array of {array.nbytes:,} bytes in a part of {size:,} (limit {limit:,})")
    data = memoryview(array.reshape(-1).view(np.uint8))
    have = head[buf.tell():]
    data[:len(have)] = have
    _read_into(fd, data[len(have):], deadline)
    return array


def _read_into(fd: int, view: memoryview, deadline: float | None) -> None:
    """Fill `view` from `fd`, straight into its memory: a model archive is the largest part a frame carries, and
    reading it in chunks that are then joined held three copies at once (past a check process's memory cap)."""
    got = 0
    while got < len(view):
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise ChannelTimeout(f"no answer within the time limit ({len(view) - got} bytes missing)")
        n = os.readv(fd, [view[got:got + (1 << 20)]])
        if not n:
            raise ChannelClosed("the other side closed the channel")
        got += n


def read_frame(fd: int, timeout: float | None = None,
               max_array_bytes: int = MAX_ARRAY_BYTES) -> tuple[dict, list[np.ndarray]]:
    """One frame. `max_array_bytes` bounds each array's data (the app passes what a correct reply holds: a worker's
    oversized reply is refused from its length prefix, unread)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    header = json.loads(_read_exact(fd, _read_length(fd, MAX_HEADER_BYTES, deadline, "a frame header"), deadline))
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), int) or not 0 <= header["arrays"] <= 8:
        raise ValueError("malformed frame header")
    arrays = [_read_array(fd, max_array_bytes, deadline) for _ in range(header.pop("arrays"))]
    return header, arrays
