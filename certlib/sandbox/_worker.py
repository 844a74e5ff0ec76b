"""The sandbox worker: runs one uploaded TorchScript model for the app, with no file system, no network, a memory
limit and (from the parent) a wall-clock limit per call. Started by certlib.sandbox.runner; never imported by the app.

Order matters: enter a fresh network namespace while still single-threaded, import and warm up torch (so nothing
needs a file later), then `lock_down`: cap memory and file writes, restrict the process with Landlock and a seccomp
filter (certlib.sandbox.seccomp: no sockets, exec, new processes or ptrace), and only then read the model's bytes from
the pipe. Requests and replies are certlib.sandbox._ipc frames on stdin / stdout; stderr is read by the app (its last 64 KiB
are shown when the worker dies), so Python's fault handler writes there and warnings are silenced.
"""
from __future__ import annotations

import ctypes
import faulthandler
import io
import os
import resource
import sys
import warnings

_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000


def _leave_the_network() -> bool:
    """A new, empty network namespace (no interfaces but a down loopback); False where user namespaces are off."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0


def _warm_up(torch) -> None:
    # Script, save, load and run a tiny model once, so that every lazily imported module and file that these paths
    # touch is loaded before the file system goes away.
    class Tiny(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.linear(x.flatten(1), torch.ones(2, x.flatten(1).shape[1]))

    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(Tiny(), torch.rand(1, 1, 2, 2)), buf)
    module = torch.jit.load(io.BytesIO(buf.getvalue()), map_location="cpu")
    x = torch.rand(2, 1, 2, 2, requires_grad=True)
    torch.autograd.grad(module(x).sum(), x)
    with torch.inference_mode():
        module(x.detach())


def _limit_memory(extra_bytes: int) -> None:
    with open("/proc/self/statm") as f:
        virtual = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (virtual + extra_bytes, virtual + extra_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))     # no file may grow, should one ever be opened
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def lock_down(memory: int) -> dict:
    """Everything the worker gives up before it sees the model: memory beyond `memory` bytes above what it holds,
    file writes, every file (Landlock), sockets, exec and other processes (seccomp). Irrevocable; raises OSError
    (or ImportError) when a part cannot be applied. Returns what was applied, for the hello frame."""
    from certlib.sandbox import landlock, seccomp as seccomp_filter

    seccomp_filter.preload()                 # it looks for libseccomp on disk: before Landlock
    _limit_memory(memory)
    # Landlock restricts the calling thread and the threads it starts later, not those already running: main()
    # keeps the process single-threaded until here, and the hello frame says how many threads there were.
    threads = len(os.listdir("/proc/self/task"))
    abi = landlock.restrict_self()
    denied = seccomp_filter.install()        # seccomp, by contrast, covers every thread (TSYNC)
    return {"landlock_abi": abi, "seccomp": len(denied), "threads_at_lock_down": threads}


def _short(exc: BaseException, max_lines: int = 8, max_chars: int = 1200) -> str:
    """The end of an error, bounded. TorchScript ends with the message after the model's own code line and a
    traceback of its source: the last lines keep both, where the last line alone lost where it failed."""
    lines = [line.rstrip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return "\n".join(lines[-max_lines:])[-max_chars:]


class Server:
    def __init__(self, torch, np) -> None:
        self.torch, self.np, self.module = torch, np, None
        self.load_notes: list[str] = []

    def load(self, header: dict, arrays: list) -> tuple[dict, list]:
        torch = self.torch
        if header.get("format") == "pt2":       # a torch.export program: checked, then loaded, in _export_worker
            from certlib.sandbox import _export_worker

            self.module, header, self.load_notes = _export_worker.load(torch, arrays[0].tobytes(), header)
        else:
            try:
                self.module = torch.jit.load(io.BytesIO(arrays[0].tobytes()), map_location="cpu")
            except (NotImplementedError, RecursionError) as exc:     # bare errors of torch's reader, in words
                from certlib.sandbox import worker_checks

                raise ValueError(worker_checks.load_failure(exc)) from None
            self.module.eval()
        c, h, w = int(header["in_channels"]), int(header["height"]), int(header["width"])
        classes = None
        for batch in (1, 2, 3):
            x = torch.rand(batch, c, h, w, generator=torch.Generator().manual_seed(0))
            try:
                with torch.no_grad():
                    out = self.module(x)
            except Exception as exc:
                return {"ok": False, "error": f"the model raised on an input of shape {list(x.shape)} in [0,1]: "
                                              f"{_short(exc)}"}, []
            if not isinstance(out, torch.Tensor):
                return {"ok": False, "error": "the model must return one tensor of logits, it returned "
                                              f"{type(out).__name__}"}, []
            if out.dim() != 2 or out.shape[0] != batch or out.shape[1] < 2:
                return {"ok": False, "error": f"on input {list(x.shape)} the model returned shape "
                                              f"{list(out.shape)}; expected [{batch}, num_classes] with "
                                              "num_classes >= 2"}, []
            if classes is not None and out.shape[1] != classes:
                return {"ok": False, "error": f"the model returned {out.shape[1]} scores for a batch of {batch} "
                                              f"but {classes} for a batch of 1"}, []
            if not bool(torch.isfinite(out).all()):
                return {"ok": False, "error": "the model returned non-finite scores on an input of shape "
                                              f"{list(x.shape)}"}, []
            classes = int(out.shape[1])
        return {"ok": True, "num_classes": classes, "notes": self.load_notes + self._gradient_note(c, h, w),
                "input_shape": [c, h, w]}, []

    def _gradient_note(self, c: int, h: int, w: int) -> list[str]:
        torch = self.torch
        x = torch.rand(1, c, h, w, requires_grad=True)
        try:
            grad, = torch.autograd.grad(self.module(x).sum(), x, allow_unused=True)
            ok = grad is not None and bool(torch.isfinite(grad).all())
        except Exception:
            ok = False
        return [] if ok else ["the model gives no finite input gradient: gradient-based methods will fail"]

    def forward(self, header: dict, arrays: list) -> tuple[dict, list]:
        torch = self.torch
        with torch.no_grad():
            out = self.module(torch.from_numpy(arrays[0]))
        return {"ok": True}, [self._checked(out, arrays[0].shape[0])]

    def vjp(self, header: dict, arrays: list) -> tuple[dict, list]:
        """∂⟨logits(x), g⟩/∂x for x = arrays[0], g = arrays[1]: what autograd needs of the model's backward."""
        torch = self.torch
        x = torch.from_numpy(arrays[0]).requires_grad_(True)
        out = self.module(x)
        self._checked(out, x.shape[0])
        grad, = torch.autograd.grad(out, x, torch.from_numpy(arrays[1]).to(out.dtype), allow_unused=True)
        if grad is None:
            return {"ok": False, "error": "the model's output does not depend on its input through autograd "
                                          "(no input gradient)"}, []
        return {"ok": True}, [grad.detach().float().contiguous().numpy()]

    def _checked(self, out, batch: int):
        if not isinstance(out, self.torch.Tensor) or out.dim() != 2 or out.shape[0] != batch:
            shape = list(out.shape) if isinstance(out, self.torch.Tensor) else type(out).__name__
            raise ValueError(f"the model returned {shape} for a batch of {batch}; expected [batch, num_classes]")
        scores = out.detach().float().contiguous().numpy()
        from certlib.sandbox import worker_checks

        bad = worker_checks.nonfinite_message(scores)
        if bad is not None:
            raise ValueError(bad)
        return scores


# Uploaded models yield the cores to the app's own work (its sampling, the pages, other sessions' decisions): on 2
# cores four uploads being checked at once slowed a crowd's certificate 3.6× in bench/load.py.
WORKER_NICENESS = 10


def _yield_the_cores() -> None:
    """nice WORKER_NICENESS for this process and for its session's autogroup. The worker runs in a session of its own
    (start_new_session), and with the kernel's autogroups on (sched(7), the default on desktop and many server
    kernels) the cores are shared between sessions by their groups' nice, not by the processes': os.nice alone left
    the worker an equal share with the whole app server (measured in bench/load.py)."""
    os.nice(WORKER_NICENESS)
    try:
        with open("/proc/self/autogroup", "w") as group:
            group.write(str(WORKER_NICENESS))
    except OSError:
        pass                                  # no autogroups here: os.nice is the whole story


def main() -> None:
    _yield_the_cores()
    netns = _leave_the_network()
    faulthandler.enable()                    # a crash's Python stack goes to stderr, which the app shows
    warnings.filterwarnings("ignore")        # torch's deprecation warnings would bury what matters in stderr
    import numpy as np
    import torch

    from certlib.sandbox import _ipc, worker_checks  # noqa: F401 — loaded while files can be read (Landlock)

    # Frames travel on private copies of the pipes; fds 0 and 1 point at /dev/null, so whatever the model prints
    # (prim::Print) can never be mistaken for a reply.
    in_fd, out_fd = os.dup(0), os.dup(1)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    memory = int(sys.argv[1]) if len(sys.argv) > 1 else 4 << 30
    torch.set_num_threads(1)                 # no compute thread before lock_down (see there); more after it
    _warm_up(torch)
    if len(sys.argv) > 2 and sys.argv[2] == "pt2":
        from certlib.sandbox import _export_worker     # imported and exercised while files can still be read

        _export_worker.warm_up(torch)
    try:
        applied = lock_down(memory)
    except (OSError, ImportError, RuntimeError) as exc:   # RuntimeError: pyseccomp without libseccomp
        _ipc.write_frame(out_fd, {"ok": False, "error": f"the sandbox could not be set up: {exc}"})
        return
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))    # its threads start now, under Landlock
    server = Server(torch, np)
    _ipc.write_frame(out_fd, {"ok": True, "network_namespace": netns, **applied})
    while True:
        try:
            header, arrays = _ipc.read_frame(in_fd)
        except _ipc.ChannelClosed:
            return
        op = getattr(server, str(header.get("op")), None) \
            if header.get("op") in ("load", "forward", "vjp") else None
        try:
            if op is None:
                raise ValueError(f"unknown request {header.get('op')!r}")
            if header.get("op") != "load" and server.module is None:
                raise ValueError("no model loaded")
            reply, out = op(header, arrays)
        except MemoryError:
            reply, out = {"ok": False, "error": "the model ran out of its memory limit"}, []
        except Exception as exc:  # the model's own failure: reported, the worker stays up
            text = _short(exc)
            if "can't allocate memory" in text or "not enough memory" in text.lower():
                text = f"the model ran out of its memory limit ({text})"
            reply, out = {"ok": False, "error": text}, []
        _ipc.write_frame(out_fd, reply, out)


if __name__ == "__main__":
    main()
