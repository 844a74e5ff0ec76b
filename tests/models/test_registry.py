"""Model registry: shipped digits weights, ImageNet loading path, TorchScript uploads, targets and devices."""
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from certlib.models import registry as models
from certlib.data.digits import load_split
from certlib.errors import ModelError, ModelUnavailableError
from certlib.models.train_digits import TrainConfig, sha256_file, train


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """Point both ImageNet weight locations at empty temporary directories."""
    monkeypatch.setenv(models.WEIGHTS_DIR_ENV, str(tmp_path / "user_weights"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path


# ----------------------------------------------------------------------------------------------- digits

def _held_out_accuracy(module: torch.nn.Module) -> float:
    images, labels = load_split("held_out")
    with torch.no_grad():
        pred = module(torch.from_numpy(images)).argmax(1).numpy()
    return float(np.mean(pred == labels))


def test_shipped_clean_model_reaches_97_percent_on_held_out_digits():
    model = models.load_model("digits_sigma0.00")
    acc = _held_out_accuracy(model.module)
    assert acc >= 0.97, f"held-out accuracy {acc:.4f} < 0.97"


@pytest.mark.parametrize("sigma", [0.0, 0.25, 0.5])
def test_shipped_checkpoints_match_their_metadata(sigma):
    meta = models.digits_metadata()
    ckpt = next(c for c in meta["checkpoints"] if c["sigma_train"] == sigma)
    path = models.ASSETS / ckpt["file"]
    assert sha256_file(path) == ckpt["sha256"]
    recomputed = _held_out_accuracy(models.load_model(f"digits_sigma{sigma:.2f}").module)
    assert recomputed == pytest.approx(ckpt["held_out_accuracy"]["0.00"], abs=1e-4)


def test_noise_trained_checkpoint_is_more_robust_to_noise():
    meta = {c["sigma_train"]: c["held_out_accuracy"] for c in models.digits_metadata()["checkpoints"]}
    assert meta[0.5]["0.50"] > meta[0.0]["0.50"] + 0.2


def test_digits_model_scores_grids_and_takes_pixels_in_unit_range():
    model = models.load_model("digits_sigma0.25")
    assert model.spec.in_channels == 1 and model.spec.flexible_size
    probs = model.predict_proba(torch.rand(2, 1, 64, 64))
    assert probs.shape == (2, 10)
    assert torch.allclose(probs.sum(1), torch.ones(2), atol=1e-5)


def test_training_is_reproducible_from_the_seed():
    config = TrainConfig(sigma_train=0.25, epochs=1, max_train=128)
    a, b = train(config, log=lambda *_: None), train(config, log=lambda *_: None)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name


# ---------------------------------------------------------------------------------------------- ImageNet

def test_missing_imagenet_weights_are_listed_unavailable_with_a_how_to(no_weights):
    specs = {s.key: s for s in models.list_models()}
    for key in models.IMAGENET_MODELS:
        assert not specs[key].available
        assert "python -m certlib.models.registry download" in specs[key].unavailable_reason
        assert models.imagenet_weights_file(key) in specs[key].unavailable_reason
    with pytest.raises(ModelUnavailableError, match="weights not found"):
        models.load_model("resnet18")


def test_imagenet_loading_path_with_a_saved_state_dict(no_weights):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    weights_dir = no_weights / "user_weights"
    weights_dir.mkdir()
    torch.save(reference.state_dict(), weights_dir / models.imagenet_weights_file("resnet18"))

    spec = models.get_spec("resnet18")
    assert spec.available and spec.input_size == (224, 224) and spec.resize_size == 256
    assert spec.num_classes == 1000 and spec.class_names[207] == "golden retriever"
    loaded = models.load_model("resnet18")
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.module.net.state_dict()[name], tensor), name
    # pixels in [0,1] are normalised inside the wrapper exactly as torchvision's preset does
    x = torch.rand(1, 3, 224, 224)
    mean, std = torch.tensor(models.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(models.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), reference((x - mean) / std), atol=1e-5)
    assert any("not the official" in n for n in loaded.notes)


def test_hub_cache_is_searched_too(no_weights):
    hub = no_weights / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), hub / "resnet18-f37072fd.pth")
    assert models.get_spec("resnet18").available


def test_corrupt_or_mismatched_weights_give_clear_errors(no_weights):
    weights_dir = no_weights / "user_weights"
    weights_dir.mkdir()
    (weights_dir / "resnet18.pth").write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelError, match="not a readable weights file for resnet18"):
        models.load_model("resnet18")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights_dir / "resnet50.pth")
    with pytest.raises(ModelError, match="does not match resnet50's architecture"):
        models.load_model("resnet50")


def test_unknown_model_key():
    with pytest.raises(ModelError, match="unknown model 'resnet9000'"):
        models.get_spec("resnet9000")


# -------------------------------------------------------------------------------------------- TorchScript

class _Tiny(torch.nn.Module):
    def __init__(self, channels: int = 3, classes: int = 4):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def _script_bytes(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


def test_torchscript_upload_is_loaded_and_probed():
    m = models.load_torchscript(_script_bytes(_Tiny()), 3, 32, 32, name="tiny.pt")
    assert m.spec.family == "user" and m.spec.num_classes == 4 and m.spec.input_size == (32, 32)
    assert m.predict_proba(torch.rand(3, 3, 32, 32)).shape == (3, 4)
    assert m.notes == ()


def test_torch_save_pickle_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    buf = io.BytesIO()
    torch.save({"payload": Evil()}, buf)
    with pytest.raises(ModelError, match=r"torch.save\(\) pickle \(a checkpoint\).*never loads one"):
        models.load_torchscript(buf.getvalue(), 3, 32, 32)
    assert not marker.exists()


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"\x89PNG not a model at all", "not a model certexplorer can read"),
])
def test_non_archives_are_refused(data, message):
    with pytest.raises(ModelError, match=message):
        models.load_torchscript(data, 3, 32, 32)


def test_zip_that_is_not_torchscript_is_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/readme.txt", "hello")
    with pytest.raises(ModelError, match="not TorchScript"):
        models.load_torchscript(buf.getvalue(), 3, 32, 32)


class _WrongShape(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3)).unsqueeze(-1)


class _Tuple(torch.nn.Module):
    def forward(self, x):
        s = x.mean((1, 2, 3)).unsqueeze(1)
        return s, s


class _NaN(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3)) / 0.0 * 0.0


@pytest.mark.parametrize("module, channels, message", [
    (_Tiny(channels=1), 3, r"raised on an input of shape \[1, 3, 32, 32\]"),
    (_WrongShape(), 3, r"returned shape \[1, 3, 1\]; expected \[1, num_classes\]"),
    (_Tuple(), 3, "must return one tensor"),
    (_NaN(), 3, "non-finite"),
])
def test_torchscript_with_wrong_contract_is_explained(module, channels, message):
    with pytest.raises(ModelError, match=message):
        models.load_torchscript(_script_bytes(module), channels, 32, 32)


def test_torchscript_size_arguments_are_checked():
    with pytest.raises(ModelError, match="in_channels must be 1 or 3, got 2"):
        models.load_torchscript(_script_bytes(_Tiny()), 2, 32, 32)
    with pytest.raises(ModelError, match="height must be between 8 and 1024 pixels, got 4"):
        models.load_torchscript(_script_bytes(_Tiny()), 3, 4, 32)


# ------------------------------------------------------------------------------------------ targets, device

@pytest.mark.parametrize("target, message", [
    (10, r"target class 10 is out of range: this model has classes 0..9"),
    (-1, "target class -1 is out of range"),
    (True, "must be an integer"),
    (2.5, "must be an integer"),
])
def test_bad_targets_are_named(target, message):
    with pytest.raises(ValueError, match=message):
        models.validate_target(target, 10)


def test_numpy_integer_target_is_accepted():
    assert models.validate_target(np.int64(3), 10) == 3


def test_absent_gpu_is_an_error_not_a_silent_fallback():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="'cuda' was requested but torch finds no CUDA GPU"):
        models.resolve_device("cuda")
    assert models.resolve_device(None) == "cpu"
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        models.resolve_device("tpu")


def test_models_cli_lists_availability(capsys, no_weights):
    models.main(["list"])
    out = capsys.readouterr().out
    assert "digits_sigma0.00" in out and "available" in out
    assert "resnet18" in out and "unavailable" in out
