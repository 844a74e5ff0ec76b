"""The streaming sampler: O(|K|·H·W) counts, determinism, independence of the two sample sets."""
import math

import numpy as np
import pytest
import torch

from certlib.errors import CertlibError
from certlib.pixel.cert import top_k_masks
from certlib.smoothing.sampling import sample_topk_counts


def _channel_sum(x: torch.Tensor) -> torch.Tensor:
    """A real, cheap attribution: the signed channel sum of the input itself."""
    return x.sum(dim=1)


def _image(seed=0, size=16):
    return torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_counts_shapes_ranges_and_modes():
    c = sample_topk_counts(_channel_sum, _image(), sigma=0.3, n0=20, n=50, k_percents=(10, 50), seed=1)
    assert c.selection_ones.shape == c.estimation_ones.shape == (2, 16, 16)
    assert c.selection_ones.min() >= 0 and c.selection_ones.max() <= 20
    assert c.estimation_ones.min() >= 0 and c.estimation_ones.max() <= 50
    assert np.array_equal(c.modes, (c.selection_ones > 10).astype(np.int8))
    agree = np.where(c.modes == 1, c.estimation_ones, 50 - c.estimation_ones)
    assert np.array_equal(c.votes_for_mode, agree)
    # a noisy map's top K% holds at most the pixels strictly above position (1 − K)·(N − 1) of its sorted values:
    # 26 of 256 at K = 10% (the interpolated percentile sits between the 230th and 231st value), 128 at 50%
    for i, k in enumerate((0.10, 0.50)):
        per_map = 256 - 1 - math.floor((1 - k) * 255)
        assert c.estimation_ones[i].sum() <= 50 * per_map


def test_vanishing_noise_reproduces_the_clean_masks_exactly():
    x = _image(2)
    c = sample_topk_counts(_channel_sum, x, sigma=1e-7, n0=8, n=16, k_percents=(5, 25), seed=0)
    clean = top_k_masks(_channel_sum(x), (5.0, 25.0))[:, 0].numpy()
    assert np.array_equal(c.clean_masks, clean)
    assert np.array_equal(c.estimation_ones, 16 * clean.astype(np.int32))
    assert np.array_equal(c.selection_ones, 8 * clean.astype(np.int32))


def test_same_seed_same_counts_any_batch_size_and_other_seed_differs():
    x = _image(3)
    runs = [sample_topk_counts(_channel_sum, x, 0.5, n0=10, n=70, seed=5, batch_size=bs) for bs in (1, 7, 64)]
    for r in runs[1:]:
        assert np.array_equal(r.estimation_ones, runs[0].estimation_ones)
        assert np.array_equal(r.selection_ones, runs[0].selection_ones)
    other = sample_topk_counts(_channel_sum, x, 0.5, n0=10, n=70, seed=6)
    assert not np.array_equal(other.estimation_ones, runs[0].estimation_ones)


def test_selection_and_estimation_samples_are_different_draws():
    c = sample_topk_counts(_channel_sum, _image(4), 0.5, n0=64, n=64, seed=0, batch_size=16)
    assert not np.array_equal(c.selection_ones, c.estimation_ones)


def test_frequencies_match_an_independent_monte_carlo():
    """Top-50% membership frequency of the sampler vs a plain loop with its own noise (different draws)."""
    x = _image(5, size=8)
    c = sample_topk_counts(_channel_sum, x, 0.2, n0=4, n=3000, k_percents=(50,), seed=0)
    gen = torch.Generator().manual_seed(1234)
    ref = np.zeros((8, 8))
    for _ in range(3000):
        noisy = x + 0.2 * torch.randn(x.shape, generator=gen)
        ref += top_k_masks(_channel_sum(noisy), (50.0,))[0, 0].numpy()
    assert np.abs(c.top_frequency[0] - ref / 3000).max() < 0.05


def test_progress_reaches_the_total():
    seen = []
    sample_topk_counts(_channel_sum, _image(), 0.3, n0=10, n=30, batch_size=8, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (40, 40) and all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(sigma=0.0), "sigma must be a positive number, got 0.0"),
    (dict(sigma=0.2, n=0), r"n must be an integer in \[1, 10,000,000\], got 0"),
    (dict(sigma=0.2, n0=2.5), r"n0 must be an integer in \[1, 10,000,000\], got 2.5"),
    (dict(sigma=0.2, k_percents=(0,)), r"k_percents must be a non-empty sequence of numbers in \(0, 100\]"),
])
def test_bad_configs_are_named(kwargs, message):
    with pytest.raises(CertlibError, match=message):
        sample_topk_counts(_channel_sum, _image(), **kwargs)


def test_attribution_with_wrong_shape_is_refused():
    with pytest.raises(CertlibError, match=r"attribution returned shape \(1, 4, 4\)"):
        sample_topk_counts(lambda x: x[:, 0, :4, :4], _image(), 0.2, n0=2, n=2)


def test_out_of_memory_halves_the_batch_and_keeps_the_result():
    """A device that fits at most 3 copies at once: the sampler splits batches and the counts are unchanged."""
    from certlib.smoothing.sampling import sample_topk_counts

    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    w = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    plain = lambda xb: (xb * w).sum(1) ** 2  # noqa: E731
    sizes = []

    def tight(xb):
        sizes.append(xb.shape[0])
        if xb.shape[0] > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return plain(xb)

    reference = sample_topk_counts(plain, x, 0.3, n0=8, n=40, batch_size=16)
    split = sample_topk_counts(tight, x, 0.3, n0=8, n=40, batch_size=16)
    assert max(sizes) == 16 and min(sizes) <= 3
    np.testing.assert_array_equal(reference.estimation_ones, split.estimation_ones)
    np.testing.assert_array_equal(reference.selection_ones, split.selection_ones)


def test_out_of_memory_for_one_copy_is_a_clear_error():
    from certlib.errors import OutOfMemory
    from certlib.smoothing.sampling import sample_uniform_mean

    def never(xb):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(OutOfMemory, match="even for one copy.*choose the CPU"):
        sample_uniform_mean(never, torch.zeros(1, 1, 8, 8), 1.0, n=4, batch_size=4)


def test_no_noisy_map_outlives_its_batch():
    # Streaming: memory O(K·H·W) whatever n. Every map handed to the sampler must be garbage once its batch is
    # counted, and the result's arrays must not grow with n.
    import gc
    import weakref

    alive = []

    def attribute(xb):
        out = xb[:, 0] * 1.0
        alive.append(weakref.ref(out))
        return out

    x = torch.rand((1, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    small = sample_topk_counts(attribute, x, 0.5, n0=4, n=8, batch_size=4)
    large = sample_topk_counts(attribute, x, 0.5, n0=4, n=400, batch_size=4)
    gc.collect()
    assert len(alive) == (1 + 1 + 2) + (1 + 1 + 100) and not any(ref() is not None for ref in alive)
    for name in ("clean_attr", "clean_masks", "selection_ones", "estimation_ones"):
        assert getattr(small, name).nbytes == getattr(large, name).nbytes, name
