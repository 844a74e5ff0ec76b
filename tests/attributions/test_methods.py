"""The method registry and the 12 attribution methods (certlib.attributions.methods).

The bundled 32x32 digits CNN runs the full matrix (every method: shape, dtype, determinism, batched == per-copy);
torchvision ResNet-18 / VGG-11 with random weights at 64x64 check the architecture-specific paths (captum's guided
backprop with in-place ReLUs, zennit canonizers, the fx tail). The CAM family is checked against torchcam where the
formulas agree and against independent per-sample implementations (plain autograd on a hand-split network) where
they do not.
"""
import copy
import dataclasses
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from certlib.attributions import _utils as _attr_utils, methods as attributions
from certlib.data import digits as digits_data, images
from certlib.models import registry as models
from certlib.errors import CertlibError

ALL = list(attributions.METHODS)
TARGET = 3
# The matrix runs RISE with 100 masks instead of 500 to keep the suite fast; test_rise_defaults runs the default.
MATRIX_PARAMS = {"rise": {"n_masks": 100}}

# captum announces its ReLU hooks on every call; certlib filters that at import, but pytest resets filters per test.
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")


# ------------------------------------------------------------------------------------------------ registry

def test_the_papers_twelve_methods_in_three_families():
    by_family = {f: [m for m in attributions.METHODS.values() if m.family == f] for f in attributions.FAMILIES}
    assert len(attributions.METHODS) == 12
    assert [len(by_family[f]) for f in attributions.FAMILIES] == [5, 2, 5]
    assert set(attributions.ATTRIBUTIONS) == set(attributions.METHODS)


def test_every_method_applies_to_the_bundled_cnn():
    spec = models.get_spec("digits_sigma0.25")
    assert all(attributions.unavailable_reason(k, spec) is None for k in attributions.METHODS)


def test_cam_lrp_and_guided_backprop_are_unavailable_on_vit_with_the_reason():
    # The other CAM methods run on ViT's patch-token grid (tests/models/test_vit.py).
    spec = models.get_spec("vit_b_16")
    reasons = {k: attributions.unavailable_reason(k, spec) for k in attributions.METHODS}
    blocked = {k for k, r in reasons.items() if r}
    assert blocked == {"cam", "lrp", "guided_backprop"}
    assert "vision transformer" in reasons["cam"]
    assert "not available for Vision Transformers" in reasons["lrp"]
    assert "GELU" in reasons["guided_backprop"]


def test_cam_is_unavailable_on_vgg_but_the_gradient_cams_are_not():
    spec = models.get_spec("vgg11")
    reasons = {k: attributions.unavailable_reason(k, spec) for k in attributions.METHODS}
    assert {k for k, r in reasons.items() if r} == {"cam"}
    assert "global average pooling" in reasons["cam"]


def test_resnets_support_all_twelve():
    for key in ("resnet18", "resnet50", "wide_resnet50_2", "resnet152"):
        spec = models.get_spec(key)
        assert all(attributions.unavailable_reason(k, spec) is None for k in ALL), key


def test_torchscript_uploads_block_layer_methods():
    spec = dataclasses.replace(models.get_spec("digits_sigma0.25"), arch="torchscript", cam_layer=None)
    blocked = {k for k in ALL if attributions.unavailable_reason(k, spec)}
    assert blocked == {"lrp", "guided_backprop", "cam", "gradcam", "gradcam_pp", "ablationcam", "layercam"}


def test_gradient_needs_are_recorded():
    needs = {k for k, m in attributions.METHODS.items() if m.needs_gradients}
    assert needs == {"grad", "guided_backprop", "input_x_gradient", "integrated_gradients", "lrp", "gradcam",
                     "gradcam_pp", "layercam"}
    assert {k for k, m in attributions.METHODS.items() if m.randomised} == {"rise"}


def test_unknown_method_is_named():
    with pytest.raises(CertlibError, match="unknown attribution method 'shap'"):
        attributions.get_method("shap")


def test_unknown_parameter_and_inapplicable_model_are_refused(digits):
    with pytest.raises(CertlibError, match="rise takes no parameter 'masks'"):
        attributions.make_attribution("rise", digits, masks=3)
    vgg = models.LoadedModel(spec=models.get_spec("vgg11"), module=torch.nn.Identity(), weights_sha256="-")
    with pytest.raises(CertlibError, match="global average pooling"):
        attributions.make_attribution("cam", vgg)
    assert attributions.method_params("integrated_gradients")["n_steps"] == 20


def test_bad_inputs_are_named(digits):
    method = attributions.make_attribution("grad", digits)
    with pytest.raises(CertlibError, match="channels"):
        method.attribute(torch.rand(1, 3, 32, 32), 0)
    with pytest.raises(CertlibError, match="out of range"):
        method.attribute(torch.rand(1, 1, 32, 32), 10)
    with pytest.raises(CertlibError, match="one per input"):
        method.attribute(torch.rand(2, 1, 32, 32), [1, 2, 3])
    with pytest.raises(CertlibError, match=r"\[B,C,H,W\]"):
        method.attribute(torch.rand(1, 32, 32), 0)


# ------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def digits():
    return models.load_model("digits_sigma0.25")


@pytest.fixture(scope="module")
def digit():
    """The first held-out 3, [1,1,32,32]; the model classifies it correctly, so target maps are meaningful."""
    imgs, labels = digits_data.load_split("held_out")
    x = torch.from_numpy(imgs[labels == TARGET][:1])
    with torch.no_grad():
        assert int(models.load_model("digits_sigma0.25").module(x).argmax()) == TARGET
    return x


@pytest.fixture(scope="module")
def copies(digit):
    """Four noisy copies (σ = 0.25, independent noise, no clipping) of the digit, as the sampler makes them."""
    gen = torch.Generator().manual_seed(1)
    return digit + 0.25 * torch.randn((4, *digit.shape[1:]), generator=gen)


@pytest.fixture(scope="module")
def batched(digits, copies):
    return {k: attributions.attribute(digits, copies, TARGET, k, **MATRIX_PARAMS.get(k, {})) for k in ALL}


def _resnet18():
    net = torchvision.models.resnet18(weights=None).eval()
    module = models.PixelSpaceModel(net, models.IMAGENET_MEAN, models.IMAGENET_STD).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    spec = dataclasses.replace(models.get_spec("resnet18"), input_size=(64, 64))
    return models.LoadedModel(spec=spec, module=module, weights_sha256="random")


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return _resnet18()


def _hooks(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in module.modules())


# ------------------------------------------------------------------------------------- the matrix, digits CNN

@pytest.mark.parametrize("method", ALL)
def test_shape_dtype_finite_nonzero(batched, copies, method):
    out = batched[method]
    assert out.shape == (4, 32, 32)
    assert out.dtype == torch.float32
    assert out.device == copies.device
    assert torch.isfinite(out).all()
    assert not out.requires_grad
    for row in out:  # every copy gets a non-trivial map
        assert float(row.abs().max()) > 0


@pytest.mark.parametrize("method", ALL)
def test_deterministic_across_calls(digits, copies, batched, method):
    again = attributions.make_attribution(method, digits, seed=0, **MATRIX_PARAMS.get(method, {})).attribute(
        copies, TARGET)
    assert torch.equal(again, batched[method])


@pytest.mark.parametrize("method", ALL)
def test_batched_equals_per_copy(digits, copies, batched, method):
    params = MATRIX_PARAMS.get(method, {})
    one_by_one = torch.cat([attributions.attribute(digits, copies[i:i + 1], TARGET, method, **params)
                            for i in range(4)])
    scale = float(batched[method].abs().max())
    torch.testing.assert_close(batched[method], one_by_one, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("method", ["grad", "lrp", "gradcam_pp", "ablationcam"])
def test_one_target_per_copy(digits, copies, method):
    targets = torch.tensor([3, 1, 7, 3])
    together = attributions.attribute(digits, copies, targets, method)
    alone = torch.cat([attributions.attribute(digits, copies[i:i + 1], int(t), method) for i, t in enumerate(targets)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5 * float(together.abs().max()))


def test_grad_is_nonnegative_and_the_rest_signed(batched):
    assert (batched["grad"] >= 0).all()
    for k in ("input_x_gradient", "integrated_gradients", "occlusion"):
        assert (batched[k] < 0).any() and (batched[k] > 0).any(), k
    for k in ("gradcam", "gradcam_pp", "ablationcam", "layercam"):
        assert (batched[k] >= 0).all(), k  # ReLU'd, as in their papers


@pytest.mark.parametrize("method", ALL)
def test_methods_hold_the_model_lock_and_leave_no_hooks(digits, digit, method):
    seen = []
    handle = digits.module.register_forward_hook(lambda *_: seen.append(digits.lock.locked()))
    try:
        attributions.attribute(digits, digit, TARGET, method, **({"n_masks": 8} if method == "rise" else {}))
    finally:
        handle.remove()
    assert seen and all(seen)
    assert not digits.lock.locked()
    assert _hooks(digits.module) == 0


def test_a_call_waits_for_the_lock(digits, digit):
    method = attributions.make_attribution("lrp", digits)
    done = threading.Event()
    with digits.lock:
        worker = threading.Thread(target=lambda: (method.attribute(digit, TARGET), done.set()))
        worker.start()
        assert not done.wait(0.3)  # blocked while another holder has the model
    worker.join(10)
    assert done.is_set()


def test_input_tensor_is_not_modified(digits, copies):
    x = copies.clone()
    for k in ("grad", "lrp", "layercam", "rise"):
        attributions.attribute(digits, x, TARGET, k, **({"n_masks": 8} if k == "rise" else {}))
    assert torch.equal(x, copies) and not x.requires_grad


# ---------------------------------------------------------------------------------------------------- gradient

def test_gradient_methods_match_plain_autograd(digits, copies, batched):
    x = copies.clone().requires_grad_(True)
    g, = torch.autograd.grad(digits.module(x)[:, TARGET].sum(), x)
    torch.testing.assert_close(batched["grad"], g.abs().sum(1))
    torch.testing.assert_close(batched["input_x_gradient"], (copies * g).sum(1))


@pytest.mark.parametrize("which", ["digits", "resnet"])
def test_saliency_and_input_x_gradient_equal_captums(digits, resnet, copies, which):
    from captum.attr import InputXGradient, Saliency

    model = digits if which == "digits" else resnet
    x = copies if which == "digits" else torch.rand((3, 3, 64, 64), generator=torch.Generator().manual_seed(4))
    targets = [TARGET, 1, 7][:x.shape[0]] if which == "resnet" else TARGET
    ours = {k: attributions.attribute(model, x, targets, k) for k in ("grad", "input_x_gradient")}
    torch.testing.assert_close(ours["grad"], Saliency(model.module).attribute(x, target=targets, abs=True).sum(1))
    torch.testing.assert_close(ours["input_x_gradient"],
                               InputXGradient(model.module).attribute(x, target=targets).sum(1))


def test_integrated_gradients_completeness(digits, copies, batched):
    with torch.no_grad():
        gap = digits.module(copies)[:, TARGET] - digits.module(torch.zeros_like(copies))[:, TARGET]
    torch.testing.assert_close(batched["integrated_gradients"].sum((1, 2)), gap, rtol=0.05, atol=0.05)


def test_integrated_gradients_chunking_does_not_change_the_result(digits, copies, batched):
    # Different pass sizes make the CPU backend pick different conv algorithms: differences ~1e-4 of the scale
    # (measured: the small-pass result is as close to a float64 reference as the one-pass result).
    small = attributions.attribute(digits, copies, TARGET, "integrated_gradients", rows_per_pass=3)
    scale = float(batched["integrated_gradients"].abs().max())
    torch.testing.assert_close(small, batched["integrated_gradients"], rtol=1e-3, atol=1e-3 * scale)


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return g.clamp(min=0) * (x > 0)


class _GuidedReLUModule(torch.nn.Module):
    def forward(self, x):
        return _GuidedReLU.apply(x)


def _guided_copy(module):
    """A deep copy with every nn.ReLU replaced by an explicit guided ReLU (the independent reference)."""
    clone = copy.deepcopy(module)
    for parent in clone.modules():
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.ReLU):
                setattr(parent, name, _GuidedReLUModule())
    return clone


def test_guided_backprop_on_resnet18_with_inplace_relus(resnet):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    out = attributions.attribute(resnet, x, 5, "guided_backprop")
    xr = x.clone().requires_grad_(True)
    ref, = torch.autograd.grad(_guided_copy(resnet.module)(xr)[:, 5].sum(), xr)
    torch.testing.assert_close(out, ref.sum(1), rtol=1e-4, atol=1e-7)
    plain = attributions.attribute(resnet, x, 5, "input_x_gradient")  # and it is not just the gradient
    assert not torch.allclose(out * x.sum(1), plain)
    assert _hooks(resnet.module) == 0


def test_guided_backprop_matches_reference_on_digits(digits, copies, batched):
    xr = copies.clone().requires_grad_(True)
    ref, = torch.autograd.grad(_guided_copy(digits.module)(xr)[:, TARGET].sum(), xr)
    torch.testing.assert_close(batched["guided_backprop"], ref.sum(1))


def test_lrp_epsilon_conserves_the_target_logit_in_pixel_space(digits, copies):
    # ε rule everywhere and no biases: relevance sums to the logit. The digits CNN normalises with std 0.32
    # inside, so a map read off ∂/∂x (instead of at the first layer's input) would sum to logit / 0.32.
    out = attributions.attribute(digits, copies, TARGET, "lrp", composite="epsilon", zero_bias=True)
    with torch.no_grad():
        logit = digits.module(copies)[:, TARGET]
    torch.testing.assert_close(out.sum((1, 2)), logit, rtol=1e-2, atol=1e-3)


def test_lrp_box_bounds_are_the_normalised_pixel_range(digits, digit):
    method = attributions.make_attribution("lrp", digits)
    conv = _attr_utils.first_conv(digits.module)
    low, high = method._bounds(conv, digit)
    m, s = float(digits.module.mean), float(digits.module.std)
    torch.testing.assert_close(low, torch.full_like(low, (0 - m) / s))
    torch.testing.assert_close(high, torch.full_like(high, (1 - m) / s))


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("model_name", ["digits", "resnet"])
def test_lrp_leaves_the_model_unchanged(request, model_name):
    model = request.getfixturevalue(model_name)
    size, c = (32, 1) if model_name == "digits" else (64, 3)
    x = torch.rand(2, c, size, size, generator=torch.Generator().manual_seed(3))
    state = _state(model.module)
    with torch.no_grad():
        before = model.module(x)
    out = attributions.attribute(model, x, 1, "lrp")
    with torch.no_grad():
        after = model.module(x)
    assert torch.equal(before, after)
    assert all(torch.equal(state[k], v) for k, v in model.module.state_dict().items())
    assert _hooks(model.module) == 0
    assert torch.isfinite(out).all() and float(out.abs().max()) > 0


# ------------------------------------------------------------------------------------------------ perturbation

def test_rise_masks_are_fixed_by_seed_and_size(digits):
    a = attributions.make_attribution("rise", digits, seed=0).masks_for(32, 32)
    b = attributions.make_attribution("rise", digits, seed=0).masks_for(32, 32)
    c = attributions.make_attribution("rise", digits, seed=1).masks_for(32, 32)
    assert a.shape == (500, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    assert abs(float(a.mean()) - 0.1) < 0.02
    assert attributions.make_attribution("rise", digits).masks_for(96, 96).shape[0] == 1000


def test_rise_seed_changes_the_map(digits, copies, batched):
    other = attributions.attribute(digits, copies, TARGET, "rise", seed=1, **MATRIX_PARAMS["rise"])
    assert not torch.allclose(other, batched["rise"])


def test_rise_defaults(digits, digit):
    method = attributions.make_attribution("rise", digits)
    out = method.attribute(digit, TARGET)
    assert out.shape == (1, 32, 32) and torch.isfinite(out).all()
    assert method.masks_for(32, 32).shape[0] == 500 and method.grid == 6 and method.p_keep == 0.1
    # The map is a weighted mean of masks with weights in [0, 1]: within [0, 1/p], here well inside.
    assert 0 <= float(out.min()) and float(out.max()) < 1 / 0.1


def test_rise_matches_the_formula(digits, copies):
    method = attributions.make_attribution("rise", digits, seed=5, n_masks=20, rows_per_pass=7)
    out = method.attribute(copies[:2], TARGET)
    masks = method.masks_for(32, 32)
    ref = torch.zeros(2, 32, 32)
    with torch.no_grad():
        for m in masks:
            p = torch.softmax(digits.module(copies[:2] * m), dim=1)[:, TARGET]
            ref += p[:, None, None] * m
    torch.testing.assert_close(out, ref / (20 * 0.1))


def test_occlusion_geometry_scales_from_224():
    assert _attr_utils.occlusion_geometry(224, 224) == (16, 8)
    assert _attr_utils.occlusion_geometry(32, 32) == (4, 2)
    assert _attr_utils.occlusion_geometry(64, 64) == (4, 2)
    assert _attr_utils.occlusion_geometry(96, 96) == (6, 3)


def test_occlusion_matches_a_sliding_window_loop(digits, copies, batched):
    x = copies[:1]
    corners = [(r, c) for r in range(0, 29, 2) for c in range(0, 29, 2)]  # 4x4 windows, stride 2, at 32x32
    occluded = x.repeat(len(corners), 1, 1, 1)
    for i, (r, c) in enumerate(corners):
        occluded[i, :, r:r + 4, c:c + 4] = 0
    with torch.no_grad():
        drops = digits.module(x)[0, TARGET] - digits.module(occluded)[:, TARGET]
    total, count = torch.zeros(32, 32), torch.zeros(32, 32)
    for (r, c), d in zip(corners, drops):
        total[r:r + 4, c:c + 4] += d
        count[r:r + 4, c:c + 4] += 1
    torch.testing.assert_close(batched["occlusion"][0], total / count, rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------------------------------------------- activation

def _split_digits(module):
    """The digits CNN by hand: (pixels -> features.<cut-1> output, that output -> logits); no hooks involved."""
    def head(x, cut):
        return module.features[:cut]((x - module.mean) / module.std)

    def tail(a, cut):
        return module.classifier(module.pool(module.features[cut:](a)).flatten(1))
    return head, tail


def _reference_cams(module, x, target, cut):
    """Per-sample GradCAM++, LayerCAM, AblationCAM and CAM at features[:cut] with plain autograd (no hooks)."""
    head, tail = _split_digits(module)
    out = {k: [] for k in ("gradcam_pp", "layercam", "ablationcam", "cam")}
    for xi in x:
        a = head(xi[None], cut).detach().requires_grad_(True)
        y = tail(a, cut)[0, target]
        g, = torch.autograd.grad(y, a)
        a, g = a.detach()[0], g[0]                                                  # [K,h,w]
        alpha = torch.zeros_like(g)
        for k in range(a.shape[0]):
            s = a[k].sum()
            num, den = g[k] ** 2, 2 * g[k] ** 2 + s * g[k] ** 3
            alpha[k] = torch.where(den != 0, num / torch.where(den != 0, den, 1.0), 0.0)
        w = (alpha * g.clamp(min=0)).sum((1, 2))
        out["gradcam_pp"].append(F.relu((w[:, None, None] * a).sum(0)))
        out["layercam"].append(F.relu((g.clamp(min=0) * a).sum(0)))
        with torch.no_grad():
            drops = []
            for k in range(a.shape[0]):
                ablated = a.clone()
                ablated[k] = 0
                drops.append(y.detach() - tail(ablated[None], cut)[0, target])
            w = torch.stack(drops) / y.detach()
            out["ablationcam"].append(F.relu((w[:, None, None] * a).sum(0)))
            if a.shape[0] == module.classifier.in_features:
                out["cam"].append((module.classifier.weight[target][:, None, None] * a).sum(0))
    return {k: F.interpolate(torch.stack(v)[:, None], size=x.shape[-2:], mode="bilinear",
                             align_corners=False)[:, 0] for k, v in out.items() if v}


def test_cam_family_matches_independent_per_sample_code_at_the_cam_layer(digits, copies, batched):
    ref = _reference_cams(digits.module, copies, TARGET, cut=12)  # features.11 = the spec's cam_layer
    for k in ref:
        torch.testing.assert_close(batched[k], ref[k], rtol=1e-4, atol=1e-5 * float(ref[k].abs().max()))


def test_gradient_cams_match_independent_code_at_an_inner_layer(digits, copies):
    # At features.9 (8x8, followed by max-pool and a conv) gradients vary over space, so GradCAM++'s Σ_ab A_ab
    # differs from torchcam's Σ_ab A_ab g_ab³: this is where the paper's formula is checked.
    inner = dataclasses.replace(digits.spec, cam_layer="features.9")
    model = models.LoadedModel(spec=inner, module=digits.module, weights_sha256=digits.weights_sha256)
    ref = _reference_cams(digits.module, copies, TARGET, cut=10)
    for k in ("gradcam_pp", "layercam", "ablationcam"):
        out = attributions.attribute(model, copies, TARGET, k)
        torch.testing.assert_close(out, ref[k], rtol=1e-4, atol=1e-5 * float(ref[k].abs().max()))


def test_ablationcam_tail_and_full_forward_paths_agree(digits, copies, batched):
    slow = attributions.attribute(digits, copies[:2], TARGET, "ablationcam", use_tail=False, rows_per_pass=50)
    fast = batched["ablationcam"][:2]
    torch.testing.assert_close(slow, fast, rtol=1e-4, atol=1e-5 * float(slow.abs().max()))


def test_cam_family_matches_torchcam_per_sample(digits, copies, batched):
    # GradCAM++ is not compared: torchcam 0.5.0's GradCAMpp never applies its α denominator (it divides a
    # boolean-indexed copy in place), so its weights are Σ g²·ReLU(g); the independent reference above checks ours.
    methods = pytest.importorskip("torchcam.methods")
    makers = {
        "cam": lambda m: methods.CAM(m, target_layer="features.11", fc_layer="classifier", input_shape=(1, 32, 32)),
        "gradcam": lambda m: methods.GradCAM(m, target_layer="features.11", input_shape=(1, 32, 32)),
        "layercam": lambda m: methods.LayerCAM(m, target_layer="features.11", input_shape=(1, 32, 32)),
    }
    module = copy.deepcopy(digits.module)  # torchcam keeps hooks on the model it wraps
    for key, make in makers.items():
        extractor = make(module)
        refs = []
        for xi in copies:
            xi = xi[None].clone().requires_grad_(key != "cam")
            with torch.set_grad_enabled(key != "cam"):
                scores = module(xi)
                refs.append(extractor(TARGET, scores, normalized=False)[0].detach())
        extractor.remove_hooks()
        ref = _attr_utils.upsample(torch.cat(refs), (32, 32))
        torch.testing.assert_close(batched[key], ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()), msg=key)


def test_cam_family_on_a_64x64_grid(digits):
    entry = images.grid_gallery(1)[0]
    x = torch.from_numpy(np.array(entry.pixels))[None]
    with torch.no_grad():
        predicted = int(digits.module(x)[0].argmax())
    cell = entry.cell_labels.index(predicted)  # the model's top class is one of the four digits
    for k in ("cam", "gradcam", "gradcam_pp", "ablationcam", "layercam"):
        out = attributions.attribute(digits, x, predicted, k)[0]
        assert out.shape == (64, 64) and torch.isfinite(out).all(), k
        quadrants = [out[:32, :32], out[:32, 32:], out[32:, :32], out[32:, 32:]]
        mass = [float(q.clamp(min=0).mean()) for q in quadrants]
        assert int(np.argmax(mass)) == cell, (k, mass)  # the class's own cell lights up


@pytest.mark.parametrize("method", ["grad", "integrated_gradients", "lrp", "occlusion", "cam", "gradcam",
                                    "gradcam_pp", "ablationcam", "layercam"])
def test_resnet18_batched_equals_per_copy(resnet, method):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    params = {"occlusion": {"patch": 16, "stride": 16}, "integrated_gradients": {"n_steps": 5}}.get(method, {})
    together = attributions.attribute(resnet, x, 7, method, **params)
    alone = torch.cat([attributions.attribute(resnet, x[i:i + 1], 7, method, **params) for i in range(2)])
    assert together.shape == (2, 64, 64) and torch.isfinite(together).all()
    torch.testing.assert_close(together, alone, rtol=1e-3, atol=1e-5 * float(together.abs().max()) + 1e-12)


def test_vgg11_lrp_runs_batch_exact_and_leaves_the_model_unchanged():
    torch.manual_seed(0)
    net = torchvision.models.vgg11(weights=None).eval()
    module = models.PixelSpaceModel(net, models.IMAGENET_MEAN, models.IMAGENET_STD).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    model = models.LoadedModel(spec=models.get_spec("vgg11"), module=module, weights_sha256="random")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = module(x)
    together = attributions.attribute(model, x, 2, "lrp")
    alone = torch.cat([attributions.attribute(model, x[i:i + 1], 2, "lrp") for i in range(2)])
    torch.testing.assert_close(together, alone, rtol=1e-3, atol=1e-5 * float(together.abs().max()) + 1e-12)
    # AblationCAM's fast path can cut VGG after its CAM layer (running it costs 512 MLP passes: not here).
    assert _attr_utils.layer_tail(module, "net.features.19") is not None
    with torch.no_grad():
        assert torch.equal(before, module(x))
    assert _hooks(module) == 0
