"""Progressive certification (certlib.pixel.progressive, sampling.extend_counts): continuing is exact and keeps the run's
history, the stop rule stops where an independent computation says it must, no frame ever loses a certified pixel,
and the look at the planned budget happens once, at that n only."""
import numpy as np
import pytest
import torch

from certlib.pixel import anytime, cert as pixel_cert, progressive
from certlib.attributions import methods as attributions
from certlib.models import registry as models
from certlib.smoothing import sampling
from certlib.errors import CertlibError
from certlib.runs.sweep import prepared_input
from certlib.data import images


@pytest.fixture(scope="module")
def digits():
    model = models.load_model("digits_sigma0.25")
    x = prepared_input(model, images.digit_gallery()[3])
    target = int(model.predict_proba(x)[0].argmax())
    fn, logits = attributions.for_target(model, "grad", target, 0)
    return fn, logits, x


def test_extending_counts_equals_one_longer_run_whatever_the_batches(digits):
    fn, logits, x = digits
    longer = sampling.sample_topk_counts(fn, x, 0.25, 16, 100, seed=3, logits=logits, batch_size=32)
    short = sampling.sample_topk_counts(fn, x, 0.25, 16, 37, seed=3, logits=logits, batch_size=8)
    extended = sampling.extend_counts(fn, x, sampling.extend_counts(fn, x, short, 20, logits, batch_size=5), 43,
                                      logits, batch_size=64)
    assert extended.n == 100
    for name in ("selection_ones", "estimation_ones", "selection_classes", "estimation_classes", "clean_masks"):
        assert np.array_equal(getattr(extended, name), getattr(longer, name)), name
    assert not np.array_equal(short.estimation_ones, longer.estimation_ones)


def test_extending_needs_logits_exactly_when_the_counts_hold_votes(digits):
    fn, logits, x = digits
    with_votes = sampling.sample_topk_counts(fn, x, 0.25, 8, 8, logits=logits)
    with pytest.raises(CertlibError, match="logits"):
        sampling.extend_counts(fn, x, with_votes, 8)
    with pytest.raises(CertlibError, match="more"):
        sampling.extend_counts(fn, x, with_votes, 0, logits)


def _nested(frames) -> None:
    """Every frame's certified set contains the previous frame's, with the same classes."""
    for before, after in zip(frames, frames[1:]):
        was, now = before.certificate.classes, after.certificate.classes
        assert not ((was != -1) & (now != was)).any(), f"lost at n = {after.counts.n}"


def test_resuming_from_any_frame_reproduces_the_uninterrupted_frames(digits):
    fn, logits, x = digits
    rule = progressive.StopRule(levels=(5.0, 50.0))
    whole = list(progressive.certify_progressively(fn, x, 0.25, rule, n_max=160, frame_size=32, logits=logits))
    assert [f.counts.n for f in whole] == [32, 64, 96, 128, 160] and whole[-1].stop == "budget"
    resumed = list(progressive.certify_progressively(fn, x, 0.25, rule, n_max=160, frame_size=32, logits=logits,
                                                     start=whole[1].trajectory))
    assert [f.counts.n for f in resumed] == [64, 96, 128, 160]
    for a, b in zip(whole[1:], resumed):
        assert np.array_equal(a.counts.estimation_ones, b.counts.estimation_ones)
        assert np.array_equal(a.certificate.classes, b.certificate.classes)
        assert a.trajectory.n == b.trajectory.n
    _nested(whole)
    # the last frame holds the look at the budget: it contains the fixed-n test at plan_share·α on the same counts
    last = whole[-1]
    assert last.trajectory.plan_n == 160 and last.trajectory.looked
    sub = last.counts.select_levels([5.0, 50.0])
    planned = pixel_cert.decide(sub.votes_for_mode, sub.modes, sub.n, 0.25, 0.75, 1e-3 * progressive.PLAN_SHARE)
    certified = last.certificate.classes != -1
    assert (planned.classes != -1).any() and not ((planned.classes != -1) & ~certified).any()
    # bare counts resume too, but without the history before them nor a planned look
    bare = list(progressive.certify_progressively(fn, x, 0.25, rule, n_max=160, frame_size=32, logits=logits,
                                                  start=whole[1].counts))
    assert bare[0].trajectory.n == (64,) and bare[-1].trajectory.plan_n is None


def test_the_trajectory_re_decides_every_frame_at_another_tau_alpha_and_levels(digits):
    """The cached trajectory is all a slider move needs: re-deciding the last frame at a new τ, α and level set
    equals the certificate a run with that rule would have shown, and replaying it gives nested frames."""
    fn, logits, x = digits
    frames = list(progressive.certify_progressively(fn, x, 0.25, progressive.StopRule(), n_max=96, n0=8,
                                                    frame_size=16, logits=logits))
    trajectory = frames[-1].trajectory
    assert trajectory.n == (16, 32, 48, 64, 80, 96) and trajectory.steps[1].dtype == np.uint8
    other = progressive.StopRule(0.6, 0.01, (25.0,), "bonferroni")
    direct = list(progressive.certify_progressively(fn, x, 0.25, other, n_max=96, n0=8, frame_size=16,
                                                    logits=logits))
    redecided = progressive.decide_trajectory(trajectory, 0.6, 0.01, "bonferroni", (25.0,))
    assert np.array_equal(redecided.classes, direct[-1].certificate.classes)
    replayed = list(progressive.replay(trajectory, other))
    assert [np.array_equal(a.classes, b.certificate.classes) for a, b in zip(replayed, direct)] == [True] * 6
    with pytest.raises(CertlibError, match="plan_share"):
        progressive.decide_trajectory(trajectory, 0.75, 1e-3, plan_share=1.0)
    with pytest.raises(CertlibError, match="prior floor"):
        progressive.StopRule(prior_floor=0.0)


def test_continuing_checks_that_the_counts_belong_to_this_configuration(digits):
    fn, logits, x = digits
    counts = sampling.sample_topk_counts(fn, x, 0.25, 8, 8, logits=logits)
    with pytest.raises(CertlibError, match="cannot continue"):
        next(progressive.certify_progressively(fn, x, 0.5, progressive.StopRule(), n0=8, start=counts,
                                               logits=logits))
    with pytest.raises(CertlibError, match="levels"):
        next(progressive.certify_progressively(fn, x, 0.25, progressive.StopRule(levels=(7.0,)), logits=logits))


def _constant_map(h: int = 8, w: int = 8):
    base = torch.arange(h * w, dtype=torch.float32).reshape(1, h, w)
    return lambda xb: base.expand(xb.shape[0], h, w).clone()


def test_a_map_that_never_changes_stops_decided_where_the_closed_form_says():
    """Every vote agrees, so under the uniform prior and no planned look every p-value is 1/M(n, n) with
    M(n, n) = (1 − τ^(n+1)) / ((n + 1) τ^n (1 − τ)) (the integral of (q/τ)^n over q uniform on (τ, 1], by hand). Holm over m equal p-values rejects all of them exactly
    when p ≤ α/m, so the first frame at or after that n must stop, 'decided', with everything certified."""
    tau, alpha, step = 0.75, 1e-3, 4
    levels = (10.0, 50.0)
    m = 2 * 64
    closed = lambda n: (n + 1) * tau**n * (1 - tau) / (1 - tau ** (n + 1))     # noqa: E731
    needed = next(n for n in range(1, 1000) if closed(n) <= alpha / m)
    expected_stop = -(-needed // step) * step
    x = torch.zeros(1, 1, 8, 8)
    rule = progressive.StopRule(tau, alpha, levels, plan_share=0.0, prior_floor=1.0)
    frames = list(progressive.certify_progressively(_constant_map(), x, 0.5, rule, n_max=1000, n0=4,
                                                    k_percents=levels, frame_size=step))
    assert frames[-1].counts.n == expected_stop and frames[-1].stop == "decided"
    assert (frames[-1].certificate.classes != -1).all() and frames[-1].undecided == 0
    assert all((f.certificate.classes == -1).all() and f.stop is None for f in frames[:-1])


def _bernoulli_map(probs: np.ndarray):
    """h^50 membership of pixel i is 1 with probability probs[i], independently per copy: the map is 1 where a
    uniform drawn from the noise (Φ of the copy's noise at that pixel) falls below probs[i], else 0, plus a tiny
    increasing ramp that breaks ties so exactly half of the pixels are ranked top 50%."""
    from scipy.stats import norm

    p = torch.as_tensor(probs, dtype=torch.float64).reshape(1, 8, 8)

    def attribute(xb):
        u = torch.as_tensor(norm.cdf((xb[:, 0] / 0.5).double().numpy()))
        member = (u < p).double()
        # rank |a|: members first; the ramp orders within each group without crossing groups
        ramp = torch.arange(64, dtype=torch.float64).reshape(1, 8, 8) / 1e4
        return (member + ramp).float()
    return attribute


def test_futile_pixels_let_the_sampler_stop_and_a_small_budget_stops_it_first():
    x = torch.zeros(1, 1, 8, 8)
    rule = progressive.StopRule(0.75, 1e-3, (50.0,), plan_share=0.0, prior_floor=1.0)
    # half the pixels always in the top half, half never: all certified, decided early
    clear = np.where(np.arange(64) < 32, 1.0, 0.0)
    frames = list(progressive.certify_progressively(_bernoulli_map(clear), x, 0.5, rule, n_max=2000, n0=8,
                                                    k_percents=(50.0,), frame_size=16))
    assert frames[-1].stop == "decided" and frames[-1].counts.n < 200
    # independent check of `futile`: the mirrored p-value by mpmath-free closed form at k = 0 votes for the mode is
    # 1/M(n, n; 1 − τ); at n = 64, τ = 0.75 it is below 1e-3, so all 64 pixels are futile
    votes = np.zeros((1, 8, 8), dtype=np.int64)
    t = 0.25
    p_mirror = (64 + 1) * t**64 * (1 - t) / (1 - t ** 65)
    assert p_mirror < 1e-3 and anytime.futile(votes, 64, 0.75, 1e-3).all()
    assert not anytime.futile(np.full((1, 8, 8), 60), 64, 0.75, 1e-3).any()
    # the constant map (every vote agrees) certifies its 64 tests once 1/M(n, n) ≤ α/64. A budget below even the
    # loosest Holm level α puts every pixel out of reach at once: the first frame stops, "decided", nothing certified
    closed = lambda n: (n + 1) * 0.75**n * 0.25 / (1 - 0.75 ** (n + 1))      # noqa: E731
    reach_one = next(n for n in range(1, 500) if closed(n) <= 1e-3)
    reach_all = next(n for n in range(1, 500) if closed(n) <= 1e-3 / 64)
    hopeless = list(progressive.certify_progressively(_constant_map(), x, 0.5, rule, n_max=reach_one - 1, n0=4,
                                                      k_percents=(50.0,), frame_size=8))
    assert len(hopeless) == 1 and hopeless[0].stop == "decided" and hopeless[0].undecided == 0
    assert (hopeless[0].certificate.classes == -1).all()
    # a budget in between: every pixel stays within reach but none passes α/64 by then, so the budget stops it
    budget = reach_all - 1
    assert reach_one <= budget
    short = list(progressive.certify_progressively(_constant_map(), x, 0.5, rule, n_max=budget, n0=4,
                                                   k_percents=(50.0,), frame_size=8))
    assert short[-1].counts.n == budget and short[-1].stop == "budget" and short[-1].undecided == 64
    assert (short[-1].certificate.classes == -1).all()
    # with half of α for the look at the budget, one unanimous pixel is within reach of the exact test at the
    # hopeless budget (τ^n ≤ α/2, the loosest Holm level): "decided" must not stop before the look
    split = progressive.StopRule(0.75, 1e-3, (50.0,), plan_share=0.5, prior_floor=1.0)
    assert 0.75 ** (reach_one - 1) <= 0.5e-3
    waits = list(progressive.certify_progressively(_constant_map(), x, 0.5, split, n_max=reach_one - 1, n0=4,
                                                   k_percents=(50.0,), frame_size=8))
    assert waits[-1].counts.n == reach_one - 1 and waits[-1].stop == "budget" and waits[-1].trajectory.looked
    # and at the budget where the anytime test alone certified nothing, the look certifies all 64 (τ^n ≤ α/2/64)
    assert 0.75 ** budget <= 0.5e-3 / 64
    planned = list(progressive.certify_progressively(_constant_map(), x, 0.5, split, n_max=budget, n0=4,
                                                     k_percents=(50.0,), frame_size=8))
    assert all((f.certificate.classes == -1).all() for f in planned[:-1])
    assert planned[-1].trajectory.looked and (planned[-1].certificate.classes != -1).all()


def test_no_frame_loses_a_certificate_where_the_last_frame_alone_would():
    """Pixels with a probability just above τ get certified and, decided from each frame's own counts alone, lose it
    when later votes disagree (counted here, so the test has teeth). The running minimum keeps them: every frame's
    certified set contains the previous one's."""
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.55, 1.0, 64)
    probs[probs < 0.8] = 0.0   # not-top pixels decided quickly; the rest near and above τ
    x = torch.zeros(1, 1, 8, 8)
    rule = progressive.StopRule(0.75, 0.2, (50.0,))
    would_lose = 0
    for seed in range(6):
        frames = list(progressive.certify_progressively(_bernoulli_map(probs), x, 0.5, rule, n_max=800, n0=8,
                                                        k_percents=(50.0,), frame_size=4, seed=seed))
        _nested(frames)
        alone = [progressive.decide(f.counts, "anytime", 0.75, 0.2).classes for f in frames]
        would_lose += sum(int(((a != -1) & (b == -1)).sum()) for a, b in zip(alone, alone[1:]))
    assert would_lose > 0


def test_continuing_past_the_planned_budget_keeps_the_one_look_and_stopping_early_has_none(digits):
    fn, logits, x = digits
    rule = progressive.StopRule(levels=(5.0, 50.0))
    early = list(progressive.certify_progressively(fn, x, 0.25, rule, n_max=96, n0=8, frame_size=24, logits=logits))
    assert early[-1].trajectory.plan_n == 96 and early[-1].trajectory.looked
    # stopped (by the caller) at n = 72 < 96: no look, the certificate is Holm on the running minimum at (1 − s)α
    stopped = early[-2].trajectory
    assert not stopped.looked
    live_only = progressive.decide_trajectory(stopped, 0.75, 1e-3 * (1 - progressive.PLAN_SHARE), levels=(5.0, 50.0),
                                              plan_share=0.0)
    assert np.array_equal(early[-2].certificate.classes, live_only.classes)
    # a frame size that does not divide the budget still lands on it
    odd = list(progressive.certify_progressively(fn, x, 0.25, rule, n_max=96, n0=8, frame_size=40, logits=logits))
    assert odd[-1].trajectory.n == (40, 80, 96) and odd[-1].trajectory.looked
    # raising the budget afterwards: the plan stays 96, looked once; later frames add anytime evidence only
    more = list(progressive.certify_progressively(fn, x, 0.25, rule, n_max=192, n0=8, frame_size=24, logits=logits,
                                                  start=early[-1].trajectory))
    assert [f.trajectory.plan_n for f in more] == [96] * len(more) and more[-1].counts.n == 192
    _nested(early + more[1:])
    planned = progressive.decide_trajectory(more[-1].trajectory, 0.75, 1e-3, levels=(5.0, 50.0), plan_share=0.5,
                                            prior_floor=1.0)
    at_96 = early[-1].counts.select_levels([5.0, 50.0])
    fixed_96 = pixel_cert.decide(at_96.votes_for_mode, at_96.modes, 96, 0.25, 0.75, 0.5e-3)
    assert not ((fixed_96.classes != -1) & (planned.classes == -1)).any()


def test_the_decision_of_either_test_from_the_same_counts(digits):
    fn, logits, x = digits
    counts = sampling.sample_topk_counts(fn, x, 0.25, 32, 128, logits=logits)
    anyt = progressive.decide(counts, "anytime", 0.75, 1e-3)
    fixed = progressive.decide(counts, "fixed", 0.75, 1e-3)
    assert ((anyt.classes != -1) <= (fixed.classes != -1)).all()
    assert (anyt.classes != -1).sum() < (fixed.classes != -1).sum()
    with pytest.raises(CertlibError, match="test must be one of"):
        progressive.decide(counts, "sequential", 0.75, 1e-3)


def test_pvalue_table_matches_the_elementwise_pvalues():
    for n, tau in ((1, 0.5), (37, 0.75), (300, 0.9)):
        table = anytime.pvalue_table(n, tau)
        assert table.shape == (n + 1,)
        assert np.allclose(table, [anytime.anytime_pvalue(k, n, tau) for k in range(n + 1)], rtol=1e-12)


@pytest.mark.parametrize("model_key,image_key,method,n_max", [
    ("digits_sigma0.25", "digit:2", "grad", 128), ("digits_sigma0.25", "digit:8", "lrp", 128),
    ("digits_sigma0.25", "digit:13", "gradcam", 128), ("efficientnet_lite0_160", "photo:chelsea", "grad", 96),
    ("efficientnet_lite0_160", "photo:coffee", "gradcam", 96)])
def test_no_frame_of_a_real_run_loses_a_certified_pixel(model_key, image_key, method, n_max):
    """Issue #26: digits and photos, several methods, the page's rule, frames of 8 up to a budget whose look
    certifies: every frame's certified set holds the previous one's, and the last frame certifies something."""
    model = models.load_model(model_key)
    spec = model.spec
    x = images.prepare_image(images.get_image(image_key).pixels, spec.in_channels, spec.input_size,
                             spec.flexible_size, spec.resize_size)
    target = int(model.predict_proba(x)[0].argmax())
    fn, logits = attributions.for_target(model, method, target, 0)
    frames = list(progressive.certify_progressively(fn, x, 0.25, progressive.StopRule(), n_max=n_max, n0=8,
                                                    frame_size=8, logits=logits))
    _nested(frames)
    assert frames[-1].trajectory.looked and (frames[-1].certificate.classes != -1).any()
