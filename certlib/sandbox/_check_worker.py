"""The sandbox's check process: parses one uploaded TorchScript archive's code (certlib.sandbox.torchscript_check)
and answers whether it may be loaded. Started by certlib.sandbox.runner.check_in_sandbox; never imported by the app.

It never imports torch: parsing code needs only zipfile and ast, and the operator names of the app's torch build
arrive with the request. So a refusal costs a fraction of a second of one core, where a torch worker costs seconds
to start (measured in bench/load.py: four hostile uploads at once took their refusals 25-35 s under a crowd, each
check waiting behind a torch import and a place in the worker budget). Only an archive that passes starts a worker.

Same confinement as the worker (certlib.sandbox._worker): nice and its own session group, a fresh network
namespace, then `lock_down` (memory cap, no file writes, Landlock, seccomp) before a byte of the upload is read; the
parent bounds its wall-clock time. Frames are certlib.sandbox._ipc on private copies of stdin/stdout.
"""
from __future__ import annotations

import faulthandler
import os
import sys


def _warm_up() -> None:
    """Check a tiny archive once, so that every module the check touches is loaded before files go away."""
    import io
    import zipfile

    from certlib.sandbox import torchscript_check

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w/code/__torch__/m.py", "class M(Module):\n  training : bool\n"
                                            "  def forward(self, x: Tensor) -> Tensor:\n"
                                            "    return torch.relu(x)\n")
        z.writestr("w/constants.pkl", b"")
    torchscript_check.check_archive(buf.getvalue(), frozenset({"relu", "as_strided"}))


def main() -> None:
    from certlib.sandbox._worker import _leave_the_network, _yield_the_cores, lock_down

    _yield_the_cores()
    netns = _leave_the_network()
    faulthandler.enable()                    # a crash's Python stack goes to stderr, which the app shows
    from certlib.sandbox import _ipc, worker_checks

    in_fd, out_fd = os.dup(0), os.dup(1)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    memory = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 30
    _warm_up()
    try:
        applied = lock_down(memory)
    except (OSError, ImportError, RuntimeError) as exc:   # RuntimeError: pyseccomp without libseccomp
        _ipc.write_frame(out_fd, {"ok": False, "error": f"the sandbox could not be set up: {exc}"})
        return
    _ipc.write_frame(out_fd, {"ok": True, "network_namespace": netns, "torch_loaded": "torch" in sys.modules,
                              **applied})
    try:
        header, arrays = _ipc.read_frame(in_fd)
    except _ipc.ChannelClosed:
        return
    operators = header.get("operators")
    if header.get("op") != "check" or not isinstance(operators, list) or len(arrays) != 1:
        _ipc.write_frame(out_fd, {"ok": False, "error": "the check process expects one check request"})
        return
    data = arrays[0].tobytes()                # bytes for zipfile; the array goes, so the archive is held once
    del arrays
    _ipc.write_frame(out_fd, worker_checks.check_upload(data, frozenset(map(str, operators))))


if __name__ == "__main__":
    main()
