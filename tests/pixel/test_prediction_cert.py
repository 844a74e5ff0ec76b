"""The prediction certificate (Cohen et al.'s CERTIFY) against scipy, exact cases and a Monte-Carlo falsification
on a linear classifier whose smoothed decision boundary is known in closed form."""
import numpy as np
import pytest
import torch
from scipy.stats import binom, binomtest, norm

from certlib.attributions import methods as attributions
from certlib.models import registry as models
from certlib.pixel import prediction_cert
from certlib.errors import CertlibError
from certlib.data.images import digit_gallery, prepare_image
from certlib.pixel.prediction_cert import certify_prediction
from certlib.smoothing.sampling import sample_topk_counts


@pytest.mark.parametrize("n_a, n, alpha", [(90, 100, 0.05), (255, 256, 1e-3), (600, 1000, 1e-6), (51, 100, 0.1)])
def test_p_lower_and_radius_match_scipy(n_a, n, alpha):
    sel = np.array([1, 30, 1])
    est = np.array([n - n_a, n_a, 0])
    cert = certify_prediction(sel, est, 0.25, alpha)
    ci = binomtest(n_a, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")   # two-sided at 1 − 2α
    assert cert.top_class == 1 and cert.votes == n_a and cert.n == n
    assert cert.p_lower == pytest.approx(ci.low, rel=1e-9, abs=1e-11)
    if ci.low > 0.5:
        assert cert.certified and cert.radius == pytest.approx(0.25 * norm.ppf(ci.low), rel=1e-8)
    else:
        assert not cert.certified and cert.radius is None


def test_unanimous_votes_by_hand_and_abstain():
    cert = certify_prediction(np.array([0, 0, 32]), np.array([0, 0, 256]), 0.5, 1e-3)
    assert cert.p_lower == pytest.approx(1e-3 ** (1 / 256), rel=1e-12)            # p^n = α
    assert cert.radius == pytest.approx(0.5 * norm.ppf(1e-3 ** (1 / 256)), rel=1e-10)
    assert cert.covers(2, 0.9) and not cert.covers(1, 0.1) and not cert.covers(2, 1.0)
    split = certify_prediction(np.array([16, 16]), np.array([128, 128]), 0.5, 1e-3)
    assert split.top_class == 0 and not split.certified and not split.covers(0, 0.0)   # a tie picks class 0


def test_bad_inputs_are_named():
    with pytest.raises(CertlibError, match="one count per class"):
        certify_prediction(np.array([1, 2]), np.array([1, 2, 3]), 0.5, 0.01)
    with pytest.raises(CertlibError, match="selection_votes"):
        certify_prediction(np.array([-1, 2]), np.array([1, 2]), 0.5, 0.01)
    with pytest.raises(CertlibError, match="sigma"):
        certify_prediction(np.array([1, 2]), np.array([1, 2]), 0.0, 0.01)
    with pytest.raises(CertlibError, match="alpha"):
        certify_prediction(np.array([1, 2]), np.array([1, 2]), 0.5, 1.0)


def test_false_certificates_stay_within_alpha_on_a_linear_classifier():
    """f(z) = 1[w·z > b]: its smoothed classifier predicts 1 exactly when w·x > b, so the true certified radius is
    the distance (w·x − b)/‖w‖ to the hyperplane. A certified R_pred beyond it is a false certificate; CERTIFY
    allows that with probability ≤ α per run. (Using the point estimate n_A/n instead of the lower bound gives ~50%.)"""
    rng = np.random.default_rng(7)
    d, sigma, alpha, n0, n, runs = 12, 0.5, 0.05, 20, 100, 400
    w = rng.normal(size=d)
    x = rng.normal(size=d)
    true_p = 0.93
    b = w @ x - sigma * np.linalg.norm(w) * norm.ppf(true_p)
    true_radius = (w @ x - b) / np.linalg.norm(w)
    false = 0
    for _ in range(runs):
        votes = [np.bincount(((x + sigma * rng.normal(size=(m, d))) @ w > b).astype(int), minlength=2)
                 for m in (n0, n)]
        cert = certify_prediction(votes[0], votes[1], sigma, alpha)
        false += cert.certified and (cert.top_class != 1 or cert.radius > true_radius)
    assert false <= binom.ppf(0.999, runs, alpha), false


@pytest.fixture(scope="module")
def digits():
    model = models.load_model("digits_sigma0.25")
    x = prepare_image(digit_gallery()[1].pixels, 1, (32, 32), True)
    return model, x, int(model.predict_proba(x).argmax())


def _votes(model, x, target, method):
    explainer = attributions.make_attribution(method, model)
    c = sample_topk_counts(lambda xb: explainer.attribute(xb, target), x, 0.25, n0=16, n=48, k_percents=(25,),
                           seed=2, batch_size=16, logits=explainer.logits_for)
    return c


def test_votes_are_the_same_whether_logits_are_reused_or_recomputed(digits):
    model, x, target = digits
    reused, forward = _votes(model, x, target, "grad"), _votes(model, x, target, "gradcam")
    assert reused.selection_classes.sum() == 16 and reused.estimation_classes.sum() == 48
    assert reused.selection_classes.shape == (10,)
    assert np.array_equal(reused.selection_classes, forward.selection_classes)
    assert np.array_equal(reused.estimation_classes, forward.estimation_classes)
    cert = prediction_cert.from_counts(reused, 1e-3)
    assert cert is not None and cert.n == 48
    plain = sample_topk_counts(lambda xb: xb.sum(1), x, 0.25, n0=4, n=4, k_percents=(25,))
    assert plain.selection_classes is None and prediction_cert.from_counts(plain, 1e-3) is None


def test_gradient_methods_reuse_their_forward_pass(digits):
    model, x, target = digits
    calls = []
    handle = model.module.register_forward_hook(lambda *_: calls.append(1))
    try:
        for method, passes in (("grad", 1), ("input_x_gradient", 1), ("gradcam", 2)):
            calls.clear()
            _votes(model, x, target, method)
            # the clean map and 4 batches of 16 copies, each with 1 pass where the logits are reused, else 2
            assert len(calls) == 5 * passes, (method, len(calls))
    finally:
        handle.remove()


def test_the_anytime_prediction_certificate_is_more_cautious_than_clopper_pearson():
    import numpy as np
    from certlib.pixel import anytime
    sel, est = np.array([1, 30, 1]), np.array([5, 180, 15])
    fixed = prediction_cert.certify_prediction(sel, est, 0.25, 1e-3)
    anyt = prediction_cert.certify_prediction(sel, est, 0.25, 1e-3, test="anytime")
    assert anyt.top_class == fixed.top_class == 1 and anyt.votes == 180
    assert anyt.p_lower == anytime.lower_confidence_bound(180, 200, 1e-3) < fixed.p_lower
    assert anyt.radius < fixed.radius
    with pytest.raises(CertlibError, match="test must be"):
        prediction_cert.certify_prediction(sel, est, 0.25, 1e-3, test="sequential")
