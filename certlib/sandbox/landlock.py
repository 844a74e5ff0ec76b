"""Landlock (Linux ≥ 5.13), through its three system calls: a process restricts itself, irrevocably, from the file
system and (ABI ≥ 4) from TCP, and (ABI ≥ 6) from signalling or reaching abstract UNIX sockets outside itself.

Chosen for the sandbox of uploaded models because it is a mainline kernel LSM (enabled in Debian's kernels), needs
no privileges, no setuid helper and no package, and applies to one process after it has loaded what it needs: the
worker imports torch first, then drops every file right, then reads the untrusted model from a pipe. Already-open
file descriptors (the pipes) keep working. See the kernel's Documentation/userspace-api/landlock.rst.
"""
from __future__ import annotations

import ctypes
import os
import platform

# System call numbers: the same on x86_64 and aarch64 (added after the syscall tables were unified).
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_PR_SET_NO_NEW_PRIVS = 38

# Every file-system right of each ABI (bits of handled_access_fs): with no rule added, all of them are denied.
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1           # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6


_READ_FILE, _READ_DIR, _EXECUTE = 1 << 2, 1 << 3, 1 << 0
_RULE_PATH_BENEATH = 1


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is missing or disabled."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"):
        return 0
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), None, ctypes.c_size_t(0),
                           ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(0, int(version))


def restrict_self(readable: tuple[str, ...] = (), writable: tuple[str, ...] = ()) -> int:
    """Deny this process (and its future children) every file-system access except reading (and executing) beneath
    the directories `readable` and everything beneath `writable` (none by default), and TCP bind/connect (ABI ≥ 4)
    and signals / abstract UNIX sockets outside it (ABI ≥ 6). Returns the ABI applied; raises OSError on failure."""
    abi = abi_version()
    if abi < 1:
        raise OSError("Landlock is not available in this kernel")
    attr = _RulesetAttr(handled_access_fs=_FS_RIGHTS_BY_ABI[min(abi, 5)],
                        handled_access_net=(_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,
                        scoped=(_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24      # the struct as this ABI knows it
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    fd = libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size),
                      ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        every = _FS_RIGHTS_BY_ABI[min(abi, 5)]
        for path, rights in [(p, _READ_FILE | _READ_DIR | _EXECUTE) for p in readable] + [(p, every) for p in writable]:
            parent = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = _PathBeneathAttr(allowed_access=rights, parent_fd=parent)
                if libc.syscall(ctypes.c_long(_SYS_ADD_RULE), ctypes.c_int(fd), ctypes.c_int(_RULE_PATH_BENEATH),
                                ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
            finally:
                os.close(parent)
        if libc.syscall(ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(fd)
    return abi
