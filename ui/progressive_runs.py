"""Progressive (anytime-valid) sampling for the Certified pixels page: a valid frame after every batch, stop and
continue, and exact resumption from the counts cached at the last frame (certlib.pixel.progressive)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import streamlit as st

from certlib.pixel import cert as pixel_cert, progressive
from certlib.smoothing import sampling
from certlib.pixel.progressive import StopRule
from certlib.smoothing.sampling import TopKCounts
from ui import cache, runs
from ui.single_flight import Flight, FlightView
from ui.workbench import Workbench

KIND = "anytime_counts"
FRAME_SECONDS = 0.25          # the live view redraws at most this often (every frame stays valid; drawing costs)
# a session waiting for another's run redraws its frames less often: 8 sessions drawing 4 overlays and plotly
# figures a second would take the cores the run itself needs
WAITER_FRAME_SECONDS = 2.5


@dataclass(frozen=True)
class AnytimeParams:
    """What the counts depend on. Not the budget nor the stop rule: counts continue exactly under any of them."""

    sigma: float
    n0: int
    seed: int
    k_percents: tuple[float, ...] = sampling.DEFAULT_K_PERCENTS
    normalisation: str = pixel_cert.DEFAULT_NORMALISATION


@dataclass(frozen=True)
class Progress:
    """The cached state of one configuration: the run's trajectory (its counts at every frame boundary, the budget
    planned at its start), why sampling ended (None: it was interrupted — a rerun, a closed tab — and continues on
    the next visit), and the certified shares of every frame (the growth plot)."""

    trajectory: progressive.Trajectory
    stop: str | None
    n_max: int
    rule: StopRule
    history: tuple[tuple[int, tuple[float, ...]], ...] = field(default=())   # (passes, certified shares)

    @property
    def counts(self) -> TopKCounts:
        return self.trajectory.counts


def _key(wb: Workbench, params: AnytimeParams) -> tuple:
    return runs.run_key(wb, KIND, params)


def stored(wb: Workbench, params: AnytimeParams) -> Progress | None:
    return cache.sampling_results().get(_key(wb, params))


def _flags(name: str) -> set:
    return st.session_state.setdefault(f"_cp_{name}", set())


def request_stop(wb: Workbench, params: AnytimeParams) -> None:
    """Stop button callback: runs before the rerun that the click starts, which interrupts the sampling run."""
    _flags("stopped").add(_key(wb, params))
    _flags("continue").discard(_key(wb, params))


def request_continue(wb: Workbench, params: AnytimeParams) -> None:
    _flags("stopped").discard(_key(wb, params))
    _flags("continue").add(_key(wb, params))


def stopped_by_user(wb: Workbench, params: AnytimeParams) -> bool:
    return _key(wb, params) in _flags("stopped")


def needs_sampling(wb: Workbench, params: AnytimeParams, n_max: int) -> bool:
    """Sample when nothing is cached, when an interrupted run can go on, when the budget was raised, or when the
    user asked to continue — never because a decision slider moved (that only re-decides)."""
    key = _key(wb, params)
    if key in _flags("continue"):
        return True
    if key in _flags("stopped"):
        return False
    return _more_needed(stored(wb, params), n_max)


def _more_needed(state: Progress | None, n_max: int) -> bool:
    if state is None or state.stop is None:
        return True
    # a raised budget resumes a run that reached its budget, and one that stopped "decided" within a smaller budget
    # (tests out of reach of the old budget may reach the new one; if none do, it yields one frame and stops)
    return (state.stop == "budget" and state.counts.n < n_max) or (state.stop == "decided" and n_max > state.n_max)


def first_reopening_budget(state: Progress, budgets) -> tuple[int, int] | None:
    """(the first of `budgets` at which some pixel tests of the run's stop rule would be undecided again — neither
    certified nor futile, and within reach — and how many); None when no budget re-opens any: more samples cannot
    change the certificate."""
    rule = state.rule
    cert = rule.certificate(state.trajectory)
    sub = state.counts.select_levels(sorted(rule.levels))
    for budget in budgets:
        reopened = int(rule.undecided(sub, cert, budget, state.trajectory).sum())
        if reopened:
            return budget, reopened
    return None


def sample(wb: Workbench, params: AnytimeParams, rule: StopRule, n_max: int, on_frame,
           on_wait: Callable[[str], None] | None = None) -> Progress:
    """Run (or continue) progressive sampling, caching the counts after every frame, and call on_frame(frame,
    state) at most every FRAME_SECONDS (and for the last frame). Errors end the page with their message.

    Sessions asking for the same counts at once share one run (ui.single_flight): the others draw its frames with
    on_frame (at most every WAITER_FRAME_SECONDS) and are told with on_wait(sentence) that they wait, with whom and
    for how long; a waiter takes the run over from its last frame if its leader is interrupted, and samples on by
    itself afterwards if its budget is larger."""
    key = _key(wb, params)
    _flags("continue").discard(key)
    while True:
        with runs.shown_in_page():
            state = runs.shared_run(key, lambda flight: _lead(wb, params, rule, n_max, on_frame, flight),
                                    _waiting(wb, params, n_max, on_frame, on_wait))
        if not _more_needed(state, n_max):
            return state


def _lead(wb: Workbench, params: AnytimeParams, rule: StopRule, n_max: int, on_frame, flight: Flight) -> Progress:
    """The sampling run itself, in the session that leads its flight: every frame is cached, published to the
    waiting sessions, and drawn here at most every FRAME_SECONDS."""
    results, key = cache.sampling_results(), _key(wb, params)
    state = results.get(key)
    if state is not None and not _more_needed(state, n_max):
        return state                 # another session's run reached this budget since this page looked
    attribute, logits = runs.shared_cores(wb, params.seed)
    same_levels = state is not None and tuple(sorted(state.rule.levels)) == tuple(sorted(rule.levels))
    history = list(state.history) if same_levels else []      # shares of other levels would not line up
    last_drawn = 0.0
    frames = progressive.certify_progressively(
        attribute, wb.x.to(wb.model.device), params.sigma, rule, n_max=n_max, n0=params.n0,
        k_percents=params.k_percents, seed=params.seed, start=state.trajectory if state is not None else None,
        logits=logits, normalisation=params.normalisation)
    for frame in frames:
        shares = tuple(float(1.0 - f) for f in frame.certificate.fractions["abstain"])
        if not history or history[-1][0] != frame.passes:
            history.append((frame.passes, shares))
        state = Progress(frame.trajectory, frame.stop, n_max, rule, tuple(history))
        results.put(key, state)          # a Stop click (or any rerun) keeps everything up to this frame
        flight.publish((frame, state))
        now = time.perf_counter()
        if frame.stop is not None or now - last_drawn >= FRAME_SECONDS:
            on_frame(frame, state)
            last_drawn = now
    return state


def _waiting(wb: Workbench, params: AnytimeParams, n_max: int, on_frame, on_wait):
    """on_wait for runs.shared_run: the leader's latest frame, and the sentence saying who waits for what."""
    drawn: list = [None, 0.0, ""]        # the frame drawn last, when, and the sentence said last

    def waiting(view: FlightView) -> None:
        published, now = view.progress, time.monotonic()
        fresh = published is not None and published is not drawn[0] and now - drawn[1] >= WAITER_FRAME_SECONDS
        if fresh:
            on_frame(*published)
            drawn[0], drawn[1] = published, now
        done = published[1].counts.n if published is not None else 0
        left = max(0, n_max - done) + (0 if published is not None else params.n0)
        said = runs.waiting_text(wb, view, left)
        if on_wait is not None and (fresh or said != drawn[2]):
            on_wait(said)
            drawn[2] = said
    return waiting


def describe(state: Progress, n_max: int, stopped: bool) -> str:
    """Which test produced the certificate on screen, at which n, and why sampling ended."""
    c = state.counts
    head = (f"**{progressive.TEST_LABELS['anytime']}** · n = {c.n:,} estimation copies of a budget of "
            f"{n_max:,} (+ {c.n0} selection) · {c.n0 + c.n:,} model passes")
    t = state.trajectory
    if t.looked:
        head += (f" · includes the exact fixed-n test at the budget n = {t.plan_n:,} planned before sampling "
                 f"({state.rule.plan_share:g} of α; the live frames use the rest)")
    if stopped:
        why = "stopped by you; every certified pixel holds at α"
    elif state.stop is None:
        why = "interrupted; it continues on the next run"
    else:
        why = "stopped: " + progressive.STOP_REASONS[state.stop]
    return f"{head} · {why}."


