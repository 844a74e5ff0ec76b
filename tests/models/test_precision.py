"""bf16 autocast (+ channels_last on CUDA) stays within tolerance of fp32, and is part of a result's identity;
channels_last on the CPU (same fp32 math) agrees with NCHW up to float rounding, bounded below.

Tolerance, per method, on noisy copies of a bundled digit: top-K% masks agree with fp32 on >= 99% of pixels for
every K, and the mean IoU of the top-10% sets is >= 0.95. The CPU runs the same bf16 numerics (bf16 operands, fp32
accumulation) as a GPU's tensor cores; the CUDA test repeats the check on ResNet-18 when a GPU is present.
"""
import numpy as np
import pytest
import torch

from certlib.attributions import methods as attributions
from certlib.models import registry as models, precision
from certlib.pixel import cert as pixel_cert
from certlib.smoothing import sampling
from certlib.errors import CertlibError
from certlib.data.images import digit_gallery, prepare_image

KS = (5.0, 10.0, 25.0, 50.0)
SLOW = {"rise", "integrated_gradients"}   # forward-heavy: fewer copies (and masks) keep the test quick


@pytest.fixture(scope="module")
def digits_pair():
    # The numerics are checked on any CPU: one without native bf16 (where bf16 is not offered) emulates it.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(precision, "cpu_bf16_reason", lambda: None)
        return models.load_model("digits_sigma0.25"), models.load_model("digits_sigma0.25", precision="bf16")


@pytest.mark.parametrize("flags, offered", [({"avx512f", "avx512_bf16"}, True), ({"amx_bf16", "amx_tile"}, True),
                                            ({"avx512f", "avx2"}, False), (set(), False)])
def test_bf16_is_offered_on_cpus_with_native_bf16_only(monkeypatch, flags, offered):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: flags)
    assert (precision.cpu_bf16_reason() is None) == offered
    if offered:
        assert models.load_model("digits_sigma0.25", precision="bf16").compute_key == "cpu+bf16"
    else:
        with pytest.raises(CertlibError, match="precision 'bf16' on the CPU is not offered here: .*AVX-512-BF16"):
            models.load_model("digits_sigma0.25", precision="bf16")
    assert precision.check_precision_on("cpu", "fp32") == "fp32"


def _noisy(x, copies, seed=1):
    return x + 0.25 * torch.randn((copies, *x.shape[1:]), generator=torch.Generator().manual_seed(seed))


def _agreement(fp32_maps, bf16_maps):
    a, b = pixel_cert.top_k_masks(fp32_maps, KS), pixel_cert.top_k_masks(bf16_maps, KS)
    agree = (a == b).float().mean(dim=(1, 2, 3))                     # per K
    i10 = KS.index(10.0)
    inter = (a[i10] & b[i10]).sum((1, 2)).float()
    union = (a[i10] | b[i10]).sum((1, 2)).float()
    iou = (inter[union > 0] / union[union > 0]).mean()
    return agree, iou


def _params(method):
    return {"n_masks": 100} if method == "rise" else {}


@pytest.mark.parametrize("method", [m for m in attributions.METHODS if m not in precision.FP32_ONLY])
def test_bf16_maps_stay_within_tolerance_of_fp32(digits_pair, method):
    fp32, bf16 = digits_pair
    x = prepare_image(digit_gallery()[3].pixels, 1, (32, 32), True)
    target = int(fp32.predict_proba(x).argmax())
    xb = _noisy(x, 4 if method in SLOW else 32)
    ref = attributions.make_attribution(method, fp32, **_params(method)).attribute(xb, target)
    low = attributions.make_attribution(method, bf16, **_params(method)).attribute(xb, target)
    assert low.dtype == torch.float32 and low.shape == ref.shape
    assert not torch.equal(low, ref), "bf16 autocast did not take effect"
    agree, iou = _agreement(ref, low)
    assert bool((agree >= 0.99).all()), f"{method}: top-K agreement per K {agree.tolist()}"
    assert float(iou) >= 0.95, f"{method}: mean top-10% IoU {float(iou):.3f}"


@pytest.mark.parametrize("method", sorted(precision.FP32_ONLY))
def test_methods_outside_the_tolerance_run_in_fp32_under_a_bf16_model(digits_pair, method):
    fp32, bf16 = digits_pair
    x = prepare_image(digit_gallery()[3].pixels, 1, (32, 32), True)
    xb = _noisy(x, 2)
    assert torch.equal(attributions.make_attribution(method, bf16).attribute(xb, 3),
                       attributions.make_attribution(method, fp32).attribute(xb, 3))


def test_bf16_certificate_matches_fp32_on_most_pixels(digits_pair):
    fp32, bf16 = digits_pair
    x = prepare_image(digit_gallery()[0].pixels, 1, (32, 32), True)
    target = int(fp32.predict_proba(x).argmax())
    certs = []
    for model in (fp32, bf16):
        method = attributions.make_attribution("grad", model)
        counts = sampling.sample_topk_counts(lambda xb: method.attribute(xb, target), x, 0.25, 16, 128, seed=3)
        certs.append(pixel_cert.decide(counts.votes_for_mode, counts.modes, counts.n, 0.25, 0.75, 1e-2).classes)
    same = (certs[0] == certs[1]).mean()
    assert same >= 0.97, f"bf16 and fp32 certificates agree on {same:.3f} of pixel decisions"


def test_precision_is_part_of_the_result_key(digits_pair):
    fp32, bf16 = digits_pair
    assert (fp32.compute_key, bf16.compute_key) == ("cpu", "cpu+bf16")
    assert precision.compute_key("cuda", "bf16") == "cuda+bf16"


@pytest.mark.parametrize("bad", ["fp16", "BF16", None, 16])
def test_unknown_precision_is_refused(bad):
    with pytest.raises(CertlibError, match="precision must be one of"):
        precision.check_precision(bad)
    with pytest.raises(ValueError, match="precision"):
        models.load_model("digits_sigma0.25", precision=bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ["grad", "lrp", "gradcam"])
def test_bf16_channels_last_on_cuda_stays_within_tolerance(method):
    fp32 = models.load_random_init("resnet18", "cuda")
    bf16 = models.load_random_init("resnet18", "cuda", precision="bf16")
    assert next(bf16.module.parameters()).is_contiguous(memory_format=torch.channels_last) or method
    x = torch.rand((1, 3, 224, 224), generator=torch.Generator().manual_seed(0)).cuda()
    xb = x + 0.25 * torch.randn((16, 3, 224, 224), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    ref = attributions.make_attribution(method, fp32).attribute(xb, 3)
    low = attributions.make_attribution(method, bf16).attribute(xb, 3)
    agree, iou = _agreement(ref, low)
    assert bool((agree >= 0.99).all()) and float(iou) >= 0.95, (agree.tolist(), float(iou))


# ------------------------------------------------------------------------------------------------ channels_last

def _nchw_twin(model: models.LoadedModel) -> models.LoadedModel:
    """The same model with its weights back in NCHW: the run channels_last is checked against."""
    import copy
    import dataclasses
    import threading

    module = copy.deepcopy(model.module).to(memory_format=torch.contiguous_format)
    assert not precision.is_channels_last(module)
    return dataclasses.replace(model, module=module, lock=threading.Lock())


def _photo_input(model):
    from certlib.data import images

    spec = model.spec
    return images.prepare_image(images.get_image("photo:chelsea").pixels, 3, spec.input_size, spec.flexible_size,
                                spec.resize_size)


MAP_RTOL = 1e-3          # max |Δ map| / max |map|: float rounding (measured ≤ 4e-7, IG's 20 steps 1.4e-4)
MASK_DISAGREE = 1e-3     # share of top-K decisions of single maps that may flip on a near-tie (measured ≤ 5e-5)


@pytest.fixture(scope="module")
def lite0_pair():
    model = models.load_model("efficientnet_lite0")
    return model, _nchw_twin(model)


@pytest.fixture(scope="module")
def digits_layouts():
    model = models.load_model("digits_sigma0.25")
    return model, _nchw_twin(model)


def test_the_cpu_uses_channels_last_where_it_was_measured_faster(digits_layouts, lite0_pair):
    assert precision.is_channels_last(digits_layouts[0].module) and precision.is_channels_last(lite0_pair[0].module)
    assert precision.channels_last("cpu", "fp32", "efficientnet_lite")
    assert not precision.channels_last("cpu", "fp32", "vit") and not precision.channels_last("cpu", "fp32", None)
    assert precision.channels_last("cuda", "bf16", "vit") and not precision.channels_last("cuda", "fp32", "resnet")
    assert digits_layouts[0].compute_key == "cpu"      # a memory format, not a precision: same function, same key


def _maps_agree(model, twin, method, xb, target):
    got = attributions.make_attribution(method, model, **_params(method)).attribute(xb, target)
    ref = attributions.make_attribution(method, twin, **_params(method)).attribute(xb, target)
    rel = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
    disagree = float((pixel_cert.top_k_masks(got, sampling.DEFAULT_K_PERCENTS)
                      != pixel_cert.top_k_masks(ref, sampling.DEFAULT_K_PERCENTS)).float().mean())
    assert rel <= MAP_RTOL, f"{method}: maps differ by {rel:.2e} of their scale"
    assert disagree <= MASK_DISAGREE, f"{method}: {disagree:.2e} of top-K decisions differ"


@pytest.mark.parametrize("method", ["grad", "input_x_gradient", "guided_backprop", "lrp", "gradcam", "layercam",
                                    "integrated_gradients"])
def test_channels_last_maps_agree_with_nchw_on_digits(digits_layouts, method):
    model, twin = digits_layouts
    x = prepare_image(digit_gallery()[3].pixels, 1, (32, 32), True)
    _maps_agree(model, twin, method, _noisy(x, 4 if method in SLOW else 32), int(twin.predict_proba(x).argmax()))


@pytest.mark.parametrize("method", ["grad", "lrp", "gradcam"])
def test_channels_last_maps_agree_with_nchw_on_the_photo_model(lite0_pair, method):
    model, twin = lite0_pair
    x = _photo_input(model)
    _maps_agree(model, twin, method, _noisy(x, 2), int(twin.predict_proba(x).argmax()))


def _classes(model, method, x, n0, n, alpha):
    explainer = attributions.make_attribution(method, model)
    target = int(model.predict_proba(x).argmax())
    counts = sampling.sample_topk_counts(lambda xb: explainer.attribute(xb, target), x, 0.25, n0, n, seed=3,
                                         logits=explainer.logits_for)
    cert = pixel_cert.decide(counts.votes_for_mode, counts.modes, counts.n, 0.25, 0.75, alpha)
    return cert.classes, counts


@pytest.mark.parametrize("method", ["grad", "lrp", "gradcam"])
def test_channels_last_certificates_equal_nchw_up_to_rare_ties(digits_layouts, method):
    """Same seed, same noise: the certified classes of the two layouts may differ only where a vote moved on a
    near-tie of two float-rounded values (bounded: ≤ 0.2% of the pixel decisions), and the predictions' votes agree."""
    x = prepare_image(digit_gallery()[0].pixels, 1, (32, 32), True)
    (got, c1), (ref, c2) = (_classes(m, method, x, 16, 128, 1e-2) for m in digits_layouts)
    assert float((got != ref).mean()) <= 2e-3
    flips = np.abs(c1.estimation_ones.astype(int) - c2.estimation_ones).sum()   # ≥ the top-K memberships that moved
    assert flips <= MASK_DISAGREE * c1.n * c1.estimation_ones.size
    assert np.array_equal(c1.estimation_classes, c2.estimation_classes)


def test_channels_last_certificate_on_the_photo_model_equals_nchw(lite0_pair):
    x = _photo_input(lite0_pair[0])
    (got, c1), (ref, c2) = (_classes(m, "grad", x, 8, 16, 0.05) for m in lite0_pair)
    assert float((got != ref).mean()) <= 2e-3
    assert np.array_equal(c1.estimation_classes, c2.estimation_classes)
