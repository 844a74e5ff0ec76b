"""certlib.runs.sweep: planning, resumable sampling into the store, and the targets of a plan."""
import numpy as np
import pytest

from certlib.models import registry as models
from certlib.smoothing import sampling
from certlib.runs import sweep
from certlib.errors import CertlibError
from certlib.runs.store import Store


def test_an_interrupted_sweep_resumes_where_it_stopped(monkeypatch):
    model = models.load_model("digits_sigma0.25")
    runs = sweep.plan(model, sweep.image_set("digits", 3), ["grad"], [0.25, 0.5], n=6, n0=2, k_percents=(5, 50))
    assert len(runs) == 6
    real = sampling.sample_topk_counts
    calls = []

    def flaky(*args, **kwargs):
        calls.append(kwargs["seed"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_topk_counts", flaky)
    s = Store()
    with pytest.raises(KeyboardInterrupt):
        sweep.run_missing(s, model, runs)
    assert len(s) == 2 and len(sweep.missing(s, runs)) == 4
    calls.clear()
    monkeypatch.setattr(sampling, "sample_topk_counts", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    assert sweep.run_missing(s, model, runs) == 4 and len(calls) == 4
    assert sweep.run_missing(s, model, runs) == 0 and len(calls) == 4
    # a resumed run holds exactly what an uninterrupted one would (sampling is seeded per run)
    fresh = sweep.sample_run(model, runs[0])
    assert np.array_equal(s.get(runs[0].config).counts.estimation_ones, fresh.estimation_ones)


def test_a_plan_checks_every_argument_before_sampling():
    model = models.load_model("digits_sigma0.25")
    digits = sweep.image_set("digits", 2)
    with pytest.raises(CertlibError, match="out of range"):
        sweep.plan(model, digits, ["grad"], [0.25], 16, target=10)
    with pytest.raises(CertlibError, match="sigma"):
        sweep.plan(model, digits, ["grad"], [0.25, -1.0], 16)
    with pytest.raises(CertlibError, match="normalisation"):
        sweep.plan(model, digits, ["grad"], [0.25], 16, normalisation="clean")
    runs = sweep.plan(model, sweep.image_set("grids", 1), ["grad", "gradcam"], [0.25], 16)
    assert len(runs) == 2 * 4 and {r.config.cell for r in runs} == {0, 1, 2, 3}   # one run per grid cell
