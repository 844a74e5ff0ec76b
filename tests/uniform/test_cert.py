"""The uniform-smoothing certificate end to end on the bundled model. The randomized test compares measured
cosines of re-estimated smoothed maps with the proven (strict) bound in every trial: it fails if a volume, the
dimension, the bounding of ‖g‖ or the confidence bound on ‖h‖ is wrong in the anti-conservative direction."""
import numpy as np
import pytest

from certlib.data import images
from certlib.models import registry as models
from certlib.smoothing import sampling
from certlib.uniform import bound as ub, cert as uniform_cert, check as uniform_check
from certlib.attributions.methods import make_attribution
from certlib.errors import CertlibError
from certlib.smoothing.sampling import SmoothedMap


def _smoothed(norm: float, n: int = 100, M: float = 1.0, r: float = 2.0) -> SmoothedMap:
    mean = np.zeros((4, 4))
    mean[0, 0] = norm
    return SmoothedMap(mean=mean, n=n, radius=r, M=M, bound_mode="normalise", seed=0)


def test_certificate_uses_the_confidence_bound_on_the_norm():
    cert = uniform_cert.certify_uniform(_smoothed(0.9, n=400), d=1024, delta=1e-3)
    t = 1 / 20 + np.sqrt(2 * np.log(1000) / 400)           # McDiarmid radius, written out
    assert cert.h_norm_lower == pytest.approx(0.9 - t)
    eps = 0.01
    assert cert.bound(eps) == pytest.approx(ub.cosine_lower_bound(0.9 - t, 1.0, 1024, 2.0, eps, "strict"))
    assert cert.bound(eps) < ub.cosine_lower_bound(0.9, 1.0, 1024, 2.0, eps, "strict")  # sampling error costs
    assert cert.bound(eps, "strict") <= cert.bound(eps, "paper")
    e = cert.max_eps(0.8)
    assert cert.bound(e) == pytest.approx(0.8, abs=1e-8)


def test_too_few_samples_certify_nothing_and_say_so():
    cert = uniform_cert.certify_uniform(_smoothed(0.3, n=16), d=1024)
    assert not cert.certifies_anything
    assert cert.bound(0.0) == 0.0 and cert.max_eps(0.5) == 0.0
    assert "Increase n" in uniform_cert.guarantee_sentence(cert, 0.01)
    with pytest.raises(CertlibError, match="increase n"):
        cert.min_radius(0.01, 0.9)
    with pytest.raises(CertlibError, match="bound kind must be one of"):
        cert.bound(0.01, "loose")


def test_the_eps_axis_scales_like_r_over_sqrt_d():
    for d in (1024, 150528):
        axis = uniform_cert.eps_axis(d, 2.0)
        assert axis[0] == 0 and axis[-1] == pytest.approx(8.0 / np.sqrt(d))
        # at the end of the axis the balls barely overlap: every bound is trivial there
        assert ub.ball_non_overlap_fraction(d, 2.0, axis[-1]) > 0.9


def test_measured_cosines_never_fall_below_the_proven_bound():
    model = models.load_model("digits_sigma0.25")
    gallery = images.digit_gallery()
    rng = np.random.default_rng(2026)
    d = 1024
    trials = 0
    for idx in rng.choice(len(gallery), size=3, replace=False):
        x = images.prepare_image(gallery[int(idx)].pixels, 1, (32, 32), True)
        target = int(model.predict_proba(x).argmax())
        r = float(rng.uniform(1.0, 6.0))
        fn = make_attribution("grad", model)
        smoothed = sampling.sample_uniform_mean(lambda xb: fn.attribute(xb, target), x, r, 256, seed=int(idx))
        cert = uniform_cert.certify_uniform(smoothed, d)
        grid = uniform_cert.empirical_eps_grid(d, r)
        eps = [float(grid[0]), float(grid[2])]
        for p in uniform_check.empirical_cosines(model, "grad", x, target, smoothed, eps, random_count=1,
                                                 attack_steps=4, attack_restarts=1):
            trials += 1
            assert p.cosine >= cert.bound(p.eps, "strict"), (idx, r, p)
    assert trials == 12
