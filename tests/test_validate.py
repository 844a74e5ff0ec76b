"""certlib.validate: one definition of each argument, used by every certificate."""
import numpy as np
import pytest
import torch

from certlib import validate
from certlib.smoothing import noise
from certlib.pixel import cert as pixel_cert
from certlib.sparse import smoothgrad as sparse_smoothgrad
from certlib.uniform import bound as uniform_bound
from certlib.errors import CertlibError


@pytest.mark.parametrize("value", [0.25, 1, np.float32(0.25), np.float64(0.5), np.int64(2)])
def test_numpy_scalars_are_valid_sigmas_everywhere(value):
    assert noise.check_sigma(value) == validate.sigma(value) == float(value)
    assert pixel_cert.certified_radius(value, 0.75) == pytest.approx(float(value) * 0.6744897501960817)


@pytest.mark.parametrize("value", [True, 0, -0.1, float("nan"), float("inf"), "0.5", None, np.bool_(True)])
def test_bad_sigmas_are_refused_the_same_way_everywhere(value):
    for check in (noise.check_sigma, validate.sigma, sparse_smoothgrad._check_sigma,
                  lambda v: pixel_cert.certified_radius(v, 0.75)):
        with pytest.raises(CertlibError, match="sigma must be a positive number"):
            check(value)


def test_each_argument_names_itself():
    cases = [(lambda: validate.tau(1.0), "tau must be in [0.5, 1), got 1.0"),
             (lambda: validate.tau(True), "tau must be in [0.5, 1), got True"),
             (lambda: validate.alpha(0.0), "alpha must be in (0, 1), got 0.0"),
             (lambda: validate.count("n", 0), "n must be an integer in [1, 10,000,000], got 0"),
             (lambda: validate.count("n", 2.0), "n must be an integer in [1, 10,000,000], got 2.0"),
             (lambda: validate.eps(-1e-9), "eps must be a non-negative number"),
             (lambda: validate.radius(0.0), "radius must be a positive number, got 0.0"),
             (lambda: validate.k_percents([]), "k_percents must be a non-empty sequence"),
             (lambda: validate.k_percents([5, 101]), "k_percents must be a non-empty sequence"),
             (lambda: uniform_bound.ball_overlap_fraction(10, -1.0, 0.1), "r must be a positive number")]
    for call, message in cases:
        with pytest.raises(CertlibError) as info:
            call()
        assert message in str(info.value)
    assert validate.count("n", np.int32(7)) == 7 and validate.eps(0) == 0.0 and validate.tau(np.float32(0.5)) == 0.5


def test_all_finite():
    assert validate.all_finite(torch.full((3,), 3e38)) and not validate.all_finite(torch.tensor([1.0, float("nan")]))
