"""`python -m certlib run --model FILE` takes the safe formats: a ResNet-18 (random weights) as .safetensors
(--architecture) and as a torch.export .pt2 store the certificate that the in-process network gives (same seed, same
input); a wrong key, a missing --architecture and a pickle are one-line errors naming what is wrong."""
import io

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save as safetensors_bytes

import hostile_models as H
from certlib.attributions import methods as attributions
from certlib.runs import cli, store
from certlib.sandbox import landlock
from certlib.models import registry as models
from certlib.smoothing import sampling

RUN = ["run", "--images", "photos", "--limit", "1", "--methods", "grad", "--sigmas", "0.25", "--n", "16", "--n0",
       "4", "--seed", "0", "--batch-size", "8"]
SIZE = 32                              # ResNet-18 at 32² (photos are resized to it): cheap on 2 shared cores


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(store.DATA_DIR_ENV, str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture(scope="module")
def digits():
    return models.load_model("digits_sigma0.25").module


def _stored(data_dir) -> list:
    return list(store.Store(data_dir / store.DB_NAME).all_runs())


def _in_process_counts(pixel: torch.nn.Module, run) -> sampling.TopKCounts:
    """The stored run's sampling redone with the original network in this process."""
    spec = models.ModelSpec(key="ref", label="ref", family="imagenet", arch="resnet", in_channels=3,
                            input_size=(SIZE, SIZE), flexible_size=False, resize_size=None,
                            class_names=tuple("abcd"), cam_layer="net.layer4")
    ref = models.LoadedModel(spec=spec, module=pixel, weights_sha256="ref")
    c = run.config
    fn, logits = attributions.for_target(ref, c["method"], c["target"], c["seed"])
    return sampling.sample_topk_counts(fn, torch.from_numpy(run.x), c["sigma"], c["n0"], c["n"],
                                       tuple(c["k_percents"]), seed=c["seed"], batch_size=8, logits=logits,
                                       normalisation=c["normalisation"])


@pytest.mark.skipif(landlock.abi_version() < 1, reason="a .pt2 runs in the Landlock sandbox")
def test_resnet18_as_safetensors_and_pt2_stores_the_in_process_certificate(data_dir, tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    pixel = models.PixelSpaceModel(net, models.IMAGENET_MEAN, models.IMAGENET_STD).eval()
    weights, program = tmp_path / "resnet18.safetensors", tmp_path / "resnet18.pt2"
    weights.write_bytes(safetensors_bytes(net.state_dict()))
    program.write_bytes(H.export_pt2(pixel, torch.rand(2, 3, SIZE, SIZE)))
    assert cli.main([*RUN, "--model", str(weights), "--architecture", "resnet18", "--input-shape",
                     f"3,{SIZE},{SIZE}"]) == 0
    assert cli.main([*RUN, "--model", str(program)]) == 0
    runs = _stored(data_dir)
    assert len(runs) == 2 and len({r.config["model_key"] for r in runs}) == 2        # two models, one photo
    for run in runs:
        ref = _in_process_counts(pixel, run)
        assert np.array_equal(run.counts.selection_ones, ref.selection_ones)
        assert np.array_equal(run.counts.estimation_ones, ref.estimation_ones)


def test_file_errors_are_one_line_naming_the_problem(data_dir, tmp_path, digits, capsys):
    state = {k: v.contiguous() for k, v in digits.state_dict().items()}
    weights = tmp_path / "digits.safetensors"
    weights.write_bytes(safetensors_bytes(state))
    assert cli.main([*RUN, "--model", str(weights)]) == 2
    assert "name its architecture" in capsys.readouterr().err
    state["features.0.wieght"] = state.pop("features.0.weight")
    weights.write_bytes(safetensors_bytes(state))
    assert cli.main([*RUN, "--model", str(weights), "--architecture", "digits_cnn"]) == 2
    assert "missing key 'features.0.weight'" in capsys.readouterr().err
    checkpoint = io.BytesIO()
    torch.save(digits.state_dict(), checkpoint)
    (tmp_path / "renamed.pt2").write_bytes(checkpoint.getvalue())
    assert cli.main([*RUN, "--model", str(tmp_path / "renamed.pt2")]) == 2
    assert "torch.save() pickle" in capsys.readouterr().err
    assert cli.main([*RUN, "--model", "digits_sigma0.25", "--architecture", "resnet18"]) == 2
    assert "--architecture is for a --model file" in capsys.readouterr().err
    assert not _stored(data_dir) if (data_dir / store.DB_NAME).exists() else True
