"""ui.fair_share.Foreground: a decision's drawing grace holds the samplers a moment after the decision, bounded."""
from __future__ import annotations

import threading
import time

from ui import fair_share


def _first_batch_after(foreground: fair_share.Foreground,
                       started: threading.Event) -> tuple[list[float], threading.Thread]:
    seen: list[float] = []

    def sampler() -> None:
        started.wait()
        foreground.wait_until_clear()
        seen.append(time.monotonic())
    thread = threading.Thread(target=sampler)
    thread.start()
    return seen, thread


def test_samplers_wait_for_a_local_browser_to_draw_after_a_decision():
    foreground, started = fair_share.Foreground(limit_s=5.0), threading.Event()
    seen, thread = _first_batch_after(foreground, started)
    with foreground.work(drawing_s=0.3):
        started.set()
        time.sleep(0.1)                                   # the decision
        ended = time.monotonic()
    thread.join(5)
    assert seen and 0.25 < seen[0] - ended < 1.0          # held for the browser, then released


def test_no_grace_for_a_remote_browser_and_the_wait_stays_bounded():
    foreground, started = fair_share.Foreground(limit_s=5.0), threading.Event()
    seen, thread = _first_batch_after(foreground, started)
    with foreground.work():
        started.set()
        time.sleep(0.1)
        ended = time.monotonic()
    thread.join(5)
    assert seen and seen[0] - ended < 0.1
    bounded = fair_share.Foreground(limit_s=0.2)
    with bounded.work(drawing_s=60.0):
        pass
    t0 = time.monotonic()
    bounded.wait_until_clear()                            # a huge grace cannot stop sampling for good
    assert 0.15 < time.monotonic() - t0 < 1.0
