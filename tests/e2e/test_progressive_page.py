"""The anytime-valid Certified pixels page in real chromium (issue #18): a valid frame appears while sampling, a real
Stop click keeps the partial certificate, and Continue ends with exactly the counts of one uninterrupted run."""
from __future__ import annotations

import csv
import io
import json
import re
import time

import numpy as np
import pytest

from conftest import ARTIFACTS
from test_walkthrough import APP, assert_no_exception, download, shot, wait_idle

pytestmark = pytest.mark.e2e

BUDGET = 2000


def _votes(csv_bytes: bytes) -> tuple[int, np.ndarray]:
    rows = list(csv.DictReader(io.StringIO(csv_bytes.decode())))
    column = next(c for c in rows[0] if c.startswith("top5_votes_of_"))
    return int(column.rsplit("_", 1)[1]), np.array([int(r[column]) for r in rows])


def test_stop_keeps_a_valid_certificate_and_continue_equals_one_uninterrupted_run(page):
    from certlib.attributions import methods as attributions
    from certlib.data import images
    from certlib.models import registry as models
    from certlib.smoothing import sampling

    page.set_viewport_size({"width": 1440, "height": 1000})
    start = time.monotonic()
    # a seed of its own: the server's cache is shared with the other browser tests
    page.goto(f"{page.base_url}/certified_pixels?cp_nmax={BUDGET}&cp_seed=18&cp_test=anytime")
    page.get_by_text("Frame at n =").first.wait_for(timeout=90_000)
    first_frame_s = time.monotonic() - start
    assert "valid certificate at α" in page.locator(APP).inner_text()
    page.get_by_role("button", name="Stop sampling").click()
    page.get_by_text("stopped by you").first.wait_for(timeout=30_000)
    wait_idle(page)
    shown = page.locator(APP).inner_text()
    stopped_at = int(re.search(r"n = ([\d,]+) estimation copies of a budget", shown).group(1).replace(",", ""))
    assert 0 < stopped_at < BUDGET
    assert "certified radius" in shown                       # the partial certificate, with its decision controls
    n_csv, _ = _votes(download(page, "per-pixel CSV", "anytime_stopped.csv"))
    assert n_csv == stopped_at
    shot(page, "08_anytime_stopped")

    page.get_by_role("button", name=re.compile("Continue sampling")).click()
    page.get_by_text("stopped: the budget n_max was reached").first.wait_for(timeout=180_000)
    wait_idle(page)
    assert_no_exception(page, "anytime continue")
    n_final, votes = _votes(download(page, "per-pixel CSV", "anytime_final.csv"))
    config = json.loads(download(page, "config + summary JSON", "anytime_final.json"))["config"]
    assert n_final == BUDGET and config["test"] == "anytime" and config["n"] == BUDGET

    model = models.load_model(config["model"])
    x = images.prepare_image(images.get_image(config["image"]).pixels, model.spec.in_channels,
                             model.spec.input_size, model.spec.flexible_size, model.spec.resize_size)
    fn, logits = attributions.for_target(model, config["method"], config["target"], config["seed"])
    whole = sampling.sample_topk_counts(fn, x, config["sigma"], config["n0"], BUDGET, seed=config["seed"],
                                        logits=logits).select_levels([5.0])
    assert np.array_equal(votes, whole.votes_for_mode[0].ravel())
    (ARTIFACTS / "anytime_timings.json").write_text(json.dumps({"first_frame_s": first_frame_s,
                                                                "stopped_at_n": stopped_at}))
