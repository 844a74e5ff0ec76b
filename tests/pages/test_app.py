"""The real app through Streamlit's AppTest: workbench selections, page switches, bad uploads."""
import io

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from certlib.models import efficientnet_lite, registry as models
from certlib.data import images
from tests_paths import APP

TIMEOUT = 120
PAGES = ["pages/certified_pixels.py", "pages/uniform_smoothing.py", "pages/sparsified_smoothgrad.py",
         "pages/metrics.py", "pages/learn.py", "app.py"]


@pytest.fixture
def at():
    st.cache_resource.clear()
    st.cache_data.clear()
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    assert not app.exception, app.exception
    return app


def _wb(app):
    return app.session_state["workbench"]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_default_start_is_the_bundled_model_on_a_held_out_digit(at):
    wb = _wb(at)
    assert wb.model.spec.key == models.default_model_key()
    assert wb.image.kind == "digit"
    assert wb.target == wb.prediction == int(np.argmax(wb.probs))
    assert wb.device == "cpu"
    assert at.title[0].value == "certexplorer"
    assert any("predicts" in m.value for m in at.markdown)


def test_switching_model_image_target_and_method(at):
    at.selectbox(key="model_key").set_value("digits_sigma0.00").run()
    assert not at.exception
    assert _wb(at).model.spec.key == "digits_sigma0.00"

    at.selectbox(key="image_source").set_value("grid").run()
    grids = images.grid_gallery()
    at.selectbox(key="image_grid").set_value(grids[3].key).run()
    wb = _wb(at)
    assert not at.exception and wb.image.key == grids[3].key
    assert tuple(wb.x.shape) == (1, 1, 64, 64)  # grids reach the fully convolutional model unresized

    other = (wb.prediction + 1) % 10
    at.selectbox(key="target").set_value(other).run()
    assert _wb(at).target == other
    at.selectbox(key="method").set_value("gradcam").run()
    assert _wb(at).method == "gradcam"

    # a new image resets the target to that image's prediction
    at.selectbox(key="image_grid").set_value(grids[4].key).run()
    wb = _wb(at)
    assert wb.target == wb.prediction


def test_workbench_state_survives_page_switches(at):
    # pages that sample: keep them small (LRP on a 64×64 grid)
    at.session_state["cp_n"] = 32
    at.session_state["us_n"] = 64
    at.session_state["sg_n"] = 32
    at.selectbox(key="image_source").set_value("grid").run()
    at.selectbox(key="method").set_value("lrp").run()
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert _wb(at).image.kind == "grid" and _wb(at).method == "lrp"
    at.switch_page("pages/uniform_smoothing.py").run()
    assert at.title[0].value == "Uniformly smoothed attributions"
    assert at.session_state["us_n"] == 64                       # page settings survive the walk too


def test_photo_on_digits_model_is_converted_and_explained(at, monkeypatch):
    # Photos select the bundled photo model (tests/pages/test_photo.py); without its weights they stay on the digits
    # model, converted to what it takes.
    monkeypatch.setattr(efficientnet_lite, "weights_file", lambda: None)
    at.selectbox(key="image_source").set_value("photo").run()
    wb = _wb(at)
    assert not at.exception and wb.image.kind == "photo"
    assert tuple(wb.x.shape) == (1, 1, 32, 32)
    assert any("meant for imagenet models" in c.value for c in at.sidebar.caption)


def test_unavailable_imagenet_models_are_explained_not_offered(at, tmp_path, monkeypatch):
    monkeypatch.setenv(models.WEIGHTS_DIR_ENV, str(tmp_path))
    at.run()
    offered = at.selectbox(key="model_key").options
    if models.get_spec("resnet18").available:
        pytest.skip("ImageNet weights are installed on this machine")
    assert not any("resnet18" in o for o in offered)
    texts = " ".join(m.value for m in at.sidebar.markdown)
    assert "python -m certlib.models.registry download resnet18" in texts


def test_uploaded_image_is_used_and_a_bad_upload_keeps_it(at):
    at.selectbox(key="image_source").set_value("upload").run()
    assert any("Upload an image" in i.value for i in at.info)
    digit = (images.digit_gallery()[0].pixels[0] * 255).astype(np.uint8)
    at.file_uploader(key="image_upload").set_value(("mine.png", _png(digit), "image/png")).run()
    assert not at.exception
    wb = _wb(at)
    assert wb.image.kind == "upload" and tuple(wb.x.shape) == (1, 1, 32, 32)

    at.file_uploader(key="image_upload").set_value(("broken.png", b"not an image", "image/png")).run()
    assert not at.exception
    assert any("broken.png" in e.value for e in at.sidebar.error)
    assert _wb(at).image.sha256 == wb.image.sha256  # the last good upload is kept


def test_torchscript_upload_errors_show_in_the_page(at):
    at.file_uploader(key="model_upload").set_value(("model.pt", b"garbage", "application/octet-stream"))
    at.button(key="model_upload_go").click().run()
    assert not at.exception
    said = " ".join(e.value for e in at.sidebar.error)     # uploads take three formats now (issue #27)
    assert "not a model certexplorer can read" in said and all(f in said for f in ("safetensors", ".pt2", "TorchScript"))
    assert _wb(at).model.spec.key == models.default_model_key()  # the previous model is still in use


def test_torchscript_upload_becomes_the_selected_model(at):
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4, 5)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Tiny()), buf)
    at.file_uploader(key="model_upload").set_value(("tiny.pt", buf.getvalue(), "application/octet-stream"))
    at.number_input(key="model_upload_h").set_value(48)
    at.number_input(key="model_upload_w").set_value(48)
    at.button(key="model_upload_go").click().run()
    assert not at.exception
    wb = _wb(at)
    assert wb.model.spec.family == "user" and wb.model.spec.num_classes == 5
    assert tuple(wb.x.shape) == (1, 3, 48, 48)  # a gray digit, replicated to RGB and resized
    assert 0 <= wb.target < 5
    # CAM methods and LRP are not offered for an opaque TorchScript model
    offered = at.selectbox(key="method").options
    assert "Gradient (gradient)" in offered
    assert not any(o.startswith(("LRP", "CAM", "GradCAM")) for o in offered)
