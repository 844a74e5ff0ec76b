"""The top-level API (certlib.certify_pixels / certify_uniform / certify_topk / load; design §12): the page's
certificate bit for bit, re-deciding equals deciding afresh, exact save/load, every kind of model, method and image
the call takes, and errors that name the bad argument. Small n and the digits model or tiny modules keep it fast."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import certlib
from certlib.pixel import cert as pixel_cert, progressive
from certlib.smoothing import sampling
from certlib.api import store
from certlib.errors import CertlibError, ImageError, ModelError
from tests_paths import ROOT

DIGITS, IMAGE = "digits_cnn", "digit:2"
QUICK = dict(n=64, n0=8, progress=False, device="cpu")


class TinyNet(nn.Module):
    """A 3-channel classifier small enough to certify in a second: two convolutions, global pooling, linear head."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                      nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def _image(size: int = 24) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)       # [H,W,C] uint8


@pytest.fixture(scope="module")
def fixed():
    return certlib.certify_pixels(DIGITS, IMAGE, **QUICK)


# ------------------------------------------------------------------------------------------ the page, bit for bit

def _page_certificate(open_page, **state):
    at, _ = open_page("pages/certified_pixels.py", sampling, "sample_topk_counts", lambda *a, **k: None, **state)
    cert, sub = at.session_state["cp_last_certificate"]
    return at.session_state["workbench"], cert, sub


def test_certify_pixels_is_the_pages_fixed_n_certificate(open_page):
    wb, cert, sub = _page_certificate(open_page, cp_test="fixed", cp_n=64, cp_n0=8)
    r = certlib.certify_pixels(wb.model.spec.key, wb.image.key, method=wb.method, target=wb.target, n=64, n0=8,
                               k_percents=(50, 25, 5), seed=0, progress=False, device=wb.model.device)
    assert r.k_percents == sub.k_percents == (5.0, 25.0, 50.0)
    assert r.classes.dtype == cert.classes.dtype and np.array_equal(r.classes, cert.classes)
    assert np.array_equal(r.pvalues, cert.pvalues) and r.radius == cert.radius
    assert np.array_equal(r.counts.estimation_ones, sub.estimation_ones)
    assert (r.classes == 1).any() and (r.classes == -1).any()                 # a certificate with both outcomes


def test_certify_pixels_is_the_pages_anytime_certificate(open_page):
    wb, cert, sub = _page_certificate(open_page, cp_test="anytime", cp_nmax=64, cp_n0=8)
    r = certlib.certify_pixels(wb.model.spec.key, wb.image.key, method=wb.method, target=wb.target, n=64, n0=8,
                               mode="anytime", progress=False, device=wb.model.device)
    assert np.array_equal(r.classes, cert.classes) and np.array_equal(r.pvalues, cert.pvalues)
    assert r.counts.n == sub.n and r.trajectory is not None


# ------------------------------------------------------------------------------------------ re-deciding

def test_redecide_equals_a_fresh_decision(fixed):
    again = fixed.redecide(tau=0.6, alpha=1e-2)
    c = fixed.counts
    fresh = pixel_cert.decide(c.votes_for_mode, c.modes, c.n, c.sigma, 0.6, 1e-2)
    assert np.array_equal(again.classes, fresh.classes) and np.array_equal(again.pvalues, fresh.pvalues)
    assert not np.array_equal(again.classes, fixed.classes)
    assert again.radius == pytest.approx(0.25 * 0.2533471031357997)
    resampled = certlib.certify_pixels(DIGITS, IMAGE, tau=0.6, alpha=1e-2, **QUICK)        # same seed, same counts
    assert np.array_equal(again.classes, resampled.classes)
    assert again.summary()["tau"] == 0.6 and fixed.summary()["tau"] == 0.75        # a new result; the old unchanged
    one = fixed.redecide(k_percents=25)
    assert one.classes.shape == (32, 32)
    assert np.array_equal(one.classes, pixel_cert.decide(*_one_level(c, 25.0), c.n, c.sigma, 0.75, 1e-3).classes)


def _one_level(counts, k):
    sub = counts.select_levels([k])
    return sub.votes_for_mode[0], sub.modes[0]


def test_anytime_redecide_equals_deciding_the_trajectory():
    r = certlib.certify_pixels(DIGITS, IMAGE, mode="anytime", **QUICK)
    again = r.redecide(tau=0.8, correction="bonferroni")
    fresh = progressive.decide_trajectory(r.trajectory, 0.8, 1e-3, "bonferroni", r.k_percents)
    assert np.array_equal(again.classes, fresh.classes)
    assert r.prediction is not None and again.prediction == r.prediction


# ------------------------------------------------------------------------------------------ results

def _packed(result):
    arrays = {}
    meta = store._pack(result, "r", arrays)
    return json.dumps(meta, sort_keys=True), arrays


def _same(a, b) -> None:
    meta_a, arrays_a = _packed(a)
    meta_b, arrays_b = _packed(b)
    assert meta_a == meta_b and arrays_a.keys() == arrays_b.keys()
    for key in arrays_a:
        x, y = arrays_a[key], arrays_b[key]
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), key


def test_results_round_trip_bit_for_bit(fixed, tmp_path):
    results = [fixed, fixed.redecide(k_percents=5),
               certlib.certify_pixels(DIGITS, IMAGE, mode="anytime", **QUICK),
               certlib.certify_uniform(DIGITS, IMAGE, n=16, progress=False),
               certlib.certify_topk(DIGITS, IMAGE, n=16, progress=False)]
    for i, result in enumerate(results):
        path = result.save(tmp_path / f"run{i}")
        with np.load(path, allow_pickle=False) as data:                   # no object arrays: nothing to unpickle
            assert all(data[name].dtype != object for name in data.files)
        loaded = certlib.load(path)
        assert type(loaded) is type(result)
        _same(loaded, result)
    assert np.array_equal(certlib.load(tmp_path / "run1.npz").classes, results[1].classes)


def test_load_refuses_what_is_not_a_result(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(CertlibError, match="not a saved certlib result"):
        certlib.load(tmp_path / "other.npz")


def test_a_result_shows_itself(fixed):
    rgba = fixed.overlay()
    assert rgba.shape == (32, 32, 4) and rgba.dtype == np.uint8 and (rgba[..., 3] == 255).all()
    html = fixed._repr_html_()
    assert "data:image/png;base64," in html and "certified" in html
    assert fixed.figure().data and fixed.figure("bars").data
    summary = fixed.summary()
    json.dumps(summary)
    assert summary["radius"] == fixed.radius and summary["prediction"]["class"] == fixed.config["target"]
    with pytest.raises(AttributeError):
        fixed.config = {}                                                  # frozen


def test_uniform_and_topk_results_redecide_without_sampling(monkeypatch):
    u = certlib.certify_uniform(DIGITS, IMAGE, n=16, progress=False)
    t = certlib.certify_topk(DIGITS, IMAGE, n=16, progress=False)
    monkeypatch.setattr(sampling.engine, "stream", lambda *a, **k: pytest.fail("re-deciding sampled"))
    assert u.redecide(eps=0.001).bound >= u.bound
    assert t.redecide(eps=0.0).overlap >= t.overlap
    for r in (u, t):
        assert r.overlay().shape == (32, 32, 4) and "<img" in r._repr_html_() and r.figure().data
        json.dumps(r.summary())


# ------------------------------------------------------------------------------------------ models, methods, images

def test_a_module_with_normalisation_and_a_numpy_image():
    net = TinyNet().train()
    r = certlib.certify_pixels(net, _image(), method="gradcam", normalize=((0.5,) * 3, (0.25,) * 3),
                               k_percents=(25,), **QUICK)
    assert r.classes.shape == (1, 24, 24) and r.config["model"]["cam_layer"] == "net.features"
    assert r.prediction is not None and 0 <= r.config["target"] < 4
    assert net.training and all(p.requires_grad for p in net.parameters())       # the module is put back


def test_a_captum_object_certifies_what_the_same_method_key_does():
    from captum.attr import Saliency

    net = TinyNet()
    by_key = certlib.certify_pixels(net, _image(), method="gradient", **QUICK)
    by_object = certlib.certify_pixels(net, _image(), method=Saliency(net), **QUICK)
    assert np.array_equal(by_key.counts.estimation_ones, by_object.counts.estimation_ones)
    assert by_object.config["method"] == "Saliency"


def test_torchcam_and_grad_cam_convention_objects():
    from torchcam.methods import GradCAM

    net = TinyNet()
    r = certlib.certify_pixels(net, _image(), method=GradCAM(net, "features"), **QUICK)
    assert r.classes.shape == (3, 24, 24) and r.config["method"] == "GradCAM"

    class GradCamLike:           # pytorch-grad-cam's call convention: cam(input_tensor=..., targets=[...]) -> numpy
        def __init__(self, model):
            self.model = model

        def __call__(self, input_tensor, targets):
            out = self.model(input_tensor)
            score = sum(t(o) for t, o in zip(targets, out))
            grad, = torch.autograd.grad(score, input_tensor)
            return grad.abs().sum(1).numpy()

    r = certlib.certify_pixels(net, _image(), method=GradCamLike(net), **QUICK)
    assert r.config["method"] == "GradCamLike" and (r.classes != -1).any()


def test_an_attribution_callable_needs_a_target_and_has_no_prediction():
    def attribute(x, target):
        return x.sum(1) * (target + 1)

    r = certlib.certify_pixels(attribute, torch.rand(3, 16, 16), target=1, k_percents=50, **QUICK)
    assert r.classes.shape == (16, 16) and r.prediction is None and (r.classes != -1).any()
    with pytest.raises(ModelError, match="target"):
        certlib.certify_pixels(attribute, torch.rand(3, 16, 16), **QUICK)


def test_a_timm_model_built_offline():
    timm = pytest.importorskip("timm")
    net = timm.create_model("test_resnet", pretrained=False, num_classes=5)
    r = certlib.certify_pixels(net, "chelsea", method="grad", k_percents=(25,), n=64, n0=8, progress=False,
                               input_size=(64, 64))
    assert r.input.shape == (3, 64, 64) and r.config["model"]["class"] == "ResNet"


def test_resnet18_with_random_weights_on_chelsea():
    torchvision = pytest.importorskip("torchvision")
    r = certlib.certify_pixels(torchvision.models.resnet18(), "chelsea", method="gradient", n=64, n0=8,
                               k_percents=5, progress=False)
    s = r.summary()
    assert s["image"] == "photo:chelsea" and s["method"] == "grad" and r.classes.shape == (224, 224)
    assert r.input.shape == (3, 224, 224) and s["prediction"] is not None


def test_images_by_key_path_and_pil(tmp_path):
    from PIL import Image

    Image.fromarray(_image()).save(tmp_path / "x.png")
    from_path = certlib.certify_pixels(TinyNet(), tmp_path / "x.png", method="grad", **QUICK)
    from_pil = certlib.certify_pixels(TinyNet(), Image.open(tmp_path / "x.png"), method="grad", **QUICK)
    assert np.array_equal(from_path.input, from_pil.input)
    assert np.array_equal(from_path.classes, from_pil.classes)
    with pytest.raises(ImageError, match="nope.png"):
        certlib.certify_pixels(TinyNet(), tmp_path / "nope.png", **QUICK)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ImageError):
        certlib.certify_pixels(TinyNet(), tmp_path / "bad.png", **QUICK)


def test_registry_model_without_weights_says_how():
    from certlib.models import registry as models

    if models.get_spec("resnet18").available:
        pytest.skip("resnet18's ImageNet weights are on this machine")
    with pytest.raises(ModelError, match=r"torchvision\.models\.resnet18\(\)"):
        certlib.certify_pixels("resnet18", "chelsea", **QUICK)


@pytest.mark.parametrize("kwargs, named", [
    (dict(sigma=0.0), "sigma"), (dict(tau=1.0), "tau"), (dict(tau=0.4), "tau"), (dict(alpha=0.0), "alpha"),
    (dict(n=10), "n = 10"), (dict(method="nonsense"), "nonsense"), (dict(target=10), "target class 10"),
    (dict(mode="sometimes"), "mode"), (dict(k_percents=(0,)), "k_percents"), (dict(batch_size=0), "batch_size"),
])
def test_bad_arguments_name_themselves(kwargs, named):
    with pytest.raises(ValueError, match=named):
        certlib.certify_pixels(DIGITS, IMAGE, **{**QUICK, **kwargs})


def test_too_few_samples_for_the_pixel_count_warns_and_the_verdict_says_so():
    with pytest.warns(UserWarning, match="no pixel can be certified"):
        r = certlib.certify_pixels(DIGITS, IMAGE, n=24, n0=8, alpha=0.01, progress=False)
    assert (r.classes == -1).all() and r.verdict().amber


def test_import_certlib_stays_light():
    code = "import sys, certlib; print('torch' in sys.modules, callable(certlib.certify_pixels))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.split() == ["False", "True"]


def test_a_vit_with_gradcam_on_its_patch_tokens():
    timm = pytest.importorskip("timm")
    net = timm.create_model("test_vit", pretrained=False, num_classes=3)
    r = certlib.certify_pixels(net, "chelsea", method="gradcam", k_percents=25, **QUICK)
    assert r.config["model"]["arch"] == "vit" and r.classes.shape == r.input.shape[1:]


def test_pixel_results_carry_every_pixels_radius_and_keep_it_through_save_and_load(tmp_path):
    """Issue #29: `.radii` and `.radius_curve()` come from the stored counts (fixed n: Clopper–Pearson at α/m;
    anytime: the trajectory's bounds), equal those of certlib.pixel.radius, and survive a round trip."""
    from certlib.pixel import radius as pixel_radius

    for mode in ("fixed", "anytime"):
        r = certlib.certify_pixels(DIGITS, IMAGE, mode=mode, **QUICK)
        direct = (pixel_radius.fixed_n_radii(r.counts, r.certificate.alpha) if mode == "fixed"
                  else pixel_radius.trajectory_radii(r.trajectory, r.certificate.alpha, r.k_percents))
        np.testing.assert_array_equal(r.radii.radii, direct.radii)
        curve = r.radius_curve([0.0, r.radius])
        assert curve["top"].shape == (2, len(r.k_percents))
        assert r.summary()["radii"].keys() == {str(k) for k in r.k_percents}
        loaded = certlib.load(r.save(tmp_path / f"radii_{mode}"))
        np.testing.assert_array_equal(loaded.radii.radii, r.radii.radii)
        assert r.figure("radius_curve").data and r.figure("radius_map").data


def test_a_module_is_wrapped_again_only_when_its_weights_change():
    from certlib.api import sources

    net = TinyNet()
    first = sources.cached_module_model(net, np.zeros((3, 24, 24), np.float32))
    assert sources.cached_module_model(net, np.zeros((3, 24, 24), np.float32)) is first
    with torch.no_grad():
        net.fc.bias.add_(1.0)                                   # an in-place update, as an optimiser step
    changed = sources.cached_module_model(net, np.zeros((3, 24, 24), np.float32))
    assert changed is not first and changed.weights_sha256 != first.weights_sha256
