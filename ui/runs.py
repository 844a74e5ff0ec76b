"""Glue between the workbench and certlib's expensive stages: cache keys, progress bars, model locks."""
from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, TypeVar

import streamlit as st
import torch
from streamlit.logger import get_logger

from certlib.attributions import methods as attributions, cost
from certlib.data import images
from certlib.pixel import cert as pixel_cert
from certlib.smoothing import sampling
from certlib.errors import SHOWN_ERRORS, describe_error
from certlib.smoothing.sampling import TopKCounts
from ui import cache
from ui.fair_share import CORES
from ui.single_flight import Flight, FlightView
from ui.workbench import Workbench

T = TypeVar("T")
# "computing <kind> <key hash>" once per computation: bench/load.py counts these lines in the server's log
_LOG = get_logger("certexplorer.runs")


@dataclass(frozen=True)
class SamplingParams:
    sigma: float
    n0: int
    n: int
    seed: int
    k_percents: tuple[float, ...] = sampling.DEFAULT_K_PERCENTS
    normalisation: str = pixel_cert.DEFAULT_NORMALISATION


def attribution_fn(wb: Workbench, seed: int):
    """x [B,C,H,W] -> [B,H,W] for the workbench's model, method and target (the method holds the model lock)."""
    return shared_cores(wb, seed)[0]


def shared_cores(wb: Workbench, seed: int):
    """attributions.for_target for a sampling run, each call (one batch) taking its turn of the cores, so that
    the runs of different sessions interleave batch by batch (ui.fair_share)."""
    attribute, logits = attributions.for_target(wb.model, wb.method, wb.target, seed)
    return CORES.gated(attribute), CORES.gated(logits)


def logit_fn(wb: Workbench):
    def logit(xb: torch.Tensor) -> torch.Tensor:
        with wb.model.lock:
            return wb.model.module(xb)[:, wb.target]
    return logit


@contextmanager
def shown_in_page(bar=None):
    """Computation errors (out of memory, a method that cannot run on this input, a model that fails or times out)
    end the page with their message; the sidebar and every setting stay as they were."""
    try:
        yield
    except SHOWN_ERRORS as exc:
        st.error(describe_error(exc))
        st.stop()
    finally:
        if bar is not None:
            bar.empty()


def progress_bar(text: str):
    """(bar, progress(done, total)) for a certlib call; the caller empties the bar."""
    bar = st.progress(0.0, text=text)
    return bar, lambda done, total: bar.progress(min(1.0, done / total), text=f"{text} {done}/{total}")


def cached_run(wb: Workbench, kind: str, params, compute, text: str | None = None):
    """The get / compute / put of every expensive stage: the cached result of (workbench, kind, params), else
    compute(progress) under a progress bar (when `text` is given) with failures shown in the page, then stored.
    Computed once when several sessions ask at the same time: the others wait, with the leader's progress."""
    results = cache.sampling_results()
    key = run_key(wb, kind, params)
    hit = results.get(key)
    if hit is not None:
        return hit
    bar, progress = progress_bar(text) if text else (None, None)
    notice = st.empty()

    def lead(flight: Flight):
        again = results.get(key)
        if again is not None:            # finished by another session between the lookup above and this claim
            return again

        def report(done: int, total: int) -> None:
            flight.publish((done, total))
            if progress is not None:
                progress(done, total)
        value = compute(report)
        results.put(key, value)          # before the flight ends: a session arriving after it finds the result
        return value

    def show_waiting(view: FlightView) -> None:
        done, total = view.progress if view.progress is not None else (0, None)
        if bar is not None and total:
            bar.progress(min(1.0, done / total), text=f"{text} {done}/{total}")
        notice.info(waiting_text(wb, view, None if total is None else total - done), icon=":material/group:")

    with shown_in_page(bar):
        try:
            return shared_run(key, lead, show_waiting)
        finally:
            notice.empty()


def shared_run(key: tuple, compute: Callable[[Flight], T], on_wait: Callable[[FlightView], None]) -> T:
    """compute(flight) once across sessions (ui.single_flight): a session that asks for a key another session is
    computing waits for that run, drawing on_wait(view), and takes it over if its leader is interrupted."""
    label = f"{key[0]} {hashlib.sha256(repr(key).encode()).hexdigest()[:12]}"

    def logged(flight: Flight) -> T:
        _LOG.info("computing %s (leader %d of this flight, %d waiting)", label, flight.leaders, len(flight.queue))
        return compute(flight)

    def waiting(view: FlightView) -> None:
        _ = "_interrupt" in st.session_state      # a session-state read is where Streamlit interrupts a script
        on_wait(view)

    return cache.FLIGHTS.run(key, logged, waiting)


def waiting_text(wb: Workbench, view: FlightView, copies_left: int | None) -> str:
    """What a session waiting for another session's identical run is told: that it waits, with how many, its place,
    and the time left (the method's measured cost per copy, times the runs sharing the cores)."""
    since = time.monotonic() - view.leader_since
    said = (f"Another session is computing this exact run (for {since:.0f} s): it is computed once and shown to "
            f"every session that asks. {view.waiting} session{'s' if view.waiting > 1 else ''} waiting for it; you "
            f"joined {_ordinal(view.arrived)}.")
    left = seconds_left(wb, copies_left) if copies_left else None
    if left is not None:
        said += f" About {cost.describe_seconds(left)} left ({copies_left:,} noisy attributions"
        runs = cache.FLIGHTS.running()
        said += f", {runs} runs sharing the cores)." if runs > 1 else ")."
    return said


def _ordinal(i: int) -> str:
    return f"{i}{'th' if 10 <= i % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(i % 10, 'th')}"


def seconds_left(wb: Workbench, copies: int) -> float | None:
    """Seconds for `copies` more noisy attributions while the current runs share the cores batch by batch."""
    per_copy = seconds_per_copy(wb)
    return None if per_copy is None else per_copy * copies * max(1, cache.FLIGHTS.running())


def seconds_per_copy(wb: Workbench) -> float | None:
    """certlib.attributions.cost's timing of the workbench's method (None when even that fails: the sampling that follows shows
    the error); timed once when many sessions open the same page at once, like the runs themselves."""
    key = ("seconds_per_copy", wb.model.weights_sha256, wb.model.compute_key, wb.method, tuple(wb.x.shape),
           wb.target)
    if key not in _PER_COPY:          # read on every poll of a waiting session: ask the flights only once
        try:
            _PER_COPY[key] = shared_run(key, lambda flight: cost.seconds_per_copy(wb.model, wb.method, wb.x,
                                                                                  wb.target), lambda view: None)
        except SHOWN_ERRORS:
            return None
    return _PER_COPY[key]


_PER_COPY: dict[tuple, float] = {}


def is_cached(wb: Workbench, kind: str, params) -> bool:
    return cache.sampling_results().get(run_key(wb, kind, params)) is not None


def expected_time(wb: Workbench, copies: int, what: str = "noisy attributions") -> str | None:
    """'Expected time: about 25 s (288 noisy attributions × 85 ms, timed on this machine's CPU)', from a timing
    of the workbench's method on a few copies (certlib.attributions.cost; once per model, method and input size); None when
    even that timing fails (the sampling that follows shows the error)."""
    per_copy = seconds_per_copy(wb)
    if per_copy is None:
        return None
    where = "GPU" if wb.model.device == "cuda" else "CPU"
    busy = cache.FLIGHTS.running()
    shared = (f" {busy} other run{'s are' if busy > 1 else ' is'} being computed for other sessions: the cores are "
              f"shared batch by batch, so it may take up to {busy + 1}× as long." if busy else "")
    return (f"Expected time: about {cost.describe_seconds(per_copy * copies)} ({copies:,} {what} × "
            f"{per_copy * 1000:,.0f} ms, {attributions.METHODS[wb.method].label} on {wb.model.spec.key} timed on "
            f"this machine's {where}).{shared} Results are cached: moving a decision slider never resamples.")


def announce_cost(wb: Workbench, kind: str, params, copies: int):
    """Before an uncached sampling stage: state its expected time in the page. Returns the notice's placeholder;
    the page empties it once the stage is done."""
    notice = st.empty()
    if not is_cached(wb, kind, params):
        said = expected_time(wb, copies)
        if said:
            notice.info(said, icon=":material/schedule:")
    return notice


def view_token(wb: Workbench) -> tuple:
    """What a page's last results belong to besides its sampling parameters: model, image, target, method."""
    return (wb.model.spec.key, wb.model.compute_key, wb.image.sha256, wb.target, wb.method)


def keep_view(page: str, wb: Workbench, params, parts: list[tuple]) -> None:
    """Remember what the page last showed, as static parts: ("text", str), ("image", array, caption) or
    ("figure", plotly figure). Shown dimmed by `stale_view` while the next results are sampled."""
    st.session_state[f"_view_{page}"] = {"token": view_token(wb), "params": params, "parts": parts}


def stale_view(page: str, wb: Workbench, params, kind: str):
    """While sampling for `params` (not cached yet): the page's previous results, dimmed and labelled with what
    changed, so the page never goes blank or jumps. Returns a placeholder to empty when the new results arrive."""
    slot = st.empty()
    last = st.session_state.get(f"_view_{page}")
    if last is None or is_cached(wb, kind, params):
        return slot
    changed = _what_changed(last, wb, params)
    with slot.container(key=f"stale_{page}"):
        st.caption(f"Stale: {changed}; resampling … these are the previous results.")
        cols = st.columns(max(1, sum(1 for p in last["parts"] if p[0] != "text")))
        i = 0
        for part in last["parts"]:
            if part[0] == "text":
                st.markdown(part[1])
                continue
            with cols[i]:
                if part[0] == "image":
                    st.image(part[1], caption=part[2], width="stretch")
                else:
                    st.plotly_chart(part[1], key=f"stale_{page}_{i}")
            i += 1
    return slot


def _what_changed(last: dict, wb: Workbench, params) -> str:
    if last["token"] != view_token(wb):
        names = ("model", "device", "image", "target class", "method")
        return ", ".join(n for n, a, b in zip(names, last["token"], view_token(wb)) if a != b) + " changed"
    old, new = last["params"], params
    fields = getattr(old, "__dataclass_fields__", {})
    diffs = [f"{name} {getattr(old, name)} → {getattr(new, name, '—')}" for name in fields
             if getattr(old, name) != getattr(new, name, None)]
    return (", ".join(diffs) if diffs else "settings changed").replace("sigma", "σ").replace("radius", "r")


def preprocessing_gain(wb: Workbench) -> float:
    """images.preprocessing_gain for the workbench's image and model, cached per (image, model input)."""
    memo = st.session_state.setdefault("_preprocessing_gain", {})
    spec = wb.model.spec
    key = (wb.image.sha256, spec.in_channels, spec.input_size, spec.flexible_size, spec.resize_size)
    if key not in memo:
        memo[key] = images.preprocessing_gain(wb.image.pixels.shape, spec.in_channels, spec.input_size,
                                              spec.flexible_size, spec.resize_size)
    return memo[key]


def run_key(wb: Workbench, kind: str, params) -> tuple:
    """Everything the result depends on: weights, device, image content, target, method, sampling parameters."""
    return (kind, wb.model.weights_sha256, wb.model.compute_key, wb.image.sha256, tuple(wb.x.shape), wb.target,
            wb.method, params)


def topk_counts(wb: Workbench, params: SamplingParams) -> TopKCounts:
    """Cached sampling stage; computes with a progress bar only when this exact config was never sampled."""
    def compute(progress) -> TopKCounts:
        attribute, logits = shared_cores(wb, params.seed)
        return sampling.sample_topk_counts(attribute, wb.x.to(wb.model.device), params.sigma, params.n0, params.n,
                                           params.k_percents, seed=params.seed, progress=progress,
                                           normalisation=params.normalisation, logits=logits)
    return cached_run(wb, "topk_counts", params, compute, "Sampling noisy attributions:")
