"""The photo path in the real app (AppTest): the home page's call to action, galleries paired with their models,
a certified overlay on a photo with an ImageNet class name, and the expected time stated before sampling."""
import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from certlib.attributions import cost, defaults
from certlib.data import images
from certlib.models import registry as models
from tests_paths import APP
from ui import cache, preview, runs, warmup
from ui.workbench import Workbench, front_door


@pytest.fixture
def at():
    st.cache_resource.clear()
    st.cache_data.clear()
    app = AppTest.from_file(APP, default_timeout=300)
    app.run()
    assert not app.exception, app.exception
    return app


def _wb(app) -> Workbench:
    return app.session_state["workbench"]


def test_home_button_opens_a_photo_with_the_photo_model(at):
    button = at.button(key="home_photo")
    assert button.label == "Certify a photo"
    at.session_state["cp_n"], at.session_state["cp_n0"] = 32, 8     # keep the sampling short in the test
    button.click().run()
    assert not at.exception, at.exception
    wb = _wb(at)
    assert wb.model.spec.key == models.photo_model_key() and wb.image.key == defaults.FRONT_DOOR_PHOTO
    photo = images.photo_info(defaults.FRONT_DOOR_PHOTO)
    assert wb.model.spec.class_names[wb.target] == photo.top1_name     # the explained class is the prediction
    chosen = defaults.DEFAULTS["imagenet"]                          # the measured photo defaults
    assert wb.method == chosen.method and at.session_state["cp_n0"] == chosen.n0
    assert at.session_state["cp_sigma"] == chosen.sigma
    assert "home_photo" not in [b.key for b in at.button]          # the call to action is for digits users only


def test_home_page_readies_the_first_picture_the_photo_button_opens(at):
    """The home page fills the caches "Certify a photo" reads first (issue #26, item 4): the clean map is in the
    process-wide results before the click, under the very key the page then looks up."""
    warm_key = runs.run_key(front_door("cpu"), preview.KIND, warmup.FRONT_DOOR_SEED)
    assert cache.sampling_results().get(warm_key) is not None
    at.session_state["cp_nmax"], at.session_state["cp_n0"] = 64, 8
    at.button(key="home_photo").click().run()
    assert not at.exception, at.exception
    assert runs.run_key(_wb(at), preview.KIND, at.session_state["cp_seed"]) == warm_key


def test_certified_pixels_on_a_photo_names_the_imagenet_class(at):
    # the default anytime-valid test with a budget of 128: enough at 150,528 tests
    at.session_state["cp_nmax"], at.session_state["cp_n0"] = 128, 8
    at.button(key="home_photo").click().run()
    at.switch_page("pages/certified_pixels.py").run()
    assert not at.exception, at.exception
    assert any(c.value.startswith("Top-5: **espresso**") for c in at.caption)
    said = " ".join(m.value for m in at.markdown)
    assert "224×224×3 input" in said                               # the guarantee is stated for the model's input
    overlay = next(c for c in at.get("plotly_chart") if "certified for every" in c.proto.spec)
    assert "certified top 5%" in overlay.proto.spec                  # the legend is inside the figure
    target = at.selectbox(key="target")
    assert target.format_func(target.value).startswith("967: espresso (")
    cert, sub = at.session_state["cp_last_certificate"]
    assert cert.classes.shape[-2:] == (224, 224) and sub.n == 128
    certified = np.isin(cert.classes, (0, 1)).mean()
    assert certified > 0.05, certified                             # a certified overlay, not all abstentions
    top5 = (cert.classes[0] == 1).sum() / (0.05 * 224 * 224)        # levels 5, 25, 50 %: the most important
    assert top5 > 0.15, top5                                       # pixels, visibly certified (0.45 at n = 256)


def test_choosing_a_gallery_pairs_the_model_and_says_so(at):
    at.selectbox(key="image_source").set_value("photo").run()
    assert not at.exception
    assert _wb(at).model.spec.key == models.photo_model_key()
    assert _wb(at).method == defaults.DEFAULTS["imagenet"].method        # the photo family's measured default
    assert any("Switched the model to EfficientNet-Lite0" in i.value for i in at.info)
    at.selectbox(key="image_source").set_value("photogrid").run()   # same family: nothing to switch
    wb = _wb(at)
    assert wb.model.spec.key == models.photo_model_key() and tuple(wb.x.shape) == (1, 3, 448, 448)
    assert not any("Switched" in i.value for i in at.info)
    at.selectbox(key="image_source").set_value("grid").run()
    assert _wb(at).model.spec.key == models.default_model_key()
    assert _wb(at).method == defaults.DEFAULTS["digits"].method
    assert any("Switched the model to Digits CNN" in i.value for i in at.info)
    # Choosing a model by hand still switches the gallery, and clears the notice.
    at.selectbox(key="model_key").set_value(models.photo_model_key()).run()
    assert _wb(at).image.kind == "photo" and not any("Switched" in i.value for i in at.info)


def test_upload_keeps_the_model(at):
    at.selectbox(key="image_source").set_value("upload").run()
    assert not at.exception
    assert at.session_state["model_key"] == models.default_model_key()


def test_photo_caption_states_its_licence(at):
    at.selectbox(key="image_source").set_value("photo").run()
    at.selectbox(key="image_photo").set_value("photo:china").run()
    assert any("Licence: CC BY 2.0" in c.value for c in at.caption)


def test_expected_time_is_stated_from_a_timing_of_the_method(at):
    at.button(key="home_photo").click().run()
    wb = _wb(at)
    said = runs.expected_time(wb, 288)
    per_copy = cost.seconds_per_copy(wb.model, wb.method, wb.x, wb.target)
    assert said.startswith("Expected time: about ") and "288 noisy attributions" in said
    assert f"{per_copy * 1000:,.0f} ms" in said and f"{defaults.method_label('imagenet')} on efficientnet_lite0" in said


def test_cost_probes_scale_to_the_passes_of_the_real_method():
    """RISE, Occlusion and IG are timed on a fraction of their passes; the probe's rows × its scale must equal the
    rows the real method runs through the model (counted with a forward hook)."""
    import torch

    from certlib.attributions import methods as attributions

    model = models.load_model("digits_sigma0.25")
    x = torch.from_numpy(np.array(images.digit_gallery()[0].pixels))[None]

    def rows(method) -> int:
        seen = []
        handle = model.module.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
        try:
            method.attribute(x, 3)
        finally:
            handle.remove()
        return sum(seen)

    for key, params in (("rise", {}), ("occlusion", {}), ("integrated_gradients", {})):
        real = attributions.make_attribution(key, model, **params)
        probe, scale = real.cost_probe(*x.shape[-2:])
        assert scale > 4, key                                            # the probe is much cheaper
        assert rows(probe) * scale == pytest.approx(rows(real), rel=0.02), key


def test_metrics_offers_the_image_sets_of_the_models_family(at):
    at.switch_page("pages/metrics.py").run()
    assert not at.exception, at.exception
    assert at.radio(key="mx_images").options == ["2×2 digit grids (all three metrics)", "held-out digits",
                                                  "the workbench's current image"]
    at.selectbox(key="model_key").set_value(models.photo_model_key()).run()
    assert not at.exception, at.exception
    radio = at.radio(key="mx_images")
    assert radio.value == "photo_grids" and "2×2 photo grids, 448² (all three metrics)" in radio.options
    assert any("Compute the" in b.label and "min on cpu" in b.label for b in at.button)
