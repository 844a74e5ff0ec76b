"""Two sessions of the real app (AppTest, each in its own thread) asking for the same anytime run at once: it is
sampled once, both get the certificate, and when the computing session is interrupted the other takes over from
its last frame (issue #27, item 7)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import streamlit as st
from streamlit import config
from streamlit.runtime import Runtime
from streamlit.testing.v1 import AppTest, app_test

from certlib.pixel import progressive
from certlib.smoothing import sampling
from tests_paths import APP
from ui import cache, progressive_runs


class _KeepRuntime(type(Runtime)):
    """AppTest installs a mock Runtime for each run and sets it back to None at the run's end, which would pull it
    from under the other session's run: keep the last one installed until the test ends."""

    def __setattr__(cls, name, value):
        if not (name == "_instance" and value is None):
            setattr(Runtime, name, value)


class _SharedRuntime(Runtime, metaclass=_KeepRuntime):
    pass


def _until(condition, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def _someone_waits() -> bool:
    return any(f.queue for f in list(cache.FLIGHTS._flights.values()))


@pytest.fixture
def two_sessions(monkeypatch):
    """(open_both, calls): open_both() opens the Certified pixels page (anytime test, budget 128) in two sessions
    and returns them; `calls` records every selection stage (sample_topk_counts), which holds until the other
    session waits for the run, so the two requests surely overlap."""
    monkeypatch.setattr(app_test, "Runtime", _SharedRuntime)
    monkeypatch.setattr(config, "get_option", config.get_option)     # each run patches it; two at once would leak
    cache.sampling_results().clear()
    calls, real = [], sampling.sample_topk_counts

    def counting(*args, **kwargs):
        calls.append(threading.get_ident())
        _until(_someone_waits)
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_topk_counts", counting)

    def open_both() -> list[AppTest]:
        sessions = []
        for _ in range(2):
            at = AppTest.from_file(APP, default_timeout=300)
            at.session_state["cp_nmax"] = 128
            at.run()
            sessions.append(at)
        threads = [threading.Thread(target=lambda at=at: at.switch_page("pages/certified_pixels.py").run())
                   for at in sessions]
        # the second session starts once the first computes: Python 3.11's ast.parse is not safe in two threads
        # at once ("AST constructor recursion depth mismatch"), and each AppTest run compiles the page afresh
        threads[0].start()
        _until(lambda: calls)
        threads[1].start()
        for thread in threads:
            thread.join(300)
        return sessions

    yield open_both, calls
    Runtime._instance = None


def _state() -> progressive_runs.Progress:
    (state,) = [v for k, v in cache.sampling_results()._items.items() if k[0] == progressive_runs.KIND]
    return state


def test_two_sessions_asking_for_the_same_run_at_once_sample_it_once(two_sessions):
    open_both, calls = two_sessions
    first, second = open_both()
    assert not first.exception and not second.exception, (first.exception, second.exception)
    assert len(calls) == 1                                    # one selection stage: one run for both sessions
    state = _state()
    assert state.counts.n == 128 and state.stop == "budget"
    (cert_a, _), (cert_b, _) = first.session_state["cp_last_certificate"], second.session_state["cp_last_certificate"]
    assert np.array_equal(cert_a.classes, cert_b.classes) and (cert_a.classes != -1).any()
    assert cache.FLIGHTS.running() == 0


def test_when_the_computing_session_is_interrupted_the_waiting_one_takes_over_from_its_last_frame(two_sessions,
                                                                                                 monkeypatch):
    open_both, calls = two_sessions
    real, leaders = progressive.certify_progressively, []

    def interrupted_after_three(*args, **kwargs):        # what a Stop click does to the computing session
        leaders.append(threading.get_ident())
        for i, frame in enumerate(real(*args, **kwargs)):
            yield frame
            if i == 2 and len(leaders) == 1:
                st.stop()

    monkeypatch.setattr(progressive, "certify_progressively", interrupted_after_three)
    open_both()
    assert len(calls) == 1 and len(leaders) == 2 and leaders[0] != leaders[1]
    state = _state()
    assert state.counts.n == 128 and state.stop == "budget"
    assert state.trajectory.n == (32, 64, 96, 128)           # continued from the interrupted leader's frame at 96
