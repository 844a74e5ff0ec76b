"""'Check it' on the real bundled model: perturbations of norm exactly R never flip a certified pixel
significantly (a falsification test of the whole pipeline: attribution, sampler, test, correction)."""
import numpy as np
import pytest
import torch

from certlib import attributions, models, pixel_cert
from certlib.attacks import random_directions, topk_flip_direction
from certlib.images import digit_gallery, prepare_image
from certlib.pixel_check import check_certificate
from certlib.sampling import sample_topk_counts


@pytest.fixture(scope="module")
def setup():
    model = models.load_model("digits_sigma0.25")
    x = prepare_image(digit_gallery()[0].pixels, 1, (32, 32), True)
    target = int(model.predict_proba(x).argmax())
    method = attributions.make_attribution("grad", model)
    attribute = lambda xb: method.attribute(xb, target)  # noqa: E731

    def logit(xb):
        with model.lock:
            return model.module(xb)[:, target]
    return model, x, attribute, logit


def test_random_directions_have_the_exact_norm():
    d = random_directions(torch.zeros(1, 3, 8, 8), 0.7, 5, seed=2)
    assert d.shape == (5, 3, 8, 8)
    assert torch.allclose(d.flatten(1).norm(dim=1), torch.full((5,), 0.7))


def test_guided_direction_has_the_norm_and_says_how(setup):
    _, x, attribute, logit = setup
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[10:20, 10:20] = True
    d, how = topk_flip_direction(attribute, logit, x, mask, 0.3)
    assert abs(float(d.norm()) - 0.3) < 1e-5 and how


def test_certified_pixels_survive_perturbations_of_norm_r(setup):
    _, x, attribute, logit = setup
    counts = sample_topk_counts(attribute, x, 0.25, n0=32, n=200, k_percents=(10.0, 50.0), seed=0)
    cert = pixel_cert.decide(counts.votes_for_mode, counts.modes, counts.n, counts.sigma, 0.75, 0.01)
    assert (cert.classes >= 0).sum() > 50  # the check must have something to check
    checks = check_certificate(attribute, logit, x, counts, cert.classes, cert.radius, alpha=0.01, n_random=2)
    assert len(checks) == 3 and checks[-1].kind.startswith("gradient-guided")
    for c in checks:
        assert c.norm == pytest.approx(cert.radius, rel=1e-4)
        assert c.certified == int((cert.classes >= 0).sum())
        assert c.flipped_significant == 0, c
