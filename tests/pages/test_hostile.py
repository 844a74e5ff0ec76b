"""Uploaded models that misbehave, through the real app (AppTest): every failure is a message in the page, the
sidebar stays, and a hanging model is stopped within its time limit."""
import io
import time

import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

import hostile_models as H
from certlib.sandbox import landlock
from tests_paths import APP

pytestmark = pytest.mark.skipif(landlock.abi_version() < 1, reason="uploaded models need Landlock")


def _upload(at, module: torch.nn.Module, name: str) -> None:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    at.file_uploader(key="model_upload").set_value((name, buf.getvalue(), "application/octet-stream"))
    at.number_input(key="model_upload_c").set_value(1)
    at.number_input(key="model_upload_h").set_value(32)
    at.number_input(key="model_upload_w").set_value(32)
    at.button(key="model_upload_go").click().run()


@pytest.fixture
def app(monkeypatch):
    monkeypatch.setenv("CERTEXPLORER_SANDBOX_TIMEOUT_S", "4")
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["cp_n"] = 32
    at.run()
    return at


def _page_errors(at) -> str:
    return " ".join(e.value for e in at.error)


def test_a_model_failing_on_sampling_batches_is_a_message(app):
    _upload(app, H.FailsOnBigBatches(), "picky.pt")
    assert not app.exception and not app.session_state["model_upload_error"]
    app.switch_page("pages/certified_pixels.py").run()
    assert not app.exception, app.exception
    assert "only takes up to 3 images" in _page_errors(app)
    assert app.selectbox(key="model_key").value.startswith("user:")          # the sidebar is intact


def test_a_model_that_hangs_on_noise_is_stopped_and_the_page_answers(app):
    _upload(app, H.LoopsOnNoise(), "loops.pt")
    assert not app.exception and not app.session_state["model_upload_error"]
    start = time.monotonic()
    app.switch_page("pages/certified_pixels.py").run()
    took = time.monotonic() - start
    assert not app.exception, app.exception
    assert "did not answer within 4 s" in _page_errors(app)
    assert took < 4 + 20                  # the limit plus starting a worker and the page's own work


def test_hostile_file_names_are_shown_as_text(app):
    _upload(app, H.Honest(), "**bold**<img src=x onerror=alert(1)>.pt")
    assert not app.exception
    label = next(m.value for m in app.markdown if "uploaded TorchScript" in m.value)
    assert "<img" not in label and "**bold**" not in label
