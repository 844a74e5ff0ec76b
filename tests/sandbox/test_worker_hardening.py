"""The sandbox worker's seccomp filter, and what the app says when a worker dies.

TorchScript cannot call socket() or execve() itself, so the filter is tested where it is applied: a child process runs
the worker's own `lock_down` (the function main() calls before it reads the model) and then tries, from Python and
raw system calls, what a model that corrupted native memory could try. A control before lock_down shows each attempt
would otherwise get through (or fail differently), so the test could fail."""
import io
import os
import platform
import signal
import subprocess
import sys

import pytest
import torch

from certlib.sandbox import landlock, worker_diagnostics
from certlib.sandbox._worker import _short
from certlib.sandbox.runner import SandboxError, SandboxWorker
from tests_paths import ROOT

needs_landlock = pytest.mark.skipif(landlock.abi_version() < 1, reason="the worker needs Landlock")
# raw numbers of calls Python has no wrapper for, per architecture (asm/unistd.h)
SYSCALLS = {"x86_64": {"connect": 42, "bind": 49, "ptrace": 101, "process_vm_readv": 310},
            "aarch64": {"connect": 203, "bind": 200, "ptrace": 117, "process_vm_readv": 270}}

PROBE = """
import ctypes, os, socket, sys, threading
sys.path.insert(0, ROOT)
from certlib.sandbox import _worker as _sandbox_worker

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def raw(name, *args):
    if libc.syscall(ctypes.c_long(NUMBERS[name]), *(ctypes.c_long(a) for a in args)) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))

def attempt(name, f):
    try:
        f()
        print(name, "ALLOWED")
    except OSError as e:
        print(name, "errno", e.errno)
    sys.stdout.flush()

def fork():
    if os.fork() == 0:
        os._exit(0)

attempt("control-socket", lambda: socket.socket().close())
attempt("control-connect", lambda: raw("connect", 0, 0, 0))
go, seen = threading.Event(), []

def early():          # a thread started before the filter: it must be covered too (TSYNC)
    go.wait()
    attempt("early-thread-udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))

t = threading.Thread(target=early)
t.start()
_sandbox_worker.lock_down(1 << 30)
go.set()
t.join()
attempt("inet", lambda: socket.socket())
attempt("unix", lambda: socket.socket(socket.AF_UNIX))
attempt("udp6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))
attempt("socketpair", socket.socketpair)
attempt("connect", lambda: raw("connect", 0, 0, 0))
attempt("bind", lambda: raw("bind", 0, 0, 0))
attempt("ptrace", lambda: raw("ptrace", 0, 0, 0, 0))
attempt("process_vm_readv", lambda: raw("process_vm_readv", os.getppid(), 0, 0, 0, 0, 0))
attempt("execve", lambda: os.execv(sys.executable, [sys.executable, "-c", "print('EXECUTED')"]))
attempt("fork", fork)
attempt("subprocess", lambda: __import__("subprocess").run(["true"]))
late = threading.Thread(target=lambda: print("new thread runs", flush=True))   # clone3 -> ENOSYS -> clone
late.start()
late.join()
r, w = os.pipe()
os.write(w, b"x")
print("pipe", os.read(r, 1).decode())
"""


@needs_landlock
@pytest.mark.skipif(platform.machine() not in SYSCALLS, reason="system call numbers known for x86_64/aarch64")
def test_the_worker_lock_down_refuses_sockets_exec_processes_and_ptrace():
    code = f"ROOT = {str(ROOT)!r}\nNUMBERS = {SYSCALLS[platform.machine()]!r}\n" + PROBE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = dict(line.partition(" ")[::2] for line in out.stdout.splitlines())
    assert lines.get("control-socket") == "ALLOWED" and lines.get("control-connect") == "errno 88", out  # ENOTSOCK
    refused = ("early-thread-udp", "inet", "unix", "udp6", "netlink", "socketpair", "connect", "bind", "ptrace",
               "process_vm_readv", "execve", "fork", "subprocess")
    assert {name: lines.get(name) for name in refused} == {name: "errno 1" for name in refused}, out  # EPERM
    assert lines.get("new") == "thread runs" and lines.get("pipe") == "x", out      # threads and pipes still work
    assert "EXECUTED" not in out.stdout and out.returncode == 0, out


class SegfaultsOnProbe(torch.nn.Module):
    """Densifies a sparse tensor built without index checks: a write 8 GB past its storage (SIGSEGV)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = torch.full([2, 1], 1_000_000_000, dtype=torch.long)
        s = torch.ops.aten._sparse_coo_tensor_unsafe(i, torch.ones(1), [2, 2])
        return x.flatten(1)[:, :2] + s.to_dense()


@needs_landlock
def test_a_worker_crash_is_named_by_its_signal_with_its_last_output():
    with pytest.raises(SandboxError) as info:       # a real crash while probing; the static check would refuse it
        SandboxWorker(_archive(SegfaultsOnProbe()), 1, 8, 8, static_check=False)
    message = str(info.value)
    assert "crashed (SIGSEGV)" in message or "crashed (SIGBUS)" in message, message
    assert "Fatal Python error" in message and "malformed" not in message, message


def test_exit_statuses_in_words():
    d = worker_diagnostics.describe_exit
    assert d(-signal.SIGSEGV, 4096) == "crashed (SIGSEGV)" and d(-signal.SIGABRT, 1) == "crashed (SIGABRT)"
    assert d(-signal.SIGKILL, 4096).startswith("was killed (SIGKILL") and "4096 MiB" in d(-9, 4096)
    assert "system-call filter (SIGSYS)" in d(-signal.SIGSYS, 1) and d(3, 1) == "exited with status 3"


def test_stderr_is_kept_bounded_and_its_end_shown():
    r, w = os.pipe()
    tail = worker_diagnostics.StderrTail(os.fdopen(r, "rb", buffering=0), limit=1000)
    with os.fdopen(w, "wb") as f:
        f.write(b"".join(b"line %d\n" % i for i in range(5000)))
    text = tail.text(wait_s=5.0)
    assert text.splitlines()[-1] == "line 4999" and len(text.splitlines()) == worker_diagnostics.SHOWN_LINES
    assert len(tail._buf) <= 1000


def test_short_keeps_where_a_model_failed_not_only_the_last_line():
    exc = RuntimeError("The following operation failed in the TorchScript interpreter.\n"
                       "Traceback of TorchScript (most recent call last):\n"
                       '  File "code/__torch__/m.py", line 9, in forward\n'
                       "    return torch.mm(x, w)\n"
                       "RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x64 and 32x3)\n")
    text = _short(exc)
    assert "line 9, in forward" in text and text.endswith("(2x64 and 32x3)")
    assert len(_short(RuntimeError("x\n" * 10_000))) <= 1200 and _short(RuntimeError("")) == "RuntimeError"


def _archive(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()
