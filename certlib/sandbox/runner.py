"""Uploaded TorchScript models run in a sandboxed worker process, never in the app's own process.

    worker = SandboxWorker(archive_bytes, in_channels, height, width)   # checks, starts, loads, probes
    module = SandboxedModule(worker)                                    # an nn.Module: forward and input gradients

Before any worker starts, the archive's code is parsed and checked against the operator allow-list in a check
process of its own (certlib.sandbox._check_worker, `check_in_sandbox`): confined like a worker, with no torch, a
cap of 512 MiB plus twice the archive, and CHECK_TIMEOUT_S; a refusal costs ~0.15 s of one core and no place in the
worker budget.

What the worker (certlib.sandbox._worker) may do: compute. It gets the model's bytes through a pipe after it has
restricted itself with Landlock (no file may be opened, read, written or executed; no TCP bind or connect; with
Landlock ABI ≥ 6 no signal or abstract socket outside itself), a seccomp filter refuses sockets of every family,
exec, new processes and ptrace (certlib.sandbox.seccomp), it lives in an empty network namespace where user
namespaces are allowed, its address space is capped (CERTEXPLORER_SANDBOX_MEMORY_MB, default 4096 MiB on top of
torch itself) and no file may grow (RLIMIT_FSIZE = 0). Each call has a wall-clock limit (CERTEXPLORER_SANDBOX_TIMEOUT_S,
default 120 s): past it the worker's process group is killed, the call raises ModelTimeout, and the next call starts a
fresh worker. Nothing the worker sends is unpickled (certlib.sandbox._ipc), and every reply's shape is checked. A worker that
dies is named by its signal ("crashed (SIGSEGV)") with the end of its stderr (certlib.sandbox.worker_diagnostics).

All workers share one process-wide budget (certlib.sandbox.pool: CERTEXPLORER_SANDBOX_WORKERS live workers and
CERTEXPLORER_SANDBOX_MEMORY_BUDGET_MB between them): the least-recently-used idle worker is stopped to make room and
restarted from the model's bytes on its next call (`live` is False meanwhile), and an upload that finds every
worker busy gets ServerBusy.

What it does not protect: the model may use all CPU cores until its time limit, and it can read the inputs it is
given (the images the user explains with it). Where the kernel has no Landlock, uploaded models are refused unless
CERTEXPLORER_ALLOW_UNSANDBOXED=1 (then they still run in a separate, time- and memory-limited process).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import numpy as np
import torch
from torch import nn

from certlib import resources
from certlib.sandbox import _ipc, landlock, pool as sandbox_pool, worker_diagnostics
from certlib.errors import ModelError
from certlib.sandbox.pool import ServerBusy  # noqa: F401  (raised here, re-exported for callers)
from certlib.sandbox.torchscript_check import CHECK_TIMEOUT_S, precheck, torch_operator_names
from certlib.sandbox.worker_checks import check_finite, reply_array_bytes

TIMEOUT_ENV, MEMORY_ENV, UNSANDBOXED_ENV = ("CERTEXPLORER_SANDBOX_TIMEOUT_S", "CERTEXPLORER_SANDBOX_MEMORY_MB",
                                            "CERTEXPLORER_ALLOW_UNSANDBOXED")
DEFAULT_TIMEOUT_S, DEFAULT_MEMORY_MB = 120.0, 4096
START_TIMEOUT_S = 120.0          # importing torch in a fresh process on a busy 2-core machine
# The check process's address space above its own (~40 MiB resident) and twice the archive (it holds the whole
# upload, weights included: ViT-B/16's is 330 MiB): the largest code the size limits admit (1 MiB, checked in
# ~1.8 s) passes with 128 MiB, so 512 leaves 4x room. Checks at once: each is one core for at
# most CHECK_TIMEOUT_S (at nice 10), and ~0.15 s for a classifier's code. An upload waits
# for a place as long as one check may take (an honest upload behind hostile ones is delayed, not refused).
CHECK_MEMORY_MB = 512
CHECKS_AT_ONCE = 4
CHECK_WAIT_S = CHECK_TIMEOUT_S
_CHECKS = threading.BoundedSemaphore(CHECKS_AT_ONCE)


class ModelTimeout(ModelError):
    """The uploaded model did not answer within its time limit; its worker was stopped."""


class SandboxError(ModelError):
    """The sandbox could not be set up, or the worker died or sent something malformed."""


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        raise ModelError(f"${name} must be a number, got {os.environ[name]!r}") from None
    if not value > 0:
        raise ModelError(f"${name} must be positive, got {value}")
    return value


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
    proc.wait()


# The programs the sandbox's processes run (`python -I -c`; argv: the folder holding certlib/, then their own). The
# worker's module is named literally: runs.store's code hash follows imports in source strings, and an uploaded
# model's numbers are computed in the worker. The check process computes none, so editing it keeps stored runs.
_WORKER_PROGRAM = ("import sys; sys.path.insert(0, sys.argv[1]); from certlib.sandbox._worker import main; "
                   "sys.argv = sys.argv[1:]; main()")
_CHECK_PROGRAM = ("import sys, importlib; sys.path.insert(0, sys.argv[1]); sys.argv = sys.argv[2:]; "
                  "importlib.import_module('certlib.sandbox.' + sys.argv[0]).main()")


def _spawn_sandboxed(program: str, *args: str) -> subprocess.Popen:
    """`python -I -c program` with `args`, in a session of its own, with a minimal environment, pipes on
    stdin/stdout/stderr; the program confines itself before it reads anything (Landlock, seccomp, limits)."""
    if landlock.abi_version() < 1 and os.environ.get(UNSANDBOXED_ENV) != "1":
        raise SandboxError("this kernel has no Landlock (Linux ≥ 5.13 with 'landlock' among its LSMs), so an "
                           "uploaded model cannot be isolated from the server's files and is refused; set "
                           f"{UNSANDBOXED_ENV}=1 to run it anyway (unsafe)")
    root = str(resources.PACKAGES_ROOT)           # the folder holding certlib/
    # OPENBLAS_NUM_THREADS=1: numpy's BLAS would otherwise start a thread at import, before Landlock, which
    # does not restrict threads that already run (the worker sets torch's own thread count after it)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": str(torch.get_num_threads()),
           "OPENBLAS_NUM_THREADS": "1", "LANG": "C.UTF-8"}
    cmd = [sys.executable, "-I", "-c", program, root, *args]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd="/", start_new_session=True, close_fds=True)


def check_in_sandbox(archive: bytes) -> dict:
    """The static check of a TorchScript upload's code (certlib.sandbox.torchscript_check) in a check process of
    its own (certlib.sandbox._check_worker: no torch, confined like a worker, CHECK_MEMORY_MB, CHECK_TIMEOUT_S).
    Returns the process's hello (what confines it); raises ModelError naming what is refused, ModelTimeout,
    SandboxError when the process dies, ServerBusy when CHECKS_AT_ONCE checks already run for CHECK_WAIT_S."""
    if not _CHECKS.acquire(timeout=CHECK_WAIT_S):
        raise ServerBusy(f"the server is busy checking {CHECKS_AT_ONCE} other uploads; try again in a minute")
    proc = None
    try:
        # the archive arrives whole (weights too) and is held twice while it becomes bytes for zipfile
        memory_mb = CHECK_MEMORY_MB + 2 * (-(-len(archive) // 2**20))
        proc = _spawn_sandboxed(_CHECK_PROGRAM, "_check_worker", str(memory_mb << 20))
        stderr = worker_diagnostics.StderrTail(proc.stderr)
        try:
            hello, _ = _ipc.read_frame(proc.stdout.fileno(), START_TIMEOUT_S)
            if not hello.get("ok"):
                raise SandboxError(str(hello.get("error", "the check process did not start")))
            _ipc.write_frame(proc.stdin.fileno(), {"op": "check", "operators": sorted(torch_operator_names())},
                             [np.frombuffer(archive, dtype=np.uint8)])
            reply, _ = _ipc.read_frame(proc.stdout.fileno(), CHECK_TIMEOUT_S)
        except _ipc.ChannelTimeout:
            raise ModelTimeout(f"checking the uploaded TorchScript code took longer than {CHECK_TIMEOUT_S:g} s (the "
                               "code is far larger or more complex than a classifier's); it was stopped") from None
        except (_ipc.ChannelClosed, BrokenPipeError, OSError, ValueError) as exc:
            code = _exit_status(proc, wait=isinstance(exc, (_ipc.ChannelClosed, BrokenPipeError)))
            how = (worker_diagnostics.describe_exit(code, memory_mb) if code is not None
                   else f"sent a malformed reply ({exc})")
            last = stderr.text(wait_s=1.0)
            raise SandboxError(f"the process checking the uploaded TorchScript code {how}"
                               + (f". Its last output:\n{last}" if last else "")) from None
        if not reply.get("ok"):
            raise ModelError(str(reply.get("error", "")) or "the TorchScript code did not pass the check")
        return hello
    finally:
        if proc is not None:
            _kill(proc)
            for f in (proc.stdin, proc.stdout):
                f.close()
        _CHECKS.release()


class SandboxWorker:
    """One uploaded model in its own sandboxed process; restarted on demand after a timeout or a crash."""

    def __init__(self, archive: bytes, in_channels: int, height: int, width: int, *, timeout: float | None = None,
                 memory_mb: float | None = None, static_check: bool = True, fmt: str = "torchscript",
                 load_options: dict | None = None) -> None:
        self.fmt = fmt                   # "torchscript", or "pt2": a torch.export program (certlib.sandbox._export_worker)
        self.load_options = dict(load_options or {})     # JSON-able extras of the load request (certlib.models.export_load)
        self.static_check = static_check and fmt == "torchscript"
        if self.static_check:
            precheck(archive)            # O(size) only, in the app
            check_in_sandbox(archive)    # the code, in a check process: no worker starts for a refused upload
        self.archive = np.frombuffer(archive, dtype=np.uint8)
        self.shape = (int(in_channels), int(height), int(width))
        self.timeout = timeout if timeout is not None else _env_float(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
        self.memory_mb = memory_mb if memory_mb is not None else _env_float(MEMORY_ENV, DEFAULT_MEMORY_MB)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._stderr: worker_diagnostics.StderrTail | None = None
        self.restarts = -1
        self.evicted = False             # stopped by the pool to make room; the next call reloads it
        with self._lock:                 # a worker that is starting is busy: the pool never stops it
            self.num_classes, self.notes = self._start_pooled(sandbox_pool.UPLOAD_WAIT_S)

    # ------------------------------------------------------------------------------------------ process

    def _spawn(self) -> subprocess.Popen:
        return _spawn_sandboxed(_WORKER_PROGRAM, str(int(self.memory_mb * 2**20)), self.fmt)

    def _start_pooled(self, wait_s: float) -> tuple[int, tuple[str, ...]]:
        """Take a place in the process-wide budget (stopping an idle worker, or ServerBusy after `wait_s`), then
        start; the place is given back on any failure."""
        sandbox_pool.POOL.admit(self, wait_s)
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> tuple[int, tuple[str, ...]]:
        self._proc = self._spawn()
        self._stderr = worker_diagnostics.StderrTail(self._proc.stderr)    # bounded; shown when the worker dies
        self.evicted = False
        self.restarts += 1
        weakref.finalize(self, _kill, self._proc)
        hello = self._exchange({}, [], START_TIMEOUT_S, send=False)[0]
        if not hello.get("ok"):
            self.close()
            raise SandboxError(str(hello.get("error", "the sandbox worker did not start")))
        self.landlock_abi = int(hello.get("landlock_abi", 0))
        self.network_namespace = bool(hello.get("network_namespace"))
        self.seccomp_rules = int(hello.get("seccomp", 0))     # system calls its seccomp filter refuses
        self.threads_at_lock_down = int(hello.get("threads_at_lock_down", 0))   # 1: Landlock covers every thread
        c, h, w = self.shape
        reply, _ = self._exchange({"op": "load", "in_channels": c, "height": h, "width": w, "format": self.fmt,
                                   **self.load_options},
                                  [self.archive], self.timeout)
        if not reply.get("ok"):
            self.close()
            raise ModelError(str(reply.get("error", "the model could not be loaded")) or
                             "torch.jit.load failed without a reason")
        try:
            self.shape = _input_shape(reply.get("input_shape", self.shape))   # a .pt2 states its own
        except SandboxError:
            self.close()
            raise
        classes = reply.get("num_classes")
        if not isinstance(classes, int) or not 2 <= classes <= 100_000:
            self.close()
            raise SandboxError(f"the worker reported {classes!r} classes")
        notes = tuple(str(n)[:300] for n in reply.get("notes", []) if isinstance(n, str))[:4]
        return classes, notes

    def close(self) -> None:
        if self._proc is not None:
            _kill(self._proc)
            for f in (self._proc.stdin, self._proc.stdout):     # stderr: closed by its reader at end of file
                if f is not None:
                    f.close()
            self._proc = None
        sandbox_pool.POOL.release(self)

    def _evict(self) -> None:
        """Stopped by the pool to make room for another model (the pool holds our lock): only the process goes; the
        model's bytes stay, and the next call starts it again."""
        self.close()
        self.evicted = True

    @property
    def live(self) -> bool:
        """Whether the model's process is running; False once the pool stopped it (the next call reloads it)."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    def ensure_live(self) -> bool:
        """Start the worker again if it was stopped; True when it had to (a page shows that as reloading)."""
        with self._lock:
            if self.live:
                return False
            self.close()
            self._start_pooled(sandbox_pool.RELOAD_WAIT_S)
        sandbox_pool.POOL.used(self)
        return True

    def _exchange(self, header: dict, arrays: list, timeout: float, send: bool = True,
                  reply_bytes: int = 0) -> tuple[dict, list]:
        proc = self._proc
        try:
            if send:
                _ipc.write_frame(proc.stdin.fileno(), header, arrays)
            # a reply's arrays are bounded by what a correct one holds, refused from their length prefix unread
            reply, out = _ipc.read_frame(proc.stdout.fileno(), timeout, max_array_bytes=reply_bytes)
        except _ipc.ChannelTimeout:
            self.close()
            doing = {"load": "loading and probing it", "forward": "a forward pass",
                     "vjp": "an input gradient"}.get(header.get("op"), "starting its worker")
            rows = f" of {len(arrays[0])} inputs" if header.get("op") in ("forward", "vjp") else ""
            raise ModelTimeout(f"the uploaded model did not answer within {timeout:g} s ({doing}{rows}); its "
                               "worker was stopped and a fresh one starts with the next call") from None
        except (_ipc.ChannelClosed, BrokenPipeError, OSError, ValueError) as exc:
            code = _exit_status(proc, wait=isinstance(exc, (_ipc.ChannelClosed, BrokenPipeError)))
            self.close()
            how = (worker_diagnostics.describe_exit(code, self.memory_mb) if code is not None
                   else f"sent a malformed reply ({exc})")
            stderr = self._stderr.text(wait_s=1.0) if self._stderr is not None else ""
            loading = header.get("op") in (None, "load")          # None: the hello of a new worker
            raise SandboxError(worker_diagnostics.failure_message(how, stderr, loading)) from None
        return reply, out

    def call(self, op: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run `op` ("forward" or "vjp") in the worker, starting a fresh one if the last was stopped."""
        try:
            with self._lock:
                if self._proc is None or self._proc.poll() is not None:
                    self.close()
                    self._start_pooled(sandbox_pool.RELOAD_WAIT_S)    # evicted or crashed: reload from the bytes
                reply, out = self._exchange({"op": op}, arrays, self.timeout,
                                            reply_bytes=reply_array_bytes(op, arrays, self.num_classes))
        finally:
            sandbox_pool.POOL.used(self)          # idle again (after our lock is free): a waiting upload may evict it
        if not reply.get("ok"):
            raise ModelError(f"the uploaded model failed: {str(reply.get('error', 'no reason given'))[:1500]}")
        return out


def _exit_status(proc: subprocess.Popen, wait: bool) -> int | None:
    """The worker's exit status; after end of file it may still be exiting, so wait for it briefly."""
    if wait:
        try:
            return proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return None
    return proc.poll()


def _input_shape(shape) -> tuple[int, int, int]:
    """The worker's (untrusted) account of the input shape it probed, checked."""
    ok = isinstance(shape, (list, tuple)) and len(shape) == 3 and all(type(v) is int for v in shape)
    if not ok or shape[0] not in (1, 3) or not all(8 <= v <= 1024 for v in shape[1:]):
        raise SandboxError(f"the model's input must be 1 or 3 channels of 8 to 1024 pixels a side, got {shape!r}")
    return tuple(shape)


# ---------------------------------------------------------------------------------------------- autograd

class _RemoteLogits(torch.autograd.Function):
    """logits = worker.forward(x); backward asks the worker for ∂⟨logits, g⟩/∂x (first order only)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, worker: SandboxWorker) -> torch.Tensor:
        x_np = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out, = worker.call("forward", [x_np])
        _expect(out, (x.shape[0], worker.num_classes), "logits")
        check_finite(out, "logits")           # the worker checks too; its word is not trusted
        ctx.worker = worker
        ctx.save_for_backward(x)
        return torch.from_numpy(out).to(x.device)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, = ctx.saved_tensors
        x_np = x.detach().to("cpu", torch.float32).contiguous().numpy()
        g_np = grad_out.detach().to("cpu", torch.float32).contiguous().numpy()
        grad, = ctx.worker.call("vjp", [x_np, g_np])
        _expect(grad, tuple(x.shape), "input gradient")
        return torch.from_numpy(grad).to(x.device, x.dtype), None


def _expect(a: np.ndarray, shape: tuple, what: str) -> None:
    if a.dtype != np.float32 or tuple(a.shape) != tuple(shape):
        raise SandboxError(f"the worker sent {what} of shape {a.shape} ({a.dtype}), expected {shape} (float32)")


class SandboxedModule(nn.Module):
    """An nn.Module whose forward pass (and input gradient) runs in a SandboxWorker. No parameters, no hooks: the
    methods that need the model's layers (LRP, the CAM family, Guided Backprop) are unavailable for uploads anyway."""

    def __init__(self, worker: SandboxWorker) -> None:
        super().__init__()
        self.worker = worker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RemoteLogits.apply(x, self.worker)
