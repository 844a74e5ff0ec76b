"""The streaming engine: every certificate's sampling stage gives bit-identical statistics to the loops it replaced
(fixtures stored before the change, tests/fixtures/engine_before.npz), plus the engine's own contracts."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from certlib import attributions, images, models, sampling, sparse_smoothgrad

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "engine_before.npz"
REGENERATE = os.environ.get("CERTEXPLORER_REGENERATE_FIXTURES") == "1"


def _statistics() -> dict[str, np.ndarray]:
    """The sampling stage of each certificate on the bundled model, fixed seeds, odd batch sizes."""
    model = models.load_model("digits_sigma0.25")
    x = images.prepare_image(images.digit_gallery()[4].pixels, 1, (32, 32), True)
    out: dict[str, np.ndarray] = {}
    for method in ("grad", "lrp", "gradcam"):
        explainer = attributions.make_attribution(method, model)
        attribute = lambda xb: explainer.attribute(xb, 4)  # noqa: E731
        for norm in ("rank", "own_scale", "paper"):
            c = sampling.sample_topk_counts(attribute, x, 0.25, n0=12, n=40, seed=3, batch_size=7,
                                            normalisation=norm, logits=explainer.logits_for)
            for name in ("selection_ones", "estimation_ones", "clean_masks", "selection_classes",
                         "estimation_classes"):
                out[f"topk/{method}/{norm}/{name}"] = np.asarray(getattr(c, name))
        u = sampling.sample_uniform_mean(attribute, x, radius=2.0, n=30, seed=5, batch_size=8)
        out[f"uniform/{method}/mean"] = u.mean
        u = sampling.sample_uniform_mean(attribute, x, radius=2.0, n=30, seed=5, batch_size=8, bound_mode="clip",
                                         M=0.5)
        out[f"uniform/{method}/mean_clip"] = u.mean
        s = sparse_smoothgrad.sample_smoothgrad(attribute, x, 0.3, n=25, seed=2, batch_size=6)
        for name in ("smoothgrad", "ones", "scaled_sum", "scaled_sq_sum", "clean_attr"):
            out[f"sparse/{method}/{name}"] = np.asarray(getattr(s, name))
    return out


def test_every_certificate_samples_what_it_sampled_before():
    now = _statistics()
    if REGENERATE:
        FIXTURES.parent.mkdir(exist_ok=True)
        np.savez_compressed(FIXTURES, **now)
        pytest.skip("fixtures regenerated")
    before = np.load(FIXTURES)
    assert sorted(before.files) == sorted(now)
    for name, value in now.items():
        assert value.dtype == before[name].dtype and np.array_equal(value, before[name]), name
