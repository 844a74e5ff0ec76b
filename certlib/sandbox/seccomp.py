"""A seccomp filter for the sandbox worker: no sockets, no new programs or processes, no inspecting other processes.

Landlock (certlib.sandbox.landlock) already denies files, TCP, abstract UNIX sockets and signals, and the network namespace
leaves no interface; but a model that corrupts native memory could still create a pathname UNIX or UDP socket, and
without user namespaces nothing else stops UDP. seccomp closes those at the system-call level, for every address
family at once, whatever the model's code does.

Built with `pyseccomp` (a ctypes binding of libseccomp, which resolves syscall numbers per architecture and rejects
foreign-ABI calls: an x86_64 filter kills a 32-bit int 0x80 or x32 call instead of letting it slip past the
numbers). Denied calls fail with EPERM rather than killing the process, so a model that tries gets an ordinary
error that the worker reports, and the tests can see which rule fired.

What stays allowed, on purpose: read/write on the inherited pipes, mmap and friends (torch's allocator), futex and
clone *with CLONE_THREAD* (torch's and OpenMP's thread pools start lazily, after the filter). clone3 carries its
flags in memory a filter cannot read, so it answers ENOSYS and glibc falls back to clone, whose flags it can read.
"""
from __future__ import annotations

import errno

# Refused for every argument. socket/socketpair cover every family (AF_UNIX, AF_INET, AF_NETLINK, ...); the rest
# act on sockets that should not exist, or reach other processes, programs or kernel interfaces a model never needs.
DENIED = (
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "execve", "execveat", "fork", "vfork",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd", "kcmp",
    # io_uring can open sockets and connect without passing through the calls above
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "unshare", "setns", "mount", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
)
_CLONE_THREAD = 0x00010000


def install() -> tuple[str, ...]:
    """Load the filter into this process (and any thread it starts later). Irrevocable. Returns the names of the
    calls refused; raises OSError or ImportError when seccomp or libseccomp is unavailable."""
    import pyseccomp as sc      # imported by the caller before Landlock: it looks for libseccomp on disk

    f = sc.SyscallFilter(sc.ALLOW)          # also sets no_new_privs, which seccomp requires without privileges
    # torch has threads before the filter is loaded (import, warm-up): TSYNC puts every one of them under it, not
    # only the calling thread. A foreign-ABI call kills the whole process (the default kills only the thread,
    # leaving a zombie whose other threads wait for ever).
    f.set_attr(sc.Attr.CTL_TSYNC, 1)
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    denied = []
    for name in DENIED:
        try:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError):
            continue                        # a call this architecture does not have (e.g. fork on aarch64)
        denied.append(name)
    # clone without CLONE_THREAD makes a process (fork, posix_spawn); threads keep working
    f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    f.load()
    return tuple(denied) + ("clone (processes)",)


def preload() -> None:
    """Import pyseccomp while files can still be read (it searches for libseccomp with ldconfig)."""
    import pyseccomp  # noqa: F401
