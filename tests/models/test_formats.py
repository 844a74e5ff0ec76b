"""Safe model formats first (DESIGN §13): certlib.load_model reads a .safetensors state dict of a real torchvision
ResNet-18 (random weights: no network here) and a torch.export .pt2 of it with the original network's logits and
input gradients (their certificates: tests/runs/test_cli_upload_formats.py and
tests/pages/test_upload_formats.py); wrong keys and shapes are named; pickles, forbidden operators and hostile archive
contents are refused before anything runs."""
import io
import time

import pytest
import torch
import torchvision
from safetensors.torch import save as safetensors_bytes

import certlib
import hostile_models as H
from certlib.sandbox import _export_worker, export_check, landlock
from certlib.attributions import methods as attributions
from certlib.models import formats as model_formats, registry as models
from certlib.errors import ModelError

SIZE = 32                     # ResNet-18 still ends in a 1×1 map; 4× cheaper than 64² on 2 shared cores
needs_landlock = pytest.mark.skipif(landlock.abi_version() < 1, reason="a .pt2 runs in the Landlock sandbox")


@pytest.fixture(scope="module")
def resnet():
    """(bare ResNet-18 for 4 classes, the same taking [0,1] pixels, a batch of inputs)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    pixel = models.PixelSpaceModel(net, models.IMAGENET_MEAN, models.IMAGENET_STD).eval()
    return net, pixel, torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def pt2(resnet):
    return H.export_pt2(resnet[1], torch.rand(2, 3, SIZE, SIZE))


def _in_process(pixel: torch.nn.Module) -> models.LoadedModel:
    spec = models.ModelSpec(key="ref", label="ref", family="imagenet", arch="resnet", in_channels=3,
                            input_size=(SIZE, SIZE), flexible_size=False, resize_size=None,
                            class_names=tuple("abcd"), cam_layer="net.layer4")
    return models.LoadedModel(spec=spec, module=pixel, weights_sha256="ref")


# ------------------------------------------------------------------------------------------------ formats

def test_formats_are_read_from_the_content_and_pickles_refused_by_name(resnet, pt2, tmp_path):
    net = resnet[0]
    checkpoint = io.BytesIO()
    torch.save(net.state_dict(), checkpoint)
    legacy = io.BytesIO()
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    script = io.BytesIO()
    torch.jit.save(torch.jit.script(H.NoGradient()), script)
    assert model_formats.detect_format(safetensors_bytes(net.state_dict())) == model_formats.SAFETENSORS
    assert model_formats.detect_format(pt2) == model_formats.PT2
    assert model_formats.detect_format(script.getvalue()) == model_formats.TORCHSCRIPT
    assert model_formats.detect_format(checkpoint.getvalue()) == model_formats.PICKLE
    assert model_formats.detect_format(legacy.getvalue()) == model_formats.PICKLE
    assert model_formats.detect_format(b"hello, not a model") == model_formats.UNKNOWN
    for name in ("weights.safetensors", "program.pt2"):                  # renamed: still a pickle
        (tmp_path / name).write_bytes(checkpoint.getvalue())
        with pytest.raises(ModelError, match=r"torch\.save\(\) pickle.*never loads one"):
            certlib.load_model(tmp_path / name, architecture="resnet18" if name.endswith("tensors") else None)


def test_a_registry_key_loads_the_registered_model():
    model = certlib.load_model("digits_sigma0.25")
    assert model.spec.key == "digits_sigma0.25" and model.spec.family == "digits"
    with pytest.raises(ModelError, match="architecture describe a model file"):
        certlib.load_model("digits_sigma0.25", architecture="resnet18")


# ------------------------------------------------------------------------------------------------ safetensors

def test_safetensors_resnet18_has_the_original_logits_and_gradients(resnet, tmp_path):
    """(Its certificate: tests/runs/test_cli_upload_formats.py, through the CLI, against the in-process network.)"""
    net, pixel, x = resnet
    path, names = tmp_path / "resnet18.safetensors", tmp_path / "classes.txt"
    path.write_bytes(safetensors_bytes(net.state_dict()))
    names.write_text("cat\ndog\n\nbird\nfish\n")
    model = certlib.load_model(str(path), architecture="resnet18", input_size=SIZE, class_names=str(names))
    assert model.spec.class_names == ("cat", "dog", "bird", "fish") and model.spec.num_classes == 4
    assert model.spec.arch == "resnet" and model.spec.cam_layer == "net.layer4"      # LRP and CAM apply
    assert model.spec.input_size == (SIZE, SIZE) and not list(model.module.parameters())[0].requires_grad
    with torch.no_grad():
        assert torch.allclose(model.module(x), pixel(x), atol=1e-5)
    ref = attributions.attribute(_in_process(pixel), x, 1, "grad")
    assert torch.allclose(attributions.attribute(model, x, 1, "grad"), ref, atol=1e-6)


def test_a_wrong_key_a_wrong_shape_and_a_wrong_class_count_are_named(resnet):
    state = dict(resnet[0].state_dict())
    state["layer1.0.conv9.weight"] = state.pop("layer1.0.conv1.weight")
    with pytest.raises(ModelError) as info:
        certlib.load_model(safetensors_bytes(state), architecture="resnet18")
    assert "missing key 'layer1.0.conv1.weight'" in str(info.value)
    assert "unexpected key 'layer1.0.conv9.weight'" in str(info.value)
    state = dict(resnet[0].state_dict())
    state["layer2.0.bn1.weight"] = torch.ones(7)
    with pytest.raises(ModelError, match=r"key 'layer2\.0\.bn1\.weight' has shape \[7\], expected \[128\]"):
        certlib.load_model(safetensors_bytes(state), architecture="resnet18")
    good = safetensors_bytes(resnet[0].state_dict())
    with pytest.raises(ModelError, match="num_classes gives 10 classes but the weights' classifier 'fc.weight' has 4"):
        certlib.load_model(good, architecture="resnet18", num_classes=10)
    with pytest.raises(ModelError, match="name its architecture"):
        certlib.load_model(good)
    with pytest.raises(ModelError, match="missing key 'features.0.weight'"):       # the wrong architecture
        certlib.load_model(good, architecture="digits_cnn")
    with pytest.raises(ModelError, match="not a readable safetensors"):
        certlib.load_model(good[:-100], architecture="resnet18")


# ------------------------------------------------------------------------------------------------ .pt2

@needs_landlock
def test_pt2_resnet18_runs_sandboxed_with_the_original_logits_and_gradients(resnet, pt2, tmp_path):
    """(Its certificate: tests/runs/test_cli_upload_formats.py, through the CLI, against the in-process network.)"""
    _, pixel, x = resnet
    (tmp_path / "resnet18.pt2").write_bytes(pt2)
    model = certlib.load_model(tmp_path / "resnet18.pt2")
    try:
        assert model.module.worker.landlock_abi >= 1 and model.module.worker.fmt == "pt2"
        assert model.spec.input_size == (SIZE, SIZE) and model.spec.in_channels == 3     # read from the program
        assert model.spec.num_classes == 4 and not model.notes
        with torch.no_grad():
            assert torch.allclose(model.module(x), pixel(x), atol=1e-4)
        ref = attributions.attribute(_in_process(pixel), x, 1, "grad")
        assert torch.allclose(attributions.attribute(model, x, 1, "grad"), ref, atol=1e-5)
    finally:
        model.module.worker.close()


def test_the_shipped_warm_up_program_loads_with_this_torch():
    """Each .pt2 worker loads it before Landlock (no export there); after a torch upgrade, re-export it with
    `python -m certlib.sandbox._export_worker`."""
    module, header, _ = _export_worker.load(torch, _export_worker.WARMUP_PROGRAM.read_bytes(), {"height": 2,
                                                                                                 "width": 2})
    assert module(torch.rand(3, 1, 2, 2)).shape == (3, 2) and header["in_channels"] == 1


def test_a_static_batch_of_one_runs_row_by_row_and_other_static_batches_say_how_to_export():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    one = H.export_pt2(net, torch.rand(1, 1, 8, 8), dynamic_batch=False)
    module, header, notes = _export_worker.load(torch, one, {})
    assert (header["in_channels"], header["height"], header["width"]) == (1, 8, 8)
    assert "static batch of 1" in notes[0] and "torch.export.Dim" in notes[0]
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(module(x), net(x), atol=1e-6)
    with pytest.raises(ModelError, match=r"only takes batches of exactly 2.*torch\.export\.Dim"):
        _export_worker.load(torch, H.export_pt2(net, torch.rand(2, 1, 8, 8), dynamic_batch=False), {})
    with pytest.raises(ModelError, match="takes inputs of height 8, not 16"):
        _export_worker.load(torch, one, {"height": 16})
    _, header, _ = _export_worker.load(torch, one, {"height": 16, "sizes_for_dynamic_only": True})
    assert header["height"] == 8                      # the upload form's defaults never override a static size


def test_a_forbidden_operator_is_refused_by_name_before_and_after_loading():
    data = H.export_pt2(H.AsStrided(), torch.rand(2, 1, 4, 4))
    with pytest.raises(ModelError, match=r"not on the allow-list.*aten\.as_strided"):
        export_check.check_archive(data)
    ep = torch.export.load(io.BytesIO(data))          # our own program: safe to load here, to test the second check
    with pytest.raises(ModelError, match=r"aten\.as_strided"):
        _export_worker.check_graph(ep)
    train = H.export_pt2(torch.nn.Sequential(torch.nn.BatchNorm2d(1), torch.nn.Flatten()).train(),
                         torch.rand(2, 1, 2, 2))
    with pytest.raises(ModelError, match=r"training mode.*model\.eval\(\)"):
        _export_worker.check_graph(torch.export.load(io.BytesIO(train)))


def test_archive_contents_that_would_run_code_are_refused_unrun(tmp_path):
    data = H.export_pt2(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)), torch.rand(2, 3, 2, 2))
    with pytest.raises(ModelError, match="as a pickle or custom object"):
        export_check.check_archive(H.pt2_with_pickled_weight(data))
    with pytest.raises(ModelError, match="names '__import__'"):
        export_check.check_archive(H.pt2_with_expression(data, "__import__('os').getpid()"))
    with pytest.raises(ModelError, match=r"holds '\.'"):
        export_check.check_archive(H.pt2_with_expression(data, "s0.__class__"))
    export_check.check_archive(H.pt2_with_expression(data, "Max(s0, 2) + FloorDiv(s1, 3)*2"))   # sympy's own
    marker = tmp_path / "unpickled"
    hostile = H.pt2_with_sample_inputs_pickle(data, str(marker))
    with pytest.raises(ModelError, match="sample inputs are not plain tensors"):
        _export_worker.load(torch, hostile, {})
    assert not marker.exists()
    extra = H.rewrite_zip(data, lambda name, raw: raw)
    import zipfile
    buf = io.BytesIO(extra)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("archive/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(ModelError, match="not part of a torch.export program"):
        export_check.check_archive(buf.getvalue())


def test_the_allow_list_is_explicit_and_admits_what_classifiers_use():
    admitted = export_check.allowed_by_purpose()
    assert "conv2d" in admitted["convolution and linear"] and "batch_norm" in admitted["normalisation"]
    assert "scaled_dot_product_attention" in admitted["attention"]
    for op in ("as_strided", "_reshape_alias", "_unsafe_view", "empty", "empty_like", "new_empty", "set_",
               "from_file", "_sparse_coo_tensor_unsafe", "save", "resize_", "index_put_"):
        assert op not in export_check.EXPORT_ALLOWED_OPS, op
    assert export_check.target_refused("torch.ops.aten.add.out")          # out= writes into a given tensor
    assert export_check.target_refused("torch.ops.myext.evil.default")
    assert export_check.target_refused("torch.ops.higher_order.cond")
    # what torch.export writes for the registry's architectures (measured: ResNet, MobileNet v2/v3, EfficientNet,
    # ViT-B/16, EfficientNet-Lite0, the digits CNN)
    used = ["aten.conv2d.default", "aten.batch_norm.default", "aten.relu_.default", "aten.add_.Tensor",
            "aten.max_pool2d.default", "aten.adaptive_avg_pool2d.default", "aten.flatten.using_ints",
            "aten.linear.default", "aten.sub.Tensor", "aten.div.Tensor", "aten.hardtanh_.default",
            "aten.hardswish_.default", "aten.hardsigmoid.default", "aten.dropout_.default", "aten.silu_.default",
            "aten.sigmoid.default", "aten.mul.Tensor", "aten.pad.default", "aten.layer_norm.default",
            "aten.gelu.default", "aten.scaled_dot_product_attention.default", "aten.cat.default",
            "aten.expand.default", "aten.permute.default", "aten.reshape.default", "aten.select.int",
            "aten.squeeze.dim", "aten.sym_size.int", "aten.transpose.int", "aten.unflatten.int",
            "aten.unsqueeze.default", "aten.view.default", "aten.contiguous.default", "_operator.mul",
            "_operator.getitem"]
    assert export_check.refused_targets(used) == []


@pytest.mark.parametrize("architecture", ["digits_cnn", "efficientnet_lite0"])
def test_other_architectures_round_trip_with_their_normalisation(architecture):
    """The digits CNN (normalises inside; its mean/std are state-dict buffers) and the bundled Lite0 (its own
    normalisation, not ImageNet's) load with the reference's logits. (Every torchvision architecture of the list was
    checked once by hand: logits equal, GradCAM runs.)"""
    from certlib.models import efficientnet_lite

    torch.manual_seed(0)
    if architecture == "digits_cnn":
        ref = net = models.load_model("digits_sigma0.25").module
    else:
        net = efficientnet_lite.EfficientNetLite(num_classes=3).eval()
        ref = models.PixelSpaceModel(net, efficientnet_lite.INPUT_MEAN, efficientnet_lite.INPUT_STD).eval()
    model = certlib.load_model(safetensors_bytes({k: v.contiguous() for k, v in net.state_dict().items()}),
                               architecture=architecture, input_size=(SIZE, SIZE))
    x = torch.rand(2, model.spec.in_channels, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(model.module(x), ref(x), atol=1e-4)
    assert model.spec.family == ("digits" if architecture == "digits_cnn" else "imagenet")
    assert attributions.unavailable_reason("gradcam", model.spec) is None


def test_oversized_directories_and_headers_are_refused_before_they_are_parsed():
    """The app process reads only a zip's declared entry count and a safetensors header's length before refusing."""
    import struct

    zip64 = b"PK\x06\x06" + bytes(28) + struct.pack("<Q", 10**7) + bytes(16)
    eocd = b"PK\x05\x06" + bytes(6) + struct.pack("<H", 0xFFFF) + bytes(10)
    start = time.monotonic()
    with pytest.raises(ModelError, match="lists 10,000,000 files"):
        certlib.load_model(b"PK\x03\x04" + bytes(64) + zip64 + eocd)
    header = struct.pack("<Q", 20 << 20) + b"{" + bytes(20 << 20)
    with pytest.raises(ModelError, match="safetensors header is 20 MiB; the limit is 16 MiB"):
        certlib.load_model(header, architecture="resnet18")
    assert time.monotonic() - start < 1.0
