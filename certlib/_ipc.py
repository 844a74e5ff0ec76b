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


def _read_part(fd: int, limit: int, deadline: float | None) -> bytes:
    (size,) = _LEN.unpack(_read_exact(fd, _LEN.size, deadline))
    if size > limit:
        raise ValueError(f"a frame part of {size} bytes exceeds the limit of {limit}")
    return _read_exact(fd, size, deadline)


def read_frame(fd: int, timeout: float | None = None) -> tuple[dict, list[np.ndarray]]:
    deadline = None if timeout is None else time.monotonic() + timeout
    header = json.loads(_read_part(fd, MAX_HEADER_BYTES, deadline))
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), int) or not 0 <= header["arrays"] <= 8:
        raise ValueError("malformed frame header")
    arrays = [np.lib.format.read_array(io.BytesIO(_read_part(fd, MAX_ARRAY_BYTES, deadline)), allow_pickle=False)
              for _ in range(header.pop("arrays"))]
    return header, arrays
