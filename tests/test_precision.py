"""bf16 autocast (+ channels_last on CUDA) stays within tolerance of fp32, and is part of a result's identity.

Tolerance, per method, on noisy copies of a bundled digit: top-K% masks agree with fp32 on >= 99% of pixels for
every K, and the mean IoU of the top-10% sets is >= 0.95. The CPU runs the same bf16 numerics (bf16 operands, fp32
accumulation) as a GPU's tensor cores; the CUDA test repeats the check on ResNet-18 when a GPU is present.
"""
import pytest
import torch

from certlib import attributions, models, pixel_cert, precision, sampling
from certlib.errors import CertlibError
from certlib.images import digit_gallery, prepare_image

KS = (5.0, 10.0, 25.0, 50.0)
SLOW = {"rise", "integrated_gradients"}   # forward-heavy: fewer copies (and masks) keep the test quick


@pytest.fixture(scope="module")
def digits_pair():
    return models.load_model("digits_sigma0.25"), models.load_model("digits_sigma0.25", precision="bf16")


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
