"""The streaming engine: every certificate's sampling stage gives bit-identical statistics to the loops it replaced
(fixtures stored before the change, tests/fixtures/engine_before.npz), plus the engine's own contracts."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from certlib.attributions import methods as attributions
from certlib.smoothing import engine, noise, sampling
from certlib.data import images
from certlib.models import registry as models, precision
from certlib.sparse import smoothgrad as sparse_smoothgrad
from tests_paths import FIXTURES as FIXTURE_DIR

FIXTURES = FIXTURE_DIR / "engine_before.npz"
NOISE64_FIXTURES = FIXTURES.with_name("engine_noise64.npz")
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


def _legacy_chunk(self, index: int):
    """The noise of a chunk as drawn when engine_before.npz was stored: torch's generator seeded by a 63-bit mix of
    (seed, stream, chunk), of which the CPU generator kept 32 bits (replaced for 64-bit seeds, issue #26 6e)."""
    if self._cached is None or self._cached[0] != index:
        mixed = (self.seed * 0x9E3779B97F4A7C15 + self.stream * 0xBF58476D1CE4E5B9
                 + index * 0x94D049BB133111EB) % (2**63 - 1)
        gen = torch.Generator(device=self.device).manual_seed(mixed)
        z = torch.randn((noise.CHUNK, *self.sample_shape), generator=gen, device=self.device, dtype=self.dtype)
        u = torch.rand(noise.CHUNK, generator=gen, device=self.device, dtype=torch.float64)
        self._cached = (index, z, u)
    return self._cached[1], self._cached[2]


def _compare(now: dict[str, np.ndarray], path: Path, float_rtol: float = 0.0, of_scale: bool = False) -> None:
    """Counts and votes exactly; floats to float_rtol relative (of each array's largest magnitude with of_scale,
    for signed maps whose near-zero entries cancel)."""
    if REGENERATE and path == NOISE64_FIXTURES:
        np.savez_compressed(path, **now)
        pytest.skip("fixtures regenerated")
    before = np.load(path)
    assert sorted(before.files) == sorted(now)
    for name, value in now.items():
        assert value.dtype == before[name].dtype, name
        if float_rtol and value.dtype.kind == "f":
            atol = float_rtol * float(np.abs(before[name]).max()) if of_scale else 0.0
            np.testing.assert_allclose(value, before[name], rtol=float_rtol, atol=atol, err_msg=name)
        else:
            assert np.array_equal(value, before[name]), name


def test_every_certificate_samples_what_it_sampled_before(monkeypatch):
    """The loops before the engine, given the same noise and memory format: the noise of that time is put back, and
    the model is loaded in NCHW (channels_last on the CPU came later, and moves maps by rounding). Counts and votes
    bit for bit; float maps to 1e-6 of their scale, since the fixture was stored on an Intel CPU and an AMD Zen CPU's
    kernels differ from it in the last bits (LRP's near-zero entries by 3e-9 of a 0.013 map); on one machine the
    same code gives the same bits."""
    monkeypatch.setattr(noise.NoiseStream, "_chunk", _legacy_chunk)
    monkeypatch.setattr(precision, "CPU_CHANNELS_LAST", {})
    _compare(_statistics(), FIXTURES, float_rtol=1e-6, of_scale=True)


def test_every_certificate_samples_what_it_sampled_with_64_bit_seeds():
    """The same statistics with today's noise (tests/fixtures/engine_noise64.npz, stored when the noise moved to
    64-bit seeds): any later change to the sampling path that moves a count shows here. Counts and votes must be
    equal; float statistics to 1e-6 relative, because CPUs differ in the last bit of their kernels (the
    SmoothGrad sums of engine_before.npz, stored on an Intel CPU, differ by 1 ulp on an AMD Zen CPU)."""
    _compare(_statistics(), NOISE64_FIXTURES, float_rtol=1e-6)


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
    from certlib.smoothing.noise import NoiseStream

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
