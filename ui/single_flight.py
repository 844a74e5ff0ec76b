"""Single-flight: an expensive run that several sessions ask for at once is computed once; the others wait for it.

Streamlit runs every session's script in its own thread of one process. The first session to ask for a key leads
its flight and computes; a session asking for the same key meanwhile joins as a waiter: it sees what the leader
publishes (copies done, a live frame) and gets the leader's result when it lands.

Interruptions. Streamlit ends a script run (a Stop click, a rerun, navigation, a closed tab) by raising a
BaseException that is not an Exception (StopException, RerunException) at the script's next Streamlit call:
- a waiter so ended only leaves the flight; the leader and the other waiters go on;
- a leader so ended *abandons* the flight: the first waiter to notice takes the lead and calls its own compute
  (callers whose runs resume, like progressive sampling, continue from what the old leader cached). A flight
  abandoned with nobody waiting is dropped, so the next session to ask starts afresh: nothing deadlocks, nothing
  waits on a leader that is gone.
A leader's ordinary exception (out of memory, a model that fails) *fails* the flight: every waiter raises that same
error instead of repeating a run that cannot succeed.

One lock and one condition for all flights: a server has tens of sessions at most, and one lock keeps the rules
above easy to check (tests/test_single_flight.py exercises them with real threads).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, Hashable, TypeVar

T = TypeVar("T")

RUNNING, DONE, FAILED = "running", "done", "failed"


@dataclass(frozen=True)
class FlightView:
    """What a waiter sees of the flight it waits for."""

    key: Hashable
    version: int            # grows with every publish and hand-over: redraw only when it changed
    status: str             # RUNNING, DONE or FAILED
    progress: object        # the leader's last publish() (None before the first), kept across a hand-over
    waiting: int            # sessions waiting for this flight now, the one looking included
    arrived: int            # the looking session's place among them, by arrival (1 = waited longest)
    leader_since: float     # time.monotonic() when the current leader took the flight
    leaders: int            # 1 + the number of hand-overs so far


class Flight(Generic[T]):
    """One key being computed. Its leader calls publish(); everything else goes through SingleFlight."""

    def __init__(self, key: Hashable, cond: threading.Condition) -> None:
        self.key = key
        self._cond = cond
        self.version = 0
        self.status = RUNNING
        self.progress: object = None
        self.value: T | None = None
        self.error: BaseException | None = None
        self.led = True                     # a leader is computing now
        self.leaders = 1
        self.leader_since = time.monotonic()
        self.queue: list[int] = []           # the waiting sessions' tickets, in arrival order

    def publish(self, progress: object) -> None:
        """Leader: show `progress` to the waiters (the latest only; waiters may skip some)."""
        with self._cond:
            self.progress = progress
            self._changed()

    def _changed(self) -> None:
        self.version += 1
        self._cond.notify_all()

    def _view(self, ticket: int) -> FlightView:
        arrived = self.queue.index(ticket) + 1 if ticket in self.queue else 0
        return FlightView(self.key, self.version, self.status, self.progress, len(self.queue), arrived,
                          self.leader_since, self.leaders)


class SingleFlight:
    """The flights of one process, by key."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._flights: dict[Hashable, Flight] = {}
        self._tickets = 0

    def run(self, key: Hashable, compute: Callable[[Flight], T], on_wait: Callable[[FlightView], None],
            poll_s: float = 0.25) -> T:
        """compute(flight) once for `key` across every thread asking at the same time. A waiter calls
        on_wait(view) every `poll_s` seconds and on every change (a Streamlit page draws its waiting state there,
        and Streamlit may interrupt it there), then returns the leader's value or raises the leader's error;
        when the leader was interrupted it computes itself."""
        flight, ticket = self._join(key)
        if ticket is not None and not self._wait(flight, ticket, on_wait, poll_s):
            if flight.status == FAILED:
                raise flight.error
            return flight.value
        return self._lead(flight, compute)

    def view(self, key: Hashable) -> FlightView | None:
        """The flight of `key` if one is running (as a newcomer would see it), else None."""
        with self._cond:
            flight = self._flights.get(key)
            return None if flight is None else flight._view(-1)

    def running(self) -> int:
        """How many keys are being computed now."""
        with self._cond:
            return len(self._flights)

    def _join(self, key: Hashable) -> tuple[Flight, int | None]:
        """(the flight of `key`, this session's ticket as a waiter) — or no ticket: a new flight that it leads."""
        with self._cond:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = Flight(key, self._cond)
                return flight, None
            self._tickets += 1
            flight.queue.append(self._tickets)
            flight._changed()
            return flight, self._tickets

    def _wait(self, flight: Flight, ticket: int, on_wait: Callable[[FlightView], None], poll_s: float) -> bool:
        """Wait for the flight to end (False) or to lose its leader, then take the lead (True)."""
        seen, leads = -1, False
        try:
            while True:
                with self._cond:
                    # one condition serves every flight: sleep on until this flight changes or poll_s has passed
                    until = time.monotonic() + poll_s
                    while flight.status == RUNNING and flight.led and flight.version == seen:
                        left = until - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    if flight.status != RUNNING:
                        return False
                    if not flight.led:                  # the leader was interrupted: this session takes over
                        flight.led, leads = True, True
                        flight.leaders += 1
                        flight.leader_since = time.monotonic()
                        flight.queue.remove(ticket)
                        flight._changed()
                        return True
                    view = flight._view(ticket)
                seen = view.version
                on_wait(view)                           # outside the lock: it draws, and may be interrupted
        finally:
            if not leads:
                with self._cond:
                    if ticket in flight.queue:
                        flight.queue.remove(ticket)
                        flight._changed()
                    if flight.status == RUNNING and not flight.led and not flight.queue:
                        self._drop(flight)       # its leader left, and now its last waiter: nobody computes it

    def _lead(self, flight: Flight, compute: Callable[[Flight], T]) -> T:
        try:
            value = compute(flight)
        except Exception as exc:
            self._end(flight, FAILED, error=exc)
            raise
        except BaseException:
            self._abandon(flight)
            raise
        self._end(flight, DONE, value=value)
        return value

    def _end(self, flight: Flight, status: str, value=None, error: BaseException | None = None) -> None:
        with self._cond:
            flight.status, flight.value, flight.error, flight.led = status, value, error, False
            self._drop(flight)
            flight._changed()

    def _abandon(self, flight: Flight) -> None:
        with self._cond:
            flight.led = False
            if not flight.queue:
                self._drop(flight)          # nobody waits: the next session to ask starts afresh
            flight._changed()

    def _drop(self, flight: Flight) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
