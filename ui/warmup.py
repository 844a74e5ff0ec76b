"""Ready the front door before anyone knocks: the home page calls this once it is drawn (issue #26, item 4).

"Certify a photo" opens the Certified pixels page on Chelsea with the photo model. Its first picture needs the
model's weights (1–2 s to load on 2 cores), the photo gallery (17 photos decoded and hashed, ~0.4 s), the prediction
and one clean attribution pass (~0.35 s the first time: the CPU kernels are built on first use). Done here, once per
server and into the same caches the page reads, the first picture needs none of them."""
from __future__ import annotations

import streamlit as st

from certlib.errors import SHOWN_ERRORS
from ui import preview
from ui.workbench import front_door

# The Certified pixels page's default seed (its `cp_seed`); the first picture is cached per seed.
FRONT_DOOR_SEED = 0


@st.cache_resource(show_spinner=False)
def photo_model_ready(device: str) -> bool:
    try:
        preview.compute_clean_attribution(front_door(device), FRONT_DOOR_SEED)
    except SHOWN_ERRORS:          # the page itself will show the reason when someone asks for it
        return False
    return True
