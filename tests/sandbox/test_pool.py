"""The process-wide budget of sandbox workers (certlib.sandbox.pool): a bounded number live, least-recently-used idle
ones stopped and reloaded on demand, "server busy" instead of one process too many.

The bookkeeping is tested on stand-in workers (no process: instant, and every interleaving of threads is cheap);
the issue's check ("8 uploads leave ≤ 4 live workers and the first still answers") runs through the page on real
workers, scaled to a budget of 2 and 3 uploads because a worker takes seconds to start on a loaded 2-core machine."""
import gc
import io
import os
import random
import signal
import threading

import pytest
import torch

import hostile_models as H
from certlib.sandbox import landlock, pool as sandbox_pool
from certlib.errors import ModelError
from certlib.sandbox.runner import SandboxedModule, SandboxError, SandboxWorker
from certlib.sandbox.pool import BUDGET_ENV, WORKERS_ENV, ServerBusy, WorkerPool
from tests_paths import APP


class Fake:
    """What the pool sees of a worker: its memory cap, its lock (held while it computes), and _evict."""

    def __init__(self, memory_mb: float = 100) -> None:
        self.memory_mb = memory_mb
        self._lock = threading.Lock()
        self.live = False

    def _evict(self) -> None:
        self.live = False


def _admit(pool: WorkerPool, w: Fake, wait_s: float = 0.0) -> Fake:
    with w._lock:
        pool.admit(w, wait_s)
        w.live = True
    pool.used(w)
    return w


@pytest.fixture
def budget(monkeypatch):
    def set_budget(workers=None, memory_mb=None):
        for name, value in ((WORKERS_ENV, workers), (BUDGET_ENV, memory_mb)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, str(value))
    return set_budget


def test_the_least_recently_used_idle_worker_makes_room(budget):
    budget(workers=2, memory_mb=10**6)
    pool = WorkerPool()
    a, b = _admit(pool, Fake()), _admit(pool, Fake())
    pool.used(a)                                   # a was used after b: b is the one to go
    c = _admit(pool, Fake())
    assert (a.live, b.live, c.live) == (True, False, True) and pool.live_count() == 2 and pool.evictions == 1


def test_a_busy_worker_is_never_stopped_and_a_full_server_says_busy(budget):
    budget(workers=2, memory_mb=10**6)
    pool = WorkerPool()
    a, b = _admit(pool, Fake()), _admit(pool, Fake())
    with a._lock, b._lock:                         # both inside a call
        with pytest.raises(ServerBusy, match="server is busy.*try again in a minute"):
            _admit(pool, Fake(), wait_s=0.2)
    assert a.live and b.live and pool.live_count() == 2


def test_an_upload_waits_for_a_worker_to_finish_its_call(budget):
    budget(workers=1, memory_mb=10**6)
    pool = WorkerPool()
    a = _admit(pool, Fake())
    a._lock.acquire()                              # computing ...
    timer = threading.Timer(0.3, lambda: (a._lock.release(), pool.used(a)))   # ... done in 0.3 s
    timer.start()
    b = _admit(pool, Fake(), wait_s=5.0)
    timer.join()
    assert b.live and not a.live


def test_the_memory_budget_counts_each_workers_worst_case(budget):
    charge = sandbox_pool.worker_charge_mb(1000)
    budget(workers=4, memory_mb=charge * 1.5)      # room for one such worker, not two
    pool = WorkerPool()
    a = _admit(pool, Fake(1000))
    b = _admit(pool, Fake(1000))
    assert not a.live and b.live and pool.live_charge_mb() == charge
    small = _admit(pool, Fake(charge * 0.4 - sandbox_pool.WORKER_BASE_MB))  # a smaller cap fits beside it
    assert b.live and small.live
    budget(workers=4, memory_mb=charge / 2)
    with pytest.raises(ModelError, match="budget for them is .*MiB; raise"):
        _admit(pool, Fake(1000))


def test_a_forgotten_worker_gives_its_place_back(budget):
    budget(workers=1, memory_mb=10**6)
    pool = WorkerPool()
    _admit(pool, Fake())                           # no reference kept: collected
    gc.collect()
    assert pool.live_count() == 0


def test_the_default_budget_is_sized_to_the_machine(budget, monkeypatch):
    budget()
    charge = sandbox_pool.worker_charge_mb(4096)
    for machine_gib, workers in ((4, 1), (24, 2), (64, 4), (512, 4)):
        monkeypatch.setattr(sandbox_pool, "machine_memory_mb", lambda g=machine_gib: g * 1024.0)
        count, memory = sandbox_pool.limits(4096)
        assert count == workers and memory >= charge, (machine_gib, count, memory)


def test_sessions_admitting_at_once_never_exceed_the_budget(budget):
    """Streamlit sessions are threads: 8 of them call their models 40 times each, 3 places."""
    budget(workers=3, memory_mb=10**6)
    pool, fakes, over, errors = WorkerPool(), [Fake() for _ in range(8)], [], []

    def session(w: Fake, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(40):
                with w._lock:
                    if not w.live:
                        pool.admit(w, wait_s=10.0)
                        w.live = True
                    if sum(f.live for f in fakes) > 3:
                        over.append(sum(f.live for f in fakes))
                    threading.Event().wait(rng.random() / 2000)
                pool.used(w)
        except Exception as exc:                   # a deadlock or a busy error would show here
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(w, i)) for i, w in enumerate(fakes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and not errors and not over, (errors, over)
    assert pool.live_count() <= 3


# ------------------------------------------------------------------------------------------------ real workers

needs_landlock = pytest.mark.skipif(landlock.abi_version() < 1, reason="uploaded models need Landlock")


def _archive(module: torch.nn.Module, tag: str = "") -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf, _extra_files={"tag": tag})   # a tag: another upload, same model
    return buf.getvalue()


def _upload(at, data: bytes, name: str) -> str:
    at.file_uploader(key="model_upload").set_value((name, data, "application/octet-stream"))
    for key, value in (("model_upload_c", 1), ("model_upload_h", 32), ("model_upload_w", 32)):
        at.number_input(key=key).set_value(value)
    at.button(key="model_upload_go").click().run()
    assert not at.exception and not at.session_state["model_upload_error"], at.session_state["model_upload_error"]
    return at.session_state["model_key"]


@needs_landlock
def test_uploads_beyond_the_budget_leave_it_full_and_the_first_reloads_visibly_and_answers(budget):
    """The issue's "8 uploads leave <= 4 live workers and the first still answers", through the page, at 2 and 3."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    budget(workers=2)
    gc.collect()
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    keys = [_upload(at, _archive(H.Honest(), str(i)), f"honest{i}.pt") for i in range(3)]
    workers = [at.session_state["user_models"][k].module.worker for k in keys]
    assert sandbox_pool.POOL.live_count() <= 2
    assert [w.live for w in workers] == [False, True, True] and workers[0].evicted
    assert workers[0].seccomp_rules >= 20
    assert workers[0].threads_at_lock_down == 1    # Landlock covers only threads started after it: all of them

    at.selectbox(key="model_key").set_value(keys[0]).run()      # back to the first model: reloaded, visibly
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert "Reloaded the uploaded model" in [s.label for s in at.status]
    assert workers[0].live and workers[0].restarts == 1 and not workers[1].live    # the idle one used longest ago
    assert sandbox_pool.POOL.live_count() <= 2
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = torch.jit.load(io.BytesIO(_archive(H.Honest())))(x)
    assert torch.allclose(SandboxedModule(workers[0])(x), expected)

    os.kill(workers[2]._proc.pid, signal.SIGKILL)  # as the kernel's OOM killer would: named, not "malformed reply"
    with pytest.raises(SandboxError, match=r"was killed \(SIGKILL.*a fresh one starts with the next call"):
        workers[2].call("forward", [x.numpy()])
    assert sandbox_pool.POOL.live_count() == 1     # its place is free again
    for w in workers:
        w.close()


def test_an_upload_to_a_full_busy_server_is_refused_without_starting_a_worker(budget, monkeypatch):
    budget(workers=1)
    monkeypatch.setattr(sandbox_pool, "UPLOAD_WAIT_S", 0.2)
    gc.collect()
    busy = Fake(1)
    busy._lock.acquire()                           # another session's worker, inside a long call
    sandbox_pool.POOL.admit(busy, 0)               # (stops any idle worker an earlier test left)
    try:
        with pytest.raises(ServerBusy, match="try again in a minute"):
            SandboxWorker(_archive(H.Honest()), 1, 8, 8, static_check=False)
        assert sandbox_pool.POOL.live_count() == 1
    finally:
        sandbox_pool.POOL.release(busy)
        busy._lock.release()
