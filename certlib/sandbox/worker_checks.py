"""Checks on both sides of the sandbox pipe that are not the pipe itself (certlib.sandbox._ipc) nor the process
(certlib.sandbox.runner): the worker's static check of an upload, its loader's failures in words, and the app's checks of
what a worker answers (reply sizes known before reading, finite logits).

Worker side: `warm_up` is called before Landlock (everything the check imports is loaded while files can still be
read), `check_upload` answers the "check" request, `load_failure` words what torch.jit.load raised.
App side: `reply_array_bytes` bounds a reply before it is read, `nonfinite_message` names a bad batch row.
"""
from __future__ import annotations

import io
import zipfile

import numpy as np

from certlib.errors import ModelError


# ------------------------------------------------------------------------------------------- worker side

def warm_up() -> None:
    """Run the TorchScript check once on a tiny archive: zipfile, zlib, ast and torch's operator table are loaded
    (and cached) before the worker loses file access."""
    from certlib.sandbox import torchscript_check

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w/code/__torch__/m.py", "class M(Module):\n  training : bool\n"
                                            "  def forward(self, x: Tensor) -> Tensor:\n"
                                            "    return torch.relu(x)\n")
        z.writestr("w/constants.pkl", b"")
    torchscript_check.check_archive(buf.getvalue())


def check_upload(data: bytes) -> dict:
    """The worker's reply to "check": {"ok": True}, or the reason the static check refuses the upload. Every way
    the check itself can fail on hostile input is named (the parent's time limit covers what never returns)."""
    from certlib.sandbox import torchscript_check

    try:
        torchscript_check.check_archive(data)
    except ModelError as exc:
        return {"ok": False, "error": str(exc)}
    except RecursionError:
        return {"ok": False, "error": "the TorchScript code nests too deeply to be checked"}
    except MemoryError:
        return {"ok": False, "error": "checking the TorchScript code ran out of the sandbox's memory limit (the "
                                      "code is too large or nested too deeply)"}
    return {"ok": True}


def load_failure(exc: BaseException) -> str:
    """What torch.jit.load's own failures mean to the uploader (it raises bare NotImplementedError or
    RecursionError on archives it cannot read)."""
    detail = str(exc).strip().splitlines()
    detail = f": {detail[-1][:200]}" if detail else ""
    if isinstance(exc, RecursionError):
        return "torch.jit.load could not read the archive: its structure nests too deeply"
    return f"torch.jit.load could not read the archive ({type(exc).__name__}{detail}); re-export it with " \
           "torch.jit.script(model).save(path) from this torch version, or upload safetensors or a .pt2"


def nonfinite_rows(scores: np.ndarray) -> list[int]:
    """Rows of a [batch, classes] array holding NaN or ±inf."""
    return [int(i) for i in np.flatnonzero(~np.isfinite(scores).all(axis=1))]


def nonfinite_message(scores: np.ndarray, what: str = "scores") -> str | None:
    """None when every score is finite, else a message naming the first bad batch row (and how many)."""
    rows = nonfinite_rows(scores.reshape(scores.shape[0], -1)) if scores.ndim >= 1 and scores.shape[0] else []
    if not rows:
        return None
    row = rows[0]
    bad = scores.reshape(scores.shape[0], -1)[row]
    kind = "NaN" if np.isnan(bad).any() else "infinite"
    more = f" (and {len(rows) - 1} more of the batch of {scores.shape[0]})" if len(rows) > 1 else \
        f" of the batch of {scores.shape[0]}"
    return f"the model returned {kind} {what} for row {row}{more}"


# ---------------------------------------------------------------------------------------------- app side

def reply_array_bytes(op: str, arrays: list[np.ndarray], num_classes: int) -> int:
    """The most array bytes a correct reply to `op` can hold: [batch, num_classes] float32 logits for "forward",
    an input-shaped float32 gradient for "vjp", nothing otherwise. The app refuses a larger reply from its length
    header, before reading it."""
    if op == "forward":
        return int(arrays[0].shape[0]) * int(num_classes) * 4
    if op == "vjp":
        return int(np.prod(arrays[0].shape)) * 4
    return 0


def check_finite(scores: np.ndarray, what: str = "scores") -> None:
    """Raise ModelError naming the first batch row with a non-finite value."""
    message = nonfinite_message(scores, what)
    if message is not None:
        raise ModelError(message)
