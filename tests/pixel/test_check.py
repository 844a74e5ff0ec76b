"""'Check it' on the real bundled model: perturbations of norm exactly R never flip a certified pixel
significantly (a falsification test of the whole pipeline: attribution, sampler, test, correction)."""
import numpy as np
import pytest
import torch

from certlib.attributions import methods as attributions
from certlib.models import registry as models
from certlib.pixel import cert as pixel_cert
from certlib.attributions.attacks import random_directions
from certlib.data.images import digit_gallery, prepare_image
from certlib.pixel.check import check_certificate, reestimate
from certlib.smoothing.sampling import sample_topk_counts


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


# ---------------------------------------------------------------------------- a model built to break the certificate
# Equal to the bundled CNN everywhere, except that at one point p = x + δ (‖δ‖ = R/2) its gradient is almost zero:
# logits + mask(z)·⟨w, z − z.detach()⟩ adds exactly 0 to every value, and w to the gradient only where z == p
# bit for bit, which no noisy copy ever is. So every noisy attribution is bit-identical to the bundled model's;
# only the clean map at p changes, and with it the paper's scale s(p).

class _Bumped(torch.nn.Module):
    def __init__(self, base, point, w, target):
        super().__init__()
        self.base = base
        self.register_buffer("point", point.flatten(1).clone())
        self.register_buffer("w", w.flatten(1).clone())
        self.register_buffer("onehot", torch.nn.functional.one_hot(torch.tensor([target]), 10).float())

    def forward(self, z):
        flat = z.flatten(1)
        at_point = (flat == self.point).all(dim=1).to(z.dtype)
        bump = at_point * ((flat - flat.detach()) * self.w).sum(dim=1)
        return self.base(z) + bump[:, None] * self.onehot


@pytest.fixture(scope="module")
def bumped():
    import io

    base = models.load_model("digits_sigma0.25")
    x = prepare_image(digit_gallery()[0].pixels, 1, (32, 32), True)
    target = int(base.predict_proba(x).argmax())
    radius = pixel_cert.certified_radius(0.25, 0.75)
    p = x + random_directions(x, radius / 2, 1, seed=5)[0][None]
    grad_p = attributions.make_attribution("grad", base)
    xp = p.clone().requires_grad_(True)
    g, = torch.autograd.grad(base.module(xp)[0, target], xp)
    module = torch.jit.trace(_Bumped(base.module, p, -(1 - 1e-4) * g, target).eval(), x)
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    model = models.load_torchscript(buf.getvalue(), 1, 32, 32, "bumped")
    # the construction does what it claims: the clean map at p collapses, at x and on noise nothing changes
    gb = attributions.make_attribution("grad", model)
    assert float(gb.attribute(p, target).abs().max()) < 1e-3 * float(grad_p.attribute(p, target).abs().max())
    noisy = x + 0.25 * torch.randn((8, *x.shape[1:]), generator=torch.Generator().manual_seed(0))
    assert torch.equal(gb.attribute(noisy, target), grad_p.attribute(noisy, target))
    assert torch.equal(gb.attribute(x, target), grad_p.attribute(x, target))
    return base, model, x, p, target, radius


def _certify_and_recheck(model, x, p, target, normalisation):
    method = attributions.make_attribution("grad", model)
    attribute = lambda xb: method.attribute(xb, target)  # noqa: E731
    counts = sample_topk_counts(attribute, x, 0.25, n0=32, n=128, k_percents=(5, 25, 50), seed=3,
                                normalisation=normalisation)
    cert = pixel_cert.decide(counts.votes_for_mode, counts.modes, counts.n, 0.25, 0.75, 1e-3)
    check = reestimate(attribute, p, counts, cert.classes, 1e-3)
    return counts, cert, check


def test_a_gradient_bump_at_x_plus_delta_cannot_break_the_default_certificate(bumped):
    base, model, x, p, target, _ = bumped
    counts_b, cert_b, check_b = _certify_and_recheck(base, x, p, target, "rank")
    counts_m, cert_m, check_m = _certify_and_recheck(model, x, p, target, "rank")
    assert np.array_equal(counts_m.estimation_ones, counts_b.estimation_ones)
    assert np.array_equal(cert_m.classes, cert_b.classes) and int((cert_m.classes == 1).sum()) > 100
    assert check_m == check_b                       # at p the function h^K is the same as the bundled model's
    assert check_m.flipped == 0 and check_m.flipped_significant == 0


def test_the_paper_variant_is_broken_by_the_same_bump(bumped):
    base, model, x, p, target, _ = bumped
    _, cert_b, check_b = _certify_and_recheck(base, x, p, target, "paper")
    _, cert_m, check_m = _certify_and_recheck(model, x, p, target, "paper")
    assert np.array_equal(cert_m.classes, cert_b.classes)      # the certificate at x cannot see the bump ...
    assert check_b.flipped_significant == 0
    assert check_m.flipped_significant >= 100, check_m          # ... yet hundreds of certified pixels flip at p


def test_check_streams_never_reuse_the_certification_noise(setup):
    """Whatever seed the run used, "Check it" at δ = 0 re-estimates x from other noise than the run's n estimation
    copies: identical noise would reproduce every vote (largest drop exactly 0). Seeds 1001-1004 used to coincide
    with the check's own seeds."""
    model, x, attribute, logit = setup
    for seed in (0, 1001, 1002, 1003, 1004):
        counts = sample_topk_counts(attribute, x, 0.25, n0=8, n=64, k_percents=(25,), seed=seed)
        cert = pixel_cert.decide(counts.votes_for_mode, counts.modes, counts.n, 0.25, 0.75, 0.1)
        assert (cert.classes >= 0).sum() > 50
        for check in check_certificate(attribute, logit, x, counts, cert.classes, 0.0, 0.1, n_random=3, seed=1):
            assert check.norm == 0.0 and check.max_drop > 0, (seed, check)
