"""ui.single_flight and ui.fair_share with real threads: identical runs are computed once, an interrupted leader is
replaced by a waiter, a leaving waiter disturbs nobody, errors reach every waiter, different runs take turns."""
from __future__ import annotations

import itertools
import threading
import time

import pytest

from ui.fair_share import TurnGate
from ui.single_flight import DONE, SingleFlight


class Interrupted(BaseException):
    """What Streamlit raises in a script thread to end its run (StopException, RerunException): not an Exception."""


def _start(fn, *args) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def body():
        try:
            out["value"] = fn(*args)
        except BaseException as exc:            # noqa: BLE001 - the test inspects what each thread ended with
            out["error"] = exc
    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


def _until(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def _waiting(flights: SingleFlight, key) -> int:
    view = flights.view(key)
    return 0 if view is None else view.waiting


def test_identical_runs_asked_at_once_are_computed_once_and_waiters_see_progress_and_places():
    flights, calls, release = SingleFlight(), [], threading.Event()
    views: dict[int, list] = {i: [] for i in range(6)}

    def compute(flight):
        calls.append(threading.get_ident())
        flight.publish(("frame", 1))
        release.wait(10)
        return "counts"

    leader, out0 = _start(flights.run, "k", compute, views[0].append, 0.01)
    _until(lambda: calls)
    others = [_start(flights.run, "k", compute, views[i].append, 0.01) for i in range(1, 6)]
    _until(lambda: _waiting(flights, "k") == 5)
    release.set()
    for thread, _ in [(leader, out0)] + others:
        thread.join(10)
    assert len(calls) == 1
    assert [out["value"] for _, out in [(leader, out0)] + others] == ["counts"] * 6
    assert views[0] == []                                        # the leader never waited
    seen = [views[i][-1] for i in range(1, 6)]
    assert all(v.progress == ("frame", 1) and v.leaders == 1 for v in seen)
    assert sorted(v.arrived for v in seen) == [1, 2, 3, 4, 5]    # each waiter knows its place
    assert flights.running() == 0 and flights.view("k") is None


def test_an_interrupted_leader_is_replaced_by_one_waiter_which_continues_from_what_it_published():
    flights, calls = SingleFlight(), []
    go_on, interrupt = threading.Event(), threading.Event()

    def compute(flight):
        calls.append(flight.progress)               # the new leader sees what the old one published
        if len(calls) == 1:
            flight.publish(96)
            interrupt.wait(10)
            raise Interrupted()                     # a Stop click in the leader's session
        go_on.wait(10)
        return "finished from 96"

    leader, out0 = _start(flights.run, "k", compute, lambda v: None, 0.01)
    _until(lambda: calls)
    waiters = [_start(flights.run, "k", compute, lambda v: None, 0.01) for _ in range(3)]
    _until(lambda: _waiting(flights, "k") == 3)
    interrupt.set()
    _until(lambda: len(calls) == 2)
    view = flights.view("k")
    assert view.leaders == 2 and view.waiting == 2 and view.progress == 96
    go_on.set()
    for thread, _ in waiters + [(leader, out0)]:
        thread.join(10)
    assert isinstance(out0["error"], Interrupted)
    assert [out["value"] for _, out in waiters] == ["finished from 96"] * 3
    assert calls == [None, 96]


def test_a_waiter_that_stops_waiting_leaves_the_run_going_for_everyone_else():
    flights, release, calls = SingleFlight(), threading.Event(), []

    def compute(flight):
        calls.append(1)
        release.wait(10)
        return 7

    def leave_after_a_look(view):
        raise Interrupted()                         # the waiter's session navigates away

    leader, out0 = _start(flights.run, "k", compute, lambda v: None, 0.01)
    _until(lambda: calls)
    quitter, out1 = _start(flights.run, "k", compute, leave_after_a_look, 0.01)
    stayer, out2 = _start(flights.run, "k", compute, lambda v: None, 0.01)
    quitter.join(10)
    _until(lambda: _waiting(flights, "k") == 1)
    release.set()
    leader.join(10), stayer.join(10)
    assert isinstance(out1["error"], Interrupted) and out0["value"] == out2["value"] == 7 and len(calls) == 1


def test_a_leaders_error_reaches_every_waiter_without_recomputing():
    flights, release, calls = SingleFlight(), threading.Event(), []

    def compute(flight):
        calls.append(1)
        release.wait(10)
        raise MemoryError("out of memory at batch 64")

    leader, out0 = _start(flights.run, "k", compute, lambda v: None, 0.01)
    _until(lambda: calls)
    waiters = [_start(flights.run, "k", compute, lambda v: None, 0.01) for _ in range(2)]
    _until(lambda: _waiting(flights, "k") == 2)
    release.set()
    for thread, _ in waiters + [(leader, out0)]:
        thread.join(10)
    assert len(calls) == 1
    assert all(isinstance(out["error"], MemoryError) for _, out in waiters + [(leader, out0)])
    assert flights.running() == 0


def test_an_abandoned_run_nobody_waits_for_is_dropped_and_the_next_ask_computes_afresh():
    flights, calls = SingleFlight(), []

    def interrupted(flight):
        calls.append("first")
        raise Interrupted()

    with pytest.raises(Interrupted):
        flights.run("k", interrupted, lambda v: None)
    assert flights.running() == 0
    assert flights.run("k", lambda f: calls.append("again") or "ok", lambda v: None) == "ok"
    assert calls == ["first", "again"]


def test_when_the_last_waiter_of_a_leaderless_run_leaves_the_run_is_dropped():
    """A leader interrupted while its only waiter is itself being interrupted: nobody is left to take over, and
    nothing stays registered that a later session would wait on."""
    flights, calls, leader_may_go = SingleFlight(), [], threading.Event()
    in_wait = threading.Event()

    def compute(flight):
        calls.append(1)
        leader_may_go.wait(10)
        raise Interrupted()

    def slow_leave(view):
        if not in_wait.is_set():
            in_wait.set()
            leader_may_go.set()
            _until(lambda: flights.view("k") is not None and not flights._flights["k"].led)
            raise Interrupted()

    leader, out0 = _start(flights.run, "k", compute, lambda v: None, 0.01)
    _until(lambda: calls)
    waiter, out1 = _start(flights.run, "k", compute, slow_leave, 0.01)
    leader.join(10), waiter.join(10)
    assert isinstance(out0["error"], Interrupted) and isinstance(out1["error"], Interrupted)
    assert flights.running() == 0 and len(calls) == 1


def test_different_keys_do_not_wait_for_each_other():
    flights, both_in = SingleFlight(), threading.Barrier(2, timeout=10)

    def compute(flight):
        both_in.wait()                             # deadlocks (and times out) unless both compute at once
        return flight.key

    threads = [_start(flights.run, key, compute, lambda v: None) for key in ("a", "b")]
    for thread, _ in threads:
        thread.join(10)
    assert [out["value"] for _, out in threads] == ["a", "b"]


def test_a_waiter_arriving_as_the_run_ends_gets_its_result():
    flights = SingleFlight()
    for _ in range(50):                             # races between joining and ending: every ask gets the value
        threads = [_start(flights.run, "k", lambda f: (time.sleep(0.001), DONE)[1], lambda v: None, 0.001)
                   for _ in range(4)]
        for thread, _ in threads:
            thread.join(10)
        assert [out.get("value") for _, out in threads] == [DONE] * 4
    assert flights.running() == 0


def test_the_gate_hands_the_cores_over_in_arrival_order_and_is_reentrant():
    gate, order = TurnGate(), []
    with gate.turn():
        with gate.turn():                          # a logit call inside an attribution call
            pass
        threads = []
        for i in range(4):
            thread = threading.Thread(target=lambda i=i: gate.gated(order.append)(i))
            thread.start()
            _until(lambda: gate.waiting() == i + 1)  # the i-th thread is in line before the next starts
            threads.append(thread)
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 2, 3] and gate.waiting() == 0


def test_two_runs_through_the_gate_interleave_batch_by_batch():
    gate, log, start = TurnGate(), [], threading.Barrier(2, timeout=10)

    def run(name: str) -> None:
        start.wait()
        for _ in range(6):
            with gate.turn():
                log.append(name)
                time.sleep(0.01)                   # a batch of model passes

    threads = [threading.Thread(target=run, args=(n,)) for n in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    streak = max(len(list(run)) for _, run in itertools.groupby(log))
    assert sorted(log) == ["a"] * 6 + ["b"] * 6 and streak <= 2   # no run takes the cores twice while one waits


def test_waiters_of_one_flight_are_not_woken_by_the_others():
    """Every flight shares one condition: a waiter must sleep out its poll unless its own flight changed, or
    waiters whose drawing starts short flights of their own would wake each other without end."""
    flights, release, calls, polls = SingleFlight(), threading.Event(), [], []

    def busy_waiter(view):
        polls.append(1)
        flights.run(("cost", len(polls)), lambda f: 0.1, lambda v: None)   # a short flight: notifies everyone

    leader, out0 = _start(flights.run, "k", lambda f: (calls.append(1), release.wait(10), "v")[2], lambda v: None)
    _until(lambda: calls)
    waiters = [_start(flights.run, "k", lambda f: "again", busy_waiter, 0.2) for _ in range(4)]
    time.sleep(1.0)
    release.set()
    for thread, _ in waiters + [(leader, out0)]:
        thread.join(10)
    assert [out["value"] for _, out in waiters] == ["v"] * 4
    assert len(polls) <= 4 * (1.0 / 0.2 + 3)           # about one poll per 0.2 s each, not a storm


def test_a_decision_a_user_waits_for_goes_before_the_next_sampling_batch():
    """fair_share.FOREGROUND: while a slider's re-decision runs, samplers wait at their batch boundary; afterwards
    they go on; a decision that never ends holds them only for the bound."""
    from ui import fair_share

    gate, foreground = TurnGate(), fair_share.Foreground(limit_s=5.0)
    started: list[float] = []
    stop = threading.Event()

    def batch() -> None:
        started.append(time.monotonic())
        time.sleep(0.01)

    def sampler() -> None:
        while not stop.is_set():
            foreground.wait_until_clear()
            with gate.turn():
                batch()

    worker = threading.Thread(target=sampler)
    worker.start()
    time.sleep(0.1)
    with foreground.work():
        held = time.monotonic()
        time.sleep(0.3)                                        # the decision
        during = [t for t in started if t > held + 0.02]       # one batch may have been under way already
    after = time.monotonic()
    time.sleep(0.1)
    stop.set()
    worker.join()
    assert during == [] and any(t > after for t in started)
    stuck = fair_share.Foreground(limit_s=0.2)
    with stuck.work():
        t0 = time.monotonic()
        stuck.wait_until_clear()                               # bounded: sampling is never stopped for good
        assert 0.15 < time.monotonic() - t0 < 1.0
