"""What the app can say about a sandbox worker that failed: the end of its stderr, and how it ended.

The worker's stderr is a pipe read by a thread into a bounded buffer (the last 64 KiB): a model that prints without
end costs the app that much memory and no more, and a worker whose stderr nobody read would block once the pipe's
64 KiB filled. A worker ended by a signal is named by it ("crashed (SIGSEGV)"), not reported as a malformed reply.
"""
from __future__ import annotations

import os
import signal
import threading

TAIL_BYTES = 64 << 10
SHOWN_LINES, SHOWN_CHARS = 12, 1500      # of the tail, in an error message
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT, signal.SIGTRAP}


class StderrTail:
    """Reads a pipe to its end in a daemon thread, keeping the last `limit` bytes. The thread owns the pipe and
    closes it at end of file (after the worker's process group is killed), so no other thread closes an fd that a
    read may still be using."""

    def __init__(self, pipe, limit: int = TAIL_BYTES) -> None:
        self._buf = bytearray()
        self._limit = limit
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._drain, args=(pipe,), name="sandbox-stderr", daemon=True)
        self._thread.start()

    def _drain(self, pipe) -> None:
        try:
            fd = pipe.fileno()
            while chunk := os.read(fd, 1 << 16):
                with self._lock:
                    self._buf += chunk
                    del self._buf[:-self._limit]
        except (OSError, ValueError):
            pass
        finally:
            pipe.close()
            self._done.set()

    def text(self, wait_s: float = 0.0) -> str:
        """The last lines of what the worker wrote (at most SHOWN_LINES / SHOWN_CHARS); `wait_s` lets a dead worker's
        last words arrive first."""
        self._done.wait(wait_s)
        with self._lock:
            raw = bytes(self._buf)
        lines = [line.rstrip() for line in raw.decode("utf-8", "replace").splitlines()
                 if line.strip() and not line.startswith("Extension modules:")]    # faulthandler's long module list
        shown = "\n".join(lines[-SHOWN_LINES:])
        return shown[-SHOWN_CHARS:]


def describe_exit(code: int | None, memory_mb: float) -> str:
    """How a worker ended, from its exit status (negative: the signal that ended it), for "the model's worker …"."""
    if code is None:
        return "stopped answering"
    if code >= 0:
        return f"exited with status {code}"
    try:
        sig = signal.Signals(-code)
    except ValueError:
        return f"was killed by signal {-code}"
    if sig in _CRASH_SIGNALS:
        return f"crashed ({sig.name})"
    if sig == signal.SIGKILL:
        return (f"was killed ({sig.name}: e.g. the kernel's out-of-memory killer, or an operator; its own limit is "
                f"{memory_mb:g} MiB)")
    if sig == signal.SIGSYS:
        return f"was stopped by the sandbox's system-call filter ({sig.name})"
    return f"was killed ({sig.name})"


def failure_message(how: str, stderr: str, loading: bool = False) -> str:
    """The sentence for a dead worker, with its last output when it wrote any. While loading, the upload itself
    fails (no next call restarts it)."""
    then = " while loading and probing the model" if loading else "; a fresh one starts with the next call"
    text = f"the uploaded model's worker {how}{then}"
    return f"{text}. Its last output:\n{stderr}" if stderr else text
