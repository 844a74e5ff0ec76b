"""Streamlit caches around certlib. Keys are explicit content hashes: Streamlit cannot hash modules and hashes
large arrays from a sample, so models and tensors are passed as `_`-prefixed (unhashed) arguments."""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from certlib.models import LoadedModel, load_model


@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def registry_model(key: str, device: str, weights_token: str) -> LoadedModel:
    """A registered model; `weights_token` (path, size, mtime) makes a replaced weights file load afresh."""
    return load_model(key, device=device)


@st.cache_data(show_spinner=False, max_entries=512)
def class_probabilities(_model: LoadedModel, model_token: str, image_token: str, _x: torch.Tensor) -> np.ndarray:
    """Softmax of the model on the prepared image, keyed by (model weights hash, device, image content hash)."""
    return _model.predict_proba(_x)[0].numpy()
