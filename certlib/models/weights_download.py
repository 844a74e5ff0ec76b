"""Downloading torchvision's ImageNet weights, with progress and torch.hub's hash check.

torchvision names each weights file `<name>-<first hex digits of its sha256>.pth`; torch.hub refuses a download whose
sha256 does not start with those digits, and so does `download`. The file is written next to its destination under a
temporary name and renamed only once complete and checked, so an interrupted or corrupt download never leaves a file
that looks like weights. `$CERTEXPLORER_WEIGHTS_MIRROR` replaces download.pytorch.org by a mirror (an organisation's
proxy, or a local server in the tests); the file name, and so the hash check, stays torchvision's.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

from certlib.errors import ModelError

MIRROR_ENV = "CERTEXPLORER_WEIGHTS_MIRROR"
CHUNK = 1 << 20
MAX_BYTES = 2 * 1024**3          # the largest torchvision classifier weights are ~1.3 GB
ONLINE_TIMEOUT_S = 3.0
ONLINE_MEMO_S = 60.0
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")      # torch.hub's rule for the expected prefix
CHECKING = "checking whether the server answers (this takes a moment; the page updates on its next draw)"
_online_memo: dict[str, tuple[float, str | None, threading.Event]] = {}
_memo_lock = threading.Lock()


class WeightsDownloadError(ModelError):
    """The download failed, was refused (hash, size), or the server could not be reached."""


def mirrored(url: str) -> str:
    """`url` with its directory replaced by $CERTEXPLORER_WEIGHTS_MIRROR when set (the file name is kept)."""
    base = os.environ.get(MIRROR_ENV, "").strip()
    return f"{base.rstrip('/')}/{url.rsplit('/', 1)[-1]}" if base else url


def expected_hash_prefix(url: str) -> str | None:
    """The sha256 prefix a torchvision file name promises ('resnet18-f37072fd.pth' -> 'f37072fd'), else None."""
    match = _HASH_IN_NAME.search(url.rsplit("/", 1)[-1])
    return match.group(1) if match else None


def unreachable_reason(url: str, wait: bool = False) -> str | None:
    """None when the server of `url` answers, else one sentence why not (or that it is being checked).

    Pages are drawn often and a machine without network may take seconds to fail a connection, so the check runs in
    a background thread, once per server and minute: the first call returns CHECKING and a later draw the answer.
    `wait=True` blocks until the answer is known (the CLI, tests)."""
    parts = urllib.parse.urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    with _memo_lock:
        seen = _online_memo.get(origin)
        if seen is None or time.monotonic() - seen[0] >= ONLINE_MEMO_S:
            done = threading.Event()
            seen = _online_memo[origin] = (time.monotonic(), CHECKING, done)
            threading.Thread(target=_probe, args=(url, origin, done), daemon=True).start()
    if wait:
        seen[2].wait(ONLINE_TIMEOUT_S + 5)
        seen = _online_memo.get(origin, seen)
    return seen[1]


def _probe(url: str, origin: str, done: threading.Event) -> None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=ONLINE_TIMEOUT_S):
            reason = None
    except urllib.error.HTTPError:      # the server answered (a missing file is reported by the download itself)
        reason = None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = f"this machine cannot reach {origin} ({getattr(exc, 'reason', exc)}): it looks offline"
    with _memo_lock:
        _online_memo[origin] = (time.monotonic(), reason, done)
    done.set()


def download(url: str, dest: Path, hash_prefix: str | None = None,
             progress: Callable[[int, int | None], None] | None = None, timeout: float = 30.0) -> Path:
    """Fetch `url` into `dest`; progress(bytes so far, total bytes or None) after each MiB. With `hash_prefix`, the
    file's sha256 must start with it (else WeightsDownloadError and nothing is kept). Returns `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.partial")
    sha = hashlib.sha256()
    done = 0
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "certexplorer"}),
                                    timeout=timeout) as response, open(partial, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > MAX_BYTES:
                raise WeightsDownloadError(f"{url} is {total / 2**20:.0f} MiB; refusing more than "
                                           f"{MAX_BYTES / 2**20:.0f} MiB")
            while chunk := response.read(CHUNK):
                done += len(chunk)
                if done > MAX_BYTES:
                    raise WeightsDownloadError(f"{url} sent more than {MAX_BYTES / 2**20:.0f} MiB; stopped")
                sha.update(chunk)
                out.write(chunk)
                if progress is not None:
                    progress(done, total)
        if total is not None and done != total:
            raise WeightsDownloadError(f"{url}: the connection closed after {done} of {total} bytes")
        digest = sha.hexdigest()
        if hash_prefix is not None and not digest.startswith(hash_prefix):
            raise WeightsDownloadError(f"the file from {url} has sha256 {digest[:16]}…, which does not start with "
                                       f"the published {hash_prefix}: not kept (a corrupt or substituted file)")
        os.replace(partial, dest)
    except urllib.error.HTTPError as exc:
        raise WeightsDownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise WeightsDownloadError(f"{url} could not be downloaded: {getattr(exc, 'reason', exc)}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return dest
