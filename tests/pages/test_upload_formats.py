"""The upload widget takes the safe formats (AppTest): the bundled digits CNN's weights as .safetensors and its
torch.export .pt2 certify on the Certified pixels page with the same certificate as the registered model (same
seed, same image); a wrong key and a renamed pickle are messages naming what is wrong."""
import io

import numpy as np
import pytest
import streamlit as st
import torch
from safetensors.torch import save as safetensors_bytes
from streamlit.testing.v1 import AppTest

import hostile_models as H
from certlib.sandbox import landlock
from certlib.models import registry as models
from certlib.smoothing import sampling
from tests_paths import APP


@pytest.fixture
def page(monkeypatch):
    """The Certified pixels page on the registered digits CNN (gradient, a fixed-n test of 32 samples), and every
    TopKCounts the page samples."""
    st.cache_resource.clear()
    st.cache_data.clear()
    sampled, real = [], sampling.sample_topk_counts
    monkeypatch.setattr(sampling, "sample_topk_counts", lambda *a, **k: sampled.append(real(*a, **k)) or sampled[-1])
    at = AppTest.from_file(APP, default_timeout=300)
    for key, value in dict(model_key="digits_sigma0.25", method="grad", cp_test="fixed", cp_n=32, cp_n0=8,
                           cp_seed=0).items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/certified_pixels.py").run()
    assert not at.exception, at.exception
    return at, sampled


def _upload(at, name: str, data: bytes, architecture: str | None = None) -> None:
    at.file_uploader(key="model_upload").set_value((name, data, "application/octet-stream"))
    if architecture:
        at.selectbox(key="model_upload_arch").set_value(architecture)
    at.button(key="model_upload_go").click().run()


def _errors(at) -> str:
    return " ".join(e.value for e in at.error) + " " + str(at.session_state["model_upload_error"])


def _same(a: sampling.TopKCounts, b: sampling.TopKCounts) -> None:
    assert np.array_equal(a.selection_ones, b.selection_ones)
    assert np.array_equal(a.estimation_ones, b.estimation_ones)


@pytest.fixture(scope="module")
def digits():
    return models.load_model("digits_sigma0.25").module


def test_safetensors_weights_certify_like_the_registered_model(page, digits):
    at, sampled = page
    assert len(sampled) == 1
    state = {k: v.contiguous() for k, v in digits.state_dict().items()}
    _upload(at, "digits.safetensors", safetensors_bytes(state), "digits_cnn")
    assert not at.exception and not at.session_state["model_upload_error"]
    assert at.session_state["model_key"].startswith("user:")
    assert "(digits_cnn, safetensors)" in at.selectbox(key="model_key").format_func(at.session_state["model_key"])
    assert len(sampled) == 2
    _same(sampled[0], sampled[1])


@pytest.mark.skipif(landlock.abi_version() < 1, reason="a .pt2 runs in the Landlock sandbox")
def test_a_pt2_program_certifies_like_the_registered_model(page, digits):
    at, sampled = page
    _upload(at, "digits.pt2", H.export_pt2(digits, torch.rand(2, 1, 32, 32)))
    assert not at.exception and not at.session_state["model_upload_error"]
    model = at.session_state["user_models"][at.session_state["model_key"]]
    try:
        assert model.spec.input_size == (32, 32) and model.spec.in_channels == 1    # the form's 224² is ignored
        # An upload's family is not "digits": the gallery moved to photos; back to the digit the registry model saw.
        at.selectbox(key="image_source").set_value("digit").run()
        assert not at.exception, at.exception
        _same(sampled[0], sampled[-1])
    finally:
        model.module.worker.close()


def test_a_wrong_key_and_a_renamed_pickle_are_messages(page, digits):
    at, _ = page
    state = {k: v.contiguous() for k, v in digits.state_dict().items()}
    state["classifier.wieght"] = state.pop("classifier.weight")
    _upload(at, "typo.safetensors", safetensors_bytes(state), "digits_cnn")
    assert not at.exception
    assert "missing key 'classifier.weight'" in _errors(at) and "unexpected key 'classifier.wieght'" in _errors(at)
    checkpoint = io.BytesIO()
    torch.save(digits.state_dict(), checkpoint)
    _upload(at, "renamed.safetensors", checkpoint.getvalue())
    assert not at.exception
    assert "torch.save() pickle" in _errors(at)
    assert at.session_state["model_key"] == "digits_sigma0.25"               # the sidebar keeps the last model


@pytest.mark.skipif(landlock.abi_version() < 1, reason="a .pt2 runs in the Landlock sandbox")
def test_a_pt2_with_a_forbidden_operator_is_refused_in_the_worker_and_named_on_the_page(page):
    at, _ = page
    _upload(at, "strided.pt2", H.export_pt2(H.AsStrided(), torch.rand(2, 1, 8, 8)))
    assert not at.exception
    assert "not on the allow-list" in _errors(at) and "aten.as_strided" in _errors(at)
    assert at.session_state["model_key"] == "digits_sigma0.25"
