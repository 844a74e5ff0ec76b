"""certexplorer: `streamlit run app.py`. The entry script is also the landing page (what the three certificates
say, with the current image and the model's prediction); the views live in pages/, one file each.

Navigation: Streamlit 1.67 treats any app with a pages/ directory as a classic multipage app (MPA v1): a reload of
a page's URL runs that page file without the entry script, so st.navigation in app.py cannot be relied on. Each page
therefore draws the shared sidebar itself (ui.workbench.current), which also draws the navigation links.
"""
import streamlit as st

from ui.frame import loading

_loading = loading("certexplorer")   # shown while the imports below load (cold start)

from certlib.attributions import methods as attributions, defaults
from certlib.data import images
from certlib.models import registry as models
from certlib.viz import probability_bar
from ui import warmup
from ui.workbench import current, try_a_photo

_loading.empty()
if st.session_state.pop("_open_certified_pixels", False):   # set by the "Certify a photo" button's callback
    st.switch_page("pages/certified_pixels.py")              # before the sidebar: that page draws it once
wb = current()
st.title("certexplorer")
if wb.model.spec.family != "imagenet":
    with st.container(border=True):
        photo = images.photo_info(defaults.FRONT_DOOR_PHOTO)
        st.markdown("**Start here: a real photo, a real ImageNet prediction, a certified explanation.** "
                    f"EfficientNet-Lite0 (bundled, no download) on a {photo.description}: which pixels are "
                    f"certainly among the most important for *{photo.top1_name}*, whatever noise of size R is added "
                    f"to the photo. With {defaults.method_label('imagenet')}, the method measured to certify the "
                    "most pixels per second on photos.")
        st.caption(defaults.why_front_door())
        st.button("Certify a photo", type="primary", icon=":material/photo_camera:", key="home_photo",
                  on_click=try_a_photo)
st.markdown(
    "An attribution map says which pixels mattered for a classifier's decision — but a tiny, invisible change of "
    "the input can change it completely. **certexplorer** makes explanations you can *trust*: each of the three "
    "methods below smooths the explanation with random noise and proves what stays the same under *every* "
    "perturbation up to a given size."
)

left, right = st.columns([1, 2])
with left:
    st.image(images.to_display_rgb(wb.x[0].numpy()), caption=f"{wb.image.label} — as the model sees it "
             f"({wb.x.shape[-2]}×{wb.x.shape[-1]})", width=280)
with right:
    name = wb.model.spec.class_names
    st.markdown(f"**{wb.model.spec.label}** predicts **{name[wb.prediction]}** "
                f"({wb.probs[wb.prediction]:.1%}); explaining class **{name[wb.target]}** "
                f"with **{attributions.METHODS[wb.method].label}** on the **{wb.device.upper()}**.")
    if wb.image.true_label is not None:
        st.caption(f"True label: {wb.image.true_label}")
    if wb.image.cell_labels is not None:
        st.caption("Grid cells (top-left, top-right, bottom-left, bottom-right): "
                   + ", ".join(str(c) for c in wb.image.cell_labels))
    st.plotly_chart(probability_bar(wb.probs, name, k=5, highlight=wb.target), width="stretch",
                    key="home_top5")

st.header("Three certificates")
c1, c2, c3 = st.columns(3)
with c1:
    st.subheader("Certified pixels")
    st.markdown(
        "*Anani, Lorenz, Fritz & Schiele, ICML 2025.* Sort the attribution's pixels into **top-K%** or not, "
        "repeat under Gaussian noise of size σ, and keep a pixel's class only where a clear majority of the noisy "
        "copies agree. A statistical test then *certifies* that class for every perturbation of ℓ2 size up to "
        "R = σ·Φ⁻¹(τ); where the vote is not clear, the pixel **abstains** instead of guessing."
    )
with c2:
    st.subheader("Uniform smoothing")
    st.markdown(
        "*Wang & Kong, 2024.* Average the attribution over noise drawn uniformly from a ball of radius r. Moving "
        "the input by ε only changes the part of the ball that the two balls do not share, so the smoothed map "
        "can only turn so far: a closed-form **lower bound on the cosine similarity** between the clean and any "
        "perturbed map. You compare it with what an attack actually achieves."
    )
with c3:
    st.subheader("Sparsified SmoothGrad")
    st.markdown(
        "*Levine, Singla & Feizi, 2019.* Keep only the top pixels of each noisy gradient map (values in [0, 1]) "
        "and average over Gaussian noise. Each smoothed pixel value can then move only a bounded amount under a "
        "perturbation of size ε, which **certifies how many of the top-K pixels stay top-K**."
    )
st.caption("Pick a page on the left. The sidebar (model, image, target class, method, device) is shared by all.")

if wb.model.spec.family != "imagenet" and any(s.key == models.photo_model_key() and s.available
                                               for s in models.list_models()):
    # The page is drawn; ready the photo model now (once per server), so "Certify a photo" shows its first picture
    # without waiting for the weights or the first pass. A click meanwhile interrupts this run; the next loads as before.
    warmup.photo_model_ready(wb.device)
