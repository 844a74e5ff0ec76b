"""Ready the photo model before anyone asks for it: the home page calls this once it is drawn (issue #26, item 4).

Loading EfficientNet-Lite0 takes 1–2 s on 2 cores and its first attribution pass another ~0.35 s (the CPU kernels are
built on first use); done here, once per server, "Certify a photo" shows its first picture without either."""
from __future__ import annotations

import streamlit as st
import torch

from certlib import attributions, defaults, engine, models
from ui.workbench import registry_model


@st.cache_resource(show_spinner=False)
def photo_model_ready(device: str) -> bool:
    model = registry_model(models.photo_model_key(), device)
    spec = model.spec
    attribute, _ = attributions.for_target(model, defaults.for_family(spec.family).method, 0, 0)
    engine.clean_attribution(attribute, torch.zeros((1, spec.in_channels, *spec.input_size), device=model.device))
    return True
