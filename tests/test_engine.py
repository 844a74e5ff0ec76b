"""The streaming engine: every certificate's sampling stage gives bit-identical statistics to the loops it replaced
(fixtures stored before the change, tests/fixtures/engine_before.npz), plus the engine's own contracts."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from certlib import attributions, engine, images, models, sampling, sparse_smoothgrad

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


def test_batch_size_fits_half_the_free_memory(monkeypatch):
    x = torch.zeros((1, 3, 224, 224))
    per_copy = 3 * 224 * 224 * engine.BYTES_PER_INPUT_VALUE
    for copies_in_half, expected in ((10, 8), (1, 1), (0, 1), (300, 256), (64, 64)):
        monkeypatch.setattr(engine, "free_memory_bytes", lambda device, c=copies_in_half: 2 * c * per_copy)
        assert engine.auto_batch_size(x, "cuda") == expected, copies_in_half
    # the CPU also keeps batches cache-sized: 32 bundled digits, 8 ImageNet images, whatever memory is free
    monkeypatch.setattr(engine, "free_memory_bytes", lambda device: 2**40)
    assert engine.auto_batch_size(torch.zeros((1, 1, 32, 32)), "cpu") == 32
    assert engine.auto_batch_size(x, "cpu") == 8
    monkeypatch.setattr(engine, "free_memory_bytes", lambda device: 2 * 3 * per_copy)
    assert engine.auto_batch_size(x, "cpu") == 2      # memory binds before the cache rule


def test_free_host_memory_is_plausible():
    import os

    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < engine.free_memory_bytes("cpu") <= total


class _Recorder:
    def __init__(self):
        self.rows = []

    def update(self, noisy, attr):
        self.rows.append(noisy.flatten(1)[:, 0].clone())


def _noise(seed=0):
    from certlib.noise import NoiseStream

    return engine.GaussianNoise(0.5, NoiseStream((1, 4, 4), seed, 1))


def test_every_copy_reaches_every_reducer_once_whatever_the_batch():
    x = torch.zeros(1, 1, 4, 4)
    seen = {}
    for bs in (1, 3, 7, 50):
        a, b = _Recorder(), _Recorder()
        engine.stream(lambda xb: xb[:, 0], x, _noise(), 23, [a, b], bs)
        assert torch.equal(torch.cat(a.rows), torch.cat(b.rows))
        seen[bs] = torch.cat(a.rows)
    assert all(torch.equal(v, seen[1]) for v in seen.values()) and seen[1].numel() == 23


def test_progress_is_shared_and_cancel_stops_between_batches():
    x = torch.zeros(1, 1, 4, 4)
    marks = []
    engine.stream(lambda xb: xb[:, 0], x, _noise(), 10, [], 4, lambda d, t: marks.append((d, t)), done=5,
                  grand_total=15)
    assert marks == [(9, 15), (13, 15), (15, 15)]
    calls = []
    with pytest.raises(engine.Cancelled, match="after 8 of 20"):
        engine.stream(lambda xb: calls.append(len(xb)) or xb[:, 0], x, _noise(), 20, [], 4,
                      cancel=lambda: len(calls) == 2)
    assert calls == [4, 4]


def test_batch_size_is_validated():
    from certlib.errors import CertlibError

    for bad in (0, -4, 2.5, True, 10**6):
        with pytest.raises(CertlibError, match="batch_size must be an integer"):
            engine.resolve_batch_size(bad, torch.zeros(1, 1, 4, 4))
