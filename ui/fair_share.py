"""Fair sharing of the cores between different runs: one batch of model passes at a time, in order of arrival.

Every sampling run of the app calls its attribution (and logit) function once per batch, and torch spreads each
call over all the cores. Two runs of two sessions calling at once would run twice as many compute threads as there
are cores; a plain lock would let the run that just finished a batch take the next one before the other woke up.
The gate hands the cores over in arrival order instead: with k runs active each gets every k-th batch, so no session
starves and none is slowed by oversubscribed threads (measured in bench/load.py, docs/performance.md §(k)).
A thread that already holds the gate passes through (a logit call inside an attribution call cannot deadlock).
"""
from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable)


class TurnGate:
    """A first-come, first-served lock, re-entrant per thread; the release hands it straight to the next in line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._line: deque[threading.Event] = deque()
        self._holder: int | None = None
        self._depth = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._lock:
            if self._holder == me:
                self._depth += 1
                mine = None
            elif self._holder is None and not self._line:
                self._holder, self._depth, mine = me, 1, None
            else:
                mine = threading.Event()
                self._line.append(mine)
        if mine is not None:
            mine.wait()                      # set by the releasing thread, which made this thread the holder
            with self._lock:
                self._holder, self._depth = me, 1
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth:
                return
            if self._line:
                self._holder = -1            # held for the next in line until it wakes: nobody may jump ahead
                self._line.popleft().set()
            else:
                self._holder = None

    def waiting(self) -> int:
        """Threads in line for the cores now (not counting the holder)."""
        with self._lock:
            return len(self._line)

    def gated(self, fn: F) -> F:
        """`fn`, taking a turn for each call, after any decision a user is waiting for (FOREGROUND)."""
        def in_turn(*args, **kwargs):
            FOREGROUND.wait_until_clear()
            with self.turn():
                return fn(*args, **kwargs)
        return in_turn  # type: ignore[return-value]


class Foreground:
    """Work a user is watching for right now — a slider that re-decides from cached counts — goes before the next
    batch of any sampling run: samplers wait at their batch boundary while it runs. On 2 cores a re-decision that
    competes with torch's sampling threads took 7–20 s in the load test (bench/load.py); a batch is 0.1–0.4 s, so
    the decision waits at most that long. The wait is bounded (`limit_s`), so a stuck decision cannot stop sampling."""

    def __init__(self, limit_s: float = 2.0) -> None:
        self._active = 0
        self._changed = threading.Condition()
        self.limit_s = limit_s

    @contextmanager
    def work(self) -> Iterator[None]:
        with self._changed:
            self._active += 1
        try:
            yield
        finally:
            with self._changed:
                self._active -= 1
                self._changed.notify_all()

    def wait_until_clear(self) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._active == 0, timeout=self.limit_s)


FOREGROUND = Foreground()   # decisions of every session in this process
CORES = TurnGate()          # one per app process: all sessions' sampling runs share it
