"""Metrics of the dashboard on hand-built certificates with known answers, and against independent computations
(explicit pixel loops, scipy's Gaussian filter, numpy's trapezoid)."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from certlib.runs import metrics
from certlib.errors import CertlibError


def _classes(rng, shape=(3, 8, 8), p=(0.2, 0.5, 0.3)):
    return rng.choice(np.array([1, 0, -1], dtype=np.int8), size=shape, p=p)


# ------------------------------------------------------------------------------------------------ robustness

def test_robustness_on_a_hand_built_certificate():
    level5 = np.array([[1, 0, 0, -1], [0, 0, 0, 0], [0, 0, -1, -1], [0, 0, 0, 0]], np.int8)   # 1 top, 3 abstain
    level50 = np.array([[1, 1, 1, -1], [1, 1, 0, 0], [1, 1, -1, 0], [0, 0, 0, 0]], np.int8)  # 7 top, 2 abstain
    r = metrics.certified_robustness(np.stack([level5, level50]), (5, 50))
    assert r.k_percents == (5.0, 50.0)
    np.testing.assert_allclose(r.certified_top, [1 / 16, 7 / 16])
    np.testing.assert_allclose(r.abstain, [3 / 16, 2 / 16])
    np.testing.assert_allclose(r.certified_not_top, [12 / 16, 7 / 16])
    np.testing.assert_allclose(r.certified, [13 / 16, 14 / 16])


def test_robustness_shares_match_a_pixel_loop_and_add_up_to_one():
    rng = np.random.default_rng(0)
    cls = _classes(rng, (2, 7, 5))
    r = metrics.certified_robustness(cls, (10, 25))
    for i in range(2):
        tally = {1: 0, 0: 0, -1: 0}
        for v in cls[i].ravel():
            tally[int(v)] += 1
        assert r.certified_top[i] == tally[1] / 35 and r.abstain[i] == tally[-1] / 35
    np.testing.assert_allclose(r.certified_top + r.certified_not_top + r.abstain, 1.0)


@pytest.mark.parametrize("classes, ks", [
    (np.zeros((2, 4, 4), np.int8), (5,)),                 # one K for two levels
    (np.full((1, 4, 4), 2, np.int8), (5,)),               # not a class
    (np.zeros((2, 4, 4), np.int8), (5, 5)),               # repeated K
    (np.zeros((1, 4, 4), np.int8), (0,)),                 # K out of range
    (np.zeros((4,), np.int8), (5,)),                      # not a map
])
def test_robustness_rejects_bad_input(classes, ks):
    with pytest.raises(CertlibError):
        metrics.certified_robustness(classes, ks)


# ------------------------------------------------------------------------------------------------ localization

def test_cell_masks_tile_the_grid_row_major():
    masks = [metrics.cell_mask((6, 4), c) for c in range(4)]
    assert sum(m.astype(int) for m in masks).min() == 1 and sum(m.astype(int) for m in masks).max() == 1
    assert masks[0][0, 0] and masks[1][0, 3] and masks[2][5, 0] and masks[3][5, 3]
    assert masks[1][:3, 2:].all() and masks[1].sum() == 6


def test_certified_gridpg_known_answers():
    cls = np.zeros((2, 4, 4), np.int8)
    cls[0, 0, 0] = cls[0, 1, 1] = cls[0, 0, 3] = 1         # K=5: two in the top-left cell, one in the top-right
    cls[0, 3, 3] = -1                                       # abstain does not count
    cls[1] = -1                                             # K=25: nothing certified
    loc = metrics.certified_gridpg(cls, (5, 25), cell=0)
    np.testing.assert_allclose(loc.score, [2 / 3, 0.0])
    assert list(loc.inside) == [2, 0] and list(loc.total) == [3, 0]
    np.testing.assert_allclose(metrics.certified_gridpg(cls, (5, 25), cell=1).score, [1 / 3, 0.0])
    np.testing.assert_allclose(metrics.certified_gridpg(cls, (5, 25), cell=3).score, [0.0, 0.0])


def test_certified_gridpg_matches_a_pixel_loop_and_sums_to_one_over_cells():
    rng = np.random.default_rng(1)
    cls = _classes(rng, (3, 10, 12))
    for cell in range(4):
        loc = metrics.certified_gridpg(cls, (1, 10, 50), cell)
        for i in range(3):
            inside = total = 0
            for r in range(10):
                for c in range(12):
                    if cls[i, r, c] == 1:
                        total += 1
                        inside += (2 * (r >= 5) + (c >= 6)) == cell
            assert loc.score[i] == pytest.approx(inside / total)
    scores = sum(metrics.certified_gridpg(cls, (1, 10, 50), cell).score for cell in range(4))
    np.testing.assert_allclose(scores, 1.0)


def test_plain_gridpg_counts_positive_mass_only():
    attr = np.zeros((4, 4))
    attr[0, 0], attr[0, 1] = 3.0, 1.0      # top-left cell: 4
    attr[2, 3] = 4.0                       # bottom-right: 4
    attr[3, 0] = -100.0                    # negative: ignored
    assert metrics.gridpg(attr, 0) == pytest.approx(0.5)
    assert metrics.gridpg(attr, 3) == pytest.approx(0.5)
    assert metrics.gridpg(attr, 2) == 0.0
    assert metrics.gridpg(-np.ones((4, 4)), 0) == 0.0   # no positive mass at all


def test_localization_rejects_bad_cells_and_odd_grids():
    with pytest.raises(CertlibError, match="cell"):
        metrics.certified_gridpg(np.zeros((1, 4, 4), np.int8), (5,), 4)
    with pytest.raises(CertlibError, match="divisible"):
        metrics.gridpg(np.ones((5, 4)), 0)


# ------------------------------------------------------------------------------------------------ faithfulness

def test_blur_matches_scipy_gaussian_filter():
    rng = np.random.default_rng(2)
    img = rng.random((2, 20, 24)).astype(np.float32)
    sigma = 1.7
    ours = metrics.gaussian_blur(torch.from_numpy(img)[None], sigma)[0].numpy()
    radius = int(np.ceil(3 * sigma))
    # scipy's "mirror" mode reflects about the edge pixel, like torch's "reflect" padding.
    ref = np.stack([ndimage.gaussian_filter(ch.astype(np.float64), sigma, mode="mirror", truncate=radius / sigma)
                    for ch in img])
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_replacements():
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(metrics.replacement_image(x, "zero"), torch.zeros_like(x))
    mean = metrics.replacement_image(x, "mean")
    np.testing.assert_allclose(mean[0, :, 5, 7].numpy(), x.mean(dim=(2, 3))[0].numpy(), rtol=1e-6)
    blur = metrics.replacement_image(x, "blur")
    assert blur.shape == x.shape and blur.std() < x.std()    # smoother than the input
    with pytest.raises(CertlibError, match="replacement"):
        metrics.replacement_image(x, "noise")


def _bright_fraction_model(region: np.ndarray):
    """A hand-made 'classifier': P(class 1) = mean brightness of `region`, P(class 0) = the rest."""
    mask = torch.from_numpy(region)

    def prob(xb: torch.Tensor) -> torch.Tensor:
        p1 = xb[:, 0][:, mask].mean(dim=1)
        return torch.stack([1 - p1, p1], dim=1)
    return prob


def test_deletion_and_insertion_curves_known_answers():
    h = w = 4
    x = torch.ones(1, 1, h, w)
    region = np.zeros((h, w), bool)
    region[:2, :2] = True                               # the 4 pixels class 1 looks at
    cls = np.zeros((2, h, w), np.int8)
    cls[0, 0, 0] = 1                                    # K=5: one region pixel certified top
    cls[1, 0, 0] = cls[1, 0, 1] = cls[1, 3, 3] = 1      # K=25: two region pixels and one outside
    cls[1, 1, 1] = -1                                   # abstaining pixels stay
    prob = _bright_fraction_model(region)
    d = metrics.faithfulness_curve(prob, x, 1, cls[::-1], (25, 5), "deletion", "zero")   # any level order
    np.testing.assert_allclose(d.budget, [0, 0.05, 0.25])
    np.testing.assert_allclose(d.probability, [1.0, 0.75, 0.5])
    np.testing.assert_allclose(d.changed_fraction, [0, 1 / 16, 3 / 16])
    assert d.auc == pytest.approx(np.trapezoid([1.0, 0.75, 0.5], [0, 0.05, 0.25]) / 0.25)
    i = metrics.faithfulness_curve(prob, x, 1, cls, (5, 25), "insertion", "zero")
    np.testing.assert_allclose(i.probability, [0.0, 0.25, 0.5])
    assert i.auc == pytest.approx(np.trapezoid([0.0, 0.25, 0.5], [0, 0.05, 0.25]) / 0.25)


def test_cumulative_masks_take_the_union_of_smaller_levels():
    cls = np.zeros((2, 2, 2), np.int8)
    cls[0, 0, 0] = 1                 # certified top at K=5 only (abstains at K=50)
    cls[1, 0, 0] = -1
    cls[1, 1, 1] = 1
    ks, masks = metrics.cumulative_top_masks(cls, (5, 50))
    assert ks == (5.0, 50.0)
    assert masks[1][0, 0] and masks[1][1, 1] and masks[1].sum() == 2


def test_deleting_the_pixels_the_model_uses_lowers_the_curve():
    """Deleting the pixels a model really uses first must lower its curve below deleting unused ones."""
    h = w = 8
    x = torch.ones(1, 1, h, w)
    region = np.zeros((h, w), bool)
    region[:4, :4] = True
    prob = _bright_fraction_model(region)
    good = np.zeros((1, h, w), np.int8)
    good[0][region] = 1
    bad = np.zeros((1, h, w), np.int8)
    bad[0][~region] = 1
    auc_good = metrics.faithfulness_curve(prob, x, 1, good, (25,), "deletion", "zero").auc
    auc_bad = metrics.faithfulness_curve(prob, x, 1, bad, (25,), "deletion", "zero").auc
    assert auc_good == pytest.approx(0.5) and auc_bad == pytest.approx(1.0)


def test_curve_auc_and_faithfulness_input_checks():
    assert metrics.curve_auc(np.array([0, 0.5, 1.0]), np.array([1.0, 1.0, 0.0])) == pytest.approx(0.75)
    with pytest.raises(CertlibError):
        metrics.curve_auc(np.array([0, 0.5, 0.5]), np.array([1.0, 1.0, 0.0]))
    prob = _bright_fraction_model(np.ones((4, 4), bool))
    with pytest.raises(CertlibError, match="kind"):
        metrics.faithfulness_curve(prob, torch.ones(1, 1, 4, 4), 1, np.zeros((1, 4, 4), np.int8), (5,), "both")
    with pytest.raises(CertlibError, match="image"):
        metrics.faithfulness_curve(prob, torch.ones(1, 1, 4, 4), 1, np.zeros((1, 5, 4), np.int8), (5,))
    with pytest.raises(CertlibError, match="x must be"):
        metrics.faithfulness_curve(prob, torch.ones(2, 1, 4, 4), 1, np.zeros((1, 4, 4), np.int8), (5,))
