"""Checks on both sides of the sandbox pipe that are not the pipe itself (certlib.sandbox._ipc) nor the process
(certlib.sandbox.runner): the check process's static check of an upload, its loader's failures in words, and the app's checks of
what a worker answers (reply sizes known before reading, finite logits).

Sandbox side: `check_upload` answers the check process's request (certlib.sandbox._check_worker), `load_failure`
words what torch.jit.load raised in the worker.
App side: `reply_array_bytes` bounds a reply before it is read, `nonfinite_message` names a bad batch row.
"""
from __future__ import annotations

import numpy as np

from certlib.errors import ModelError


# ------------------------------------------------------------------------------------------- sandbox side

def check_upload(data: bytes, operators: frozenset[str]) -> dict:
    """The check process's reply (certlib.sandbox._check_worker): {"ok": True}, or the reason the static check
    refuses the upload. Every way the check itself can fail on hostile input is named (the parent's time limit
    covers what never returns). `operators`: the operator names of the app's torch build."""
    from certlib.sandbox import torchscript_check

    try:
        torchscript_check.check_archive(data, operators)
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
