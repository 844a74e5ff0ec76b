"""One process-wide budget for sandbox workers: how many may live at once and how much memory they may hold together.

Every SandboxWorker (certlib.sandbox.runner) asks `POOL.admit` for a place before it starts a process and gives it back when
the process ends. When the budget is full, the least-recently-used *idle* worker is stopped to make room (its model
stays in the app as bytes; the next call restarts it, slower: `SandboxWorker.live` tells the UI to show that it is
reloading). A worker inside a call is never stopped. When every place is held by a busy worker, a new upload waits a
few seconds and then gets `ServerBusy` ("try again in a minute") instead of a process the machine cannot hold.

Limits, read at each admission (so a deployment or a test can change them without a restart):
- CERTEXPLORER_SANDBOX_WORKERS: live workers at most. Default: min(4, what the memory budget holds), at least 1.
- CERTEXPLORER_SANDBOX_MEMORY_BUDGET_MB: the sum of every live worker's worst case. Default: half of the machine's
  memory (or of the cgroup's limit, when lower), and at least one worker; the other half is the app's (torch, the
  registry's models, caches, several sessions) and the system's. On a 24 GiB machine with the default 4 GiB cap per
  worker that is 2 live workers; on 64 GiB, 4.
A worker's worst case is its address-space cap above torch (CERTEXPLORER_SANDBOX_MEMORY_MB) plus torch's own
resident memory after the warm-up (WORKER_BASE_MB, measured): the budget holds even if every worker fills its cap,
which is how a handful of uploads used to exhaust a 24 GiB server.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from collections import OrderedDict
from typing import Protocol

from certlib.errors import ModelError

WORKERS_ENV, BUDGET_ENV = "CERTEXPLORER_SANDBOX_WORKERS", "CERTEXPLORER_SANDBOX_MEMORY_BUDGET_MB"
MAX_DEFAULT_WORKERS = 4       # past 4, restarting an evicted model is rarer than the memory held idle is worth
WORKER_BASE_MB = 700          # measured: a warmed-up worker holds 590-620 MiB resident before any model (torch 2.14)
UPLOAD_WAIT_S = 5.0           # a new upload waits this long for a busy worker to finish before "server busy"
RELOAD_WAIT_S = 60.0          # an evicted model's next call waits longer: its session is already on the page


class ServerBusy(ModelError):
    """Every sandbox worker the server may run is busy; the upload was not started."""


class PooledWorker(Protocol):
    """What the pool needs of a worker (certlib.sandbox.runner.SandboxWorker)."""

    memory_mb: float
    _lock: threading.Lock

    def _evict(self) -> None: ...


def _positive_env(name: str) -> float | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ModelError(f"${name} must be a number, got {text!r}") from None
    if not value > 0:
        raise ModelError(f"${name} must be positive, got {text}")
    return value


def machine_memory_mb() -> float:
    """Physical memory, or the cgroup's limit when that is lower (a container's share of a larger host)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            text = f.read().strip()
        if text.isdigit():
            total = min(total, int(text) / 2**20)
    except OSError:
        pass
    return total


def worker_charge_mb(memory_mb: float) -> float:
    """A worker's worst-case resident memory: torch itself plus its cap for the model."""
    return float(memory_mb) + WORKER_BASE_MB


def limits(memory_mb: float) -> tuple[int, float]:
    """(most live workers, memory budget in MiB), from the environment or sized to this machine."""
    # by default never less than one worker's worst case: a small machine keeps its single worker of before
    budget = _positive_env(BUDGET_ENV) or max(machine_memory_mb() / 2, worker_charge_mb(memory_mb))
    workers = _positive_env(WORKERS_ENV)
    if workers is None:
        workers = min(MAX_DEFAULT_WORKERS, max(1, int(budget // worker_charge_mb(memory_mb))))
    return max(1, int(workers)), budget


class WorkerPool:
    """The live workers in least-recently-used order, with their charges. Thread-safe: Streamlit sessions are
    threads. Holds workers weakly: a model that no session keeps any more does not hold a place."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._live: OrderedDict[int, tuple[weakref.ref, float]] = OrderedDict()
        self._ids = itertools.count()
        self.evictions = 0

    # ------------------------------------------------------------------------------------------ public

    def admit(self, worker: PooledWorker, wait_s: float) -> None:
        """Make room for `worker` (whose lock the caller holds) and count it live; raises ServerBusy after
        `wait_s` seconds without room, ModelError when the budget cannot hold even one such worker."""
        charge = worker_charge_mb(worker.memory_mb)
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                count, budget = limits(worker.memory_mb)
                if charge > budget:
                    raise ModelError(_too_small(charge, budget))
                self._forget_dead()
                if self._make_room(count, budget, charge):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerBusy(_busy_message(count, budget))
                self._cond.wait(min(left, 1.0))
            key = next(self._ids)
            worker._pool_key = key
            self._live[key] = (weakref.ref(worker), charge)

    def release(self, worker: PooledWorker) -> None:
        """The worker's process has ended: its place is free."""
        with self._cond:
            if self._live.pop(getattr(worker, "_pool_key", None), None) is not None:
                self._cond.notify_all()

    def used(self, worker: PooledWorker) -> None:
        """The worker finished a call: it is now the most recently used, and idle (a waiting upload may evict it)."""
        with self._cond:
            key = getattr(worker, "_pool_key", None)
            if key in self._live:
                self._live.move_to_end(key)
            self._cond.notify_all()

    def live_count(self) -> int:
        with self._cond:
            self._forget_dead()
            return len(self._live)

    def live_charge_mb(self) -> float:
        with self._cond:
            self._forget_dead()
            return sum(charge for _, charge in self._live.values())

    # ------------------------------------------------------------------------------------------ inside

    def _forget_dead(self) -> None:
        # a collected worker's process was killed by its finalizer (certlib.sandbox.runner): drop its place
        for key in [k for k, (ref, _) in self._live.items() if ref() is None]:
            del self._live[key]

    def _make_room(self, count: int, budget: float, charge: float) -> bool:
        """Evict idle workers, oldest use first, until one more of `charge` fits; False when only busy ones are
        left. A worker is idle when its lock is free: taking it without waiting keeps the pool from deadlocking
        with a worker that is asking for room itself."""
        for key in list(self._live):
            if self._fits(count, budget, charge):
                return True
            worker = self._live[key][0]()
            if worker is None or not worker._lock.acquire(blocking=False):
                continue
            try:
                del self._live[key]
                worker._evict()
                self.evictions += 1
            finally:
                worker._lock.release()
        return self._fits(count, budget, charge)

    def _fits(self, count: int, budget: float, charge: float) -> bool:
        used = sum(c for _, c in self._live.values())
        return len(self._live) < count and used + charge <= budget + 1e-6


def _busy_message(count: int, budget: float) -> str:
    return (f"the server is busy: all {count} model workers it may run (memory budget {budget:.0f} MiB) are "
            "computing for other sessions; try again in a minute")


def _too_small(charge: float, budget: float) -> str:
    return (f"one sandbox worker needs up to {charge:.0f} MiB but the server's budget for them is {budget:.0f} MiB; "
            f"raise ${BUDGET_ENV} or lower CERTEXPLORER_SANDBOX_MEMORY_MB")


POOL = WorkerPool()
