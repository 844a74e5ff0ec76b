"""certlib.smoothing.topk beyond tests/pixel/test_cert.py (which checks h^K against numpy through its public path)."""
import numpy as np
import torch

from certlib.pixel import cert as pixel_cert
from certlib.smoothing import topk


def test_the_public_path_is_the_same_function():
    assert pixel_cert.top_k_mask is topk.top_k_mask and pixel_cert.top_k_masks is topk.top_k_masks


def test_ranking_never_saturates_where_clipping_does():
    # a signed map with many large negative values: clipped at its own 99.5th percentile they all tie at 1, and
    # the top 1% is empty; ranked directly, exactly the 1% largest |a| are kept
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.normal(size=(1, 32, 32)))
    a.view(-1)[:50] = -torch.linspace(10, 20, 50, dtype=torch.float64)
    assert int(topk.top_k_mask(a, 1.0, "own_scale").sum()) == 0
    ranked = topk.top_k_mask(a, 1.0, "rank")
    # N − 1 − ⌊0.99·(N − 1)⌋ = 11 pixels lie strictly above the interpolated 99th percentile of 1,024 values
    assert int(ranked.sum()) == 11 and bool(ranked.view(-1)[39:50].all())     # the eleven most negative


def test_float32_and_float64_maps_give_the_same_masks():
    rng = np.random.default_rng(1)
    a32 = torch.from_numpy(rng.standard_t(3, size=(6, 17, 13)).astype(np.float32))
    for norm in ("rank", "own_scale"):
        assert torch.equal(topk.top_k_masks(a32, (1, 5, 25, 50), norm), topk.top_k_masks(a32.double(), (1, 5, 25, 50),
                                                                                       norm))


def test_percentiles_are_exact_order_statistics_with_ties_and_any_dtype():
    """The CPU's partition-based percentiles equal those of fully sorted rows (and numpy's), bit for bit."""
    rng = np.random.default_rng(2)
    percents = [100.0 - k for k in (1, 5, 10, 25, 50, 100)] + [topk.SCALE_PERCENTILE, 37.3]
    for shape in ((5, 1024), (3, 50176), (2, 7), (4, 1)):
        for values in (rng.standard_t(3, size=shape), rng.integers(0, 4, size=shape).astype(float)):  # ties too
            for dtype in (torch.float32, torch.float64):
                v = torch.from_numpy(values).to(dtype)
                got = topk._percentiles(v, percents)
                assert torch.equal(got, topk._percentiles_of_sorted(v.sort(dim=-1).values, percents))
                want = np.percentile(v.double().numpy(), percents, axis=-1).T
                np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=0)
